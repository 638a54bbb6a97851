"""The stop rules of `budget`: experiments, wall time, target met, no expected improvement left.

Each returns the stop reason (the words stored as the campaign's stop_reason), or None to go on.
"""

from __future__ import annotations

from typing import Callable, Sequence

from sdl.config import Campaign
from sdl.store import TrialRow
from sdl.strategy.objectives import feasible


def budget_used(campaign: Campaign, n_experiments: int) -> str | None:
    """`budget.max_experiments` (manual experiments do not count)."""
    n = campaign.budget.max_experiments
    return f"budget of {n} experiments used" if n_experiments >= n else None


def wall_time_used(campaign: Campaign, elapsed_s: float) -> str | None:
    """`budget.max_wall_time_s`, counted from the start of this run's loop."""
    wall = campaign.budget.max_wall_time_s
    return f"wall time budget of {wall:g} s used" if wall and elapsed_s > wall else None


def target_met(campaign: Campaign, index: int, met: bool) -> str | None:
    """`budget.stop_on_target`: trial `index` met every target and constraint."""
    return f"target met by trial {index}" if met and campaign.budget.stop_on_target else None


def no_improvement_left(campaign: Campaign, trials: Sequence[TrialRow],
                        expected_improvement: Callable[[int], float | None]) -> str | None:
    """`budget.min_expected_improvement` with `budget.patience`, read from the strategy's own
    record of each proposal (`expected_improvement(index)`, so it holds across a resume). Only
    proposals made after a trial met every constraint count: before that the expected improvement
    is weighted by a small probability of feasibility and says the model has not found the
    feasible region, not that nothing is left to gain. Manual and start-design trials do not
    count. `trials`: every trial of the campaign, in index order."""
    b = campaign.budget
    if b.min_expected_improvement is None:
        return None
    first = next((t.index for t in trials if t.status == "completed" and feasible(campaign, t.objectives)), None)
    if first is None:
        return None
    seen = [expected_improvement(t.index) for t in trials if t.index > first]
    last = [e for e in seen if e is not None][-b.patience:]
    if len(last) == b.patience and all(e < b.min_expected_improvement for e in last):
        return (f"no expected improvement left: the last {b.patience} proposals each "
                f"expected less than {b.min_expected_improvement:g} (standardised units)")
    return None
