"""A simulated oxide-synthesis world: co-precipitated Ce1-xZrxO2 calcined under a chosen
atmosphere -> (hidden) phases, fractions, lattice parameters and crystallite sizes, measured by
a simulated powder diffractometer (`PdInstrument`).

Synthesis parameters (`PARAMETER_SPACE`):

* `zr_fraction` x = Zr/(Ce+Zr), 0–1.
* `calcination_temperature_C` 300–1100 °C.
* `calcination_time_h` 0.5–24 h (log scale).
* `atmosphere` "air", "argon" or "hydrogen".

The hidden response (plausible, after the CeO2–ZrO2 phase diagram of Yashima et al. and the
size-stabilisation of t-ZrO2 of Garvie):

* Crystallite growth: L³ = L0³ + k t with k = k0 exp(-Ea/RT) (Ea ≈ 117 kJ/mol), L0 = 3 nm;
  Ce/Zr mixing slows growth (solute drag, factor 1 - 0.6·4x(1-x)); argon ×1.3 and hydrogen ×2
  (oxygen vacancies speed up diffusion).
* x ≲ 0.5: cubic fluorite solid solution (library phase "CeO2") with Vegard lattice
  a = 5.411 - 0.32 x Å (5.25 Å at x = 0.5).
* 0.5 ≲ x: tetragonal (t') solid solution ("ZrO2_tetragonal"), cell expanded by Ce:
  lattice scale 1 + 0.055 (1 - x). The boundary is smooth over ±0.03 in x.
* Zr-rich t-ZrO2 turns monoclinic once its crystallites grow past a critical size
  L_c = 15 + 400 (1 - x)² nm (Ce stabilises the tetragonal form): pure ZrO2 calcined hot is
  monoclinic, calcined cool is tetragonal.
* Above ≈ 1000 °C (earlier for longer times) intermediate compositions 0.2 < x < 0.8 decompose
  into Ce-rich cubic (x = 0.2) and Zr-rich tetragonal (x = 0.8) phases (lever rule).
* Hydrogen (and argon, less) reduces Ce4+ to Ce3+: the fluorite lattice expands (≤ +0.4 %),
  and above ≈ 950 °C in hydrogen Ce-rich samples (x < 0.4) form hexagonal Ce2O3 — a phase that is
  NOT in the PD analyser's library (the analyser must flag it, not force a label).
* Microstrain from compositional inhomogeneity, ε = (0.5 + 3·4x(1-x)) × 10⁻³, annealing out above
  ≈ 800 °C.
* Failures: below ≈ 350 °C for short times the product is X-ray amorphous; hydrogen above
  1050 °C with x < 0.5 reduces and sinters the powder onto the crucible.

Every synthesis draws batch-to-batch noise (size ±5 %, lattice ±0.03 %, fractions ±0.01) from a
generator seeded by numpy SeedSequence([world seed, SHA-256(sample id)]).

Default target (`DEFAULT_TARGET`): phase-pure tetragonal ZrO2-rich solid solution
(≥ 97 wt% ZrO2_tetragonal, no secondary phase above 3 wt%) with crystallite size 14–17 nm;
`target_fraction()` measures that it covers ≈ 1 % of the (log-scaled) parameter space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.pd import physics as _pd
from simulators.world import SynthesisFailed, World, check_params, from_unit_cube, stable_seed

__all__ = [
    "PARAMETER_SPACE",
    "ATMOSPHERES",
    "DEFAULT_TARGET",
    "SynthesisFailed",
    "Sample",
    "OxideWorld",
    "validate_params",
    "response",
    "meets_target",
    "target_fraction",
    "stable_seed",
]

ATMOSPHERES = ("air", "argon", "hydrogen")
PARAMETER_SPACE: dict[str, dict[str, Any]] = {
    "zr_fraction": {"type": "float", "bounds": (0.0, 1.0), "log_scale": False, "unit": "mol/mol Zr/(Ce+Zr)"},
    "calcination_temperature_C": {"type": "float", "bounds": (300.0, 1100.0), "log_scale": False, "unit": "°C"},
    "calcination_time_h": {"type": "float", "bounds": (0.5, 24.0), "log_scale": True, "unit": "h"},
    "atmosphere": {"type": "choice", "values": ATMOSPHERES, "log_scale": False, "unit": None},
}
DEFAULT_TARGET = {"phase": "ZrO2_tetragonal", "min_fraction": 0.97, "size_nm": (14.0, 17.0)}

R_GAS = 8.314462618
EA_J_MOL = 117_000.0
K0_NM3_H = 51_200.0 * math.exp(EA_J_MOL / (R_GAS * 1273.15))  # k(1000 °C) = 51 200 nm³/h
L0_NM = 3.0
ATMOSPHERE_GROWTH = {"air": 1.0, "argon": 1.3, "hydrogen": 2.0}
ATMOSPHERE_REDUCTION = {"air": 0.0, "argon": 0.35, "hydrogen": 1.0}
HANDLING_S = 1800.0  # weighing, ramp-up and cool-down around the isothermal calcination

_OK, _AMORPHOUS, _SINTERED = 0, 1, 2
_FAILURE_REASONS = {
    _AMORPHOUS: "product is X-ray amorphous: calcination too cool or too short to crystallise "
    "(raise calcination_temperature_C above ~350 °C or calcine longer)",
    _SINTERED: "powder reduced and sintered onto the crucible in hydrogen above 1050 °C "
    "(lower the temperature, use air/argon, or raise zr_fraction)",
}
PHASE_KEYS = ("CeO2", "ZrO2_tetragonal", "ZrO2_monoclinic", "Ce2O3_hexagonal")


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters checked against PARAMETER_SPACE (floats as float); ValueError names the culprit."""
    return check_params(params, PARAMETER_SPACE)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def response(x, T_C, t_h, atm_index) -> dict[str, np.ndarray]:
    """Noise-free response, vectorised over arrays of equal length. Returns weight fractions
    `w_<phase>`, `scale_<phase>` (lattice scale vs the library reference), `size_nm`, `strain`
    and `status` (0 ok, else a failure code)."""
    x = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
    T = np.asarray(T_C, dtype=float)
    t = np.asarray(t_h, dtype=float)
    atm = np.asarray(atm_index, dtype=int)
    TK = T + 273.15
    growth = np.array([ATMOSPHERE_GROWTH[a] for a in ATMOSPHERES])[atm]
    red = np.array([ATMOSPHERE_REDUCTION[a] for a in ATMOSPHERES])[atm]
    mix = 4.0 * x * (1.0 - x)
    k = K0_NM3_H * np.exp(-EA_J_MOL / (R_GAS * TK)) * growth * (1.0 - 0.6 * mix)
    size = np.cbrt(L0_NM ** 3 + k * t)

    # cubic vs tetragonal solid solution
    f_tet = _sig((x - 0.5) / 0.03)
    # phase separation at high temperature (longer times lower the onset)
    sep = _sig((T + 40.0 * np.log(t) - 1000.0) / 25.0) * (x > 0.2) * (x < 0.8)
    # lever rule between x = 0.2 (cubic) and x = 0.8 (tetragonal)
    w_c_sep = np.clip((0.8 - x) / 0.6, 0, 1)
    w_cub = (1 - sep) * (1 - f_tet) + sep * w_c_sep
    w_tet = (1 - sep) * f_tet + sep * (1 - w_c_sep)
    x_cub = np.where(sep > 0.5, np.minimum(x, 0.2), x)
    x_tet = np.where(sep > 0.5, np.maximum(x, 0.8), x)
    # t -> m once crystallites exceed the critical size (Ce stabilises t)
    lc = 15.0 + 400.0 * (1.0 - x_tet) ** 2
    f_mono = _sig((size - lc) / (0.08 * lc))
    w_mono = w_tet * f_mono
    w_tet = w_tet * (1 - f_mono)
    # reduction: Ce2O3 in hydrogen, hot, Ce-rich
    f_ce2o3 = (atm == ATMOSPHERES.index("hydrogen")) * _sig((T - 950.0) / 30.0) * _sig((0.4 - x) / 0.05) * 0.35 * (1 - x)
    w_ce2o3 = w_cub * f_ce2o3
    w_cub = w_cub * (1 - f_ce2o3)
    expand = 0.004 * red * (1 - x_cub) * _sig((T - 600.0) / 80.0)
    scale_cub = (5.411 - 0.32 * x_cub) / 5.411 * (1 + expand)
    scale_tet = 1.0 + 0.055 * (1.0 - x_tet)
    scale_mono = 1.0 + 0.02 * (1.0 - x_tet)
    strain = (0.5e-3 + 3e-3 * mix) * (1 - 0.8 * _sig((T - 800.0) / 60.0))
    status = np.full(x.shape, _OK)
    status = np.where((T + 60.0 * np.log(t) < 350.0), _AMORPHOUS, status)
    status = np.where((atm == ATMOSPHERES.index("hydrogen")) & (T > 1050.0) & (x < 0.5), _SINTERED, status)
    return {
        "w_CeO2": w_cub, "w_ZrO2_tetragonal": w_tet, "w_ZrO2_monoclinic": w_mono, "w_Ce2O3_hexagonal": w_ce2o3,
        "scale_CeO2": scale_cub, "scale_ZrO2_tetragonal": scale_tet, "scale_ZrO2_monoclinic": scale_mono,
        "scale_Ce2O3_hexagonal": np.ones_like(x),
        "size_nm": size, "strain": strain, "status": status,
    }


