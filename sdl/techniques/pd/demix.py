"""Demixing a series of powder patterns (e.g. one composition or temperature series of a campaign)
into component patterns and per-sample weights with non-negative matrix factorisation
(scikit-learn NMF), with the peak-shift problem handled.

The peak-shift problem: across a solid-solution series (Ce1-xZrxO2, Vegard's law) or a thermal
series, one phase's peaks move. Plain NMF cannot shift a component, so it splits one moving phase
into several components (its "end members"). Here:

1. Each pattern's background is removed (rolling minimum, smoothed) and the pattern normalised to
   unit integrated intensity, so weights are intensity fractions (rows of `weights` sum to 1).
2. With a Q axis given, patterns are resampled onto a uniform ln Q grid: an isotropic lattice
   change is then a pure translation, the same for every peak of the phase.
3. NMF is fitted with k components; components that are shifted copies of each other (cosine
   similarity ≥ `merge_threshold` at some translation within ±`max_shift` in ln Q, i.e. ±3 % in
   lattice parameter by default) are merged: their weights add, and the merged pattern is the
   weight-averaged pattern after aligning the members. The per-sample weighted mean translation
   is reported as a relative lattice scale (`info["lattice_scale"]`).
4. With a Q axis, a shift-invariant NMF polish follows (per sample and component translation,
   NNLS weights, component update on aligned residuals; a few alternations), so the components
   are sharp patterns at the mid-series lattice and the weights are not smeared by the shift.
5. The number of components, if not given, is the smallest k whose relative reconstruction
   error is within 10 % (plus 0.005) of the best error up to `max_components`; if given, k grows
   from `n_components` until the merged count equals `n_components` (at most +3).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdl.analysis.nmf import nmf
from sdl.errors import AnalysisError

__all__ = ["demix", "remove_background", "match_components"]


def remove_background(y: np.ndarray, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y - background, background) per row, the background being a smoothed rolling minimum."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    y = np.atleast_2d(np.asarray(y, dtype=float))
    n = y.shape[1]
    win = int(window or max(15, n // 25))
    b = minimum_filter1d(y, size=win, axis=1, mode="nearest")
    b = uniform_filter1d(b, size=win, axis=1, mode="nearest")
    b = np.minimum(b, y)  # never above the data
    b = uniform_filter1d(b, size=max(3, win // 3), axis=1, mode="nearest")
    return np.clip(y - b, 0.0, None), b


def _shifted_cosine(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Best cosine similarity of a and b shifted by lag (b[i + lag] against a[i]), |lag| ≤ max_lag."""
    best, best_lag = -1.0, 0
    na = np.linalg.norm(a)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            x, z = a[: a.size - lag], b[lag:]
        else:
            x, z = a[-lag:], b[: b.size + lag]
        den = np.linalg.norm(x) * np.linalg.norm(z)
        if den <= 0:
            continue
        c = float(x @ z / den)
        if c > best:
            best, best_lag = c, lag
    return best * (np.linalg.norm(a[max_lag:-max_lag or None]) / max(na, 1e-300)) ** 0, best_lag


def _shift(v: np.ndarray, lag: int) -> np.ndarray:
    """v translated so that out[i] = v[i + lag] (zeros shifted in)."""
    out = np.zeros_like(v)
    if lag >= 0:
        out[: v.size - lag] = v[lag:]
    else:
        out[-lag:] = v[: v.size + lag]
    return out


def _merge(W: np.ndarray, H: np.ndarray, max_lag: int, threshold: float):
    k = H.shape[0]
    parent = list(range(k))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lags = np.zeros((k, k), dtype=int)
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            c, lag = _shifted_cosine(H[i], H[j], max_lag)
            lags[i, j], lags[j, i] = lag, -lag
            if c >= threshold and lag != 0:
                parent[find(j)] = find(i)
                pairs.append((i, j, round(c, 4), int(lag)))
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(find(i), []).append(i)
    comps, weights, mean_lag = [], [], []
    for root, members in groups.items():
        ref = max(members, key=lambda m: W[:, m].sum())
        acc = np.zeros(H.shape[1])
        wsum = 0.0
        lag_w = np.zeros(W.shape[0])
        for m in members:
            lag = 0 if m == ref else lags[ref, m]
            tot = W[:, m].sum()
            acc += tot * _shift(H[m], lag)
            wsum += tot
            lag_w += W[:, m] * (0 if m == ref else lag)
        wsample = W[:, members].sum(axis=1)
        comps.append(acc / max(wsum, 1e-300))
        weights.append(wsample)
        mean_lag.append(np.where(wsample > 0, lag_w / np.maximum(wsample, 1e-300), 0.0))
    return np.array(comps), np.array(weights).T, np.array(mean_lag).T, pairs


def _best_lag(target: np.ndarray, comp: np.ndarray, max_lag: int) -> int:
    """The lag (out[i] = comp[i + lag]) whose shifted comp best matches target (least squares
    with a free non-negative amplitude, i.e. the largest positive cross-correlation)."""
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        z = _shift(comp, lag)
        c = float(target @ z)
        if c > best:
            best, best_lag = c, lag
    return best_lag


