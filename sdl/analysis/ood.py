"""Mahalanobis out-of-distribution distance shared by the ML analysers: an embedding's distance to
the nearest in-library class mean under one shared covariance (its inverse `prec` = L Lᵀ, so the
distance is Euclidean after z = x L)."""

from __future__ import annotations

import numpy as np


def whitening(prec, mean):
    """(L, mean @ L) for a precision matrix `prec` (d, d) and class means `mean` (classes, d), torch tensors."""
    import torch

    L = torch.linalg.cholesky(prec.double()).float()
    return L, mean @ L


def nearest_class_distance(emb, whitened) -> np.ndarray:
    """Distance of each embedding row (torch, (n, d)) to the nearest class mean, given `whitening`'s result."""
    import torch

    L, mz = whitened
    z = emb @ L
    d2 = (z * z).sum(1, keepdim=True) - 2 * z @ mz.T + (mz * mz).sum(1)[None, :]
    return torch.sqrt(d2.clamp_min(0).min(dim=1).values).numpy()
