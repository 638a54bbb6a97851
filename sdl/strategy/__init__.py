"""Active learning: objectives (descriptors -> metrics) and strategies (ask/tell)."""

from sdl.strategy.base import Strategy
from sdl.strategy.objectives import Evaluation, MetricSpec, evaluate, metrics


ACQUISITIONS = {  # kind -> what it is, for people (docs/strategy.md)
    "improvement": "log noisy expected improvement (qLogNEI)",
    "hypervolume": "log noisy expected hypervolume improvement (qLogNEHVI)",
    "map": "integrated posterior variance (qNegIntegratedPosteriorVariance)",
    "cost": "log noisy expected improvement per unit cost (CostWeightedLogNEI)",
}


def acquisition_kind(campaign) -> str:
    """Which acquisition a `bayesian` campaign's objectives call for (a key of ACQUISITIONS);
    torch-free, so `sdl validate` can say it."""
    if any(o.goal == "map" for o in campaign.objectives):
        return "map"
    if len(campaign.objectives) > 1:
        return "hypervolume"
    return "cost" if campaign.strategy.cost else "improvement"


def make_strategy(campaign, snapshot: str | None = None) -> Strategy:
    """The strategy a campaign asks for; restored from `snapshot` when resuming."""
    from sdl.strategy.ax_strategy import AxStrategy

    return AxStrategy(campaign, snapshot)


__all__ = ["ACQUISITIONS", "Strategy", "Evaluation", "MetricSpec", "acquisition_kind", "evaluate", "metrics",
           "make_strategy"]
