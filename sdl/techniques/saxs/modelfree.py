"""Model-free SAXS/SANS descriptors: they need no shape model, so they exist for every curve,
including those the ML calls `other` or flags `ood` (polymer coils, aggregates, porous solids).

`modelfree_descriptors(measurement)` -> (descriptors, info); `SaxsModelFreeAnalyser` is the analyser
(`saxs_modelfree`) that returns only these; `saxs_ml` appends them to its own result.

* ``saxs.rg_nm`` — Guinier radius of gyration, ln I(q) = ln I(0) − q²Rg²/3. The fit range is chosen
  as AUTORG does (ATSAS; Petoukhov et al., J. Appl. Cryst. 40 (2007) s223, and the autorg of BioXTAS
  RAW, Hopkins et al., J. Appl. Cryst. 50 (2017) 1545): every window of consecutive low-q points is
  fitted (weighted by sigma of ln I = sigma/I), and a window is admissible when it has at least
  `MIN_GUINIER_POINTS` points, a negative slope, q_max·Rg ≤ 1.3 and q_min·Rg ≤ 1.0; among the
  admissible windows whose reduced chi² says the Guinier plot is linear there, the one with the
  smallest Rg uncertainty wins. None admissible (the curve starts too high in q for the size, or
  rises at low q): the Debye function of a Gaussian coil is fitted from the first point to q·Rg = 5
  (`debye_fit`: polymer solutions and blends, whose Guinier region is often too short), and its Rg is
  reported when χ²_red passes; otherwise `fit_failed` with the apparent Rg of the first points —
  never a trusted number from outside the Guinier region. A window whose lowest-q points lie above
  `SHOULDER_RATIO` × its I(0) is a shoulder (larger structures below it): `low_confidence`; so is an Rg
  with q_max·Rg < 1 over the whole curve (it never leaves the Guinier regime: a flat curve).
* ``saxs.porod_exponent`` — n of I(q) = A q⁻ⁿ + B fitted over the high-q part of the curve (from
  q·Rg = 4 to the end; without an Rg, the last third of the ln q span); B is the flat background,
  weights from sigma (plus a fraction of A q⁻ⁿ where form-factor oscillations about the power law
  make the fit follow the minima otherwise). 4 for
  smooth sharp interfaces (Porod), 3–4 surface fractals, ~2 Gaussian coils, ~1.7 swollen coils,
  < 3 mass fractals.
* ``saxs.invariant`` — Q* = ∫₀^∞ q² I(q) dq (I less the fitted background B) over the measured range
  (trapezoid rule) plus the Guinier extrapolation to q = 0 and the power-law extrapolation to ∞
  (the measured exponent when it is > 3.3, else Porod's q⁻⁴ matched at the last point, flagged
  `low_confidence`), as SasView's Invariant calculator does. Unit: the intensity's unit × Å⁻³.
* ``saxs.specific_surface_m2_per_cm3`` — S/V = π φ(1−φ) K_P / Q* (Porod's law, K_P = lim q⁴ I(q),
  Q* = 2π²φ(1−φ)Δρ²; or S/V = K_P / (2π Δρ²) when the contrast is given), interface area per sample
  volume. Only when the intensity is on absolute scale (metadata `intensity_unit` 1/cm) and the
  metadata give `volume_fraction` or `sld_contrast` (Δρ in 10⁻⁶ Å⁻²), and only when the Porod
  exponent is 4 within 0.3; otherwise it is not produced (the reason is in info).

The fit ranges and details of each descriptor are in `info[<descriptor name>]` (Descriptor has no
field for them). No library installed here computes these (sasmodels has models only; SasView's
`sas.sascalc.invariant` is not installed), so the textbook formulas are coded below and checked
against textbook results in tests/test_saxs_modelfree.py.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.errors import AnalysisError
from sdl.measurement import Measurement

__all__ = ["SaxsModelFreeAnalyser", "modelfree_descriptors", "guinier_autorg", "porod_fit", "invariant",
           "MODELFREE_DESCRIPTORS"]

MODELFREE_DESCRIPTORS = ("saxs.rg_nm", "saxs.porod_exponent", "saxs.invariant", "saxs.specific_surface_m2_per_cm3")

MIN_GUINIER_POINTS = 10  # AUTORG's historical --mininterval default
QRG_MAX = 1.3  # q_max·Rg of the Guinier window (AUTORG --smaxrg)
QRG_MIN = 1.0  # q_min·Rg of the Guinier window (AUTORG --sminrg)
CURVATURE_Z = 2.0  # a window is linear when its q⁴ term is within this many sd of zero
CURVATURE_QUADRATIC_Z = 3.0  # q⁴ term beyond this many sd in the best window: Rg from the quadratic
NO_SIGMA_RELATIVE = 0.04  # relative error assumed without sigma (AUTORG's default)
SIGMA_FLOOR = 0.005  # relative floor on sigma (calibration/model errors counting statistics miss)
DEBYE_QRG_MAX = 5.0  # the Debye fit runs from the first point to q·Rg = this (a Gaussian coil's form holds that far)
SHOULDER_RATIO = 2.0  # I at the lowest q over the Guinier I(0) above which the window is a shoulder, not the Guinier region
POROD_QRG = 4.0  # the power-law fit runs from q·Rg = this to the end of the curve
POROD_LAST = 1.0 / 3.0  # without an Rg: over the last third of the ln q span
MIN_POROD_POINTS = 10
ABSOLUTE_UNITS = {"1/cm", "cm^-1", "cm-1", "cm⁻¹", "1/cm^1", "cm**-1", "per cm"}


def _f(x: Any) -> float | None:
    """A JSON-friendly float (None for NaN/inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


# ----- Guinier -----------------------------------------------------------------------------------


def guinier_autorg(q: np.ndarray, intensity: np.ndarray, sigma: np.ndarray | None = None,
                   min_points: int = MIN_GUINIER_POINTS, qrg_max: float = QRG_MAX, qrg_min: float = QRG_MIN
                   ) -> dict[str, Any]:
    """AUTORG-style automatic Guinier fit (q in Å⁻¹; q sorted ascending, I > 0 where used).

    Returns {"ok", "rg" (Å), "rg_sd", "i0", "i0_sd", "q_min", "q_max", "qRg_min", "qRg_max", "n_points",
    "chi2_reduced", "linear" (the chosen window passed the chi² test), "windows_admissible", "note"}.
    """
    pos = (intensity > 0) & (q > 0)
    q, I = q[pos], intensity[pos]
    out: dict[str, Any] = {"ok": False, "rg": math.nan, "rg_sd": math.nan, "i0": math.nan, "i0_sd": math.nan,
                           "q_min": None, "q_max": None, "qRg_min": None, "qRg_max": None, "n_points": 0,
                           "chi2_reduced": None, "linear": False, "windows_admissible": 0,
                           "criteria": {"qRg_max": qrg_max, "qRg_min": qrg_min, "min_points": min_points}}
    n = q.size
    if n < min_points:
        out["note"] = f"{n} positive points; a Guinier fit needs at least {min_points}"
        return out
    has_sigma = sigma is not None
    x = q**2
    y = np.log(I)
    if has_sigma:
        s = np.maximum(np.asarray(sigma, float)[pos], SIGMA_FLOOR * I) / I  # sigma of ln I
    else:
        s = np.full(n, NO_SIGMA_RELATIVE)
    w = 1.0 / s**2
    # prefix sums: weighted straight-line (and quadratic, for the curvature test) fits of any window in O(1)
    c = [np.concatenate([[0.0], np.cumsum(a)]) for a in
         (w, w * x, w * y, w * x * x, w * x * y, w * y * y, w * x**3, w * x**4, w * x * x * y)]
    n_start = max(1, min(n - min_points + 1, max(n // 3, 1), 300))
    n_adm = 0
    rows = []
    for i in range(n_start):
        j = np.arange(i + min_points - 1, n)  # inclusive window end
        S, Sx, Sy, Sxx, Sxy, Syy, Sx3, Sx4, Sxxy = (cc[j + 1] - cc[i] for cc in c)
        D = S * Sxx - Sx**2
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = (S * Sxy - Sx * Sy) / D
            icpt = (Sy - slope * Sx) / S
            chi2 = Syy - 2 * slope * Sxy - 2 * icpt * Sy + slope**2 * Sxx + 2 * slope * icpt * Sx + icpt**2 * S
            dof = (j - i + 1 - 2).astype(float)
            chi2r = np.maximum(chi2, 0) / dof
            rg = np.sqrt(-3.0 * slope)
            var_slope = S / D
            var_icpt = Sxx / D
        ok = np.isfinite(rg) & (slope < 0) & (q[j] * rg <= qrg_max) & (q[i] * rg <= qrg_min)
        if not ok.any():
            continue
        k = np.flatnonzero(ok)
        # curvature: the q⁴ coefficient of a quadratic in x = q² (scaled to the window for conditioning)
        N = np.empty((k.size, 3, 3))
        N[:, 0, 0], N[:, 0, 1], N[:, 0, 2] = S[k], Sx[k], Sxx[k]
        N[:, 1, 0], N[:, 1, 1], N[:, 1, 2] = Sx[k], Sxx[k], Sx3[k]
        N[:, 2, 0], N[:, 2, 1], N[:, 2, 2] = Sxx[k], Sx3[k], Sx4[k]
        r = np.stack([Sy[k], Sxy[k], Sxxy[k]], axis=1)
        xs = x[j[k]]  # scale x by the window's end: N -> T N T with T = diag(1, 1/xs, 1/xs²)
        T = np.stack([np.ones_like(xs), 1 / xs, 1 / xs**2], axis=1)
        Ns = N * T[:, :, None] * T[:, None, :]
        try:
            Ninv = np.linalg.inv(Ns)
            coef = np.einsum("kab,kb->ka", Ninv, r * T)
            curv_z = np.abs(coef[:, 2]) / np.sqrt(np.abs(Ninv[:, 2, 2]))
            b_q = coef[:, 1] / xs  # the q² coefficient of the quadratic: −Rg²/3 to next order
            var_bq = np.abs(Ninv[:, 1, 1]) / xs**2
            a_q, var_aq = coef[:, 0], np.abs(Ninv[:, 0, 0])
        except np.linalg.LinAlgError:
            curv_z = np.zeros(k.size)
            b_q = var_bq = a_q = var_aq = np.full(k.size, np.nan)
        n_adm += int(k.size)
        for m, kk in enumerate(k):
            rows.append((i, int(j[kk]), float(rg[kk]), float(slope[kk]), float(icpt[kk]), float(chi2r[kk]), float(dof[kk]),
                         float(var_slope[kk]), float(var_icpt[kk]), float(curv_z[m]), float(b_q[m]), float(var_bq[m]),
                         float(a_q[m]), float(var_aq[m])))
    out["windows_admissible"] = n_adm
    if not rows:
        rg_first = None
        # why: fit the first min_points points to say what q·Rg the data start at
        xs, ys = x[:min_points], y[:min_points]
        sl = np.polyfit(xs, ys, 1, w=1 / s[:min_points])[0]
        if sl < 0:
            rg_first = math.sqrt(-3 * sl)
            out["rg_apparent"] = rg_first
            out["note"] = (f"no Guinier region: the first {min_points} points give Rg ≈ {rg_first / 10:.3g} nm, i.e. "
                           f"q_min·Rg ≈ {q[0] * rg_first:.2f}; the curve starts too high in q for the size "
                           f"(need q·Rg ≤ {qrg_max} over ≥ {min_points} points)")
        else:
            out["note"] = "no Guinier region: the intensity does not decrease at low q (aggregation, interparticle " \
                          "interference or a background problem)"
        return out
    arr = np.array(rows)
    chi2r, dof = arr[:, 5], arr[:, 6]
    if has_sigma:
        linear = chi2r <= 1.0 + 3.0 * np.sqrt(2.0 / dof)  # within 3 sd of chi²/dof for a correct model
        if not linear.any():  # sigma underestimated: relative criterion
            linear = chi2r <= 2.0 * chi2r.min()
            strict = False
        else:
            strict = True
        scale = np.maximum(chi2r, 1.0)
    else:
        linear = np.ones(len(arr), bool)
        strict = False
        scale = chi2r  # the scatter about the line estimates the noise
    # no significant curvature (|q⁴ term| < CURVATURE_Z sd, the sd scaled by the scatter where it exceeds sigma)
    flat = arr[:, 9] / np.sqrt(np.maximum(chi2r, 1.0) if has_sigma else np.maximum(chi2r, 1e-300)) <= CURVATURE_Z
    if (linear & flat).any():
        linear = linear & flat
    else:
        strict = False
    rg = arr[:, 2]
    rg_sd = np.abs(1.5 / rg * np.sqrt(arr[:, 7] * scale))  # Rg = sqrt(-3 b): dRg = 1.5/Rg db
    rel = np.where(linear, rg_sd / rg, np.inf)
    k = int(np.argmin(rel))
    i, j = int(arr[k, 0]), int(arr[k, 1])
    r = float(rg[k])
    i0 = math.exp(arr[k, 4])
    method = "linear"
    # A Guinier plot curved within q·Rg ≤ 1.3 (coils, broad size distributions: ln I is convex in q²)
    # biases the straight line by several %. ln I = ln I0 − q²Rg²/3 + c q⁴ holds for any particle to
    # that order, so where the q⁴ term of the most precise admissible window is significant (> 3 sd),
    # Rg comes from that quadratic (its q² coefficient) instead.
    zs = arr[:, 9] / np.sqrt(np.maximum(chi2r, 1.0) if has_sigma else np.maximum(chi2r, 1e-300))
    with np.errstate(invalid="ignore", divide="ignore"):
        rg_q = np.sqrt(-3.0 * arr[:, 10])
        rg_q_sd = np.abs(1.5 / rg_q * np.sqrt(arr[:, 11] * scale))
        q_ok = np.isfinite(rg_q) & (q[arr[:, 1].astype(int)] * rg_q <= qrg_max) & (q[arr[:, 0].astype(int)] * rg_q <= qrg_min)
    if q_ok.any():
        k2 = int(np.argmin(np.where(q_ok, rg_q_sd / rg_q, np.inf)))
        if zs[k2] > CURVATURE_QUADRATIC_Z:
            k, method = k2, "quadratic (q⁴ term significant)"
            i, j = int(arr[k, 0]), int(arr[k, 1])
            r = float(rg_q[k])
            i0 = math.exp(arr[k, 12])
            rg_sd = rg_q_sd
            arr[k, 8] = arr[k, 13]
    # spread of Rg over the near-best admissible windows: a measure of how much the choice matters
    near = linear & (rel <= 2 * rel[k])
    out.update(ok=True, rg=r, rg_sd=float(rg_sd[k]), i0=i0, i0_sd=i0 * math.sqrt(arr[k, 8] * scale[k]),
               q_min=float(q[i]), q_max=float(q[j]), qRg_min=float(q[i] * r), qRg_max=float(q[j] * r),
               n_points=j - i + 1, chi2_reduced=float(chi2r[k]), linear=bool(strict), fit=method,
               rg_spread_near_best=float(np.std(rg[near])) if near.sum() > 1 else 0.0,
               note="" if strict or not has_sigma else "no window is linear within the sigma given; chose by relative chi²")
    return out


def debye_fit(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, rg_start: float,
              qrg_max: float = DEBYE_QRG_MAX) -> dict[str, Any]:
    """Radius of gyration of Gaussian coils from the Debye function, I = I0·2(e⁻ˣ + x − 1)/x², x = (q·Rg)², plus a
    flat background B >= 0, weighted least squares from the first point to q·Rg = `qrg_max` (q in Å⁻¹, ascending;
    Rg in Å). For polymer solutions and blends, whose Guinier region (q·Rg <= 1.3) often holds fewer than
    MIN_GUINIER_POINTS points: the coil's known form carries the size out to q·Rg ~ 5. "ok" when χ²_red passes the
    test the Guinier windows pass (within 3 sd of 1): particles with sharp surfaces misfit by orders of magnitude.
    Returns {"ok", "rg", "rg_sd", "i0", "background", "chi2_reduced", "q_min", "q_max", "n_points"}."""
    from scipy.optimize import least_squares

    s = np.maximum(np.asarray(sigma, float), SIGMA_FLOOR * np.abs(I)) if sigma is not None else NO_SIGMA_RELATIVE * np.abs(I)
    out: dict[str, Any] = {"ok": False, "rg": math.nan, "rg_sd": math.nan, "chi2_reduced": None, "n_points": 0}
    rg = float(rg_start)
    for _ in range(3):  # the window depends on Rg
        m = (q * rg <= qrg_max) & (s > 0)
        if m.sum() < MIN_GUINIER_POINTS:
            return out
        qq, yy, ss = q[m], I[m], s[m]

        def resid(p: np.ndarray) -> np.ndarray:
            x = (qq * math.exp(p[1])) ** 2
            f = np.where(x < 1e-6, 1 - x / 3, 2 * (np.expm1(-x) + x) / np.maximum(x, 1e-6) ** 2)  # both branches are evaluated
            return (math.exp(p[0]) * f + p[2] - yy) / ss

        # ln Rg at most that of q_min·Rg = 100 (the curve holds nothing beyond): an unbounded one overflowed x
        ln_rg_max = math.log(100.0 / float(qq[0]))
        r = least_squares(resid, [math.log(max(float(yy[0]), 1e-30)), min(math.log(rg), ln_rg_max - 1e-6), 0.0], x_scale="jac",
                          bounds=([-np.inf, -np.inf, 0.0], [np.inf, ln_rg_max, np.inf]))
        rg = math.exp(r.x[1])
    dof = int(m.sum()) - 3
    chi2r = float(np.sum(r.fun ** 2) / dof)
    cov = np.linalg.pinv(r.jac.T @ r.jac) * max(chi2r, 1.0)
    out.update(ok=chi2r <= 1.0 + 3.0 * math.sqrt(2.0 / dof), rg=rg, rg_sd=rg * math.sqrt(max(cov[1, 1], 0.0)),
               i0=math.exp(r.x[0]), background=float(r.x[2]), chi2_reduced=chi2r, q_min=float(qq[0]),
               q_max=float(qq[-1]), n_points=int(m.sum()))
    return out


# ----- power law at high q -----------------------------------------------------------------------


def _weights(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None) -> np.ndarray:
    if sigma is None:
        s = NO_SIGMA_RELATIVE * np.abs(I)
    else:
        s = np.maximum(np.asarray(sigma, float), SIGMA_FLOOR * np.abs(I))
    pos = s > 0
    fill = float(np.median(s[pos])) if pos.any() else 1.0
    return np.where(pos, s, fill)


def porod_fit(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, n_fixed: float | None = None,
              background: bool = True, trend_above_chi2: float = 3.0) -> dict[str, Any]:
    """Weighted fit of I = A q⁻ⁿ + B (q sorted). n free in [0.5, 6] unless `n_fixed`.

    Weighted by sigma; where the reduced chi² exceeds `trend_above_chi2` the curve has structure about
    the power law (form-factor oscillations of narrow size distributions) and the fit is redone with
    weights relative to the power law itself (iteratively reweighted), so that it follows the mean
    trend (for a sphere ⟨P(q)⟩ ∝ q⁻⁴) rather than the minima. Returns {"n", "n_sd", "A", "A_sd", "B",
    "B_sd", "chi2_reduced", "weighting", "ok"}."""
    from scipy.optimize import minimize_scalar

    s = _weights(q, I, sigma)
    lq = np.log(q / q[0])  # the amplitude refers to q[0] (better conditioned); converted back below

    def solve(s: np.ndarray) -> tuple[float, np.ndarray, float]:
        def linear(n: float):
            f = np.exp(-n * lq)
            cols = [f, np.ones_like(q)] if background else [f]
            M = np.column_stack(cols) / s[:, None]
            coef, *_ = np.linalg.lstsq(M, I / s, rcond=None)
            r = M @ coef - I / s
            return float(r @ r), coef

        if n_fixed is None:
            res = minimize_scalar(lambda n: linear(n)[0], bounds=(0.5, 6.0), method="bounded", options={"xatol": 1e-5})
            n = float(res.x)
        else:
            n = float(n_fixed)
        chi2, coef = linear(n)
        return n, coef, chi2

    n_par = (1 if n_fixed is None else 0) + 1 + background
    n, coef, chi2 = solve(s)
    weighting = "sigma"
    if chi2 / max(q.size - n_par, 1) > trend_above_chi2:
        # structure about the power law: add a model error f·A q⁻ⁿ to sigma, f set so that chi²/dof = 1,
        # and refit (iteratively reweighted): the fit follows the mean trend, sigma still decides where
        # the background dominates
        from scipy.optimize import brentq

        dof = max(q.size - n_par, 1)
        f_err = 0.0
        for _ in range(8):
            power = max(coef[0], 0.0) * np.exp(-n * lq)

            def excess(fe: float) -> float:
                model = coef[0] * np.exp(-n * lq) + (coef[1] if background else 0.0)
                return float(np.sum(((I - model) ** 2) / (s**2 + (fe * power) ** 2))) / dof - 1.0

            if excess(0.0) <= 0 or excess(100.0) > 0:
                break
            f_new = brentq(excess, 0.0, 100.0, xtol=1e-4)
            n_old = n
            n, coef, chi2 = solve(np.sqrt(s**2 + (f_new * power) ** 2))
            if abs(n - n_old) < 1e-3 and abs(f_new - f_err) < 1e-3:
                f_err = f_new
                break
            f_err = f_new
        power = max(coef[0], 0.0) * np.exp(-n * lq)
        s = np.sqrt(s**2 + (f_err * power) ** 2)
        weighting = f"sigma plus {100 * f_err:.0f} % of the power law (structure about it: mean trend fitted)"
    a0 = float(coef[0])
    B = float(coef[1]) if background else 0.0
    f = np.exp(-n * lq)
    cols = [f] + ([-a0 * lq * f] if n_fixed is None else []) + ([np.ones_like(q)] if background else [])
    J = np.column_stack(cols) / s[:, None]
    chi2r = chi2 / max(q.size - n_par, 1)
    try:
        cov = np.linalg.pinv(J.T @ J) * max(chi2r, 1.0)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    except (np.linalg.LinAlgError, ValueError):
        sd = np.full(J.shape[1], np.nan)
    A = a0 * q[0] ** n  # I = a0 (q/q0)^-n = (a0 q0^n) q^-n
    n_sd = float(sd[1]) if n_fixed is None else 0.0
    A_sd = math.hypot(float(sd[0]) * q[0] ** n, A * n_sd * math.log(q[0]))  # σ_A² = (q0^n σ_a0)² + (A ln q0 σ_n)²
    return {"n": n, "n_sd": n_sd, "A": A, "A_sd": A_sd, "B": B, "B_sd": float(sd[-1]) if background else 0.0,
            "chi2_reduced": float(chi2r), "weighting": weighting, "ok": bool(a0 > 0 and np.isfinite(n))}


# ----- invariant ---------------------------------------------------------------------------------


def invariant(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, guinier: dict[str, Any],
              power: dict[str, Any] | None) -> dict[str, Any]:
    """Q* = ∫ q² (I − B) dq: measured part (trapezoid) + Guinier (or constant) extrapolation to 0 +
    power-law extrapolation to ∞. Returns parts, the extrapolations used, value and sd."""
    B = power["B"] if power and power.get("ok") else 0.0
    y = I - B
    q2y = q**2 * y
    dq = np.diff(q)
    measured = float(np.sum(0.5 * dq * (q2y[1:] + q2y[:-1])))
    # trapezoid weights for the counting-error propagation
    wts = np.zeros_like(q)
    wts[1:] += 0.5 * dq
    wts[:-1] += 0.5 * dq
    s = _weights(q, I, sigma) if sigma is not None else np.zeros_like(q)
    var_measured = float(np.sum((wts * q**2 * s) ** 2))
    if power and power.get("ok") and math.isfinite(power.get("B_sd", math.nan)):  # the background's error
        var_measured += (power["B_sd"] * (q[-1] ** 3 - q[0] ** 3) / 3) ** 2
    q0 = float(q[0])
    notes: list[str] = []
    if guinier.get("ok"):
        rg, i0 = guinier["rg"], guinier["i0"]
        # ∫_0^q0 q² I0 exp(-q² Rg²/3) dq, by Gauss-Legendre on [0, q0]
        xg, wg = np.polynomial.legendre.leggauss(40)
        qq = 0.5 * q0 * (xg + 1)
        low = float(0.5 * q0 * np.sum(wg * qq**2 * i0 * np.exp(-qq**2 * rg**2 / 3)))
        low_kind = "guinier"
    else:
        low = float(max(y[0], 0.0) * q0**3 / 3)  # I taken constant below q_min
        low_kind = "constant (no Guinier fit)"
        notes.append("no Guinier fit: I(q) taken constant below q_min")
    q1 = float(q[-1])
    if power and power.get("ok") and power["n"] > 3.3:
        n, A = power["n"], power["A"]
        high = float(A * q1 ** (3 - n) / (n - 3))
        high_kind = f"power law q^-{n:.2f} (measured exponent)"
    else:
        # Porod q^-4 matched at the last point (from the fit where there is one)
        i_last = (power["A"] * q1 ** -power["n"]) if power and power.get("ok") else max(float(y[-1]), 0.0)
        high = float(i_last * q1**4 / q1)
        high_kind = "Porod q^-4 matched at q_max"
        why = "no power-law fit" if not (power and power.get("ok")) else f"measured exponent {power['n']:.2f} <= 3.3"
        notes.append(f"{why}: the q^-4 tail is an assumption (for n <= 3 the invariant does not converge)")
    total = low + measured + high
    extrap = (abs(low) + abs(high)) / abs(total) if total else math.inf
    sd = math.sqrt(var_measured + (0.2 * low) ** 2 + (0.2 * high) ** 2)
    return {"value": total, "sd": sd, "measured": measured, "low_q": low, "high_q": high, "background": B,
            "low_q_extrapolation": low_kind, "high_q_extrapolation": high_kind,
            "extrapolated_fraction": extrap, "notes": notes,
            "q_range": [q0, q1]}


# ----- metadata ----------------------------------------------------------------------------------


def _absolute(meta: dict[str, Any]) -> bool:
    # the readers give "1/cm" (formats.plain_unit); a unit set by hand may still be LaTeX-like ("cm^{-1}")
    u = str(meta.get("intensity_unit") or "").replace(" ", "").replace("{", "").replace("}", "").lower()
    return u in ABSOLUTE_UNITS


def _number(meta: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = meta.get(k)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


# ----- all together ------------------------------------------------------------------------------


def modelfree_descriptors(measurement: Measurement, analyser: str = "saxs_modelfree"
                          ) -> tuple[list[Descriptor], dict[str, Any]]:
    """The model-free descriptors of a SAS curve and info (fit ranges etc. under each descriptor's name).

    Raises AnalysisError when the curve has fewer than MIN_GUINIER_POINTS usable points."""
    names = ["q_inv_angstrom", "intensity"] + (["sigma"] if "sigma" in measurement.arrays else [])
    arrays = measurement.require(*names)
    q, I = arrays[0], arrays[1]
    sigma = arrays[2] if len(arrays) > 2 else None
    keep = q > 0
    order = np.argsort(q[keep], kind="stable")
    q, I = q[keep][order], I[keep][order]
    sigma = None if sigma is None else sigma[keep][order]
    if q.size < MIN_GUINIER_POINTS:
        raise AnalysisError(f"model-free SAS analysis needs at least {MIN_GUINIER_POINTS} points with q > 0; got {q.size}")
    meta = measurement.metadata
    i_unit = str(meta.get("intensity_unit") or "") or None
    absolute = _absolute(meta)
    inv_unit = "cm⁻¹ Å⁻³" if absolute else (f"({i_unit}) Å⁻³" if i_unit else "I·Å⁻³")
    descs: list[Descriptor] = []
    info: dict[str, Any] = {}

    # Guinier
    g = guinier_autorg(q, I, sigma)
    low = math.inf  # median I of the points below the Guinier window
    if g["ok"]:
        # a correlation peak (interparticle interference, S(q) != 1) makes I rise with q somewhere: the
        # points below the window fall well under the Guinier I(0), or the curve climbs well above it
        # past the window. Either way the window is not a Guinier region.
        smooth = np.array([np.median(I[max(0, i - 2):i + 3]) for i in range(I.size)])
        low = float(np.median(I[q < g["q_min"]][:5])) if np.count_nonzero(q < g["q_min"]) >= 3 else math.inf
        high = float(smooth[q > g["q_max"]].max()) if np.any(q > g["q_max"]) else -math.inf
        if low < 0.7 * g["i0"] or high > 1.3 * g["i0"]:
            where = (f"I at the lowest q ({low:.3g}) lies below" if low < 0.7 * g["i0"]
                     else f"I rises past the window to {high:.3g}, above")
            g = {**g, "ok": False, "rg_apparent": g["rg"],
                 "note": f"{where} the Guinier I(0) ({g['i0']:.3g}) of the window {g['q_min']:.3g}-{g['q_max']:.3g} "
                         "Å⁻¹: a correlation peak (S(q) != 1); no Guinier region"}
    if not g["ok"] and g.get("rg_apparent"):
        # no Guinier window of MIN_GUINIER_POINTS points, but the curve may decay as a Gaussian coil does
        d = debye_fit(q, I, sigma, g["rg_apparent"])
        if d["ok"]:
            g = {**g, **{k: d[k] for k in ("rg", "rg_sd", "i0", "chi2_reduced", "q_min", "q_max", "n_points")},
                 "ok": True, "linear": True, "fit": "Debye function (Gaussian coil) over q·Rg ≤ "
                 f"{DEBYE_QRG_MAX:g}", "i0_sd": math.nan, "qRg_min": d["q_min"] * d["rg"], "qRg_max": d["q_max"] * d["rg"],
                 "note": g["note"] + f"; the curve follows a Gaussian coil's Debye function from its first point to "
                 f"q·Rg = {d['q_max'] * d['rg']:.1f} (χ²_red {d['chi2_reduced']:.2f}): Rg from that fit"}
    rg_flags = [] if g["ok"] else ["fit_failed"]
    if g["ok"] and not g["linear"] and sigma is not None:
        rg_flags.append("low_confidence")
    # the window sits on a shoulder: the points below it lie far above its I(0), so larger structures
    # (aggregates, a larger particle or a correlation peak at lower q) dominate there and this Rg is a substructure's
    doubts = []
    if g["ok"] and math.isfinite(low) and low > SHOULDER_RATIO * g["i0"]:
        doubts.append(f"I at the lowest q ({low:.3g}) is {low / g['i0']:.1f} times the Guinier I(0) ({g['i0']:.3g}) of the "
                      f"window {g['q_min']:.3g}-{g['q_max']:.3g} Å⁻¹: larger structures dominate below it; this Rg "
                      "describes a substructure, not the whole scatterer")
    # the whole curve lies inside the Guinier regime: it barely decays over the measured range (a flat curve, such
    # as a background run, or a size below what the q range resolves), so the slope is mostly noise
    if g["ok"] and q[-1] * g["rg"] < 1.0:
        doubts.append(f"the curve ends at q·Rg = {q[-1] * g['rg']:.2f} < 1: I barely decays over the measured range "
                      "(a flat curve or a size below what this q range resolves); the Rg rests on a small slope")
    if doubts:
        g["note"] = "; ".join(doubts)
        if "low_confidence" not in rg_flags:
            rg_flags.append("low_confidence")
    # without a Guinier region the value is the apparent Rg of the first points, flagged fit_failed (a
    # store cannot hold NaN); with no decay at all there is no number to give and the descriptor is left out
    rg_value = g["rg"] if g["ok"] else g.get("rg_apparent")
    if rg_value is not None:
        descs.append(Descriptor(name="saxs.rg_nm", value=rg_value / 10, uncertainty=g["rg_sd"] / 10 if g["ok"] else None,
                                unit="nm", flags=rg_flags, analyser=analyser))
    info["saxs.rg_nm"] = {
        "method": "AUTORG-style window search: weighted fit of ln I vs q², q_max·Rg ≤ 1.3, q_min·Rg ≤ 1.0, "
                  f"≥ {MIN_GUINIER_POINTS} points, smallest Rg error among windows linear within sigma",
        "q_min": _f(g["q_min"]) if g["q_min"] is not None else None,
        "q_max": _f(g["q_max"]) if g["q_max"] is not None else None,
        "q_unit": "1/angstrom",
        "rg_nm": _f(g["rg"] / 10), "qRg_min": g["qRg_min"], "qRg_max": g["qRg_max"], "n_points": g["n_points"],
        "i0": _f(g["i0"]), "i0_sd": _f(g["i0_sd"]), "chi2_reduced": g["chi2_reduced"],
        "fit": g.get("fit"), "windows_admissible": g["windows_admissible"], "rg_spread_near_best_nm": _f(g.get("rg_spread_near_best", math.nan) / 10),
        "note": g.get("note", ""),
    }

    # power law at high q
    lq = np.log(q)
    q_lo = math.exp(lq[-1] - POROD_LAST * (lq[-1] - lq[0]))
    porod_notes: list[str] = []
    if g["ok"]:
        q_start = POROD_QRG / g["rg"]
        if POROD_QRG / g["rg"] >= q[-1]:
            porod_notes.append(f"the curve ends at q·Rg = {q[-1] * g['rg']:.2f} < {POROD_QRG}: no power-law regime "
                               "measured; fitted over the last third of the ln q span")
            q_start = q_lo
    else:
        q_start = q_lo
    sel = q >= q_start
    if sel.sum() < MIN_POROD_POINTS:
        sel = np.zeros_like(sel)
        sel[-MIN_POROD_POINTS:] = True
        porod_notes.append(f"fewer than {MIN_POROD_POINTS} points in the high-q range; used the last {MIN_POROD_POINTS}")
    qs, Is, ss = q[sel], I[sel], None if sigma is None else sigma[sel]
    try:
        p = porod_fit(qs, Is, ss)
    except Exception as exc:  # noqa: BLE001 - a numerical failure here must not sink the other descriptors
        p = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    p_flags: list[str] = []
    if not p.get("ok"):
        p_flags.append("fit_failed")
    elif porod_notes or (np.log(qs[-1] / qs[0]) < math.log(2.0)):
        p_flags.append("low_confidence")
        if np.log(qs[-1] / qs[0]) < math.log(2.0):
            porod_notes.append("the fitted range spans less than a factor 2 in q")
    if math.isfinite(p.get("n", math.nan)):
        descs.append(Descriptor(name="saxs.porod_exponent", value=p["n"], uncertainty=p["n_sd"] if p.get("ok") else None,
                                unit=None, flags=p_flags, analyser=analyser))
    info["saxs.porod_exponent"] = {
        "method": "weighted fit of I = A q^-n + B (B: flat background) over the high-q part",
        "q_min": float(qs[0]), "q_max": float(qs[-1]), "q_unit": "1/angstrom", "n_points": int(qs.size),
        "A": _f(p.get("A", math.nan)), "background": _f(p.get("B", math.nan)), "background_sd": _f(p.get("B_sd", math.nan)),
        "chi2_reduced": _f(p.get("chi2_reduced", math.nan)), "weighting": p.get("weighting"), "notes": porod_notes,
        **({"error": p["error"]} if "error" in p else {}),
    }

    # invariant
    inv = invariant(q, I, sigma, g, p if p.get("ok") else None)
    inv_flags: list[str] = []
    if inv["notes"] or inv["extrapolated_fraction"] > 0.3:
        inv_flags.append("low_confidence")
    if not math.isfinite(inv["value"]) or inv["value"] <= 0:
        inv_flags = ["fit_failed"]
    if math.isfinite(inv["value"]):
        descs.append(Descriptor(name="saxs.invariant", value=inv["value"], uncertainty=_f(inv["sd"]), unit=inv_unit,
                                flags=inv_flags, analyser=analyser))
    info["saxs.invariant"] = {
        "method": "Q* = ∫ q² (I − B) dq: trapezoid over the data + extrapolations (SasView Invariant scheme)",
        "intensity_unit": i_unit, "unit": inv_unit,
        **{k: (_f(v) if isinstance(v, float) else v) for k, v in inv.items() if k not in ("value", "sd")},
    }

    # specific surface (Porod): only on absolute scale with a volume fraction or contrast
    phi = _number(meta, "volume_fraction", "phi")
    drho = _number(meta, "sld_contrast", "contrast_sld", "delta_sld")  # 1e-6 Å⁻²
    why = None
    if not absolute:
        why = f"intensity not on absolute scale (metadata intensity_unit = {i_unit!r}, need 1/cm)"
    elif phi is None and drho is None:
        why = "neither metadata volume_fraction nor sld_contrast (1e-6 Å⁻²) is given"
    elif not p.get("ok") or abs(p["n"] - 4.0) > 0.3:
        why = f"Porod exponent {p.get('n', math.nan):.2f} is not 4 (± 0.3): no sharp-interface Porod law"
    elif "fit_failed" in inv_flags and phi is not None:
        why = "no invariant"
    if why is None:
        k = porod_fit(qs, Is, ss, n_fixed=4.0)  # K_P = lim q⁴ (I − B), in cm⁻¹ Å⁻⁴
        KP, KP_sd = k["A"], k["A_sd"]
        if phi is not None:  # S/V = π φ(1−φ) K_P / Q*  [Å⁻¹]
            sv = math.pi * phi * (1 - phi) * KP / inv["value"]
            sv_rel = math.hypot(KP_sd / KP, inv["sd"] / inv["value"])
            route = "π φ(1−φ) K_P / Q*"
        else:  # S/V = K_P / (2π Δρ²), K_P in cm⁻¹ Å⁻⁴ = 1e-8 Å⁻⁵, Δρ² in 1e-12 Å⁻⁴
            sv = KP * 1e-8 / (2 * math.pi * (drho * 1e-6) ** 2)
            sv_rel = KP_sd / KP
            route = "K_P / (2π Δρ²)"
        sv_m2_cm3 = sv * 1e4  # 1 Å⁻¹ = 1e10 m²/m³ = 1e4 m²/cm³
        descs.append(Descriptor(name="saxs.specific_surface_m2_per_cm3", value=sv_m2_cm3, uncertainty=abs(sv_m2_cm3) * sv_rel,
                                unit="m²/cm³", flags=list(inv_flags) if phi is not None else [], analyser=analyser))
        info["saxs.specific_surface_m2_per_cm3"] = {
            "formula": f"Porod's law: S/V = {route}", "porod_constant_cm-1_A-4": _f(KP), "porod_constant_sd": _f(KP_sd),
            "volume_fraction": phi, "sld_contrast_1e-6_A-2": drho}
    else:
        info["saxs.specific_surface_m2_per_cm3"] = {"produced": False, "why": why}
    warnings = flag_reasons(descs, info)
    if warnings:
        info["warnings"] = warnings
    return descs, info


def flag_reasons(descs: list[Descriptor], info: dict[str, Any]) -> list[str]:
    """Why each flagged model-free descriptor is flagged, "name: reason", from its `info` entry."""
    out = []
    for d in (d for d in descs if d.flags):
        i = info.get(d.name, {})
        why = [i["note"]] if i.get("note") else list(i.get("notes") or [])
        if i.get("error"):
            why.append(i["error"])
        if d.name == "saxs.rg_nm" and not why and "low_confidence" in d.flags:
            why.append("ln I against q² is not a straight line over the chosen window (its χ² test failed)")
        if d.name == "saxs.invariant" and i.get("extrapolated_fraction", 0.0) > 0.3:
            why.append(f"{i['extrapolated_fraction']:.0%} of the invariant lies in the extrapolations beyond the data")
        if why:
            out.append(f"{d.name}: " + "; ".join(why))
    return out


class SaxsModelFreeAnalyser:
    """Guinier Rg, Porod exponent, invariant (and specific surface on absolute scale): no shape model."""

    name: ClassVar[str] = "saxs_modelfree"
    technique: ClassVar[str] = "saxs"

    def analyse(self, measurement: Measurement) -> AnalysisResult:
        """As the other SAXS analysers, an implausible q range flags every descriptor (q_unit_suspect). A
        slit-smeared curve (USANS) is not desmeared, and a slit changes what Guinier and Porod read (an infinite
        slit turns q⁻⁴ into q⁻³): every descriptor is flagged slit_smearing_suspect, as saxs_ml's."""
        from sdl.techniques.saxs.reader import analysed_with_q_check

        return analysed_with_q_check(self._analyse, measurement)

    def _analyse(self, measurement: Measurement) -> AnalysisResult:
        descs, info = modelfree_descriptors(measurement, self.name)
        q, I = measurement.require("q_inv_angstrom", "intensity")
        curves: dict[str, np.ndarray] = {"q_inv_angstrom": q, "intensity": I}
        g = info["saxs.rg_nm"]
        if g["q_min"] is not None and g["i0"] is not None:  # the Guinier line over its window
            rg = descs[0].value * 10
            inside = (q >= g["q_min"]) & (q <= g["q_max"])
            curves["fit"] = np.where(inside, g["i0"] * np.exp(-(q**2) * rg**2 / 3), np.nan)
        info["method"] = "model-free: Guinier (AUTORG-style range), power law at high q, invariant"
        return AnalysisResult(analyser=self.name, descriptors=descs, curves=curves, info=info)
