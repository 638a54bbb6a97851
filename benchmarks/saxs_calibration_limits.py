"""How far recalibrating saxs_ml can take its ECE on the independent held-out generator, from stored fits only.

    python benchmarks/saxs_calibration_limits.py

Reads the analysed calibration curves (benchmarks/results/saxs_calibrate_cache: sdl's own generator, what
`python -m sdl.techniques.saxs.calibrate` fits on) and the held-out run's fits (saxs_heldout_cache.npz); analyses
nothing again (150 s on 2 cores). It prints, per held-out split (ECE, and the out-of-range confident errors):

1. calibrations fitted on sdl's generator as `calibrate` fits them, scored on the held-out curves: the shipped
   file; the shipped form refitted on this machine at in-range weights 4 / 8 (as shipped) / 16, with the objective
   of the shipped file and of the refit at 8 (the optimum the fit reaches can differ between machines); and three
   forms with more capacity: an intercept per answered class, a temperature that grows with the shift evidence
   (its features times the logit), and the CNN's doubt in the answer (-ln of its probability) as one more feature;
   and the shipped form without the pair step, fitted as a convex logistic regression (`fit_logistic`), which any
   machine fits to the same optimum;
2. an oracle: the answer's probability of being right fitted on the held-out curves themselves (5-fold
   cross-fitting; logistic regression and gradient-boosted trees on all the evidence the analyser has: its
   features, logit, answer, the CNN's and the fits' probabilities, the contests, χ²_red), each split apart (it knows
   which kind of curve it sees) or the splits pooled (it does not, as the analyser does not): what a calibrator that
   knew the held-out generator's mix of curves could reach;
3. the noise floor: the ECE a perfectly calibrated analyser with the shipped probabilities shows on as many
   curves by chance (sdl.analysis.calibration.ece_noise_floor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from printout import Printout  # noqa: E402
from saxs_heldout import load_cache  # noqa: E402

from sdl.analysis.calibration import ece_noise_floor, expected_calibration_error  # noqa: E402
from sdl.techniques.saxs import calibrate as C  # noqa: E402
from sdl.techniques.saxs.ml import (CLASSES, LOW_CONFIDENCE, TOP_FEATURES, WEIGHTS, confident,  # noqa: E402
                                   load_shift_calibration, weights_digest)

SPLITS = ("in_range", "shifted", "out_range")


def top_logit(p: np.ndarray) -> np.ndarray:
    """logit of each row's top probability, clipped to 1e-6 as `confident` clips it."""
    t = np.clip(p.max(axis=1), 1e-6, 1 - 1e-6)
    return np.log(t / (1 - t))


def calibration_parts() -> dict[str, dict[str, np.ndarray]]:
    """The stored calibration records of the shipped weights, per calibrate.REGIMES regime."""
    cache, digest = ROOT / "benchmarks" / "results" / "saxs_calibrate_cache", weights_digest()
    return {r: C.with_contests(dict(np.load(cache / f"saxs_shift_{r}_n80_s13_w{digest}.npz"))) for r in C.REGIMES}


def heldout_parts() -> dict[str, dict[str, np.ndarray]]:
    """The held-out run's records per split, with "label", "chi2_red" and "flagged_fit" (flagged for a reason
    other than a low calibrated probability, as the analyser was)."""
    rows = load_cache(ROOT / "benchmarks" / "results" / "saxs_heldout_cache.npz")
    out = {}
    for s in SPLITS:
        rs = [r for r in rows if r["split"] == s]
        part = {k: np.array([r["cal"][k] for r in rs]) for k in rs[0]["cal"]}
        part |= {"label": np.array([r["label"] for r in rs]), "chi2_red": np.array([r["chi2_red"] for r in rs]),
                 "flagged_fit": np.array([any(f != "low_probability" for f in r["flags"]) for r in rs])}
        out[s] = C.with_contests(part)
    return out


def extra_columns(part: dict[str, np.ndarray], p0: np.ndarray, form: str) -> np.ndarray:
    """The columns a `form` adds to TOP_FEATURES (their weights' signs: `SIGNED`)."""
    k = p0.argmax(axis=1)
    if form == "class intercepts":
        return np.eye(len(CLASSES))[k]
    if form == "evidence temperature":  # each shift feature times the answer's logit: the slope b falls with it
        return C.analyser_features(part) * top_logit(p0)[:, None]
    if form == "CNN doubt":
        return np.clip(-np.log(np.clip(part["p_cnn"][np.arange(len(k)), k], 1e-6, 1.0)), 0.0, 5.0)[:, None]
    raise ValueError(form)


SIGNED = {"class intercepts"}  # columns whose weights may have either sign (the others only lower the probability)


