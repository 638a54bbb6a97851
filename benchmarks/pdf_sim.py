"""Speed and fidelity of the PDF forward model (simulators.pdf): the table fast path against
debyecalculator's direct Debye sum, and the training/held-out set generators' throughput.

Prints and writes benchmarks/results/pdf_sim.txt:

* one G(r) of Pt clusters (309, 923 and 2057 atoms): debyecalculator (CPU, float64, one thread)
  against the table path (pair table built + G(r)), their correlation and amplitude ratio, and the
  cost of each further G(r) of the same structure (other expansion, ADP, Qmax, Qdamp, noise);
* the structure pools: cold build (empty cache directory) and the cached load;
* simulate(): curves/s for the train and heldout recipes with the pools in memory.

    .venv/bin/python benchmarks/pdf_sim.py [--n-per-class 500] [--seed 0] [--no-cold]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from printout import Printout  # noqa: E402

from simulators.pdf import dataset as D  # noqa: E402
from simulators.pdf import physics as P  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold pool build (~40 s per recipe)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pdf_sim.txt"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    say = Printout()
    say(f"# PDF forward model (simulators.pdf), one thread; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    kw = dict(qmin=0.8, qmax=25.0, qdamp=0.03, adp=0.006)
    for shells in (4, 7, 9):
        atoms = P.build_cluster("icosahedral", "Pt", shells=shells)
        warm = P.build_cluster("icosahedral", "Pt", shells=2)
        P.debye_gr(warm, **kw)  # imports, form factors and the sine matrix, before timing
        P.gr(P.pair_table(warm.positions), element="Pt", **kw)
        t = time.perf_counter()
        direct = P.debye_gr(atoms, **kw)
        t_direct = time.perf_counter() - t
        t = time.perf_counter()
        table = P.pair_table(atoms.positions / P.ELEMENTS["Pt"].nn_angstrom)
        fast = P.gr(table, element="Pt", **kw)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        reps = 200
        rng = np.random.default_rng(0)
        for i in range(reps):
            acq = P.Acquisition(qmin=0.8, qmax=float(rng.uniform(18, 28)), qdamp=0.03, counts=1e5,
                                background="water", background_level=1.0, background_error=0.01, rpoly=0.9)
            P.gr(table, element="Pt", expansion=float(rng.uniform(0.97, 1.03)), adp=float(rng.uniform(0.002, 0.015)),
                 acquisition=acq, rng=rng)
        t_each = (time.perf_counter() - t) / reps
        corr = float(np.corrcoef(fast, direct)[0, 1])
        ratio = float(np.dot(fast, direct) / np.dot(direct, direct))
        say(f"Pt icosahedron {len(atoms):5d} atoms: debyecalculator {t_direct:6.3f} s | table build + G(r) "
            f"{t_fast:6.3f} s | further G(r) with artefacts {1e3 * t_each:5.2f} ms | corr {corr:.6f}, "
            f"amplitude ratio {ratio:.4f} (2: debyecalculator sums i<j only)")
    if not a.no_cold:
        with tempfile.TemporaryDirectory() as tmp:
            saved = D._CACHE_DIR
            D._CACHE_DIR = Path(tmp)
            try:
                for recipe in D.RECIPES:
                    D._pool.cache_clear()
                    P._TABLE_CACHE.clear()
                    t = time.perf_counter()
                    pool = D._pool(recipe)
                    t_cold = time.perf_counter() - t
                    D._pool.cache_clear()
                    t = time.perf_counter()
                    D._pool(recipe)
                    t_load = time.perf_counter() - t
                    say(f"{recipe} pool: {len(pool)} structures, cold build {t_cold:.1f} s, cached load {t_load:.2f} s")
            finally:
                D._CACHE_DIR = saved
                D._pool.cache_clear()
    for recipe in D.RECIPES:
        D._pool(recipe)
        t = time.perf_counter()
        d = D.simulate(a.n_per_class, a.seed, recipe=recipe)
        dt = time.perf_counter() - t
        n = d["G"].shape[0]
        extra = f", in_range {100 * d['in_range'].mean():.1f} %" if recipe == "heldout" else ""
        say(f"simulate({a.n_per_class}/class, recipe={recipe!r}): {n} curves in {dt:.1f} s = {n / dt:.0f} curves/s"
            f" (pool in memory){extra}")
    print(f"wrote {say.write(a.out)}")


if __name__ == "__main__":
    main()
