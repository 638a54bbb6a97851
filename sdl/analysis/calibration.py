"""Calibration figures shared by the ML analysers' trainers and benchmarks."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class probability (equal-width bins): the mean |confidence - accuracy|, weighted by bin size."""
    return _ece(p.max(axis=1), (p.argmax(axis=1) == y).astype(float), bins)


def ece_noise_floor(p: np.ndarray, bins: int = 15, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """The ECE that a perfectly calibrated classifier with these top-class probabilities shows on as many samples
    by chance (each answer right with its own probability; `draws` such outcome sets): (mean, 95th percentile).
    ECE is biased upwards on a finite set: a measured one near the floor is no evidence of miscalibration, and a goal
    below the floor cannot be told from chance on a set of this size (the floor shrinks about as 1/sqrt(n))."""
    conf = np.asarray(p, float).max(axis=1)
    rng = np.random.default_rng(seed)
    got = [_ece(conf, (rng.random(conf.size) < conf).astype(float), bins) for _ in range(draws)]
    return float(np.mean(got)), float(np.percentile(got, 95))


def _ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(ece)
