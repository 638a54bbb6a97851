"""PDF analyser by machine learning (`pdf_ml`): cluster structure type (motif) with calibrated
probabilities, size, nearest-neighbour distance and ADP with uncertainties, an out-of-distribution
score, then a real-space refinement of the chosen motif against the measured G(r) with Rw.

Pipeline for one G(r):

1. Representation (`represent`): G(r) interpolated onto R_GRID (1–30 Å, 0.05 Å; the simulator's
   grid), divided by its largest |G| over the covered range; a second channel marks the r the data
   cover (zero beyond them; data not covering 1.5–25 Å are flagged low_confidence: training always
   covers 1–30 Å); a third holds the instrument's Qdamp when the file or metadata give it (its
   Gaussian damping of G(r) otherwise mimics a smaller or rounder cluster; 0 = not known, as for a
   quarter of the training curves). Absolute scale (which depends on the data reduction) does not matter.
2. `PdfNet`, a small 1-D CNN: motif logits, and Gaussian (mean, log-variance) heads for ln n_atoms,
   the nearest-neighbour distance, the ADP U_iso and ln diameter (trained with Gaussian NLL,
   standardised targets). Probabilities are temperature-scaled and predicted sds rescaled on a
   validation split; both stored with the weights.
3. OOD score: max(P(other), F(d)), d the Mahalanobis distance of the penultimate features to the
   nearest in-library class mean (shared covariance), F its empirical distribution on validation
   G(r); above the stored threshold (its 99th percentile on other validation G(r)) the result is
   flagged `ood`. Calibrated top probability below LOW_CONFIDENCE: flagged `low_confidence`.
4. Refinement (`refine`): for the CNN's top motifs (up to MAX_CANDIDATES with calibrated
   probability ≥ CANDIDATE_FLOOR; the first always) the library clusters (simulators.pdf.physics)
   nearest the predicted size and its neighbouring sizes (hcp also at several c/a, fcc spheres cut
   around several centres: VARIANTS; both also twinned/faulted as the training pool makes them:
   STACKINGS); for each, its Debye sum is tabulated once and G(r)
   calculated by the Debye scattering equation with the measurement's Qmin/Qmax/Qdamp (`DebyeGr`);
   scale (linear), expansion and U_iso are fitted by scipy least_squares. Per motif the size with
   the lowest Rw (pdffit2's definition, unit weights) stands for it. `arbitrate` then reweighs the
   candidates' CNN probabilities by fit quality, p_c·exp(−λ ΔBIC_c/2), with the noise estimated
   from the best fit's residual over its independent points and λ per motif pair fitted by
   `sdl train pdf` on simulated G(r) (how far the idealised library's fit differences can be
   trusted; λ = 0: the CNN decides). The most probable motif after that is reported (with
   info["motif_changed_by_refinement"] when it is not the CNN's), with its probabilities in
   `pdf.motif`; below LOW_CONFIDENCE (two motifs fitting about equally well) it is flagged
   `low_confidence`. The runner-up motif is always refined: when its fit (or a third candidate's)
   comes within AMBIGUOUS_DCHI2 of the reported motif's χ², or beats it, the G(r) does not tell the
   two apart and the answer rests on the network's shape prior alone: flagged `low_confidence`,
   info["ambiguous_motifs"] (info["arbitration"]["closest"] holds the rival and its χ² difference). Its nn distance, expansion and ADP are reported (n_atoms and diameter stay the
   CNN's, which are closer than the library's discrete sizes; the refined clusters are in
   info["refined"], the arbitration in info["arbitration"]). Rw above RW_POOR flags
   `low_confidence` (the structure does not explain the data).

Element: `metadata["composition"]` (or `element`), else the metal of GUESS_ELEMENTS whose bulk nn
distance is nearest the refined bond length (the CNN's estimate without refinement), recorded in
info["element_assumed"]. Expansion = refined bond length over that element's bulk nn distance
(without refinement: the CNN's mean first-shell distance over it, 1-5 % high for icosahedra).

Units: r in Å, G(r) in Å⁻², U_iso in Å², diameters in nm ((largest distance + one bond) / 10, as
simulators.pdf.dataset labels them), nn distance = mean first-shell distance in Å.
"""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from sdl.analysis.base import AnalysisResult, Descriptor
from sdl.analysis.ood import nearest_class_distance, whitening
from sdl.errors import AnalysisError
from sdl.measurement import Measurement

