"""Fit the saxs_ml calibration off the training distribution: how confident the whole analyser's top answer is, and
how far to shrink the CNN's probabilities (sdl.techniques.saxs.ml: shift_features, top_features, confident,
shift_lambda, shrink).

    python -m sdl.techniques.saxs.calibrate --n-per-class 80 --seed 13 [--cache DIR]

The curves come from sdl's own training generator (simulators.saxs.dataset: its sasmodels shapes, Schulz
polydispersity, Gaussian smearing, backgrounds and noise), never from a benchmark's held-out generator,
with its own seeds, in four regimes of `--n-per-class` curves per class each:

* ``train``: the training instrument and parameter ranges (the probabilities must stay as they are there);
* ``varied``: the training particles measured with the instrument varied inside its ranges (q windows other than
  the five trained centres, linear or log spacing, 100-500 points, any dq/q up to 0.12, relative errors with an
  absolute error floor of 1e-5 to 1e-3 of the peak or Poisson counts of 1e4-3e7 at the peak); with ``train``
  the in-range part;
* ``shifted``: the training particles measured beyond the training instrument (dq/q 0.12-0.2, relative
  errors 12-35 % or 100-3000 peak counts, strong low-q upturns, linear or log q spacing);
* ``beyond``: particles beyond the training ranges (polydispersity above the trained maximum, ellipsoid
  axial ratios 12.5-25, rods of length/diameter 110-300, discs of diameter/length 65-150, core-shell
  shells of 4-14 % or 50-70 % of the radius or a core contrast between the trained ones, the library's
  "other" shapes it never trained on, twice as many: peak_lorentz, surface_fractal, random smooth curves and
  particles the library lacks, UNKNOWN_PARTICLES), measured by the training instrument.

Each curve goes through the whole analyser (refinement and flags) with the calibration off; the features
and probabilities it reports are kept (`--cache`, a speed-up only), then the calibration is fitted by maximum
likelihood of the true class (each in-range curve weighing IN_RANGE_WEIGHT times a shifted or beyond one): for
the analyser's final probabilities, the top class's probability σ(a + b·logit p_top − w·f) with f its TOP_FEATURES
(`confident`), w >= 0 ("analyser": a logistic regression of whether the answer is right, convex, so that every
machine reaches the same optimum); for the CNN's alone, p' = (1 - λ) p + λ / K with λ = 1 - exp(-w·f) and the
features it has without refinement ("cnn", for predict_batch). Written to <weights stem>_shift.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sdl.techniques.saxs.ml import (CLASSES, LOW_CONFIDENCE, SHIFT_FEATURES, TOP_FEATURES, WEIGHTS, confident,
                                   contest_ambiguous, shift_lambda, shrink, top_features, top_logit, weights_digest)

REGIMES = ("train", "varied", "shifted", "beyond")
IN_RANGE = ("train", "varied")  # regimes of the training distribution
# likelihood weight of each in-range curve against a shifted or beyond one; 2-fold CV on the calibration set (5
# splits, the convex fit), ECE train / varied / shifted / beyond: weight 2: 2.9 / 3.2 / 9.2 / 9.6 %, 4: 2.5 / 2.6 /
# 9.4 / 9.5 %, 8: 2.2 / 2.7 / 10.9 / 9.6 %, 16: 2.2 / 2.5 / 11.5 / 9.9 %, 32: 2.0 / 2.7 / 12.3 / 10.8 % (halves of
# 280 curves: differences of a few tenths are noise); 8 keeps the in-range regimes near their best without giving
# up the others
IN_RANGE_WEIGHT = 8.0
CNN_FEATURES = ("noise", "noise_beyond", "distance")  # what predict_batch knows (no dq, no fit)
CNN_COLS = [SHIFT_FEATURES.index(u) for u in CNN_FEATURES]
CONTEST_KEYS = ("delta_chi2", "extra_params", "shell_z", "delta_bic")  # what `collect` keeps of each fit contest
RECORD_FLAGS = ("flagged", "library_fit", "sheet_fit")  # the TOP_FEATURES flags a record keeps as they are
RECORD_KEYS = ("features", "p", "p_cnn", "label", "chosen", "alt", "contest", *RECORD_FLAGS)  # `collect`'s arrays
MAX_CONTESTS = len(CLASSES) - 2  # the other library shapes a curve may have refined (all when the candidates misfit)
# particles the library lacks (sasmodels families, neither in training nor in benchmarks/saxs_heldout.py), "other" of
# the ``beyond`` regime with its training families: their best library fit misfits, and the calibration learns what
# that says
UNKNOWN_PARTICLES = ("barbell", "stacked_disks", "fractal")


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo * 1.01)))))


def beyond_params(cls: str, qmin: float, qmax: float, rng: np.random.Generator) -> tuple[str, dict[str, float]] | np.ndarray:
    """(sasmodels model, parameters) of a `cls` particle beyond the training ranges (the class's sizes as
    simulators.saxs.dataset draws them, one property pushed past its trained range), or for "other" a noise-free
    curve on D.Q_FINE of a family the training never saw."""
    from simulators.saxs import dataset as D

    if cls == "other":
        fam = str(rng.choice(["peak_lorentz", "surface_fractal", "random_smooth", *UNKNOWN_PARTICLES]))
        if fam == "random_smooth":
            return D.random_smooth(rng)
        if fam in UNKNOWN_PARTICLES:
            return fam, unknown_particle_params(fam, qmin, qmax, rng)
        return fam, D._other_params(fam, qmin, qmax, rng)
    model, params, t = D.sample_params(cls, qmin, qmax, rng)
    t = dict(t)
    pd_max = {"sphere": 0.35, "core_shell_sphere": 0.15, "ellipsoid": 0.3, "cylinder": 0.25, "disc": 0.25,
              "core_shell_cylinder": 0.15}[cls]
    extra: dict[str, float] = {}
    kind = rng.random()
    if cls == "sphere" or kind < 0.3:  # broader size distributions than trained
        t["polydispersity"] = float(rng.uniform(pd_max + 0.05, pd_max + 0.2))
    elif cls == "core_shell_sphere" or cls == "core_shell_cylinder":
        rt = t["radius"] + t["shell"]
        if kind < 0.65:  # thin or thick shells
            f = rng.uniform(0.04, 0.14) if rng.random() < 0.7 else rng.uniform(0.5, 0.7)
            t["radius"], t["shell"] = rt * (1 - f), rt * f
        else:  # core and shell alike: a contrast between the trained bands
            extra["sld_core"] = float(rng.uniform(0.35, 2.45))
        if cls == "core_shell_cylinder" and rng.random() < 0.5:  # longer rods
            t["length"] = min(2 * rt * _logu(rng, 65.0, 200.0), 20000.0)
    elif cls == "ellipsoid":
        small = min(t["radius"], t["polar_radius"])
        aspect = _logu(rng, 12.5, 25.0)
        big = small * aspect
        t["radius"], t["polar_radius"] = (small, big) if rng.random() < 0.5 else (big, small)
    elif cls == "cylinder":
        t["length"] = min(2 * t["radius"] * _logu(rng, 110.0, 300.0), 20000.0)
    elif cls == "disc":
        t["radius"] = t["length"] * _logu(rng, 65.0, 150.0) / 2
    if "sld_core" not in extra and cls.startswith("core_shell"):
        extra["sld_core"] = params.get("sld_core", 3.0)
    return D.class_params(cls, t, extra)


def unknown_particle_params(fam: str, qmin: float, qmax: float, rng: np.random.Generator) -> dict[str, float]:
    """sasmodels parameters (Å, SLD 1e-6 Å⁻², solvent 0) of an UNKNOWN_PARTICLES particle sized for the window
    qmin-qmax (Å⁻¹): a barbell (rod with end spheres 1.3-3 × its radius), a stack of 2-12 discs, a Teixeira
    fractal aggregate of small spheres."""
    if fam == "barbell":
        r = _logu(rng, max(10.0, 3.0 / qmax), max(12.0, min(150.0, 0.5 / qmin)))
        return {"radius": r, "radius_bell": r * rng.uniform(1.3, 3.0), "length": r * _logu(rng, 2.0, 20.0),
                "sld": 1.0, "sld_solvent": 0.0}
    if fam == "stacked_disks":
        return {"radius": _logu(rng, max(20.0, 3.0 / qmax), max(25.0, min(600.0, 1.0 / qmin))),
                "thick_core": _logu(rng, 10.0, 60.0), "thick_layer": _logu(rng, 5.0, 40.0),
                "n_stacking": float(rng.integers(2, 13)), "sigma_d": rng.uniform(0.0, 5.0),
                "sld_core": 1.0, "sld_layer": float(rng.choice([2.5, -0.5])), "sld_solvent": 0.0}
    if fam == "fractal":
        r = _logu(rng, max(5.0, 2.0 / qmax), 50.0)
        return {"radius": r, "fractal_dim": rng.uniform(1.6, 2.8), "cor_length": _logu(rng, 10 * r, max(20 * r, 3.0 / qmin)),
                "volfraction": 0.05, "sld_block": 1.0, "sld_solvent": 0.0}
    raise ValueError(fam)


def measure_shifted(I_fine: np.ndarray, qmin: float, qmax: float, rng: np.random.Generator) -> dict[str, Any]:
    """The training instrument's measurement (simulators.saxs.dataset.measure) with artefacts beyond its
    ranges: dq/q 0.12-0.2, relative errors 12-35 % (or 100-3000 peak counts), low-q upturns up to 10x I(qmin)."""
    from simulators.saxs import dataset as D

    n = int(rng.integers(120, 401))
    q = np.geomspace(qmin, qmax, n) if rng.random() < 0.5 else np.linspace(qmin, qmax, n)
    dqq = float(rng.uniform(0.12, 0.2)) if rng.random() < 0.6 else float(rng.uniform(0.0, 0.12))
    I = D.smear(D.Q_FINE, I_fine, q, dqq)
    I = I / I.max()
    bg = I[-1] * 10 ** rng.uniform(-1.5, 1.0)
    Itot = I + bg
    if rng.random() < 0.7:
        Itot = Itot + I[0] * 10 ** rng.uniform(-1.5, 1.0) * (q / q[0]) ** -rng.uniform(3.0, 4.0)
    scale = 10 ** rng.uniform(-3, 3)
    if rng.random() < 0.75:
        sd = Itot * rng.uniform(0.12, 0.35) + 1e-4 * Itot.max()
        I_obs, sigma = (Itot + rng.normal(0.0, sd)) * scale, sd * scale
    else:
        factor = _logu(rng, 100.0, 3000.0) / Itot.max()
        counts = rng.poisson(Itot * factor).astype(float)
        I_obs, sigma = counts / factor * scale, np.sqrt(np.maximum(counts, 1.0)) / factor * scale
    return {"q": q, "I": I_obs, "sigma": sigma, "dq": dqq * q}


def varied_window(rng: np.random.Generator) -> tuple[float, float]:
    """A q window inside the training windows' span (q_min 0.0013-0.011, q_max 0.11-0.9 Å⁻¹) but not only their
    five centres: q_max/q_min from 40 to 300 (trained: 80-100, jittered)."""
    while True:
        qmin = _logu(rng, 0.0013, 0.011)
        qmax = min(qmin * _logu(rng, 40.0, 300.0), 0.9)
        if qmax >= 0.11:
            return qmin, qmax


def measure_varied(I_fine: np.ndarray, qmin: float, qmax: float, rng: np.random.Generator) -> dict[str, Any]:
    """The training instrument's measurement (simulators.saxs.dataset.measure) with its settings varied inside
    (or at the edge of) the training ranges, as reduced data from other instruments come: log or linear q
    spacing, 100-500 points, any dq/q in 0-0.12 (training: two bands), relative errors 0.3-12 % with an
    absolute error floor of 1e-5 to 1e-3 of the peak (training: 1e-4 always) or Poisson counts with 1e4-3e7 at
    the peak (training: 3e4-3e5 and 1e6-1e7), the training backgrounds, slopes, upturns, beamstop and gaps.
    (Floors of 1e-3 to 1e-2 or 3e3 counts cost a tenth of the accuracy on this generator: beyond the training
    envelope, not part of this regime.)"""
    from simulators.saxs import dataset as D

    inst = D.TRAIN
    n = int(rng.integers(100, 501))
    q = np.geomspace(qmin, qmax, n) if rng.random() < 0.5 else np.linspace(qmin, qmax, n)
    dqq = float(rng.uniform(0.0, 0.12))
    I = D.smear(D.Q_FINE, I_fine, q, dqq)
    I = I / I.max()
    bg = I[-1] * 10 ** rng.uniform(*inst.background) if rng.random() < 0.9 else 0.0
    slope = rng.uniform(*inst.slope) if rng.random() < 0.5 else 0.0
    Itot = I + bg * np.clip(1.0 + slope * q / qmax, 0.05, None)
    if rng.random() < inst.p_upturn:
        Itot = Itot + I[0] * 10 ** rng.uniform(-2.0, -0.3) * (q / q[0]) ** -rng.uniform(3.0, 4.0)
    scale = 10 ** rng.uniform(-3, 3)
    if rng.random() < 0.6:
        sd = Itot * _logu(rng, 0.003, 0.12) + _logu(rng, 1e-5, 1e-3) * Itot.max()
        I_obs, sigma = (Itot + rng.normal(0.0, sd)) * scale, sd * scale
    else:
        factor = _logu(rng, 1e4, 3e7) / Itot.max()
        counts = rng.poisson(Itot * factor).astype(float)
        I_obs, sigma = counts / factor * scale, np.sqrt(np.maximum(counts, 1.0)) / factor * scale
    keep = np.ones(n, bool)
    lq = np.log(q / qmin)
    if rng.random() < inst.p_beamstop:
        keep &= lq >= rng.uniform(0.0, math.log(1.25))
    if rng.random() < inst.p_gaps:
        span = math.log(qmax / qmin)
        for _ in range(int(rng.integers(1, 4))):
            w = rng.uniform(0.03, 0.12)
            st = rng.uniform(0.0, max(span - w, 1e-9))
            keep &= ~((lq >= st) & (lq < st + w))
    return {"q": q[keep], "I": I_obs[keep], "sigma": sigma[keep], "dq": (dqq * q)[keep]}


def generate(n_per_class: int, seed: int, regime: str) -> dict[str, list]:
    """`n_per_class` curves per class of one REGIMES regime (seeded; disjoint from training's seeds)."""
    from simulators.saxs import dataset as D

    out: dict[str, list] = {k: [] for k in ("q", "I", "sigma", "dq", "label", "family")}
    for ci, cls in enumerate(CLASSES):
        rng = np.random.default_rng([seed, 7000 + REGIMES.index(regime), ci])
        k = 0
        # twice as many "other" beyond the ranges: its families are many and unlike each other
        while k < n_per_class * (2 if regime == "beyond" and cls == "other" else 1):
            qmin, qmax = varied_window(rng) if regime == "varied" else D.draw_window(D.TRAIN, rng)
            if regime == "beyond":
                got = beyond_params(cls, qmin, qmax, rng)
                if isinstance(got, np.ndarray):
                    model, I_fine = "random_smooth", got
                else:
                    model, params = got
                    I_fine = D.form_factor(model, D.Q_FINE, params, qmax=D.QMAX_SMEARED * qmax)
            else:
                model, params, _ = D.sample_params(cls, qmin, qmax, rng)
                I_fine = D.form_factor(model, D.Q_FINE, params, qmax=D.QMAX_SMEARED * qmax)
            if not (np.all(np.isfinite(I_fine)) and I_fine.max() > 0):
                continue
            if regime == "shifted":
                m = measure_shifted(I_fine, qmin, qmax, rng)
            elif regime == "varied":
                m = measure_varied(I_fine, qmin, qmax, rng)
            else:
                m = D.measure(I_fine, qmin, qmax, D.TRAIN, rng)
            if (m["I"] > 0).sum() < 20:
                continue
            out["q"].append(m["q"]); out["I"].append(m["I"]); out["family"].append(model); out["label"].append(ci)
            # files come with and without errors and resolution columns
            out["sigma"].append(m["sigma"] if rng.random() < 0.85 else None)
            out["dq"].append(m["dq"] if rng.random() < 0.5 else None)
            k += 1
    return out


_WORKER: dict[str, Any] = {}  # the analyser `_record_one` runs, one per process


def _init_worker(weights: Path, analyser=None) -> None:
    """Give this process its analyser (`analyser`, or one of `weights` with the calibration off; one torch thread)."""
    if analyser is None:
        import torch

        from sdl.techniques.saxs.ml import SaxsMLAnalyser

        torch.set_num_threads(1)
        analyser = SaxsMLAnalyser(weights=weights, shift_calibration=False)
    _WORKER["an"] = analyser


def _record_one(curve: tuple) -> dict[str, Any] | str:
    """The `calibration_record` of one curve (q, I, sigma or None, dq or None), or why the analyser refused it."""
    from sdl.measurement import Measurement

    q, I, s, dq = curve
    arrays = {"q_inv_angstrom": q, "intensity": I}
    if s is not None:
        arrays["sigma"] = s
    if dq is not None:
        arrays["dq_inv_angstrom"] = dq
    try:
        return calibration_record(_WORKER["an"].analyse(Measurement(technique="saxs", arrays=arrays)))
    except Exception as exc:  # noqa: BLE001 - a refused curve is not calibration data
        return f"{type(exc).__name__}: {exc}"


def collect(data: dict[str, list], analyser=None, log=print, workers: int = 1, weights: Path = WEIGHTS,
            desc: str = "analysing") -> dict[str, np.ndarray]:
    """Run the analyser (calibration off; `analyser`, or one of `weights`) on every curve, with a progress bar: its
    `calibration_record` and the label, as arrays. Curves the analyser refuses are left out (`log` says why).
    With `workers` > 1 the curves go to as many processes, each with its own analyser of `weights`."""
    import multiprocessing as mp

    from tqdm import tqdm

    curves = list(zip(data["q"], data["I"], data["sigma"], data["dq"]))
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(weights,)) if workers > 1 else None
    if pool is None:
        _init_worker(weights, analyser)
    rows: dict[str, list] = {k: [] for k in RECORD_KEYS}
    try:
        results = pool.imap(_record_one, curves, chunksize=1) if pool else map(_record_one, curves)
        for i, (got, y) in enumerate(zip(tqdm(results, total=len(curves), desc=desc, unit="curve", mininterval=5.0),
                                         data["label"])):
            if isinstance(got, str):
                log(f"  curve {i}: {got}")
                continue
            for k, v in got.items():
                rows[k].append(v)
            rows["label"].append(y)
    finally:  # also on an interrupt: no worker is left running
        if pool is not None:
            pool.terminate()
    return {k: np.asarray(v, int if k in ("label", "chosen", "alt") else bool if k in RECORD_FLAGS else float)
            for k, v in rows.items()}


