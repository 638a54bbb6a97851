"""A simulated wet-chemistry world: synthesis parameters -> (hidden) silver nanoparticles.

The response is hidden from the loop (the robot only learns what it measures) but physically
plausible and smooth inside each regime, so that a Gaussian process can learn it:

* Nucleation vs growth. A faster reducer (borohydride > ascorbic acid > citrate) makes more
  nuclei from the same precursor, so the particles end up smaller. More precursor means more
  material per nucleus (radius ~ c^0.2). Higher temperature makes more nuclei (smaller start)
  but speeds up Ostwald ripening.
* Coarsening. Lifshitz-Slyozov-Wagner ripening, R^3 = R0^3 + K(T) t, with an Arrhenius rate K
  damped by surfactant; radius grows ~ t^(1/3) at long times.
* Surfactant caps growth (soft cap R_cap ~ ratio^-0.35) and, with ascorbic acid, directs
  anisotropic growth: ellipsoids at intermediate surfactant ratio, rods (cylinders) at high ratio.
  Citrate with a lot of surfactant also gives ellipsoids.
* Borohydride at high precursor leaves an oxide shell (core-shell spheres).
* Polydispersity is smallest inside a burst-nucleation temperature window (one per reducer) and
  grows with time (Ostwald ripening broadens the distribution) and away from the window.
* Failures: too little precursor at low temperature never nucleates; citrate above 180 °C
  decomposes and the particles aggregate; borohydride above 170 °C hydrolyses before reducing.

Every synthesis gets batch-to-batch noise drawn from a generator seeded by the world seed and a
stable (SHA-256) hash of the sample id: the same world seed and sample id give the same sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulators.world import SynthesisFailed, World, check_params, from_unit_cube, stable_seed

__all__ = [
    "PARAMETER_SPACE",
    "REDUCING_AGENTS",
    "DEFAULT_TARGET",
    "SynthesisFailed",
    "Sample",
    "NanoparticleWorld",
    "validate_params",
    "target_fraction",
    "stable_seed",
]

REDUCING_AGENTS = ("citrate", "borohydride", "ascorbic_acid")

PARAMETER_SPACE: dict[str, dict[str, Any]] = {
    "temperature_C": {"type": "float", "bounds": (20.0, 200.0), "log_scale": False, "unit": "°C"},
    "precursor_mM": {"type": "float", "bounds": (0.5, 50.0), "log_scale": True, "unit": "mM"},
    "surfactant_ratio": {
        "type": "float",
        "bounds": (0.1, 10.0),
        "log_scale": True,
        "unit": "mol/mol (surfactant:metal)",
    },
    "reducing_agent": {"type": "choice", "values": REDUCING_AGENTS, "log_scale": False, "unit": None},
    "time_min": {"type": "float", "bounds": (1.0, 240.0), "log_scale": True, "unit": "min"},
}

# The demo campaign's default target: spheres of radius 8.0 ± 0.5 nm with polydispersity <= 0.10.
DEFAULT_TARGET = {"shape": "sphere", "radius_nm": 8.0, "radius_tolerance_nm": 0.5, "max_polydispersity": 0.10}

# X-ray scattering length densities in 1e-6 Å^-2 (sasmodels' unit): Ag, Ag2O, water.
SLD_METAL = 77.6
SLD_OXIDE = 53.4
SLD_SOLVENT = 9.47
MOLAR_VOLUME_CM3 = 10.27  # Ag, cm^3/mol
SYNTHESIS_OVERHEAD_S = 300.0  # dosing, mixing, quench, transfer

SHAPES = ("sphere", "core_shell_sphere", "cylinder", "ellipsoid")
_OK, _NO_NUCLEATION, _CITRATE_DECOMPOSED, _BOROHYDRIDE_HYDROLYSED = 0, 1, 2, 3
_FAILURE_REASONS = {
    _NO_NUCLEATION: "no particles formed: precursor too dilute to nucleate at this temperature "
    "(raise precursor_mM or temperature_C)",
    _CITRATE_DECOMPOSED: "citrate decomposed above 180 °C and the particles aggregated",
    _BOROHYDRIDE_HYDROLYSED: "borohydride hydrolysed above 170 °C before reducing the precursor",
}


@dataclass
class Sample:
    """One synthesised batch. `model_params` are sasmodels parameters (Å, 1e-6 Å^-2);
    `truth` is for tests and benchmarks only (the robot never sees it)."""

    sample_id: str
    params: dict[str, Any]
    shape: str
    model_params: dict[str, Any]
    truth: dict[str, Any]
    synthesis_time_s: float = 0.0
    made: bool = True

    def to_dict(self) -> dict[str, Any]:
        """What the robot knows about the sample: its id, the recipe, and that it was made."""
        return {
            "sample_id": self.sample_id,
            "params": dict(self.params),
            "made": self.made,
            "synthesis_time_s": self.synthesis_time_s,
        }


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters checked against PARAMETER_SPACE (floats as float); ValueError names the culprit."""
    return check_params(params, PARAMETER_SPACE)


