"""Powder-diffraction analyser: phase identification (single and mixed), phase fractions, lattice
parameters and crystallite sizes, with a least-squares refinement started from the ML estimate,
and "phase not in library" / unexplained-peaks flags. The phase library, the network and its Q
grid come from a model folder (`sdl train pd --phases CIF_DIR --out MODEL_DIR`; the default is the
shipped oxide model in `weights/`).

Method (`info["method"]`):

1. Preprocessing. The scan (2θ with its wavelength, or Q) is put on the model's Q grid (2048
   points; the shipped model's 0.75–5.15 Å⁻¹) by linear interpolation; points the scan does not reach are set
   to zero and marked in a coverage-mask channel. Channel 0 is the pattern scaled to [0, 1];
   channel 1 the square root of the intensity above a rolling-minimum background (which lifts
   minor phases and removes most of the background). Because the grid is in Q, any wavelength works (trained on Cu and Co Kα, tested on a
   0.1665 Å synchrotron beam and Mo Kα).
2. `PdNet`, a small 1-D CNN (5 strided convolutions, one hidden dense layer, ~0.9 M weights),
   gives per library phase: a presence logit (multi-label sigmoid), a fraction logit (softmax over
   the phases called present), and Gaussian mean/log-variance heads for the lattice scale (relative
   to the reference cell) and log crystallite size. Phases with probability ≥ 0.5 are called.
3. Refinement ("cnn+least_squares"): a Le Bail/Rietveld-style whole-pattern fit of the same
   forward model the simulator uses (`simulators.pd.physics`: Dans_Diffraction structure factors,
   Thompson–Cox–Hastings pseudo-Voigt, Scherrer + microstrain + Caglioti broadening), started at
   the CNN estimate. Non-linear parameters (scipy.optimize.least_squares, trust-region
   reflective, bounded): lattice scale and crystallite size per phase, one microstrain, zero
   shift and (Bragg–Brentano) sample displacement. Linear parameters — one intensity scale per
   phase and an 8-term Chebyshev background — are solved exactly at every step (variable
   projection). The instrument profile comes from `metadata["caglioti_uvw_deg2"]` (a calibration
   with a line-profile standard), else a default for the wavelength. Weight fractions follow from
   the scales (w_p ∝ S_p ρ_p). Phases whose refined fraction falls below 2 % are dropped and the
   fit repeated. Search-match, in rounds: the CNN's next most probable phases, the CNN's top
   phases on the data minus the fitted phases, and the library phases whose patterns best match
   the positive residual are tried; the one with the largest χ² gain that passes candidate_test
   (≥ 4 wt %, ≥ 10 % of the misfit beyond noise removed, its own peaks seen, χ² halved or the
   fit brought to the noise level) is kept. A March–Dollase texture
   ratio is refined per phase. A Kα2 line is fitted when the metadata say the scan has one. Uncertainties: covariance from the Jacobian scaled by the reduced χ².
   If the fit fails, the CNN estimates are reported (method "cnn", flag low_confidence).
4. OOD score: the unexplained intensity after refinement — the positive part of the smoothed
   residual above 3σ, as a fraction of the fitted peak intensity. `ood` is flagged above
   `OOD_THRESHOLD` (measured false-alarm rate and detection rate: docs/analysers.md and
   benchmarks/pd.py). The CNN energy score (-log Σ exp logits) is reported in info as well.
   Unexplained peaks: maxima of the smoothed residual above 5σ and 3 % of the strongest fitted
   peak (positions in info, `pd.unexplained_peaks`, flag `unexplained_peaks` on `pd.phases`).

Descriptors: `pd.phases` (categorical, value "+".join(sorted phases), probabilities per library
phase), `pd.fraction.<phase>`, `pd.lattice_a_angstrom.<phase>`, `pd.crystallite_size_nm.<phase>`,
`pd.phase_purity` (largest weight fraction), `pd.ood_score`, `pd.unexplained_peaks`. Curves: the
data, the fit, the background and each phase's profile (`component:<phase>`), the unexplained
peaks' 2θ (`marker:unexplained peaks`).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.errors import AnalysisError
from sdl.measurement import Measurement

__all__ = [
    "PdMLAnalyser",
    "PdNet",
    "Q_GRID",
    "normalise_pattern",
    "preprocess",
    "preprocess_batch",
    "refine",
    "energy_score",
    "load_model",
    "save_model",
    "OOD_THRESHOLD",
]

N_GRID = 2048
Q_GRID = np.linspace(0.75, 5.15, N_GRID)  # the default model's grid (Å⁻¹); a model states its own in its metadata
DEFAULT_LATTICE_RANGE = (0.99, 1.01)
WEIGHTS_DIR = Path(__file__).with_name("weights")  # the default model: the 12 oxides of simulators/pd/phases/oxides
MODEL_FILE = "pd_ml.pt"
META_FILE = "pd_ml.json"
PRESENCE_THRESHOLD = 0.5
OOD_THRESHOLD = 0.06
DROP_FRACTION = 0.02
DETECTION_LIMIT = DROP_FRACTION  # wt fraction: refinement drops phases below it, so "absent" means below this
CANDIDATE_MIN_PROB = 0.03  # library phases the CNN did not call but gives at least this probability
MAX_CANDIDATES = 2
MAX_MATCH_CANDIDATES = 2  # library phases whose pattern best matches the residual (search-match stage)
MATCH_SMALL_SIZE_NM = 6.0  # search-match also tries each phase at this crystallite size (broad peaks)
UNEXPLAINED_SIGMA = 5.0  # an unexplained peak: smoothed residual maximum above this many σ ...
UNEXPLAINED_REL_HEIGHT = 0.03  # ... and above this fraction of the strongest fitted peak
ADD_MIN_FRACTION = 0.04
ADD_MIN_CHI2_GAIN = 0.10  # of the misfit beyond noise (_misfit_gain)
MISFIT_FLOOR = 0.1  # reduced χ² excess below which a fit counts as at the noise level (_misfit_gain)
MIN_DELTA_CHI2 = 25.0  # a phase must lower the total χ² by at least this much (~5σ for a few parameters)
MAX_PHASES = 4
CONFIRM_PROB = 0.9  # a called phase below this CNN probability stays only if the fit needs it or its own peaks show
UNIQUE_MIN_SHARE = 0.1
UNIQUE_MIN_SUPPORT = 0.5
STRONG_CHI2_GAIN = 0.5  # a candidate that halves χ² needs no own-peak evidence
NOISE_LEVEL_GAIN = 0.9  # nor does one that removes this much of the misfit beyond noise (_misfit_gain)
PO_RANGE = (0.6, 1.6)  # March–Dollase ratio r refined per phase (1 = random orientation)
N_BACKGROUND = 8
DEFAULT_CAGLIOTI = {"lab": (0.004, -0.002, 0.003), "synchrotron": (0.0, 0.0, 5e-5)}


# ----- preprocessing ---------------------------------------------------------------------------------

N_CHANNELS = 3
BKG_WINDOW = 151  # grid points (0.32 Å⁻¹) of the rolling-minimum background in channel 1


def normalise_pattern(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, N) float32 network input over the covered points: 0) intensity scaled to [0, 1];
    1) sqrt of the intensity above a rolling-minimum background, scaled to [0, 1] (lifts minor
    phases, removes most of the background); 2) the coverage mask. A (B, N) `y` with one mask
    gives (B, 3, N)."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    y = np.asarray(y, dtype=float)
    single = y.ndim == 1
    Y = y[None] if single else y
    m = np.asarray(mask, dtype=bool)
    out = np.zeros((Y.shape[0], N_CHANNELS, Y.shape[1]), np.float32)
    if m.any():
        idx = np.flatnonzero(m)
        sl = slice(idx[0], idx[-1] + 1)
        v = Y[:, sl]
        lo = v.min(axis=1, keepdims=True)
        hi = v.max(axis=1, keepdims=True)
        out[:, 0, sl] = (v - lo) / np.maximum(hi - lo, 1e-12)
        b = uniform_filter1d(minimum_filter1d(v, BKG_WINDOW, axis=1, mode="nearest"), BKG_WINDOW // 2, axis=1,
                             mode="nearest")
        r = np.sqrt(np.clip(v - np.minimum(b, v), 0.0, None))
        out[:, 1, sl] = r / np.maximum(r.max(axis=1, keepdims=True), 1e-12)
        out[:, 2] = m
    return out[0] if single else out


def _axes(measurement: Measurement) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float | None, dict]:
    """(q, intensity, sigma, wavelength, notes) from a pd Measurement; 2θ needs a wavelength."""
    notes: dict[str, Any] = {}
    arrays = measurement.arrays
    lam = measurement.metadata.get("wavelength_angstrom")
    if lam is not None:
        try:
            lam = float(lam)
        except (TypeError, ValueError):
            raise AnalysisError(f"metadata wavelength_angstrom={lam!r} is not a number") from None
        if not (0.01 < lam < 5.0):
            raise AnalysisError(f"metadata wavelength_angstrom={lam} outside 0.01–5 Å")
    if "two_theta_deg" in arrays:
        x, y = measurement.require("two_theta_deg", "intensity")
        if lam is None:
            raise AnalysisError("the wavelength is not known, so 2θ cannot be put on the Q axis: give "
                                "--wavelength-angstrom (sdl analyse) or metadata wavelength_angstrom, or a Q column")
        q = 4 * np.pi * np.sin(np.radians(x) / 2) / lam
    elif "q_inv_angstrom" in arrays:
        q, y = measurement.require("q_inv_angstrom", "intensity")
    else:
        raise AnalysisError(
            f"pd measurement needs 'two_theta_deg' or 'q_inv_angstrom' plus 'intensity'; it has {sorted(arrays)}"
        )
    sigma = None
    if "sigma" in arrays:
        (sigma,) = measurement.require("sigma")
        if sigma.shape != y.shape:
            raise AnalysisError(f"pd 'sigma' has shape {sigma.shape}; expected {y.shape}")
    if q.size < 50:
        raise AnalysisError(f"pd measurement has {q.size} points; need at least 50")
    order = np.argsort(q)
    q, y = q[order], y[order]
    sigma = sigma[order] if sigma is not None else None
    return q, y, sigma, lam, notes


def preprocess(q: np.ndarray, intensity: np.ndarray, q_grid: np.ndarray = Q_GRID) -> np.ndarray:
    """Network input (3, len(q_grid)) from I(Q) (any order, any spacing)."""
    Q_GRID = q_grid  # noqa: N806
    q = np.asarray(q, dtype=float)
    y = np.asarray(intensity, dtype=float)
    order = np.argsort(q)
    q, y = q[order], y[order]
    mask = (Q_GRID >= q[0]) & (Q_GRID <= q[-1])
    if mask.sum() < 0.4 * Q_GRID.size:
        raise AnalysisError(
            f"pd scan covers Q {q[0]:.2f}–{q[-1]:.2f} Å⁻¹, less than 40 % of the analyser's range "
            f"{Q_GRID[0]:.2f}–{Q_GRID[-1]:.2f} Å⁻¹ (Cu Kα: "
            f"{_tt_range(Q_GRID, 1.5406)}) the model was trained on"
        )
    yi = np.zeros(Q_GRID.size)
    yi[mask] = np.interp(Q_GRID[mask], q, y)
    return normalise_pattern(yi, mask)


def preprocess_batch(q: np.ndarray, intensities: np.ndarray, q_grid: np.ndarray = Q_GRID) -> np.ndarray:
    """Network inputs (B, 3, len(q_grid)) for B patterns on one common Q axis (a series from one
    instrument): the interpolation weights are computed once, everything else is vectorised."""
    Q_GRID = q_grid  # noqa: N806
    q = np.asarray(q, dtype=float)
    Y = np.atleast_2d(np.asarray(intensities, dtype=float))
    if Y.shape[1] != q.size:
        raise AnalysisError(f"preprocess_batch: intensities have {Y.shape[1]} points, the axis {q.size}")
    if not np.all(np.isfinite(Y)) or not np.all(np.isfinite(q)):
        raise AnalysisError("preprocess_batch: non-finite values (NaN/inf) in the patterns or the axis")
    order = np.argsort(q)
    q, Y = q[order], Y[:, order]
    mask = (Q_GRID >= q[0]) & (Q_GRID <= q[-1])
    if mask.sum() < 0.4 * Q_GRID.size:
        raise AnalysisError(f"pd scans cover Q {q[0]:.2f}–{q[-1]:.2f} Å⁻¹, less than 40 % of the analyser's range")
    g = Q_GRID[mask]
    j = np.clip(np.searchsorted(q, g), 1, q.size - 1)
    w = (g - q[j - 1]) / np.maximum(q[j] - q[j - 1], 1e-300)
    yi = np.zeros((Y.shape[0], Q_GRID.size))
    yi[:, mask] = Y[:, j - 1] * (1 - w) + Y[:, j] * w
    return normalise_pattern(yi, mask)


# ----- the network -----------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def _build_net_class():
    torch = _torch()
    nn = torch.nn

    class _PdNet(nn.Module):
        """1-D CNN over the Q grid -> per-phase presence, fraction, lattice-scale and size heads."""

        def __init__(self, n_phases: int, n_points: int = N_GRID, arch: Sequence[Sequence[int]] | None = None,
                     hidden: int = 256):
            super().__init__()
            # (in, out, kernel, stride): 2048 -> 512 -> 256 -> 128 -> 64 -> 32 positions
            chans = [tuple(c) for c in (arch or DEFAULT_ARCH)]
            self.arch = [list(c) for c in chans]
            layers: list[Any] = []
            n_out = n_points
            for cin, cout, k, s in chans:
                pad = (k - s) // 2 if k % 2 == 0 else k // 2
                layers += [nn.Conv1d(cin, cout, k, stride=s, padding=pad), nn.BatchNorm1d(cout), nn.ReLU()]
                n_out = (n_out + 2 * pad - k) // s + 1
            self.features = nn.Sequential(*layers)
            self.n_phases = n_phases
            self.n_hidden = int(hidden)
            self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1][1] * n_out, self.n_hidden), nn.ReLU(),
                                        nn.Dropout(0.1))
            self.head = nn.Linear(self.n_hidden, 6 * n_phases)

        def forward(self, x):
            h = self.head(self.hidden(self.features(x)))
            P = self.n_phases
            logits, frac, smu, slv, lmu, llv = h.split(P, dim=1)
            return {
                "logits": logits,
                "frac_logits": frac,
                "scale_mu": smu,
                "scale_logvar": slv.clamp(-12, 6),
                "size_mu": lmu,
                "size_logvar": llv.clamp(-12, 6),
            }

    return _PdNet


_NET_CLASS = None
DEFAULT_ARCH = ((N_CHANNELS, 16, 16, 4), (16, 32, 7, 2), (32, 64, 5, 2), (64, 96, 5, 2), (96, 96, 3, 2))


def hidden_size(n_phases: int) -> int:
    """Width of the dense layer, sized by the library: 256 up to 32 phases, then 8 per phase (max 1024)."""
    return int(min(1024, max(256, 8 * n_phases)))


def PdNet(n_phases: int, n_points: int = N_GRID, arch=None, hidden: int | None = None):  # noqa: N802 (a factory that reads like a class)
    global _NET_CLASS
    if _NET_CLASS is None:
        _NET_CLASS = _build_net_class()
    return _NET_CLASS(n_phases, n_points, arch, hidden or hidden_size(n_phases))


def _tt_range(q_grid: np.ndarray, lam: float) -> str:
    from simulators.pd.physics import q_to_two_theta

    t = q_to_two_theta(np.array([q_grid[0], q_grid[-1]]), lam)
    return f"{t[0]:.1f}–{t[1]:.1f}° 2θ" if np.all(np.isfinite(t)) else "beyond 180° 2θ"


def q_grid_of(meta: dict[str, Any]) -> np.ndarray:
    """A model's Q grid (Å⁻¹) from its metadata [first, last, points]."""
    lo, hi, n = meta["q_grid"]
    return np.linspace(float(lo), float(hi), int(n))