def calibration_record(result) -> dict[str, Any]:
    """What the calibration needs of one analyser result (`SaxsMLAnalyser.analyse`, calibration on or off: these
    are taken before it acts): "features" (SHIFT_FEATURES), "p" (after the fits' arbitration), "p_cnn" (the CNN's),
    "chosen" (class index), "alt" (MAX_CONTESTS class indices of the other refined shapes, -1 for none), "contest"
    (their CONTEST_KEYS, NaN for none), "flagged" (the analyser's own TOP_FEATURES "flagged": saxs.model flagged for a
    reason other than an ambiguous fit or a low calibrated probability: ood, or one of LOW_CONFIDENCE_REASONS but
    "ambiguous"), "library_fit" and "sheet_fit" (TOP_FEATURES: an "other" answer that a library shape fits, and one
    that a library shape fits as well as the sheet)."""
    cal = result.info["calibration"]
    pb = [cal["probabilities_before"][c] for c in CLASSES]
    cnn = result.info.get("ml_probabilities") or cal["probabilities_before"]  # before the fits weighed in
    alt = np.full(MAX_CONTESTS, -1)
    contest = np.full((MAX_CONTESTS, len(CONTEST_KEYS)), np.nan)  # `contest_ambiguous`'s inputs
    for j, c in enumerate(cal.get("contests", [])[:MAX_CONTESTS]):
        alt[j] = CLASSES.index(c["alternative"])
        contest[j] = [c[k] for k in CONTEST_KEYS]
    return {"features": [cal["features"][k] for k in SHIFT_FEATURES], "p": pb, "p_cnn": [cnn[c] for c in CLASSES],
            "chosen": int(np.argmax(pb)), "alt": alt, "contest": contest,
            **{k: bool(cal["features"][k]) for k in RECORD_FLAGS}}