def _shift_refine(X: np.ndarray, H: np.ndarray, max_lag: int, n_iter: int = 6):
    """Shift-invariant NMF polish: each (sample, component) gets its own translation (lag);
    alternates lags (coordinate descent on cross-correlation), weights (NNLS) and component
    patterns (non-negative least squares update on aligned residuals)."""
    from scipy.optimize import nnls

    S, N = X.shape
    K = H.shape[0]
    H = np.clip(H, 0, None)
    H = H / np.maximum(H.sum(1, keepdims=True), 1e-300)
    lags = np.zeros((S, K), dtype=int)
    W = np.zeros((S, K))
    for s in range(S):
        W[s], _ = nnls(H.T, X[s])
    for _ in range(n_iter):
        for s in range(S):
            for k in range(K):
                others = sum(W[s, j] * _shift(H[j], lags[s, j]) for j in range(K) if j != k) if K > 1 else 0.0
                lags[s, k] = _best_lag(X[s] - others, H[k], max_lag)
            A = np.stack([_shift(H[k], lags[s, k]) for k in range(K)], 1)
            W[s], _ = nnls(A, X[s])
        # centre each component's lags on their weighted mean, so the pattern sits mid-series
        for k in range(K):
            tot = W[:, k].sum()
            if tot <= 0:
                continue
            c = int(round(float((W[:, k] * lags[:, k]).sum() / tot)))
            if c:
                H[k] = _shift(H[k], c)
                lags[:, k] -= c
        for k in range(K):
            num = np.zeros(N)
            den = 0.0
            for s in range(S):
                if W[s, k] <= 0:
                    continue
                others = sum(W[s, j] * _shift(H[j], lags[s, j]) for j in range(K) if j != k) if K > 1 else 0.0
                num += W[s, k] * _shift(X[s] - others, -lags[s, k])
                den += W[s, k] ** 2
            if den > 0:
                H[k] = np.clip(num / den, 0, None)
        sums = np.maximum(H.sum(1, keepdims=True), 1e-300)
        H = H / sums
        W = W * sums.T
    err = float(np.linalg.norm(X - np.stack([sum(W[s, k] * _shift(H[k], lags[s, k]) for k in range(K)) for s in range(S)]))
                / max(np.linalg.norm(X), 1e-300))
    return H, W, lags, err