# ----- the hidden response (vectorised) -------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _response(T, P, S, red, t) -> dict[str, np.ndarray]:
    """Noise-free mean response for arrays of temperature_C, precursor_mM, surfactant_ratio,
    reducer index (into REDUCING_AGENTS) and time_min. Lengths in nm."""
    T, P, S, t = (np.asarray(a, dtype=float) for a in (T, P, S, t))
    red = np.asarray(red, dtype=int)
    Tk = T + 273.15
    # reduction speed: more nuclei -> smaller particles
    k_red = np.array([0.0, 1.9, 0.9])[red]
    # radius after the precursor is consumed (nucleation-limited)
    r0 = 7.2 * np.exp(-0.55 * k_red) * (P / 5.0) ** 0.2 * np.exp(-(T - 80.0) / 180.0) / np.sqrt(1.0 + 0.15 * S)
    # LSW Ostwald ripening, Arrhenius rate damped by surfactant (nm^3/min)
    K = 1.6 * np.exp(5200.0 * (1.0 / 353.15 - 1.0 / Tk)) / (1.0 + S)
    r = np.cbrt(r0**3 + K * t)
    # surfactant caps growth (soft cap)
    r_cap = 30.0 / S**0.35
    r = r / np.cbrt(1.0 + (r / r_cap) ** 3)

    # polydispersity: burst-nucleation window per reducer, ripening with time
    t_burst = np.array([95.0, 35.0, 60.0])[red]
    dT = (T - t_burst) / 32.0
    pd = (
        0.038
        + 0.10 * dT**2 / (1.0 + 0.25 * dT**2)
        + 0.022 * _softplus(1.6 * np.log(t / 25.0))
        + 0.012 * np.log(S / 0.8) ** 2
    )
    pd = np.clip(pd, 0.02, 0.6)

    # regimes
    shape = np.zeros(T.shape, dtype=int)  # index into SHAPES
    is_cit, is_bh, is_asc = red == 0, red == 1, red == 2
    shape[is_bh & (np.log(P / 12.0) + (T - 100.0) / 150.0 > 0.0)] = 1
    shape[is_asc & (S >= 3.0)] = 2
    shape[is_asc & (S >= 0.8) & (S < 3.0)] = 3
    shape[is_cit & (S >= 4.0)] = 3

    # anisotropy and shells
    rod_radius = 0.6 * r
    rod_aspect = np.clip(3.0 + 2.5 * np.log(S / 3.0) + 0.6 * np.log(t / 10.0), 2.0, 12.0)
    rod_length = 2.0 * rod_radius * rod_aspect
    ell_eq = 0.8 * r
    ell_aspect = np.clip(1.5 + 0.6 * np.log(S / 0.8) * 0.5 + 0.1 * np.log(t / 10.0), 1.3, 3.0)
    shell = 0.8 + 1.2 * _sigmoid((T - 80.0) / 30.0) + 0.25 * np.log1p(t / 10.0)

    status = np.zeros(T.shape, dtype=int)
    status[P * np.exp((T - 20.0) / 35.0) < 2.0] = _NO_NUCLEATION
    status[is_cit & (T > 180.0)] = _CITRATE_DECOMPOSED
    status[is_bh & (T > 170.0)] = _BOROHYDRIDE_HYDROLYSED

    radius = np.where(shape == 2, rod_radius, np.where(shape == 3, ell_eq, r))
    return {
        "status": status,
        "shape": shape,
        "core_nm": r,
        "radius_nm": np.where(shape == 1, r + shell, radius),
        "shell_nm": shell,
        "length_nm": rod_length,
        "polar_radius_nm": ell_eq * ell_aspect,
        "polydispersity": pd,
        "volume_fraction": P * 1e-6 * MOLAR_VOLUME_CM3 * 0.9,
    }