WEIGHTS_DIR = Path(__file__).with_name("weights")
MODEL_FILE, META_FILE = "pdf_ml.pt", "pdf_ml.json"
R_GRID = np.arange(1.0, 30.0 + 1e-9, 0.05)  # Å, simulators.pdf.physics.R_GRID (not imported: keeps this light)
TARGETS = ("ln_n_atoms", "nn_distance_angstrom", "adp_angstrom2", "ln_diameter_nm")
LOW_CONFIDENCE = 0.6
RW_POOR = 0.45
MAX_CANDIDATES = 3  # motifs refined: the CNN's top ones ...
CANDIDATE_FLOOR = 0.03  # ... with at least this calibrated probability (the top two always)
# the reported motif is `ambiguous` (flagged low_confidence) when another refined motif fits within
# this χ² (over the independent points, the best fit's noise) of it, or better: the G(r) does not tell
# them apart and the answer rests on the network's learned shape prior alone. 2 = a BIC difference
# "not worth more than a bare mention" (Kass & Raftery 1995); not tuned on the held-out generator
AMBIGUOUS_DCHI2 = 2.0
# library variants tried on the nearest size (the neighbouring sizes then at the best one): hcp c/a
# (Ru/Ti ... ideal ... Zn), fcc spheres cut around an atom, an octahedral hole, a tetrahedral hole
# and a bond centre (fractions of the cubic cell)
VARIANTS: dict[str, tuple[dict[str, Any], ...]] = {
    "hcp": tuple({"c_over_a": round(ca, 3)} for ca in (1.59, math.sqrt(8.0 / 3.0), 1.74, 1.86)),
    "fcc": tuple({"centre": c} for c in ([0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.25, 0.25, 0.0])),
}
# stacking variants, tried next on the nearest size (hcp at the best c/a of VARIANTS): the stacks the
# training pool puts in each class (simulators.pdf.dataset._train_structures: hcp with one fault or
# 5–40 % of its layers faulted, hexagonality 0.6–0.95; fcc twinned, with one intrinsic fault, or
# 5–25 % of its layers hexagonal), so that the refinement compares the CNN's classes as trained and
# not ideal stacks only (an ideal hcp cut fits a faulted hcp cluster worse than an fcc cut does).
# Random stacks: the middle of the class's range, two fixed draws.
# Each cut around an atom and around a hollow between two layers (fractional offsets in the
# close-packed cell; what decides the shape of a cluster of a few tens of atoms).
_CP_CENTRES = ([0.0, 0.0, 0.0], [0.5, 0.333, 0.5])
STACKINGS: dict[str, tuple[dict[str, Any], ...]] = {
    "hcp": tuple({**st, "centre": c} for st in ({"stacking": "hcp_fault", "where": 0.5},
                                                 {"stacking": "random", "hexagonality": 0.8, "stack_seed": 1},
                                                 {"stacking": "random", "hexagonality": 0.8, "stack_seed": 2})
                 for c in _CP_CENTRES),
    "fcc": tuple({**st, "centre": c} for st in ({"stacking": "twin", "where": 0.5}, {"stacking": "fault", "where": 0.5},
                                                 {"stacking": "random", "hexagonality": 0.15, "stack_seed": 1})
                 for c in _CP_CENTRES),
}
DEFAULT_Q = {"qmin_inv_angstrom": 0.8, "qmax_inv_angstrom": 25.0, "qdamp_inv_angstrom": 0.03}
GUESS_ELEMENTS = ("Pt", "Pd", "Au", "Ag", "Cu", "Ni", "Rh", "Ir")  # metals an unnamed element is guessed from


# ----- representation --------------------------------------------------------------------------------

QDAMP_SCALE = 0.05  # Å⁻¹: the third input channel holds Qdamp / QDAMP_SCALE (0: not known)


def represent(r: np.ndarray, G: np.ndarray, qdamp: float | None = None) -> np.ndarray:
    """(3, len(R_GRID)) float32: G on R_GRID over max |G| (0 outside the data), the coverage mask, and
    the instrument's Qdamp (Å⁻¹) / QDAMP_SCALE over the covered range (0 where not known: the
    network was trained with a quarter of its curves so)."""
    r = np.asarray(r, float)
    G = np.asarray(G, float)
    order = np.argsort(r)
    r, G = r[order], G[order]
    out = np.zeros((3, R_GRID.size), np.float32)
    inside = (R_GRID >= r[0] - 1e-9) & (R_GRID <= r[-1] + 1e-9)
    if inside.sum() < 40:
        raise AnalysisError(f"G(r) covers r {r[0]:.2f}–{r[-1]:.2f} Å; pdf_ml needs at least 2 Å of 1–30 Å")
    g = np.interp(R_GRID[inside], r, G)
    m = np.abs(g).max()
    if not m > 0:
        raise AnalysisError("G(r) is zero everywhere")
    out[0, inside] = g / m
    out[1, inside] = 1.0
    if qdamp is not None and math.isfinite(qdamp):
        out[2, inside] = float(qdamp) / QDAMP_SCALE
    return out


def represent_grid(G: np.ndarray, qdamp: float | np.ndarray | None = None) -> np.ndarray:
    """(B, 3, len(R_GRID)) from G already on R_GRID (B, len(R_GRID)) and Qdamp (Å⁻¹, one or one per
    curve; None: not known): the batched fast path."""
    G = np.atleast_2d(np.asarray(G, np.float32))
    out = np.empty((G.shape[0], 3, R_GRID.size), np.float32)
    out[:, 0] = G / np.maximum(np.abs(G).max(axis=1, keepdims=True), 1e-30)
    out[:, 1] = 1.0
    qd = np.zeros(G.shape[0]) if qdamp is None else np.broadcast_to(np.asarray(qdamp, float), (G.shape[0],))
    out[:, 2] = (np.nan_to_num(qd) / QDAMP_SCALE)[:, None]
    return out


# ----- the network -----------------------------------------------------------------------------------

# (channels, kernel, stride) per layer; the first strides 4 (0.2 Å) with a kernel of 8 that sees every
# point: 4.5× the throughput of stride 2 (benchmarked on one thread), peaks are ≥ 0.1 Å wide
ARCH = ((16, 8, 4), (32, 5, 2), (48, 5, 2), (64, 3, 2))


