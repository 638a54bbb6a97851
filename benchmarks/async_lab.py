"""Sequential vs pipelined: one synthesis robot and two SAXS cameras of different speeds.

Runs campaigns/nanoparticle_two_saxs.yaml (30 experiments, Bayesian) with one sample in flight
(sequential: make, measure, measure, then the next) and with several (the robot makes the next
samples while the cameras measure), on the same seeds. Prints per run the simulated makespan
(the instruments' own clock, replayed from the stored commands: sdl.timeline), each instrument's
utilisation, and the result (best score, experiments to the target).

    python benchmarks/async_lab.py [--seeds 3] [--in-flight 3] [--budget 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from printout import Printout  # noqa: E402

from sdl.config import load_campaign  # noqa: E402
from sdl.runner import run_campaign  # noqa: E402
from sdl.store import Store  # noqa: E402
from sdl.transport import EmbeddedBroker  # noqa: E402

CAMPAIGN = ROOT / "campaigns" / "nanoparticle_two_saxs.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--in-flight", type=int, default=3)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "async_lab.txt"))
    args = ap.parse_args()
    say = Printout()

    say(f"{'seed':>4} {'in flight':>9} {'makespan (sim. h)':>18} {'robot':>6} {'saxs':>6} {'saxs_lab':>8} "
        f"{'best score':>10} {'target at':>9}")
    ratios = []
    modes = (1, args.in_flight)
    scores: dict[int, list[float]] = {k: [] for k in modes}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        for seed in range(args.seeds):
            spans = {}
            for k in modes:
                c = load_campaign(CAMPAIGN, **{"strategy.seed": seed, "strategy.max_in_flight": k,
                                               "budget.max_experiments": args.budget, "broker": broker.url,
                                               "store": f"sqlite:///{tmp}/{seed}-{k}.db", "lab.id": f"async-{seed}-{k}"})
                store = Store(c.store)
                s = run_campaign(c, store=store)
                best = min((t.score for t in store.trials(s.campaign_id) if t.score is not None), default=float("nan"))
                scores[k].append(best)
                spans[k] = s.makespan_s
                u = s.utilisation
                say(f"{seed:>4} {k:>9} {s.makespan_s / 3600:>18.2f} {u.get('robot', 0):>6.0%} {u.get('saxs', 0):>6.0%} "
                    f"{u.get('saxs_lab', 0):>8.0%} {best:>10.3g} {s.target_met_at or 'not met':>9}")
            ratios.append(spans[args.in_flight] / spans[1])
    say("")
    say(f"makespan pipelined / sequential: median {statistics.median(ratios):.0%} "
        f"(per seed {', '.join(f'{r:.0%}' for r in ratios)}); goal <= 60 %")
    say(f"best score (lower is better) median: sequential {statistics.median(scores[1]):.3g}, "
        f"pipelined {statistics.median(scores[args.in_flight]):.3g}")
    say.write(args.out)


if __name__ == "__main__":
    main()