def save_model(model, meta: dict[str, Any], out_dir: Path | str) -> Path:
    torch = _torch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def load_model(weights_dir: Path | str | None = None):
    """(model in eval mode, metadata) from weights_dir (default: the shipped weights)."""
    torch = _torch()
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path, meta_path = d / MODEL_FILE, d / META_FILE
    if not path.exists() or not meta_path.exists():
        raise AnalysisError(f"{d} is not a pd_ml model folder: no {MODEL_FILE} and {META_FILE} (make one with "
                            "`sdl train pd --phases CIF_DIR --out MODEL_DIR`)")
    meta = json.loads(meta_path.read_text())
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = PdNet(len(meta["library"]), int(meta["q_grid"][2]), meta.get("arch"), meta.get("hidden", 256))
    model.load_state_dict(state)
    model.eval()
    return model, meta


def energy_score(logits: np.ndarray) -> np.ndarray:
    """-log Σ_k exp(logit_k): high when no library phase is recognised."""
    z = np.asarray(logits, dtype=float)
    m = z.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))


# ----- refinement ------------------------------------------------------------------------------------

def _chebyshev_design(x: np.ndarray, n: int) -> np.ndarray:
    t = 2.0 * (x - x.min()) / max(float(np.ptp(x)), 1e-12) - 1.0
    return np.polynomial.chebyshev.chebvander(t, n - 1)


