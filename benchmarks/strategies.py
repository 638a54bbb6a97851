"""Hypervolume (multi-objective) and mapping error (exploration) of sdl's strategy against Sobol
sampling and Ax's default generation strategy, on the simulated worlds, scored on the worlds'
noise-free truth for the recipes each strategy chose.

    python benchmarks/strategies.py pareto --seeds 10 --budget 20   # campaigns/oxide_pareto.yaml
    python benchmarks/strategies.py map --seeds 10 --budget 20      # campaigns/nanoparticle_map.yaml

pareto: hypervolume dominated by the true (fraction, size) of the recipes made, over the
campaign's reference point (its objective thresholds), after 10 and `budget` experiments, as a
share of the best hypervolume found in 200,000 random recipes.
map: RMSE of a GP (sdl.surrogate, same for every strategy) fitted to the measured radii, against
the true radius on a 40 x 40 grid of the mapped plane, after 10 and `budget` experiments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaign import run  # noqa: E402
from printout import Printout  # noqa: E402

from sdl import report  # noqa: E402
from sdl.config import load_campaign  # noqa: E402
from sdl.transport import EmbeddedBroker  # noqa: E402

CAMPAIGNS = {"pareto": ROOT / "campaigns" / "oxide_pareto.yaml", "map": ROOT / "campaigns" / "nanoparticle_map.yaml"}


# ----- pareto -------------------------------------------------------------------------------------
def oxide_truth(params_list: list[dict]) -> np.ndarray:
    """True (t-ZrO2 weight fraction, t-ZrO2 crystallite size in nm) per recipe; NaN rows for
    recipes that fail, size 0 where the phase is absent (< 3 wt%)."""
    from simulators.worlds import oxides

    p = {k: np.array([q[k] for q in params_list]) for k in params_list[0]}
    r = oxides.response(p["zr_fraction"], p["calcination_temperature_C"], p["calcination_time_h"],
                        np.array([oxides.ATMOSPHERES.index(a) for a in p["atmosphere"]]))
    w = r["w_ZrO2_tetragonal"]
    y = np.stack([w, np.where(w > 0.03, r["size_nm"], 0.0)], axis=1)
    y[r["status"] != 0] = np.nan
    return y


def hypervolume(y: np.ndarray, ref: np.ndarray) -> float:
    return report.hypervolume(y, ["maximize", "maximize"], ref)


def best_possible_hv(campaign, ref: np.ndarray, n: int = 200_000) -> float:
    from simulators.worlds import oxides

    rng = np.random.default_rng(0)
    (lo_t, hi_t), (lo_h, hi_h) = campaign.parameters[1].bounds, campaign.parameters[2].bounds
    params = [{"zr_fraction": x, "calcination_temperature_C": t, "calcination_time_h": h, "atmosphere": a}
              for x, t, h, a in zip(rng.random(n), lo_t + (hi_t - lo_t) * rng.random(n),
                                    np.exp(np.log(lo_h) + np.log(hi_h / lo_h) * rng.random(n)),
                                    rng.choice(oxides.ATMOSPHERES, n))]
    return hypervolume(oxide_truth(params), ref)


def score_pareto(campaign, trials, checkpoints, context) -> list[float]:
    ref, best = context
    y = oxide_truth([t.parameters for t in trials])
    return [hypervolume(y[:k], ref) / best for k in checkpoints]


# ----- map -----------------------------------------------------------------------------------------
def map_grid(campaign, n: int = 40) -> tuple[list[dict], np.ndarray]:
    from simulators.worlds.nanoparticles import NanoparticleWorld

    fixed = {p.name: p.value for p in campaign.parameters if p.type == "fixed"}
    (lo_t, hi_t), (lo_m, hi_m) = campaign.parameters[0].bounds, campaign.parameters[1].bounds
    grid = [{**fixed, "temperature_C": t, "time_min": m} for t in np.linspace(lo_t, hi_t, n)
            for m in np.geomspace(lo_m, hi_m, n)]
    world = NanoparticleWorld(seed=0)
    return grid, np.array([world.expected(g)["radius_nm"] for g in grid])


def score_map(campaign, trials, checkpoints, context) -> list[float]:
    from sdl.surrogate import fit

    grid, truth = context
    out = []
    for k in checkpoints:
        done = [t for t in trials[:k] if t.status == "completed" and "saxs_radius_nm" in t.objectives]
        model = fit(campaign, [t.parameters for t in done], [t.objectives["saxs_radius_nm"][0] for t in done])
        mean, _ = model.predict(grid)
        out.append(float(np.sqrt(np.mean((mean - truth) ** 2))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=sorted(CAMPAIGNS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--strategies", default="bayesian,sobol,ax_default")
    ap.add_argument("--out", help="results file (default benchmarks/results/<kind>.txt)")
    args = ap.parse_args()
    path = CAMPAIGNS[args.kind]
    campaign = load_campaign(path)
    checkpoints = [10, args.budget]
    if args.kind == "pareto":
        ref = np.array([o.threshold for o in campaign.objectives])
        context, score, unit = (ref, best_possible_hv(campaign, ref)), score_pareto, "share of best hypervolume"
    else:
        context, score, unit = map_grid(campaign), score_map, "RMSE of the learnt radius map (nm)"
    kinds = args.strategies.split(",")
    say = Printout()

    results: dict[str, list[list[float]]] = {k: [] for k in kinds}
    say(f"{args.kind}: {unit} after {checkpoints} experiments")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        for seed in range(args.seeds):
            cells = []
            for k in kinds:
                s, store, secs = run(path, seed, k, broker.url, Path(tmp), **{"budget.max_experiments": args.budget,
                                                                           "budget.stop_on_target": False})
                trials = [t for t in store.trials(s.campaign_id) if not t.manual]
                results[k].append(score(campaign, trials, checkpoints, context))
                cells.append(f"{k}: " + " / ".join(f"{v:.3f}" for v in results[k][-1]) + f" ({secs:.0f} s)")
            say(f"seed {seed}: " + "; ".join(cells))
    say("")
    for k in kinds:
        cols = np.array(results[k])
        say(f"{k:>10}: " + "; ".join(
            f"after {n}: median {np.median(cols[:, i]):.3f} (IQR {np.percentile(cols[:, i], 25):.3f}-"
            f"{np.percentile(cols[:, i], 75):.3f})" for i, n in enumerate(checkpoints)))
    say.write(args.out or ROOT / "benchmarks" / "results" / f"{args.kind}.txt")


if __name__ == "__main__":
    main()
