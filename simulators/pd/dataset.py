"""Labelled powder patterns for training and testing the PD analysers: random phase mixtures of a
library measured with the artefacts of real scans (pure physics on simulators.pd.physics).

Artefact regimes (`REGIMES`): "train" is what the network learns from; "test" changes every
artefact level and adds wavelengths that training never saw (a 0.1665 Å synchrotron beam and
Mo Kα), so benchmark figures measure transfer, not memorisation (table in sdl/techniques/pd/train.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from simulators.pd import physics as spd

WAVELENGTHS = {"Cu": 1.5406, "Co": 1.7890, "Mo": 0.7093, "sync": 0.1665}

REGIMES: dict[str, dict[str, Any]] = {
    "train": dict(wavelengths=("Cu", "Co"), W=(0.001, 0.006), bkg=(0.02, 0.25), bkg_order=3, hump=False,
                  counts=(1e3, 1e5), disp_sd=0.05, zero=0.02, strain=(0.0, 2e-3), po=(0.85, 1.15),
                  impurity=(0.15, 0.01, 0.04)),
    "test": dict(wavelengths=("sync", "Mo", "Cu"), W=(0.0003, 0.012), bkg=(0.05, 0.45), bkg_order=5, hump=True,
                 counts=(300, 3e4), disp_sd=0.12, zero=0.04, strain=(0.0, 3e-3), po=(0.75, 1.3),
                 impurity=(0.0, 0.0, 0.0)),
}
SIZE_RANGE_NM = (4.0, 100.0)
MIN_FRACTION = 0.1


@dataclass
class Spec:
    """One simulated measurement: phases and their parameters plus the instrument/artefacts."""

    phases: list[str]
    fractions: list[float]
    lattice_scales: list[float]
    sizes_nm: list[float]
    strain: float
    po: list[float]
    wavelength: float
    caglioti: tuple[float, float, float]
    polarisation: str
    zero_shift: float
    displacement_mm: float
    bkg_coeffs: list[float]
    bkg_level: float
    hump: float
    counts_max: float
    two_theta_range: tuple[float, float]
    impurity_peaks: list[tuple[float, float]] = None  # type: ignore[assignment]  # (Q in Å⁻¹, height / strongest peak)


def _fractions(rng, k):
    while True:
        f = rng.dirichlet(np.ones(k))
        if f.min() >= MIN_FRACTION:
            return f


def n_phases_weights(max_phases: int) -> np.ndarray:
    """Probabilities of 1..max_phases phases in a training mixture (0.45/0.35/0.20 for three)."""
    w = np.array([0.45, 0.35, 0.20, 0.12, 0.08][:max_phases] + [0.05] * max(0, max_phases - 5))
    return w / w.sum()


def random_spec(rng: np.random.Generator, regime: str, q_grid: np.ndarray, library: Sequence[Any],
                lattice_ranges: dict[str, tuple[float, float]], n_phases: int | None = None,
                phases: list[Any] | None = None, wavelengths: Sequence[float] | None = None,
                max_phases: int = 3) -> Spec:
    """A random mixture of 1-`max_phases` of `library`'s phases (names or PhaseDefs; weight fractions >=
    MIN_FRACTION, lattice scales in `lattice_ranges` keyed by name, default 0.99-1.01) measured in
    `regime`'s artefact ranges (`wavelengths` in Å replaces the regime's), on a 2θ scan that covers
    `q_grid` (Å⁻¹) at the drawn wavelength (15 % of scans stop early)."""
    r = REGIMES[regime]
    if phases is None:
        if n_phases is None:
            n_phases = int(rng.choice(np.arange(1, max_phases + 1), p=n_phases_weights(max_phases)))
        n_phases = min(n_phases, len(library))
        phases = [library[i] for i in rng.choice(len(library), size=n_phases, replace=False)]
    k = len(phases)
    fr = _fractions(rng, k) if k > 1 else np.ones(1)
    scales = []
    for p in phases:
        lo, hi = lattice_ranges.get(getattr(p, "name", p), (0.99, 1.01))
        scales.append(float(rng.uniform(lo, hi)))
    sizes = list(np.exp(rng.uniform(math.log(SIZE_RANGE_NM[0]), math.log(SIZE_RANGE_NM[1]), k)))
    if wavelengths:
        lam = float(wavelengths[int(rng.integers(len(wavelengths)))])
        wl_name = "sync" if lam < 0.5 else "lab"
    else:
        wl_name = str(rng.choice(r["wavelengths"]))
        lam = WAVELENGTHS[wl_name]
    if wl_name == "sync":
        cag = (0.0, 0.0, float(rng.uniform(2e-5, 8e-5)))
        pol = "synchrotron"
        disp = 0.0
        zero = float(rng.uniform(-0.004, 0.004))
    else:
        W = float(np.exp(rng.uniform(math.log(r["W"][0]), math.log(r["W"][1]))))
        cag = (float(rng.uniform(0.0, 2.0)) * W, -float(rng.uniform(0.0, 0.6)) * W, W)
        pol = "unpolarised"
        disp = float(rng.normal(0.0, r["disp_sd"]))
        zero = float(rng.uniform(-r["zero"], r["zero"]))
    tt_full = (float(np.nanmin(_tt(q_grid, lam))), float(np.nanmax(_tt(q_grid, lam))))
    # most scans cover the whole grid; some stop early (lab scans to 70°, say)
    if rng.random() < 0.15:
        q_hi = float(rng.uniform(3.8, q_grid[-1]))
        tt_range = (tt_full[0], float(_tt(np.array([q_hi]), lam)[0]))
    else:
        tt_range = tt_full
    order = r["bkg_order"]
    coeffs = [1.0] + list(rng.normal(0, 0.3, order) / (1 + np.arange(order)))
    p_imp, h_lo, h_hi = r.get("impurity", (0.0, 0.0, 0.0))
    impurity = []
    if p_imp > 0 and rng.random() < p_imp:  # weak peaks of an unknown minor phase
        impurity = [(float(rng.uniform(q_grid[0], q_grid[-1])), float(rng.uniform(h_lo, h_hi)))
                    for _ in range(int(rng.integers(1, 4)))]
    return Spec(
        phases=phases, fractions=list(map(float, fr)), lattice_scales=scales, sizes_nm=list(map(float, sizes)),
        strain=float(rng.uniform(*r["strain"])) if rng.random() < 0.7 else 0.0,
        po=[float(rng.uniform(*r["po"])) if rng.random() < 0.5 else 1.0 for _ in phases],
        wavelength=lam, caglioti=cag, polarisation=pol, zero_shift=zero, displacement_mm=disp,
        bkg_coeffs=coeffs, bkg_level=float(rng.uniform(*r["bkg"])),
        hump=float(rng.uniform(0, 0.3)) if r["hump"] else 0.0,
        counts_max=float(np.exp(rng.uniform(math.log(r["counts"][0]), math.log(r["counts"][1])))),
        two_theta_range=tt_range, impurity_peaks=impurity,
    )


def _tt(q, lam):
    return spd.q_to_two_theta(q, lam)


def simulate_spec(spec: Spec, two_theta: np.ndarray, rng: np.random.Generator, noise: bool = True):
    """(intensity, sigma, per-phase noiseless patterns (P, N) scaled as in the sum, background)."""
    comps = [spd.PhaseComponent(p, f, s, L, spec.strain, po)
             for p, f, s, L, po in zip(spec.phases, spec.fractions, spec.lattice_scales, spec.sizes_nm, spec.po)]
    prof = spd.Profile(wavelength_angstrom=spec.wavelength, caglioti_uvw_deg2=spec.caglioti,
                       zero_shift_deg=spec.zero_shift, displacement_mm=spec.displacement_mm,
                       polarisation=spec.polarisation)
    v = spd.volume_fractions(comps)
    pats = spd.phase_patterns(two_theta, comps, prof) * v[:, None]
    peaks = pats.sum(axis=0)
    pmax = float(peaks.max()) if peaks.size else 1.0
    if spec.impurity_peaks:
        q_imp = np.array([q for q, _ in spec.impurity_peaks])
        tt_imp = spd.q_to_two_theta(q_imp, spec.wavelength)
        ok = np.isfinite(tt_imp)
        if ok.any():
            # pseudo-Voigt (η = 0.5) of FWHM 4 steps + 0.05°, scaled to the drawn height at its centre
            h = np.full(int(ok.sum()), float(np.median(np.diff(two_theta))) * 4 + 0.05)
            heights = np.array([hh for (_, hh), k in zip(spec.impurity_peaks, ok) if k])
            centre = (0.5 * 2 / np.pi + 0.5 * 2 * math.sqrt(math.log(2) / math.pi)) / h  # unit-area peak at 0
            peaks = peaks + pmax * spd._pv_sum(two_theta, tt_imp[ok], heights / centre, h, np.full(h.size, 0.5))
    bkg = spd.chebyshev_background(two_theta, spec.bkg_coeffs)
    bkg = bkg - min(0.0, float(bkg.min()))
    bkg = bkg / max(float(bkg.max()), 1e-12)
    if spec.hump > 0:
        c = 0.5 * (two_theta.min() + two_theta.max()) * 0.6 + 0.4 * two_theta.min()
        w = 0.15 * (two_theta.max() - two_theta.min())
        bkg = bkg + spec.hump * np.exp(-0.5 * ((two_theta - c) / w) ** 2)
    bkg = spec.bkg_level * pmax * bkg
    expected = peaks + bkg
    if not noise:
        return expected, np.sqrt(np.maximum(expected, 1e-12)), pats, bkg
    inten, sig = spd.add_poisson_noise(expected, spec.counts_max, rng)
    return inten, sig, pats, bkg
