"""How long one strategy step (fit the GP + propose the next trial) takes.

A campaign with `--params` parameters (float ones, plus with `--categorical` one of them a 3-value
choice that shifts every objective by 0 / 0.1 / 0.2) and one fixed parameter, and 1 or 2
objectives (BoTorch's DTLZ2 test problem over the float parameters, noise 1 %), is given
N completed trials, then proposes `--steps` trials one at a time, each told before the next; the
figures are the wall time of each `ask` (Ax fits its GP inside) and of each `tell`.
Goals (issue 15): <= 1 s at 40 observations with one 3-value choice, <= 2 s at 100 observations,
6 parameters, 2 objectives; on a 2-core machine.

    python benchmarks/strategy_step.py [--observations 40,100] [--objectives 1,2] [--categorical 0,1] [--steps 5]
"""

from __future__ import annotations

import argparse
import itertools
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

CHOICES = {"a": 0.0, "b": 0.1, "c": 0.2}  # the choice parameter's values and their objective offsets


def campaign(n_params: int, n_objectives: int, categorical: bool, tmp: str, constraints: int = 0):
    floats = [f"x{i}" for i in range(n_params - categorical)]
    params = [{"name": n, "type": "float", "bounds": [0.0, 1.0]} for n in floats]
    if categorical:
        params.append({"name": "kind", "type": "choice", "values": list(CHOICES)})
    params.append({"name": "batch", "type": "fixed", "value": "B1"})
    objectives = [{"descriptor": f"sim.f{j}", "goal": "minimize", "threshold": 1.3} for j in range(n_objectives)]
    if n_objectives == 1:
        objectives[0].pop("threshold")
    bounds = [{"descriptor": f"sim.g{j}", "op": "<=", "bound": 0.6} for j in range(constraints)]
    return load_campaign({
        "name": "step_time", "store": f"sqlite:///{tmp}/x.db", "lab": {"world": None},
        "parameters": params,
        "workflow": [{"name": "m", "instrument": "sim", "action": "measure", "technique": "sim"}],
        "objectives": objectives, "constraints": bounds,
        "strategy": {"kind": "bayesian", "initial_trials": 8, "initialize_with_center": False, "seed": 0},
    }), floats


def measure(n_obs: int, n_params: int, n_objectives: int, categorical: bool, steps: int,
            constraints: int = 0) -> tuple[list, list]:
    """(ask seconds, tell seconds) per step; `constraints` outcome constraints g_j = mean of
    x_j, x_j+1 <= 0.6 (as the demo campaign's two constraints)."""
    problem = DTLZ2(dim=n_params - categorical, num_objectives=max(n_objectives, 2), noise_std=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        c, floats = campaign(n_params, n_objectives, categorical, tmp, constraints)

        def outcome(params: dict) -> dict:
            x = torch.tensor([[params[n] for n in floats]], dtype=torch.double)
            y = problem(x)[0] + CHOICES.get(params.get("kind"), 0.0)
            g = {f"sim_g{j}": ((params[floats[j]] + params[floats[j + 1]]) / 2, 0.01) for j in range(constraints)}
            return {f"sim_f{j}": (float(y[j]), 0.01) for j in range(n_objectives)} | g

        torch.manual_seed(0)
        s = AxStrategy(c)
        for k, p in enumerate(torch.rand(n_obs, len(floats), dtype=torch.double).tolist()):
            params = dict(zip(floats, p), batch="B1", **({"kind": list(CHOICES)[k % 3]} if categorical else {}))
            s.attach(params, outcome(params))
        asks, tells = [], []
        for _ in range(steps):
            t = time.perf_counter()
            [(i, p)] = s.ask(1)
            asks.append(time.perf_counter() - t)
            t = time.perf_counter()
            s.tell(i, outcome(p))
            tells.append(time.perf_counter() - t)
    return asks, tells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--observations", default="40,100")
    ap.add_argument("--objectives", default="1,2")
    ap.add_argument("--categorical", default="0,1", help="0: float parameters only; 1: one is a 3-value choice")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--params", type=int, default=6)
    ap.add_argument("--out", help="results file (default benchmarks/results/strategy_step.txt)")
    args = ap.parse_args()
    say = Printout()
    say(f"{args.params} parameters (+1 fixed), torch threads {TORCH_THREADS}, {os.cpu_count()} CPUs; "
        f"median (min-max) of {args.steps} steps")
    say(f"{'observations':>12} {'objectives':>16} {'choice':>6} {'fit + propose s':>22} {'tell ms':>8} {'load':>5}")
    cases = [(o, j, c, 0) for o, j, c in itertools.product(*(map(int, v.split(",")) for v in
                                                             (args.observations, args.objectives, args.categorical)))]
    cases.append((40, 1, 1, 2))  # as the demo campaign: one target, two constraints, one 3-value choice
    for n_obs, n_obj, cat, n_con in cases:
        asks, tells = measure(n_obs, args.params, n_obj, bool(cat), args.steps, n_con)
        objectives = f"{n_obj}" + (f" + {n_con} constr." if n_con else "")
        say(f"{n_obs:>12} {objectives:>16} {'yes' if cat else 'no':>6} "
            f"{statistics.median(asks):>10.2f} ({min(asks):.2f}-{max(asks):.2f}) "
            f"{statistics.median(tells) * 1000:>8.0f} {os.getloadavg()[0]:>5.1f}")
    say("goals: <= 1 s at 40 observations with a choice parameter; <= 2 s at 100 observations, 2 objectives")
    say.write(args.out or ROOT / "benchmarks" / "results" / "strategy_step.txt")


if __name__ == "__main__":
    main()
