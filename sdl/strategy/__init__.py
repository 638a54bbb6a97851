"""Active learning: objectives (descriptors -> metrics) and strategies (ask/tell)."""

from sdl.strategy.base import Strategy
from sdl.strategy.objectives import ACQUISITIONS, Evaluation, MetricSpec, acquisition_kind, evaluate, metrics


def make_strategy(campaign, snapshot: str | None = None) -> Strategy:
    """The strategy a campaign asks for; restored from `snapshot` when resuming."""
    from sdl.strategy.ax_strategy import AxStrategy

    return AxStrategy(campaign, snapshot)


__all__ = ["ACQUISITIONS", "Strategy", "Evaluation", "MetricSpec", "acquisition_kind", "evaluate", "metrics",
           "make_strategy"]