def meets_target(resp: dict[str, np.ndarray], target: dict[str, Any] | None = None) -> np.ndarray:
    tgt = target or DEFAULT_TARGET
    lo, hi = tgt["size_nm"]
    return (resp["status"] == _OK) & (resp["w_" + tgt["phase"]] >= tgt["min_fraction"]) & (
        resp["size_nm"] >= lo) & (resp["size_nm"] <= hi)


def _cube_to_params(u: np.ndarray, atm: np.ndarray):
    x, T, t = from_unit_cube(u, ("zr_fraction", "calcination_temperature_C", "calcination_time_h"), PARAMETER_SPACE)
    return x, T, t, atm


def target_fraction(n: int = 200_000, seed: int = 0, target: dict[str, Any] | None = None) -> float:
    """Fraction of the search space (unit cube, time log-scaled, atmospheres equally weighted)
    whose noise-free response meets the target (default DEFAULT_TARGET)."""
    rng = np.random.default_rng(seed)
    u = rng.random((n, 3))
    atm = rng.integers(0, len(ATMOSPHERES), n)
    return float(np.mean(meets_target(response(*_cube_to_params(u, atm)), target)))


@dataclass
class Sample:
    """One calcined powder. `truth` (phases, weight fractions, lattice parameters, sizes) is for
    tests and benchmarks only; the robot sees `to_dict()`."""

    sample_id: str
    params: dict[str, Any]
    phases: list[dict[str, Any]]
    truth: dict[str, Any]
    synthesis_time_s: float = 0.0
    made: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "params": dict(self.params),
            "made": self.made,
            "synthesis_time_s": self.synthesis_time_s,
        }

    @property
    def components(self) -> list[_pd.PhaseComponent]:
        return [
            _pd.PhaseComponent(p["phase"], p["weight_fraction"], p["lattice_scale"], p["size_nm"], p["strain"],
                               p.get("po_ratio", 1.0))
            for p in self.phases
        ]


