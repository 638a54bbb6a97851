"""How long one strategy step (fit the GP + propose the next trial) takes.

A campaign with 6 float parameters and 2 objectives (BoTorch's DTLZ2 test problem, noise 1 %)
is given `--observations` completed trials, then proposes `--steps` trials one at a time, each
told before the next; the figures are the wall time of each `ask` (Ax fits its GP inside) and
of each `tell`. Goal (issue 5): fit + propose <= 2 s for 100 observations on a 2-core machine.

    python benchmarks/strategy_step.py [--observations 100] [--steps 5] [--objectives 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from botorch.test_functions.multi_objective import DTLZ2  # noqa: E402

from printout import Printout  # noqa: E402

from sdl.config import load_campaign  # noqa: E402
from sdl.strategy.ax_strategy import TORCH_THREADS, AxStrategy  # noqa: E402


def campaign(n_params: int, n_objectives: int, tmp: str):
    names = [f"x{i}" for i in range(n_params)]
    objectives = [{"descriptor": f"sim.f{j}", "goal": "minimize", "threshold": 1.1} for j in range(n_objectives)]
    if n_objectives == 1:
        objectives[0].pop("threshold")
    return load_campaign({
        "name": "step_time", "store": f"sqlite:///{tmp}/x.db", "lab": {"world": None},
        "parameters": [{"name": n, "type": "float", "bounds": [0.0, 1.0]} for n in names],
        "workflow": [{"name": "m", "instrument": "sim", "action": "measure", "technique": "sim"}],
        "objectives": objectives,
        "strategy": {"kind": "bayesian", "initial_trials": 8, "initialize_with_center": False, "seed": 0},
    }), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--observations", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--params", type=int, default=6)
    ap.add_argument("--objectives", type=int, default=2)
    ap.add_argument("--out", help="results file (default benchmarks/results/strategy_step.txt)")
    args = ap.parse_args()
    problem = DTLZ2(dim=args.params, num_objectives=max(args.objectives, 2), noise_std=0.01)
    say = Printout()

    def outcome(params: dict) -> dict:
        x = torch.tensor([[params[n] for n in names]], dtype=torch.double)
        y = problem(x)[0]
        return {f"sim_f{j}": (float(y[j]), 0.01) for j in range(args.objectives)}

    with tempfile.TemporaryDirectory() as tmp:
        c, names = campaign(args.params, args.objectives, tmp)
        torch.manual_seed(0)
        s = AxStrategy(c)
        for p in torch.rand(args.observations, args.params, dtype=torch.double).tolist():
            s.attach(dict(zip(names, p)), outcome(dict(zip(names, p))))
        asks, tells = [], []
        for _ in range(args.steps):
            t = time.perf_counter()
            [(i, p)] = s.ask(1)
            asks.append(time.perf_counter() - t)
            t = time.perf_counter()
            s.tell(i, outcome(p))
            tells.append(time.perf_counter() - t)
            say(f"step with {i} observations: fit + propose {asks[-1]:.2f} s, tell {tells[-1] * 1000:.0f} ms")
    say(f"{args.observations} observations, {args.params} parameters, {args.objectives} objectives, "
        f"torch threads {TORCH_THREADS}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: "
        f"fit + propose median {statistics.median(asks):.2f} s "
        f"(min {min(asks):.2f}, max {max(asks):.2f}); goal <= 2 s")
    say.write(args.out or ROOT / "benchmarks" / "results" / "strategy_step.txt")


if __name__ == "__main__":
    main()
