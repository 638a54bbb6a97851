"""SAXS model identification and refinement by least squares (no training needed).

Method (`info["method"] == "guinier+least_squares"`):

1. Guinier analysis at low q (ln I against q², iterated until q·Rg ≤ 1.3) gives Rg and I(0): the
   starting size for every model.
2. For each candidate sasmodels model (sphere, core_shell_sphere, cylinder, ellipsoid) a grid of
   starts derived from Rg (radius scale, aspect ratio, shell fraction, polydispersity) is scored,
   and the best starts are refined with scipy.optimize.least_squares. Scale and background enter
   linearly and are solved exactly at every step (variable projection), so the non-linear search
   only sees sizes, shape and polydispersity (Schulz radius_pd).
3. Each model's optimum is polished with all parameters free (scale, background included); the
   Jacobian there gives the covariance, scaled by the reduced chi².
4. Models are ranked by the Bayesian information criterion, BIC = chi² + k ln n; the model
   probabilities are the BIC weights exp(-ΔBIC/2), normalised.

Residuals are weighted by sqrt(sigma² + (error_floor·I)²) when the measurement carries sigma (a
1 % floor stands for the model and calibration errors that counting statistics do not show),
else by a relative error (a fit of log-intensity in effect). The pinhole resolution comes from the
`dq_inv_angstrom` array, or `metadata["dq_over_q"]`, else none is applied; a slit-smeared curve
(`slit_length_inv_angstrom`/`slit_width_inv_angstrom` arrays, e.g. USANS) is fitted with its slit
resolution instead (sasmodels' Slit1D).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.errors import AnalysisError
from sdl.measurement import Measurement
from sdl.techniques.saxs.reader import analysed_with_q_check

__all__ = ["SaxsFitAnalyser", "SlitResolution", "guinier", "CANDIDATE_MODELS"]

CANDIDATE_MODELS = ("sphere", "core_shell_sphere", "cylinder", "ellipsoid")
MIN_POINTS = 20


@dataclass(frozen=True)
class SlitResolution:
    """Slit resolution of a curve (USANS, Kratky cameras): slit length and width per point, Å⁻¹."""

    length: np.ndarray
    width: np.ndarray

    def __getitem__(self, idx) -> "SlitResolution":
        return SlitResolution(self.length[idx], self.width[idx])


def _direct_model(name: str, q: np.ndarray, dq: "np.ndarray | SlitResolution | None"):
    """A sasmodels DirectModel; compiled kernels are loaded once per process (simulators.saxs.instrument).
    `dq`: pinhole dq (one standard deviation) or a SlitResolution."""
    from simulators.saxs.instrument import make_direct_model

    if isinstance(dq, SlitResolution):
        return make_direct_model(name, q, None, slit_length=dq.length, slit_width=dq.width)
    return make_direct_model(name, q, dq if dq is not None and np.any(dq > 0) else None)


# ----- Guinier ---------------------------------------------------------------------------------------

@dataclass
class GuinierResult:
    rg: float  # Å
    rg_sigma: float
    i0: float
    n_points: int
    q_rg_max: float
    ok: bool
    note: str = ""


def guinier(q: np.ndarray, intensity: np.ndarray, weights: np.ndarray | None = None, qrg_max: float = 1.3) -> GuinierResult:
    """Rg (Å) and I(0) from the low-q slope of ln I against q² (q in Å⁻¹)."""
    pos = intensity > 0
    q, y = q[pos], np.log(intensity[pos])
    w = np.ones_like(q) if weights is None else (intensity[pos] / weights[pos]) ** 2  # 1/var of ln I
    if q.size < 5:
        return GuinierResult(float("nan"), float("nan"), float("nan"), int(q.size), float("nan"), False, "fewer than 5 positive points")
    n = min(max(8, q.size // 10), q.size)
    rg = float("nan")
    result = None
    for _ in range(8):
        x = q[:n] ** 2
        ww = w[:n]
        A = np.column_stack([np.ones(n), x]) * np.sqrt(ww)[:, None]
        coef, *_ = np.linalg.lstsq(A, y[:n] * np.sqrt(ww), rcond=None)
        slope = coef[1]
        if slope >= 0:
            result = GuinierResult(float("nan"), float("nan"), float(np.exp(coef[0])), n, float("nan"), False, "no Guinier decay at low q")
            break
        rg = math.sqrt(-3.0 * slope)
        resid = y[:n] - (coef[0] + slope * x)
        dof = max(n - 2, 1)
        s2 = float(np.sum(ww * resid**2) / dof)
        try:
            cov = np.linalg.inv(A.T @ A) * max(s2, 1e-300)
            rg_sigma = abs(1.5 / rg * math.sqrt(max(cov[1, 1], 0.0)))
        except np.linalg.LinAlgError:
            rg_sigma = float("nan")
        result = GuinierResult(rg, rg_sigma, float(np.exp(coef[0])), n, float(q[n - 1] * rg), True)
        n_new = int(np.searchsorted(q, qrg_max / rg, side="right"))
        n_new = min(max(n_new, 5), q.size)
        if n_new == n:
            break
        n = n_new
    assert result is not None
    if result.ok and q[0] * result.rg > qrg_max:
        result.ok = False
        result.note = f"q_min·Rg = {q[0] * result.rg:.2f} > {qrg_max}: the Guinier region is not measured"
    elif result.ok and result.n_points < 5:
        result.ok = False
        result.note = "fewer than 5 points in the Guinier region"
    return result


# ----- model definitions -------------------------------------------------------------------------------

LN_R = (math.log(3.0), math.log(3000.0))  # lengths 3 Å .. 300 nm
PD = (0.005, 0.6)


@dataclass
class _ModelSpec:
    name: str
    pnames: tuple[str, ...]  # non-linear fit parameters (ln-lengths, pd, contrast)
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    to_kwargs: Callable[[np.ndarray, int], dict[str, Any]]
    starts: Callable[[float], list[list[float]]]
    pd_n: tuple[int, int]  # polydispersity quadrature points: (search on a q subset, final)


def _sphere_kwargs(x, n):
    return dict(sld=1.0, sld_solvent=0.0, radius=math.exp(x[0]), radius_pd=x[1], radius_pd_n=n, radius_pd_type="schulz")


def _sphere_starts(rg):
    r0 = rg * math.sqrt(5.0 / 3.0)
    return [[math.log(r0 * f), pd] for f in (0.45, 0.6, 0.75, 0.9, 1.05, 1.2) for pd in (0.05, 0.15, 0.3, 0.45)]


def _cs_kwargs(x, n):
    return dict(
        sld_core=1.0,
        sld_shell=x[2],
        sld_solvent=0.0,
        radius=math.exp(x[0]),
        thickness=math.exp(x[1]),
        radius_pd=x[3],
        radius_pd_n=n,
        radius_pd_type="schulz",
    )


def _cs_starts(rg):
    out = []
    for f in (0.7, 0.9):
        rt = rg * math.sqrt(5.0 / 3.0) * f
        for frac in (0.15, 0.3):
            for c in (0.4, 0.7):
                for pd in (0.05, 0.15):
                    out.append([math.log(rt * (1 - frac)), math.log(rt * frac), c, pd])
    return out


def _cyl_kwargs(x, n):
    return dict(sld=1.0, sld_solvent=0.0, radius=math.exp(x[0]), length=math.exp(x[1]), radius_pd=x[2], radius_pd_n=n, radius_pd_type="schulz")


def _cyl_starts(rg):
    out = []
    for a in (1.5, 3.0, 5.0, 8.0, 12.0):  # aspect L/(2R); Rg² = R²/2 + L²/12
        r = rg / math.sqrt(0.5 + a * a / 3.0)
        for pd in (0.08, 0.2, 0.4):
            out.append([math.log(r), math.log(2 * a * r), pd])
    return out


def _ell_kwargs(x, n):
    return dict(
        sld=1.0,
        sld_solvent=0.0,
        radius_equatorial=math.exp(x[0]),
        radius_polar=math.exp(x[1]),
        radius_equatorial_pd=x[2],
        radius_equatorial_pd_n=n,
        radius_equatorial_pd_type="schulz",
    )


def _ell_starts(rg):
    out = []
    for nu in (0.4, 0.65, 1.5, 2.2, 3.0):  # Rp/Re; Rg² = (2Re² + Rp²)/5
        re = rg * math.sqrt(5.0 / (2.0 + nu * nu))
        for pd in (0.08, 0.2, 0.4):
            out.append([math.log(re), math.log(nu * re), pd])
    return out


MODEL_SPECS: dict[str, _ModelSpec] = {
    "sphere": _ModelSpec("sphere", ("ln_radius", "radius_pd"), (LN_R[0], PD[0]), (LN_R[1], PD[1]), _sphere_kwargs, _sphere_starts, (21, 35)),
    "core_shell_sphere": _ModelSpec(
        "core_shell_sphere",
        ("ln_radius", "ln_thickness", "shell_contrast", "radius_pd"),
        (LN_R[0], math.log(2.0), 0.05, PD[0]),
        (LN_R[1], math.log(500.0), 0.95, PD[1]),
        _cs_kwargs,
        _cs_starts,
        (21, 35),
    ),
    "cylinder": _ModelSpec(
        "cylinder", ("ln_radius", "ln_length", "radius_pd"), (LN_R[0], LN_R[0], PD[0]), (LN_R[1], math.log(20000.0), PD[1]), _cyl_kwargs, _cyl_starts, (9, 17)
    ),
    "ellipsoid": _ModelSpec(
        "ellipsoid",
        ("ln_radius_equatorial", "ln_radius_polar", "radius_pd"),
        (LN_R[0], LN_R[0], PD[0]),
        (LN_R[1], LN_R[1], PD[1]),
        _ell_kwargs,
        _ell_starts,
        (9, 17),
    ),
}


class _Curve:
    """Unit-scale, zero-background model curve at fixed q (and resolution)."""

    def __init__(self, spec: _ModelSpec, q, dq, pd_n: int):
        self.spec = spec
        self.dm = _direct_model(spec.name, q, dq)
        self.pd_n = pd_n
        self.qmax = float(np.max(self.dm.resolution.q_calc))  # smearing reads beyond the last point
        self.calls = 0

    def converge(self, x) -> "_Curve":
        """Raise pd_n to what the size average needs at x over the computed q range (simulators.saxs.dataset.
        pd_points), then keep it: a pd_n that follows x while a fit runs makes χ² step."""
        from simulators.saxs.dataset import PD_PARAM, converged_pd

        kw = converged_pd(self.spec.name, self.spec.to_kwargs(np.asarray(x, dtype=float), self.pd_n), self.qmax)
        self.pd_n = int(kw[PD_PARAM[self.spec.name] + "_pd_n"])
        return self

    def __call__(self, x) -> np.ndarray:
        self.calls += 1
        kw = self.spec.to_kwargs(np.asarray(x, dtype=float), self.pd_n)
        return np.asarray(self.dm(scale=1.0, background=0.0, **kw), dtype=float)


def _linear_solve(f, y, w):
    """Weighted least-squares scale a and background b for y ≈ a f + b."""
    u = 1.0 / w
    A = np.column_stack([f * u, u])
    coef, *_ = np.linalg.lstsq(A, y * u, rcond=None)
    return float(coef[0]), float(coef[1])


def _numeric_jacobian(fun, p, step: float = 1e-5) -> np.ndarray:
    f0 = fun(p)
    J = np.empty((f0.size, p.size))
    for j in range(p.size):
        h = step * max(abs(p[j]), 1.0)
        pj = p.copy()
        pj[j] += h
        J[:, j] = (fun(pj) - f0) / h
    return J


@dataclass
class _Fit:
    model: str
    x: np.ndarray
    scale: float
    background: float
    chi2: float
    n: int
    k: int
    cov: np.ndarray | None
    curve: np.ndarray
    converged: bool
    message: str = ""
    bic: float = float("inf")
    probability: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chi2_reduced(self) -> float:
        return self.chi2 / max(self.n - self.k, 1)


# ----- the analyser -----------------------------------------------------------------------------------

class SaxsFitAnalyser:
    """Guinier + least-squares form-factor fits of a SAXS curve; model choice by BIC."""

    name: ClassVar[str] = "saxs_fit"
    technique: ClassVar[str] = "saxs"

    def __init__(
        self,
        models: tuple[str, ...] = CANDIDATE_MODELS,
        error_floor: float = 0.01,
        relative_error_without_sigma: float = 0.03,
        max_chi2_reduced: float = 25.0,
        low_confidence_below: float = 0.8,
        n_refine: int = 2,
        max_points_search: int = 64,
        polish_above: float = 1e-3,
    ):
        unknown = [m for m in models if m not in MODEL_SPECS]
        if unknown:
            raise AnalysisError(f"saxs_fit cannot fit model(s) {unknown}; known: {list(MODEL_SPECS)}")
        self.models = tuple(models)
        self.error_floor = float(error_floor)
        self.relative_error_without_sigma = float(relative_error_without_sigma)
        self.max_chi2_reduced = float(max_chi2_reduced)
        self.low_confidence_below = float(low_confidence_below)
        self.n_refine = int(n_refine)
        self.max_points_search = int(max_points_search)
        self.polish_above = float(polish_above)

    # -- input ------------------------------------------------------------------------------------
    def _inputs(self, m: Measurement):
        src = m.metadata.get("source") or m.metadata.get("sample_id") or "the measurement"
        names = ["q_inv_angstrom", "intensity"] + (["sigma"] if "sigma" in m.arrays else [])
        arrays = m.require(*names)
        q, intensity = arrays[0], arrays[1]
        sigma = arrays[2] if len(arrays) > 2 else None
        if q.size < MIN_POINTS:
            raise AnalysisError(
                f"saxs_fit needs at least {MIN_POINTS} points in 'q_inv_angstrom'/'intensity' of {src}; got {q.size}"
            )
        if not np.any(intensity > 0):
            raise AnalysisError(f"'intensity' of {src} is non-positive everywhere; nothing to fit")
        dq = None
        slit = [np.asarray(m.arrays[k], dtype=float) if k in m.arrays else np.zeros_like(q)
                for k in ("slit_length_inv_angstrom", "slit_width_inv_angstrom")]
        if any(s.shape != q.shape or not np.all(np.isfinite(s)) for s in slit):
            raise AnalysisError(f"'slit_length_inv_angstrom'/'slit_width_inv_angstrom' of {src} must be finite and as "
                                "long as 'q_inv_angstrom'")
        if any(np.any(np.abs(s) > 0) for s in slit):  # slit-smeared (USANS): the slit, not a pinhole dq
            dq = SlitResolution(np.abs(slit[0]), np.abs(slit[1]))
        elif "dq_inv_angstrom" in m.arrays:
            dq = np.asarray(m.arrays["dq_inv_angstrom"], dtype=float)
            if dq.shape != q.shape or not np.all(np.isfinite(dq)):
                raise AnalysisError(f"'dq_inv_angstrom' of {src} must be finite and as long as 'q_inv_angstrom'")
        elif m.metadata.get("dq_over_q") is not None:
            try:
                dq = float(m.metadata["dq_over_q"]) * q
            except (TypeError, ValueError):
                raise AnalysisError(f"metadata dq_over_q={m.metadata['dq_over_q']!r} of {src} is not a number") from None
        keep = q > 0
        if sigma is None:
            keep &= intensity > 0
        order = np.argsort(q[keep])
        q, intensity = q[keep][order], intensity[keep][order]
        sigma = None if sigma is None else sigma[keep][order]
        if isinstance(dq, SlitResolution):
            dq = dq[keep][order]
        elif dq is not None:
            dq = np.clip(dq[keep][order], 0.0, None)
        if q.size < MIN_POINTS:
            raise AnalysisError(
                f"saxs_fit needs at least {MIN_POINTS} points with q > 0 (and I > 0 without sigma) in {src}; got {q.size}"
            )
        if sigma is not None:
            pos = sigma > 0
            fill = np.median(sigma[pos]) if np.any(pos) else 0.0
            sigma = np.where(pos, sigma, fill)
            weights = np.sqrt(sigma**2 + (self.error_floor * np.abs(intensity)) ** 2)
        else:
            weights = self.relative_error_without_sigma * np.abs(intensity)
        floor = 1e-12 * float(np.max(np.abs(intensity)))
        weights = np.maximum(weights, floor if floor > 0 else 1e-300)
        return q, intensity, sigma, dq, weights, str(src)

    # -- fitting ----------------------------------------------------------------------------------
    @staticmethod
    def _varpro(curve: _Curve, y, w):
        """Residuals with scale and background solved linearly (variable projection)."""

        def resid(x):
            f = curve(x)
            if not np.all(np.isfinite(f)):
                return np.full(y.shape, 1e6)
            a, b = _linear_solve(f, y, w)
            if a <= 0:
                return np.full(y.shape, 1e3) + np.abs(y) / w
            return (y - a * f - b) / w

        return resid

    def _search(self, spec: _ModelSpec, rg: float, q, y, w, dq, idx) -> _Fit:
        """Grid of starts from Rg, refined on a q subset, then on all points (scale, background linear)."""
        from scipy.optimize import least_squares

        lo, hi = np.array(spec.lower), np.array(spec.upper)
        n_search, n_final = spec.pd_n
        resid_sub = self._varpro(_Curve(spec, q[idx], None if dq is None else dq[idx], n_search), y[idx], w[idx])
        starts = [np.clip(np.array(s, dtype=float), lo + 1e-9, hi - 1e-9) for s in spec.starts(rg)]
        scored = sorted((float(np.sum(resid_sub(s) ** 2)), i) for i, s in enumerate(starts))
        best_x, best_cost = None, float("inf")
        for _, i in scored[: self.n_refine]:
            try:
                r = least_squares(resid_sub, starts[i], bounds=(lo, hi), method="trf", diff_step=1e-4, max_nfev=40, x_scale="jac")
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                continue
            if np.isfinite(r.cost) and r.cost < best_cost:
                best_x, best_cost = r.x, r.cost
        k = len(lo) + 2
        if best_x is None:
            return _Fit(spec.name, starts[0], 0.0, 0.0, float("inf"), y.size, k, None, np.zeros_like(y), False, "no start converged")
        full = _Curve(spec, q, dq, n_final).converge(best_x)
        resid_full = self._varpro(full, y, w)
        message = "search"
        try:
            r = least_squares(resid_full, np.clip(best_x, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), method="trf",
                              diff_step=1e-4, max_nfev=6, x_scale="jac")
            best_x, message = r.x, str(r.message)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            pass
        f = full(best_x)
        a, b = _linear_solve(f, y, w)
        chi2 = float(np.sum(((y - a * f - b) / w) ** 2))
        return _Fit(spec.name, np.asarray(best_x), a, b, chi2, y.size, k, None, a * f + b, a > 0 and np.isfinite(chi2), message,
                    extra={"curve": full})

    def _polish(self, fit: _Fit, q, y, w) -> _Fit:
        """All parameters free (scale and background included); the Jacobian gives the covariance."""
        from scipy.optimize import least_squares

        spec = MODEL_SPECS[fit.model]
        full: _Curve = fit.extra["curve"]
        lo, hi = np.array(spec.lower), np.array(spec.upper)
        ymax = float(np.max(np.abs(y)))

        def resid_full(p):
            return (y - math.exp(p[0]) * full(p[2:]) - p[1] * ymax) / w

        p0 = np.concatenate([[math.log(fit.scale), fit.background / ymax], np.clip(fit.x, lo + 1e-9, hi - 1e-9)])
        plo = np.concatenate([[-np.inf, -np.inf], lo])
        phi = np.concatenate([[np.inf, np.inf], hi])
        try:
            r = least_squares(resid_full, p0, bounds=(plo, phi), method="trf", diff_step=1e-5, max_nfev=12, x_scale="jac")
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            fit.message = f"polish failed: {exc}"
            return fit
        chi2 = float(np.sum(r.fun**2))
        if not np.isfinite(chi2) or chi2 > fit.chi2 * (1 + 1e-9):
            r = None  # keep the search optimum; covariance from its Jacobian below
        p = p0 if r is None else r.x
        try:
            J = r.jac if r is not None else _numeric_jacobian(resid_full, p0)
            chi2 = float(np.sum(resid_full(p) ** 2)) if r is None else chi2
            cov = np.linalg.pinv(J.T @ J) * (chi2 / max(y.size - p.size, 1))
        except (np.linalg.LinAlgError, ValueError):
            cov = None
        fit.x, fit.scale, fit.background, fit.chi2 = p[2:], math.exp(p[0]), p[1] * ymax, chi2
        fit.cov = None if cov is None else cov[2:, 2:]
        fit.curve = fit.scale * full(fit.x) + fit.background
        fit.message = "polished" if r is None else str(r.message)
        return fit

    # -- descriptors ------------------------------------------------------------------------------
    @staticmethod
    def _sd(cov, grad) -> float | None:
        if cov is None:
            return None
        g = np.asarray(grad, dtype=float)
        v = float(g @ cov @ g)
        return math.sqrt(v) if np.isfinite(v) and v >= 0 else None

    def _size_descriptors(self, fit: _Fit, flags: list[str]) -> list[Descriptor]:
        x, cov = fit.x, fit.cov
        d: list[Descriptor] = []

        def desc(name, value, sd, unit):
            d.append(Descriptor(name=name, value=float(value), uncertainty=sd, unit=unit, flags=list(flags), analyser=self.name))

        if fit.model == "sphere":
            r = math.exp(x[0])
            desc("saxs.radius_nm", r / 10, None if self._sd(cov, [r, 0]) is None else self._sd(cov, [r, 0]) / 10, "nm")
            desc("saxs.polydispersity", x[1], self._sd(cov, [0, 1]), None)
        elif fit.model == "core_shell_sphere":
            rc, t = math.exp(x[0]), math.exp(x[1])
            sd = self._sd(cov, [rc, t, 0, 0])
            desc("saxs.radius_nm", (rc + t) / 10, None if sd is None else sd / 10, "nm")
            sd_t = self._sd(cov, [0, t, 0, 0])
            desc("saxs.shell_nm", t / 10, None if sd_t is None else sd_t / 10, "nm")
            desc("saxs.polydispersity", x[3], self._sd(cov, [0, 0, 0, 1]), None)
        elif fit.model == "cylinder":
            r, length = math.exp(x[0]), math.exp(x[1])
            sd = self._sd(cov, [r, 0, 0])
            desc("saxs.radius_nm", r / 10, None if sd is None else sd / 10, "nm")
            sd = self._sd(cov, [0, length, 0])
            desc("saxs.length_nm", length / 10, None if sd is None else sd / 10, "nm")
            desc("saxs.polydispersity", x[2], self._sd(cov, [0, 0, 1]), None)
        elif fit.model == "ellipsoid":
            re, rp = math.exp(x[0]), math.exp(x[1])
            sd = self._sd(cov, [re, 0, 0])
            desc("saxs.radius_nm", re / 10, None if sd is None else sd / 10, "nm")
            sd = self._sd(cov, [0, rp, 0])
            desc("saxs.polar_radius_nm", rp / 10, None if sd is None else sd / 10, "nm")
            desc("saxs.polydispersity", x[2], self._sd(cov, [0, 0, 1]), None)
        return d

    @staticmethod
    def _weigh(fits: list[_Fit]) -> None:
        """BIC = chi² + k ln n and the BIC weights exp(-ΔBIC/2), normalised."""
        for f in fits:
            f.bic = f.chi2 + f.k * math.log(f.n)
        if fits:
            bmin = min(f.bic for f in fits)
            weights = np.array([math.exp(-0.5 * (f.bic - bmin)) for f in fits])
            weights /= weights.sum()
            for f, p in zip(fits, weights):
                f.probability = float(p)

    def analyse(self, measurement: Measurement) -> AnalysisResult:
        """Descriptors of one curve; an implausible q range flags them all, as in saxs_ml
        (`sdl.techniques.saxs.reader.check_sas_q_range`: `q_unit_suspect` when no q unit was given)."""
        if measurement.technique not in ("saxs", "sans", "sas"):
            raise AnalysisError(f"saxs_fit analyses SAXS/SANS measurements; got technique {measurement.technique!r}")
        return analysed_with_q_check(self._analyse, measurement, models_slit=True)

    def _analyse(self, measurement: Measurement) -> AnalysisResult:
        q, y, sigma, dq, w, src = self._inputs(measurement)
        g = guinier(q, y, w)
        rg_for_starts = g.rg if g.ok and np.isfinite(g.rg) else 1.0 / q[0] * (0.8 if not np.isfinite(g.rg) else min(1.0, g.rg * q[0]))
        if not np.isfinite(rg_for_starts) or rg_for_starts <= 0:
            rg_for_starts = 0.5 / q[0]
        idx = np.arange(q.size)
        if q.size > self.max_points_search:
            idx = np.unique(np.linspace(0, q.size - 1, self.max_points_search).round().astype(int))

        fits: list[_Fit] = []
        timing: dict[str, float] = {}
        for name in self.models:
            t0 = time.perf_counter()
            try:
                fits.append(self._search(MODEL_SPECS[name], rg_for_starts, q, y, w, dq, idx))
            except Exception as exc:  # a kernel failure in one model must not sink the others
                fits.append(_Fit(name, np.zeros(1), 0.0, 0.0, float("inf"), q.size, 0, None, np.zeros_like(y), False, repr(exc)))
            timing[name] = time.perf_counter() - t0
        ok = [f for f in fits if f.converged and np.isfinite(f.chi2)]
        self._weigh(ok)
        # polish the plausible models (all parameters free, covariance); then weigh again
        for f in ok:
            if f.probability > self.polish_above:
                t0 = time.perf_counter()
                try:
                    self._polish(f, q, y, w)
                except Exception as exc:  # keep the search optimum
                    f.message = f"polish failed: {exc!r}"
                timing[f.model] += time.perf_counter() - t0
        self._weigh(ok)
        for f in fits:
            f.extra.pop("curve", None)
        ranking = sorted(fits, key=lambda f: (not (f.converged and np.isfinite(f.chi2)), f.bic))
        info: dict[str, Any] = {
            "method": "guinier+least_squares",
            "criterion": "BIC",
            "bic_definition": "chi2 + k ln n",
            "error_floor": self.error_floor if sigma is not None else None,
            "weighting": "sigma with relative floor" if sigma is not None else f"relative {self.relative_error_without_sigma}",
            "resolution": ("slit (length, width) from data" if isinstance(dq, SlitResolution) else
                           "pinhole dq from data" if dq is not None else "none"),
            "guinier": {"rg_nm": g.rg / 10 if np.isfinite(g.rg) else None, "i0": g.i0, "n_points": g.n_points, "q_rg_max": g.q_rg_max, "ok": g.ok, "note": g.note},
            "ranking": [
                {
                    "model": f.model,
                    "bic": f.bic if np.isfinite(f.bic) else None,
                    "chi2_reduced": f.chi2_reduced if np.isfinite(f.chi2) else None,
                    "probability": f.probability,
                    "converged": f.converged,
                    "parameters": dict(zip(MODEL_SPECS[f.model].pnames, map(float, f.x))) if f.converged else {},
                    "scale": f.scale,
                    "background": f.background,
                    "message": f.message,
                }
                for f in ranking
            ],
            "source": src,
            "timing_s": timing,
        }
        descriptors: list[Descriptor] = []
        rg_flags = [] if g.ok else ["low_confidence"]
        if np.isfinite(g.rg):
            descriptors.append(
                Descriptor(name="saxs.rg_nm", value=g.rg / 10, uncertainty=g.rg_sigma / 10 if np.isfinite(g.rg_sigma) else None, unit="nm", flags=rg_flags, analyser=self.name)
            )
        curves = {"q_inv_angstrom": q, "intensity": y}
        if not ok:
            descriptors.insert(0, Descriptor(name="saxs.model", value="none", flags=["fit_failed"], analyser=self.name))
            info["failure"] = "; ".join(f"{f.model}: {f.message}" for f in fits)
            return AnalysisResult(analyser=self.name, descriptors=descriptors, curves=curves, info=info)

        best = ranking[0]
        flags: list[str] = []
        if best.chi2_reduced > self.max_chi2_reduced:
            flags.append("fit_failed")
        model_flags = list(flags)
        if best.probability < self.low_confidence_below:
            model_flags.append("low_confidence")
        descriptors.insert(
            0,
            Descriptor(
                name="saxs.model",
                value=best.model,
                probabilities={f.model: f.probability for f in fits},
                flags=model_flags,
                analyser=self.name,
            ),
        )
        descriptors[1:1] = self._size_descriptors(best, flags)
        descriptors.append(Descriptor(name="saxs.chi2_reduced", value=best.chi2_reduced, flags=list(flags), analyser=self.name))
        curves["fit"] = best.curve
        return AnalysisResult(analyser=self.name, descriptors=descriptors, curves=curves, info=info)
