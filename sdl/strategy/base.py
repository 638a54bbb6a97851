"""The strategy interface the orchestrator talks to (ask / tell / fail), and its snapshot."""

from __future__ import annotations

from typing import Any, Protocol


class Strategy(Protocol):
    """Proposes experiments and learns from their outcomes.

    Trials proposed but not yet told or failed are pending: later proposals account for them.
    `snapshot()` returns a JSON string from which `restore` rebuilds the exact state (for resume).
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
