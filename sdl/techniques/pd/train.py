"""Training of the powder-diffraction analyser `pd_ml` from a folder of CIF files: a model folder
for the user's own chemistry.

    sdl train pd --phases CIF_DIR --out MODEL_DIR [--wavelength Å] [--two-theta MIN MAX]
                 [--max-phases N] [--seed S] [--n PATTERNS] [--epochs E] [--lattice-range LABEL=LO,HI]

1. The CIFs are read (sdl.techniques.pd.library: gemmi parsing, one line per unusable file, the
   rest still trains), duplicates dropped (same formula + space group, or matching patterns) and
   reported.
2. Patterns are simulated with the forward model (simulators.pd: Dans_Diffraction structure
   factors, pseudo-Voigt profiles) and the artefacts of real scans, directly at the 2θ values of
   the model's Q grid (2048 points over the range `--two-theta` covers at `--wavelength`; default
   0.75–5.15 Å⁻¹), so training sees what the analyser's preprocessing makes of a measured scan.
3. The CNN (sdl.techniques.pd.ml.PdNet, dense layer sized by the number of phases) is trained with
   a progress bar; a validation set of fresh patterns gives the summary (exact-set accuracy of the
   CNN for single phases and mixtures, per-phase recall) and the OOD energy threshold.
4. MODEL_DIR gets pd_ml.pt, pd_ml.json (settings, timings, the command), phases.json + cif/ (the
   phase table and copies of the CIFs) and validation.txt / validation.png.

The shipped default model (sdl/techniques/pd/weights) is made by this command from the 12 oxides
of simulators/pd/phases/oxides (see `OXIDE_COMMAND`).

Artefact regimes (`REGIMES`): "train" is what the network learns from; "test" changes every
artefact level and adds wavelengths that training never saw (a 0.1665 Å synchrotron beam and
Mo Kα), so benchmark figures measure transfer, not memorisation:

| artefact | train | test |
|---|---|---|
| wavelength | Cu Kα1 1.5406, Co Kα1 1.7890 Å (or `--wavelength`) | synchrotron 0.1665, Mo Kα1 0.7093, Cu Kα1 1.5406 Å |
| Caglioti W (deg²) | 0.001–0.006 | 0.0003–0.012 (4e-5 at the synchrotron) |
| background level / max | 0.02–0.25, Chebyshev order 3 | 0.05–0.45, order 5 + amorphous hump |
| peak counts | 1e3–1e5 | 300–3e4 |
| sample displacement sd | 0.05 mm | 0.12 mm |
| zero shift | ±0.02° | ±0.04° |
| microstrain | 0–2e-3 | 0–3e-3 |
| March–Dollase r | 0.85–1.15 | 0.75–1.3 |
| impurity peaks | 15 % of patterns: 1–3 peaks of 1–4 % | none |

Mixtures hold 1–`--max-phases` (default 3) library phases with weight fractions ≥ 0.1; lattice
scales within each phase's range (default ±1 %), crystallite sizes 4–100 nm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sdl.errors import AnalysisError
from sdl.techniques.pd.ml import N_CHANNELS, N_GRID, Q_GRID, PdNet, WEIGHTS_DIR, energy_score, normalise_pattern, save_model
from simulators.pd import dataset as _dataset
from simulators.pd import physics as spd
from simulators.pd.dataset import REGIMES, Spec, _tt, simulate_spec

__all__ = ["REGIMES", "Spec", "random_spec", "simulate_spec", "make_dataset", "train", "main", "run",
           "BUILTIN_LATTICE_RANGES", "OXIDE_COMMAND"]

DESCRIPTION = ("Train the powder-diffraction analyser pd_ml from a folder of CIF files (phase identification, "
               "mixtures, fractions, lattice, size) on simulated patterns.")

# the oxide world's solid solutions: lattice-scale ranges of the shipped model's phases
BUILTIN_LATTICE_RANGES: dict[str, tuple[float, float]] = {
    "CeO2": (0.96, 1.01),  # Ce1-xZrxO2 (Vegard) and reduced ceria
    "ZrO2_tetragonal": (0.99, 1.04),  # Ce-doped t-ZrO2
    "ZrO2_monoclinic": (0.99, 1.02),
}
OXIDE_COMMAND = ("sdl train pd --phases simulators/pd/phases/oxides --out sdl/techniques/pd/weights --n 28000 "
                 "--epochs 15 --seed 0 --label file --lattice-range CeO2=0.96,1.01 --lattice-range ZrO2_tetragonal=0.99,1.04 "
                 "--lattice-range ZrO2_monoclinic=0.99,1.02")


def random_spec(rng: np.random.Generator, regime: str = "train", n_phases: int | None = None,
                phases: list[Any] | None = None, library: Sequence[Any] | None = None,
                lattice_ranges: dict[str, tuple[float, float]] | None = None, q_grid: np.ndarray = Q_GRID,
                wavelengths: Sequence[float] | None = None, max_phases: int = 3) -> Spec:
    """simulators.pd.dataset.random_spec on a model's Q grid; default library: the built-in oxides."""
    if library is None:
        library, lattice_ranges = tuple(spd.PHASES), (BUILTIN_LATTICE_RANGES if lattice_ranges is None else lattice_ranges)
    return _dataset.random_spec(rng, regime, q_grid, library, lattice_ranges or {}, n_phases=n_phases, phases=phases,
                                wavelengths=wavelengths, max_phases=max_phases)