def build_net(n_classes: int, arch: Sequence[Sequence[int]] = ARCH, hidden: int = 128, in_channels: int = 3):
    """The 1-D CNN (torch imported here: it is slow to import): strided convolutions 581 -> 19
    positions (~0.18 M weights), one hidden layer (its activations are the OOD features), class and regression heads."""
    import torch
    from torch import nn

    class PdfNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            prev, n = in_channels, R_GRID.size
            for w, k, st in arch:
                layers += [nn.Conv1d(prev, w, k, stride=st, padding=k // 2), nn.BatchNorm1d(w), nn.GELU()]
                prev, n = w, (n + 2 * (k // 2) - k) // st + 1
            self.features = nn.Sequential(*layers)
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(prev * n, hidden), nn.GELU())
            self.drop = nn.Dropout(0.1)
            self.cls = nn.Linear(hidden, n_classes)
            self.reg = nn.Linear(hidden, 2 * len(TARGETS))

        def forward(self, x: "torch.Tensor"):
            h = self.embed(self.features(x))
            hd = self.drop(h)
            mu, lv = self.reg(hd).chunk(2, dim=1)
            return self.cls(hd), mu, lv.clamp(-10.0, 5.0), h

    return PdfNet()


class PdfModel:
    """The network plus its calibration: temperature, sd scales, target standardisation, Mahalanobis
    class means/precision, the validation distance CDF and the OOD threshold (all in `meta`/tensors)."""

    def __init__(self, net, meta: dict[str, Any]) -> None:
        self.net = net.eval()
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.in_channels = int(meta.get("in_channels", 2))  # weights before the Qdamp channel: 2
        self._whiten = None

    @classmethod
    def load(cls, weights_dir: str | Path | None = None) -> "PdfModel":
        import torch

        d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
        if not (d / MODEL_FILE).is_file() or not (d / META_FILE).is_file():
            raise AnalysisError(f"pdf_ml weights not found in {d} (need {MODEL_FILE} and {META_FILE}); "
                                f"train them with `sdl train pdf --out {d}`")
        meta = json.loads((d / META_FILE).read_text())
        try:
            state = torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file
            raise AnalysisError(f"cannot load pdf_ml weights {d / MODEL_FILE}: {exc}") from None
        net = build_net(len(meta["classes"]), [tuple(a) for a in meta["arch"]], int(meta["hidden"]),
                        int(meta.get("in_channels", 2)))
        net.load_state_dict(state["net"])
        m = cls(net, meta)
        m.maha_mean, m.maha_prec, m.ood_cdf = state["maha_mean"], state["maha_prec"], state["ood_cdf"].numpy()
        return m

    def save(self, out_dir: str | Path) -> Path:
        import torch

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        torch.save({"net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                    "maha_mean": self.maha_mean.float(), "maha_prec": self.maha_prec.float(),
                    "ood_cdf": torch.tensor(np.asarray(self.ood_cdf), dtype=torch.float32)}, d / MODEL_FILE)
        (d / META_FILE).write_text(json.dumps(self.meta, indent=2))
        return d / MODEL_FILE

    def raw(self, X: np.ndarray, batch: int = 2048, embeddings: bool = False) -> dict[str, np.ndarray]:
        """Uncalibrated outputs for represented inputs X (B, 3, len(R_GRID); the channels the
        network was trained on are used)."""
        import torch

        X = X[:, : self.in_channels]
        outs: dict[str, list] = {"logits": [], "mu": [], "logvar": [], "dist": [], "emb": []}
        with torch.inference_mode():
            for i in range(0, len(X), batch):
                lo, mu, lv, h = self.net(torch.from_numpy(np.ascontiguousarray(X[i:i + batch], dtype=np.float32)))
                outs["logits"].append(lo.numpy()); outs["mu"].append(mu.numpy()); outs["logvar"].append(lv.numpy())
                outs["dist"].append(self.mahalanobis(h) if hasattr(self, "maha_mean") else np.zeros(len(h)))
                if embeddings:
                    outs["emb"].append(h.numpy())
        return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in outs.items()}

    def mahalanobis(self, emb) -> np.ndarray:
        """Distance of each embedding to the nearest in-library class mean (shared covariance)."""
        if self._whiten is None:
            self._whiten = whitening(self.maha_prec, self.maha_mean)
        return nearest_class_distance(emb, self._whiten)

    def calibrated(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities (temperature-scaled), OOD score, target values and one-sigma uncertainties."""
        lo = raw["logits"] / float(self.meta["temperature"])
        p = np.exp(lo - lo.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        cdf = np.searchsorted(self.ood_cdf, raw["dist"], side="right") / max(len(self.ood_cdf), 1)
        p_other = p[:, self.classes.index("other")] if "other" in self.classes else np.zeros(len(p))
        mean, std = np.asarray(self.meta["target_mean"]), np.asarray(self.meta["target_std"])
        z_mu = raw["mu"] * std + mean
        z_sd = np.exp(0.5 * raw["logvar"]) * std * np.asarray(self.meta["sd_scale"])
        n = np.exp(z_mu[:, 0])
        dia = np.exp(z_mu[:, 3])
        return {"probabilities": p, "ood_score": np.maximum(p_other, cdf), "distance_cdf": cdf,
                "n_atoms": n, "n_atoms_sd": n * z_sd[:, 0], "nn_distance_angstrom": z_mu[:, 1],
                "nn_distance_sd": z_sd[:, 1], "adp_angstrom2": np.clip(z_mu[:, 2], 0.0, None), "adp_sd": z_sd[:, 2],
                "diameter_nm": dia, "diameter_sd": dia * z_sd[:, 3]}

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return self.calibrated(self.raw(X))


# ----- forward model for the refinement --------------------------------------------------------------

class DebyeGr:
    """G(r) of one cluster by the Debye scattering equation for one element (the form factor cancels
    in S(Q)), as a function of expansion factor s and U_iso (Å²):

        S(Q) − 1 = (1/N) Σ_{i≠j} sin(Q s d_ij)/(Q s d_ij) · exp(−Q² U)      (pair Debye–Waller, σ² = 2U)
        G(r) = (2/π) ∫_{Qmin}^{Qmax} Q[S(Q) − 1] sin(Qr) dQ · exp(−(Qdamp r)²/2)

    Qdamp as in PDFgui/pdffit2. The Debye sum is tabulated once on x = Q·d by
    simulators.pdf.physics.pair_table (binned distances, one FFT), so an evaluation at any s and U
    is an interpolation and one matrix product (< 1 ms)."""

    def __init__(self, positions: np.ndarray, r: np.ndarray, qmin: float, qmax: float, qdamp: float,
                 q_step: float = 0.05):
        from simulators.pdf.physics import pair_table

        self.table = pair_table(np.asarray(positions, float))
        self.q = np.arange(max(qmin, 0.05), qmax + 1e-9, q_step)
        w = np.full(self.q.size, q_step)
        w[0] = w[-1] = q_step / 2
        self.r = np.asarray(r, float)
        self.kernel = (2.0 / np.pi) * np.sin(np.outer(self.r, self.q)) * w[None, :]
        self.damp = np.exp(-0.5 * (qdamp * self.r) ** 2)

    def __call__(self, s: float, u: float) -> np.ndarray:
        sq = self.table.at(self.q * s)[0] * np.exp(-self.q ** 2 * u)
        return (self.kernel @ (self.q * sq)) * self.damp


def rw(g_obs: np.ndarray, g_calc: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Rw = sqrt(Σ w (G_obs − G_calc)² / Σ w G_obs²) (pdffit2/PDFgui)."""
    w = np.ones_like(g_obs) if weights is None else weights
    return float(np.sqrt(np.sum(w * (g_obs - g_calc) ** 2) / max(np.sum(w * g_obs ** 2), 1e-300)))


def fit_cluster(positions: np.ndarray, r: np.ndarray, g: np.ndarray, q: dict[str, float],
                s0: float = 1.0, u0: float = 0.008, max_nfev: int = 40) -> dict[str, Any]:
    """Least-squares fit of expansion s (0.9–1.1), U_iso (0.0005–0.05 Å²) and a scale (solved
    linearly at each step) of one cluster against G(r). Returns s, u, their sds, scale, Rw, fit."""
    from scipy.optimize import least_squares

    model = DebyeGr(positions, r, q["qmin_inv_angstrom"], q["qmax_inv_angstrom"], q["qdamp_inv_angstrom"])
    state: dict[str, Any] = {}

    def resid(p):
        gc = model(p[0], p[1])
        a = float(gc @ g) / max(float(gc @ gc), 1e-300)
        state["fit"], state["scale"] = a * gc, a
        return a * gc - g

    # a coarse scan of s first: the least-squares problem in s has a local minimum every peak spacing
    ss = np.linspace(max(0.9, s0 - 0.04), min(1.1, s0 + 0.04), 11)
    s_start = ss[int(np.argmin([np.sum(resid([s, u0]) ** 2) for s in ss]))]
    res = least_squares(resid, [s_start, u0], bounds=([0.9, 5e-4], [1.1, 0.05]), x_scale=[0.005, 0.003],
                        diff_step=[1e-4, 1e-3], max_nfev=max_nfev)
    r_final = resid(res.x)
    # G(r) points are correlated over ~π/Qmax: the independent points (Nyquist) set the variance
    n_ind = max((r[-1] - r[0]) * q["qmax_inv_angstrom"] / np.pi, 4.0)
    dof = max(n_ind - 3, 1)
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac) * float(np.sum(r_final ** 2) / dof)
        sd = np.sqrt(np.maximum(np.diag(cov), 0))
    except np.linalg.LinAlgError:
        sd = np.full(2, np.nan)
    return {"s": float(res.x[0]), "u": float(res.x[1]), "s_sd": float(sd[0]), "u_sd": float(sd[1]),
            "scale": state["scale"], "rw": rw(g, state["fit"]), "fit": state["fit"], "nfev": int(res.nfev),
            "nn_mean": model.table.nn_mean, "d_max": model.table.d_max}


# ----- the analyser ----------------------------------------------------------------------------------

def element_of(metadata: dict[str, Any]) -> str | None:
    """The metal named by metadata 'element' or the first element of 'composition' (e.g. 'Au144S60' -> Au)."""
    for key in ("element", "composition"):
        v = metadata.get(key)
        if isinstance(v, str):
            m = re.match(r"\s*([A-Z][a-z]?)", v)
            if m:
                return m.group(1)
    return None


def _q_params(metadata: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    out, assumed = {}, []
    for k, v in DEFAULT_Q.items():
        x = metadata.get(k)
        try:
            x = float(x)
        except (TypeError, ValueError):
            x = None
        if x is None or not math.isfinite(x) or (k != "qdamp_inv_angstrom" and x <= 0) or x < 0:
            x = v
            assumed.append(f"{k}={v}")
        out[k] = x
    return out, assumed


class PdfMLAnalyser:
    """CNN motif/size/nn-distance/ADP with calibrated uncertainty, then a Debye-equation refinement."""

    name: ClassVar[str] = "pdf_ml"
    technique: ClassVar[str] = "pdf"

    def __init__(self, weights_dir: str | Path | None = None, refine: bool = True):
        self.model = PdfModel.load(weights_dir)
        self.do_refine = bool(refine)
        # weights older than the arbitration's calibration: the plain BIC weights
        self.arbitration_temper = (self.model.meta.get("arbitration") or {}).get("temper", 1.0)
        self._lock = threading.Lock()

    def predict_batch(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated CNN outputs for represented G(r) X (B, 3, len(R_GRID)): `represent_grid`."""
        X = np.asarray(X, np.float32)
        if X.ndim != 3 or X.shape[1] < self.model.in_channels or X.shape[2] != R_GRID.size:
            raise AnalysisError(f"pdf_ml input must have shape (B, 3, {R_GRID.size}); got {X.shape}")
        with self._lock:
            return self.model.predict(X)

    def analyse(self, measurement: Measurement) -> AnalysisResult:
        if measurement.technique != "pdf":
            raise AnalysisError(f"pdf_ml analyses technique 'pdf'; got {measurement.technique!r}")
        r, g = measurement.require("r_angstrom", "G_per_angstrom2")
        md = measurement.metadata
        q_given, q_assumed = _q_params(md)
        qdamp = None if any(a.startswith("qdamp") for a in q_assumed) else q_given["qdamp_inv_angstrom"]
        cnn = {k: v[0] for k, v in self.predict_batch(represent(r, g, qdamp)[None]).items()}
        classes = self.model.classes
        p = cnn["probabilities"]
        order = np.argsort(-p)
        top = classes[order[0]]
        thr = float(self.model.meta["ood_threshold"])
        ood = bool(cnn["ood_score"] > thr)
        info: dict[str, Any] = {"method": "cnn", "cnn_probabilities": {c: float(v) for c, v in zip(classes, p)},
                                "ood_threshold": thr, "distance_cdf": float(cnn["distance_cdf"]),
                                "warnings": list(md.get("warnings") or [])}
        from simulators.pdf.physics import ELEMENTS

        bulk_nn = {e: ELEMENTS[e].nn_angstrom for e in GUESS_ELEMENTS}
        el = element_of(md)
        if el is None or el not in ELEMENTS:
            guess = min(bulk_nn, key=lambda e: abs(bulk_nn[e] - cnn["nn_distance_angstrom"]))
            info["element_assumed"] = (f"{guess} (nearest bulk nn distance to the estimate; metadata names "
                                       f"{'no element' if el is None else el + ', whose bulk nn distance sdl lacks'})")
            el = guess
        values = {"n_atoms": (float(cnn["n_atoms"]), float(cnn["n_atoms_sd"])),
                  "diameter_nm": (float(cnn["diameter_nm"]), float(cnn["diameter_sd"])),
                  "nn_distance_angstrom": (float(cnn["nn_distance_angstrom"]), float(cnn["nn_distance_sd"])),
                  "adp_angstrom2": (float(cnn["adp_angstrom2"]), float(cnn["adp_sd"]))}
        low_conf = float(p[order[0]]) < LOW_CONFIDENCE
        if r.min() > 1.5 or r.max() < 25.0:
            # training G(r) always cover 1-30 Å; beyond the data the input is zero
            low_conf = True
            info["warnings"].append(f"G(r) covers {r.min():.1f}-{r.max():.1f} Å; pdf_ml was trained on 1-30 Å "
                                    "(the rest is read as G = 0)")
        curves: dict[str, np.ndarray] = {"r_angstrom": r, "intensity": g}  # the report plots "intensity" vs the x array
        rw_value = float("nan")
        refined_expansion = None
        motif = top
        p_final = p
        if self.do_refine and not ood and top != "other" and "library" in self.model.meta:
            cands = refine_candidates(classes, p)
            try:
                ref = refine(r, g, md, cands, el, values["n_atoms"][0], values["nn_distance_angstrom"][0],
                             values["adp_angstrom2"][0], p={c: float(v) for c, v in zip(classes, p)},
                             temper=self.arbitration_temper)
            except (ValueError, RuntimeError, np.linalg.LinAlgError, AnalysisError) as exc:
                info["refinement_error"] = f"{type(exc).__name__}: {exc}"
                ref = None
                low_conf = True
            if ref is not None:
                best = ref["best"]
                el_built = el
                if "element_assumed" in info:  # re-guess from the refined bond length
                    bond = best["expansion"] * ELEMENTS[el_built].nn_angstrom
                    guess = min(bulk_nn, key=lambda e: abs(bulk_nn[e] - bond))
                    info["element_assumed"] = info["element_assumed"].replace(
                        el + " (nearest bulk nn distance to the estimate", guess + " (bulk nn distance nearest to the refined bond length")
                    el = guess
                motif = best["motif"]
                rw_value = best["rw"]
                nn = best["nn_distance_angstrom"]
                # bond length of the refined cluster over the element's bulk nn distance
                refined_expansion = best["expansion"] * ELEMENTS[el_built].nn_angstrom / ELEMENTS[el].nn_angstrom
                # n_atoms and diameter stay the CNN's: the library's sizes are discrete (held-out median
                # errors 6.3 % / 2.9 % against 8.4 % / 4.8 % for the refined cluster's); bond length and
                # U_iso come from the refinement (nn distance 0.0008 Å against 0.004 Å)
                values.update(nn_distance_angstrom=(nn, best["s_sd"] * nn / best["s"]),
                              adp_angstrom2=(best["u"], best["u_sd"]))
                info.update(method="cnn+debye_refinement", q_params=ref["q"], q_assumed=ref["q_assumed"],
                            refined=[{k: v for k, v in c.items() if k != "fit"} for c in ref["tried"]],
                            scale=best["scale"])
                curves["fit"] = best["fit_full"]
                p_final = np.array([ref["probabilities"].get(c, float(v)) for c, v in zip(classes, p)])
                info["arbitration"] = ref["arbitration"]
                if rw_value > RW_POOR:
                    low_conf = True
                    info["warnings"].append(f"refined Rw {rw_value:.2f} > {RW_POOR}: the best library cluster does "
                                            "not explain this G(r) well")
                if motif != top:
                    info["motif_changed_by_refinement"] = f"{top} -> {motif}"
                # the calibrated CNN probability reweighed by the fits: two motifs that fit about
                # equally well (or a CNN that the fits overrule only narrowly) leave the answer open
                close = ref["arbitration"].get("closest")
                if close and close["ambiguous"]:
                    # another motif's library cluster explains the G(r) within the noise: the data do not
                    # decide, the network's shape prior does (truncated octahedra are cuts of the fcc
                    # lattice; a faulted hcp stack fits an fcc one), and that prior does not transfer to
                    # shapes outside its training pool
                    low_conf = True
                    info["ambiguous_motifs"] = [motif, close["motif"]]
                    info["warnings"].append(f"{close['motif']} fits this G(r) as well as {motif} (χ² difference "
                                            f"{close['delta_chi2']:.1f} <= {AMBIGUOUS_DCHI2:g}): the motif rests on "
                                            "the network alone")
                if float(p_final.max()) < LOW_CONFIDENCE:
                    low_conf = True
                    runner = classes[int(np.argsort(-p_final)[1])]
                    info["warnings"].append(f"{motif} and {runner} fit about equally well "
                                            f"(p = {p_final.max():.2f} / {np.sort(p_final)[-2]:.2f} after refinement)")
        flags = (["ood"] if ood else []) + (["low_confidence"] if low_conf else [])
        nn, nn_sd = values["nn_distance_angstrom"]
        # without refinement: the CNN's mean first-shell distance over the bulk one (biased up by the
        # 1-5 % strain of icosahedra)
        expansion = refined_expansion if refined_expansion is not None else nn / ELEMENTS[el].nn_angstrom
        info["element"] = el

        def d(name, v, sd, unit):
            return Descriptor(name=f"pdf.{name}", value=float(v), uncertainty=_finite(sd), unit=unit,
                              flags=list(flags), analyser=self.name)

        descs = [Descriptor(name="pdf.motif", value=motif, flags=list(flags), analyser=self.name,
                            probabilities={c: float(v) for c, v in zip(classes, p_final)}),
                 d("n_atoms", *values["n_atoms"], "atoms"),
                 d("diameter_nm", *values["diameter_nm"], "nm"),
                 d("nn_distance_angstrom", nn, nn_sd, "Å"),
                 d("expansion", expansion, nn_sd / nn * expansion, None),
                 d("adp_angstrom2", *values["adp_angstrom2"], "Å²")]
        if math.isfinite(rw_value):
            descs.append(d("rw", rw_value, None, None))
        descs.append(Descriptor(name="pdf.ood_score", value=float(cnn["ood_score"]), flags=["ood"] if ood else [],
                                analyser=self.name))
        return AnalysisResult(analyser=self.name, descriptors=descs, curves=curves, info=info)


def refine_candidates(classes: Sequence[str], p: np.ndarray) -> list[str]:
    """The motifs the refinement tries: the CNN's top MAX_CANDIDATES motifs ("other" never), the first
    two always (the runner-up however improbable: whether it fits as well is what tells an honest
    answer from one that rests on the network alone), the third when its calibrated probability is
    at least CANDIDATE_FLOOR."""
    order = [i for i in np.argsort(-np.asarray(p)) if classes[i] != "other"][:MAX_CANDIDATES]
    return [classes[i] for k, i in enumerate(order) if k < 2 or p[i] >= CANDIDATE_FLOOR]


def neighbouring_clusters(motif: str, element: str, n_atoms: float, k: int = 3, **shape: Any) -> list[Any]:
    """The `k` distinct library clusters of `motif` (simulators.pdf.physics.build_cluster, bulk bond
    length, extra `shape` keywords such as hcp c_over_a) nearest in atom count to `n_atoms` in log
    size: the nearest, and its neighbours."""
    from simulators.pdf import physics

    if k == 1:  # the nearest size only: the one cut or ladder shape nearest `n_atoms`
        try:
            return [physics.build_cluster(motif, element, max(13, int(round(n_atoms))), **shape)]
        except ValueError:
            pass
    found: dict[int, Any] = {}
    for f in np.exp(np.linspace(np.log(0.45), np.log(2.2), 13)):
        try:
            atoms = physics.build_cluster(motif, element, max(13, int(round(n_atoms * f))), **shape)
        except ValueError:  # no such cluster of this motif near that size
            continue
        found.setdefault(len(atoms), atoms)
    sizes = sorted(found)
    if not sizes:
        raise AnalysisError(f"no {motif} cluster of {element} near {n_atoms:.0f} atoms")
    i = int(np.argmin([abs(math.log(n / max(n_atoms, 1.0))) for n in sizes]))
    lo = max(0, min(i - (k - 1) // 2, len(sizes) - k))
    return [found[n] for n in sizes[lo:lo + k]]


def effective_points(resid: np.ndarray, n_max: float) -> float:
    """Independent points in a residual curve: its length over the integrated autocorrelation time
    1 + 2 Σ ρ_k (summed until ρ first drops below 0), at most `n_max` (the Nyquist count of G(r),
    r range·Qmax/π) and at least 4. A misfit correlated over a peak width counts once per peak, not
    once per grid point."""
    x = np.asarray(resid, float) - float(np.mean(resid))
    v = float(x @ x)
    if not v > 0:
        return float(n_max)
    tau = 1.0
    for k in range(1, x.size // 2):
        rho = float(x[:-k] @ x[k:]) / v
        if rho <= 0:
            break
        tau += 2.0 * rho
    return float(np.clip(x.size / tau, 4.0, n_max))


def pair_key(a: str, b: str) -> str:
    """The key of a motif pair in the arbitration's temper table ("fcc|octahedral")."""
    return "|".join(sorted((a, b)))


def arbitrate(p: dict[str, float], ssr: dict[str, float], n_eff: float, n_params: int = 3,
              temper: float | dict[str, float] = 1.0) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The CNN's calibrated motif probabilities `p` reweighed by the refined fits of the candidate
    motifs (`ssr`: each motif's lowest Σ(G_obs − G_calc)², same points): within the candidates'
    total probability each gets p_c exp(−λ_c (BIC_c − BIC_best)/2), BIC_c = χ²_c + k ln n_eff with
    χ²_c = (n_eff − k) SSR_c / SSR_best, i.e. the noise variance estimated from the best fit's
    residual over its `n_eff` independent points (`effective_points`; as saxs_ml.arbitrate's ĉ).
    λ_c ("temper", ≤ 1) is how far fit differences between motif c and the best-fitting motif can be
    trusted: the library holds idealised shapes, so some differences come from the library rather
    than from the data. A number applies to every pair; a dict maps `pair_key`s to λ ("*": the
    rest, default 0), fitted on simulated G(r) by `sdl train pdf` (meta["arbitration"]["temper"]).
    The other classes keep their probability. Returns (new probabilities, {motif: {"chi2", "bic"}})."""
    best_ssr = max(min(ssr.values()), 1e-300)
    dof = max(n_eff - n_params, 1.0)
    bic = {c: dof * v / best_ssr + n_params * math.log(max(n_eff, 2.0)) for c, v in ssr.items()}
    return reweigh(p, bic, temper), {c: {"chi2": float(dof * ssr[c] / best_ssr), "bic": float(bic[c])} for c in ssr}


def reweigh(p: dict[str, float], bic: dict[str, float], temper: float | dict[str, float] = 1.0) -> dict[str, float]:
    """`arbitrate`'s reweighing of the probabilities `p` of the motifs in `bic` (their BIC)."""
    best = min(bic, key=bic.get)

    def lam(c: str) -> float:
        if not isinstance(temper, dict):
            return float(temper)
        return float(temper.get(pair_key(c, best), temper.get("*", 0.0)))

    score = {c: lam(c) * (bic[c] - bic[best]) - 2.0 * math.log(max(float(p.get(c, 0.0)), 1e-12)) for c in bic}
    lo = min(score.values())
    w = {c: math.exp(-0.5 * (v - lo)) for c, v in score.items()}
    mass = sum(float(p.get(c, 0.0)) for c in bic)
    out = dict(p)
    for c in bic:
        out[c] = mass * w[c] / sum(w.values())
    return out


def refine(r: np.ndarray, g: np.ndarray, metadata: dict[str, Any], motifs: Sequence[str], element: str,
           n_atoms: float, nn_distance: float, adp: float, p: dict[str, float] | None = None,
           temper: float | dict[str, float] = 1.0) -> dict[str, Any]:
    """Refine each candidate motif's library clusters nearest in size to `n_atoms` (the nearest, one
    smaller, one larger; hcp and fcc in the VARIANTS, c/a and cut centres, and the STACKINGS, faulted
    and twinned stacks, on the nearest size first) against G(r) over 1.5–30 Å, then
    `arbitrate` between the motifs with the CNN's probabilities `p` (uniform when None) as prior.
    Returns {"best" (the most probable motif's best cluster), "tried", "probabilities" (reweighed),
    "arbitration" ({"n_eff", "motifs": {motif: rw, chi2, bic, p_cnn, p}}), "q", "q_assumed"}."""
    from simulators.pdf import physics

    q, q_assumed = _q_params(metadata)
    sel = (r >= 1.5) & (r <= 30.0)
    if sel.sum() < 40:
        raise AnalysisError("G(r) has fewer than 40 points between 1.5 and 30 Å to refine against")
    rr, gg = r[sel], g[sel]
    nn0 = physics.ELEMENTS[element].nn_angstrom
    s0 = float(np.clip(nn_distance / nn0, 0.9, 1.1))
    u0 = float(np.clip(adp, 1e-3, 0.04))
    tried = []

    def fit(motif: str, cluster: Any, shape: dict[str, Any]) -> dict[str, Any]:
        pos = np.asarray(cluster.positions)
        f = fit_cluster(pos, rr, gg, q, s0=s0, u0=u0)
        # as simulators.pdf.dataset labels them: nn distance = mean first-shell distance (icosahedra are
        # strained), diameter = (largest distance + one bond) / 10
        c = {"motif": motif, "n_atoms": len(pos), **shape, "rw": f["rw"], "s": f["s"], "s_sd": f["s_sd"],
             "u": f["u"], "u_sd": f["u_sd"], "scale": f["scale"], "nn_distance_angstrom": f["s"] * f["nn_mean"],
             "expansion": f["s"], "diameter_nm": (f["d_max"] + nn0) * f["s"] / 10.0, "nfev": f["nfev"],
             "_pos": pos, "_resid": f["fit"] - gg, "_shape": dict(shape)}
        tried.append(c)
        return c

    for motif in motifs:
        if motif in VARIANTS or motif in STACKINGS:
            # the variants on the nearest size first (hcp: c/a, fcc: cut centres), then the stacking
            # variants (hcp at the best c/a), then the neighbouring sizes of the best of all
            near = [fit(motif, neighbouring_clusters(motif, element, n_atoms, k=1, **v)[0], v)
                    for v in VARIANTS.get(motif, ({},))]
            ca = {k: v for k, v in min(near, key=lambda c: c["rw"])["_shape"].items() if k == "c_over_a"}
            near += [fit(motif, neighbouring_clusters(motif, element, n_atoms, k=1, **{**ca, **v})[0], {**ca, **v})
                     for v in STACKINGS.get(motif, ())]
            bestv = min(near, key=lambda c: c["rw"])
            v = bestv["_shape"]
            for cluster in neighbouring_clusters(motif, element, n_atoms, **v):
                if len(cluster) != bestv["n_atoms"]:
                    fit(motif, cluster, v)
        else:
            for cluster in neighbouring_clusters(motif, element, n_atoms):
                fit(motif, cluster, {})
    if not tried:
        raise AnalysisError(f"no library cluster for motifs {list(motifs)}")
    best_by = {m: min((c for c in tried if c["motif"] == m), key=lambda c: c["rw"])
               for m in dict.fromkeys(c["motif"] for c in tried)}
    ssr = {m: float(np.sum(c["_resid"] ** 2)) for m, c in best_by.items()}
    overall = min(best_by.values(), key=lambda c: c["rw"])
    n_ind = max((rr[-1] - rr[0]) * q["qmax_inv_angstrom"] / np.pi, 4.0)
    n_eff = effective_points(overall["_resid"], n_ind)
    prior = dict(p) if p is not None else {m: 1.0 / len(best_by) for m in best_by}
    post, stats = arbitrate(prior, ssr, n_eff, temper=temper)
    winner = max(best_by, key=lambda m: post[m])
    best = dict(best_by[winner])
    full = DebyeGr(best.pop("_pos"), r, q["qmin_inv_angstrom"], q["qmax_inv_angstrom"], q["qdamp_inv_angstrom"])
    best.pop("_resid")
    best["fit_full"] = best["scale"] * full(best["s"], best["u"])
    best.pop("_shape", None)
    for c in tried:
        c.pop("_pos", None)
        c.pop("_resid", None)
        c.pop("_shape", None)
    arb = {"n_eff": round(n_eff, 1), "temper": temper, "motifs": {m: {"rw": best_by[m]["rw"], **stats[m], "p_cnn": float(prior.get(m, 0.0)),
                                                    "p": float(post[m])} for m in best_by}}
    rivals = [m for m in best_by if m != winner]
    if rivals:  # the other motif that fits the G(r) most nearly as well as the reported one (or better)
        rival = min(rivals, key=lambda m: stats[m]["chi2"])
        dchi2 = float(stats[rival]["chi2"] - stats[winner]["chi2"])
        arb["closest"] = {"motif": rival, "delta_chi2": round(dchi2, 3), "ambiguous": bool(dchi2 <= AMBIGUOUS_DCHI2)}
    return {"best": best, "tried": tried, "probabilities": post, "arbitration": arb, "q": q, "q_assumed": q_assumed}


def _finite(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
