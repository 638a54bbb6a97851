"""Train the SAS ML analyser (sdl.techniques.saxs.ml) on simulated curves.

    python -m sdl.techniques.saxs.train --n-per-class 3000 --seed 0 --out sdl/techniques/saxs/weights/saxs_ml.pt
    sdl train saxs --n-per-class 3000 --seed 0 --out my_weights.pt

Steps: simulate `n-per-class` sasmodels curves per class (simulators.saxs.dataset, training
instrument settings), each measured `--variants` times with independent artefacts; hold out
`--val-frac` of the physical curves; train the CNN (cross-entropy + Gaussian NLL of the size
heads); temperature-scale the probabilities and rescale the predicted sds on the validation
split; fit the Mahalanobis statistics of the embedding and set the OOD threshold at the
`--false-alarm` quantile of in-distribution validation scores. The same arguments give the same
data (seeded); training is seeded too, bit-exactness across machines is not promised.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sdl.analysis.calibration import expected_calibration_error, softmax
from sdl.techniques.saxs.ml import (
    APPLIES, CLASSES, TARGETS, WEIGHTS, SasModel, build_net, encode_targets, represent_batch,
)


DESCRIPTION = __doc__.split("\n\n")[0]


def applicable_mask(labels: np.ndarray) -> np.ndarray:
    """(n, 5) bool: which targets apply to each curve's class."""
    table = np.array([[t in APPLIES[c] for t in TARGETS] for c in CLASSES])
    return table[labels]


