"""Benchmark: a pd_ml model for a user's own chemistry, trained from a folder of ~80 CIF files with
`sdl train pd` (timed end to end), and its held-out figures on simulated patterns whose artefacts
and wavelengths the training recipe does not contain (simulators.pd.dataset.REGIMES["test"]).

The CIF folder (written to --cif-dir, default a temporary folder) mixes three sources, as a
user's folder would:

* the CIF files Dans_Diffraction ships (Dans_Diffraction/Structures: metals, Si, diamond, graphite,
  KCl, LiCoO2, Na0.8CoO2 with partial occupancies, Ca2RuO4, Sr3LiRuO6, and copies of rutile, ZnO,
  sapphire and ruby that duplicate other files; one supercell file that gemmi cannot parse), minus
  its five generic test lattices (BCC, FCC, HCP, Cubic, triclinic);
* the 12 oxides of the shipped model and 4 further oxides (simulators/pd/phases: sources there);
* `STRUCTURES` below: battery materials (layered LiMO2 and NMC, spinels LiMn2O4,
  LiNi0.5Mn1.5O4, Li4Ti5O12, olivines LiFePO4/FePO4, Li2MnO3, Li2CO3, Li2O, LiF), perovskites,
  rock salts, fluorite-free binaries, sulfides, nitrides, carbonates and metals, with lattice
  parameters and atomic positions from the standard room-temperature refinements (ICSD/COD
  entries of the common phases; rounded to the digits given).

Printed and written to benchmarks/results/pd_cif.txt: what the CIF reader skipped and dropped,
training time and where it went, the validation summary, and on held-out patterns the exact-set
identification for single phases and 2–3 phase mixtures (CNN alone and the whole analyser with
refinement), fraction/lattice errors, and the unexplained-peaks rate on patterns with a phase
outside the library.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pd_cif.py [--n-refine 300] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.printout import Printout  # noqa: E402
from simulators.pd import physics as spd  # noqa: E402
from simulators.pd.cif import write_cif  # noqa: E402
from simulators.pd.physics import PhaseDef  # noqa: E402

H = (90, 90, 120)
C = (90, 90, 90)


def _p(name, sg, cell, atoms, z):
    cell = tuple(cell) + (C if len(cell) == 3 else ())
    return PhaseDef(name, name, sg, cell, tuple(a if len(a) == 5 else (*a, 1.0) for a in atoms), z, 0.0)


# name, IT number (Bilbao default setting: origin 2, hexagonal axes, unique axis b), cell (Å, °),
# asymmetric unit (element, x, y, z[, occupancy]), Z
STRUCTURES: list[PhaseDef] = [
    _p("LiNiO2", 166, (2.878, 2.878, 14.19) + H, [("Li", 0, 0, 0.5), ("Ni", 0, 0, 0), ("O", 0, 0, 0.2415)], 3),
    _p("LiNi0.33Mn0.33Co0.33O2", 166, (2.8607, 2.8607, 14.2418) + H,
       [("Li", 0, 0, 0.5), ("Ni", 0, 0, 0, 1 / 3), ("Mn", 0, 0, 0, 1 / 3), ("Co", 0, 0, 0, 1 / 3), ("O", 0, 0, 0.2412)], 3),
    _p("LiNi0.8Mn0.1Co0.1O2", 166, (2.872, 2.872, 14.20) + H,
       [("Li", 0, 0, 0.5), ("Ni", 0, 0, 0, 0.8), ("Mn", 0, 0, 0, 0.1), ("Co", 0, 0, 0, 0.1), ("O", 0, 0, 0.2413)], 3),
    _p("LiMn2O4", 227, (8.248,) * 3, [("Li", .125, .125, .125), ("Mn", .5, .5, .5), ("O", .2632, .2632, .2632)], 8),
    _p("LiNi0.5Mn1.5O4", 227, (8.172,) * 3, [("Li", .125, .125, .125), ("Ni", .5, .5, .5, .25), ("Mn", .5, .5, .5, .75),
                                              ("O", .2632, .2632, .2632)], 8),
    _p("Li4Ti5O12", 227, (8.357,) * 3, [("Li", .125, .125, .125), ("Li", .5, .5, .5, 1 / 6), ("Ti", .5, .5, .5, 5 / 6),
                                         ("O", .2625, .2625, .2625)], 8),
    _p("LiFePO4", 62, (10.332, 6.010, 4.692), [("Li", 0, 0, 0), ("Fe", .2822, .25, .9747), ("P", .0950, .25, .4182),
                                                ("O", .0968, .25, .7428), ("O", .4571, .25, .2060), ("O", .1656, .0465, .2848)], 4),
    _p("FePO4", 62, (9.821, 5.792, 4.788), [("Fe", .2752, .25, .9475), ("P", .0940, .25, .3946), ("O", .1196, .25, .7126),
                                             ("O", .4437, .25, .1599), ("O", .1663, .0445, .2488)], 4),
    _p("Li2MnO3", 12, (4.937, 8.532, 5.030, 90, 109.46, 90),
       [("Li", 0, .5, 0), ("Li", 0, 0, .5), ("Li", 0, .6606, .5), ("Mn", 0, .1672, 0), ("O", .2189, 0, .2273),
        ("O", .2540, .3219, .2233)], 4),
    _p("Li2CO3", 15, (8.359, 4.973, 6.197, 90, 114.83, 90),
       [("Li", .1965, .4463, .8367), ("C", 0, .0661, .25), ("O", 0, .3235, .25), ("O", .1466, -.0631, .3137)], 4),
    _p("Li2O", 225, (4.6114,) * 3, [("O", 0, 0, 0), ("Li", .25, .25, .25)], 4),
    _p("LiF", 225, (4.0263,) * 3, [("Li", 0, 0, 0), ("F", .5, .5, .5)], 4),
    _p("Mg2SiO4", 62, (10.195, 5.981, 4.756), [("Mg", 0, 0, 0), ("Mg", .2774, .25, .9915), ("Si", .0940, .25, .4262),
                                                ("O", .0916, .25, .7657), ("O", .4474, .25, .2200), ("O", .1631, .0330, .2779)], 4),
    _p("BaTiO3", 99, (3.992, 3.992, 4.036), [("Ba", 0, 0, 0), ("Ti", .5, .5, .482), ("O", .5, .5, .016), ("O", .5, 0, .515)], 1),
    _p("PbTiO3", 99, (3.899, 3.899, 4.153), [("Pb", 0, 0, 0), ("Ti", .5, .5, .538), ("O", .5, .5, .112), ("O", .5, 0, .612)], 1),
    _p("CaTiO3", 62, (5.4423, 7.6401, 5.3796), [("Ca", .0349, .25, .9935), ("Ti", 0, 0, .5), ("O", .4836, .25, .0711),
                                                 ("O", .2884, .0370, .7109)], 4),
    _p("LaAlO3", 167, (5.365, 5.365, 13.11) + H, [("La", 0, 0, .25), ("Al", 0, 0, 0), ("O", .525, 0, .25)], 6),
    _p("SnO2", 136, (4.7374, 4.7374, 3.1864), [("Sn", 0, 0, 0), ("O", .3056, .3056, 0)], 2),
    _p("MnO2", 136, (4.3983, 4.3983, 2.8730), [("Mn", 0, 0, 0), ("O", .3046, .3046, 0)], 2),
    _p("Cu2O", 224, (4.2696,) * 3, [("O", .25, .25, .25), ("Cu", 0, 0, 0)], 2),
    _p("In2O3", 206, (10.117,) * 3, [("In", .25, .25, .25), ("In", -.0336, 0, .25), ("O", .3905, .1529, .3832)], 16),
    _p("CaO", 225, (4.8105,) * 3, [("Ca", 0, 0, 0), ("O", .5, .5, .5)], 4),
    _p("MnO", 225, (4.4448,) * 3, [("Mn", 0, 0, 0), ("O", .5, .5, .5)], 4),
    _p("NaCl", 225, (5.6402,) * 3, [("Na", 0, 0, 0), ("Cl", .5, .5, .5)], 4),
    _p("CsCl", 221, (4.123,) * 3, [("Cs", 0, 0, 0), ("Cl", .5, .5, .5)], 1),
    _p("CaCO3", 167, (4.9896, 4.9896, 17.0610) + H, [("Ca", 0, 0, 0), ("C", 0, 0, .25), ("O", .2578, 0, .25)], 6),
    _p("SiO2", 154, (4.9134, 4.9134, 5.4052) + H, [("Si", .4697, 0, 2 / 3), ("O", .4135, .2669, .7858)], 3),
    _p("FeS2", 205, (5.4179,) * 3, [("Fe", 0, 0, 0), ("S", .3848, .3848, .3848)], 4),
    _p("MoS2", 194, (3.1604, 3.1604, 12.295) + H, [("Mo", 1 / 3, 2 / 3, .25), ("S", 1 / 3, 2 / 3, .621)], 2),
    _p("GaN", 186, (3.189, 3.189, 5.185) + H, [("Ga", 1 / 3, 2 / 3, 0), ("N", 1 / 3, 2 / 3, .377)], 2),
    _p("AlN", 186, (3.111, 3.111, 4.979) + H, [("Al", 1 / 3, 2 / 3, 0), ("N", 1 / 3, 2 / 3, .3821)], 2),
    _p("Ni", 225, (3.5238,) * 3, [("Ni", 0, 0, 0)], 4),
    _p("Pt", 225, (3.9242,) * 3, [("Pt", 0, 0, 0)], 4),
    _p("Pd", 225, (3.8907,) * 3, [("Pd", 0, 0, 0)], 4),
    _p("W", 229, (3.1652,) * 3, [("W", 0, 0, 0)], 2),
    _p("Mo", 229, (3.1472,) * 3, [("Mo", 0, 0, 0)], 2),
    _p("Ti", 194, (2.9508, 2.9508, 4.6855) + H, [("Ti", 1 / 3, 2 / 3, .25)], 2),
    _p("Zn", 194, (2.6649, 2.6649, 4.9468) + H, [("Zn", 1 / 3, 2 / 3, .25)], 2),
    _p("Mg", 194, (3.2094, 3.2094, 5.2108) + H, [("Mg", 1 / 3, 2 / 3, .25)], 2),
]
# phases NOT written to the folder: patterns holding one test the unexplained-peaks / ood flags
OUTSIDE: list[PhaseDef] = [
    _p("ZrSiO4", 141, (6.607, 6.607, 5.982), [("Zr", 0, .75, .125), ("Si", 0, .25, .375), ("O", 0, .0661, .1953)], 4),
    _p("BaF2", 225, (6.2001,) * 3, [("Ba", 0, 0, 0), ("F", .25, .25, .25)], 4),
    _p("Ag2O", 224, (4.736,) * 3, [("O", .25, .25, .25), ("Ag", 0, 0, 0)], 2),
]
DANS_GENERIC = {"BCC.cif", "FCC.cif", "HCP.cif", "Cubic.cif", "triclinic.cif"}


def build_cif_folder(out: Path) -> Path:
    """Write the benchmark's CIF folder (see the module docstring)."""
    import Dans_Diffraction

    out.mkdir(parents=True, exist_ok=True)
    dans = Path(Dans_Diffraction.__file__).parent / "Structures"
    for f in sorted(dans.glob("*.cif")):
        if f.name not in DANS_GENERIC:
            shutil.copyfile(f, out / f"dans_{f.name}")
    for f in sorted((Path(spd.__file__).parent / "phases" / "oxides").glob("*.cif")):
        shutil.copyfile(f, out / f.name)
    for p in spd.EXTRA_PHASES.values():
        write_cif(p, out / f"{p.name}.cif", comment=f"{p.name}: simulators.pd.physics.EXTRA_PHASES")
    for p in STRUCTURES:
        write_cif(p, out / f"{p.name}.cif", comment=f"{p.name}: benchmarks/pd_cif.py STRUCTURES")
    return out