def calibrated(part: dict[str, np.ndarray], params: dict[str, Any] | None, key: str = "p") -> np.ndarray:
    """The probabilities the analyser reports with calibration `params`: for the analyser's ("p"), the top class's
    recalibration (`confident`); for the CNN's alone ("p_cnn"), the shrinkage with the features predict_batch has."""
    if key != "p":
        return shrink(part[key], shift_lambda(_cnn_only(part["features"]), params))
    return confident(part["p"], analyser_features(part), params)


def analyser_features(part: dict[str, np.ndarray]) -> np.ndarray:
    """(n, len(TOP_FEATURES)) of stored records: their SHIFT_FEATURES, the flag, whether a contest is ambiguous
    (`contest_ambiguous`, computed here rather than stored, so that it is the code's that fits), and whether a
    library shape fits an "other" answer (as well as the sheet)."""
    if "ambiguous" not in part:  # fitting and scoring evaluate this many times: once per part
        rows = part["contest"].reshape(-1, len(CONTEST_KEYS))
        amb = [np.isfinite(r[0]) and contest_ambiguous(dict(zip(CONTEST_KEYS, r))) for r in rows]
        part["ambiguous"] = np.array(amb, bool).reshape(part["contest"].shape[:2]).any(axis=1)
    return top_features(part["features"], part["flagged"], part["ambiguous"], part["library_fit"], part["sheet_fit"])


