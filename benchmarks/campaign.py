"""Does a campaign reach its target, and faster than Sobol sampling?

Runs a campaign (default campaigns/nanoparticle_size.yaml) for several seeds with the Bayesian
strategy and with Sobol sampling (same budget, same simulated world seed), and prints per seed
the number of experiments needed to meet the target, then success counts and medians.

    python benchmarks/campaign.py --seeds 10 [--campaign campaigns/oxide_phase_purity.yaml]
        [--analysers saxs_fit] [--strategies bayesian,sobol,ax_default] [--noise measured]
        [--set 'strategy.cost={"base": 0.083, "per": {"time_min": 0.0167}}' --tag cost]

Besides experiments, it prints the simulated lab time (h, the instruments' own clock) spent until
the target was met, which is what a cost-aware strategy saves, and whether the sample that met the
target (as analysed) truly meets the simulated world's own target ("true" / "FALSE"): the world
remakes that very sample from its seed and sample id, so an early "target met" that is an
analyser's misreading shows up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from printout import Printout  # noqa: E402

from sdl.config import load_campaign  # noqa: E402
from sdl.runner import Summary, run_campaign  # noqa: E402
from sdl.store import Store  # noqa: E402
from sdl.timeline import instrument_timeline  # noqa: E402
from sdl.transport import EmbeddedBroker  # noqa: E402


def run(path: Path, seed: int, kind: str, broker: str, tmp: Path, analysers: list[str] | None = None,
        **over) -> tuple[Summary, Store, float]:
    """One campaign run with strategy `kind` and `seed` (strategy and simulated world) in its own
    SQLite file under `tmp`; `over` are load_campaign overrides. Returns (summary, store, seconds)."""
    over = {"strategy.seed": seed, "strategy.kind": kind, "store": f"sqlite:///{tmp}/{kind}-{seed}.db",
            "broker": broker, "lab.id": f"bench-{kind}-{seed}", **over}
    c = load_campaign(path, **over)
    if analysers:  # the campaign's one measured technique
        c = load_campaign(path, **over, analysis={c.measuring_steps()[0].technique: analysers})
    t = time.perf_counter()
    store = Store(c.store)
    return run_campaign(c, store=store), store, time.perf_counter() - t


def _word(true: bool | None) -> str:
    return "-" if true is None else ("true" if true else "FALSE")


def truly_met(campaign, store: Store, campaign_id: str, at: int | None) -> bool | None:
    """Whether the sample of experiment `at` (from 1) meets the simulated world's own target
    (`sample.truth["meets_target"]`); None when there is no such sample or the world keeps no truth.
    The world is rebuilt from the lab's entry point and seed; its drivers are made, not started."""
    if not at or campaign.lab.world is None:
        return None
    from importlib.metadata import entry_points

    trial = [t for t in store.trials(campaign_id) if not t.manual][at - 1]
    seed = campaign.lab.seed if campaign.lab.seed is not None else campaign.strategy.seed
    (ep,) = [e for e in entry_points(group="sdl.labs") if e.name == campaign.lab.world]
    worlds = [d.world for d in ep.load()("truth-check", "mqtt://127.0.0.1:1", seed=seed) if hasattr(d, "world")]
    if not worlds:
        return None
    truth = getattr(worlds[0].synthesize(json.loads(trial.parameters_json), trial.sample_id), "truth", None)
    return None if not isinstance(truth, dict) or "meets_target" not in truth else bool(truth["meets_target"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--strategies", default="bayesian,sobol")
    ap.add_argument("--campaign", default=str(ROOT / "campaigns" / "nanoparticle_size.yaml"))
    ap.add_argument("--analysers", help="comma-separated analyser chain (default: the campaign's)")
    ap.add_argument("--budget", type=int, help="override the campaign's experiment budget")
    ap.add_argument("--noise", choices=["inferred", "measured"], help="GP observation noise (default: the campaign's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="campaign override, e.g. strategy.initial_trials=5 (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--out", help="results file (default benchmarks/results/campaign_<name>.txt)")
    args = ap.parse_args()
    path = Path(args.campaign)
    analysers = args.analysers.split(",") if args.analysers else None
    kinds = args.strategies.split(",")
    extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    say = Printout()

    results: dict[str, list[int | None]] = {k: [] for k in kinds}
    hours: dict[str, list[float]] = {k: [] for k in kinds}
    truth: dict[str, list[bool | None]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        say(f"{'seed':>4} " + " ".join(f"{k + ' (exp to target / truly / lab h / run / s)':>52}" for k in kinds))
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            cells = []
            for k in kinds:
                s, store, secs = run(path, seed, k, broker.url, Path(tmp), analysers,
                                     **{"budget.max_experiments": args.budget, "strategy.noise": args.noise, **extra})
                met = s.target_met_at
                trials = [t for t in store.trials(s.campaign_id) if not t.manual]
                upto = {t.index for t in trials[:met or len(trials)]}
                tl = instrument_timeline(c for c in store.commands(s.campaign_id) if c.trial_index in upto)
                hours[k].append(tl.makespan_s / 3600 if tl else float("nan"))
                results[k].append(met)
                true = truly_met(load_campaign(path, **{"strategy.seed": seed, **extra}), store, s.campaign_id, met)
                truth[k].append(true)
                cells.append(f"{str(met) if met else 'not met':>12} / {_word(true):>5} / {hours[k][-1]:7.1f} / "
                             f"{s.n_trials:>3} / {secs:6.0f}")
            say(f"{seed:>4} " + " ".join(f"{c:>52}" for c in cells))
    c = load_campaign(path, **{"strategy.noise": args.noise, **extra})
    budget = args.budget or c.budget.max_experiments
    say("")
    for k in kinds:
        met = [m for m in results[k] if m]
        # an unmet seed counts as budget + 1 for the median
        filled = sorted(m if m else budget + 1 for m in results[k])
        q = statistics.quantiles(filled, n=4) if len(filled) > 1 else [filled[0]] * 3
        say(f"{k:>9}: target met in {len(met)}/{len(results[k])} seeds within {budget} experiments; "
            f"experiments to target median {statistics.median(filled):.1f} (IQR {q[0]:.1f}-{q[2]:.1f}; unmet = {budget + 1}); "
            f"lab time to target (or to the end) median {statistics.median(hours[k]):.1f} h")
        checked = [t for t in truth[k] if t is not None]
        if checked:
            say(f"{'':>9}  the sample that met the target truly meets the world's own target in {sum(checked)}/{len(checked)} seeds")
    suffix = ("_" + "_".join(analysers) if analysers else "") + ("_noise_" + args.noise if args.noise else "") + (
        "_" + args.tag if args.tag else "")
    say.write(args.out or ROOT / "benchmarks" / "results" / f"campaign_{c.name}{suffix}.txt",
              f"# {c.name}, analysers {analysers or dict(c.analysis)}, GP noise {c.strategy.noise}: "
              f"python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
