"""Demixing a series of PDFs (e.g. a growth series in which the cluster motif changes) into
component G(r) and per-sample fractions with non-negative matrix factorisation (scikit-learn NMF),
the interface of sdl.techniques.pd.demix.

G(r) is negative between peaks, so NMF cannot take it as it is. What is done, and why it is exact:

1. Each G(r) is put on one r axis (the first sample's) over r ≥ `rmin` (1.5 Å: below the first
   peak there is only termination noise).
2. One offset m (the series' lowest value) is subtracted from every sample: X' = G − m ≥ 0. For a
   mixture G_i = Σ_k w_ik C_k whose fractions sum to 1, G_i − m = Σ_k w_ik (C_k − m): the shifted
   data are the same mixture of the shifted components, so NMF of X' recovers C_k − m. (Shifting
   each sample by its own minimum, or using |G|, would break this.) Samples must share one scale
   (the same data reduction); then fractions are fractions of the scattering.
3. NMF with k components; the per-component scales are fixed so that each sample's weights sum
   to 1 as closely as possible (non-negative least squares), then rows are renormalised to 1 and
   the components shifted back: C_k = H_k + m.
4. k, if not given, is the smallest whose relative reconstruction error is within 10 % (plus 0.005)
   of the best error up to `max_components`.

The components can then be analysed like any G(r) (pdf_ml: `demixed_measurements`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdl.analysis.nmf import nmf
from sdl.errors import AnalysisError

__all__ = ["demix", "match_components", "make_series"]


def demix(series_g: np.ndarray, n_components: int | None = None, *, r: np.ndarray | None = None,
          rmin: float = 1.5, max_components: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Components (K, N') G(r) on r ≥ rmin, fractions (S, K) (rows sum to 1) and info (k, errors by k,
    offset, the r axis used, the reconstruction error) from a series (S, N) of G(r) on one axis `r` (Å)."""
    from scipy.optimize import nnls

    X = np.asarray(series_g, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 20:
        raise AnalysisError(f"demix needs a (samples >= 2, points >= 20) array of G(r); got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise AnalysisError(f"demix input holds {int(np.count_nonzero(~np.isfinite(X)))} non-finite value(s); mask them first")
    if n_components is not None and not (1 <= int(n_components) <= min(X.shape)):
        raise AnalysisError(f"n_components={n_components} must be between 1 and {min(X.shape)}")
    if r is not None:
        r = np.asarray(r, dtype=float)
        if r.shape != (X.shape[1],) or np.any(np.diff(r) <= 0):
            raise AnalysisError("demix r must be strictly ascending and match the length of each G(r)")
        keep = r >= rmin
        X, r = X[:, keep], r[keep]
    offset = float(X.min())
    Xs = X - offset
    kmax = int(min(max_components, X.shape[0]))
    fits: dict[int, tuple] = {}

    def fit(k):
        if k not in fits:
            W, H, err = nmf(Xs, k, seed, max_iter=1000, tol=1e-6)
            c, _ = nnls(W, np.ones(W.shape[0]))  # scales making each sample's fractions sum to ~1
            c = np.where(c > 0, c, 1.0)
            W, H = W * c[None, :], H / c[:, None]
            W = W / np.maximum(W.sum(axis=1, keepdims=True), 1e-300)
            fits[k] = (err, W, H)
        return fits[k]

    if n_components is None:
        errs = {k: fit(k)[0] for k in range(1, kmax + 1)}
        best = min(errs.values())
        k_sel = min(k for k, e in errs.items() if e <= 1.10 * best + 0.005)
    else:
        k_sel = int(n_components)
    err, W, H = fit(k_sel)
    comps = H + offset
    order = np.argsort(-W.sum(axis=0))
    info = {"method": "nmf of G(r) - min(G) (one offset for the series)", "n_components": int(k_sel),
            "errors_by_k": {int(k): float(v[0]) for k, v in sorted(fits.items())}, "reconstruction_error": err,
            "offset": offset, "r_angstrom": r}
    return comps[order], W[:, order], info


def match_components(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best one-to-one matching (Hungarian, on the correlation coefficient): (index into found for
    each truth row, correlation of each pair)."""
    from scipy.optimize import linear_sum_assignment

    def z(a):
        a = a - a.mean(axis=1, keepdims=True)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)

    cos = z(truth) @ z(found).T
    ri, ci = linear_sum_assignment(-cos)
    idx = np.full(truth.shape[0], -1)
    idx[ri] = ci
    return idx, np.array([cos[i, idx[i]] if idx[i] >= 0 else 0.0 for i in range(truth.shape[0])])


def make_series(n_samples: int = 15, seed: int = 0, *, element: str = "Pt", noise: float = 0.01,
                motifs: tuple[str, ...] = ("icosahedral", "decahedral", "fcc"), n_atoms: int = 300,
                adp_angstrom2: float = 0.006) -> dict[str, np.ndarray]:
    """A simulated growth series for tests and benchmarks: three motifs of about `n_atoms` (built by
    simulators.pdf.physics, G(r) by the Debye equation, Qmax 24 Å⁻¹, Qdamp 0.03 Å⁻¹) whose fractions
    move from the first to the last along the series, plus Gaussian noise (`noise` × max |G|).
    Returns r (N,), G (S, N), fractions (S, 3), components (3, N)."""
    from sdl.techniques.pdf.ml import DebyeGr, R_GRID
    from simulators.pdf import physics

    rng = np.random.default_rng(np.random.SeedSequence([seed, 12]))
    comps = []
    for motif in motifs:
        atoms = physics.build_cluster(motif, element, n_atoms)
        comps.append(DebyeGr(atoms.positions, R_GRID, 0.8, 24.0, 0.03)(1.0, adp_angstrom2))
    comps = np.array(comps)
    t = np.linspace(0, 1, n_samples)
    w = np.stack([np.clip(1 - 1.6 * t, 0, None) + 0.05, np.exp(-((t - 0.5) / 0.22) ** 2),
                  np.clip(1.6 * t - 0.6, 0, None) + 0.05], 1)
    w = w / w.sum(1, keepdims=True)
    G = w @ comps
    G = G + rng.normal(0.0, noise * np.abs(comps).max(), G.shape)
    return {"r": R_GRID.copy(), "G": G, "fractions": w, "components": comps}
