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

    def fail(self, index: int, reason: str) -> None: ...

    def snapshot(self) -> str: ...