def top_design(p: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The regressors of `top_loss`: [1, logit p_top, -f] per curve."""
    return np.column_stack([np.ones(len(p)), top_logit(p), -np.asarray(features, float)])


def top_loss(v: np.ndarray, x: np.ndarray, right: np.ndarray, wt: np.ndarray, l2: float = 1e-3) -> tuple[float, np.ndarray]:
    """The weighted log-loss (and its gradient) of whether each answer is right under P(right) = σ(x·v), plus l2·|v|²:
    with x = [1, logit p_top, -f] and v = [a, b, w] the true class's negative log-likelihood under `confident` less
    a term that does not depend on v (where `confident`'s ranking guard is not active). Convex in v."""
    z = x @ v
    val = np.sum(wt * (right * np.logaddexp(0.0, -z) + (1.0 - right) * np.logaddexp(0.0, z))) + l2 * float(v @ v)
    return float(val), -x.T @ (wt * (right - 0.5 * (1.0 + np.tanh(0.5 * z)))) + 2.0 * l2 * v


def fit_top(p: np.ndarray, features: np.ndarray, right: np.ndarray, weights: np.ndarray,
            lower: np.ndarray | None = None) -> np.ndarray:
    """[a, b, w] of `confident` minimising `top_loss` (analytic gradient, L-BFGS-B; a in [-10, 10], b in [0.05, 5],
    each w in [`lower` (default 0), 20]) for probabilities `p` whose top answers are `right`, with `features`."""
    from scipy.optimize import minimize

    x = top_design(p, features)
    wt = np.asarray(weights, float) / np.sum(weights)
    lo = np.zeros(features.shape[1]) if lower is None else lower
    res = minimize(top_loss, np.r_[0.0, 1.0, np.zeros(features.shape[1])], args=(x, np.asarray(right, float), wt),
                   jac=True, method="L-BFGS-B", bounds=[(-10.0, 10.0), (0.05, 5.0)] + [(float(a), 20.0) for a in lo],
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10000})
    return res.x


def objective(part: dict[str, np.ndarray], weights: np.ndarray, params: dict[str, Any], key: str = "p") -> float:
    """What `fit_calibration` minimises, at `params`: for the analyser ("p") `top_loss`, for the CNN alone ("p_cnn")
    the weighted negative log-likelihood of the true class plus 1e-3·|w|² (both with `weights` normalised)."""
    wt = np.asarray(weights, float) / np.sum(weights)
    if key == "p":
        v = np.r_[params["a"], params["b"], params["top_weights"]]
        x = top_design(part["p"], analyser_features(part))
        return top_loss(v, x, (part["p"].argmax(axis=1) == part["label"]).astype(float), wt)[0]
    pr = calibrated(part, params, key)[np.arange(len(wt)), part["label"]]
    return float(-np.sum(wt * np.log(np.maximum(pr, 1e-12))) + 1e-3 * np.sum(np.asarray(params["weights"])[CNN_COLS] ** 2))


def fit_calibration(part: dict[str, np.ndarray], weights: np.ndarray, key: str = "p") -> dict[str, Any]:
    """The calibration parameters minimising `objective` on `part`, each curve weighted by `weights`: for the
    analyser ("p") a, b > 0 and the top weights w >= 0 of `confident` (`fit_top`: one optimum, whatever the machine);
    for the CNN alone ("p_cnn") the shrinkage weights >= 0 on CNN_FEATURES."""
    if key == "p":
        v = fit_top(part["p"], analyser_features(part), part["p"].argmax(axis=1) == part["label"], weights)
        params = {"a": float(v[0]), "b": float(v[1]), "top_weights": [float(u) for u in v[2:]]}
        return {**params, "objective": objective(part, weights, params)}
    from scipy.optimize import minimize

    def unpack(x: np.ndarray) -> dict[str, Any]:
        w = np.zeros(len(SHIFT_FEATURES))
        w[CNN_COLS] = x
        return {"weights": [float(v) for v in w]}

    # not convex in w: the best of a few starts (all weights 0.1, 0.5, 2)
    res = min((minimize(lambda x: objective(part, weights, unpack(x), key), np.full(len(CNN_COLS), s), method="L-BFGS-B",
                        bounds=[(0.0, 20.0)] * len(CNN_COLS)) for s in (0.1, 0.5, 2.0)), key=lambda r: r.fun)
    return {**unpack(res.x), "objective": float(res.fun)}


def report(name: str, part: dict[str, np.ndarray], params: dict[str, Any] | None, key: str = "p") -> str:
    """Accuracy, ECE and mean top probability before/after the calibration on one regime."""
    from sdl.analysis.calibration import expected_calibration_error

    p, y = part[key], part["label"]
    q = calibrated(part, params, key)
    line = (f"{name:<8} n={len(y):4d} accuracy {np.mean(p.argmax(1) == y):6.1%}  ECE {expected_calibration_error(p, y):5.1%} -> "
            f"{expected_calibration_error(q, y):5.1%}  mean top p {p.max(1).mean():.3f} -> {q.max(1).mean():.3f}  "
            f"confident (p>=0.9) errors {np.mean((p.argmax(1) != y) & (p.max(1) >= 0.9)):5.1%} -> "
            f"{np.mean((q.argmax(1) != y) & (q.max(1) >= 0.9)):5.1%}")
    if key == "p" and "flagged" in part:  # the analyser's flags: the fit-based ones, an ambiguous contest, low p
        amb = analyser_features(part)[:, TOP_FEATURES.index("ambiguous")] > 0
        right = q.argmax(1) == y
        for label, fl in (("without ambiguity", part["flagged"] | (q.max(1) < LOW_CONFIDENCE)),
                          ("with ambiguity", part["flagged"] | (q.max(1) < LOW_CONFIDENCE) | amb)):
            line += (f"; {label}: flagged {fl.mean():5.1%}, right or flagged {np.mean(right | fl):5.1%}, "
                     f"unflagged confident errors {np.mean(~right & ~fl & (q.max(1) >= 0.9)):5.1%}")
    return line


def _cnn_only(features: np.ndarray) -> np.ndarray:
    """The features predict_batch has (no refinement: the others are 0)."""
    f = np.zeros_like(features)
    f[:, CNN_COLS] = features[:, CNN_COLS]
    return f


def regime_weights(parts: dict[str, dict[str, np.ndarray]], in_range_weight: float = IN_RANGE_WEIGHT) -> np.ndarray:
    """Likelihood weight per curve, REGIMES order: `in_range_weight` for the IN_RANGE regimes, 1 for the others."""
    return np.concatenate([np.full(len(parts[r]["label"]), in_range_weight if r in IN_RANGE else 1.0) for r in REGIMES])


def cache_file(folder: Path, regime: str, n_per_class: int, seed: int, weights: Path = WEIGHTS) -> Path:
    """Where `--cache folder` keeps one regime's analysed curves; the weights' digest is in the name, since the
    analysed curves depend on the CNN."""
    return Path(folder) / f"saxs_shift_{regime}_n{n_per_class}_s{seed}_w{weights_digest(weights)}.npz"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdl.techniques.saxs.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=80, help="curves per class and regime (default 80)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=None, help="default: <weights stem>_shift.json beside the weights")
    ap.add_argument("--workers", type=int, default=1, help="processes analysing the curves (default 1)")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep/reuse the analysed curves (npz; a speed-up "
                    "only: the result is the same without it)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    import torch

    from sdl.techniques.saxs.ml import SaxsMLAnalyser

    torch.set_num_threads(1)
    out = args.out or args.weights.with_name(args.weights.stem + "_shift.json")
    an = SaxsMLAnalyser(weights=args.weights, shift_calibration=False) if args.workers == 1 else None
    parts: dict[str, dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    for regime in REGIMES:
        cache = cache_file(args.cache, regime, args.n_per_class, args.seed, args.weights) if args.cache else None
        z = np.load(cache) if cache is not None and cache.is_file() else None
        if z is not None and set(RECORD_KEYS) <= set(z.files):  # a cache from older code is analysed afresh
            parts[regime] = {k: z[k] for k in z.files}
            print(f"{regime}: loaded {cache}", flush=True)
            continue
        t = time.perf_counter()
        data = generate(args.n_per_class, args.seed, regime)
        print(f"{regime}: {len(data['q'])} curves simulated in {time.perf_counter() - t:.0f} s", flush=True)
        parts[regime] = collect(data, an, log=lambda m: print(m, flush=True), workers=args.workers, weights=args.weights,
                                desc=f"{regime} curves")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **parts[regime])
    allp = {k: np.concatenate([parts[r][k] for r in REGIMES]) for k in parts[REGIMES[0]]}
    # the curves of the training distribution weigh more: without the weight the unflagged errors beyond the
    # ranges (no feature tells them from right answers) would buy a shrinkage of right in-range answers
    wt = regime_weights(parts)
    analyser = fit_calibration(allp, wt)
    cnn = fit_calibration(allp, wt, key="p_cnn")
    lines = [report(r, parts[r], analyser) for r in REGIMES] + [report("cnn " + r, parts[r], cnn, "p_cnn") for r in REGIMES]
    for line in lines:
        print(line)
    # the recorded command regenerates the file (the cache only saves time, so it is not part of it)
    cmd = f"python -m sdl.techniques.saxs.calibrate --n-per-class {args.n_per_class} --seed {args.seed}"
    if args.weights.resolve() != WEIGHTS.resolve():
        cmd += f" --weights {args.weights}"
    blob = {"features": list(SHIFT_FEATURES), "top_features": list(TOP_FEATURES),
            "analyser": analyser, "cnn": cnn,
            "fitted_with": {"command": cmd,
                            "generator": "simulators.saxs.dataset (sdl's training generator): its instrument, the same "
                                         "varied inside its ranges, shifted artefacts and particles beyond its ranges "
                                         "(sdl.techniques.saxs.calibrate)",
                            "n_per_class": args.n_per_class, "seed": args.seed, "regimes": list(REGIMES),
                            "in_range_weight": IN_RANGE_WEIGHT,
                            "n_curves": int(len(allp["label"])), "weights": args.weights.name},
            "report": lines}
    out.write_text(json.dumps(blob, indent=2) + "\n")
    print(f"written {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