def _exact(pred, true):
    return np.array([p == t for p, t in zip(pred, true)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cif-dir", type=Path, help="where to write the CIF folder (default: a temporary folder)")
    ap.add_argument("--model-dir", type=Path, help="model folder (default: a temporary folder)")
    ap.add_argument("--reuse-model", action="store_true", help="evaluate an existing --model-dir without training")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2: the machine's cores)")
    ap.add_argument("--n-id", type=int, default=2000, help="held-out patterns for the CNN figures")
    ap.add_argument("--n-refine", type=int, default=300, help="held-out patterns through the whole analyser")
    ap.add_argument("--n-ood", type=int, default=40, help="patterns with a phase outside the library")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, help="training patterns (default: sdl train pd's default for the library size)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "pd_cif.txt")
    args = ap.parse_args(argv)

    import torch

    from sdl.techniques.pd import train as pd_train
    from sdl.techniques.pd.ml import PdMLAnalyser, _axes

    tmp = Path(tempfile.mkdtemp(prefix="pd_cif_"))
    cif_dir = build_cif_folder(args.cif_dir or tmp / "cifs")
    model_dir = args.model_dir or tmp / "model"
    out = Printout()
    out("# pd_ml from a folder of CIF files: training time and held-out figures")
    n_files = len(list(cif_dir.glob("*.cif")))
    out(f"CIF folder: {n_files} files (Dans_Diffraction's Structures, simulators/pd/phases, benchmarks/pd_cif.py STRUCTURES)")
    if not args.reuse_model:
        spd._CACHE_DIR = tmp / "reflections"  # cold: no reflection list cached from an earlier run
        cmd = ["--phases", str(cif_dir), "--out", str(model_dir), "--seed", str(args.seed), "--threads", str(args.threads),
               "--epochs", str(args.epochs)] + (["--n", str(args.n)] if args.n else [])
        t0 = time.time()
        rc = pd_train.main(cmd)
        wall = time.time() - t0
        if rc:
            return rc
    import json

    meta = json.loads((model_dir / "pd_ml.json").read_text())
    table = json.loads((model_dir / "phases.json").read_text())
    out(f"library: {len(table['phases'])} phases; skipped {len(table['skipped'])} file(s), dropped {len(table['dropped'])} duplicate(s):")
    for line in table["skipped"]:
        out(f"  skipped {line}")
    for line in table["dropped"]:
        out(f"  dropped {line}")
    notes = sum(1 for p in table["phases"] if p["notes"])
    out(f"  {notes} phases carry notes (partial occupancies, missing U_iso, duplicate tags): see phases.json")
    out()
    out(f"## Training (`{meta['command']}`, {meta['workers']} simulation processes, {meta['threads']} torch threads, "
        f"{os.cpu_count()} cores)")
    if not args.reuse_model:
        out(f"wall time end to end: {wall:.0f} s = {wall / 60:.1f} min (goal <= 15 min); "
            f"{wall / len(table['phases']):.1f} s per phase (XRD-AutoAnalyzer: ~57 core-s per phase, 4 core-h for 255)")
    out(f"where it went: reading/checking CIFs and duplicate test {meta['read_cifs_s']} s, simulating {meta['n_train']} "
        f"patterns {meta['simulate_s']} s, training {meta['epochs']} epochs {meta['train_s']} s, validation "
        f"{meta['validate_s']} s")
    v, vt = meta["validation"], meta["validation_heldout_regime"]
    out(f"validation (CNN alone): training regime single {v['single_exact'] * 100:.1f} %, mixtures "
        f"{v['mixture_exact'] * 100:.1f} %; held-out regime single {vt['single_exact'] * 100:.1f} %, mixtures "
        f"{vt['mixture_exact'] * 100:.1f} %")

    torch.set_num_threads(1)
    an = PdMLAnalyser(model=model_dir)
    lib = [p.phase for p in an.phases]
    ranges = {p.label: p.lattice_range for p in an.phases}
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 77]))
    specs, meas = [], []
    t0 = time.time()
    for _ in range(args.n_id):
        s = pd_train.random_spec(rng, "test", library=lib, lattice_ranges=ranges, q_grid=an.q_grid)
        specs.append(s)
        meas.append(pd_train.measurement_from_spec(s, rng))
    t_sim = time.time() - t0
    X = np.stack([an.preprocess(*_axes(m)[:2]) for m in meas])
    pred = an.predict_batch(X)
    true_sets = [frozenset(p.name for p in s.phases) for s in specs]
    pred_sets = [frozenset(an.library[j] for j in np.flatnonzero(c)) for c in pred["called"]]
    ex = _exact(pred_sets, true_sets)
    k = np.array([len(s.phases) for s in specs])
    out()
    out(f"## Held-out patterns (test regime: {', '.join(f'{a}={b}' for a, b in pd_train.REGIMES['test'].items())})")
    out(f"CNN alone ({args.n_id} patterns, simulated in {t_sim:.0f} s): single phase {ex[k == 1].mean() * 100:.1f} % "
        f"(n={int((k == 1).sum())}), mixtures of 2-3 {ex[k > 1].mean() * 100:.1f} % exact-set (n={int((k > 1).sum())})")

    # whole analyser: CNN + refinement + search-match, from the 2θ scan
    n = min(args.n_refine, len(meas))
    t0 = time.time()
    got, fe, ae, flagged = [], [], [], 0
    for s, m in zip(specs[:n], meas[:n]):
        r = an.analyse(m)
        d = {x.name: x for x in r.descriptors}
        got.append(frozenset(v for v in d["pd.phases"].value.split("+") if v))
        flagged += bool(d.get("pd.unexplained_peaks") and d["pd.unexplained_peaks"].value > 0)
        if got[-1] == frozenset(p.name for p in s.phases):
            for p, f, sc in zip(s.phases, s.fractions, s.lattice_scales):
                fe.append(abs(d[f"pd.fraction.{p.name}"].value - f))
                ae.append(abs(d[f"pd.lattice_a_angstrom.{p.name}"].value - sc * p.a))
    t_ref = (time.time() - t0) / max(n, 1)
    exr = _exact(got, true_sets[:n])
    kk = k[:n]
    out(f"whole analyser ({n} patterns, {t_ref:.2f} s each): single phase {exr[kk == 1].mean() * 100:.1f} % (n={int((kk == 1).sum())}; "
        f"goal >= 95 %), mixtures of 2-3 {exr[kk > 1].mean() * 100:.1f} % exact-set (n={int((kk > 1).sum())}; goal >= 85 %)")
    if fe:
        out(f"  on correct sets: weight-fraction MAE {np.mean(fe):.3f}, lattice |Δa| median {np.median(ae):.4f} Å")
    out(f"  unexplained peaks flagged on {flagged / max(n, 1) * 100:.1f} % of these in-library patterns")
    # a phase outside the library: flagged?
    # the outside phases go through the same CIF reader as the library (it computes their molar masses)
    from sdl.techniques.pd.library import read_cif_folder

    out_dir = tmp / "outside"
    out_dir.mkdir(exist_ok=True)
    for p in OUTSIDE:
        write_cif(p, out_dir / f"{p.name}.cif", comment=f"{p.name}: benchmarks/pd_cif.py OUTSIDE")
    outside = [lp.phase for lp in read_cif_folder(out_dir, log=lambda *a: None)[0]]
    hits, n_o = 0, 0
    for i in range(args.n_ood):
        o = outside[i % len(outside)]
        s = pd_train.random_spec(rng, "test", library=lib, lattice_ranges=ranges, q_grid=an.q_grid, n_phases=1)
        s.phases = [o] + s.phases
        s.fractions, s.lattice_scales = [0.5, 0.5], [1.0] + s.lattice_scales
        s.sizes_nm, s.po = s.sizes_nm * 2, s.po * 2
        r = an.analyse(pd_train.measurement_from_spec(s, rng))
        d = {x.name: x for x in r.descriptors}
        hits += bool("ood" in d["pd.ood_score"].flags or (d.get("pd.unexplained_peaks") and d["pd.unexplained_peaks"].value > 0))
        n_o += 1
    out(f"phase outside the library (50 % of {', '.join(sorted({p.name for p in outside}))} with a library phase): "
        f"flagged (ood or unexplained peaks) in {hits / max(n_o, 1) * 100:.0f} % of {n_o}")
    out.write(args.out, "# python benchmarks/pd_cif.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