def targets(spec: Spec, labels: Sequence[str]) -> dict[str, np.ndarray]:
    P = len(labels)
    present = np.zeros(P, np.float32)
    frac = np.zeros(P, np.float32)
    scale = np.ones(P, np.float32)
    size = np.full(P, 20.0, np.float32)
    for p, f, s, L in zip(spec.phases, spec.fractions, spec.lattice_scales, spec.sizes_nm):
        name = getattr(p, "name", p)
        if name not in labels:
            continue
        i = labels.index(name)
        present[i], frac[i], scale[i], size[i] = 1.0, f, s, L
    return {"present": present, "fraction": frac, "lattice_scale": scale, "size_nm": size}


def _simulate_chunk(job: tuple) -> dict[str, np.ndarray]:
    """Patterns [start, start + n) of a dataset (one process's share; seeded per chunk)."""
    n, seed, chunk, regime, library, ranges, q_grid, wavelengths, max_phases = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, 0 if regime == "train" else 1, chunk]))
    labels = [getattr(p, "name", p) for p in library]
    X = np.zeros((n, N_CHANNELS, q_grid.size), np.float32)
    T: dict[str, list] = {"present": [], "fraction": [], "lattice_scale": [], "size_nm": []}
    for i in range(n):
        spec = _dataset.random_spec(rng, regime, q_grid, library, ranges, wavelengths=wavelengths, max_phases=max_phases)
        tt = _tt(q_grid, spec.wavelength)
        sel = (tt >= spec.two_theta_range[0] - 1e-9) & (tt <= spec.two_theta_range[1] + 1e-9)
        y = np.zeros(q_grid.size)
        inten, _, _, _ = simulate_spec(spec, tt[sel], rng)
        y[sel] = inten
        X[i] = normalise_pattern(y, sel)
        for k, v in targets(spec, labels).items():
            T[k].append(v)
    return {"X": X, **{k: np.stack(v) for k, v in T.items()}}


