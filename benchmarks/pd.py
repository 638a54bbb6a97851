"""Benchmark of the powder-diffraction analysers (pd_ml and pd_demix) on held-out simulated data
whose artefacts and wavelengths training never saw (sdl.techniques.pd.train.REGIMES["test"]:
synchrotron 0.1665 Å and Mo Kα besides Cu Kα, other instrument resolution, stronger and
differently shaped backgrounds with an amorphous hump, lower counts, larger displacement, more
texture and microstrain).

Prints and writes benchmarks/results/pd.txt:

* phase ID (CNN, threshold 0.5): exact-set accuracy for single phases and for 2–3 phase
  mixtures, by wavelength;
* after refinement (PdMLAnalyser.analyse, whole path from the 2θ scan): exact-set accuracy,
  weight-fraction MAE, lattice-parameter error (Å), crystallite-size relative error;
* out-of-distribution: detection rate of patterns holding a phase outside the library, and the
  false-alarm rate on in-library patterns, at the shipped threshold;
* throughput of the batched CNN (patterns/s, one thread), with and without preprocessing;
* NMF demixing of simulated 3-phase composition series (with and without a Vegard shift),
  against plain NMF;
* the oxide world's target fraction.

    .venv/bin/python benchmarks/pd.py [--n-id 2000] [--n-refine 80] [--n-ood 40] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from printout import Printout  # noqa: E402

from sdl.techniques.pd import demix as pd_demix, train as pd_train  # noqa: E402
from sdl.techniques.pd.ml import PdMLAnalyser, _axes, preprocess, preprocess_batch  # noqa: E402
from simulators.worlds import oxides  # noqa: E402
from simulators.pd import physics as spd  # noqa: E402


def _exact(pred_sets, true_sets):
    return np.array([p == t for p, t in zip(pred_sets, true_sets)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-id", type=int, default=2000)
    ap.add_argument("--n-refine", type=int, default=80)
    ap.add_argument("--n-ood", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "pd.txt")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Printout()

    an = PdMLAnalyser()
    LIBRARY = an.library  # the shipped model: the oxide CIFs, labelled by file name (= simulators.pd.physics.PHASES)
    out("# Powder diffraction benchmark (pd_ml, pd_demix)")
    out(f"weights: {an.meta.get('command')} (train {an.meta.get('train_s')} s, simulate {an.meta.get('simulate_s')} s)")
    out("held-out regime: " + ", ".join(f"{k}={v}" for k, v in pd_train.REGIMES["test"].items()))
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 2024]))

    # ---- phase ID with the CNN on whole-path measurements ------------------------------------
    t0 = time.time()
    specs, meas = [], []
    for i in range(args.n_id):
        s = pd_train.random_spec(rng, "test")
        specs.append(s)
        meas.append(pd_train.measurement_from_spec(s, rng))
    t_sim = time.time() - t0
    X = np.stack([preprocess(*_axes(m)[:2]) for m in meas])
    pred = an.predict_batch(X)
    true_sets = [frozenset(s.phases) for s in specs]
    pred_sets = [frozenset(LIBRARY[j] for j in np.flatnonzero(c)) for c in pred["called"]]
    ex = _exact(pred_sets, true_sets)
    k = np.array([len(s.phases) for s in specs])
    wl = np.array([s.wavelength for s in specs])
    out()
    out(f"## Phase identification, CNN only ({args.n_id} held-out patterns, simulated in {t_sim:.0f} s)")
    out(f"single phase exact-set accuracy: {ex[k == 1].mean() * 100:.1f} %  (n={int((k == 1).sum())}; goal >= 97 %)")
    out(f"mixtures (2-3 phases) exact-set: {ex[k > 1].mean() * 100:.1f} %  (n={int((k > 1).sum())}; goal >= 90 %)")
    for lam in sorted(set(wl)):
        sel = wl == lam
        out(f"  λ = {lam:.4f} Å: single {ex[sel & (k == 1)].mean() * 100:.1f} %, mixtures {ex[sel & (k > 1)].mean() * 100:.1f} %"
            f"{'  (wavelength not in training)' if lam not in (1.5406, 1.7890) else ''}")
    # CNN regression before refinement, on correctly identified patterns
    frac_err, scale_err, size_err = [], [], []
    for i, s in enumerate(specs):
        if not ex[i]:
            continue
        for p, f, sc, L in zip(s.phases, s.fractions, s.lattice_scales, s.sizes_nm):
            j = LIBRARY.index(p)
            frac_err.append(abs(pred["fractions"][i, j] - f))
            scale_err.append(abs(pred["lattice_scale"][i, j] - sc) * spd.PHASES[p].a)
            size_err.append(abs(pred["size_nm"][i, j] / L - 1))
    out(f"CNN alone: fraction MAE {np.mean(frac_err):.3f}, lattice |Δa| median {np.median(scale_err):.4f} Å, "
        f"size rel. error median {np.median(size_err) * 100:.1f} %")
    out("anchor: XRD-AutoAnalyzer 93.4 % phase ID on experimental patterns (Szymanski et al. 2021)")

    # ---- throughput ------------------------------------------------------------------------------
    # best of 3 repeats: the 2-core benchmark machine is shared, the best run is the least disturbed
    Xb = np.repeat(X[:512], 8, axis=0)[:4096]
    an.predict_batch(Xb[:256])
    thr, thr_pp = 0.0, 0.0
    raw = [(_axes(m)[0], _axes(m)[1]) for m in meas[:1000]]
    for _ in range(3):
        t0 = time.time()
        an.predict_batch(Xb)
        thr = max(thr, Xb.shape[0] / (time.time() - t0))
        t0 = time.time()
        Xp = np.stack([preprocess(q, y) for q, y in raw])
        an.predict_batch(Xp)
        thr_pp = max(thr_pp, len(raw) / (time.time() - t0))
    # a series from one instrument (common axis): vectorised preprocessing
    q0 = _axes(meas[0])[0]
    same = [_axes(m)[1] for m in meas if m.arrays["two_theta_deg"].size == q0.size
            and m.metadata["wavelength_angstrom"] == meas[0].metadata["wavelength_angstrom"]]
    Ys = np.array((same * (1000 // max(len(same), 1) + 1))[:1000])
    thr_series = 0.0
    for _ in range(3):
        t0 = time.time()
        an.predict_batch(preprocess_batch(q0, Ys))
        thr_series = max(thr_series, Ys.shape[0] / (time.time() - t0))
    out()
    out("## Throughput (one CPU thread, batch 512, best of 3)")
    out(f"CNN on preprocessed patterns: {thr:,.0f} patterns/s (goal >= 2,000/s)")
    out(f"per-scan preprocessing (interpolation to the Q grid, background channel) + CNN: {thr_pp:,.0f} patterns/s")
    out(f"series on one axis, preprocess_batch + CNN: {thr_series:,.0f} patterns/s")

    # ---- refinement, whole analyse() path ------------------------------------------------------
    nr = min(args.n_refine, args.n_id)
    res_exact, fr_e, a_e, L_e, ood_in, times, methods = [], [], [], [], [], [], []
    t_all = time.time()
    for i in range(nr):
        s, m = specs[i], meas[i]
        t0 = time.time()
        r = an.analyse(m)
        times.append(time.time() - t0)
        d = {x.name: x for x in r.descriptors}
        methods.append(r.info["method"])
        got = frozenset(d["pd.phases"].value.split("+"))
        res_exact.append(got == frozenset(s.phases))
        ood_in.append("ood" in d["pd.ood_score"].flags)
        if got != frozenset(s.phases):
            continue
        for p, f, sc, L in zip(s.phases, s.fractions, s.lattice_scales, s.sizes_nm):
            fr_e.append(abs(float(d[f"pd.fraction.{p}"].value) - f))
            a_e.append(abs(float(d[f"pd.lattice_a_angstrom.{p}"].value) - sc * spd.PHASES[p].a))
            L_e.append(abs(float(d[f"pd.crystallite_size_nm.{p}"].value) / L - 1))
    kk = k[:nr]
    res_exact = np.array(res_exact)
    out()
    out(f"## After refinement (PdMLAnalyser.analyse on {nr} of the held-out scans; {np.mean(times):.2f} s/pattern)")
    out(f"method used: {sorted(set(methods))}")
    out(f"exact-set accuracy: single {res_exact[kk == 1].mean() * 100:.1f} %, mixtures {res_exact[kk > 1].mean() * 100:.1f} %")
    out(f"weight-fraction MAE: {np.mean(fr_e):.3f}")
    out(f"lattice parameter |Δa|: median {np.median(a_e):.4f} Å, 90th pct {np.quantile(a_e, 0.9):.4f} Å (goal <= 0.005 Å median)")
    out(f"crystallite size relative error: median {np.median(L_e) * 100:.1f} %, 90th pct {np.quantile(L_e, 0.9) * 100:.1f} % (goal <= 10 %)")
    out("anchor: PQ-Net (Dong et al. 2021): scale factors, lattice parameters and crystallite sizes ≈ Rietveld")

    # ---- OOD -------------------------------------------------------------------------------------
    det = []
    extra = list(spd.EXTRA_PHASES)
    for i in range(args.n_ood):
        ood_phase = extra[i % len(extra)]
        if i % 2 == 0:
            phases = [ood_phase]
        else:
            phases = [ood_phase, str(rng.choice(LIBRARY))]
        s = pd_train.random_spec(rng, "test", phases=phases)
        if len(phases) == 2:
            f = float(rng.uniform(0.3, 0.7))
            s.fractions = [f, 1 - f]
        m = pd_train.measurement_from_spec(s, rng)
        r = an.analyse(m)
        d = {x.name: x for x in r.descriptors}
        det.append("ood" in d["pd.ood_score"].flags)
    det = np.array(det)
    out()
    out(f"## Phase not in library (threshold {an.ood_threshold} on the unexplained-intensity score)")
    out(f"detection: {det.mean() * 100:.1f} % of {det.size} patterns with Ce2O3 / SrTiO3 / CuO / Y2O3 "
        f"(pure: {det[0::2].mean() * 100:.1f} %, 30-70 % in a mixture: {det[1::2].mean() * 100:.1f} %)")
    out(f"false alarms on in-library held-out patterns: {np.mean(ood_in) * 100:.1f} % of {len(ood_in)}")

    # ---- NMF ---------------------------------------------------------------------------------------
    out()
    out("## NMF demixing of 21-sample 3-phase series (CeO2 | t-ZrO2 | m-ZrO2, Cu Kα, Poisson noise, background)")
    for span in (0.0, 0.01, 0.02):
        s = pd_demix.make_series(21, args.seed, lattice_span=span)
        for label, kw in (("shift-aware", {}), ("plain NMF", {"shift_refine": False, "merge_threshold": 2.0})):
            t0 = time.time()
            comps, w, info = pd_demix.demix(s["patterns"], 3, q=s["q"], **kw)
            idx, cos = pd_demix.match_components(comps, s["components"])
            mae = float(np.abs(w[:, idx] - s["fractions"]).mean())
            out(f"Vegard span {span * 100:.0f} % | {label:11s}: components cos min {cos.min():.3f}, weights MAE {mae:.3f}"
                f" ({time.time() - t0:.1f} s)")
        comps, w, info = pd_demix.demix(s["patterns"], None, q=s["q"])
        idx, cos = pd_demix.match_components(comps, s["components"]) if comps.shape[0] >= 3 else (np.zeros(3, int), np.zeros(3))
        out(f"Vegard span {span * 100:.0f} % | automatic k: NMF k={info['n_nmf_components']} -> {comps.shape[0]} components"
            f" after merging shifted copies; cos min {cos.min():.3f}")
    out("goal: components cos >= 0.95, weights MAE <= 0.05")

    out()
    out(f"## Oxide world: default target {oxides.DEFAULT_TARGET} covers {oxides.target_fraction() * 100:.2f} % of the space")
    out.write(args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
