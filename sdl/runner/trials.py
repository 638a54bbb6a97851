"""The loop's own record of a campaign's trials (loaded once from the store) and of the trials in progress."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from sdl.measurement import Measurement
from sdl.store import ManualRow, TrialRow

FINISHED = ("completed", "failed")


@dataclass
class Active:
    """A trial being made or measured."""

    trial: TrialRow
    step: int = 0  # workflow index of the next/current step
    command_id: str | None = None
    deadline: float = 0.0
    attempts: int = 0
    sent_at: float = 0.0
    results: dict[str, dict] = field(default_factory=dict)  # step name -> result body (no arrays)
    measurements: dict[str, Measurement] = field(default_factory=dict)
    approved: bool = True  # False while the trial waits for `sdl approve`
    instrument: str | None = None  # the instrument running the current step (chosen from its pool)
    session: str | None = None  # the driver session serving that instrument when the command was sent
    resend: bool = False  # after a reconnect: re-send the command at each status of its instrument until it answers


class Book:
    """Every trial of the campaign, as the store has it: read from the store once when the loop
    starts, then kept up to date by the loop itself (the loop is the only writer of trials; the
    operator's approvals and rejections reach it through sdl.runner.operator). The rows mirror what
    Store.add_trial / finish_trial / add_manual_trial write."""

    def __init__(self, rows: Iterable[TrialRow] = ()):
        self._rows: dict[int, TrialRow] = {r.index: r for r in rows}

    def rows(self) -> list[TrialRow]:
        """In index order."""
        return [self._rows[i] for i in sorted(self._rows)]

    def __getitem__(self, index: int) -> TrialRow:
        return self._rows[index]

    def n_experiments(self) -> int:
        """Experiments that count against the budget (manual ones do not)."""
        return sum(not t.manual for t in self._rows.values())

    def n_done(self) -> int:
        return sum(t.status in FINISHED for t in self._rows.values())

    def propose(self, campaign_id: str, index: int, parameters: dict[str, Any], sample_id: str,
                status: str) -> TrialRow:
        row = TrialRow(campaign_id=campaign_id, index=index, parameters_json=json.dumps(parameters),
                       sample_id=sample_id, status=status)
        self._rows[index] = row
        return row

    def attach(self, request: ManualRow, index: int) -> TrialRow:
        """A manual experiment attached as trial `index` (flagged manual, completed)."""
        row = TrialRow(campaign_id=request.campaign_id, index=index, parameters_json=request.parameters_json,
                       sample_id=f"manual-{request.id}", status="completed", manual=True,
                       objectives_json=request.objectives_json, score=request.score,
                       target_met=request.target_met, completed_at=datetime.now(timezone.utc))
        self._rows[index] = row
        return row

    def set_status(self, index: int, status: str) -> None:
        self._rows[index].status = status

    def finish(self, index: int, *, status: str, failure: str | None = None,
               objectives: dict[str, Any] | None = None, target_met: bool | None = None,
               score: float | None = None) -> TrialRow:
        row = self._rows[index]
        row.status, row.failure = status, failure
        row.objectives_json = json.dumps(objectives) if objectives is not None else None
        row.target_met, row.score = target_met, score
        row.completed_at = datetime.now(timezone.utc)
        return row
