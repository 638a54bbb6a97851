"""Paired check of other saxs_ml weights in the whole analyser, on benchmarks/saxs_heldout.py's curves.

Re-analyses every error of the analyser whose fits a held-out cache holds, and disjoint random samples of its right
answers, with `--weights`, and estimates each split's accuracy from how many errors turn right and how many sampled
right answers turn wrong. Accuracy does not depend on the calibration file (the pair move and the top-class
recalibration keep the ranking), so weights without a calibration of their own can be judged before one is fitted:
put a copy of the shipped `saxs_ml_shift.json` beside them (named after them) to keep the flags comparable.

    python benchmarks/saxs_paired.py --weights W.pt [--cache benchmarks/results/saxs_heldout_cache.npz]
        [--in-range-samples 300,500] [--other-samples 150] [--workers 2] [--limit N]

At 3ed7ec0, weights trained with `--n-per-class 8000` (docs/history/saxs_ml.md, "A training set twice as large"):
in range 20 of 71 errors right, 3 of 800 right answers wrong; shifted 53 of 241 and 7 of 150; out of range 28 of
170 and 2 of 150.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import saxs_heldout as H  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True, help="the saxs_ml weights to judge")
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "saxs_heldout_cache.npz",
                    help="saxs_heldout.py --cache file of the analyser to compare with")
    ap.add_argument("--seed", type=int, default=7, help="the held-out generator's seed the cache was made with")
    ap.add_argument("--in-range-samples", default="300,500", help="sizes of the disjoint samples of in-range right "
                    "answers (seeds 0, 1, ...)")
    ap.add_argument("--other-samples", default="150", help="the same for the shifted and out_range splits")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="analyse only the first N curves of each split (a smoke run)")
    args = ap.parse_args()

    rows = H.rescore(H.load_cache(args.cache), None)
    plan, jobs = {}, []  # split -> (rows by curve index, errors, right answers, sampled right answers, sample sizes)
    for split in ("in_range", "shifted", "out_range"):
        rs = {r["i"]: r for r in rows if r["split"] == split}
        if not rs:
            continue
        wrong = sorted(i for i, r in rs.items() if np.argmax(r["p"]) != r["label"])
        right = sorted(i for i, r in rs.items() if np.argmax(r["p"]) == r["label"])
        sizes = args.in_range_samples if split == "in_range" else args.other_samples
        sampled, rest = [], list(right)
        for s, n in enumerate(int(x) for x in sizes.split(",")):
            pick = set(np.random.default_rng(s).choice(rest, min(n, len(rest)), replace=False).tolist())
            sampled += pick
            rest = [i for i in rest if i not in pick]
        sampled = sorted(sampled)
        plan[split] = (rs, wrong, right, sampled, sizes)
        d = H.draw(max(rs) + 1, args.seed, split)
        jobs += [(split, i, d["q"][i], d["I"][i], d["sigma"][i]) for i in (wrong + sampled)[: args.limit]]
    with mp.get_context("spawn").Pool(args.workers, initializer=H._init_worker, initargs=(args.weights,)) as pool:
        got = {(j[0], j[1]): o for j, o in zip(jobs, pool.imap(H._analyse_one, jobs, chunksize=1)) if o}
    for split, (rs, wrong, right, sampled, sizes) in plan.items():
        ok = {i: int(np.argmax(o["p"])) == rs[i]["label"] for (sp, i), o in got.items() if sp == split}
        fixed = sum(ok[i] for i in wrong if i in ok)
        n_s = sum(1 for i in sampled if i in ok)
        broken = [i for i in sampled if i in ok and not ok[i]]
        est = (len(right) - (len(broken) / n_s * len(right) if n_s else 0) + fixed) / len(rs)
        print(f"{split}: {len(rs)} curves, accuracy {len(right) / len(rs):.1%}; with {args.weights.name}: "
              f"{fixed} of {sum(1 for i in wrong if i in ok)} errors right, {len(broken)} of {n_s} sampled right "
              f"answers wrong (samples {sizes}): about {est:.1%}")
        for i in broken:
            o = got[(split, i)]
            print(f"    {i}: {H.CLASSES[rs[i]['label']]} -> {H.CLASSES[int(np.argmax(o['p']))]} (p {max(o['p']):.2f}, "
                  f"{', '.join(o['flags']) or 'unflagged'})")


if __name__ == "__main__":
    main()
