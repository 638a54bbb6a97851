"""The strategy interface the orchestrator talks to (ask / tell / fail), and its snapshot."""

from __future__ import annotations

from typing import Any, Protocol


class Strategy(Protocol):
    """Proposes experiments and learns from their outcomes.

    Trials proposed but not yet told or failed are pending: later proposals account for them.
    `snapshot()` returns a JSON string from which `make_strategy(campaign, snapshot)` rebuilds the
    state for resume. What is exact: every proposal is a function of the campaign (its seed) and
    the history the strategy was given (trials, their parameters, outcomes and failures, in order),
    so a restored strategy told the same outcomes proposes the same trials, bit for bit, as the
    live one (tests/test_resume_exact.py). The AxStrategy gets there by storing the observations
    at full precision beside Ax's own snapshot, seeding torch, numpy and `random` before each
    proposal, and fitting its model from scratch for each proposal, live or restored. Not covered:
    another version of Ax, BoTorch or torch or another kind of CPU (floating-point results may
    differ), and snapshots written before that format (restored with Ax's data rounded to
    10 decimal places).
    """

    def ask(self, n: int) -> list[tuple[int, dict[str, Any]]]: ...

    def tell(self, index: int, outcomes: dict[str, tuple[float, float]]) -> None: ...

    def fail(self, index: int, reason: str, infeasible: bool = False) -> None:
        """The trial produced no outcome. `infeasible`: the recipe itself failed (e.g. nothing
        nucleated), which the model should learn to avoid; otherwise a lab fault, ignored."""
        ...

    def attach(self, parameters: dict[str, Any], outcomes: dict[str, tuple[float, float]]) -> int:
        """Add an experiment made outside the loop (with its outcomes); returns its trial index."""
        ...

    def expected_improvement(self, index: int) -> float | None:
        """What the model expected trial `index` to improve (standardised units), None where no
        model proposed it (initial design, manual, mapping)."""
        ...

    def snapshot(self) -> str: ...
