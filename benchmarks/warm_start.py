"""Does starting from an earlier campaign's data save experiments?

For each seed, an earlier campaign screens the nanoparticle world with `--earlier` Sobol
experiments aimed at another target (radius 5 nm); then the demo campaign (radius 8.0 ± 0.5 nm,
polydispersity <= 0.10, spheres) runs cold and warm-started from it (`strategy.warm_start`: the
earlier descriptors re-evaluated against the new target). Prints experiments to target for both.

    python benchmarks/warm_start.py --seeds 10 [--earlier 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaign import run  # noqa: E402
from printout import Printout  # noqa: E402

from sdl.transport import EmbeddedBroker  # noqa: E402

DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--earlier", type=int, default=15)
    ap.add_argument("--out", help="results file (default benchmarks/results/warm_start.txt)")
    args = ap.parse_args()
    say = Printout()

    budget = 40
    res: dict[str, list[int]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        say(f"{'seed':>4} {'cold':>8} {'warm':>8}   (experiments to target; unmet = {budget + 1})")
        for seed in range(args.seeds):
            store_url = f"sqlite:///{tmp}/seed{seed}.db"
            earlier, _, _ = run(DEMO, seed, "sobol", broker.url, Path(tmp), **{
                "store": store_url, "budget.max_experiments": args.earlier, "budget.stop_on_target": False,
                "objectives": [{"descriptor": "saxs.radius_nm", "goal": "target", "value": 5.0, "tolerance": 0.5}]})
            for mode in ("cold", "warm"):
                over = {"store": store_url, "lab.id": f"bench-{mode}-{seed}", "budget.max_experiments": budget}
                if mode == "warm":
                    over["strategy.warm_start"] = {"campaign": earlier.campaign_id}
                s, store, _ = run(DEMO, seed, "bayesian", broker.url, Path(tmp), **over)
                new = [t for t in store.trials(s.campaign_id) if not t.manual]
                met = next((i + 1 for i, t in enumerate(new) if t.target_met), None)
                res[mode].append(met or budget + 1)
            say(f"{seed:>4} {res['cold'][-1]:>8} {res['warm'][-1]:>8}")
    say("")
    for mode, v in res.items():
        q = statistics.quantiles(v, n=4) if len(v) > 1 else v * 3
        say(f"{mode}: target met in {sum(x <= budget for x in v)}/{len(v)} seeds; experiments to target median "
            f"{statistics.median(v):.1f} (IQR {q[0]:.1f}-{q[2]:.1f}), not counting the {args.earlier} earlier ones")
    say.write(args.out or ROOT / "benchmarks" / "results" / "warm_start.txt")


if __name__ == "__main__":
    main()
