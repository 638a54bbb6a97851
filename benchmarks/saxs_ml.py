"""Benchmark of the SAS ML analyser (sdl.techniques.saxs.ml) on held-out simulated curves.

The test curves use the TEST instrument of simulators.saxs.dataset: a q-window (0.0045-0.45 Å⁻¹,
linear spacing) and counting/resolution/background levels that training never saw.

    python benchmarks/sas_ml.py [--n-per-class 750] [--refine-per-class 20] [--seed 20261124]

Prints, and writes to benchmarks/results/saxs_ml.txt: shape-model accuracy (SCAN's 97.3 % beside
it), confusion matrix, size errors before/after refinement, polydispersity MAE, expected
calibration error, uncertainty coverage, OOD detection at the stated false-alarm rate, batched
inference throughput and refinement time per curve.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from printout import Printout  # noqa: E402

SCAN_ACCURACY = 0.973


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-class", type=int, default=750)
    ap.add_argument("--refine-per-class", type=int, default=20)
    ap.add_argument("--ood-per-family", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "saxs_ml.txt")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from simulators.saxs import dataset as D
    from sdl.techniques.saxs.ml import APPLIES, CLASSES, TARGETS, SaxsMLAnalyser, refine, represent_batch
    from sdl.analysis.calibration import expected_calibration_error

    out = Printout()

    an = SaxsMLAnalyser(args.weights)
    meta = an.model.meta
    t0 = time.perf_counter()
    data = D.generate(args.n_per_class, args.seed, "test")
    ood = D.generate_ood(args.ood_per_family, args.seed)
    t_gen = time.perf_counter() - t0
    y = np.asarray(data["label"])
    T = np.array([[t[k] for k in TARGETS] for t in data["targets"]])
    n = len(y)
    out(f"SAS ML benchmark  ({platform.node()}, torch threads={args.threads}, weights={an.weights.name})")
    out(f"test set: {n} curves ({args.n_per_class}/class, seed {args.seed}), TEST instrument: q {D.TEST.windows}, "
        f"{D.TEST.spacing} spacing, peak counts {D.TEST.counts}, dq/q {D.TEST.dq_over_q}  [simulated in {t_gen:.0f} s]")
    trained = meta.get("trained_with", {})
    out(f"trained with: {trained}")
    out()

    # warm-up, then timed batched inference (representation + CNN + calibration + OOD), no refinement
    an.predict_batch(data["q"][:64], data["I"][:64])
    t_inf = {}
    for th in sorted({1, args.threads}):
        torch.set_num_threads(th)
        t0 = time.perf_counter()
        pred = an.predict_batch(data["q"], data["I"])
        t_inf[th] = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    lab = pred["label"]
    p = pred["probabilities"]
    shape = y != CLASSES.index("other")
    acc_shape = float((lab[shape] == y[shape]).mean())
    acc_all = float((lab == y).mean())
    out(f"shape-model accuracy (6 shape classes, {shape.sum()} curves): {100 * acc_shape:.2f} %   (SCAN ensemble: {100 * SCAN_ACCURACY:.1f} %, goal >= 98 %)")
    out(f"7-class accuracy incl. 'other' ({n} curves): {100 * acc_all:.2f} %")
    dqq = np.asarray(data["dq_over_q"])
    cnt = np.asarray(data["peak_counts"])
    inside = (dqq < 0.08) & (cnt > 3e4) & (cnt < 1e7)  # unseen levels between the training bands
    out(f"  shape accuracy, artefact levels in the gaps between training bands (dq/q 0.03-0.05 or counts 3e5-1e6): "
        f"{100 * (lab == y)[shape & inside].mean():.2f} %  (n={(shape & inside).sum()})")
    out(f"  shape accuracy, beyond the training ranges (dq/q 0.08-0.10 and/or counts 1.5-3e4 / 1-2e7): "
        f"{100 * (lab == y)[shape & ~inside].mean():.2f} %  (n={(shape & ~inside).sum()})")
    lowc = cnt < 3e4
    out(f"    of which counts 1.5-3e4 (below training): {100 * (lab == y)[shape & lowc].mean():.2f} %;  dq/q 0.08-0.10 (above training): "
        f"{100 * (lab == y)[shape & (dqq >= 0.08)].mean():.2f} %")
    out()
    out("confusion matrix (rows: true, columns: predicted)")
    short = [c[:10] for c in CLASSES]
    out(" " * 20 + "".join(f"{s:>11}" for s in short))
    cm = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(cm, (y, lab), 1)
    for i, c in enumerate(CLASSES):
        out(f"{c:>20}" + "".join(f"{v:>11d}" for v in cm[i]))
    out()
    raw_logits = an.model.raw(represent_batch(data["q"], data["I"]))["logits"]
    e = np.exp(raw_logits - raw_logits.max(1, keepdims=True))
    p_uncal = e / e.sum(1, keepdims=True)
    out(f"expected calibration error (15 bins): {100 * expected_calibration_error(p, y):.2f} %  "
        f"(before temperature scaling: {100 * expected_calibration_error(p_uncal, y):.2f} %, T = {an.model.temperature:.3f})")
    conf = p.max(1)
    out(f"mean top probability {conf.mean():.4f} vs accuracy {acc_all:.4f}; 'low_confidence' (p<0.6) on {100 * (conf < 0.6).mean():.2f} % of curves")
    out()

    # ML size regression (correctly identified shape curves)
    ok = shape & (lab == y)
    out("ML regression before refinement (correctly identified shape curves):")
    rel_all = []
    for j, t in enumerate(TARGETS):
        m = ok & np.isfinite(T[:, j])
        if not m.any():
            continue
        if t == "polydispersity":
            err = np.abs(pred["values"][m, j] - T[m, j])
            z = err / pred["uncertainty"][m, j]
            out(f"  {t:>14}: MAE {err.mean():.4f}  median abs err {np.median(err):.4f}  |err|<1σ for {100 * (z < 1).mean():.1f} %, <2σ {100 * (z < 2).mean():.1f} %  (n={m.sum()})")
        else:
            rel = np.abs(pred["values"][m, j] / T[m, j] - 1)
            z = np.abs(pred["values"][m, j] - T[m, j]) / pred["uncertainty"][m, j]
            rel_all.append(rel)
            out(f"  {t:>14}: median rel err {100 * np.median(rel):.2f} %  90th pct {100 * np.quantile(rel, 0.9):.1f} %  |err|<1σ for {100 * (z < 1).mean():.1f} %, <2σ {100 * (z < 2).mean():.1f} %  (n={m.sum()})")
    out(f"  all sizes: median rel err {100 * np.median(np.concatenate(rel_all)):.2f} %")
    out()

    # refinement on a subset
    rng = np.random.default_rng(args.seed)
    sub = []
    for c in range(len(CLASSES) - 1):
        idx = np.flatnonzero(ok & (y == c))
        sub += rng.choice(idx, size=min(args.refine_per_class, idx.size), replace=False).tolist()
    before: dict[str, list] = {t: [] for t in TARGETS}
    after: dict[str, list] = {t: [] for t in TARGETS}
    cover: list[float] = []
    times = []
    fails = 0
    for i in sub:
        cls = CLASSES[lab[i]]
        start = {t: float(pred["values"][i, TARGETS.index(t)]) for t in APPLIES[cls]}
        t0 = time.perf_counter()
        try:
            r = refine(cls, data["q"][i], data["I"][i], data["sigma"][i], data["dq"][i], start)
        except Exception:
            fails += 1
            continue
        times.append(time.perf_counter() - t0)
        for t in APPLIES[cls]:
            j = TARGETS.index(t)
            if t == "polydispersity":
                before[t].append(abs(start[t] - T[i, j])); after[t].append(abs(r["values"][t] - T[i, j]))
            else:
                before[t].append(abs(start[t] / T[i, j] - 1)); after[t].append(abs(r["values"][t] / T[i, j] - 1))
                u = r["uncertainty"][t]
                if np.isfinite(u) and u > 0:
                    cover.append(abs(r["values"][t] - T[i, j]) / u)
    out(f"least-squares refinement from the ML estimate ({len(sub)} correctly identified curves, {args.refine_per_class}/class, {fails} failed):")
    for t in TARGETS:
        if not after[t]:
            continue
        if t == "polydispersity":
            out(f"  {t:>14}: MAE before {np.mean(before[t]):.4f} -> after {np.mean(after[t]):.4f}")
        else:
            out(f"  {t:>14}: median rel err before {100 * np.median(before[t]):.2f} % -> after {100 * np.median(after[t]):.2f} %  (n={len(after[t])})")
    b = np.concatenate([before[t] for t in TARGETS if t != "polydispersity" and after[t]])
    a = np.concatenate([after[t] for t in TARGETS if t != "polydispersity" and after[t]])
    out(f"  all sizes: median rel err before {100 * np.median(b):.2f} % -> after {100 * np.median(a):.2f} %  (goal <= 5 %)")
    if cover:
        cz = np.asarray(cover)
        out(f"  refined sizes within 1σ (fit covariance × max(χ²_red,1)): {100 * (cz < 1).mean():.1f} %, within 2σ: {100 * (cz < 2).mean():.1f} %")
    out(f"  refinement time per curve: median {np.median(times):.2f} s, mean {np.mean(times):.2f} s, max {np.max(times):.2f} s")
    out()

    # OOD
    thr = an.model.threshold
    s_in = pred["ood_score"][shape]
    out(f"OOD: threshold ood_score > {thr:.4f} (set at a {100 * meta.get('metrics', {}).get('ood_false_alarm_target', float('nan')):.0f} % false-alarm rate on validation)")
    out(f"  false alarms on in-library test curves: {100 * (s_in > thr).mean():.2f} %  (n={s_in.size})")
    oth = y == CLASSES.index("other")
    po = pred["ood"][oth] | (lab[oth] == CLASSES.index("other"))
    out(f"  'other' family (mono_gauss_coil, mass_fractal, gauss_lorentz_gel, power_law; in training): flagged {100 * po.mean():.2f} %  (n={oth.sum()})")
    po_pred = an.predict_batch(ood["q"], ood["I"])
    fam = np.asarray(ood["family"])
    flagged = po_pred["ood"] | (po_pred["label"] == CLASSES.index("other"))
    unseen = fam != "power_law"
    out(f"  never-trained families (peak_lorentz, surface_fractal, white noise, random smooth curves): flagged {100 * flagged[unseen].mean():.2f} %  (n={unseen.sum()})")
    for f in dict.fromkeys(fam):
        m = fam == f
        out(f"    {f:>16}: {100 * flagged[m].mean():.1f} %")
    out()
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    for th, t in t_inf.items():
        out(f"throughput (predict_batch, {n} curves, batched, {th} torch thread(s), before refinement): {n / t:,.0f} curves/s  ({t:.2f} s; goal >= 2,000/s)")
    out(f"  (machine load average during the run: {load}; {__import__('os').cpu_count()} CPUs shared with other jobs)")
    out.write(args.out)
    print(f"(written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