def fit_form(parts: dict, pair: dict, form: str, weight: float = C.IN_RANGE_WEIGHT):
    """`confident`'s a, b and weights on TOP_FEATURES plus `form`'s columns, fitted as `calibrate` fits (maximum
    likelihood of the true class, in-range curves weighing `weight`, L2 1e-3) after the pair step of `pair`.
    Returns a function of a part giving its probabilities."""
    from scipy.optimize import minimize

    def inputs(part):
        p0 = C.calibrated(part, {**pair, "a": 0.0, "b": 1.0, "top_weights": [0.0] * len(TOP_FEATURES)})
        return p0, np.column_stack([C.analyser_features(part), extra_columns(part, p0, form)])

    p0, f = (np.concatenate(v) for v in zip(*(inputs(parts[r]) for r in C.REGIMES)))
    y = np.concatenate([parts[r]["label"] for r in C.REGIMES])
    wt = C.regime_weights(parts, weight)
    wt = wt / wt.sum()
    n_extra = f.shape[1] - len(TOP_FEATURES)
    lo = -20.0 if form in SIGNED else 0.0
    bounds = [(-10.0, 10.0), (0.05, 5.0)] + [(0.0, 20.0)] * len(TOP_FEATURES) + [(lo, 20.0)] * n_extra

    def probs(x, p0, f):
        return confident(p0, f, {"a": x[0], "b": x[1], "top_weights": list(x[2:])})

    def nll(x):
        return float(-np.sum(wt * np.log(np.maximum(probs(x, p0, f)[np.arange(len(y)), y], 1e-12))) + 1e-3 * np.sum(x ** 2))

    x0 = np.r_[0.0, 1.0, np.full(f.shape[1], 0.1)]
    x = min((minimize(nll, np.r_[x0[:2], x0[2:] * s], method="L-BFGS-B", bounds=bounds) for s in (1.0, 5.0, 20.0)),
            key=lambda r: r.fun).x
    return lambda part: probs(x, *inputs(part))


def fit_logistic(parts: dict, weight: float = C.IN_RANGE_WEIGHT) -> dict:
    """`confident`'s a, b and w fitted without the pair step as a logistic regression of whether the arbitrated answer
    is right (the true class's likelihood under `confident` less a term that does not depend on them, where the
    ranking guard is not active): convex, with an analytic gradient, so every machine reaches the same optimum."""
    from scipy.optimize import minimize

    def design(part):
        return np.column_stack([np.ones(len(part["p"])), top_logit(part["p"]), -C.analyser_features(part)])

    x = np.concatenate([design(parts[r]) for r in C.REGIMES])
    right = np.concatenate([(parts[r]["p"].argmax(axis=1) == parts[r]["label"]) for r in C.REGIMES]).astype(float)
    wt = C.regime_weights(parts, weight)
    wt = wt / wt.sum()

    def f(v):
        z = x @ v
        val = np.sum(wt * (right * np.logaddexp(0, -z) + (1 - right) * np.logaddexp(0, z))) + 1e-3 * np.sum(v ** 2)
        return val, -x.T @ (wt * (right - 1 / (1 + np.exp(-z)))) + 2e-3 * v

    v = minimize(f, np.r_[0.0, 1.0, np.zeros(len(TOP_FEATURES))], jac=True, method="L-BFGS-B",
                 bounds=[(-10.0, 10.0), (0.05, 5.0)] + [(0.0, 20.0)] * len(TOP_FEATURES),
                 options={"ftol": 1e-15, "gtol": 1e-10}).x
    return {"a": float(v[0]), "b": float(v[1]), "top_weights": [float(u) for u in v[2:]]}


def scores(held: dict, probs) -> str:
    """ECE per held-out split and the out-of-range confident errors (wrong, p >= 0.9, not flagged)."""
    p = {s: probs(held[s]) for s in SPLITS}
    cells = [f"{expected_calibration_error(p[s], held[s]['label']):6.1%}" for s in SPLITS]
    part, p = held["out_range"], p["out_range"]
    wrong = p.argmax(axis=1) != part["label"]
    conf = wrong & ~(part["flagged_fit"] | (p.max(axis=1) < LOW_CONFIDENCE)) & (p.max(axis=1) >= 0.9)
    return " ".join(cells) + f" {int(conf.sum()):>5d}"


def objective(part: dict, weights: np.ndarray, params: dict) -> float:
    """`calibrate.fit_calibration`'s objective at `params`: the weighted NLL of the true class plus its L2 term."""
    x = np.r_[params["pair_weights"], params["a"], params["b"], params["top_weights"]]
    wt = weights / weights.sum()
    pr = C.calibrated(part, params)[np.arange(len(part["label"])), part["label"]]
    return float(-np.sum(wt * np.log(np.maximum(pr, 1e-12))) + 1e-3 * np.sum(x ** 2))