def _cube_to_params(u: np.ndarray, reducer_index: np.ndarray) -> tuple[np.ndarray, ...]:
    """Columns of the unit cube (temperature, precursor, surfactant, time) to physical values."""
    T, P, S, t = from_unit_cube(u, ("temperature_C", "precursor_mM", "surfactant_ratio", "time_min"), PARAMETER_SPACE)
    return T, P, S, reducer_index, t


def meets_target(resp: dict[str, np.ndarray], target: dict[str, Any] | None = None) -> np.ndarray:
    tgt = target or DEFAULT_TARGET
    return (
        (resp["status"] == _OK)
        & (resp["shape"] == SHAPES.index(tgt["shape"]))
        & (np.abs(resp["radius_nm"] - tgt["radius_nm"]) <= tgt["radius_tolerance_nm"])
        & (resp["polydispersity"] <= tgt["max_polydispersity"])
    )


def target_fraction(n: int = 200_000, seed: int = 0, target: dict[str, Any] | None = None) -> float:
    """Fraction of the search space (log-scaled unit cube, reducing agents equally weighted) whose
    noise-free response meets the target (default: DEFAULT_TARGET)."""
    rng = np.random.default_rng(seed)
    u = rng.random((n, 4))
    red = rng.integers(0, len(REDUCING_AGENTS), n)
    resp = _response(*_cube_to_params(u, red))
    return float(np.mean(meets_target(resp, target)))


# ----- the world ---------------------------------------------------------------------------------

