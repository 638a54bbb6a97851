"""SAXS/SANS analyser by machine learning: shape-model identification, size and polydispersity
regression with uncertainty, out-of-distribution detection, and least-squares refinement.

Pipeline for one curve I(q):

1. Representation: log10 I interpolated onto a fixed log-q grid (`GRID`, 0.003-0.6 Å⁻¹, 192
   points) with a mask channel (grid points outside the measured range, in gaps wider than
   `MAX_GAP` in ln q, or where I <= 0 are masked); the mean of the valid log I is subtracted, so
   the scale factor of the curve does not matter.
2. `SasNet`, a small 1-D CNN: class logits (7 classes, `CLASSES`), and per class a Gaussian
   (mean, log-variance) for each size parameter and the polydispersity (trained with Gaussian NLL).
   Probabilities are temperature-scaled and the predicted standard deviations rescaled on a
   validation split (stored with the weights).
3. OOD score: max(P(other), F(d)) where d is the Mahalanobis distance of the CNN embedding to the
   nearest in-library class mean and F its empirical distribution on in-distribution validation
   curves; above the stored threshold the curve is flagged "ood".
4. Refinement: scipy least_squares of the sasmodels model of the identified class (with Schulz
   polydispersity and Gaussian resolution), started from the ML estimate; scale and a linear
   background are solved at each step by non-negative least squares. Spheres and core-shell
   spheres are also refined times a hard-sphere and a charged (Hayter-Penfold MSA) structure
   factor; the structure factor (or none) is chosen by BIC. Without a sigma column the errors are
   estimated from the curve's roughness (`estimate_sigma`).
5. Arbitration: the runner-up shape (the most probable other library shape, however unlikely) and
   the nested alternative (`NESTED`: shell or no shell) are refined too, and every other library shape when
   even the best of these fits misfits (`RETRY_CHI2`), and weighed against the CNN's choice by BIC (`arbitrate`).
   When the CNN says "other", its two most probable library shapes are refined and the better one is weighed
   the same way against the best fit of the `OTHER_REFERENCES` (a sheet, a coil, a two-phase medium, a power
   law: `refine_other`); where the sheet is the best of these, a shape that fits and wins takes the answer (a
   disc whose width the window shows).
6. Flags: `low_confidence` when the top probability is low, the data lie beyond the training
   instrument, the chosen fit misfits (χ²_red against the file's errors, or `roughness_chi2`
   without them), another refined shape fits clearly better (`fit_disagreement`), another refined
   shape fits as well, so the data do not tell the two apart (`is_ambiguous`; info["ambiguous_shapes"]),
   or the refined parameters lie beyond the training ranges (`beyond_training`), or the fits chose another shape
   than the CNN's top one (`overruled`).

The shipped weights live in sdl/techniques/saxs/weights/saxs_ml.pt (loaded with weights_only=True).
Train new ones with `sdl train saxs` (sdl.techniques.saxs.train).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.analysis.ood import nearest_class_distance, whitening
from sdl.errors import AnalysisError
from sdl.measurement import Measurement
from sdl.techniques.saxs.modelfree import modelfree_descriptors
from sdl.techniques.saxs.reader import analysed_with_q_check, q_unit_hint
from simulators.saxs import dataset as D
from simulators.saxs.dataset import APPLIES, CLASSES, TARGETS

WEIGHTS = Path(__file__).parent / "weights" / "saxs_ml.pt"

# the labels are the training set's: classes, regression targets and which apply to which class
SASMODEL = {c: m for c, m in D.SASMODEL.items() if m}  # class -> sasmodels model refined
DESCRIPTOR = {"radius": "saxs.radius_nm", "length": "saxs.length_nm", "polar_radius": "saxs.polar_radius_nm",
              "shell": "saxs.shell_nm", "polydispersity": "saxs.polydispersity"}

GRID = np.logspace(math.log10(0.003), math.log10(0.6), 192)
LOG_GRID = np.log(GRID)
MAX_GAP = 0.3  # ln-q gap between measured points above which the grid points inside are masked
MIN_POINTS = 20
LOW_CONFIDENCE = 0.6  # calibrated top probability below which saxs.model is flagged low_confidence
# the training instrument's data-quality envelope: beyond it the shape is not identifiable the way the
# network learnt it, and its probabilities are not calibrated there, so saxs.model is flagged low_confidence
NOISE_ENVELOPE = 0.12  # median sigma/I over the low-q half (ln q) of the points: training errors stop at 12 %
RESOLUTION_ENVELOPE = 0.12  # median dq/q (Gaussian sigma of q): the training resolution stops at 0.12

# regression targets are standardised: ln(size/100 Å)/1.5 and (pd - 0.1)/0.1
_SIZE_REF, _SIZE_SCALE, _PD_REF, _PD_SCALE = math.log(100.0), 1.5, 0.1, 0.1


def encode_targets(t: np.ndarray) -> np.ndarray:
    """(n, 5) targets in Å / fraction -> standardised (NaN stays NaN)."""
    z = np.empty_like(t, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z[:, :4] = (np.log(t[:, :4]) - _SIZE_REF) / _SIZE_SCALE
    z[:, 4] = (t[:, 4] - _PD_REF) / _PD_SCALE
    return z


def decode_targets(mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised mean/sd -> value (Å, fraction) and one-sigma uncertainty (same unit)."""
    val = np.empty_like(mu)
    unc = np.empty_like(sd)
    val[..., :4] = np.exp(mu[..., :4] * _SIZE_SCALE + _SIZE_REF)
    unc[..., :4] = val[..., :4] * sd[..., :4] * _SIZE_SCALE  # delta method on the log size
    val[..., 4] = np.clip(mu[..., 4] * _PD_SCALE + _PD_REF, 0.0, None)
    unc[..., 4] = sd[..., 4] * _PD_SCALE
    return val, unc


def represent(q: np.ndarray, I: np.ndarray) -> np.ndarray:
    """(2, len(GRID)) float32: normalised log10 I on GRID and the validity mask."""
    q = np.asarray(q, dtype=float)
    I = np.asarray(I, dtype=float)
    ok = (I > 0) & (q > 0) & np.isfinite(I) & np.isfinite(q)
    if not ok.all():
        q, I = q[ok], I[ok]
    out = np.zeros((2, GRID.size), dtype=np.float32)
    if q.size < 2:
        return out
    lq = np.log(q)
    lI = np.log10(I)
    if np.any(lq[1:] <= lq[:-1]):
        order = np.argsort(lq, kind="stable")
        lq, lI = lq[order], lI[order]
    v = np.interp(LOG_GRID, lq, lI)
    idx = np.searchsorted(lq, LOG_GRID)
    inside = (LOG_GRID >= lq[0]) & (LOG_GRID <= lq[-1])
    hi = np.clip(idx, 1, lq.size - 1)
    gap = lq[hi] - lq[hi - 1]
    valid = inside & (gap < MAX_GAP)
    if valid.sum() < 2:
        return out
    v = v - v[valid].mean()
    out[0] = np.where(valid, v, 0.0)
    out[1] = valid
    return out


def estimate_sigma(q: np.ndarray, I: np.ndarray, window: int = 15) -> np.ndarray:
    """One-sigma errors of I(q) (same unit) estimated from the curve's own roughness, for files without a
    sigma column: the scatter of each positive point's ln I about the line through its neighbours (in ln q),
    1.4826 × the median absolute value over `window` points, scaled to white noise; where that relative
    error exceeds 0.2 (I near the noise floor or <= 0, where ln I is not Gaussian) the same estimate on I
    itself when larger. On the held-out generator's curves the estimate is 0.84-1.29 times the true error
    (5-95 %), median 1.03."""
    from scipy.ndimage import median_filter

    q = np.asarray(q, float)
    I = np.asarray(I, float)
    out = np.full(q.shape, np.nan)
    order = np.argsort(q, kind="stable")
    qs, Is = q[order], I[order]
    pos = Is > 0
    if pos.sum() < 3:
        return out
    half = window // 2

    def local_scale(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # per point, ends repeated
        w = (x[1:-1] - x[:-2]) / np.maximum(x[2:] - x[:-2], 1e-300)
        d = np.abs(y[1:-1] - ((1 - w) * y[:-2] + w * y[2:])) / np.sqrt(1 + (1 - w) ** 2 + w ** 2)
        m = 1.4826 * median_filter(d, size=2 * half + 1, mode="nearest")  # the running median, ends repeated
        return np.concatenate([m[:1], m, m[-1:]])

    rel = np.minimum(local_scale(np.log(qs[pos]), np.log(Is[pos])), 1.0)
    est = np.interp(qs, qs[pos], rel * Is[pos])
    noisy = np.interp(qs, qs[pos], rel) > 0.2
    if noisy.any():
        est = np.where(noisy, np.maximum(est, local_scale(qs, Is)), est)
    out[order] = est
    return out


def _low_q_relative_errors(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None) -> np.ndarray | None:
    """sigma/I over the positive points in the lower half (in ln q) of the curve, where the shape
    information is; without sigma, of the errors `estimate_sigma` reads from the curve. None when
    fewer than 2 (or, without sigma, 3) points allow it."""
    if sigma is None:
        if np.asarray(q).size < 3:
            return None
        sigma = estimate_sigma(q, I)
    q, I, sigma = (np.asarray(a, float) for a in (q, I, sigma))
    ok = (I > 0) & (q > 0) & np.isfinite(sigma) & np.isfinite(I)
    if ok.sum() < 2:
        return None
    lq = np.log(q[ok])
    low = lq <= np.median(lq)
    return sigma[ok][low] / I[ok][low]


def noise_levels(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None) -> tuple[float, float]:
    """(`noise_level`, `informative_noise`) of a curve from one pass (without sigma, estimating it is the cost)."""
    r = _low_q_relative_errors(q, I, sigma)
    return (math.nan, math.nan) if r is None else (float(np.median(r)), float(np.percentile(r, 25)))


def noise_level(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None) -> float:
    """Median relative error sigma/I over the lower half (in ln q) of the curve (_low_q_relative_errors)."""
    return noise_levels(q, I, sigma)[0]


def informative_noise(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None) -> float:
    """Relative error sigma/I where a curve carries its shape information: the lower quartile over the
    lower half (in ln q) of the curve (_low_q_relative_errors). Unlike `noise_level` (the median) it does
    not grow with an absolute error floor (sigma >= a fraction of I_max, as reduced data carry) that only
    swamps the weak points of a steep curve: with sigma = r I + f I_max it stays near r while at least a
    quarter of those points lie well above f I_max; uniformly noisy data and low counts (whose best points
    are noisy too) still show."""
    return noise_levels(q, I, sigma)[1]


def median_dq_over_q(q: np.ndarray, dq: np.ndarray | None) -> float | None:
    """Median relative resolution dq/q of a curve (0.0 when no ratio is finite); None without dq."""
    if dq is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(dq, float) / np.asarray(q, float)
    r = r[np.isfinite(r)]
    return float(np.median(r)) if r.size else 0.0


def represent_batch(q_list: Sequence[np.ndarray], I_list: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([represent(q, I) for q, I in zip(q_list, I_list)]) if len(q_list) else np.zeros((0, 2, GRID.size), np.float32)


# ----- the network -----------------------------------------------------------------------------------


def build_net(widths: Sequence[int] = (24, 32, 48, 64), hidden: int = 192, n_classes: int = len(CLASSES), n_targets: int = len(TARGETS)):
    """The 1-D CNN (torch imported here: it is slow to import)."""
    import torch
    from torch import nn

    class SasNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv1d(2, widths[0], 7, padding=3), nn.BatchNorm1d(widths[0]), nn.GELU()]
            prev = widths[0]
            for w in widths:
                layers += [nn.Conv1d(prev, w, 5, stride=2, padding=2), nn.BatchNorm1d(w), nn.GELU()]
                prev = w
            self.features = nn.Sequential(*layers)
            n_flat = prev * (GRID.size // 2 ** len(widths))
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, hidden), nn.GELU())
            self.drop = nn.Dropout(0.1)
            self.cls = nn.Linear(hidden, n_classes)
            self.reg = nn.Linear(hidden, n_classes * n_targets * 2)
            self.n_classes, self.n_targets = n_classes, n_targets

        def forward(self, x: "torch.Tensor"):
            h = self.embed(self.features(x))
            hd = self.drop(h)
            reg = self.reg(hd).view(-1, self.n_classes, self.n_targets, 2)
            return self.cls(hd), reg[..., 0], reg[..., 1].clamp(-12.0, 6.0), h

    return SasNet()