def make_dataset(n: int, seed: int, regime: str = "train", progress: bool = True, library: Sequence[Any] | None = None,
                 lattice_ranges: dict[str, tuple[float, float]] | None = None, q_grid: np.ndarray = Q_GRID,
                 wavelengths: Sequence[float] | None = None, max_phases: int = 3, workers: int = 1) -> dict[str, np.ndarray]:
    """n patterns on the analyser's input (N_CHANNELS, len(q_grid)) plus their targets, simulated in
    chunks of 500 (over `workers` processes; the result does not depend on `workers`)."""
    from tqdm import tqdm

    if library is None:
        library, lattice_ranges = tuple(spd.PHASES), BUILTIN_LATTICE_RANGES
    for p in library:  # reflection lists once, in this process (the disk cache serves the workers)
        spd.reflections(p)
    chunk = 500
    jobs = [(min(chunk, n - s), seed, j, regime, tuple(library), dict(lattice_ranges or {}), q_grid,
             tuple(wavelengths) if wavelengths else None, max_phases) for j, s in enumerate(range(0, n, chunk))]
    bar = tqdm(total=n, desc=f"simulating {regime} patterns", disable=not progress, mininterval=1.0, unit="pattern")
    parts = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as ex:
            for part in ex.map(_simulate_chunk, jobs):
                parts.append(part)
                bar.update(part["X"].shape[0])
    else:
        for job in jobs:
            parts.append(_simulate_chunk(job))
            bar.update(job[0])
    bar.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _loss(out, batch, torch):
    present = batch["present"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], present)
    # fractions: softmax over the phases that are present (truth mask in training)
    fl = out["frac_logits"].masked_fill(present < 0.5, -1e4)
    frac = torch.softmax(fl, dim=1)
    frac_loss = (((frac - batch["fraction"]) ** 2) * present).sum(1).mean()
    zs = (batch["lattice_scale"] - 1.0) / 0.02
    zl = (torch.log(batch["size_nm"]) - math.log(20.0))
    nll_s = 0.5 * (out["scale_logvar"] + (zs - out["scale_mu"]) ** 2 * torch.exp(-out["scale_logvar"]))
    nll_l = 0.5 * (out["size_logvar"] + (zl - out["size_mu"]) ** 2 * torch.exp(-out["size_logvar"]))
    npres = present.sum().clamp(min=1.0)
    nll = ((nll_s + nll_l) * present).sum() / npres
    return bce + 10.0 * frac_loss + 0.2 * nll, {"bce": float(bce.detach()), "frac": float(frac_loss.detach()), "nll": float(nll.detach())}


def train(data: dict[str, np.ndarray], n_phases: int, epochs: int = 20, seed: int = 0, batch_size: int = 128,
          lr: float = 2e-3, progress: bool = True) -> "PdNet":
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    model = PdNet(n_phases, data["X"].shape[2])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = data["X"].shape[0]
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    tens = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="training pd_ml", disable=not progress, mininterval=1.0)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i: i + batch_size]
            batch = {k: v[idx] for k, v in tens.items()}
            X = batch["X"]
            # on-the-fly augmentation: small intensity jitter of the normalised pattern
            X = X.clone()
            X[:, 0] = X[:, 0] * (1 + 0.02 * torch.randn(X.shape[0], 1, generator=g))
            out = model(X)
            loss, parts = _loss(out, batch, torch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=ep + 1, loss=f"{float(loss.detach()):.3f}", bce=f"{parts['bce']:.3f}")
    bar.close()
    model.eval()
    return model


def default_n(n_phases: int) -> int:
    """Training patterns by library size: 20,000 for up to 12 phases, +250 per further phase, at most 40,000
    (67 phases: 33,750; with the default 20 epochs about 10 minutes end to end on two cores,
    benchmarks/results/pd_cif.txt)."""
    return int(min(40000, 20000 + 250 * max(0, n_phases - 12)))