def refine(
    two_theta: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray | None,
    wavelength: float,
    phases: Sequence[Any],
    init_scale: Sequence[float],
    init_size_nm: Sequence[float],
    *,
    lattice_ranges: Sequence[tuple[float, float]] | None = None,
    caglioti_uvw_deg2: Sequence[float] | None = None,
    polarisation: str = "unpolarised",
    fit_displacement: bool | None = None,
    n_background: int = N_BACKGROUND,
    max_nfev: int = 50,
    kalpha2: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Whole-pattern least-squares fit of phases' lattice scales, sizes, March–Dollase
    preferred-orientation ratios (along each phase's texture axis, PO_RANGE), one microstrain, zero
    shift (and displacement), with per-phase scales and a Chebyshev background solved linearly.
    `phases`: PhaseDefs (or built-in names); `lattice_ranges`: each phase's lattice-scale range
    (the fit may go 0.01 beyond it; default ±1 %); `kalpha2`: (Kα2 wavelength in Å, ratio to Kα1)
    for a tube without a monochromator. Returns the phases' names in "phases"."""
    from scipy.optimize import least_squares

    from simulators.pd import physics as spd

    x = np.asarray(two_theta, dtype=float)
    y = np.asarray(y, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    sig = np.sqrt(np.maximum(np.abs(y), 1e-9 * max(float(np.abs(y).max()), 1e-30))) if sigma is None else np.asarray(sigma, dtype=float)[order]
    sig = np.maximum(sig, 1e-6 * max(float(np.abs(y).max()), 1e-30))
    w = 1.0 / sig
    P = len(phases)
    sync = polarisation == "synchrotron"
    if fit_displacement is None:
        fit_displacement = not sync
    if caglioti_uvw_deg2 is None:
        caglioti_uvw_deg2 = DEFAULT_CAGLIOTI["synchrotron" if sync else "lab"]
    B = _chebyshev_design(x, n_background)
    rngs = list(lattice_ranges) if lattice_ranges is not None else [DEFAULT_LATTICE_RANGE] * P
    lo = ([r[0] - 0.01 for r in rngs] + [math.log(1.5)] * P + [PO_RANGE[0]] * P + [0.0, -0.2]
          + ([-1.0] if fit_displacement else []))
    hi = ([r[1] + 0.01 for r in rngs] + [math.log(500.0)] * P + [PO_RANGE[1]] * P + [8e-3, 0.2]
          + ([1.0] if fit_displacement else []))
    p0 = np.concatenate([
        np.clip(init_scale, np.array(lo[:P]) + 1e-6, np.array(hi[:P]) - 1e-6),
        np.log(np.clip(init_size_nm, 2.0, 400.0)),
        np.ones(P),
        [5e-4, 0.0],
        [0.0] if fit_displacement else [],
    ])
    xr = (float(x.min()), float(x.max()))

    def profile_of(p):
        return spd.Profile(wavelength_angstrom=wavelength, caglioti_uvw_deg2=tuple(caglioti_uvw_deg2),
                           zero_shift_deg=p[3 * P + 1], displacement_mm=p[3 * P + 2] if fit_displacement else 0.0,
                           polarisation=polarisation, kalpha2_angstrom=kalpha2[0] if kalpha2 else 0.0,
                           kalpha2_ratio=kalpha2[1] if kalpha2 else 0.0)

    def column(p, i, prof):
        comp = spd.PhaseComponent(phases[i], 1.0, p[i], math.exp(p[P + i]), p[3 * P], p[2 * P + i])
        return spd.phase_profile(x, comp, prof, xr)

    def design(p):
        prof = profile_of(p)
        return np.hstack([np.stack([column(p, i, prof) for i in range(P)], axis=1), B])

    state: dict[str, Any] = {}

    def solve(A):
        """Residual (weighted) of the best linear combination of A's columns: the phase scales
        and background coefficients (variable projection)."""
        Aw = A * w[:, None]
        col_norm = np.linalg.norm(Aw, axis=0)
        col_norm[col_norm == 0] = 1.0
        An = Aw / col_norm
        G = An.T @ An
        G[np.diag_indices_from(G)] += 1e-10
        b = An.T @ (y * w)
        # normal equations ((N x ~10) is well scaled); a phase scale < 0 is unphysical: such
        # phases are held at 0 and the rest solved again (an active set on the phase columns)
        free = np.ones(A.shape[1], dtype=bool)
        for _ in range(P):
            c = np.zeros(A.shape[1])
            c[free] = np.linalg.solve(G[np.ix_(free, free)], b[free])
            neg = np.flatnonzero(c[:P] < 0)
            if neg.size == 0:
                break
            free[neg] = False
        c = c / col_norm
        return (A @ c - y) * w, c

    def resid(p):
        A = design(p)
        r, c = solve(A)
        state.update(c=c, A=A, p=p.copy(), r=r)
        return r

    def jac(p):
        """Forward differences that recompute only the columns a parameter moves: a phase's own
        lattice scale, size or texture changes its column alone (the profile evaluations, not the
        linear solve, cost the time: ~2-3x fewer of them than a full redesign per parameter)."""
        if "p" not in state or not np.array_equal(state["p"], p):
            resid(p)
        A0, r0 = state["A"], state["r"]
        J = np.empty((r0.size, p.size))
        prof0 = profile_of(p)
        for j in range(p.size):
            h = 1e-4 * max(1.0, abs(p[j])) * (1.0 if p[j] >= 0 else -1.0)
            if not (lo_a[j] <= p[j] + h <= hi_a[j]):
                h = -h
            pj = p.copy()
            pj[j] += h
            A = A0.copy()
            if j < 3 * P:
                A[:, j % P] = column(pj, j % P, prof0)
            else:  # strain, zero shift, displacement: every phase's column moves
                prof = profile_of(pj)
                for i in range(P):
                    A[:, i] = column(pj, i, prof)
            J[:, j] = (solve(A)[0] - r0) / h
        return J

    lo_a, hi_a = np.array(lo), np.array(hi)
    x_scale = np.concatenate([np.full(P, 1e-3), np.full(P, 0.1), np.full(P, 0.05), [5e-4, 0.01],
                              [0.05] if fit_displacement else []])
    res = least_squares(resid, p0, jac=jac, bounds=(lo_a, hi_a), x_scale=x_scale, method="trf", max_nfev=max_nfev)
    r = resid(res.x)
    c, A = state["c"], state["A"]
    n_par = res.x.size + c.size
    dof = max(x.size - n_par, 1)
    chi2r = float(np.sum(r ** 2) / dof)
    try:
        J = res.jac
        cov = np.linalg.pinv(J.T @ J) * chi2r
        sd = np.sqrt(np.maximum(np.diag(cov), 0))
    except np.linalg.LinAlgError:
        sd = np.full(res.x.size, np.nan)
    Aw = A * w[:, None]
    try:
        cov_c = np.linalg.pinv(Aw.T @ Aw) * chi2r
        sd_c = np.sqrt(np.maximum(np.diag(cov_c), 0))[:P]
    except np.linalg.LinAlgError:
        sd_c = np.full(P, np.nan)
    scales = res.x[:P]
    phase_scales = c[:P]
    fr = spd.weight_fractions_from_scales(phases, phase_scales, scales)
    fr_sd = np.where(phase_scales > 0, fr * sd_c / np.maximum(np.abs(phase_scales), 1e-300), np.nan)
    fit = A @ c
    bkg = B @ c[P:]
    per_phase = A[:, :P] * c[:P]
    return {
        "phase_curves": per_phase,
        "phases": [getattr(p, "name", p) for p in phases],
        "lattice_scale": scales,
        "lattice_scale_sd": sd[:P],
        "size_nm": np.exp(res.x[P:2 * P]),
        "size_rel_sd": sd[P:2 * P],
        "po_ratio": res.x[2 * P:3 * P],
        "strain": float(res.x[3 * P]),
        "zero_shift_deg": float(res.x[3 * P + 1]),
        "displacement_mm": float(res.x[3 * P + 2]) if fit_displacement else 0.0,
        "phase_scales": phase_scales,
        "fractions": fr,
        "fractions_sd": fr_sd,
        "two_theta": x,
        "y": y,
        "sigma": sig,
        "fit": fit,
        "background": bkg,
        "chi2_reduced": chi2r,
        "rwp": float(np.sqrt(np.sum((r) ** 2) / max(np.sum((y * w) ** 2), 1e-300))),
        "success": bool(res.success) or res.status == 0,
        "nfev": int(res.nfev),
    }


def unexplained_fraction(y: np.ndarray, fit: np.ndarray, background: np.ndarray, sigma: np.ndarray, window: int = 7) -> float:
    """Positive smoothed residual above 3σ, as a fraction of the fitted peak intensity."""
    k = np.ones(window) / window
    rs = np.convolve(y - fit, k, mode="same")
    ss = np.sqrt(np.convolve(sigma ** 2, k, mode="same") / window)
    excess = np.maximum(rs - 3.0 * ss, 0.0)
    peaks = np.maximum(fit - background, 0.0)
    return float(excess.sum() / max(peaks.sum(), 1e-300))


def unexplained_peaks(two_theta: np.ndarray, y: np.ndarray, fit: np.ndarray, background: np.ndarray,
                      sigma: np.ndarray, window: int = 7) -> list[dict[str, float]]:
    """Peaks the fit leaves in the data: maxima of the smoothed residual above UNEXPLAINED_SIGMA
    (smoothed σ) and above UNEXPLAINED_REL_HEIGHT of the strongest fitted peak. Each: 2θ (deg),
    height relative to the strongest fitted peak, significance (σ)."""
    from scipy.signal import find_peaks

    k = np.ones(window) / window
    rs = np.convolve(y - fit, k, mode="same")
    ss = np.sqrt(np.convolve(sigma ** 2, k, mode="same") / window)
    top = max(float(np.max(fit - background)), 1e-300)
    z = rs / np.maximum(ss, 1e-300)
    ok = (z > UNEXPLAINED_SIGMA) & (rs > UNEXPLAINED_REL_HEIGHT * top)
    idx, _ = find_peaks(np.where(ok, rs, 0.0), distance=max(3, window))
    out = [{"two_theta_deg": float(two_theta[i]), "relative_height": float(rs[i] / top), "sigma": float(z[i])}
           for i in idx if ok[i]]
    return sorted(out, key=lambda d: -d["relative_height"])


# ----- the analyser ----------------------------------------------------------------------------------

class PdMLAnalyser:
    """CNN phase identification + parameter regression over a model's phase library, polished by
    least-squares refinement with a search-match stage, and an unexplained-peaks check.

    `model`: a model folder made by `sdl train pd --phases CIF_DIR --out MODEL_DIR` (default: the
    shipped oxide model in sdl/techniques/pd/weights)."""

    name: ClassVar[str] = "pd_ml"
    technique: ClassVar[str] = "pd"

    def __init__(self, model: Path | str | None = None, refine: bool = True,
                 ood_threshold: float = OOD_THRESHOLD, weights_dir: Path | str | None = None):
        from sdl.techniques.pd.library import load_phases

        d = Path(model or weights_dir or WEIGHTS_DIR)
        if not d.is_dir():
            raise AnalysisError(f"pd_ml model {d}: no such folder (make one with `sdl train pd --phases CIF_DIR "
                                f"--out {d}`)")
        self.model_dir = d
        self.model, self.meta = load_model(d)
        self.phases = load_phases(d)
        self.library: tuple[str, ...] = tuple(p.label for p in self.phases)
        if list(self.library) != list(self.meta["library"]):
            raise AnalysisError(f"pd_ml model {d}: phases.json and {META_FILE} list different phases")
        self.by_label = {p.label: p for p in self.phases}
        self.q_grid = q_grid_of(self.meta)
        self.do_refine = bool(refine)
        self.ood_threshold = float(ood_threshold)
        self._lock = threading.Lock()

    # -- batched CNN --------------------------------------------------------------------------------
    def predict_batch(self, X: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
        """CNN outputs for preprocessed inputs X (B, 3, len(q_grid)): probabilities, fractions
        (softmax over called phases), lattice scale ± sd, size (nm) ± relative sd, energy score."""
        torch = _torch()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3 or X.shape[1:] != (N_CHANNELS, self.q_grid.size):
            raise AnalysisError(f"pd_ml input must have shape (B, {N_CHANNELS}, {self.q_grid.size}); got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise AnalysisError("pd_ml input holds non-finite values (NaN/inf)")
        outs: dict[str, list] = {}
        with self._lock, torch.no_grad():
            for i in range(0, X.shape[0], batch_size):
                o = self.model(torch.from_numpy(X[i: i + batch_size]))
                for k, v in o.items():
                    outs.setdefault(k, []).append(v.numpy())
        o = {k: np.concatenate(v) for k, v in outs.items()}
        prob = 1.0 / (1.0 + np.exp(-o["logits"]))
        called = prob >= PRESENCE_THRESHOLD
        none = ~called.any(axis=1)
        called[none, np.argmax(prob[none], axis=1)] = True
        fl = np.where(called, o["frac_logits"], -np.inf)
        fl = fl - fl.max(axis=1, keepdims=True)
        fr = np.exp(fl)
        fr = fr / fr.sum(axis=1, keepdims=True)
        return {
            "probabilities": prob,
            "called": called,
            "fractions": fr,
            "lattice_scale": 1.0 + 0.02 * o["scale_mu"],
            "lattice_scale_sd": 0.02 * np.exp(0.5 * o["scale_logvar"]),
            "size_nm": 20.0 * np.exp(o["size_mu"]),
            "size_rel_sd": np.exp(0.5 * o["size_logvar"]),
            "energy": energy_score(o["logits"]),
        }

    def preprocess(self, q: np.ndarray, y: np.ndarray) -> np.ndarray:
        return preprocess(q, y, self.q_grid)

    def predict_measurements(self, measurements: Sequence[Measurement]) -> dict[str, np.ndarray]:
        """CNN outputs for several measurements (vectorised preprocessing when they share an axis)."""
        axes = [_axes(m)[:2] for m in measurements]
        if not axes:
            raise AnalysisError("predict_measurements needs at least one measurement")
        q0 = axes[0][0]
        if all(a[0].shape == q0.shape and np.array_equal(a[0], q0) for a in axes):
            X = preprocess_batch(q0, np.stack([a[1] for a in axes]), self.q_grid)
        else:
            X = np.stack([preprocess(q, y, self.q_grid) for q, y in axes])
        return self.predict_batch(X)

    # -- one measurement ----------------------------------------------------------------------------
    def analyse(self, measurement: Measurement) -> AnalysisResult:
        if measurement.technique not in ("pd", "xrd"):
            raise AnalysisError(f"pd_ml analyses technique 'pd'; got {measurement.technique!r}")
        q, y, sigma, lam, notes = _axes(measurement)
        X = preprocess(q, y, self.q_grid)[None]
        cnn = {k: v[0] for k, v in self.predict_batch(X).items()}
        lib = self.library
        prob = cnn["probabilities"]
        called = [lib[i] for i in np.flatnonzero(cnn["called"])]
        low_conf = float(prob.max()) < PRESENCE_THRESHOLD or bool(np.any(np.abs(prob - 0.5) < 0.2))
        info: dict[str, Any] = {"model": str(self.model_dir), "cnn_probabilities": {p: float(v) for p, v in zip(lib, prob)},
                                "cnn_energy": float(cnn["energy"]), **notes}
        est_all = {p: {"fraction": float(cnn["fractions"][lib.index(p)]),
                   "scale": float(cnn["lattice_scale"][lib.index(p)]),
                   "scale_sd": float(cnn["lattice_scale_sd"][lib.index(p)]),
                   "size": float(cnn["size_nm"][lib.index(p)]),
                   "size_rel_sd": float(cnn["size_rel_sd"][lib.index(p)]),
                   "fraction_sd": float("nan")} for p in lib}
        est = {p: est_all[p] for p in called}
        method = "cnn"
        ood_score = float("nan")
        extra: list[dict[str, float]] = []
        curves: dict[str, np.ndarray] = {"q_inv_angstrom": q, "intensity": y}
        if self.do_refine:
            try:
                ref = self._refine(measurement, q, y, sigma, lam, called, est_all, prob)
            except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError) as exc:
                info["refinement_error"] = f"{type(exc).__name__}: {exc}"
                ref = None
            if ref is not None:
                method = "cnn+least_squares"
                called = ref["phases"]
                est = {p: {"fraction": float(ref["fractions"][i]), "fraction_sd": float(ref["fractions_sd"][i]),
                           "scale": float(ref["lattice_scale"][i]), "scale_sd": float(ref["lattice_scale_sd"][i]),
                           "size": float(ref["size_nm"][i]), "size_rel_sd": float(ref["size_rel_sd"][i])}
                       for i, p in enumerate(called)}
                ood_score = unexplained_fraction(ref["y"], ref["fit"], ref["background"], ref["sigma"])
                extra = unexplained_peaks(ref["two_theta"], ref["y"], ref["fit"], ref["background"], ref["sigma"])
                if ref.get("sigma_note"):
                    info.setdefault("warnings", []).append(ref["sigma_note"])
                info.update(chi2_reduced=ref["chi2_reduced"], rwp=ref["rwp"], strain=ref["strain"],
                            zero_shift_deg=ref["zero_shift_deg"], displacement_mm=ref["displacement_mm"],
                            nfev=ref["nfev"], dropped_phases=ref.get("dropped", []),
                            added_phases=ref.get("added", []), candidates_tested=ref.get("tested", []),
                            unexplained_peaks=extra)
                curves = {"two_theta_deg": ref["two_theta"], "intensity": ref["y"], "fit": ref["fit"],
                          "background": ref["background"]}
                for i, p in enumerate(called):
                    curves[f"component:{p}"] = ref["phase_curves"][:, i] + ref["background"]
                if extra:
                    curves["marker:unexplained peaks"] = np.array([e["two_theta_deg"] for e in extra])
            else:
                low_conf = True
        info["method"] = method
        info["ood_threshold"] = self.ood_threshold
        ood = bool(np.isfinite(ood_score) and ood_score > self.ood_threshold)
        flags: list[str] = []
        if ood:
            flags.append("ood")
        if low_conf:
            flags.append("low_confidence")
        phase_flags = flags + (["unexplained_peaks"] if extra else [])
        descs = [Descriptor(name="pd.phases", value="+".join(sorted(called)), flags=list(phase_flags),
                            probabilities={p: float(v) for p, v in zip(lib, prob)}, analyser=self.name)]
        for p in sorted(called):
            e = est[p]
            a_ref = self.by_label[p].phase.a
            descs += [
                Descriptor(name=f"pd.fraction.{p}", value=e["fraction"],
                           uncertainty=_finite(e["fraction_sd"]), unit="wt fraction", flags=list(flags), analyser=self.name),
                Descriptor(name=f"pd.lattice_a_angstrom.{p}", value=e["scale"] * a_ref,
                           uncertainty=_finite(e["scale_sd"] * a_ref), unit="Å", flags=list(flags), analyser=self.name),
                Descriptor(name=f"pd.crystallite_size_nm.{p}", value=e["size"],
                           uncertainty=_finite(e["size"] * e["size_rel_sd"]), unit="nm", flags=list(flags), analyser=self.name),
            ]
        # a library phase that is not called is reported as absent: fraction 0 within the detection
        # limit, so a campaign can constrain or maximise any phase's fraction
        descs += [Descriptor(name=f"pd.fraction.{p}", value=0.0, uncertainty=DETECTION_LIMIT, unit="wt fraction",
                             flags=list(flags), analyser=self.name) for p in sorted(set(lib) - set(called))]
        purity = max((est[p]["fraction"] for p in called), default=float("nan"))
        descs.append(Descriptor(name="pd.phase_purity", value=float(purity), unit="wt fraction", flags=list(flags),
                                analyser=self.name))
        descs.append(Descriptor(name="pd.ood_score", value=float(ood_score) if np.isfinite(ood_score) else float(cnn["energy"]),
                                unit=None if np.isfinite(ood_score) else "energy", flags=["ood"] if ood else [],
                                analyser=self.name))
        if method != "cnn":
            descs.append(Descriptor(name="pd.unexplained_peaks", value=float(len(extra)), unit="peaks",
                                    flags=["unexplained_peaks"] if extra else [], analyser=self.name))
        return AnalysisResult(analyser=self.name, descriptors=descs, curves=curves, info=info)

    def _residual_cnn(self, lam, ref) -> list[str]:
        """Library phases in the order the CNN ranks them on the data minus the phases fitted so far
        (background kept): the next phase of a mixture, as XRD-AutoAnalyzer finds it."""
        y = ref["y"] - ref["phase_curves"].sum(axis=1)
        q = 4 * np.pi * np.sin(np.radians(ref["two_theta"]) / 2) / lam
        try:
            p = self.predict_batch(self.preprocess(q, y)[None])["probabilities"][0]
        except AnalysisError:
            return []
        return [self.library[j] for j in np.argsort(-p) if p[j] >= CANDIDATE_MIN_PROB]

    def _residual_matches(self, tt, lam, pol, cag, ref, exclude, kalpha2=None) -> list[str]:
        """Search-match: the library phases (not in `exclude`) that would lower χ² most if added to
        the current fit at the refined profile, each at its lattice-scale range's ends and middle
        and at the refined median crystallite size or MATCH_SMALL_SIZE_NM: the drop (r·v)²/(v·v) of
        the weighted residual r on the phase's weighted pattern v with the background's share of v
        removed (the fit would refit the background; a broad pattern it can absorb counts for
        little). Weighting by 1/σ lets a weak scatterer's peaks on a flat background outrank the
        shape misfit under a strong phase's peaks; kept when the drop is at least half of what
        candidate_test asks of a phase."""
        from simulators.pd import physics as spd

        x, sig = ref["two_theta"], ref["sigma"]
        r = (ref["y"] - ref["fit"]) / sig
        Bw = _chebyshev_design(x, N_BACKGROUND) / sig[:, None]
        Qb = np.linalg.qr(Bw)[0]
        prof = spd.Profile(wavelength_angstrom=lam, caglioti_uvw_deg2=cag or DEFAULT_CAGLIOTI[
            "synchrotron" if pol == "synchrotron" else "lab"], zero_shift_deg=ref["zero_shift_deg"],
            displacement_mm=ref["displacement_mm"], polarisation=pol,
            kalpha2_angstrom=kalpha2[0] if kalpha2 else 0.0, kalpha2_ratio=kalpha2[1] if kalpha2 else 0.0)
        sizes = sorted({float(np.median(ref["size_nm"])), MATCH_SMALL_SIZE_NM})
        need = 0.5 * ADD_MIN_CHI2_GAIN * max(ref["chi2_reduced"] - 1.0, MISFIT_FLOOR) * x.size
        scores = []
        for lp in self.phases:
            if lp.label in exclude:
                continue
            lo, hi = lp.lattice_range
            comps = [spd.PhaseComponent(lp.phase, 1.0, s, L, ref["strain"]) for s in (lo, 0.5 * (lo + hi), hi) for L in sizes]
            V = spd.phase_patterns(x, comps, prof).T / sig[:, None]
            V -= Qb @ (Qb.T @ V)
            g, h = r @ V, np.einsum("ij,ij->j", V, V)
            drop = np.where((g > 0) & (h > 0), g * g / np.maximum(h, 1e-300), 0.0)
            scores.append((float(drop.max()), lp.label))
        scores.sort(reverse=True)
        return [lab for sc, lab in scores[:MAX_MATCH_CANDIDATES] if sc >= max(need, MIN_DELTA_CHI2)]

    def _refine(self, measurement, q, y, sigma, lam, called, est, prob):
        """Refine the called phases; then test the next most probable library phases and those that
        best match the residual (search-match): a candidate is kept when its refined fraction
        reaches ADD_MIN_FRACTION and it lowers χ² by ADD_MIN_CHI2_GAIN (relative); phases refined
        below DROP_FRACTION are dropped."""
        md = measurement.metadata
        if lam is None:
            raise ValueError("no wavelength: the refinement needs 2θ")
        s = q * lam / (4 * np.pi)
        if np.any(s >= 1):
            return None
        tt = np.degrees(2 * np.arcsin(s))
        pol = str(md.get("polarisation") or ("synchrotron" if lam < 0.5 else "unpolarised"))
        cag = md.get("caglioti_uvw_deg2")
        cag = tuple(float(v) for v in cag) if cag is not None and len(cag) == 3 else None
        k2 = (float(md["kalpha2_angstrom"]), float(md["kalpha2_ratio"])) if md.get("kalpha2_ratio") else None

        def fit(phases, prev=None):
            init_s = [prev["scale"][p] if prev and p in prev["scale"] else est[p]["scale"] for p in phases]
            init_L = [prev["size"][p] if prev and p in prev["size"] else est[p]["size"] for p in phases]
            return refine(tt, y, sigma, lam, [self.by_label[p].phase for p in phases], init_s, init_L,
                          lattice_ranges=[self.by_label[p].lattice_range for p in phases],
                          caglioti_uvw_deg2=cag, polarisation=pol, kalpha2=k2)

        def as_prev(ref):
            return {"scale": dict(zip(ref["phases"], ref["lattice_scale"])), "size": dict(zip(ref["phases"], ref["size_nm"]))}

        def fit_and_drop(phases, prev=None):
            dropped: list[str] = []
            ref = fit(phases, prev)
            for _ in range(3):
                small = [p for p, f in zip(phases, ref["fractions"]) if not (f >= DROP_FRACTION)]
                if not small or len(phases) == 1:
                    break
                if len(small) == len(phases):
                    small = small[1:]
                dropped += small
                phases = [p for p in phases if p not in small]
                ref = fit(phases, as_prev(ref))
            return ref, dropped

        ref, dropped = fit_and_drop(list(called))
        sigma_note = None
        if sigma is None:
            # no σ column: refine weighs by √I (counting statistics); a first fit better than those errors allow
            # (χ²_red < 1) says the intensities are not counts, and the phase tests, in χ² units, would then never
            # pass: σ is scaled so that the first fit's χ²_red is 1
            c2 = float(ref["chi2_reduced"])
            sigma_note = "no σ column: σ = √I assumed (counting statistics)"
            if 0 < c2 < 1:
                sigma = ref["sigma"] * math.sqrt(c2)
                ref, dropped = fit_and_drop(list(called))
                sigma_note = (f"no σ column: σ = √I (counting statistics) gave the first fit χ²_red {c2:.3g} < 1, so "
                              f"these are not counts; σ scaled by {math.sqrt(c2):.3g} to make it 1")
        # a called phase the CNN is unsure of stays if the data show its own peaks or the fit needs
        # it (polymorphs and solid solutions share most lines: a 50/50 CeO2 / t-ZrO2 mixture)
        for p in [p for p in ref["phases"] if prob[self.library.index(p)] < CONFIRM_PROB]:
            if len(ref["phases"]) < 2 or p not in ref["phases"]:
                continue
            rest = fit([q for q in ref["phases"] if q != p], as_prev(ref))
            if _misfit_gain(rest, ref) < ADD_MIN_CHI2_GAIN and not _supported(_own_peaks(rest, ref, ref["phases"].index(p))):
                ref = rest
                dropped.append(p)
        added: list[str] = []
        tested: list[dict[str, Any]] = []
        failed = set(dropped)  # candidates that did not pass are not tried again; tried again next round
        # are those that passed but another explained more, and those whose own peaks are seen at a
        # weight that counts but whose gain fell short beside a larger misfit that the added phase
        # then removes (10 wt% diamond beside KCl and a still unfitted ZrO2)
        retry: list[str] = []
        cnn_ranked = [self.library[j] for j in np.argsort(-prob) if prob[j] >= CANDIDATE_MIN_PROB]
        while len(ref["phases"]) < MAX_PHASES:
            seen = set(ref["phases"]) | failed
            cands = [c for c in retry if c not in seen]
            for source in (cnn_ranked, self._residual_cnn(lam, ref)):
                cands += [c for c in source if c not in seen and c not in cands][:MAX_CANDIDATES]
            cands += self._residual_matches(tt, lam, pol, cag, ref, seen | set(cands), k2)
            best, retry = None, []
            for c in cands:
                trial = fit(ref["phases"] + [c], as_prev(ref))
                test = candidate_test(ref, trial)
                tested.append({"phase": c, "cnn_probability": float(prob[self.library.index(c)]), **test})
                if test["accepted"]:
                    retry.append(c)
                    if best is None or test["chi2_gain"] > best[0]:
                        best = (test["chi2_gain"], c, trial)
                elif test["refined_fraction"] >= ADD_MIN_FRACTION and _supported((test["own_peak_share"], test["own_peak_support"])):
                    retry.append(c)
                else:
                    failed.add(c)
            if best is None:
                break
            _, c, trial = best
            retry.remove(c)
            ref, more = fit_and_drop(trial["phases"], as_prev(trial))
            dropped += more
            failed.update(more)
            added.append(c)
        ref["dropped"] = dropped
        ref["added"] = added
        ref["tested"] = tested
        if sigma_note:
            ref["sigma_note"] = sigma_note
        return ref


def _own_peaks(without: dict[str, Any], with_: dict[str, Any], k: int) -> tuple[float, float]:
    """How phase k of the fit `with_` is seen by its own peaks: (share, support), each point weighted
    by u = (phase k's part of the fitted peak intensity there)². share: Σu·I_k / ΣI_k, the part of
    its intensity not shared with other phases' peaks; support: the projection of the residual of
    the fit `without` it on u·I_k relative to u·I_k itself (1 = all of its own intensity was
    unexplained before). A phase whose peaks all coincide with others' only re-weights their
    intensities, which texture, strain or an imperfect structure model do as well: no evidence."""
    curves = with_["phase_curves"]
    ck = np.maximum(curves[:, k], 0.0)
    u = (ck / np.maximum(np.maximum(curves, 0.0).sum(axis=1), 1e-300)) ** 2
    total = float(ck.sum())
    if total <= 0:
        return 0.0, 0.0
    r = without["y"] - without["fit"]
    return float(u @ ck) / total, float((u * ck) @ r) / max(float((u * ck) @ ck), 1e-300)


def _chi2_gain(without: dict[str, Any], with_: dict[str, Any]) -> float:
    """Relative drop of the reduced χ² from the fit `without` a phase to the fit `with_` it."""
    return float(1.0 - with_["chi2_reduced"] / max(without["chi2_reduced"], 1e-300))


def _misfit_gain(without: dict[str, Any], with_: dict[str, Any]) -> float:
    """The part of the misfit beyond counting noise (reduced χ² − 1, floored at MISFIT_FLOOR) of
    the fit `without` a phase that the fit `with_` it removes; 0 unless the total χ² drops by
    MIN_DELTA_CHI2. Far from the noise level this is about the relative χ² drop; near it (a good
    fit of the major phases, χ² 1.1–1.3) a minor phase that explains most of what is left counts,
    where a relative drop of 10 % would have asked more than the noise allows it to show."""
    drop = without["chi2_reduced"] - with_["chi2_reduced"]
    if drop * without["y"].size < MIN_DELTA_CHI2:
        return 0.0
    return float(drop / max(without["chi2_reduced"] - 1.0, MISFIT_FLOOR))


def _supported(share_support: tuple[float, float]) -> bool:
    return share_support[0] >= UNIQUE_MIN_SHARE and share_support[1] >= UNIQUE_MIN_SUPPORT


def candidate_test(without: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
    """Whether the last phase of the fit `trial` belongs in the sample: its refined weight fraction
    reaches ADD_MIN_FRACTION, it removes ADD_MIN_CHI2_GAIN of the misfit beyond noise of the fit
    `without` it (_misfit_gain), and its own peaks are seen (_own_peaks), or it lowers χ² by
    STRONG_CHI2_GAIN, relative (a polymorph or solid solution whose lines the phases already fitted
    absorb in the fit without it), or it removes NOISE_LEVEL_GAIN of the misfit beyond noise (with
    it the data are explained to the counting noise; a phase of small crystallites, whose broad
    peaks the background of the fit without it partly absorbs, shows little own-peak support)."""
    f_c = float(trial["fractions"][-1])
    gain, misfit_gain = _chi2_gain(without, trial), _misfit_gain(without, trial)
    share, support = _own_peaks(without, trial, len(trial["phases"]) - 1)
    ok = f_c >= ADD_MIN_FRACTION and misfit_gain >= ADD_MIN_CHI2_GAIN and (
        gain >= STRONG_CHI2_GAIN or misfit_gain >= NOISE_LEVEL_GAIN or _supported((share, support)))
    return {"refined_fraction": f_c, "chi2_gain": gain, "misfit_gain": misfit_gain, "own_peak_share": share,
            "own_peak_support": support, "accepted": bool(ok)}


def _finite(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