class SasModel:
    """The loaded network plus its calibration (temperature, sd scales, Mahalanobis statistics)."""

    def __init__(self, nets, meta: dict[str, Any], maha_mean, maha_prec, ood_cdf) -> None:
        self.nets = [n.eval() for n in (nets if isinstance(nets, (list, tuple)) else [nets])]
        self.meta = meta
        self.temperature = float(meta.get("temperature", 1.0))
        self.sd_scale = np.asarray(meta.get("sd_scale", [1.0] * len(TARGETS)), dtype=float)
        self.maha_mean = maha_mean  # (n_in_library_classes, H) torch
        self.maha_prec = maha_prec  # (H, H) torch
        self.ood_cdf = np.asarray(ood_cdf, dtype=float)  # sorted validation distances
        self.threshold = float(meta.get("ood_threshold", 0.99))
        self._whiten = None

    @classmethod
    def load(cls, path: str | Path = WEIGHTS) -> "SasModel":
        import torch

        p = Path(path)
        if not p.is_file():
            raise AnalysisError(f"SAS ML weights not found at {p}; train them with `sdl train saxs --out {p}`")
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file
            raise AnalysisError(f"cannot load SAS ML weights {p}: {exc}") from None
        meta = blob["meta"]
        nets = []
        for sd in blob.get("state_dicts") or [blob["state_dict"]]:
            net = build_net(tuple(meta["widths"]), int(meta["hidden"]))
            net.load_state_dict(sd)
            nets.append(net)
        return cls(nets, meta, blob["maha_mean"], blob["maha_prec"], blob["ood_cdf"].numpy())

    def save(self, path: str | Path) -> Path:
        import torch

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dicts": [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in self.nets],
                    "meta": self.meta, "maha_mean": self.maha_mean.float(), "maha_prec": self.maha_prec.float(),
                    "ood_cdf": torch.tensor(self.ood_cdf, dtype=torch.float32)}, p)
        return p

    # ---------------------------------------------------------------------------------------------
    def forward(self, xt):
        """Ensemble outputs for a tensor batch: mean logits, mean of the means, mixture log-variance
        (mean variance + variance of the members' means), concatenated embeddings."""
        import torch

        outs = [n(xt) for n in self.nets]
        if len(outs) == 1:
            return outs[0]
        lo = torch.stack([o[0] for o in outs]).mean(0)
        mus = torch.stack([o[1] for o in outs])
        var = torch.stack([o[2].exp() for o in outs]).mean(0) + mus.var(0, unbiased=False)
        return lo, mus.mean(0), var.log(), torch.cat([o[3] for o in outs], dim=1)

    def raw(self, x: np.ndarray, batch: int = 1024) -> dict[str, np.ndarray]:
        """Uncalibrated network outputs for represented curves x (n, 2, G)."""
        import torch

        logits, mu, logvar, emb = [], [], [], []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                lo, m, lv, h = self.forward(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))
                logits.append(lo.numpy()); mu.append(m.numpy()); logvar.append(lv.numpy()); emb.append(h)
        if not logits:
            z = np.zeros((0,))
            return {"logits": z, "mu": z, "logvar": z, "dist": z}
        emb_t = torch.cat(emb)
        return {"logits": np.concatenate(logits), "mu": np.concatenate(mu), "logvar": np.concatenate(logvar),
                "dist": self.mahalanobis(emb_t)}

    def mahalanobis(self, emb) -> np.ndarray:
        """Distance of each embedding to the nearest in-library class mean (shared covariance)."""
        if self._whiten is None:
            self._whiten = whitening(self.maha_prec, self.maha_mean)
        return nearest_class_distance(emb, self._whiten)

    def calibrated(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lo = raw["logits"] / self.temperature
        lo = lo - lo.max(axis=1, keepdims=True)
        p = np.exp(lo)
        p /= p.sum(axis=1, keepdims=True)
        cdf = np.searchsorted(self.ood_cdf, raw["dist"], side="right") / max(len(self.ood_cdf), 1)
        ood_score = np.maximum(p[:, CLASSES.index("other")], cdf)
        sd = np.exp(0.5 * raw["logvar"]) * self.sd_scale[None, None, :]
        return {"probabilities": p, "ood_score": ood_score, "distance_cdf": cdf, "mu": raw["mu"], "sd": sd}


# ----- refinement ----------------------------------------------------------------------------------

# refined parameters per class: (target name or extra, transform)
_REFINE = {
    "sphere": ("radius",),
    "core_shell_sphere": ("radius", "shell"),
    "ellipsoid": ("radius", "polar_radius"),
    "cylinder": ("radius", "length"),
    "disc": ("radius", "length"),
    "core_shell_cylinder": ("radius", "shell", "length"),
}
# upper bound of the refined Schulz polydispersity: spheres up to 0.6, beyond the trained 0.35, so that a broad
# distribution of spheres is fitted as one (and flagged beyond_training) rather than imitated by an ellipsoid
FIT_PD_MAX = {"sphere": 0.6, "default": 0.35}
# least_squares' ftol and xtol: a fit stops once χ² falls by less than 1e-5 of itself (~0.003 on 300 points, far
# below the ΔBIC ~ 1 that the contests read) or its parameters move by less than 1e-5 relative. scipy's 1e-8 took
# 60 % more evaluations on 21 held-out curves for the same answers (sizes within 0.2 %; 25 % of the CPU saved)
FIT_TOL = 1e-5
CORE_CONTRASTS = (-0.5, 0.0, 0.2, 3.0)  # core SLD / shell SLD (solvent 0) tried before refining; 0: hollow
# structure factors (D.STRUCTURE_FACTORS) refined on D.SF_CLASSES: fitted sasmodels parameters as
# (name, lower, upper, fitted in ln), the starting values tried, the fixed ones (Hayter-Penfold: 1 mM
# salt in water at 298 K); radius_effective is the particle's outer radius
SF_FIT: dict[str, tuple[tuple[str, float, float, bool], ...]] = {
    "hard_sphere": (("volfraction", 0.0, 0.6, False),),
    "charged": (("volfraction", 0.001, 0.5, False), ("charge", 1.0, 200.0, True)),
}
SF_FIXED: dict[str, dict[str, float]] = {
    "hard_sphere": {}, "charged": {"temperature": 298.0, "concentration_salt": 1e-3, "dielectconst": 78.0}}
SF_MARGIN = 10.0  # ΔBIC each added parameter must earn before a structure factor is preferred
MISFIT_CHI2 = 4.0  # chosen fit's χ²_red (against the file's own errors) above which saxs.model is low_confidence
# the same bound for files without errors, on χ² against the noise estimated from the residual's roughness
# (`roughness_chi2`), which a structured misfit inflates and plain noise does not
MISFIT_ROUGHNESS_CHI2 = 4.0
# the best of the CNN's candidates misfitting by more than this (χ²_red, or the roughness χ² without errors; a fit
# with χ²_red 2 on 100 points is rejected at p < 1e-9) has the other library shapes refined too
RETRY_CHI2 = 2.0
# the nested alternative of each shape (a core-shell particle with the core matching the shell is the plain
# one): refined too, started from the chosen fit, so a shell the CNN missed or invented shows in the fits
NESTED = {"sphere": "core_shell_sphere", "core_shell_sphere": "sphere", "cylinder": "core_shell_cylinder",
          "core_shell_cylinder": "cylinder"}
# core SLD / shell SLD of the shell-split starts (`nested_starts`): a dense and a hollow core, and a core a little
# unlike its shell, from which a weak shell the plain fit hides is reached (from the first two only a far minimum is)
NESTED_CORE_CONTRASTS = (3.0, 0.0, 0.6, 1.0, 1.5)
FIT_DISAGREE_BIC = 10.0  # another refined shape fits better than the chosen one by this ΔBIC: low_confidence
# info keys whose presence makes saxs.model low_confidence (besides a top probability below LOW_CONFIDENCE)
# "overruled": the fits' arbitration chose another shape than the CNN's top one; the two sources of evidence
# disagree, and on the calibration set (sdl's own generator) such answers were right for 6 of 11 in-range curves
LOW_CONFIDENCE_REASONS = ("data_quality", "misfit", "fit_disagrees", "beyond_training", "ambiguous", "overruled")
# training ranges of the refined parameters (simulators.saxs.dataset.sample_params), with 15 % tolerance
# on ratios and 0.05 on polydispersity: a chosen fit beyond them is an extrapolation of the classifier
TRAINED_PD_MAX = {"sphere": 0.35, "core_shell_sphere": 0.15, "ellipsoid": 0.3, "cylinder": 0.25, "disc": 0.25,
                  "core_shell_cylinder": 0.15}
TRAINED_RATIO = {  # (name, function of the refined values, lower, upper)
    "core_shell_sphere": ("shell fraction", lambda t: t["shell"] / (t["radius"] + t["shell"]), 0.15, 0.5),
    "ellipsoid": ("axial ratio", lambda t: max(t["polar_radius"], t["radius"]) / min(t["polar_radius"], t["radius"]), 2.0, 12.0),
    "cylinder": ("length/diameter", lambda t: t["length"] / (2 * t["radius"]), 3.0, 100.0),
    "disc": ("diameter/length", lambda t: 2 * t["radius"] / t["length"], 3.0, 60.0),
    "core_shell_cylinder": ("length/outer diameter", lambda t: t["length"] / (2 * (t["radius"] + t["shell"])), 3.0, 60.0),
}
TRAINED_SHELL_FRACTION = (0.15, 0.5)  # shell / outer radius, both core-shell classes
# core SLD / shell SLD (solvent 0) trained: [-1, 0.3] and [2.5, 4] (0: hollow); in the gap between, core and
# shell are too alike for the shell to show, so the plain shape is the answer there
TRAINED_CORE_CONTRAST = ((-1.0, 0.3), (2.5, 4.0))
RATIO_TOL, PD_TOL, CONTRAST_TOL = 1.15, 0.05, 0.15
UPTURN_EXPONENTS = (3.0, 4.0)  # low-q power laws (aggregates) the refinement may add, amplitudes >= 0
_BAD = 1e6  # residual of a point where sasmodels' S(q) has no solution (NaN or S <= 0)


def _sf_starts(kind: str, r_out: float) -> list[tuple[float, ...]]:
    """Starting values (natural units) of SF_FIT[kind] for particles of outer radius r_out (Å)."""
    if kind == "hard_sphere":
        return [(0.1,), (0.3,)]
    c0 = min(20.0 * (r_out / 25.0) ** 1.5, 200.0)  # the training generator's typical charge (e)
    return [(phi, float(np.clip(c0 * f, 1.0, 200.0))) for phi in (0.03, 0.1, 0.3) for f in (0.3, 1.0, 3.0)]


class _Resolution:
    """Where a fit computes the model (`q_calc`, Å⁻¹) and how it smears it onto the data's q.

    With the file's dQ (one standard deviation per point) this is sasmodels' Pinhole1D on the data's own q, as SasView
    and the simulated lab's instrument compute it; the dQ is fixed and `dq_over_q` (the median, reported) is ignored
    by `__call__`. Without dQ the model is computed on a fine log grid around the window and smeared with a fitted
    Gaussian dq/q (the training generator's smearing)."""

    def __init__(self, q: np.ndarray, dq: np.ndarray | None) -> None:
        self.q = q
        self.dq_over_q = median_dq_over_q(q, dq)
        if dq is None:
            lo, hi = q.min(), q.max()
            n_fine = int(np.clip(70 * math.log10(hi * 1.35 / (lo / 1.35)), 60, 260))
            self.q_calc = np.logspace(math.log10(lo / 1.35), math.log10(hi * 1.35), n_fine)
            self._pinhole = None
        else:
            from sasmodels.resolution import Pinhole1D

            dq = np.asarray(dq, float)
            self._order = np.argsort(q, kind="stable")  # sasmodels extends the grid from its first and last points
            self._pinhole = Pinhole1D(q[self._order], np.where(np.isfinite(dq) & (dq > 0), dq, 0.0)[self._order])
            self.q_calc = self._pinhole.q_calc

    def __call__(self, I_calc: np.ndarray, dq_over_q: float | None) -> np.ndarray:
        """The model I (given on q_calc) at the data's q; `dq_over_q` is the fitted resolution when no dQ is given."""
        if self._pinhole is None:
            return D.smear(self.q_calc, I_calc, self.q, float(dq_over_q))
        out = np.empty(self.q.size)
        out[self._order] = self._pinhole.apply(I_calc)
        return out


def _fit_setup(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, dq: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Resolution, np.ndarray]:
    """What every least-squares fit of a curve shares: q, I as float arrays, the weights' sigma (the file's, with a
    0.5 % floor, or from the curve's roughness), the resolution (`_Resolution`: the file's dQ, or a dq/q to fit
    when its `dq_over_q` is None), and the linear terms fitted with non-negative coefficients beside the model (flat
    and sloped background, a low-q upturn A q^-m of aggregates, m between 3 and 4 as two columns)."""
    q = np.asarray(q, float)
    I = np.asarray(I, float)
    if sigma is None:  # errors from the curve's roughness
        sigma = estimate_sigma(q, I)
        sigma = np.where(np.isfinite(sigma), sigma, 0.02 * np.abs(I))
    sig = np.maximum(np.asarray(sigma, float), 0.005 * np.abs(I))
    sig = np.where(sig > 0, sig, np.max(sig[sig > 0]) if np.any(sig > 0) else 1.0)
    lo, hi = q.min(), q.max()
    basis_extra = np.stack([np.ones_like(q), q / hi, -q / hi, *((lo / q) ** m for m in UPTURN_EXPONENTS)], axis=1)
    return q, I, sig, _Resolution(q, dq), basis_extra


def refine(cls: str, q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, dq: np.ndarray | None,
           start: dict[str, float] | Sequence[dict[str, float]], max_nfev: int = 60, structure: bool = True) -> dict[str, Any]:
    """Least-squares refinement of class `cls`'s sasmodels model on (q Å⁻¹, I), started at `start` (Å), or at
    the best (one evaluation each) of several starts; sizes are bounded to a factor 3 around the starts. A
    start may carry "sld_core" (core-shell: core SLD / shell SLD), tried besides CORE_CONTRASTS.

    For D.SF_CLASSES (when `structure`) the model is also refined times each structure factor of
    SF_FIT (decoupling approximation: S(q) of the outer radius multiplies the form factor before
    smearing), and one of {none, hard_sphere, charged} is chosen by BIC = χ²/ĉ + k ln n (ĉ: the best
    fit's χ²_red when above 1), each added parameter having to lower it by SF_MARGIN;
    "structure_probabilities" are BIC weights with that margin as a prior penalty.

    Returns {"values": {target: Å or fraction}, "uncertainty": {...}, "fit": I_model(q), "chi2_red",
    "nfev", "success", "sld_core" and "sld_core_uncertainty" (core-shell: core SLD / shell SLD, solvent 0),
    "dq_over_q", "dq_fitted", "scale", "structure_factor" ("none" or a SF_FIT kind; None when not tried),
    "structure_probabilities", "volfraction" and "volfraction_uncertainty" (None without S(q)), "charge" (e),
    "structure" ({kind: {"chi2_red", "bic", "delta_bic" (vs the chosen), "volfraction", "charge"}}),
    "at_bound" (refined parameters that ended on a bound of the fit: a size at ×3 from the starts, or
    the polydispersity at its FIT_PD_MAX cap)}.
    """
    from scipy.optimize import least_squares, nnls

    q, I, sig, res_q, basis_extra = _fit_setup(q, I, sigma, dq)
    dqq_meas = res_q.dq_over_q
    kernel = D.curve_function(SASMODEL[cls], res_q.q_calc)
    qmax = float(np.max(res_q.q_calc))
    sf_curve = {k: D.curve_function(D.STRUCTURE_FACTORS[k], res_q.q_calc) for k in SF_FIT} if structure and cls in D.SF_CLASSES else {}
    names = list(_REFINE[cls])
    core_shell = cls.startswith("core_shell")
    fit_dq = dqq_meas is None
    n_shape = len(names) + 1 + core_shell + fit_dq  # x = [ln sizes, pd, (core SLD), (dq/q), (S(q) parameters)]

    def unpack(x: np.ndarray) -> tuple[dict[str, float], float, float]:
        t = {n: float(math.exp(x[i])) for i, n in enumerate(names)}
        t["polydispersity"] = float(x[len(names)])
        k = len(names) + 1
        sld = float(x[k]) if core_shell else 3.0
        k += core_shell
        dqq = float(x[k]) if fit_dq else dqq_meas
        return t, sld, dqq

    def sf_params(kind: str, x: np.ndarray, t: dict[str, float]) -> dict[str, float]:
        p = dict(SF_FIXED[kind], radius_effective=t["radius"] + t.get("shell", 0.0))
        for (name, _, _, log), v in zip(SF_FIT[kind], x[n_shape:]):
            p[name] = math.exp(v) if log else float(v)
        return p

    def quad(x: np.ndarray) -> int | None:  # size-average radii converged at x over the computed q range
        t, sld, _ = unpack(x)
        return D.quadrature(*D.class_params(cls, t, {"sld_core": sld}), qmax)

    def curve(x: np.ndarray, kind: str | None, pd_n: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        t, sld, dqq = unpack(x)
        _, params = D.class_params(cls, t, {"sld_core": sld})
        P = np.maximum(kernel(params, pd_n), 1e-300)
        if kind is not None:
            S = sf_curve[kind](sf_params(kind, x, t))
            if not (np.all(np.isfinite(S)) and S.min() > 0):
                return None
            P = P * S
        A = np.column_stack([res_q(P, dqq), basis_extra]) / sig[:, None]
        coef, _ = nnls(A, I / sig)
        return A @ coef * sig, coef

    def resid(x: np.ndarray, kind: str | None, pd_n: int | None) -> np.ndarray:
        c = curve(x, kind, pd_n)
        return np.full(q.size, _BAD) if c is None else (c[0] - I) / sig

    def chi2_at(x: np.ndarray, kind: str | None) -> float:  # with the size average converged at x
        return float(np.sum(resid(x, kind, quad(x)) ** 2))

    def best(starts: list[np.ndarray], kind: str | None) -> np.ndarray:  # cheap: one evaluation each
        return min(starts, key=lambda x: chi2_at(x, kind))

    def fit(x0: np.ndarray, lb: np.ndarray, ub: np.ndarray, kind: str | None) -> dict[str, Any] | None:
        # the size quadrature is fixed while least_squares runs (a pd_n that follows x steps χ²); where the result
        # needs more radii than its start gave, the fit goes on from there with them
        x0, nfev, pd_n = np.clip(x0, lb + 1e-9, ub - 1e-9), 0, quad(x0)
        for _ in range(3):
            res = least_squares(resid, x0, bounds=(lb, ub), x_scale="jac", diff_step=1e-3, ftol=FIT_TOL, xtol=FIT_TOL,
                                max_nfev=max_nfev, args=(kind, pd_n))
            nfev += int(res.nfev)
            need = quad(res.x)
            if pd_n is None or need is None or need <= pd_n:
                break
            x0, pd_n = res.x, need
        res.nfev = nfev
        c = curve(res.x, kind, pd_n)
        if c is None:
            return None
        chi2 = float(np.sum(res.fun ** 2))
        k = len(res.x) + 1 + basis_extra.shape[1]  # + scale and the linear background/upturn
        chi2_red = chi2 / max(q.size - k, 1)
        try:
            cov = np.linalg.pinv(res.jac.T @ res.jac) * max(chi2_red, 1.0)
            sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        except (np.linalg.LinAlgError, ValueError):
            sd = np.full(len(res.x), np.nan)
        return {"res": res, "fit": c[0], "coef": c[1], "chi2": chi2, "k": k, "chi2_red": chi2_red, "sd": sd}

    start_list = [start] if isinstance(start, dict) else list(start)
    pd_max = FIT_PD_MAX.get(cls, FIT_PD_MAX["default"])
    xs = [[math.log(max(st[n], 1.0)) for n in names] + [float(np.clip(st.get("polydispersity", 0.05), 0.0, min(pd_max - 0.01, 0.34)))]
          for st in start_list]
    x_ml = xs[0]
    # polydispersity from 0.005: below it sasmodels is monodisperse (D._sasmodels_pars), a flat trap for the fit
    lb = [min(x[i] for x in xs) - math.log(3.0) for i in range(len(names))] + [0.005]
    ub = [max(x[i] for x in xs) + math.log(3.0) for i in range(len(names))] + [pd_max]
    if core_shell:
        lb += [-1.5]; ub += [5.0]
    if fit_dq:
        lb += [0.0]; ub += [0.15]
    dq0 = [0.03] if fit_dq else []
    if core_shell:
        starts = [np.array(x + [c] + dq0) for x, st in zip(xs, start_list)
                  for c in (*CORE_CONTRASTS, *([float(np.clip(st["sld_core"], -1.5, 5.0))] if "sld_core" in st else []))]
    else:
        starts = [np.array(x + dq0) for x in xs]
    x0 = best(starts, None)  # core-shell: pick the core contrast by trying a few (cheap) before refining
    fits = {"none": fit(x0, np.array(lb), np.array(ub), None)}
    for kind, spec in SF_FIT.items() if sf_curve else ():
        r_out = math.exp(x0[0]) + (math.exp(x0[1]) if core_shell else 0.0)
        enc = [tuple(math.log(v) if log else v for v, (_, _, _, log) in zip(s, spec)) for s in _sf_starts(kind, r_out)]
        shapes = (x0, fits["none"]["res"].x)  # the ML start and the plain fit
        x = best([np.concatenate([shape, e]) for shape in shapes for e in enc], kind)
        slb = [math.log(a) if log else a for _, a, _, log in spec]
        sub = [math.log(b) if log else b for _, _, b, log in spec]
        f = fit(x, np.array(lb + slb), np.array(ub + sub), kind)
        if f is not None:
            fits[kind] = f
    for g in [g for k, g in fits.items() if k != "none"]:  # S = 1 is inside each S(q) fit: the plain one must not be worse
        if chi2_at(g["res"].x[:n_shape], None) < fits["none"]["chi2"]:
            f = fit(g["res"].x[:n_shape], np.array(lb), np.array(ub), None)
            fits["none"] = min(fits["none"], f, key=lambda h: h["chi2"])
    # BIC on χ²/ĉ, ĉ = the best fit's χ²_red when above 1 (quasi-likelihood: a misfit inflates χ² differences)
    c_hat = max(1.0, min(g["chi2_red"] for g in fits.values()))
    bic = {k: g["chi2"] / c_hat + g["k"] * math.log(q.size) for k, g in fits.items()}
    score = {k: bic[k] + SF_MARGIN * (g["k"] - fits["none"]["k"]) for k, g in fits.items()}
    chosen = min(score, key=score.get)
    w = {k: math.exp(-0.5 * (s - score[chosen])) for k, s in score.items()}
    f = fits[chosen]
    x, sd = f["res"].x, f["sd"]
    t, sld, dqq = unpack(x)
    unc = {n: t[n] * float(sd[i]) for i, n in enumerate(names)}
    unc["polydispersity"] = float(sd[len(names)])
    at_bound = [n for i, n in enumerate(names) if min(x[i] - lb[i], ub[i] - x[i]) < 1e-3]
    at_bound += ["polydispersity"] if ub[len(names)] - x[len(names)] < 1e-3 else []
    sfp = {k: sf_params(k, g["res"].x, unpack(g["res"].x)[0]) if k != "none" else {} for k, g in fits.items()}
    return {
        "values": t, "uncertainty": unc, "fit": f["fit"], "chi2_red": f["chi2_red"], "n_params": f["k"], "at_bound": at_bound,
        "nfev": sum(int(g["res"].nfev) for g in fits.values()),  # all the models' fits
        "success": bool(f["res"].success), "sld_core": sld if core_shell else None,
        "sld_core_uncertainty": float(sd[len(names) + 1]) if core_shell else None,
        "dq_over_q": dqq, "dq_fitted": fit_dq, "scale": float(f["coef"][0]),
        "structure_factor": chosen if sf_curve else None,
        "structure_probabilities": {k: w.get(k, 0.0) / sum(w.values()) for k in ("none", *SF_FIT)} if sf_curve else None,
        "volfraction": sfp[chosen].get("volfraction"), "charge": sfp[chosen].get("charge"),
        "volfraction_uncertainty": float(sd[n_shape]) if chosen != "none" else None,
        "structure": {k: {"chi2_red": g["chi2_red"], "bic": bic[k], "delta_bic": bic[k] - bic[chosen],
                          "volfraction": sfp[k].get("volfraction"), "charge": sfp[k].get("charge")}
                      for k, g in fits.items()} if sf_curve else None,
    }


# what an "other" answer is measured against: the training's "other" families with one shape parameter (sasmodels
# model: parameter, fitted in ln, fixed parameters). A sheet (lamellar) is a disc wider than the window; a coil, a
# Debye-Anderson-Brumberger two-phase medium and a power law have a Guinier knee or a slope a solid shape can mimic
SHEET = "lamellar"  # the reference whose best fit lets a library shape that beats it take an "other" answer
OTHER_REFERENCES: dict[str, tuple[str, bool, dict[str, float]]] = {
    SHEET: ("thickness", True, {"sld": 1.0, "sld_solvent": 0.0}),
    "mono_gauss_coil": ("rg", True, {"i_zero": 1.0}),
    "dab": ("cor_length", True, {}),
    "power_law": ("power", False, {}),
}


# how `flag_reasons` names each OTHER_REFERENCES model
REFERENCE_WORDS = {SHEET: "a sheet (lamellar)", "mono_gauss_coil": "a Gaussian coil",
                   "dab": "a two-phase medium (Debye-Anderson-Brumberger)", "power_law": "a power law"}


def refine_other(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, dq: np.ndarray | None,
                 max_nfev: int = 40) -> dict[str, Any]:
    """The best least-squares fit (by χ²) of the OTHER_REFERENCES models on (q Å⁻¹, I), each with the background,
    upturn and resolution terms a `refine` fit has, so that BICs compare: what "other" explains of the curve.
    Returns a `refine`-like result ({"model": sasmodels name, "values": {parameter: Å or exponent}, "fit",
    "chi2_red", "n_params", "nfev", ...}; no polydispersity, core or structure factor)."""
    from scipy.optimize import least_squares, nnls

    q, I, sig, res_q, basis_extra = _fit_setup(q, I, sigma, dq)
    dqq_meas = res_q.dq_over_q
    fit_dq = dqq_meas is None
    lo, hi = float(q.min()), float(q.max())
    best: dict[str, Any] | None = None
    nfev = 0
    for model, (name, log, fixed) in OTHER_REFERENCES.items():
        kernel = D.curve_function(model, res_q.q_calc)
        if log:  # a length from a fraction of the window's smallest to beyond its largest
            lb, ub = math.log(0.3 / hi), math.log(30.0 / lo)
            starts = np.linspace(math.log(1.0 / hi), math.log(3.0 / lo), 6)
        else:
            lb, ub, starts = 0.5, 6.0, np.array([1.5, 2.0, 2.5, 3.0, 3.5, 4.0])

        def curve(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            P = np.maximum(kernel({**fixed, name: math.exp(x[0]) if log else float(x[0])}), 1e-300)
            A = np.column_stack([res_q(P, float(x[1]) if fit_dq else None), basis_extra]) / sig[:, None]
            coef, _ = nnls(A, I / sig)
            return A @ coef * sig, coef

        def resid(x: np.ndarray) -> np.ndarray:
            r = (curve(x)[0] - I) / sig
            return np.where(np.isfinite(r), r, _BAD)

        xs = [np.array([x0, 0.03] if fit_dq else [x0]) for x0 in starts]
        x0 = min(xs, key=lambda x: float(np.sum(resid(x) ** 2)))
        bounds = ([lb, 0.0], [ub, 0.15]) if fit_dq else ([lb], [ub])
        res = least_squares(resid, x0, bounds=bounds, x_scale="jac", diff_step=1e-3, max_nfev=max_nfev)
        nfev += int(res.nfev)
        k = len(res.x) + 1 + basis_extra.shape[1]  # + scale and the linear background/upturn, as `refine` counts
        chi2 = float(np.sum(res.fun ** 2))
        if best is not None and chi2 >= best["chi2"]:
            continue
        fit, coef = curve(res.x)
        value = math.exp(res.x[0]) if log else float(res.x[0])
        best = {"model": model, "values": {name: value}, "uncertainty": {}, "fit": fit, "chi2": chi2,
                "chi2_red": chi2 / max(q.size - k, 1), "n_params": k, "at_bound": [], "success": bool(res.success),
                "sld_core": None, "sld_core_uncertainty": None, "scale": float(coef[0]), "structure_factor": None,
                "dq_over_q": float(res.x[1]) if fit_dq else dqq_meas, "dq_fitted": fit_dq}
    assert best is not None
    return {**best, "nfev": nfev}


def arbitrate(p: np.ndarray, fits: dict[str, dict[str, Any]], n: int) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Class probabilities `p` (CNN, calibrated) reweighed by the refined fits of the candidate classes
    in `fits` (`refine` results on `n` points): within the candidates' total probability, each gets
    p_c exp(-BIC_c / 2) with BIC_c = χ²_c/ĉ + k_c ln n (ĉ: the best χ²_red when above 1, so an
    imperfect model does not turn small χ² differences into certainty); the other classes keep theirs.
    The CNN decides where the curves differ little; a clearly better fit overrules it.
    Returns the new probabilities and {class: {"chi2_red", "bic"}}."""
    c_hat = max(1.0, min(f["chi2_red"] for f in fits.values()))
    bic = {c: f["chi2_red"] * max(n - f["n_params"], 1) / c_hat + f["n_params"] * math.log(n) for c, f in fits.items()}
    idx = {c: CLASSES.index(c) for c in fits}
    score = {c: bic[c] - 2.0 * math.log(max(float(p[i]), 1e-12)) for c, i in idx.items()}
    best = min(score.values())
    w = {c: math.exp(-0.5 * (s - best)) for c, s in score.items()}
    mass = sum(float(p[i]) for i in idx.values())
    out = np.array(p, dtype=float)
    for c, i in idx.items():
        out[i] = mass * w[c] / sum(w.values())
    return out, {c: {"chi2_red": float(fits[c]["chi2_red"]), "bic": float(bic[c])} for c in fits}


def fit_summary(f: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one `refine` result that say what the fit is (info["fits"]): χ²_red, parameter count,
    refined values (Å, fraction) with their one-sigma uncertainties, core contrast (core-shell)."""
    return {"chi2_red": float(f["chi2_red"]), "n_params": int(f["n_params"]),
            "values": {k: float(v) for k, v in f["values"].items()},
            "uncertainty": {k: float(v) for k, v in f["uncertainty"].items()},
            "sld_core": f["sld_core"], "sld_core_uncertainty": f["sld_core_uncertainty"]}


def nested_starts(cls: str, fitted: dict[str, Any]) -> list[dict[str, float]]:
    """Starting values (Å) for NESTED[cls] from `fitted`, a `refine` result of `cls`: a sphere's radius
    split into core + shell (10, 20 and 35 % shell, each core contrast of NESTED_CORE_CONTRASTS), a core-shell particle's core or
    outer radius as the plain one's; lengths and polydispersity carried over."""
    t = fitted["values"]
    pd = {"polydispersity": t["polydispersity"]}
    length = {"length": t["length"]} if "length" in t else {}
    if cls in ("sphere", "cylinder"):
        return [dict(radius=t["radius"] * (1 - f), shell=t["radius"] * f, sld_core=c, **pd, **length)
                for f in (0.1, 0.2, 0.35) for c in NESTED_CORE_CONTRASTS]
    if cls in ("core_shell_sphere", "core_shell_cylinder"):
        return [dict(radius=r, **pd, **length) for r in (t["radius"] + t["shell"], t["radius"])]
    return []


# an ellipsoid (Rg² = (2 Re² + Rp²)/5) and a cylinder (Rg² = R²/2 + L²/12) alike in both terms of Rg²
ELLIPSOID_PER_CYLINDER = {"radius": math.sqrt(5 / 4), "polar_radius": math.sqrt(5 / 12)}  # Re / R, Rp / L


def partner_starts(cls: str, src: str, fitted: dict[str, Any]) -> list[dict[str, float]]:
    """Starting values (Å) for `cls` from `fitted`, a `refine` result of the shape `src`: `nested_starts` for a
    nested pair; an ellipsoid from a rod's or disc's radius and length and back (ELLIPSOID_PER_CYLINDER, the same
    Rg and axial ratio); none for other pairs. Polydispersity carried over."""
    if NESTED.get(src) == cls:
        return nested_starts(src, fitted)
    t = fitted["values"]
    pd = {"polydispersity": t["polydispersity"]}
    e = ELLIPSOID_PER_CYLINDER
    if cls == "ellipsoid" and src in ("cylinder", "disc"):
        return [dict(radius=t["radius"] * e["radius"], polar_radius=t["length"] * e["polar_radius"], **pd)]
    if src == "ellipsoid" and cls in ("cylinder", "disc"):
        return [dict(radius=t["radius"] / e["radius"], length=t["polar_radius"] / e["polar_radius"], **pd)]
    return []


def beyond_training(cls: str, values: dict[str, float], at_bound: Sequence[str] = (), core_contrast: float | None = None) -> list[str]:
    """Why the refined `values` (Å, fraction) of `cls` lie outside the training ranges (TRAINED_PD_MAX,
    TRAINED_RATIO, TRAINED_SHELL_FRACTION, TRAINED_CORE_CONTRAST for the refined `core_contrast`, with
    RATIO_TOL, PD_TOL and CONTRAST_TOL), or on a bound of the fit; empty when inside."""
    why = []
    if "shell" in values:
        f = values["shell"] / (values["radius"] + values["shell"])
        lo, hi = TRAINED_SHELL_FRACTION
        if not lo / RATIO_TOL <= f <= hi * RATIO_TOL and cls != "core_shell_sphere":  # core_shell_sphere: TRAINED_RATIO
            why.append(f"shell fraction {f:.3g} outside the trained {lo:g}-{hi:g}")
    if core_contrast is not None:
        (a, b), (c, d) = TRAINED_CORE_CONTRAST
        t = CONTRAST_TOL
        if not (a - t <= core_contrast <= b + t or c - t <= core_contrast <= d + t):
            why.append(f"core contrast {core_contrast:.2f} outside the trained {a:g} to {b:g} and {c:g} to {d:g}")
    pd = values.get("polydispersity")
    if pd is not None and pd > TRAINED_PD_MAX[cls] + PD_TOL:
        why.append(f"polydispersity {pd:.2f} > the trained {TRAINED_PD_MAX[cls]:.2f}")
    if cls in TRAINED_RATIO:
        name, fn, lo, hi = TRAINED_RATIO[cls]
        v = fn(values)
        if not lo / RATIO_TOL <= v <= hi * RATIO_TOL:
            why.append(f"{name} {v:.3g} outside the trained {lo:g}-{hi:g}")
    why += [f"{n} on the fit's bound" for n in at_bound if n != "length"]  # a long rod's length is often unbound
    return why


def fit_disagreement(cls: str, arbitration: dict[str, dict[str, float]], margin: float = FIT_DISAGREE_BIC) -> str | None:
    """Why the chosen `cls` is doubtful when another shape in `arbitration` (`arbitrate`'s {class: {"bic"}})
    fits better by more than `margin` in BIC (the CNN's prior kept `cls`); None when `cls` fits best or nearly."""
    bic = {c: a["bic"] for c, a in arbitration.items()}
    best = min(bic, key=bic.get)
    if cls not in bic or best == cls or bic[cls] - bic[best] <= margin:
        return None
    return f"{best} fits better than {cls} by ΔBIC {bic[cls] - bic[best]:.1f} (above {margin:g}); the CNN's probabilities kept {cls}"


def roughness_chi2(q: np.ndarray, I: np.ndarray, fit: np.ndarray, window: int = 15) -> float:
    """Mean squared residual (I - fit) in units of the noise estimated from the residual itself: the local
    scatter of its second differences (robust: 1.4826 × the median absolute value over `window` points
    around each; for white noise var(r_i - (r_{i-1}+r_{i+1})/2) = 1.5 σ²). A smooth, structured misfit
    survives in the residual but hardly in its second differences, so it shows as a value well above 1
    even when the file gives no errors; noise alone gives about 1. NaN with fewer than 2 windows of points."""
    q, I, fit = (np.asarray(a, float) for a in (q, I, fit))
    ok = np.isfinite(I) & np.isfinite(fit)
    order = np.argsort(q[ok], kind="stable")
    r = (I[ok] - fit[ok])[order]
    if r.size < 2 * window + 2:
        return float("nan")
    d = np.abs(r[1:-1] - 0.5 * (r[:-2] + r[2:]))
    half = window // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(d, half, mode="edge"), 2 * half + 1)
    sd = 1.4826 * np.median(windows, axis=1) / math.sqrt(1.5)
    sd = np.maximum(sd, 1e-6 * float(np.max(sd)) + 1e-300)
    return float(np.mean((r[1:-1] / sd) ** 2))


def misfit_chi2(q: np.ndarray, I: np.ndarray, sigma: np.ndarray | None, f: dict[str, Any]) -> float:
    """How badly the `refine` result `f` misfits: its χ²_red against the file's errors, or without them its
    `roughness_chi2` (NaN when too few points)."""
    return float(f["chi2_red"]) if sigma is not None else roughness_chi2(q, I, f["fit"])


# ----- probabilities beyond the training distribution ----------------------------------------------------

# The CNN's probabilities are temperature-scaled on curves of its own training distribution; off it (noisier
# or more smeared data, particles beyond the training ranges, shapes the library lacks) they stay as sharp while
# the accuracy drops. `predict_batch` (the CNN alone) therefore reports p' = (1 - λ) p + λ / K (K classes: the
# ranking is kept) with λ = 1 - exp(-w·f), w >= 0, where f is the evidence that the curve lies off the training
# distribution (`shift_features`: each feature 0 on typical training curves, so without evidence the
# in-distribution calibration stands); the whole analyser uses `confident` below. Both are fitted by likelihood on
# sdl's own generator with shifted artefacts and particles beyond its ranges (sdl.techniques.saxs.calibrate) and
# stored beside the weights (<stem>_shift.json).
SHIFT_FEATURES = ("noise", "noise_beyond", "resolution", "distance", "beyond_training", "misfit", "overruled")
# The whole analyser (CNN and fits) reports its top class's probability as σ(a + b·logit p_top − w·f) (`confident`),
# a Platt scaling whose intercept and slope recalibrate the arbitrated probabilities on the training distribution
# and whose evidence f (SHIFT_FEATURES, plus whether a fit-based flag or ood was raised and whether another refined
# shape fits as well) lowers it off that distribution (a uniform shrinkage towards 1/K cannot raise an
# under-confident in-range answer: on the calibration set's curves, 2-fold CV ECE 3.2 → 2.0 % on the training
# instrument, 2.2 → 1.8 % varied, 11.0 → 9.9 % shifted, 12.9 → 13.8 % beyond its ranges).
TOP_FEATURES = (*SHIFT_FEATURES, "flagged", "ambiguous", "library_fit", "sheet_fit")
# `library_fit`: the CNN said other, yet the better of its two most probable library shapes, refined, fits within
# RETRY_CHI2 with its parameters inside the training ranges (a disc wider than the q window reads as a sheet,
# which training calls other). `sheet_fit`: an other answer whose best OTHER_REFERENCES fit is the sheet while that
# library shape fits within RETRY_CHI2, inside the training ranges or not (a disc as wide as the window or wider,
# polydisperse beyond training: the data cannot tell it from the sheet, which training calls other)
# `ambiguous` (flag and TOP_FEATURES): the data do not tell the chosen shape from a refined alternative.
# An alternative with no more parameters is a tie when it fits worse by less than AMBIGUOUS_CHI2 (in ĉ units):
# Kass & Raftery's "strong" evidence starts at a BIC difference of 6, and with no parameters saved the χ²
# difference is the BIC difference (a simpler alternative would also be favoured by parsimony). An alternative
# with more parameters (a shell or an axial ratio the chosen plain shape lacks) always fits at least as well;
# it is a tie only when it changes the fit: its χ² gain passes the likelihood-ratio test at AMBIGUOUS_LRT_P
# (χ² with Δk degrees of freedom), which a superfluous shell that only reproduces the plain shape does not.
# A shell must also be determined (`shell_z`: core unlike the shell and a thickness, each beyond AMBIGUOUS_SHELL_Z
# sigma): a fitted core matching its shell within the errors is the plain shape again — unless the alternative's
# BIC, which charges its extra parameters k ln n, is the lower: then the data favour it (core and thickness of a
# thin shell are correlated, so each alone can be undetermined while the shell as a whole is not).
AMBIGUOUS_CHI2 = 6.0
AMBIGUOUS_LRT_P = 0.05
AMBIGUOUS_SHELL_Z = 2.0


def shift_features(noise: float, dq_over_q: float | None, distance_cdf: float, n_beyond: int = 0,
                   chi2: float | None = None, overruled: bool = False) -> np.ndarray:
    """The evidence (SHIFT_FEATURES order; each 0 on typical training curves, growing off them) that a curve
    lies off the training distribution: `noise` (the relative error where the shape information is,
    `informative_noise`: an error floor that swamps only the weak high-q points does not count) above 5 % (ln,
    at most 4) and beyond NOISE_ENVELOPE (0/1); `dq_over_q` (measured, or refined without a dq column) above
    0.10 in units of 0.03 (at most 5); the CNN embedding's Mahalanobis distance CDF (on in-distribution
    validation curves) beyond 0.9, as ln(0.1 / (1 - cdf)); how many refined parameters lie beyond the training
    ranges (`beyond_training`, at most 3); ln(χ²_red / 2) of the chosen fit (the roughness χ² without errors)
    when above 0 (at most 5); and whether the fits overruled the CNN's top class (0/1)."""
    nz = float(noise) if noise is not None and math.isfinite(noise) else 0.03
    dqq = float(dq_over_q) if dq_over_q is not None and math.isfinite(dq_over_q) else 0.0
    cdf = float(distance_cdf) if math.isfinite(distance_cdf) else 1.0
    c2 = float(chi2) if chi2 is not None and math.isfinite(chi2) and chi2 > 0 else 1.0
    return np.array([
        min(max(math.log(max(nz, 1e-6) / 0.05), 0.0), 4.0),
        float(nz > NOISE_ENVELOPE),
        min(max((dqq - 0.10) / 0.03, 0.0), 5.0),
        max(math.log(0.1 / (max(1.0 - cdf, 0.0) + 1e-3)), 0.0),
        float(min(n_beyond, 3)),
        min(max(math.log(c2 / 2.0), 0.0), 5.0),
        float(overruled),
    ])


def fit_contests(cls: str, fits: dict[str, dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The chosen shape `cls` against each other refined shape in `fits` (`refine` results on `n` points):
    [{"alternative", "delta_chi2": (χ²_alt - χ²_cls)/ĉ (total χ², ĉ the best χ²_red when above 1; < 0 when the
    alternative fits better), "extra_params": k_alt - k_cls, "delta_bic": delta_chi2 + extra_params ln n,
    "shell_z": `shell_z` of the alternative (NaN when it has no shell)}]; empty without another fit."""
    if cls not in fits or len(fits) < 2:
        return []
    c_hat = max(1.0, min(f["chi2_red"] for f in fits.values()))
    tot = {c: f["chi2_red"] * max(n - f["n_params"], 1) / c_hat for c, f in fits.items()}
    out = []
    for a in (a for a in fits if a != cls):
        d, dk = float(tot[a] - tot[cls]), int(fits[a]["n_params"] - fits[cls]["n_params"])
        out.append({"alternative": a, "delta_chi2": d, "extra_params": dk, "delta_bic": d + dk * math.log(max(n, 2)),
                    "shell_z": shell_z(fits[a])})
    return out


def shell_z(f: dict[str, Any]) -> float:
    """How well a core-shell `refine` result determines its shell: the smaller of |core contrast - 1| (1: core and
    shell alike, the plain shape) and the shell thickness, each over its one-sigma uncertainty; NaN for a shape
    without a shell. Below about 2 the shell only reproduces the plain shape within the data's errors."""
    if f.get("sld_core") is None or "shell" not in f["values"]:
        return float("nan")
    sc, ss = f.get("sld_core_uncertainty"), f["uncertainty"].get("shell")

    def z(v: float, u: float | None) -> float:
        return abs(v) / u if u is not None and math.isfinite(u) and u > 0 else (math.inf if u == 0 else 0.0)

    return float(min(z(f["sld_core"] - 1.0, sc), z(f["values"]["shell"], ss)))


def is_ambiguous(delta_chi2: float, extra_params: int, shell: float = math.nan, delta_bic: float = math.nan) -> bool:
    """Whether the data do not tell the chosen shape from an alternative that fits worse by `delta_chi2` (ĉ units;
    < 0: better) with `extra_params` more parameters: with none more, it fits worse by less than AMBIGUOUS_CHI2;
    with more, its BIC (`delta_bic` = delta_chi2 + Δk ln n, when given) is below the chosen shape's — the gain
    pays for the extra parameters, so the data favour the alternative however its single parameters are
    determined — or its gain -delta_chi2 passes the likelihood-ratio test (χ²_Δk quantile 1 - AMBIGUOUS_LRT_P)
    and, when the alternative adds a shell, that shell is determined (`shell` = its `shell_z` >= AMBIGUOUS_SHELL_Z)."""
    if not math.isfinite(delta_chi2):
        return False
    if extra_params <= 0:
        return delta_chi2 < AMBIGUOUS_CHI2
    from scipy.stats import chi2

    if math.isfinite(delta_bic) and delta_bic < 0:
        return True
    if math.isfinite(shell) and shell < AMBIGUOUS_SHELL_Z:
        return False
    return -delta_chi2 > float(chi2.ppf(1.0 - AMBIGUOUS_LRT_P, extra_params))


def contest_ambiguous(contest: dict[str, Any]) -> bool:
    """`is_ambiguous` of one of `fit_contests` (its delta_chi2, extra_params, shell_z and delta_bic)."""
    return is_ambiguous(float(contest["delta_chi2"]), int(contest["extra_params"]),
                        float(contest.get("shell_z", math.nan)), float(contest.get("delta_bic", math.nan)))


def shift_lambda(features: np.ndarray, params: dict[str, Any] | None) -> float | np.ndarray:
    """λ = 1 - exp(-w·f) for `features` (one row or (n, F)) and calibration `params` {"weights": w}; 0 without
    params or without evidence."""
    if not params:
        return 0.0 if np.ndim(features) == 1 else np.zeros(len(features))
    return 1.0 - np.exp(-(np.asarray(features, float) @ np.asarray(params["weights"], float)))


def shrink(p: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """p' = (1 - λ) p + λ / K along the last axis (the ranking is kept)."""
    p = np.asarray(p, float)
    lam = np.asarray(lam, float)[..., None] if np.ndim(lam) else float(lam)
    return (1.0 - lam) * p + lam / p.shape[-1]


def top_features(shift: np.ndarray, flagged: bool | np.ndarray, ambiguous: bool | np.ndarray,
                 library_fit: bool | np.ndarray = False, sheet_fit: bool | np.ndarray = False) -> np.ndarray:
    """TOP_FEATURES of one curve (SHIFT_FEATURES row, four flags) or of n ((n, 7), (n,), (n,), (n,), (n,))."""
    flags = np.broadcast_arrays(*(np.asarray(v, float) for v in (flagged, ambiguous, library_fit, sheet_fit)))
    return np.concatenate([np.asarray(shift, float), np.stack(flags, axis=-1)], axis=-1)


def flag_reasons(cls: str, info: dict[str, Any], p_top: float, ood_score: float | None) -> list[str]:
    """Why saxs.model is flagged, in plain words, from what `SaxsMLAnalyser.analyse` put in `info`: an "other" answer
    (which OTHER_REFERENCES model describes it best, and how the closest library shape fits), an OOD score above the threshold
    (`ood_score`, None when below), each of LOW_CONFIDENCE_REASONS present, and a calibrated top probability
    `p_top` below LOW_CONFIDENCE. Empty for an answer that is not flagged."""
    def chi2(x: float) -> str:
        return f"{x:.2f}" if x < 10 else f"{x:.0f}"

    out = []
    if cls == "other":
        text = "no library shape describes this curve (answer: other)"
        ref = info.get("other_reference")
        if ref:
            name, _, _ = OTHER_REFERENCES[ref["model"]]
            v = ref["values"][name]
            value = f"{v:.2f}" if name == "power" else f"{v / 10:.3g} nm"
            text += f"; of the simple reference models, {REFERENCE_WORDS[ref['model']]} comes closest ({name} {value}, χ²_red {chi2(ref['chi2_red'])})"
        closest = info.get("closest_library_shape")
        if closest:
            m, x = closest["model"], closest["misfit_chi2"]
            if closest["sheet_fit"]:
                text += (f"; the library's {m} fits as well (misfit χ² {chi2(x)}): the data cannot tell a sheet from a {m} "
                         "wider than the q window")
            elif closest["fits"]:
                text += f"; the library's {m} also fits (misfit χ² {chi2(x)}), so other is less likely"
            else:
                text += f"; the closest library shape, {m}, " + (
                    f"fits only beyond the training ranges ({'; '.join(closest['beyond_training'])})"
                    if closest["beyond_training"] and x <= RETRY_CHI2 else f"misfits (χ² {chi2(x)})")
        out.append(text)
    elif ood_score is not None:
        out.append(f"the curve is unlike the CNN's training curves (OOD score {ood_score:.4f} above {info['ood_threshold']:.4f})")
    out += [str(info[k]) for k in LOW_CONFIDENCE_REASONS if k in info]
    if p_top < LOW_CONFIDENCE:
        out.append(f"the calibrated probability of {cls}, {p_top:.2f}, is below {LOW_CONFIDENCE}")
    return out


def top_logit(p: np.ndarray) -> np.ndarray:
    """logit of each row's top probability, clipped to [1e-6, 1 - 1e-6] (what `confident` recalibrates)."""
    t = np.clip(np.asarray(p, float).max(axis=1), 1e-6, 1 - 1e-6)
    return np.log(t / (1 - t))


def confident(p: np.ndarray, features: np.ndarray, params: dict[str, Any] | None) -> np.ndarray:
    """Probabilities (last axis) with the top class's set to σ(a + b·logit p_top − w·f) for TOP_FEATURES `features`
    and `params` {"a", "b", "top_weights": w >= 0}; the other classes keep their ratios and share the rest, and the top
    class stays on top. Unchanged without params."""
    p = np.asarray(p, float)
    if not params or "top_weights" not in params:
        return p
    one = p.ndim == 1
    p2, f = np.atleast_2d(p), np.atleast_2d(np.asarray(features, float))
    rows, k = np.arange(len(p2)), p2.argmax(axis=1)
    top = 1.0 / (1.0 + np.exp(-(params["a"] + params["b"] * top_logit(p2) - f @ np.asarray(params["top_weights"], float))))
    rest = p2.copy()
    rest[rows, k] = 0.0
    s = rest.sum(axis=1, keepdims=True)
    rest = np.where(s > 1e-12, rest / np.maximum(s, 1e-300), 1.0 / (p2.shape[1] - 1))
    rest[rows, k] = 0.0
    second = rest.max(axis=1)
    top = np.maximum(top, second / (1.0 + second) * (1 + 1e-9))  # top > second·(1 - top): still first
    out = rest * (1.0 - top)[:, None]
    out[rows, k] = top
    return out[0] if one else out


def weights_digest(weights: Path | None = None) -> str:
    """The first 12 hex digits of a weights file's SHA-256 (default the shipped one): which CNN a cached analysis
    was made with."""
    return hashlib.sha256(Path(weights or WEIGHTS).read_bytes()).hexdigest()[:12]


def load_shift_calibration(weights: Path) -> dict[str, Any] | None:
    """The calibration stored beside `weights` (<stem>_shift.json); None when there is none, when its features are
    not SHIFT_FEATURES and TOP_FEATURES, or when it was fitted with a pair step (`pair_weights`) this code lacks."""
    import json

    path = weights.with_name(weights.stem + "_shift.json")
    if not path.is_file():
        return None
    blob = json.loads(path.read_text())
    if (tuple(blob.get("features", ())) != SHIFT_FEATURES or tuple(blob.get("top_features", ())) != TOP_FEATURES
            or "pair_weights" in blob.get("analyser", {})):
        return None
    return blob


# ----- the analyser ------------------------------------------------------------------------------------


class SaxsMLAnalyser:
    """CNN shape-model identification + size/polydispersity regression + OOD + refinement."""

    name: ClassVar[str] = "saxs_ml"
    technique: ClassVar[str] = "saxs"

    def __init__(self, weights: str | Path | None = None, refine: bool = True, max_nfev: int = 60,
                 shift_calibration: bool = True) -> None:
        self.weights = Path(weights) if weights else WEIGHTS
        self.model = SasModel.load(self.weights)
        self.refine = refine
        self.max_nfev = max_nfev
        self.shift = load_shift_calibration(self.weights) if shift_calibration else None

    # batched, no refinement -----------------------------------------------------------------------
    def predict_batch(self, q_list: Sequence[np.ndarray], I_list: Sequence[np.ndarray],
                      sigma_list: Sequence[np.ndarray | None] | None = None) -> dict[str, Any]:
        """ML predictions for many curves (no refinement).

        Returns arrays: "probabilities" (n, 7, calibrated; shrunk by the CNN-alone shift calibration, see
        `shift_features`), "probabilities_cnn" (before that shrinkage), "distance_cdf" (n,), "label" (n,), "model" (class names),
        "values"/"uncertainty" (n, 5, Å and fraction, for the predicted class; NaN where the
        parameter does not apply), "ood_score" (n,), "ood" (n, bool), "valid_points" (n,),
        "noise" (n, `noise_level`), "noise_informative" (n, `informative_noise`), "low_confidence" (n, bool: top probability
        below LOW_CONFIDENCE or noise beyond NOISE_ENVELOPE), "values_by_class" (n, 7, 5: each
        class's own size heads, the starting values when a runner-up class is refined too) and
        "uncertainty_by_class".
        """
        if len(q_list) != len(I_list):
            raise AnalysisError(f"predict_batch: {len(q_list)} q arrays but {len(I_list)} intensity arrays")
        x = represent_batch(q_list, I_list)
        cal = self.model.calibrated(self.model.raw(x))
        p = cal["probabilities"]
        lab = p.argmax(axis=1)
        n = len(lab)
        mu = cal["mu"][np.arange(n), lab]
        sd = cal["sd"][np.arange(n), lab]
        val, unc = decode_targets(mu, sd)
        for i, li in enumerate(lab):
            app = APPLIES[CLASSES[li]]
            for j, tname in enumerate(TARGETS):
                if tname not in app:
                    val[i, j] = unc[i, j] = np.nan
        sigmas = list(sigma_list) if sigma_list is not None else [None] * n
        noise, noise_info = np.array([noise_levels(q, I, s) for q, I, s in zip(q_list, I_list, sigmas)]).reshape(n, 2).T
        p_cnn = p
        if self.shift is not None:  # the CNN-alone calibration off the training distribution (no fit evidence)
            f = np.array([shift_features(nz, None, c) for nz, c in zip(noise_info, cal["distance_cdf"])]).reshape(n, -1)
            p = shrink(p, shift_lambda(f, self.shift["cnn"]))
        with np.errstate(invalid="ignore"):
            low = (p.max(axis=1) < LOW_CONFIDENCE) | (noise > NOISE_ENVELOPE)
        return {"probabilities": p, "probabilities_cnn": p_cnn, "distance_cdf": cal["distance_cdf"], "label": lab, "model": [CLASSES[i] for i in lab], "values": val,
                "uncertainty": unc, "ood_score": cal["ood_score"], "ood": cal["ood_score"] > self.model.threshold,
                "valid_points": x[:, 1].sum(axis=1), "noise": noise, "noise_informative": noise_info, "low_confidence": low,
                **dict(zip(("values_by_class", "uncertainty_by_class"), decode_targets(cal["mu"], cal["sd"])))}

    # one measurement ------------------------------------------------------------------------------
    def analyse(self, measurement: Measurement) -> AnalysisResult:
        """Descriptors of one curve. A q range that is implausible for SAXS/SANS flags every descriptor
        (`sdl.techniques.saxs.reader.check_sas_q_range`): `q_unit_suspect` when the file gave no q unit (the nm⁻¹
        reading is then analysed too, to say in info["warnings"] what it would give), else
        `q_range_implausible`. A slit-smeared curve (USANS) is not modelled: flagged slit_smearing_suspect."""
        return analysed_with_q_check(self._analyse, measurement)

    def _analyse(self, measurement: Measurement) -> AnalysisResult:
        q, I = measurement.require("q_inv_angstrom", "intensity")
        sigma = dq = None
        if "sigma" in measurement.arrays:
            (sigma,) = measurement.require("sigma")
        if "dq_inv_angstrom" in measurement.arrays:
            (dq,) = measurement.require("dq_inv_angstrom")
        src = measurement.metadata.get("source")
        where = f" ({src})" if src else ""
        if q.size < MIN_POINTS:
            raise AnalysisError(f"saxs curve{where} has {q.size} points; saxs_ml needs at least {MIN_POINTS}")
        if np.any(q <= 0):
            raise AnalysisError(f"saxs curve{where} has {int(np.sum(q <= 0))} q value(s) <= 0; q must be positive (remove those rows)")
        pos = I > 0
        if not np.any(pos):
            raise AnalysisError(f"saxs curve{where}: all intensities are <= 0; expected a positive I(q) (background not over-subtracted)")
        if pos.sum() < MIN_POINTS:
            raise AnalysisError(f"saxs curve{where} has only {int(pos.sum())} positive intensities; saxs_ml needs at least {MIN_POINTS}")
        inside = (q >= GRID[0] / 1.5) & (q <= GRID[-1] * 1.5)
        if inside.sum() < MIN_POINTS:
            too_high = np.sum(q > GRID[-1] * 1.5) >= np.sum(q < GRID[0] / 1.5)
            raise AnalysisError(
                f"saxs curve{where} has {int(inside.sum())} points in 0.002-0.9 Å⁻¹ (q range {q.min():.3g}-{q.max():.3g} Å⁻¹); "
                f"saxs_ml is trained on that window: {q_unit_hint(measurement, bool(too_high))}"
            )
        pred = self.predict_batch([q], [I], [sigma])
        p = pred["probabilities_cnn"][0]  # the fits weigh in below; the shift calibration comes last
        cls = pred["model"][0]
        info: dict[str, Any] = {
            "method": "1-D CNN (log I on a fixed log-q grid) with temperature-scaled probabilities, Gaussian-NLL "
            "size heads, Mahalanobis+P(other) OOD score" + (", then sasmodels least-squares refinement of the two most "
            "probable shapes and of the nested (core-)shell alternative (all library shapes when these misfit), weighed by BIC"
            if self.refine else ""),
            "weights": str(self.weights),
            "ood_threshold": self.model.threshold,
            "sasmodels_model": None,
            "refined": False,
            "noise_level": float(pred["noise"][0]),
            "noise_informative": float(pred["noise_informative"][0]),
        }
        r: dict[str, Any] | None = None
        fits: dict[str, dict[str, Any]] = {}

        def _refine(c: str, extra_starts: Sequence[dict[str, float]] = (), cnn_start: bool = True) -> None:
            """Refine `c` from the best of the CNN's start and `extra_starts`; of two refinements the better is kept."""
            start = [{t: float(pred["values_by_class"][0, CLASSES.index(c), TARGETS.index(t)]) for t in APPLIES[c]}] if cnn_start else []
            try:
                f = refine(c, q, I, sigma, dq, [*start, *extra_starts], max_nfev=self.max_nfev)
            except Exception as exc:  # refinement must not lose the ML answer
                info.setdefault("refine_error", {})[c] = f"{type(exc).__name__}: {exc}"
                return
            if c not in fits or f["chi2_red"] < fits[c]["chi2_red"]:
                fits[c] = f

        # the CNN's two most probable library shapes (the runner-up however unlikely the CNN finds it: where the CNN
        # extrapolates, its runner-up's probability says little)
        library = [CLASSES[i] for i in np.argsort(-p) if CLASSES[i] != "other"][:2]
        if cls == "other" and self.refine:
            # a library shape that fits is evidence against other (a disc wider than the window looks like a sheet):
            # it is weighed against what the OTHER_REFERENCES explain, with the CNN's probabilities as priors
            # (`arbitrate`). Where the sheet explains the most, a shape that fits within RETRY_CHI2 and wins takes the
            # answer (training calls sheets other, so a disc whose width shows is lost to other); where another
            # reference does, the curve is of another kind, which a shape may imitate better than the one-parameter
            # references fit it (a mass fractal, a correlation peak), so the answer stays other. Either way the shape
            # is reported and, when it fits inside the training ranges, lowers the probability
            for c in library:
                _refine(c)
            if fits:
                best = min(fits, key=lambda c: fits[c]["chi2_red"])
                f = fits[best]
                chi2_best = misfit_chi2(q, I, sigma, f)
                # a coil's q^-2 is a sheet thinner than the window resolves, with polydispersity on its bound: such a
                # fit is no evidence for the shape
                why = beyond_training(best, f["values"], f["at_bound"], f["sld_core"])
                within = chi2_best <= RETRY_CHI2
                closest = {"model": best, "misfit_chi2": chi2_best, "beyond_training": why,
                           "fits": bool(within and not why), "sheet_fit": False}
                try:
                    ref = refine_other(q, I, sigma, dq)
                except Exception as exc:  # refinement must not lose the ML answer
                    info.setdefault("refine_error", {})["other"] = f"{type(exc).__name__}: {exc}"
                else:
                    p_ref, arb = arbitrate(p, {best: f, "other": ref}, q.size)
                    info["other_reference"] = {"model": ref["model"], "values": ref["values"], "chi2_red": ref["chi2_red"],
                                               "delta_bic": arb[best]["bic"] - arb["other"]["bic"]}
                    closest["sheet_fit"] = bool(within and ref["model"] == SHEET)
                    if closest["sheet_fit"] and CLASSES[int(np.argmax(p_ref))] == best:
                        info["ml_probabilities"] = {c: float(v) for c, v in zip(CLASSES, p)}
                        p, cls, closest = p_ref, best, None
                if closest:
                    info["closest_library_shape"] = closest
                info["fits"] = {c: fit_summary(f) for c, f in fits.items()}
        if cls != "other" and self.refine:
            t0 = time.perf_counter()
            cands = [cls, next(c for c in library if c != cls)]
            for c in (c for c in cands if c not in fits):
                _refine(c)
            # the nested alternative of the CNN's shape (shell or no shell), started from that shape's fit too
            alt = NESTED.get(cls)
            if alt is not None and cls in fits:
                _refine(alt, nested_starts(cls, fits[cls]))
            # the CNN's shape fits clearly worse than another: its refinement may have stopped in a local minimum (a
            # sphere's radius a fringe off), so it is refined again from the better shape's geometry before the fits
            # may overrule it
            winner = min(fit_contests(cls, fits, q.size), key=lambda c: c["delta_chi2"], default=None)
            if winner is not None and winner["delta_chi2"] < -AMBIGUOUS_CHI2:
                starts = partner_starts(cls, winner["alternative"], fits[winner["alternative"]])
                if starts:
                    _refine(cls, starts, cnn_start=False)
            # every shape fitted misfits: the CNN may have missed the right one (a long core-shell rod seen through
            # a window too narrow for its length, taken for a core-shell sphere): the other library shapes are
            # refined too before the fits decide
            if fits and misfit_chi2(q, I, sigma, min(fits.values(), key=lambda f: f["chi2_red"])) > RETRY_CHI2:
                for c in (c for c in CLASSES if c not in fits and c != "other"):
                    _refine(c)
                info["refined_all"] = True
            info["fits"] = {c: fit_summary(f) for c, f in fits.items()}
            if len(fits) > 1:
                info.setdefault("ml_probabilities", {c: float(v) for c, v in zip(CLASSES, p)})
                p, info["arbitration"] = arbitrate(p, fits, q.size)
                cls = CLASSES[int(np.argmax(p))]
            r = fits.get(cls)
            if r is not None:
                info.update(refined=True, chi2_red=r["chi2_red"], nfev=sum(f["nfev"] for f in fits.values()),
                            refine_success=r["success"], dq_over_q=r["dq_over_q"], dq_over_q_fitted=r["dq_fitted"],
                            sld_core_rel=r["sld_core"], refine_seconds=time.perf_counter() - t0)
        ood_score = float(pred["ood_score"][0])
        ood = bool(pred["ood"][0]) or cls == "other"
        flags: list[str] = ["ood"] if ood else []
        quality = []
        noise = info["noise_level"]
        if noise > NOISE_ENVELOPE:
            quality.append(f"median sigma/I {noise:.2f} in the low-q half exceeds the training data's {NOISE_ENVELOPE:.2f}")
        dqq = median_dq_over_q(q, dq)
        if dqq is not None and dqq > RESOLUTION_ENVELOPE:
            quality.append(f"median dq/q {dqq:.2f} exceeds the training data's {RESOLUTION_ENVELOPE:.2f}")
        if quality:
            info["data_quality"] = "; ".join(quality) + ": the shape probabilities are not calibrated for such data"
        if r is not None and sigma is not None and r["chi2_red"] > MISFIT_CHI2:
            info["misfit"] = (f"the refined {cls} fit has reduced chi-square {r['chi2_red']:.1f} against the file's errors "
                              f"(above {MISFIT_CHI2:g}): the curve holds something the model does not")
        if r is not None and sigma is None:
            info["roughness_chi2"] = rc = misfit_chi2(q, I, None, r)
            if rc > MISFIT_ROUGHNESS_CHI2:
                info["misfit"] = (f"the refined {cls} fit's residual is {rc:.1f} times the noise its own roughness shows "
                                  f"(above {MISFIT_ROUGHNESS_CHI2:g}; the file gives no errors): the curve holds something "
                                  "the model does not")
        if r is not None and "arbitration" in info:
            why = fit_disagreement(cls, info["arbitration"])
            if why:
                info["fit_disagrees"] = why
        if r is not None and cls != pred["model"][0]:
            cnn = pred["model"][0]
            info["overruled"] = (f"the refined fits chose {cls} over the CNN's {cnn} (CNN p {float(pred['probabilities_cnn'][0].max()):.2f}): "
                                 "the two disagree, and such answers are right about half the time on the training generator")
        beyond = beyond_training(cls, r["values"], r["at_bound"], r["sld_core"]) if r is not None else []
        if beyond:
            info["beyond_training"] = "; ".join(beyond) + ": the shape probabilities are not calibrated there"
        # the reported probabilities: recalibrated, and lowered by the evidence that the curve lies off the training distribution
        chi2 = (r["chi2_red"] if sigma is not None else info.get("roughness_chi2")) if r is not None else None
        feats = shift_features(info["noise_informative"], dqq if dqq is not None else (r["dq_over_q"] if r is not None else None),
                               float(pred["distance_cdf"][0]), len(beyond), chi2, cls != pred["model"][0])
        params = self.shift["analyser"] if self.shift else None
        contests = fit_contests(cls, fits, q.size) if r is not None else []
        for c in contests:
            c["ambiguous"] = contest_ambiguous(c)
        tied = [c for c in contests if c["ambiguous"]]
        flagged = ood or bool((set(LOW_CONFIDENCE_REASONS) - {"ambiguous"}) & set(info))  # before "ambiguous" is set
        closest = info.get("closest_library_shape")  # an "other" answer's best library fit
        f_top = top_features(feats, flagged, bool(tied), bool(closest and closest["fits"]), bool(closest and closest["sheet_fit"]))
        info["calibration"] = {"features": dict(zip(TOP_FEATURES, map(float, f_top))), "contests": contests,
                               "probabilities_before": {c: float(v) for c, v in zip(CLASSES, p)}}
        if tied:
            info["ambiguous_shapes"] = {c["alternative"]: round(c["delta_chi2"], 2) for c in tied}
            info["ambiguous"] = (f"the data do not tell {cls} from " + ", ".join(
                f"{c['alternative']} (Δχ² {c['delta_chi2']:+.1f}, {c['extra_params']:+d} parameters)" for c in tied)
                + ": both refined shapes fit as well")
        p = confident(p, f_top, params)
        if p.max() < LOW_CONFIDENCE or set(LOW_CONFIDENCE_REASONS) & set(info):
            flags.append("low_confidence")
        reasons = flag_reasons(cls, info, float(p.max()), ood_score if bool(pred["ood"][0]) else None)
        if reasons:  # said where a person reads (the CLI, --plot), beside the reader's warnings
            info.setdefault("warnings", []).extend(reasons)
        info["ranking"] = sorted(((c, float(v)) for c, v in zip(CLASSES, p)), key=lambda t: -t[1])
        info["sasmodels_model"] = SASMODEL.get(cls)
        k = CLASSES.index(cls)
        values = {t: float(v) for t, v in zip(TARGETS, pred["values_by_class"][0, k])}
        uncs = {t: float(u) for t, u in zip(TARGETS, pred["uncertainty_by_class"][0, k])}
        info["ml_estimate"] = {t: v for t, v in values.items() if t in APPLIES[cls]}
        curves: dict[str, np.ndarray] = {"q_inv_angstrom": q, "intensity": I}
        param_flags: list[str] = ["ood"] if ood else []
        if cls != "other" and self.refine and r is None:
            param_flags.append("fit_failed")
        if r is not None:
            for t in APPLIES[cls]:
                values[t] = r["values"][t]
                u = r["uncertainty"].get(t)
                if u is not None and np.isfinite(u):
                    uncs[t] = u
            curves["fit"] = r["fit"]
            if r["structure_factor"] not in (None, "none"):
                info["sasmodels_model"] = f"{SASMODEL[cls]}@{D.STRUCTURE_FACTORS[r['structure_factor']]}"
            if r["structure"] is not None:  # S(q) parameters, χ²_red and ΔBIC (vs the chosen) of each model tried
                info.update(structure_factor=r["structure_factor"], structure=r["structure"])
        if "fit" not in curves:
            curves["fit"] = np.full_like(q, np.nan)
        if closest:  # drawn dashed by --plot
            curves[f"candidate:closest library shape, {closest['model']} (misfit χ² {closest['misfit_chi2']:.2f})"] = \
                fits[closest["model"]]["fit"]
        if info["refined"]:
            param_flags.append("refined")
        descs = [
            Descriptor(name="saxs.model", value=cls, probabilities={c: float(v) for c, v in zip(CLASSES, p)},
                       flags=flags, analyser=self.name),
            Descriptor(name="saxs.ood_score", value=ood_score, unit=None, flags=["ood"] if ood else [], analyser=self.name),
        ]
        for t in APPLIES[cls]:
            scale = 0.1 if t != "polydispersity" else 1.0  # Å -> nm
            descs.append(Descriptor(name=DESCRIPTOR[t], value=values[t] * scale, uncertainty=uncs[t] * scale,
                                    unit="nm" if t != "polydispersity" else None, flags=list(param_flags), analyser=self.name))
        if r is not None:
            descs.extend(self._refined_descriptors(r, param_flags))
        # model-free descriptors (Rg, Porod exponent, invariant): they do not depend on the class chosen,
        # so they do not carry its ood/low_confidence flags; their fit ranges are in info[<name>]
        try:
            mf_descs, mf_info = modelfree_descriptors(measurement, self.name)
        except Exception as exc:  # a model-free failure must not lose the ML answer
            info["modelfree_error"] = f"{type(exc).__name__}: {exc}"
        else:
            descs.extend(mf_descs)
            mf_warnings = mf_info.pop("warnings", [])
            info.update(mf_info)
            if mf_warnings:
                info.setdefault("warnings", []).extend(mf_warnings)
        return AnalysisResult(analyser=self.name, descriptors=descs, curves=curves, info=info)

    def _refined_descriptors(self, r: dict[str, Any], flags: list[str]) -> list[Descriptor]:
        """saxs.structure_factor (+ saxs.volume_fraction) for the S(q) classes, saxs.core_contrast for
        core-shell ones, from a `refine` result; they carry the size descriptors' flags."""

        def unc(u: float | None) -> float | None:
            return float(u) if u is not None and math.isfinite(u) else None

        out = []
        if r["structure_factor"] is not None:
            out.append(Descriptor(name="saxs.structure_factor", value=r["structure_factor"],
                                  probabilities=r["structure_probabilities"], flags=list(flags), analyser=self.name))
            if r["structure_factor"] != "none":
                out.append(Descriptor(name="saxs.volume_fraction", value=r["volfraction"], unit=None,
                                      uncertainty=unc(r["volfraction_uncertainty"]), flags=list(flags), analyser=self.name))
        if r["sld_core"] is not None:
            out.append(Descriptor(name="saxs.core_contrast", value=r["sld_core"], unit=None,
                                  uncertainty=unc(r["sld_core_uncertainty"]), flags=list(flags), analyser=self.name))
        return out