class NanoparticleWorld(World):
    """The hidden chemistry. `synthesize` makes a Sample (or raises SynthesisFailed); the world
    keeps every sample it made, for the instruments to measure."""

    # -- public -----------------------------------------------------------------------------------
    def synthesis_time_s(self, params: dict[str, Any]) -> float:
        """Simulated wall time of one synthesis: the reaction time plus a fixed overhead."""
        p = validate_params(params)
        return p["time_min"] * 60.0 + SYNTHESIS_OVERHEAD_S

    def synthesize(self, params: dict[str, Any], sample_id: str) -> Sample:
        p = validate_params(params)
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty string, got {sample_id!r}")
        resp = {
            k: v[0]
            for k, v in _response(
                [p["temperature_C"]],
                [p["precursor_mM"]],
                [p["surfactant_ratio"]],
                [REDUCING_AGENTS.index(p["reducing_agent"])],
                [p["time_min"]],
            ).items()
        }
        status = int(resp["status"])
        if status != _OK:
            raise SynthesisFailed(_FAILURE_REASONS[status], sample_id)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("synthesis", sample_id)]))
        sample = self._make_sample(p, sample_id, resp, rng)
        return self._keep(sample)

    def expected(self, params: dict[str, Any]) -> dict[str, Any]:
        """Noise-free truth for a recipe (for tests, benchmarks and docs; not for the loop)."""
        p = validate_params(params)
        r = _response(
            [p["temperature_C"]],
            [p["precursor_mM"]],
            [p["surfactant_ratio"]],
            [REDUCING_AGENTS.index(p["reducing_agent"])],
            [p["time_min"]],
        )
        status = int(r["status"][0])
        out = {"ok": status == _OK, "shape": SHAPES[int(r["shape"][0])]}
        if status != _OK:
            out["failure"] = _FAILURE_REASONS[status]
        for k in ("radius_nm", "length_nm", "polar_radius_nm", "shell_nm", "polydispersity"):
            out[k] = float(r[k][0])
        return out

    # -- internals --------------------------------------------------------------------------------
    def _make_sample(self, p: dict[str, Any], sample_id: str, resp: dict[str, Any], rng) -> Sample:
        shape = SHAPES[int(resp["shape"])]
        g = rng.standard_normal(6)
        size_noise = math.exp(0.03 * g[0])
        pd = float(np.clip(resp["polydispersity"] + 0.006 * g[1], 0.02, 0.6))
        aspect_noise = math.exp(0.04 * g[2])
        shell_noise = math.exp(0.08 * g[3])
        scale = float(resp["volume_fraction"] * math.exp(0.10 * g[4]))
        base = {"scale": scale, "background": 0.0, "sld_solvent": SLD_SOLVENT}
        def pd_for(par: str, width: float, pd_type: str = "schulz", n: int = 35) -> dict[str, Any]:
            return {f"{par}_pd": width, f"{par}_pd_type": pd_type, f"{par}_pd_n": n, f"{par}_pd_nsigma": 3.0}

        truth: dict[str, Any] = {"shape": shape, "polydispersity": pd}
        if shape == "sphere":
            radius_nm = float(resp["radius_nm"]) * size_noise
            mp = {**base, "sld": SLD_METAL, "radius": radius_nm * 10.0, **pd_for("radius", pd)}
            truth.update(radius_nm=radius_nm, length_nm=None)
        elif shape == "core_shell_sphere":
            core_nm = float(resp["core_nm"]) * size_noise
            shell_nm = float(resp["shell_nm"]) * shell_noise
            mp = {
                **base,
                "sld_core": SLD_METAL,
                "sld_shell": SLD_OXIDE,
                "radius": core_nm * 10.0,
                "thickness": shell_nm * 10.0,
                **pd_for("radius", pd),
            }
            truth.update(radius_nm=core_nm + shell_nm, core_radius_nm=core_nm, shell_nm=shell_nm, length_nm=None)
        elif shape == "cylinder":
            radius_nm = float(resp["radius_nm"]) * size_noise
            length_nm = float(resp["length_nm"]) * size_noise * aspect_noise
            mp = {
                **base,
                "sld": SLD_METAL,
                "radius": radius_nm * 10.0,
                "length": length_nm * 10.0,
                **pd_for("radius", pd),
                **pd_for("length", 0.10, "gaussian", 9),
            }
            truth.update(radius_nm=radius_nm, length_nm=length_nm)
        else:  # ellipsoid
            eq_nm = float(resp["radius_nm"]) * size_noise
            polar_nm = float(resp["polar_radius_nm"]) * size_noise * aspect_noise
            mp = {
                **base,
                "sld": SLD_METAL,
                "radius_equatorial": eq_nm * 10.0,
                "radius_polar": polar_nm * 10.0,
                **pd_for("radius_equatorial", pd),
            }
            truth.update(radius_nm=eq_nm, polar_radius_nm=polar_nm, length_nm=None)
        return Sample(
            sample_id=sample_id,
            params=dict(p),
            shape=shape,
            model_params=mp,
            truth=truth,
            synthesis_time_s=p["time_min"] * 60.0 + SYNTHESIS_OVERHEAD_S,
        )
