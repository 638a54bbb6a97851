"""Benchmark of the SAXS least-squares analyser on curves from the simulated nanoparticle world.

Draws random recipes from the search space (log-scaled unit cube, reducing agents equally likely),
synthesises them in NanoparticleWorld, measures them with SaxsInstrument (resolution, background,
Poisson noise) and analyses each curve with SaxsFitAnalyser. Prints model accuracy (and a
confusion table), median relative radius error, polydispersity MAE and time per curve (one core:
OMP_NUM_THREADS=1 is set before sasmodels loads).

    .venv/bin/python benchmarks/saxs_fit.py [--n 50] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdl.techniques.saxs.fit import SaxsFitAnalyser  # noqa: E402
from sdl.measurement import Measurement  # noqa: E402
from simulators.worlds.nanoparticles import (  # noqa: E402
    PARAMETER_SPACE,
    NanoparticleWorld,
    SynthesisFailed,
    target_fraction,
)
from simulators.saxs.instrument import SaxsInstrument  # noqa: E402


def random_recipe(rng: np.random.Generator) -> dict:
    out = {}
    for name, spec in PARAMETER_SPACE.items():
        if spec["type"] == "choice":
            out[name] = str(rng.choice(spec["values"]))
            continue
        lo, hi = spec["bounds"]
        u = rng.random()
        out[name] = float(lo * (hi / lo) ** u if spec["log_scale"] else lo + (hi - lo) * u)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="number of curves")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--balanced", action="store_true",
                    help="equal numbers of each shape (as drawn from the world) instead of the world's mix")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    frac = target_fraction()
    print(f"target fraction (sphere, R = 8.0 ± 0.5 nm, pd <= 0.10): {frac:.4f} of the search space "
          f"({time.perf_counter() - t0:.2f} s for 200,000 points)")

    rng = np.random.default_rng(args.seed)
    world = NanoparticleWorld(seed=args.seed)
    instrument = SaxsInstrument(seed=args.seed)
    analyser = SaxsFitAnalyser()
    # warm-up: kernels compile/load once per process, not per curve
    warm = world.synthesize({"temperature_C": 95.0, "precursor_mM": 5.0, "surfactant_ratio": 0.8,
                             "reducing_agent": "citrate", "time_min": 20.0}, "warm-up")
    analyser.analyse(Measurement(technique="saxs", **instrument.measure(warm)))

    rows = []
    failed_syntheses = 0
    i = 0
    while len(rows) < args.n:
        recipe = random_recipe(rng)
        sid = f"bench-{i:04d}"
        i += 1
        try:
            sample = world.synthesize(recipe, sid)
        except SynthesisFailed:
            failed_syntheses += 1
            continue
        if args.balanced and sum(r["true_model"] == sample.shape for r in rows) >= -(-args.n // 4):
            continue
        meas = Measurement(technique="saxs", **instrument.measure(sample))
        t = time.perf_counter()
        res = analyser.analyse(meas)
        dt = time.perf_counter() - t
        d = {x.name: x for x in res.descriptors}
        rows.append({
            "true_model": sample.shape,
            "model": d["saxs.model"].value,
            "p": max(d["saxs.model"].probabilities.values()) if d["saxs.model"].probabilities else 0.0,
            "true_r": sample.truth["radius_nm"],
            "r": d["saxs.radius_nm"].value if "saxs.radius_nm" in d else float("nan"),
            "true_pd": sample.truth["polydispersity"],
            "pd": d["saxs.polydispersity"].value if "saxs.polydispersity" in d else float("nan"),
            "flags": sorted({f for x in res.descriptors for f in x.flags}),
            "time_s": dt,
            "model_time_s": res.info.get("timing_s", {}),
        })

    ok = np.array([r["model"] == r["true_model"] for r in rows])
    rel = np.array([abs(r["r"] - r["true_r"]) / r["true_r"] for r in rows])
    pd_err = np.array([abs(r["pd"] - r["true_pd"]) for r in rows])
    times = np.array([r["time_s"] for r in rows])
    right = ok
    print(f"curves: {len(rows)} (failed syntheses skipped: {failed_syntheses})")
    print(f"model accuracy: {ok.mean() * 100:.1f} %  ({ok.sum()}/{ok.size})")
    print(f"median relative radius error (all): {np.nanmedian(rel) * 100:.2f} %; "
          f"(right model): {np.nanmedian(rel[right]) * 100:.2f} %; 90th percentile (right model): "
          f"{np.nanpercentile(rel[right], 90) * 100:.2f} %")
    print(f"polydispersity MAE (all): {np.nanmean(pd_err):.4f}; (right model): {np.nanmean(pd_err[right]):.4f}")
    print(f"time per curve: median {np.median(times):.2f} s, mean {times.mean():.2f} s, max {times.max():.2f} s")
    per_model = {m: np.mean([r["model_time_s"].get(m, 0.0) for r in rows]) for m in rows[0]["model_time_s"]}
    print("mean fit time per candidate model: " + ", ".join(f"{m} {t:.2f} s" for m, t in per_model.items()))
    flagged = Counter(f for r in rows for f in r["flags"])
    print(f"flags raised: {dict(flagged) or 'none'}")
    confusion = Counter((r["true_model"], r["model"]) for r in rows)
    print("confusion (true -> predicted: count):")
    for (t, p), c in sorted(confusion.items()):
        print(f"  {t:>18s} -> {p:<18s} {c}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