def demix(
    series_patterns: np.ndarray,
    n_components: int | None = None,
    *,
    q: np.ndarray | None = None,
    subtract_background: bool = True,
    max_components: int = 8,
    max_shift: float = 0.03,
    merge_threshold: float = 0.9,
    shift_refine: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Components (K, N) on the input axis (unit integrated intensity each), weights (S, K)
    (intensity fractions, rows sum to 1) and info (k fitted, merges, lattice scale per sample and
    component, reconstruction error, backgrounds)."""
    X = np.asarray(series_patterns, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 20:
        raise AnalysisError(f"demix needs a (samples >= 2, points >= 20) array; got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise AnalysisError(f"demix input holds {int(np.count_nonzero(~np.isfinite(X)))} non-finite value(s); mask them first")
    if n_components is not None and not (1 <= int(n_components) <= min(X.shape)):
        raise AnalysisError(f"n_components={n_components} must be between 1 and {min(X.shape)}")
    N = X.shape[1]
    if subtract_background:
        Xc, bkg = remove_background(X)
    else:
        Xc, bkg = np.clip(X, 0, None), np.zeros_like(X)
    # resample to ln Q so that a lattice change is a translation
    if q is not None:
        q = np.asarray(q, dtype=float)
        if q.shape != (N,) or np.any(q <= 0) or np.any(np.diff(q) <= 0):
            raise AnalysisError("demix q must be positive, strictly ascending and match the pattern length")
        lnq = np.linspace(np.log(q[0]), np.log(q[-1]), N)
        Xl = np.array([np.interp(lnq, np.log(q), row) for row in Xc])
        step = float(lnq[1] - lnq[0])
    else:
        Xl = Xc
        step = None
    norms = Xl.sum(axis=1, keepdims=True)
    if np.any(norms <= 0):
        raise AnalysisError("demix: a pattern has no intensity above its background")
    Xn = Xl / norms
    max_lag = int(round(max_shift / step)) if step else max(1, int(round(max_shift * N)))
    kmax = int(min(max_components, X.shape[0], N))
    fits = {}

    def fit(k):
        if k not in fits:
            W, H, err = nmf(Xn, k, seed, max_iter=600, tol=1e-5)
            comps, weights, lag, pairs = _merge(W, H, max_lag, merge_threshold)
            fits[k] = (err, comps, weights, lag, pairs)
        return fits[k]

    if n_components is None:
        errs = {k: fit(k)[0] for k in range(1, kmax + 1)}
        best = min(errs.values())
        k_sel = min(k for k, e in errs.items() if e <= 1.10 * best + 0.005)
    else:
        k_sel = int(n_components)
        for k in range(int(n_components), min(int(n_components) + 3, kmax) + 1):
            k_sel = k
            if fit(k)[1].shape[0] >= int(n_components):
                break
    err, comps, weights, lag, pairs = fit(k_sel)
    method = "nmf+shift_merge"
    if step is not None and shift_refine:
        comps, weights, lag, err = _shift_refine(Xn, comps, max_lag)
        method = "nmf+shift_merge+shift_invariant_refinement"
    # normalise: components to unit sum, weights to intensity fractions
    s = comps.sum(axis=1, keepdims=True)
    s[s <= 0] = 1.0
    comps = comps / s
    weights = weights * s.T
    rows = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(rows > 0, rows, 1.0)
    if q is not None:
        comps = np.array([np.interp(np.log(q), lnq, c) for c in comps])
        comps = comps / np.maximum(comps.sum(axis=1, keepdims=True), 1e-300)
        # a component drawn with lag l (out[i] = comp[i + l]) sits l steps lower in ln Q: a lattice
        # larger by exp(l * step) than the component's (mid-series) pattern
        lattice_scale = np.exp(lag * step)
    else:
        lattice_scale = None
    order = np.argsort(-weights.sum(axis=0))
    comps, weights = comps[order], weights[:, order]
    info = {
        "method": method,
        "n_nmf_components": int(k_sel),
        "n_components": int(comps.shape[0]),
        "merged_pairs": pairs,
        "reconstruction_error": err,
        "errors_by_k": {int(k): float(v[0]) for k, v in sorted(fits.items())},
        "lattice_scale": None if lattice_scale is None else lattice_scale[:, order],
        "background": bkg,
    }
    return comps, weights, info


def match_components(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best one-to-one matching (Hungarian, on cosine similarity): (index into found for each
    truth row, cosine of each pair)."""
    from scipy.optimize import linear_sum_assignment

    a = found / np.maximum(np.linalg.norm(found, axis=1, keepdims=True), 1e-300)
    b = truth / np.maximum(np.linalg.norm(truth, axis=1, keepdims=True), 1e-300)
    cos = b @ a.T
    ri, ci = linear_sum_assignment(-cos)
    idx = np.full(truth.shape[0], -1)
    idx[ri] = ci
    return idx, np.array([cos[i, idx[i]] if idx[i] >= 0 else 0.0 for i in range(truth.shape[0])])


def make_series(n_samples: int = 21, seed: int = 0, *, phases=("CeO2", "ZrO2_tetragonal", "ZrO2_monoclinic"),
                lattice_span: float = 0.02, wavelength: float = 1.5406, counts_max: float = 2e4,
                background_level: float = 0.05, sizes_nm=(25.0, 30.0, 40.0)) -> dict[str, np.ndarray]:
    """A simulated composition series for tests and benchmarks: three phases whose weight
    fractions vary smoothly along the series, the first one's lattice shrinking by
    `lattice_span` (Vegard). Returns q (N,), patterns (S, N), true intensity fractions (S, 3),
    true component patterns (3, N; the first at its intensity-weighted mean lattice) and the
    first phase's lattice scale per sample."""
    from simulators.pd import physics as spd

    rng = np.random.default_rng(np.random.SeedSequence([seed, 77]))
    tt = np.arange(10.0, 80.0 + 1e-9, 0.02)
    q = spd.two_theta_to_q(tt, wavelength)
    t = np.linspace(0, 1, n_samples)
    w = np.stack([np.clip(1 - 1.6 * t, 0, None) + 0.05, np.exp(-((t - 0.5) / 0.22) ** 2), np.clip(1.6 * t - 0.6, 0, None) + 0.05], 1)
    w = w / w.sum(1, keepdims=True)
    scale0 = 1.0 - lattice_span * t
    prof = spd.Profile(wavelength_angstrom=wavelength)
    pats, fr, truth = [], [], []
    for i in range(n_samples):
        comps = [spd.PhaseComponent(p, float(w[i, j]), float(scale0[i]) if j == 0 else 1.0, sizes_nm[j], 5e-4)
                 for j, p in enumerate(phases)]
        v = spd.volume_fractions(comps)
        per = spd.phase_patterns(tt, comps, prof) * v[:, None]
        clean = per.sum(0)
        bkg = background_level * clean.max() * (1.0 - 0.3 * (tt - 10) / 70)
        y, _ = spd.add_poisson_noise(clean + bkg, counts_max, rng)
        pats.append(y)
        fr.append(per.sum(1) / per.sum())
    fr_a = np.array(fr)
    # the shifting phase's reference: its lattice averaged with its intensity share as weight
    s_mid = float((fr_a[:, 0] * scale0).sum() / fr_a[:, 0].sum())
    mid = [spd.PhaseComponent(p, 1.0, s_mid if j == 0 else 1.0, sizes_nm[j], 5e-4) for j, p in enumerate(phases)]
    tc = spd.phase_patterns(tt, mid, prof)
    tc = tc / tc.sum(1, keepdims=True)
    return {"q": q, "two_theta_deg": tt, "patterns": np.array(pats), "fractions": np.array(fr), "components": tc,
            "lattice_scale": scale0, "lattice_scale_mid": s_mid}