def simulate(n_per_class: int, seed: int, split: str, variants: int, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from simulators.saxs import dataset as D

    with tqdm(total=n_per_class * len(D.CLASSES), desc=f"simulating {split} curves", unit="curve",
              disable=not progress, mininterval=1.0) as bar:
        data = D.generate(n_per_class, seed, split, variants=variants, progress=bar.update)
    return data


def arrays_from(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = represent_batch(data["q"], data["I"])
    y = np.asarray(data["label"], dtype=np.int64)
    T = np.array([[t[k] for k in TARGETS] for t in data["targets"]], dtype=float)
    return X, y, T


def train(
    X: np.ndarray, y: np.ndarray, Z: np.ndarray, groups: np.ndarray, *, seed: int, epochs: int, batch: int,
    lr: float, val_frac: float, widths: Sequence[int], hidden: int, false_alarm: float, members: int = 1,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> tuple[SasModel, dict[str, Any]]:
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    val_groups = set(rng.choice(ug, size=max(1, int(round(val_frac * ug.size))), replace=False).tolist())
    is_val = np.array([g in val_groups for g in groups])
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    app = applicable_mask(y)
    Zf = np.nan_to_num(Z, nan=0.0)
    Xt, yt, Zt, At = (torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Zf).float(),
                      torch.from_numpy(app.astype(np.float32)))
    ce = torch.nn.CrossEntropyLoss()

    nets = []
    for member in range(members):
        torch.manual_seed(seed * 1000 + member)
        rng = np.random.default_rng([seed, member])
        net = build_net(tuple(widths), hidden)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * max(1, math.ceil(tr.size / batch))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
        bar = tqdm(total=steps, desc=f"training member {member + 1}/{members}", unit="batch", disable=not progress, mininterval=1.0)
        for epoch in range(epochs):
            net.train()
            perm = torch.from_numpy(rng.permutation(tr))
            tot = 0.0
            for i in range(0, perm.numel(), batch):
                idx = perm[i : i + batch]
                logits, mu, logvar, _ = net(Xt[idx])
                lab = yt[idx]
                ar = torch.arange(idx.numel())
                m, lv = mu[ar, lab], logvar[ar, lab]
                a = At[idx]
                nll = 0.5 * (lv + (Zt[idx] - m) ** 2 * torch.exp(-lv))
                # a little MSE keeps the means moving while the variances are still large
                reg = ((nll + 0.1 * (Zt[idx] - m) ** 2) * a).sum() / a.sum().clamp_min(1.0)
                loss = ce(logits, lab) + 0.5 * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * idx.numel()
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{tot / tr.size:.3f}")
        bar.close()
        nets.append(net.eval())
    rng = np.random.default_rng([seed, 999])
    model = SasModel(nets, {}, torch.zeros(1, hidden), torch.eye(hidden), np.zeros(1))
    # temperature scaling on the validation split
    raw_va = _raw_with_emb(model, X[va])
    logits_va = torch.from_numpy(raw_va["logits"])
    log_t = torch.zeros(1, requires_grad=True)
    lbfgs = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)
    yv = torch.from_numpy(y[va])

    def closure():
        lbfgs.zero_grad()
        loss = ce(logits_va / torch.exp(log_t), yv)
        loss.backward()
        return loss

    lbfgs.step(closure)
    temperature = float(torch.exp(log_t.detach()).clamp(0.05, 20.0))
    # sd rescaling per target (true-class heads, applicable targets) so that z-scores have unit rms
    mu_v = raw_va["mu"][np.arange(va.size), y[va]]
    sd_v = np.exp(0.5 * raw_va["logvar"][np.arange(va.size), y[va]])
    zres = (Z[va] - mu_v) / sd_v
    sd_scale = []
    for j in range(len(TARGETS)):
        m = app[va, j]
        sd_scale.append(float(np.sqrt(np.mean(zres[m, j] ** 2))) if m.any() else 1.0)
    # Mahalanobis statistics of the embedding (in-library classes), from training curves
    in_lib = np.array([c != "other" for c in CLASSES])
    sub = tr[in_lib[y[tr]]]
    sub = rng.choice(sub, size=min(sub.size, 20000), replace=False)
    emb = _raw_with_emb(model, X[sub])["emb"]
    ys = y[sub]
    means = np.stack([emb[ys == c].mean(axis=0) for c in range(len(CLASSES)) if in_lib[c]])
    cen = emb - means[[list(np.flatnonzero(in_lib)).index(c) for c in ys]]
    cov = cen.T @ cen / max(len(cen) - 1, 1)
    cov += 1e-3 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    prec = np.linalg.inv(cov)
    model.maha_mean = torch.from_numpy(means).float()
    model.maha_prec = torch.from_numpy(prec).float()
    model._whiten = None
    model.temperature = temperature
    model.sd_scale = np.asarray(sd_scale)
    va_in = va[in_lib[y[va]]]
    d_in = model.raw(X[va_in])["dist"]
    half = np.zeros(d_in.size, bool)
    half[rng.permutation(d_in.size)[: d_in.size // 2]] = True
    # distance CDF from one half of the in-distribution validation curves, threshold from the other
    model.ood_cdf = np.sort(d_in[half])
    cal_in = model.calibrated(model.raw(X[va_in[~half]]))
    threshold = float(np.quantile(cal_in["ood_score"], 1.0 - false_alarm))
    model.threshold = threshold
    cal_va = model.calibrated(model.raw(X[va]))
    p_va = cal_va["probabilities"]
    metrics = {
        "val_accuracy": float((p_va.argmax(1) == y[va]).mean()),
        "val_accuracy_in_library": float((p_va.argmax(1) == y[va])[in_lib[y[va]]].mean()),
        "val_ece": expected_calibration_error(p_va, y[va]),
        "val_ece_uncalibrated": expected_calibration_error(softmax(raw_va["logits"]), y[va]),
        "temperature": temperature,
        "sd_scale": sd_scale,
        "ood_threshold": threshold,
        "ood_false_alarm_target": false_alarm,
        "n_train": int(tr.size),
        "n_val": int(va.size),
    }
    model.meta = {"widths": list(widths), "hidden": hidden, "members": len(nets), "classes": list(CLASSES), "targets": list(TARGETS),
                  "temperature": temperature, "sd_scale": sd_scale, "ood_threshold": threshold,
                  "metrics": metrics, **(extra_meta or {})}
    return model, metrics


def _raw_with_emb(model: SasModel, x: np.ndarray, batch: int = 1024) -> dict[str, np.ndarray]:
    import torch

    out: dict[str, list] = {"logits": [], "mu": [], "logvar": [], "emb": []}
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            lo, m, lv, h = model.forward(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))
            for k, v in zip(out, (lo, m, lv, h)):
                out[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `sdl train saxs` (and `python -m sdl.techniques.saxs.train`)."""
    ap.add_argument("--n-per-class", type=int, default=3000, help="physical curves per class (default 3000)")
    ap.add_argument("--variants", type=int, default=2, help="independent measurements of each curve (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS, help=f"weights file (default {WEIGHTS})")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--false-alarm", type=float, default=0.01, help="OOD false-alarm rate on in-distribution validation curves")
    ap.add_argument("--widths", type=str, default="24,32,48,64")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--members", type=int, default=2, help="ensemble members (CNNs with different initialisation)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep/reuse the represented training curves (npz)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdl.techniques.saxs.train", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(list(argv) if argv is not None else None))


def run(args: argparse.Namespace) -> int:
    """Simulate, train, calibrate and write the weights."""
    import torch

    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    cache = None
    if args.cache:
        cache = args.cache / f"sas_train_n{args.n_per_class}_v{args.variants}_s{args.seed}.npz"
    if cache is not None and cache.is_file():
        z = np.load(cache)
        X, y, T = z["X"], z["y"], z["T"]
        print(f"loaded simulated curves from {cache}")
    else:
        data = simulate(args.n_per_class, args.seed, "train", args.variants, progress=not args.quiet)
        X, y, T = arrays_from(data)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, X=X, y=y, T=T)
    t_sim = time.perf_counter() - t0
    groups = np.arange(len(y)) // max(1, args.variants)
    model, metrics = train(
        X, y, encode_targets(T), groups, seed=args.seed, epochs=args.epochs, batch=args.batch, lr=args.lr,
        val_frac=args.val_frac, widths=[int(w) for w in args.widths.split(",")], hidden=args.hidden,
        false_alarm=args.false_alarm, members=args.members, progress=not args.quiet,
        extra_meta={"trained_with": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
    )
    metrics["simulate_seconds"] = round(t_sim, 1)
    metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
    model.meta["metrics"] = metrics
    out = model.save(args.out)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps({"weights": out.name, "trained_with": model.meta["trained_with"], "metrics": metrics}, indent=2))
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) and {json_path.name}")
    for k, v in metrics.items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
