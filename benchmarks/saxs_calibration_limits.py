"""How far recalibrating saxs_ml can take its ECE on the independent held-out generator, from stored fits only.

    python benchmarks/saxs_calibration_limits.py

Reads the analysed calibration curves (benchmarks/results/saxs_calibrate_cache: sdl's own generator, what
`python -m sdl.techniques.saxs.calibrate` fits on) and the held-out run's fits (saxs_heldout_cache.npz); analyses
nothing again (about 60 s on 2 cores). It prints, per held-out split (ECE, and the out-of-range confident errors):

1. calibrations fitted on sdl's generator as `calibrate` fits them, scored on the held-out curves: the shipped
   file; the shipped form refitted on this machine at in-range weights 4 / 8 (as shipped) / 16, with the objective
   of the shipped file and of the refit at 8 (a convex fit: the same on every machine); and three forms with more
   capacity, fitted the same way: an intercept per answered class, a temperature that grows with the shift evidence
   (its features times the logit), and the CNN's doubt in the answer (-ln of its probability) as one more feature;
   and no logistic at all: gradient-boosted trees on all the evidence (as the oracle's below, without χ²_red,
   which the calibration curves do not keep), predicting whether the answer is right;
2. an oracle: the answer's probability of being right fitted on the held-out curves themselves (5-fold
   cross-fitting; logistic regression and gradient-boosted trees on all the evidence the analyser has: its
   features, logit, answer, the CNN's and the fits' probabilities, the contests, χ²_red), each split apart (it knows
   which kind of curve it sees) or the splits pooled (it does not, as the analyser does not): what a calibrator that
   knew the held-out generator's mix of curves could reach;
3. the noise floor: the ECE a perfectly calibrated analyser with the shipped probabilities shows on as many
   curves by chance (sdl.analysis.calibration.ece_noise_floor);
4. what each piece of evidence means on each generator: for every TOP_FEATURES feature (and for curves with none),
   how many curves raise it, how often their answer is right and the mean shipped probability, on sdl's calibration
   regimes and on the held-out splits. A calibration is a map from evidence to a probability; where the same
   evidence comes with other accuracies on the two generators, no map fitted on one is calibrated on the other.
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
                                   load_shift_calibration)

SPLITS = ("in_range", "shifted", "out_range")


def calibration_parts() -> dict[str, dict[str, np.ndarray]]:
    """The stored calibration records of the shipped weights, per calibrate.REGIMES regime."""
    return {r: dict(np.load(C.cache_file(ROOT / "benchmarks" / "results" / "saxs_calibrate_cache", r, 80, 13)))
            for r in C.REGIMES}


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
        out[s] = part
    return out


def extra_columns(part: dict[str, np.ndarray], p0: np.ndarray, form: str) -> np.ndarray:
    """The columns a `form` adds to TOP_FEATURES (their weights' signs: `SIGNED`)."""
    k = p0.argmax(axis=1)
    if form == "class intercepts":
        return np.eye(len(CLASSES))[k]
    if form == "evidence temperature":  # each shift feature times the answer's logit: the slope b falls with it
        return C.analyser_features(part) * C.top_logit(p0)[:, None]
    if form == "CNN doubt":
        return np.clip(-np.log(np.clip(part["p_cnn"][np.arange(len(k)), k], 1e-6, 1.0)), 0.0, 5.0)[:, None]
    raise ValueError(form)


SIGNED = {"class intercepts"}  # columns whose weights may have either sign (the others only lower the probability)


def fit_form(parts: dict, form: str, weight: float = C.IN_RANGE_WEIGHT):
    """`confident`'s a, b and weights on TOP_FEATURES plus `form`'s columns, fitted as `calibrate` fits
    (`calibrate.fit_top`, in-range curves weighing `weight`). Returns a function of a part giving its probabilities."""
    def inputs(part):
        return np.column_stack([C.analyser_features(part), extra_columns(part, part["p"], form)])

    f = np.concatenate([inputs(parts[r]) for r in C.REGIMES])
    p, y = (np.concatenate([parts[r][k] for r in C.REGIMES]) for k in ("p", "label"))
    lower = np.r_[np.zeros(len(TOP_FEATURES)), np.full(f.shape[1] - len(TOP_FEATURES), -20.0 if form in SIGNED else 0.0)]
    v = C.fit_top(p, f, p.argmax(axis=1) == y, C.regime_weights(parts, weight), lower)
    return lambda part: confident(part["p"], inputs(part), {"a": v[0], "b": v[1], "top_weights": list(v[2:])})


def scores(held: dict, probs) -> str:
    """ECE per held-out split and the out-of-range confident errors (wrong, p >= 0.9, not flagged)."""
    p = {s: probs(held[s]) for s in SPLITS}
    cells = [f"{expected_calibration_error(p[s], held[s]['label']):6.1%}" for s in SPLITS]
    part, p = held["out_range"], p["out_range"]
    wrong = p.argmax(axis=1) != part["label"]
    conf = wrong & ~(part["flagged_fit"] | (p.max(axis=1) < LOW_CONFIDENCE)) & (p.max(axis=1) >= 0.9)
    return " ".join(cells) + f" {int(conf.sum()):>5d}"


def evidence(part: dict[str, np.ndarray], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All the evidence the analyser has about an answer (its features, logit, answer, the CNN's and the fits'
    probabilities, the contests, χ²_red where the part keeps it), and whether the answer is right."""
    k = p.argmax(axis=1)
    contests = np.clip(np.nan_to_num(part["contest"].reshape(len(k), -1), nan=99.0, posinf=99.0, neginf=-99.0), -99, 99)
    cols = [C.analyser_features(part), C.top_logit(p), np.eye(len(CLASSES))[k], part["p_cnn"], part["p"], contests]
    if "chi2_red" in part:
        cols.append(np.nan_to_num(part["chi2_red"], nan=1.0))
    return np.column_stack(cols), k == part["label"]


def trees():
    """The gradient-boosted trees of the oracle and of the trees fitted on sdl's generator."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0, random_state=0)


def right_probability(q: np.ndarray, right: np.ndarray) -> float:
    """Top-label ECE of answers that are `right` with probability `q`."""
    return expected_calibration_error(np.column_stack([q, 1 - q]), 1 - np.asarray(right, int))


def oracle(parts: list[dict], probs: list[np.ndarray], model: str, seed: int) -> list[float]:
    """Top-label ECE per part of the answers' probability of being right, fitted by 5-fold cross-fitting on the parts
    pooled (so it does not know which part a curve is from)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, rights = zip(*(evidence(part, p) for part, p in zip(parts, probs)))
    x, right = np.concatenate(xs), np.concatenate(rights).astype(int)
    clf = trees() if model == "trees" else make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    q = cross_val_predict(clf, x, right, cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    # as a two-class probability table: the answer right with q (expected_calibration_error takes the top class)
    edges = np.cumsum([0] + [len(r) for r in rights])
    return [right_probability(q[a:b], right[a:b]) for a, b in zip(edges[:-1], edges[1:])]


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
    allp = {k: np.concatenate([parts[r][k] for r in C.REGIMES]) for k in C.RECORD_KEYS}
    wt = C.regime_weights(parts, C.IN_RANGE_WEIGHT)
    for w in (4.0, 8.0, 16.0):
        params = C.fit_calibration(allp, C.regime_weights(parts, w))
        if w == C.IN_RANGE_WEIGHT:
            refit = params
        out(f"   {'refitted here, in-range weight %g' % w + (' (as shipped)' if w == C.IN_RANGE_WEIGHT else ''):<49} "
            f"{scores(held, lambda part: C.calibrated(part, params))}")
    # the fitted objective of both, on the same curves: the fit is convex, so they agree unless the file is stale
    out(f"   (objective on the calibration curves: shipped file {C.objective(allp, wt, shipped_file):.5f}, refitted here "
        f"{refit['objective']:.5f})")
    for form in ("class intercepts", "evidence temperature", "CNN doubt"):
        out(f"   {'+ ' + form:<49} {scores(held, fit_form(parts, form))}")
    # more capacity than a logistic: trees on all the evidence (the calibration curves keep no χ²_red), fitted on sdl's
    # generator with the in-range weight; the answer's probability of being right is what they predict
    x, right = map(np.concatenate, zip(*(evidence(parts[r], parts[r]["p"]) for r in C.REGIMES)))
    clf = trees().fit(x, right.astype(int), sample_weight=wt)
    held_ev = {s: evidence({k: v for k, v in held[s].items() if k != "chi2_red"}, held[s]["p"]) for s in SPLITS}
    out(f"   {'gradient-boosted trees on all the evidence':<49} "
        + " ".join(f"{right_probability(clf.predict_proba(held_ev[s][0])[:, 1], held_ev[s][1]):6.1%}" for s in SPLITS))
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
    out("4. what the evidence means on each generator: curves raising it, accuracy / mean shipped probability")
    sets = {**{f"sdl {r}": parts[r] for r in C.REGIMES}, **{f"held {s.replace('_range', '')}": held[s] for s in SPLITS}}
    out(f"   {'':<16}" + "".join(f"{k:>15}" for k in sets))
    cols = {k: (C.analyser_features(part) != 0, C.calibrated(part, shipped_file)) for k, part in sets.items()}
    for j, name in [*enumerate(TOP_FEATURES), (None, "(none)")]:
        cells = []
        for k, part in sets.items():
            f, q = cols[k]
            m = f[:, j] if j is not None else ~f.any(axis=1)
            right = q.argmax(axis=1) == part["label"]
            cells.append(f"{m.sum():4d} {right[m].mean():4.0%} {q[m].max(axis=1).mean():4.0%}" if m.any() else "-")
        out(f"   {name:<16}" + "".join(f"{c:>15}" for c in cells))
    path = out.write(ROOT / "benchmarks" / "results" / "saxs_calibration_limits.txt")
    print(f"(written to {path})")


if __name__ == "__main__":
    main()