class OxideWorld(World):
    """The hidden chemistry. `synthesize` makes a Sample (or raises SynthesisFailed); the world
    keeps every sample it made, for the instruments to measure."""

    def synthesis_time_s(self, params: dict[str, Any]) -> float:
        """Calcination time plus ramp/cool/handling overhead (s)."""
        p = validate_params(params)
        return p["calcination_time_h"] * 3600.0 + HANDLING_S

    def expected(self, params: dict[str, Any]) -> dict[str, Any]:
        """Noise-free response for a recipe (tests, benchmarks, docs; not for the loop)."""
        p = validate_params(params)
        r = response([p["zr_fraction"]], [p["calcination_temperature_C"]], [p["calcination_time_h"]],
                     [ATMOSPHERES.index(p["atmosphere"])])
        out: dict[str, Any] = {k: (float(v[0]) if k != "status" else int(v[0])) for k, v in r.items()}
        out["ok"] = out["status"] == _OK
        if not out["ok"]:
            out["failure"] = _FAILURE_REASONS[out["status"]]
        out["meets_target"] = bool(meets_target(r)[0])
        return out

    def synthesize(self, params: dict[str, Any], sample_id: str) -> Sample:
        p = validate_params(params)
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"sample_id must be a non-empty string, got {sample_id!r}")
        r = {k: v[0] for k, v in response([p["zr_fraction"]], [p["calcination_temperature_C"]],
                                           [p["calcination_time_h"]], [ATMOSPHERES.index(p["atmosphere"])]).items()}
        if int(r["status"]) != _OK:
            raise SynthesisFailed(_FAILURE_REASONS[int(r["status"])], sample_id)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, stable_seed("oxide-synthesis", sample_id)]))
        g = rng.standard_normal(12)
        size = float(r["size_nm"]) * math.exp(0.05 * g[0])
        strain = float(r["strain"]) * math.exp(0.1 * g[1])
        phases = []
        ws = np.array([float(r["w_" + k]) for k in PHASE_KEYS])
        ws = np.clip(ws + 0.01 * g[2:6] * (ws > 0.02), 0.0, None)
        ws[ws < 0.01] = 0.0
        ws = ws / ws.sum()
        for i, key in enumerate(PHASE_KEYS):
            if ws[i] <= 0:
                continue
            scale = float(float(r["scale_" + key]) * (1 + 3e-4 * g[6 + i]))
            ref = _pd._phase(key)
            size_i = size * (1.25 if key == "ZrO2_monoclinic" else 1.0) * (0.8 if key == "Ce2O3_hexagonal" else 1.0)
            phases.append({
                "phase": key,
                "weight_fraction": float(ws[i]),
                "lattice_scale": scale,
                "lattice_a_angstrom": scale * ref.a,
                "size_nm": size_i,
                "strain": strain,
                "po_ratio": float(np.clip(1.0 + 0.03 * g[10], 0.9, 1.1)),
                "in_library": key in _pd.PHASES,
            })
        phase_names = sorted(ph["phase"] for ph in phases)
        truth = {
            "phases": phase_names,
            "fractions": {ph["phase"]: ph["weight_fraction"] for ph in phases},
            "lattice_a_angstrom": {ph["phase"]: ph["lattice_a_angstrom"] for ph in phases},
            "lattice_scale": {ph["phase"]: ph["lattice_scale"] for ph in phases},
            "size_nm": {ph["phase"]: ph["size_nm"] for ph in phases},
            "strain": strain,
            "phase_purity": float(max(ph["weight_fraction"] for ph in phases)),
            "meets_target": bool(
                DEFAULT_TARGET["phase"] in phase_names
                and dict((ph["phase"], ph["weight_fraction"]) for ph in phases)[DEFAULT_TARGET["phase"]]
                >= DEFAULT_TARGET["min_fraction"]
                and DEFAULT_TARGET["size_nm"][0] <= size <= DEFAULT_TARGET["size_nm"][1]
            ),
        }
        sample = Sample(sample_id=sample_id, params=dict(p), phases=phases, truth=truth,
                        synthesis_time_s=self.synthesis_time_s(p))
        return self._keep(sample)
