"""Train the PDF analyser pdf_ml (cluster motif, size, nn distance, ADP) on simulated G(r).

The shipped weights (sdl/techniques/pdf/weights/) were made with

    OMP_NUM_THREADS=1 nice -n 10 sdl train pdf --n-per-class 8000 --seed 0 --epochs 30 --threads 1

(64,000 G(r): simulation 40 s with the structure pool cached (building it first: ~1 min), training
375 s, arbitration calibration 298 s, on one thread of a 2-core machine shared with other jobs;
12 min in all; 0.8 MB.)
G(r) come from the training generator `simulators.pdf.dataset.simulate(recipe="train")` (ase clusters,
Debye sums checked against debyecalculator, with the measurement artefacts that generator draws);
the held-out recipe is never seen here. With `--candidates DIR` the classes are the structures in DIR instead (one class per
file: xyz, CIF, or anything `ase.io.read` reads, element taken from the file), simulated with the
measurement artefacts by `simulate_candidates` (simulators.pdf.physics.gr); the network is the
same, the refinement is skipped (it needs the motif library's cluster builders).

Split: 85 % train / 15 % validation. The validation split sets the temperature (probability
calibration), the per-target sd scales, the Mahalanobis statistics and the OOD threshold (99th
percentile of the OOD score on half of the in-library validation G(r), the CDF made from the
other half). Validation figures are written into pdf_ml.json ("metrics").

Last, `calibrate_arbitration` runs the analyser's refinement on 280 fresh training-recipe G(r)
(seed + 1) and fits the arbitration's tempers (pdf_ml.json "arbitration": how far the library fits
may overrule the CNN, per motif pair).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sdl.analysis.calibration import expected_calibration_error, softmax
from sdl.techniques.pdf.ml import ARCH, R_GRID, TARGETS, WEIGHTS_DIR, PdfModel, build_net, represent_grid

DESCRIPTION = __doc__.split("\n\n")[0]
HIDDEN = 128
QDAMP_UNKNOWN = 0.25  # share of the training/validation curves given without Qdamp (input channel 3 = 0)


def target_matrix(data: dict[str, Any]) -> np.ndarray:
    """(n, 4) raw targets in TARGETS order from a simulate() dict."""
    return np.stack([np.log(np.asarray(data["n_atoms"], float)), np.asarray(data["nn_distance_angstrom"], float),
                     np.asarray(data["adp_angstrom2"], float), np.log(np.asarray(data["diameter_nm"], float))], 1)


def train(X: np.ndarray, y: np.ndarray, T: np.ndarray, classes: Sequence[str], *, seed: int, epochs: int = 20,
          batch: int = 128, lr: float = 3e-3, val_frac: float = 0.15, false_alarm: float = 0.01,
          progress: bool = True, extra_meta: dict[str, Any] | None = None) -> tuple[PdfModel, dict[str, Any]]:
    """Fit the network, then calibrate it on the validation split (module doc)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(y)
    perm = rng.permutation(n)
    n_val = max(len(classes) * 4, int(round(val_frac * n)))
    va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    known = np.isfinite(T)  # bulk crystals have no n_atoms or diameter: those heads are not trained on them
    mean = np.array([T[tr][known[tr][:, j], j].mean() for j in range(T.shape[1])])
    std = np.maximum(np.array([T[tr][known[tr][:, j], j].std() for j in range(T.shape[1])]), 1e-6)
    Z = np.where(known, (T - mean) / std, 0.0)
    Xt, yt, Zt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(Z.astype(np.float32))
    Kt = torch.from_numpy(known.astype(np.float32))
    net = build_net(len(classes), ARCH, HIDDEN, in_channels=X.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, math.ceil(tr.size / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.02)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="training pdf_ml", unit="batch", disable=not progress, mininterval=1.0)
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(tr))
        tot = 0.0
        for i in range(0, order.numel(), batch):
            idx = order[i:i + batch]
            xb = Xt[idx].clone()
            # augmentation: a small random re-normalisation and r-independent noise on the G channel
            xb[:, 0] *= 1.0 + 0.05 * torch.randn(idx.numel(), 1, generator=g)
            xb[:, 0] += 0.01 * torch.rand(idx.numel(), 1, generator=g) * torch.randn(xb[:, 0].shape, generator=g)
            logits, mu, lv, _ = net(xb)
            nll = 0.5 * (lv + (Zt[idx] - mu) ** 2 * torch.exp(-lv))
            k = Kt[idx]
            loss = ce(logits, yt[idx]) + 0.5 * ((nll + 0.1 * (Zt[idx] - mu) ** 2) * k).sum() / k.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * idx.numel()
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{tot / tr.size:.3f}")
    bar.close()
    net.eval()
    model = PdfModel(net, {"classes": list(classes), "temperature": 1.0, "sd_scale": [1.0] * len(TARGETS),
                           "target_mean": mean.tolist(), "target_std": std.tolist(), "in_channels": int(X.shape[1])})
    raw_va = model.raw(X[va], embeddings=True)
    # temperature scaling on the validation split
    lv_t = torch.from_numpy(raw_va["logits"])
    yv = torch.from_numpy(y[va].astype(np.int64))
    log_t = torch.zeros(1, requires_grad=True)
    lbfgs = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)
    ce0 = torch.nn.CrossEntropyLoss()

    def closure():
        lbfgs.zero_grad()
        loss = ce0(lv_t / torch.exp(log_t), yv)
        loss.backward()
        return loss

    lbfgs.step(closure)
    temperature = float(torch.exp(log_t.detach()).clamp(0.05, 20.0))
    zres = (Z[va] - raw_va["mu"]) / np.exp(0.5 * raw_va["logvar"])
    sd_scale = np.array([np.sqrt(np.mean(zres[known[va][:, j], j] ** 2)) for j in range(T.shape[1])])
    # Mahalanobis statistics of the embedding over in-library classes, from training G(r)
    in_lib = np.array([c != "other" for c in classes])
    lib_idx = list(np.flatnonzero(in_lib))
    sub = tr[in_lib[y[tr]]]
    sub = rng.choice(sub, size=min(sub.size, 20000), replace=False)
    emb = model.raw(X[sub], embeddings=True)["emb"]
    ys = y[sub]
    means = np.stack([emb[ys == c].mean(axis=0) for c in lib_idx])
    cen = emb - means[[lib_idx.index(c) for c in ys]]
    cov = cen.T @ cen / max(len(cen) - 1, 1)
    cov += 1e-3 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    model.maha_mean = torch.from_numpy(means).float()
    model.maha_prec = torch.from_numpy(np.linalg.inv(cov)).float()
    model._whiten = None
    model.meta.update(temperature=temperature, sd_scale=sd_scale.tolist())
    va_in = va[in_lib[y[va]]]
    d_in = model.raw(X[va_in])["dist"]
    half = np.zeros(d_in.size, bool)
    half[rng.permutation(d_in.size)[: d_in.size // 2]] = True
    model.ood_cdf = np.sort(d_in[half])
    cal_in = model.calibrated(model.raw(X[va_in[~half]]))
    threshold = float(np.quantile(cal_in["ood_score"], 1.0 - false_alarm))
    cal = model.predict(X[va])
    p = cal["probabilities"]
    pred = p.argmax(1)
    n_true = np.exp(T[va, 0])
    fin = known[va, 0]
    metrics = {
        "val_accuracy": float((pred == y[va]).mean()),
        "val_accuracy_per_class": {c: float((pred[y[va] == k] == k).mean()) for k, c in enumerate(classes)
                                   if np.any(y[va] == k)},
        "val_ece": expected_calibration_error(p, y[va]),
        "val_ece_uncalibrated": expected_calibration_error(softmax(raw_va["logits"]), y[va]),
        "val_n_atoms_median_rel_error": float(np.median(np.abs(cal["n_atoms"][fin] - n_true[fin]) / n_true[fin])),
        "val_nn_distance_mae_angstrom": float(np.mean(np.abs(cal["nn_distance_angstrom"] - T[va, 1]))),
        "val_adp_mae_angstrom2": float(np.mean(np.abs(cal["adp_angstrom2"] - T[va, 2]))),
        "val_confident_error_rate": float(np.mean((pred != y[va]) & (p.max(1) >= 0.9) & (cal["ood_score"] <= threshold))),
        "val_flagged_ood": float(np.mean(cal["ood_score"] > threshold)),
        "temperature": temperature,
        "sd_scale": sd_scale.tolist(),
        "ood_threshold": threshold,
        "n_train": int(tr.size),
        "n_val": int(va.size),
    }
    model.meta.update(arch=[list(a) for a in ARCH], hidden=HIDDEN, in_channels=int(X.shape[1]), targets=list(TARGETS),
                      ood_threshold=threshold,
                      ood_false_alarm_target=false_alarm, r_grid=[float(R_GRID[0]), float(R_GRID[-1]), int(R_GRID.size)],
                      metrics=metrics, **(extra_meta or {}))
    return model, metrics


def calibrate_arbitration(model: PdfModel, seed: int, n_per_class: int = 40, progress: bool = True) -> dict[str, Any]:
    """Fit the refinement's arbitration temper (ml.arbitrate) on fresh training-recipe G(r) (seed
    `seed` + 1, never trained on): each curve goes through the analyser's refinement of its
    candidate motifs; the tempers λ in p_c exp(−λ ΔBIC_c / 2), one per motif pair seen at least 10
    times (ml.arbitrate), are those (on a log grid, 0 included) that maximise the mean log
    probability of the true motif: how far the library's fit quality can be trusted beyond the
    calibrated CNN. Returns {"temper", "pairs_seen", "n_curves", "n_arbitrated", "log_loss_cnn",
    "log_loss", "accuracy_cnn", "accuracy"} (on those curves)."""
    from tqdm import tqdm

    from simulators.pdf import dataset, physics
    from sdl.techniques.pdf.ml import pair_key, refine, refine_candidates, reweigh

    data = dataset.simulate(n_per_class, seed + 1, recipe="train", classes=physics.MOTIFS)
    classes = model.classes
    cal = model.predict(represent_grid(data["G"], data["qdamp"]))
    thr = float(model.meta["ood_threshold"])
    rows = []  # (true motif, {motif: (p_cnn, chi2)}) per refined curve
    for i in tqdm(range(len(data["motif"])), desc="calibrating the arbitration", disable=not progress, mininterval=1.0):
        p = cal["probabilities"][i]
        if classes[int(p.argmax())] == "other" or cal["ood_score"][i] > thr:
            continue
        md = {f"{k}_inv_angstrom": float(data[k][i]) for k in ("qmin", "qmax", "qdamp")}
        try:
            ref = refine(data["r"], data["G"][i].astype(float), md, refine_candidates(classes, p), str(data["element"][i]),
                         float(cal["n_atoms"][i]), float(cal["nn_distance_angstrom"][i]), float(cal["adp_angstrom2"][i]),
                         p={c: float(v) for c, v in zip(classes, p)})
        except Exception:  # noqa: BLE001 - a failed refinement leaves the CNN's answer; not counted
            continue
        arb = ref["arbitration"]
        rows.append((data["motif"][i], {m: (v["p_cnn"], v["bic"]) for m, v in arb["motifs"].items()}))

    def loglik(temper: dict[str, float]) -> tuple[float, float]:
        ll, right = [], []
        for true, st in rows:
            post = reweigh({m: pc for m, (pc, _b) in st.items()}, {m: b for m, (_p, b) in st.items()}, temper)
            ll.append(math.log(max(post.get(true, 0.0), 1e-4)) if true in st else 0.0)
            right.append(max(post, key=post.get) == true)
        return float(np.mean(ll)), float(np.mean(right))

    # one temper per motif pair seen at least 10 times among the arbitrated curves (coordinate ascent,
    # two passes over a log grid with 0), 0 (the CNN decides) for the rest
    counts: dict[str, int] = {}
    for _, st in rows:
        ms = sorted(st)
        for a in range(len(ms)):
            for b in range(a + 1, len(ms)):
                counts[pair_key(ms[a], ms[b])] = counts.get(pair_key(ms[a], ms[b]), 0) + 1
    grid = [0.0] + [float(v) for v in np.exp(np.linspace(math.log(1e-3), math.log(1.0), 16))]
    temper: dict[str, float] = {"*": 0.0}
    for _ in range(2):
        for key in sorted(k for k, n in counts.items() if n >= 10):
            scores = [loglik({**temper, key: lam})[0] for lam in grid]
            temper[key] = grid[int(np.argmax(scores))]
    multi = sum(len(st) > 1 for _, st in rows)
    figures: dict[str, float | None] = dict.fromkeys(("log_loss_cnn", "log_loss", "accuracy_cnn", "accuracy"))
    if rows:
        (ll0, acc0), (ll1, acc1) = loglik({"*": 0.0}), loglik(temper)
        figures.update(log_loss_cnn=round(-ll0, 4), log_loss=round(-ll1, 4), accuracy_cnn=round(acc0, 4),
                       accuracy=round(acc1, 4))
    return {"temper": {k: round(v, 5) for k, v in temper.items()}, "pairs_seen": counts, "n_curves": len(rows),
            "n_arbitrated": int(multi), **figures,
            "seed": seed + 1, "n_per_class": n_per_class}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `sdl train pdf` (and `python -m sdl.techniques.pdf.train`)."""
    ap.add_argument("--n-per-class", type=int, default=3000, help="simulated G(r) per class (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulation and the training (default 0)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"folder for pdf_ml.pt and pdf_ml.json (default {WEIGHTS_DIR})")
    ap.add_argument("--candidates", type=Path, metavar="DIR",
                    help="a folder of cluster structures (xyz, CIF, ... anything ase.io.read reads), one class per file, "
                         "instead of the built-in motif library")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdl.techniques.pdf.train", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def load_candidates(folder: Path) -> dict[str, Any]:
    """class name (file stem) -> ase.Atoms for every structure file ase reads in `folder`."""
    from ase.io import read

    if not folder.is_dir():
        raise SystemExit(f"--candidates {folder}: not a folder")
    out: dict[str, Any] = {}
    bad: list[str] = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            atoms = read(f)
        except Exception as exc:  # ase raises many kinds for files it cannot parse
            bad.append(f"{f.name} ({type(exc).__name__})")
            continue
        if len(atoms) < 2:
            bad.append(f"{f.name} (fewer than 2 atoms)")
            continue
        out[f.stem] = atoms
    if bad:
        print(f"--candidates: skipped {len(bad)} file(s) ase cannot read as clusters: {', '.join(bad)}", file=sys.stderr)
    if len(out) < 2:
        raise SystemExit(f"--candidates {folder}: need at least 2 readable structure files (xyz, CIF, ...); found {len(out)}")
    return out


def simulate_candidates(structures: dict[str, Any], n_per_class: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """G(r) on R_GRID of a user's candidate structures (name -> ase.Atoms, Å), `n_per_class` each, by
    simulators.pdf.physics.gr with random expansion (0.97–1.03), U_iso (0.002–0.02 Å²) and measurement
    (Qmin 0.5–1.2, Qmax 16–28, Qdamp 0.01–0.05 Å⁻¹, counts 1e4–1e6, solvent/capillary background 0–0.3
    subtracted with ±5 % error, normalisation error ±2 %, PDFgetX3's ad-hoc correction rpoly 0.9 Å,
    Lorch window on 20 %): the artefacts pdf_ml must tolerate. Targets as simulate()'s."""
    from scipy.spatial.distance import pdist
    from tqdm import tqdm

    from simulators.pdf import physics

    rng = np.random.default_rng(np.random.SeedSequence([seed, 12, 1]))
    out: dict[str, list] = {k: [] for k in ("G", "motif", "n_atoms", "diameter_nm", "nn_distance_angstrom",
                                            "expansion", "adp_angstrom2", "qdamp")}
    backgrounds = list(physics.BACKGROUNDS)
    with tqdm(total=n_per_class * len(structures), desc="simulating candidate G(r)", unit="G(r)",
              disable=not progress, mininterval=1.0) as bar:
        for name, atoms in structures.items():
            d = pdist(atoms.positions)
            nn = float(d[d < 1.2 * d.min()].mean())
            dia = float(d.max()) / 10.0
            for _ in range(n_per_class):
                e = rng.uniform(0.97, 1.03)
                u = rng.uniform(0.002, 0.02)
                acq = physics.Acquisition(qmin=rng.uniform(0.5, 1.2), qmax=rng.uniform(16.0, 28.0),
                                          qdamp=rng.uniform(0.01, 0.05), counts=10 ** rng.uniform(4, 6),
                                          background=str(rng.choice(backgrounds)), background_level=rng.uniform(0, 0.3),
                                          background_error=rng.uniform(-0.05, 0.05),
                                          normalisation_error=rng.uniform(-0.02, 0.02), rpoly=0.9,
                                          lorch=bool(rng.random() < 0.2))
                out["G"].append(physics.gr(atoms, R_GRID, expansion=e, adp=u, acquisition=acq, rng=rng).astype(np.float32))
                for k, v in (("motif", name), ("n_atoms", len(atoms)), ("diameter_nm", dia * e),
                             ("nn_distance_angstrom", nn * e), ("expansion", e), ("adp_angstrom2", u),
                             ("qdamp", acq.qdamp)):
                    out[k].append(v)
                bar.update(1)
    res: dict[str, Any] = {k: np.asarray(v) for k, v in out.items()}
    res["G"] = np.stack(out["G"])
    res["motif"] = list(out["motif"])
    res["r"] = R_GRID.copy()
    return res


def run(args: argparse.Namespace) -> int:
    """Simulate, train, calibrate and write the weights."""
    import torch

    from simulators.pdf import dataset

    torch.set_num_threads(max(1, args.threads))
    if args.n_per_class < 20:
        print(f"--n-per-class {args.n_per_class} is too small; need at least 20", file=sys.stderr)
        return 2
    t0 = time.time()
    if args.candidates is not None:
        structures = load_candidates(args.candidates)
        data = simulate_candidates(structures, args.n_per_class, args.seed, progress=not args.quiet)
        classes = list(structures)
        source = f"--candidates {args.candidates} ({len(classes)} structures)"
    else:
        data = dataset.simulate(args.n_per_class, args.seed, recipe="train", progress=not args.quiet)
        classes = list(dataset.CLASSES)
        source = "simulators.pdf.dataset.simulate(recipe='train')"
    t1 = time.time()
    X = represent_grid(data["G"], data["qdamp"])
    # a quarter of the curves without Qdamp (files that do not give it), in training and validation alike
    unknown = np.random.default_rng(np.random.SeedSequence([args.seed, 77])).random(len(X)) < QDAMP_UNKNOWN
    X[unknown, 2] = 0.0
    y = np.array([classes.index(m) for m in data["motif"]])
    with np.errstate(invalid="ignore", divide="ignore"):
        T = target_matrix(data)
    command = f"sdl train pdf --n-per-class {args.n_per_class} --seed {args.seed} --epochs {args.epochs} --threads {args.threads}" \
              + (f" --candidates {args.candidates}" if args.candidates is not None else "")
    model, metrics = train(X, y, T, classes, seed=args.seed, epochs=args.epochs, progress=not args.quiet,
                           extra_meta={"n_per_class": args.n_per_class, "seed": args.seed, "epochs": args.epochs,
                                       "source": source, "command": command,
                                       "library": args.candidates is None})
    t2 = time.time()
    if args.candidates is None:  # the library refinement's arbitration (the candidates' models skip it)
        model.meta["arbitration"] = calibrate_arbitration(model, args.seed, progress=not args.quiet)
    t3 = time.time()
    model.meta.update(simulate_s=round(t1 - t0, 1), train_s=round(t2 - t1, 1), calibrate_arbitration_s=round(t3 - t2, 1))
    path = model.save(args.out)
    arb = model.meta.get("arbitration")
    if arb:
        print(f"arbitration tempers {arb['temper']} from {arb['n_curves']} refined curves ({arb['n_arbitrated']} with 2+ "
              f"motifs): motif accuracy {arb['accuracy_cnn']} -> {arb['accuracy']}, log loss {arb['log_loss_cnn']} -> "
              f"{arb['log_loss']}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); simulate {t1 - t0:.0f} s, train {t2 - t1:.0f} s, "
          f"arbitration {t3 - t2:.0f} s; "
          f"validation accuracy {metrics['val_accuracy']:.3f}, ECE {metrics['val_ece']:.3f}, "
          f"n_atoms median rel. error {metrics['val_n_atoms_median_rel_error']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
