"""Training data and training loop of the powder-diffraction analyser (`pd_ml`).

    python -m sdl.techniques.pd.train --n 24000 --seed 0 --out sdl/techniques/pd/weights

Patterns come from the training-set generator `simulators.pd.dataset` (Dans_Diffraction reflection lists, numpy profiles),
directly at the 2θ values of the analyser's fixed Q grid for the chosen wavelength, so training
sees exactly what the analyser's preprocessing produces from a measured scan.

Artefact regimes (`REGIMES`): "train" is what the network learns from; "test" changes every
artefact level and adds wavelengths that training never saw (a 0.1665 Å synchrotron beam and
Mo Kα), so benchmark figures measure transfer, not memorisation:

| artefact | train | test |
|---|---|---|
| wavelength | Cu Kα1 1.5406, Co Kα1 1.7890 Å | synchrotron 0.1665, Mo Kα1 0.7093, Cu Kα1 1.5406 Å |
| Caglioti W (deg²) | 0.001–0.006 | 0.0003–0.012 (4e-5 at the synchrotron) |
| background level / max | 0.02–0.25, Chebyshev order 3 | 0.05–0.45, order 5 + amorphous hump |
| peak counts | 1e3–1e5 | 300–3e4 |
| sample displacement sd | 0.05 mm | 0.12 mm |
| zero shift | ±0.02° | ±0.04° |
| microstrain | 0–2e-3 | 0–3e-3 |
| March–Dollase r | 0.85–1.15 | 0.75–1.3 |

Mixtures hold 1–3 library phases with weight fractions ≥ 0.1.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from sdl.techniques.pd.ml import (
    LATTICE_RANGES,
    LIBRARY,
    N_CHANNELS,
    Q_GRID,
    PdNet,
    WEIGHTS_DIR,
    normalise_pattern,
    save_model,
)
from simulators.pd import dataset as _dataset
from simulators.pd.dataset import REGIMES, Spec, _tt, simulate_spec

__all__ = ["REGIMES", "Spec", "random_spec", "simulate_spec", "make_dataset", "train", "main"]

DESCRIPTION = "Train the powder-diffraction analyser pd_ml (phase identification + parameters) on simulated patterns."


def random_spec(rng: np.random.Generator, regime: str = "train", n_phases: int | None = None,
                phases: list[str] | None = None, library: tuple[str, ...] = LIBRARY) -> Spec:
    """simulators.pd.dataset.random_spec on the analyser's Q grid and lattice ranges."""
    return _dataset.random_spec(rng, regime, Q_GRID, library, LATTICE_RANGES, n_phases=n_phases, phases=phases)


def targets(spec: Spec, library: tuple[str, ...] = LIBRARY) -> dict[str, np.ndarray]:
    P = len(library)
    present = np.zeros(P, np.float32)
    frac = np.zeros(P, np.float32)
    scale = np.ones(P, np.float32)
    size = np.full(P, 20.0, np.float32)
    for p, f, s, L in zip(spec.phases, spec.fractions, spec.lattice_scales, spec.sizes_nm):
        if p not in library:
            continue
        i = library.index(p)
        present[i], frac[i], scale[i], size[i] = 1.0, f, s, L
    return {"present": present, "fraction": frac, "lattice_scale": scale, "size_nm": size}


def make_dataset(n: int, seed: int, regime: str = "train", progress: bool = True,
                 library: tuple[str, ...] = LIBRARY, **spec_kw) -> dict[str, np.ndarray]:
    """n patterns on the analyser's input (N_CHANNELS, len(Q_GRID)) plus their targets."""
    from tqdm import tqdm

    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, 0 if regime == "train" else 1]))
    X = np.zeros((n, N_CHANNELS, Q_GRID.size), np.float32)
    T: dict[str, list] = {"present": [], "fraction": [], "lattice_scale": [], "size_nm": []}
    it = tqdm(range(n), desc=f"simulating {regime} patterns", disable=not progress, mininterval=1.0)
    for i in it:
        spec = random_spec(rng, regime, library=library, **spec_kw)
        tt = _tt(Q_GRID, spec.wavelength)
        sel = (tt >= spec.two_theta_range[0] - 1e-9) & (tt <= spec.two_theta_range[1] + 1e-9)
        y = np.zeros(Q_GRID.size)
        inten, _, _, _ = simulate_spec(spec, tt[sel], rng)
        y[sel] = inten
        X[i] = normalise_pattern(y, sel)
        for k, v in targets(spec, library).items():
            T[k].append(v)
    out = {"X": X}
    out.update({k: np.stack(v) for k, v in T.items()})
    return out


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


def train(data: dict[str, np.ndarray], epochs: int = 12, seed: int = 0, batch_size: int = 128, lr: float = 2e-3,
          progress: bool = True, library: tuple[str, ...] = LIBRARY) -> "PdNet":
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    model = PdNet(len(library))
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


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of `sdl train pd` (and `python -m sdl.techniques.pd.train`)."""
    ap.add_argument("--n", type=int, default=24000, help="training patterns (default 24000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="directory for pd_ml.pt and pd_ml.json")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quiet", action="store_true")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdl.techniques.pd.train", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Simulate, train, calibrate the OOD threshold and write the weights."""
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.n < 16:
        print(f"--n {args.n} is too small; need at least 16 patterns", file=sys.stderr)
        return 2
    t0 = time.time()
    data = make_dataset(args.n, args.seed, "train", progress=not args.quiet)
    t1 = time.time()
    model = train(data, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    t2 = time.time()
    # calibrate the OOD energy threshold on fresh in-library training-regime patterns
    val = make_dataset(max(64, min(2000, args.n // 8)), args.seed + 1000, "train", progress=False)
    from sdl.techniques.pd.ml import energy_score

    with torch.no_grad():
        logits = model(torch.from_numpy(val["X"]))["logits"].numpy()
    e = energy_score(logits)
    meta = {
        "library": list(LIBRARY),
        "arch": model.arch,
        "q_grid": [float(Q_GRID[0]), float(Q_GRID[-1]), int(Q_GRID.size)],
        "n_train": args.n,
        "seed": args.seed,
        "epochs": args.epochs,
        "energy_threshold_p99": float(np.quantile(e, 0.99)),
        "simulate_s": round(t1 - t0, 1),
        "train_s": round(t2 - t1, 1),
        "command": f"python -m sdl.techniques.pd.train --n {args.n} --seed {args.seed} --epochs {args.epochs}",
    }
    path = save_model(model, meta, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); simulate {t1 - t0:.0f} s, train {t2 - t1:.0f} s")
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