def oracle(parts: list[dict], probs: list[np.ndarray], model: str, seed: int) -> list[float]:
    """Top-label ECE per part of the answers' probability of being right, fitted by 5-fold cross-fitting on the parts
    pooled (so it does not know which part a curve is from)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def evidence(part, p):
        k = p.argmax(axis=1)
        contests = np.clip(np.nan_to_num(part["contest"].reshape(len(k), -1), nan=99.0, posinf=99.0, neginf=-99.0), -99, 99)
        return np.column_stack([C.analyser_features(part), top_logit(p), np.eye(len(CLASSES))[k], part["p_cnn"],
                                part["p"], contests, np.nan_to_num(part["chi2_red"], nan=1.0)]), k == part["label"]

    xs, rights = zip(*(evidence(part, p) for part, p in zip(parts, probs)))
    x, right = np.concatenate(xs), np.concatenate(rights).astype(int)
    clf = (HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0)
           if model == "trees" else make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)))
    q = cross_val_predict(clf, x, right, cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    # as a two-class probability table: the answer right with q (expected_calibration_error takes the top class)
    edges = np.cumsum([0] + [len(r) for r in rights])
    return [expected_calibration_error(np.column_stack([q[a:b], 1 - q[a:b]]), 1 - right[a:b])
            for a, b in zip(edges[:-1], edges[1:])]


def main() -> None:
    out = Printout()
    parts, held = calibration_parts(), heldout_parts()
    out("# saxs_ml: how far recalibration can take the ECE on the held-out generator (benchmarks/saxs_calibration_limits.py)")
    out(f"ECE per held-out split ({' / '.join(str(len(held[s]['label'])) for s in SPLITS)} curves of saxs_heldout_cache.npz), "
        "and the out-of-range confident errors")
    out(f"{'':<52} {'in':>6} {'shift':>6} {'out':>6} {'conf.':>5}")
    out("1. fitted on sdl's generator (saxs_calibrate_cache), scored on the held-out:")
    shipped_file = load_shift_calibration(WEIGHTS)["analyser"]
    out(f"   {'the shipped file (saxs_ml_shift.json)':<49} {scores(held, lambda part: C.calibrated(part, shipped_file))}")
    allp = {k: np.concatenate([parts[r][k] for r in C.REGIMES]) for k in parts["train"]}
    pair = None
    for w in (4.0, 8.0, 16.0):
        params = C.fit_calibration(allp, C.regime_weights(parts, w))
        if w == C.IN_RANGE_WEIGHT:
            pair = params
        out(f"   {'refitted here, in-range weight %g' % w + (' (as shipped)' if w == C.IN_RANGE_WEIGHT else ''):<49} "
            f"{scores(held, lambda part: C.calibrated(part, params))}")
    # the fitted objective (weighted NLL + L2) of both, on the same curves: which optimum each fit reached
    wt = C.regime_weights(parts, C.IN_RANGE_WEIGHT)
    out(f"   (objective on the calibration curves: shipped file {objective(allp, wt, shipped_file):.5f}, refitted here "
        f"{objective(allp, wt, pair):.5f})")
    for form in ("class intercepts", "evidence temperature", "CNN doubt"):
        out(f"   {'+ ' + form:<49} {scores(held, fit_form(parts, pair, form))}")
    for w in (8.0, 16.0):
        params = fit_logistic(parts, w)
        out(f"   {'no pair step, convex fit, in-range weight %g' % w:<49} {scores(held, lambda part: C.calibrated(part, params))}")
    out("2. oracle: fitted on the held-out curves themselves (5-fold cross-fitting, mean of 3 fold seeds):")
    shipped = {s: C.calibrated(held[s], shipped_file) for s in SPLITS}
    for model in ("logistic", "trees"):
        for label, groups in (("each split apart", [[s] for s in SPLITS]), ("splits pooled", [list(SPLITS)])):
            got = {}
            for g in groups:
                runs = [oracle([held[s] for s in g], [shipped[s] for s in g], model, seed) for seed in range(3)]
                got |= dict(zip(g, np.mean(runs, axis=0)))
            out(f"   {model + ', ' + label:<49} {' '.join(f'{got[s]:6.1%}' for s in SPLITS)}")
    out("3. noise floor: a perfectly calibrated analyser with the shipped probabilities, on as many curves:")
    floors = [ece_noise_floor(shipped[s]) for s in SPLITS]
    out(f"   {'mean':<49} {' '.join(f'{m:6.1%}' for m, _ in floors)}")
    out(f"   {'95th percentile':<49} {' '.join(f'{q:6.1%}' for _, q in floors)}")
    path = out.write(ROOT / "benchmarks" / "results" / "saxs_calibration_limits.txt")
    print(f"(written to {path})")


if __name__ == "__main__":
    main()
