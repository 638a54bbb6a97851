"""Simulated SAS training and test data for shape-model identification and size regression.

Pure physics (numpy + sasmodels); imports nothing from `sdl`.

Each curve is a sasmodels form factor (Schulz polydispersity on the radius), for spheres and
core-shell spheres in training sometimes times a structure factor S(q) (hard-sphere or charged
Hayter-Penfold MSA: a concentrated sample keeps its shape label), measured through a simulated
instrument: Gaussian resolution smearing (dq/q), a random scale factor, a flat or sloped
background, in training also a low-q power-law upturn (aggregates) on some curves, Poisson
counting noise or (training) relative Gaussian errors as reduced data carry them, and missing q
points (beamstop, detector gaps).

Classes (`CLASSES`):

=====================  ==================  ====================================================
class                  sasmodels model     construction (what keeps classes distinguishable)
=====================  ==================  ====================================================
sphere                 sphere              radius with qmax*R >= 4 and qmin*R <= 2.5; pd <= 0.35
core_shell_sphere      core_shell_sphere   outer radius >= 8/qmax (smaller core-shell particles
                                           look homogeneous in the window); shell 15-50 % of
                                           the outer radius; core SLD differs
                                           from the shell SLD by a factor (core/shell in
                                           [-1, 0.3] or [2.5, 4], solvent 0; a quarter are
                                           hollow: core = solvent, a vesicle or protein cage):
                                           a core-shell particle with matched core and shell is
                                           a sphere; polydispersity <= 0.15 (more smears out
                                           the shell)
ellipsoid              ellipsoid           axial ratio in [1/12, 0.5] or [2, 12]; ratios in (0.5, 2)
                                           look like polydisperse spheres and are excluded
cylinder               cylinder            rod: length/diameter in [3, 100], length <= 10/qmin and 8000 Å
disc                   cylinder            flat cylinder: length/diameter in [1/60, 1/3]
core_shell_cylinder    core_shell_cylinder rod (length/outer diameter 3-60, outer radius >= 8/qmax)
                                           with a shell 15-50 %
                                           of the outer radius, contrasting core SLD, pd <= 0.15
other                  (several)           polymer coils, fractal aggregates, gels, power laws,
                                           two-phase random media (Debye-Anderson-Brumberger),
                                           Ornstein-Zernike + Porod, lamellar sheets, broad
                                           correlation peaks, microemulsions (Teubner-Strey):
                                           "none of these" (out-of-library)
=====================  ==================  ====================================================

Cylinders with length/diameter between 1/3 and 3 are excluded (stubby cylinders look like
spheres/ellipsoids). Sizes are drawn relative to the simulated q-window so that each class's
characteristic features fall inside it.

Train and test use disjoint instrument settings (`TRAIN`, `TEST`): the test q-window
(0.0045-0.45 Å⁻¹, linear q spacing) lies between the training windows (log spacing), and the
test counting levels and resolutions lie in gaps between and beyond the training ranges.

Lengths are in Å, q in Å⁻¹, intensity in arbitrary absolute units (cm⁻¹ up to the scale factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

CLASSES: tuple[str, ...] = (
    "sphere",
    "core_shell_sphere",
    "ellipsoid",
    "cylinder",
    "disc",
    "core_shell_cylinder",
    "other",
)
# class -> sasmodels model used to compute it ("other" draws from OTHER_MODELS)
SASMODEL: dict[str, str | None] = {
    "sphere": "sphere",
    "core_shell_sphere": "core_shell_sphere",
    "ellipsoid": "ellipsoid",
    "cylinder": "cylinder",
    "disc": "cylinder",
    "core_shell_cylinder": "core_shell_cylinder",
    "other": None,
}
OTHER_MODELS = ("mono_gauss_coil", "mass_fractal", "gauss_lorentz_gel", "power_law", "dab", "correlation_length",
                "lamellar", "broad_peak", "teubner_strey")
# structure factors (sasmodels S(q) models) multiplied onto SF_CLASSES' form factors in training;
# `saxs.structure_factor` reports these names
STRUCTURE_FACTORS = {"hard_sphere": "hardsphere", "charged": "hayter_msa"}
SF_CLASSES = ("sphere", "core_shell_sphere")
# families never used in training: out-of-distribution evaluation only
UNSEEN_OOD = ("peak_lorentz", "surface_fractal", "white_noise", "random_smooth")

# regression targets (Å for lengths; polydispersity is the Schulz relative width of `radius`)
TARGETS: tuple[str, ...] = ("radius", "length", "polar_radius", "shell", "polydispersity")
# which targets apply to which class
APPLIES: dict[str, tuple[str, ...]] = {
    "sphere": ("radius", "polydispersity"),
    "core_shell_sphere": ("radius", "shell", "polydispersity"),
    "ellipsoid": ("radius", "polar_radius", "polydispersity"),
    "cylinder": ("radius", "length", "polydispersity"),
    "disc": ("radius", "length", "polydispersity"),
    "core_shell_cylinder": ("radius", "length", "shell", "polydispersity"),
    "other": (),
}
# sasmodels parameter that carries the polydispersity, per model
PD_PARAM = {
    "sphere": "radius",
    "core_shell_sphere": "radius",
    "ellipsoid": "radius_equatorial",
    "cylinder": "radius",
    "core_shell_cylinder": "radius",
}
# Size-distribution quadrature. sasmodels sums pd_n radii 2·nsigma·σ_R/(pd_n − 1) apart; where q·ΔR passes
# ~3 the sum aliases into dips and spikes that no real distribution has (large polydisperse particles at
# high q). PD_N is the floor; pd_points adds radii up to PD_N_MAX. Orientation-averaged kernels cost
# pd_n × their angle quadrature, so they stop at 25, within ~2 % of converged for the training's widths.
PD_N = {"sphere": 15, "core_shell_sphere": 15, "ellipsoid": 9, "cylinder": 9, "core_shell_cylinder": 9}
PD_N_MAX = {"sphere": 400, "core_shell_sphere": 400, "ellipsoid": 25, "cylinder": 25, "core_shell_cylinder": 25}
PD_NSIGMA = 3.0


def pd_points(model: str, pars: dict[str, Any], qmax: float, floor: int | None = None) -> int:
    """Quadrature points for the size distribution of `model`'s PD_PARAM (sasmodels names: Å, and its `_pd`
    relative width) that keep qmax·ΔR ≤ 2.5 (qmax in Å⁻¹: the highest q computed): at least `floor`
    (default PD_N), at most PD_N_MAX unless the floor is higher. Orientation averaging hides the
    polydisperse radius where it is the larger dimension (discs, oblate ellipsoids: within 2 % at 9
    points), so the smaller dimension sets the spacing."""
    p = PD_PARAM[model]
    size = float(pars[p])
    if model == "ellipsoid":
        size = min(size, float(pars["radius_polar"]))
    elif model in ("cylinder", "core_shell_cylinder"):
        size = min(size, float(pars["length"]) / 2.0)
    need = 1 + math.ceil(2.0 * PD_NSIGMA * float(pars[p + "_pd"]) * size * qmax / 2.5)
    floor = PD_N[model] if floor is None else floor
    return int(max(floor, min(need, PD_N_MAX[model])))


def converged_pd(model: str, pars: dict[str, Any], qmax: float) -> dict[str, Any]:
    """A copy of `pars` (sasmodels names; `model` may carry "@structure_factor") with the size quadrature
    raised to `pd_points` at `qmax` (Å⁻¹), its own `_pd_n` (sasmodels' default 35 when absent) the floor."""
    shape, out = model.split("@")[0], dict(pars)
    p = PD_PARAM.get(shape, "")
    if out.get(p + "_pd", 0) > 0:
        out[p + "_pd_n"] = pd_points(shape, out, qmax, int(out.get(p + "_pd_n", 35)))
    return out

# the fine q grid that noise-free curves are computed on (margin for resolution smearing)
Q_FINE = np.logspace(math.log10(0.0006), math.log10(1.2), 256)
QMAX_SMEARED = 1.4  # a window's q_max times this: the highest q its smearing (dq/q ≤ 0.12, 3σ) reads


@dataclass(frozen=True)
class Instrument:
    """Ranges from which the simulated instrument settings and artefacts are drawn."""

    windows: tuple[tuple[float, float], ...]  # (qmin, qmax) centres, Å⁻¹
    window_jitter: float  # relative jitter of each end
    spacing: str  # "log" or "linear"
    n_points: tuple[int, int]
    counts: tuple[tuple[float, float], ...]  # peak counts, log-uniform in one of these bands
    dq_over_q: tuple[tuple[float, float], ...]  # Gaussian sigma of q / q, uniform in one band
    background: tuple[float, float]  # log10 of (background / noise-free I at qmax)
    slope: tuple[float, float]  # background(q) = b (1 + slope q/qmax)
    p_beamstop: float
    p_gaps: float
    p_upturn: float = 0.0  # a low-q power-law upturn (aggregates, dust): A (q/qmin)^-m, m 3-4
    p_relative_noise: float = 0.0  # reduced-data errors (relative Gaussian, 0.3-12 %) instead of Poisson counts
    p_structure: float = 0.0  # SF_CLASSES curves times a structure factor (concentrated or charged particles)


TRAIN = Instrument(
    windows=((0.0015, 0.12), (0.002, 0.2), (0.003, 0.3), (0.006, 0.6), (0.01, 0.8)),
    window_jitter=0.12,
    spacing="log",
    n_points=(120, 400),
    counts=((3e4, 3e5), (1e6, 1e7)),
    dq_over_q=((0.0, 0.03), (0.05, 0.12)),
    background=(-1.5, 0.5),
    slope=(-0.5, 1.0),
    p_beamstop=0.5,
    p_gaps=0.3,
    p_upturn=0.25,
    p_relative_noise=0.35,
    p_structure=0.3,
)
TEST = Instrument(
    windows=((0.0045, 0.45),),
    window_jitter=0.0,
    spacing="linear",
    n_points=(300, 500),
    counts=((3e5, 1e6), (1.5e4, 3e4), (1e7, 2e7)),
    dq_over_q=((0.03, 0.05), (0.08, 0.1)),
    background=(-1.5, 0.8),
    slope=(-0.6, 1.5),
    p_beamstop=0.7,
    p_gaps=0.5,
)
INSTRUMENTS = {"train": TRAIN, "test": TEST}


# ----- sasmodels -----------------------------------------------------------------------------------

_KERNELS: dict[tuple[str, str, int], Any] = {}
_MODELS: dict[tuple[str, str], Any] = {}


def _kernel(model: str, q: np.ndarray, dtype: str = "single"):
    key = (model, dtype, id(q))
    k = _KERNELS.get(key)
    if k is None:
        from sasmodels.core import load_model

        mkey = (model, dtype)
        if mkey not in _MODELS:
            _MODELS[mkey] = load_model(model, dtype=dtype)
        k = _MODELS[mkey].make_kernel([q])
        _KERNELS[key] = (k, q)  # keep q alive so id() stays unique
        return k
    return k[0]


def form_factor(model: str, q: np.ndarray, params: dict[str, float], dtype: str = "single", qmax: float | None = None) -> np.ndarray:
    """Noise-free sasmodels I(q) (scale 1, no background) for `params` (Å, SLD in 1e-6 Å⁻²).

    `params` may hold `polydispersity` (Schulz width of the model's radius parameter); `qmax` (Å⁻¹,
    default q.max()) is the highest q the curve will be used at, which sets the size quadrature.
    Pass the same array object for `q` repeatedly to reuse the compiled kernel.
    """
    from sasmodels.direct_model import call_kernel

    pars = _sasmodels_pars(model, params, float(np.max(q)) if qmax is None else qmax)
    I = np.asarray(call_kernel(_kernel(model, q, dtype), pars), dtype=float)
    return I


def curve_function(model: str, q: np.ndarray, dtype: str = "double") -> Callable[..., np.ndarray]:
    """f(params, pd_n=None) -> noise-free I(q) for a fixed q array (one compiled kernel; for refinement), the size
    average over `pd_n` radii (default PD_N). A fit keeps pd_n fixed while it runs (`quadrature` at its start):
    a pd_n that follows the parameters makes the χ² surface step (a disc's unidentifiable width wandered to 0.33)."""
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    mkey = (model, dtype)
    if mkey not in _MODELS:
        _MODELS[mkey] = load_model(model, dtype=dtype)
    q = np.asarray(q, dtype=float)
    kernel = _MODELS[mkey].make_kernel([q])

    def f(params: dict[str, float], pd_n: int | None = None) -> np.ndarray:
        pars = _sasmodels_pars(model, params, None)
        key = PD_PARAM.get(model, "") + "_pd_n"
        if pd_n is not None and key in pars:
            pars[key] = int(pd_n)
        return np.asarray(call_kernel(kernel, pars), dtype=float)

    return f


def quadrature(model: str, params: dict[str, float], qmax: float) -> int | None:
    """`pd_points` for `params` (as `form_factor` takes them) at `qmax` (Å⁻¹); None when monodisperse."""
    return _sasmodels_pars(model, params, qmax).get(PD_PARAM.get(model, "") + "_pd_n")


def _sasmodels_pars(model: str, params: dict[str, float], qmax: float | None) -> dict[str, Any]:
    """sasmodels parameters; the size quadrature from `pd_points` at `qmax` (Å⁻¹), or PD_N when None."""
    pars = {k: v for k, v in params.items() if k != "polydispersity"}
    pd = float(params.get("polydispersity", 0.0) or 0.0)
    if model in PD_PARAM and pd >= 0.005:  # narrower Schulz weights overflow in sasmodels: monodisperse
        p = PD_PARAM[model]
        pars[p + "_pd"] = pd
        pars[p + "_pd_n"] = PD_N[model] if qmax is None else pd_points(model, pars, qmax)
        pars[p + "_pd_type"] = "schulz"
        pars[p + "_pd_nsigma"] = PD_NSIGMA
    pars.setdefault("scale", 1.0)
    pars.setdefault("background", 0.0)
    return pars


def class_params(cls: str, target: dict[str, float], extra: dict[str, float] | None = None) -> tuple[str, dict[str, float]]:
    """sasmodels (model, parameters) for a class and its targets (Å), e.g. for refinement."""
    extra = dict(extra or {})
    pd = float(target.get("polydispersity", 0.0))
    if cls == "sphere":
        return "sphere", {"radius": target["radius"], "sld": 1.0, "sld_solvent": 0.0, "polydispersity": pd}
    if cls == "core_shell_sphere":
        return "core_shell_sphere", {
            "radius": target["radius"], "thickness": target["shell"], "sld_core": extra.get("sld_core", 3.0),
            "sld_shell": 1.0, "sld_solvent": 0.0, "polydispersity": pd,
        }
    if cls == "ellipsoid":
        return "ellipsoid", {
            "radius_equatorial": target["radius"], "radius_polar": target["polar_radius"], "sld": 1.0,
            "sld_solvent": 0.0, "polydispersity": pd,
        }
    if cls in ("cylinder", "disc"):
        return "cylinder", {"radius": target["radius"], "length": target["length"], "sld": 1.0, "sld_solvent": 0.0, "polydispersity": pd}
    if cls == "core_shell_cylinder":
        return "core_shell_cylinder", {
            "radius": target["radius"], "thickness": target["shell"], "length": target["length"],
            "sld_core": extra.get("sld_core", 3.0), "sld_shell": 1.0, "sld_solvent": 0.0, "polydispersity": pd,
        }
    raise ValueError(f"no sasmodels parameters for class {cls!r}")


# ----- parameter sampling --------------------------------------------------------------------------


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _pd(rng: np.random.Generator, hi: float) -> float:
    return 0.0 if rng.random() < 0.2 else float(rng.uniform(0.02, hi))


def _sld_core(rng: np.random.Generator) -> float:
    return float(rng.uniform(-1.0, 0.3)) if rng.random() < 0.5 else float(rng.uniform(2.5, 4.0))


def sample_params(cls: str, qmin: float, qmax: float, rng: np.random.Generator) -> tuple[str, dict[str, float], dict[str, float]]:
    """(sasmodels model, its parameters, regression targets) for one curve of `cls` in a q-window."""
    t: dict[str, float] = {}
    if cls == "sphere":
        lo, hi = max(10.0, 4.0 / qmax), min(1500.0, 2.5 / qmin)
        t = {"radius": _logu(rng, lo, hi), "polydispersity": _pd(rng, 0.35)}
        model, p = class_params(cls, t)
        return model, p, t
    if cls == "core_shell_sphere":
        rt = _logu(rng, max(15.0, 8.0 / qmax), min(1500.0, 2.5 / qmin))
        shell = rt * rng.uniform(0.15, 0.5)
        t = {"radius": rt - shell, "shell": shell, "polydispersity": _pd(rng, 0.15)}
        model, p = class_params(cls, t, {"sld_core": 0.0 if rng.random() < 0.25 else _sld_core(rng)})
        return model, p, t
    if cls == "ellipsoid":
        for _ in range(100):
            aspect = _logu(rng, 2.0, 12.0)
            lo, hi = max(10.0, 3.0 / qmax) * aspect, min(1500.0, 2.5 / qmin)
            if lo < hi:
                break
        big = _logu(rng, lo, max(hi, lo * 1.01))
        small = big / aspect
        if rng.random() < 0.5:  # prolate: polar > equatorial
            t = {"radius": small, "polar_radius": big}
        else:
            t = {"radius": big, "polar_radius": small}
        t["polydispersity"] = _pd(rng, 0.3)
        model, p = class_params(cls, t)
        return model, p, t
    if cls == "cylinder":
        r = _logu(rng, max(8.0, 2.5 / qmax), min(300.0, 0.6 / qmin))
        t = {"radius": r, "length": _logu(rng, 6 * r, max(6.5 * r, min(200 * r, 10.0 / qmin, 8000.0))), "polydispersity": _pd(rng, 0.25)}
        model, p = class_params(cls, t)
        return model, p, t
    if cls == "disc":
        for _ in range(200):
            length = _logu(rng, max(10.0, 2.4 / qmax), max(12.0, min(500.0, 0.5 / qmin)))
            r = length * _logu(rng, 3.0, 60.0) / 2
            if r <= 3.0 / qmin:
                break
        t = {"radius": r, "length": length, "polydispersity": _pd(rng, 0.25)}
        model, p = class_params(cls, t)
        return model, p, t
    if cls == "core_shell_cylinder":
        rt = _logu(rng, max(12.0, 8.0 / qmax), max(13.0, min(300.0, 0.6 / qmin)))
        shell = rt * rng.uniform(0.15, 0.5)
        t = {"radius": rt - shell, "shell": shell, "length": _logu(rng, 6 * rt, max(6.5 * rt, min(120 * rt, 10.0 / qmin, 8000.0))), "polydispersity": _pd(rng, 0.15)}
        model, p = class_params(cls, t, {"sld_core": _sld_core(rng)})
        return model, p, t
    if cls == "other":
        fam = OTHER_MODELS[int(rng.integers(len(OTHER_MODELS)))]
        return fam, _other_params(fam, qmin, qmax, rng), {}
    raise ValueError(f"unknown class {cls!r}; known: {CLASSES}")


def _other_params(fam: str, qmin: float, qmax: float, rng: np.random.Generator) -> dict[str, float]:
    if fam == "mono_gauss_coil":
        return {"i_zero": 1.0, "rg": _logu(rng, max(10.0, 1.0 / qmax), 3.0 / qmin)}
    if fam == "mass_fractal":
        return {"radius": rng.uniform(3.0, 40.0), "fractal_dim_mass": rng.uniform(1.3, 2.9),
                "cutoff_length": _logu(rng, 100.0, max(150.0, 3.0 / qmin))}
    if fam == "gauss_lorentz_gel":
        return {"gauss_scale": _logu(rng, 0.05, 20.0), "cor_length_static": _logu(rng, 30.0, max(40.0, 2.0 / qmin)),
                "lorentz_scale": 1.0, "cor_length_dynamic": _logu(rng, 5.0, 100.0)}
    if fam == "power_law":
        return {"power": rng.uniform(1.0, 4.5)}
    if fam == "dab":
        return {"cor_length": _logu(rng, 15.0, max(20.0, 2.0 / qmin))}
    if fam == "correlation_length":  # Ornstein-Zernike (polymer blends, gels) + a Porod term
        xi = _logu(rng, 10.0, max(15.0, 1.5 / qmin))
        return {"lorentz_scale": 1.0, "cor_length": xi, "lorentz_exp": rng.uniform(1.6, 2.4),
                "porod_exp": rng.uniform(2.5, 4.0), "porod_scale": 10 ** rng.uniform(-4, 0) * (qmin * 2) ** 3}
    if fam == "lamellar":
        return {"thickness": _logu(rng, 10.0, max(12.0, 3.0 / qmin)), "sld": 1.0, "sld_solvent": 0.0}
    if fam == "broad_peak":  # a broad correlation peak (polyelectrolytes, ionomers, microphase separation)
        return {"porod_scale": 10 ** rng.uniform(-3, 0) * qmin ** 3, "porod_exp": rng.uniform(2.0, 4.0), "peak_scale": 1.0,
                "correlation_length": _logu(rng, 10.0, 120.0), "peak_pos": _logu(rng, 3 * qmin, qmax / 3),
                "width_exp": rng.uniform(1.5, 3.0), "shape_exp": rng.uniform(1.0, 2.0)}
    if fam == "peak_lorentz":  # a Lorentzian Bragg-like peak (ordered mesophases)
        return {"peak_pos": _logu(rng, 3 * qmin, qmax / 3), "peak_hwhm": _logu(rng, 0.002, 0.05)}
    if fam == "teubner_strey":  # bicontinuous microemulsions
        return {"volfraction_a": rng.uniform(0.2, 0.8), "sld_a": 0.3, "sld_b": 6.3, "d": _logu(rng, 40.0, 0.8 / qmin),
                "xi": _logu(rng, 20.0, 400.0)}
    if fam == "surface_fractal":
        return {"radius": rng.uniform(5.0, 40.0), "fractal_dim_surf": rng.uniform(2.0, 2.9),
                "cutoff_length": _logu(rng, 100.0, max(150.0, 3.0 / qmin))}
    raise ValueError(fam)


def structure_factor(kind: str, q: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """S(q) of `kind` (a STRUCTURE_FACTORS key) with sasmodels parameters (radius_effective Å, volfraction, ...)."""
    return form_factor(STRUCTURE_FACTORS[kind], q, params, dtype="double")


def random_structure(rng: np.random.Generator, radius: float) -> tuple[str, dict[str, float]]:
    """A structure factor for particles of outer radius `radius` (Å): hard spheres at volume
    fraction 0.03-0.45, or charged spheres (Hayter-Penfold MSA, 0.01-0.25, low salt) whose charge
    grows with the surface so that the correlation peak shows."""
    r_eff = radius * rng.uniform(1.0, 1.15)
    if rng.random() < 0.5:
        return "hard_sphere", {"radius_effective": r_eff, "volfraction": float(rng.uniform(0.03, 0.45))}
    return "charged", {"radius_effective": r_eff, "volfraction": float(rng.uniform(0.01, 0.25)),
                       "charge": float(min(_logu(rng, 5.0, 60.0) * (r_eff / 25.0) ** 1.5, 200.0)), "temperature": 298.0,
                       "concentration_salt": float(_logu(rng, 1e-4, 0.02)), "dielectconst": 78.0}


# ----- the instrument --------------------------------------------------------------------------------


def _band(rng: np.random.Generator, bands: tuple[tuple[float, float], ...], log: bool) -> float:
    lo, hi = bands[int(rng.integers(len(bands)))]
    if log:
        return _logu(rng, lo, hi)
    return float(rng.uniform(lo, hi))


def draw_window(inst: Instrument, rng: np.random.Generator) -> tuple[float, float]:
    qmin, qmax = inst.windows[int(rng.integers(len(inst.windows)))]
    j = inst.window_jitter
    if j:
        qmin *= math.exp(rng.uniform(-j, j))
        qmax *= math.exp(rng.uniform(-j, j))
    return qmin, qmax


def smear(q_fine: np.ndarray, I_fine: np.ndarray, q: np.ndarray, dq_over_q: float) -> np.ndarray:
    """Gaussian-resolution-smeared I at q from a curve on a fine log grid (log-log interpolation
    when the resolution is narrower than the fine grid)."""
    logI = np.log(np.maximum(I_fine, 1e-300))
    if dq_over_q < 0.015:
        return np.exp(np.interp(np.log(q), np.log(q_fine), logI))
    sig = dq_over_q * q
    w = np.exp(-0.5 * ((q_fine[None, :] - q[:, None]) / sig[:, None]) ** 2)
    dqf = np.gradient(q_fine)
    w *= dqf[None, :]
    w /= w.sum(axis=1, keepdims=True)
    return w @ I_fine


def measure(
    I_fine: np.ndarray,
    qmin: float,
    qmax: float,
    inst: Instrument,
    rng: np.random.Generator,
    q_fine: np.ndarray = Q_FINE,
) -> dict[str, Any]:
    """A simulated measurement of a noise-free curve (given on `q_fine`) in the window [qmin, qmax]."""
    n = int(rng.integers(inst.n_points[0], inst.n_points[1] + 1))
    if inst.spacing == "log":
        q = np.logspace(math.log10(qmin), math.log10(qmax), n)
    else:
        q = np.linspace(qmin, qmax, n)
    dqq = _band(rng, inst.dq_over_q, log=False)
    I = smear(q_fine, I_fine, q, dqq)
    I = I / I.max()  # random scale enters below, after normalising out model units
    scale = 10 ** rng.uniform(-3, 3)
    bg = I[-1] * 10 ** rng.uniform(*inst.background) if rng.random() < 0.9 else 0.0
    slope = rng.uniform(*inst.slope) if rng.random() < 0.5 else 0.0
    Itot = I + bg * np.clip(1.0 + slope * q / qmax, 0.05, None)
    if inst.p_upturn and rng.random() < inst.p_upturn:
        Itot = Itot + I[0] * 10 ** rng.uniform(-2.0, -0.3) * (q / q[0]) ** -rng.uniform(3.0, 4.0)
    peak = _band(rng, inst.counts, log=True)
    factor = peak / Itot.max()
    if inst.p_relative_noise and rng.random() < inst.p_relative_noise:
        sd = Itot * _logu(rng, 0.003, 0.12) + 1e-4 * Itot.max()
        I_obs = (Itot + rng.normal(0.0, sd)) * scale  # may go negative at high q, as subtracted data does
        sigma = sd * scale
    else:
        counts = rng.poisson(Itot * factor).astype(float)
        I_obs = counts / factor * scale
        sigma = np.sqrt(np.maximum(counts, 1.0)) / factor * scale
    keep = np.ones(n, bool)
    lq = np.log(q / qmin)
    if rng.random() < inst.p_beamstop:  # beamstop shadow: the lowest q (up to +25 % of qmin) is lost
        keep &= lq >= rng.uniform(0.0, math.log(1.25))
    if rng.random() < inst.p_gaps:  # detector gaps / masked rings: 1-3 holes of 3-12 % in q
        span = math.log(qmax / qmin)
        for _ in range(int(rng.integers(1, 4))):
            w = rng.uniform(0.03, 0.12)
            s = rng.uniform(0.0, max(span - w, 1e-9))
            keep &= ~((lq >= s) & (lq < s + w))
    return {
        "q": q[keep], "I": I_obs[keep], "sigma": sigma[keep], "dq": (dqq * q)[keep],
        "dq_over_q": dqq, "peak_counts": peak, "background_rel": float(bg), "slope": float(slope),
    }


def white_noise(qmin: float, qmax: float, inst: Instrument, rng: np.random.Generator) -> dict[str, Any]:
    """Garbage: a flat level with counting noise (an empty or failed measurement)."""
    n = int(rng.integers(inst.n_points[0], inst.n_points[1] + 1))
    q = np.logspace(math.log10(qmin), math.log10(qmax), n) if inst.spacing == "log" else np.linspace(qmin, qmax, n)
    level = _logu(rng, 3.0, 1e4)
    counts = rng.poisson(np.full(n, level)).astype(float)
    scale = 10 ** rng.uniform(-3, 3)
    return {"q": q, "I": counts * scale, "sigma": np.sqrt(np.maximum(counts, 1)) * scale, "dq": 0.03 * q}


def random_smooth(rng: np.random.Generator, q_fine: np.ndarray = Q_FINE) -> np.ndarray:
    """Garbage: a random smooth log-log curve (sum of random sigmoids/bumps), not a physical model."""
    x = np.log(q_fine)
    y = np.zeros_like(x)
    for _ in range(int(rng.integers(2, 6))):
        c = rng.uniform(x[0], x[-1])
        y += rng.uniform(-4, 4) * np.tanh((x - c) / rng.uniform(0.1, 1.0))
    return np.exp(y - y.max())


# ----- data sets -------------------------------------------------------------------------------------


def generate(
    n_per_class: int,
    seed: int,
    split: str = "train",
    classes: Iterable[str] = CLASSES,
    variants: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """`n_per_class` noise-free curves per class, each measured `variants` times.

    Returns dict of lists: q, I, sigma, dq (per curve arrays), label (class index into CLASSES),
    family (sasmodels model), targets (dict per curve; NaN where not applicable), and the drawn
    instrument settings. The same (n_per_class, seed, split, variants) gives the same data.
    """
    inst = INSTRUMENTS[split]
    out: dict[str, list] = {k: [] for k in ("q", "I", "sigma", "dq", "label", "family", "targets", "dq_over_q", "peak_counts")}
    for ci, cls in enumerate(CLASSES):
        if cls not in tuple(classes):
            continue
        rng = np.random.default_rng([seed, ci, 0 if split == "train" else 1])
        for _ in range(n_per_class):
            qmin, qmax = draw_window(inst, rng)
            model, params, target = sample_params(cls, qmin, qmax, rng)
            I_fine = form_factor(model, Q_FINE, params, qmax=QMAX_SMEARED * qmax)
            if cls in SF_CLASSES and inst.p_structure and rng.random() < inst.p_structure:
                kind, sf = random_structure(rng, target["radius"] + target.get("shell", 0.0))
                S = structure_factor(kind, Q_FINE, sf)
                if np.all(np.isfinite(S)) and S.min() > 0:
                    I_fine = I_fine * S
                    model = f"{model}@{STRUCTURE_FACTORS[kind]}"
            for _v in range(variants):
                m = measure(I_fine, qmin, qmax, inst, rng)
                for k in ("q", "I", "sigma", "dq", "dq_over_q", "peak_counts"):
                    out[k].append(m[k])
                out["label"].append(ci)
                out["family"].append(model)
                out["targets"].append({k: float(target.get(k, np.nan)) for k in TARGETS})
            if progress:
                progress(1)
    return out


def generate_ood(n_per_family: int, seed: int, split: str = "test", families: Iterable[str] = UNSEEN_OOD + ("power_law",)) -> dict[str, Any]:
    """Curves outside the shape library: unseen sasmodels families, white noise, random smooth curves,
    and pure power laws (power laws are also in the training "other" family)."""
    inst = INSTRUMENTS[split]
    out: dict[str, list] = {"q": [], "I": [], "sigma": [], "dq": [], "family": []}
    for fi, fam in enumerate(families):
        rng = np.random.default_rng([seed, 100 + fi])
        for _ in range(n_per_family):
            qmin, qmax = draw_window(inst, rng)
            if fam == "white_noise":
                m = white_noise(qmin, qmax, inst, rng)
            else:
                if fam == "random_smooth":
                    I_fine = random_smooth(rng)
                else:
                    I_fine = form_factor(fam, Q_FINE, _other_params(fam, qmin, qmax, rng), qmax=QMAX_SMEARED * qmax)
                m = measure(I_fine, qmin, qmax, inst, rng)
            for k in ("q", "I", "sigma", "dq"):
                out[k].append(m[k])
            out["family"].append(fam)
    return out
