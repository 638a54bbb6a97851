"""Non-negative matrix factorisation of a measurement series, shared by the techniques' demixing."""

from __future__ import annotations

import numpy as np


def nmf(X: np.ndarray, k: int, seed: int, *, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """X (n, m) >= 0 ≈ W (n, k) @ H (k, m) by scikit-learn's NMF (nndsvda start, convergence warnings
    silenced: the relative residual returned says how good the factorisation is). Returns W, H and
    ||X - WH|| / ||X||."""
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    model = NMF(n_components=k, init="nndsvda", max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        W = model.fit_transform(X)
    H = model.components_
    return W, H, float(np.linalg.norm(X - W @ H) / max(np.linalg.norm(X), 1e-300))