def _lattice_range(text: str) -> tuple[str, tuple[float, float]]:
    label, sep, rng = text.rpartition("=")
    try:
        lo, hi = (float(v) for v in rng.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lattice-range {text!r}: expected LABEL=LO,HI, e.g. CeO2=0.96,1.01") from None
    if not sep or not label or not (0.5 < lo < hi < 1.5):
        raise argparse.ArgumentTypeError(f"--lattice-range {text!r}: expected LABEL=LO,HI with 0.5 < LO < HI < 1.5")
    return label, (lo, hi)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `sdl train pd` (and `python -m sdl.techniques.pd.train`)."""
    ap.add_argument("--phases", type=Path, required=True, metavar="CIF_DIR",
                    help="folder of CIF files, one phase each (the model's library)")
    ap.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR",
                    help="model folder to write (weights, phase table, copies of the CIFs, validation)")
    ap.add_argument("--wavelength", type=float, metavar="Å",
                    help="train at this wavelength only (your instrument's, e.g. 1.5406 for Cu Kα1, 0.7093 Mo Kα1); "
                    "default: Cu and Co Kα1 (the Q grid makes any wavelength usable at analysis)")
    ap.add_argument("--two-theta", type=float, nargs=2, metavar=("MIN", "MAX"),
                    help="2θ range (deg) of your scans at --wavelength (default Cu Kα1): sets the model's Q range "
                    "(default Q 0.75–5.15 Å⁻¹, about 10.5–75° 2θ at Cu Kα1)")
    ap.add_argument("--max-phases", type=int, default=3, metavar="N", help="most phases in a training mixture (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, help="training patterns (default: 20,000 up to 12 phases, +250 per further "
                    "phase, at most 40,000)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lattice-range", type=_lattice_range, action="append", default=[], metavar="LABEL=LO,HI",
                    help="lattice-scale range of one phase relative to its CIF cell (default 0.99,1.01), e.g. "
                    "a solid solution: CeO2=0.96,1.01; repeat for more phases")
    ap.add_argument("--label", choices=("formula", "file"), default="formula",
                    help="phase labels (descriptor names pd.fraction.<label>): formula and space group, e.g. "
                    "LiCoO2_R-3m (default), or the CIF file name without .cif")
    ap.add_argument("--n-val", type=int, default=2000, help="validation patterns (default 2000)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes simulating patterns (default: 2, or 1 on a one-core machine)")
    ap.add_argument("--quiet", action="store_true")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdl.techniques.pd.train", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def _q_grid(args) -> np.ndarray:
    if args.two_theta is None:
        return Q_GRID.copy()
    lam = args.wavelength or spd.WAVELENGTH_CU_KA1
    lo, hi = args.two_theta
    if not (0 < lo < hi < 180):
        raise AnalysisError(f"--two-theta {lo} {hi}: need 0 < MIN < MAX < 180 degrees")
    q = spd.two_theta_to_q(np.array([lo, hi]), lam)
    return np.linspace(float(q[0]), float(q[1]), N_GRID)


def validate(model, data: dict[str, np.ndarray], labels: Sequence[str]) -> dict[str, Any]:
    """Exact-set accuracy of the CNN (probability ≥ 0.5, at least the most probable phase) on
    single-phase patterns and mixtures, per-phase recall and precision, the energy scores."""
    import torch

    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(data["X"][i: i + 512]))["logits"].numpy()
                                 for i in range(0, data["X"].shape[0], 512)])
    called = logits > 0
    none = ~called.any(axis=1)
    called[none, np.argmax(logits[none], axis=1)] = True
    truth = data["present"] > 0.5
    k = truth.sum(axis=1)
    exact = np.all(called == truth, axis=1)
    tp = (called & truth).sum(axis=0)
    recall = tp / np.maximum(truth.sum(axis=0), 1)
    precision = tp / np.maximum(called.sum(axis=0), 1)
    return {"n": int(k.size), "single_exact": float(exact[k == 1].mean()) if np.any(k == 1) else float("nan"),
            "mixture_exact": float(exact[k > 1].mean()) if np.any(k > 1) else float("nan"),
            "n_single": int((k == 1).sum()), "n_mixture": int((k > 1).sum()),
            "per_phase": {lab: {"recall": float(r), "precision": float(p), "n": int(t)}
                          for lab, r, p, t in zip(labels, recall, precision, truth.sum(axis=0))},
            "energy": energy_score(logits)}


def _write_validation(out: Path, val: dict[str, Any], test: dict[str, Any]) -> None:
    lines = [f"# pd_ml validation (CNN alone, before refinement; {val['n']} fresh training-regime patterns, "
             f"{test['n']} held-out 'test'-regime patterns)",
             f"training regime: single phase {val['single_exact'] * 100:.1f} % exact (n={val['n_single']}), "
             f"mixtures {val['mixture_exact'] * 100:.1f} % exact-set (n={val['n_mixture']})",
             f"held-out regime: single phase {test['single_exact'] * 100:.1f} % exact (n={test['n_single']}), "
             f"mixtures {test['mixture_exact'] * 100:.1f} % exact-set (n={test['n_mixture']})",
             "", f"{'phase':40s} recall  precision  n (training regime)"]
    for lab, d in val["per_phase"].items():
        lines.append(f"{lab:40s} {d['recall'] * 100:5.1f} %  {d['precision'] * 100:5.1f} %  {d['n']}")
    (out / "validation.txt").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labs = list(val["per_phase"])
        fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(labs) + 2), 3.6))
        x = np.arange(len(labs))
        ax.bar(x - 0.2, [val["per_phase"][lab]["recall"] for lab in labs], 0.4, label="recall")
        ax.bar(x + 0.2, [val["per_phase"][lab]["precision"] for lab in labs], 0.4, label="precision")
        ax.set_xticks(x, labs, rotation=90, fontsize=6)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"pd_ml validation: single {val['single_exact'] * 100:.1f} %, mixtures "
                     f"{val['mixture_exact'] * 100:.1f} % (held-out regime {test['single_exact'] * 100:.1f} / "
                     f"{test['mixture_exact'] * 100:.1f} %)", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "validation.png", dpi=110)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - the figure is a convenience; the numbers are in validation.txt
        print(f"validation.png not written: {exc}", file=sys.stderr)


def _command(args: argparse.Namespace, n: int) -> str:
    """The `sdl train pd` command line that reproduces this model."""
    parts = ["sdl train pd", f"--phases {args.phases}", f"--out {args.out}", f"--n {n}", f"--epochs {args.epochs}",
             f"--seed {args.seed}", f"--max-phases {args.max_phases}"]
    if args.label != "formula":
        parts.append(f"--label {args.label}")
    if args.wavelength:
        parts.append(f"--wavelength {args.wavelength}")
    if args.two_theta:
        parts.append(f"--two-theta {args.two_theta[0]} {args.two_theta[1]}")
    parts += [f"--lattice-range {lab}={lo},{hi}" for lab, (lo, hi) in args.lattice_range]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Read the CIFs, simulate, train, validate, calibrate the OOD threshold and write the model folder."""
    import torch

    from sdl.techniques.pd.library import read_cif_folder, save_phases

    torch.set_num_threads(max(1, args.threads))
    log = (lambda *a: None) if args.quiet else print
    if args.max_phases < 1:
        raise AnalysisError(f"--max-phases {args.max_phases}: need at least 1")
    if args.wavelength is not None and not (0.05 <= args.wavelength <= 5.0):
        raise AnalysisError(f"--wavelength {args.wavelength}: outside 0.05–5 Å")
    t0 = time.time()
    log(f"reading CIFs in {args.phases}")
    phases, problems, dropped = read_cif_folder(args.phases, dict(args.lattice_range), log=log, label=args.label)
    for d in dropped:
        log(f"  dropped {d}")
    if not phases:
        raise AnalysisError(f"--phases {args.phases}: no usable CIF ({len(problems)} problem(s) above)")
    labels = [p.label for p in phases]
    log(f"{len(phases)} phases ({len(problems)} file(s) skipped, {len(dropped)} duplicate(s) dropped): {', '.join(labels)}")
    n = args.n or default_n(len(phases))
    if n < 16:
        raise AnalysisError(f"--n {n} is too small; need at least 16 patterns")
    q_grid = _q_grid(args)
    lib = [p.phase for p in phases]
    ranges = {p.label: p.lattice_range for p in phases}
    wl = [args.wavelength] if args.wavelength else None
    kw = dict(library=lib, lattice_ranges=ranges, q_grid=q_grid, wavelengths=wl, max_phases=min(args.max_phases, len(lib)),
              workers=max(1, args.workers))
    t_read = time.time() - t0
    t1 = time.time()
    data = make_dataset(n, args.seed, "train", progress=not args.quiet, **kw)
    t2 = time.time()
    model = train(data, len(lib), epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    t3 = time.time()
    del data
    n_val = max(64, args.n_val)
    val_data = make_dataset(n_val, args.seed + 1000, "train", progress=False, **kw)
    val = validate(model, val_data, labels)
    test_kw = dict(kw, wavelengths=None)
    test = validate(model, make_dataset(n_val, args.seed + 2000, "test", progress=False, **test_kw), labels)
    t4 = time.time()
    command = _command(args, n)
    meta = {
        "library": labels,
        "arch": model.arch,
        "hidden": model.n_hidden,
        "q_grid": [float(q_grid[0]), float(q_grid[-1]), int(q_grid.size)],
        "wavelengths_angstrom": wl or [1.5406, 1.7890],
        "max_phases": kw["max_phases"],
        "n_train": n,
        "seed": args.seed,
        "epochs": args.epochs,
        "energy_threshold_p99": float(np.quantile(val["energy"], 0.99)),
        "validation": {k: v for k, v in val.items() if k not in ("energy", "per_phase")},
        "validation_heldout_regime": {k: v for k, v in test.items() if k not in ("energy", "per_phase")},
        "read_cifs_s": round(t_read, 1),
        "simulate_s": round(t2 - t1, 1),
        "train_s": round(t3 - t2, 1),
        "validate_s": round(t4 - t3, 1),
        "workers": kw["workers"],
        "threads": args.threads,
        "command": command,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_phases(phases, args.phases, args.out, extra={"skipped": problems, "dropped": dropped})
    path = save_model(model, meta, args.out)
    _write_validation(args.out, val, test)
    log(f"validation (CNN alone): single phase {val['single_exact'] * 100:.1f} %, mixtures "
        f"{val['mixture_exact'] * 100:.1f} % exact-set; held-out artefacts/wavelengths: single "
        f"{test['single_exact'] * 100:.1f} %, mixtures {test['mixture_exact'] * 100:.1f} %")
    log(f"wrote {args.out} ({path.stat().st_size / 1e6:.2f} MB weights); read {t_read:.0f} s, simulate {t2 - t1:.0f} s, "
        f"train {t3 - t2:.0f} s, validate {t4 - t3:.0f} s, total {time.time() - t0:.0f} s")
    return 0


STEP_DEG = {1.5406: 0.02, 1.7890: 0.02, 0.7093: 0.01, 0.1665: 0.003}


def measurement_from_spec(spec: Spec, rng: np.random.Generator):
    """A pd Measurement of the spec on a real scan grid (2θ steps of the wavelength's usual
    instrument), with the metadata a calibrated instrument reports (wavelength, Caglioti
    parameters, polarisation). For benchmarks and tests: it exercises the analyser's whole path."""
    from sdl.measurement import Measurement

    step = STEP_DEG.get(round(spec.wavelength, 4), 0.01)
    lo, hi = spec.two_theta_range
    tt = np.arange(lo, hi + 1e-9, step)
    inten, sig, _, _ = simulate_spec(spec, tt, rng)
    md = {"wavelength_angstrom": spec.wavelength, "caglioti_uvw_deg2": list(spec.caglioti),
          "polarisation": spec.polarisation}
    return Measurement(technique="pd", arrays={"two_theta_deg": tt, "intensity": inten, "sigma": sig}, metadata=md)


if __name__ == "__main__":
    raise SystemExit(main())
