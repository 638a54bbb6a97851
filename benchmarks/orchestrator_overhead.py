"""The orchestrator's own cost per trial: MQTT round trips, store writes, book-keeping.

Runs a Sobol campaign against the simulated lab with instrument time 0 and reports the wall
time per trial split into strategy (ask/tell/snapshot), analysis, instruments (command sent ->
result received, which includes the simulator's compute) and the rest: the orchestrator's overhead.

    python benchmarks/orchestrator_overhead.py [--trials 30] [--broker mqtt://127.0.0.1:1883] [--store URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdl.config import load_campaign  # noqa: E402
from sdl.runner import run_campaign  # noqa: E402
from sdl.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--broker", help="default: embedded broker")
    ap.add_argument("--store", help="default: SQLite in a temporary folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = load_campaign(ROOT / "campaigns" / "nanoparticle_size.yaml", **{
            "strategy.kind": "sobol", "budget.max_experiments": args.trials, "budget.stop_on_target": False,
            "store": args.store or f"sqlite:///{tmp}/bench.db", "broker": args.broker, "lab.id": f"bench-{int(time.time())}"})
        s = run_campaign(c, store=Store(c.store))
    t = s.timings_s
    total = t["loop_s"]
    n = s.n_trials
    parts = {k: t.get(k, 0.0) for k in ("strategy_s", "analysis_s", "instrument_wall_s")}
    overhead = total - sum(parts.values())
    print(f"start-up (not in the loop): strategy init {t.get('strategy_init_s', 0):.2f} s")
    print(f"broker {args.broker or 'embedded'}, store {args.store or 'sqlite (temp file)'}, {n} trials, "
          f"{s.n_completed} completed, {s.n_failed} failed")
    print(f"{'part':<28}{'total s':>10}{'per trial ms':>15}")
    for k, v in parts.items():
        print(f"{k.removesuffix('_s'):<28}{v:>10.2f}{1000 * v / n:>15.1f}")
    print(f"{'orchestrator overhead':<28}{overhead:>10.2f}{1000 * overhead / n:>15.1f}")
    print(f"{'loop total':<28}{total:>10.2f}{1000 * total / n:>15.1f}")


if __name__ == "__main__":
    main()
