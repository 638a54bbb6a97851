"""The operator's input, read from the store: approvals, rejections, and queued manual experiments.

`sdl approve` / `sdl reject` / `sdl add` write to the store (any process, any time); the loop
asks this module every POLL_S what has arrived and applies it itself (attaches a manual
experiment to the strategy, dispatches an approved trial, fails a rejected one) and emits the
events. The operator only reads; it never calls back into the loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable

from sdl.analysis.base import Descriptor
from sdl.store import ManualRow, Store, store_option

POLL_S = 0.5  # how often the store is read for approvals and manual experiments (s)


def command_line(command: str, campaign_id: str, store_url: str) -> str:
    """A `sdl ...` command line for this campaign, with the --store it needs."""
    return f"sdl {command} {campaign_id}{store_option(store_url)}"


@dataclass(frozen=True)
class ManualExperiment:
    """A queued manual experiment, ready to attach: its parameters, its objectives as (mean,
    sem) per metric, and its descriptors."""

    request: ManualRow
    parameters: dict
    objectives: dict[str, tuple[float, float]]
    descriptors: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Review:
    """What the operator decided about a trial that waited for approval."""

    index: int
    approved: bool
    reason: str | None = None  # a rejection's, as stored with the trial


class Operator:
    """Reads one campaign's operator input from the store."""

    def __init__(self, store: Store, campaign_id: str):
        self.store = store
        self.campaign_id = campaign_id
        self._polled = 0.0  # monotonic time of the last poll
        self._waiting_shown: tuple[int, ...] = ()

    def due(self, force: bool = False) -> bool:
        """True every POLL_S (or when forced): time to read the store again."""
        now = time.monotonic()
        if not force and now - self._polled < POLL_S:
            return False
        self._polled = now
        return True

    def manual_experiments(self) -> list[ManualExperiment]:
        """The manual experiments queued (`sdl add`, warm start) and not yet attached, oldest first."""
        return [ManualExperiment(req, json.loads(req.parameters_json),
                                 {k: tuple(v) for k, v in json.loads(req.objectives_json).items()},
                                 tuple(Descriptor.model_validate(d) for d in json.loads(req.descriptors_json)))
                for req in self.store.manual_requests(self.campaign_id)]

    def reviews(self, waiting: Iterable[int]) -> list[Review]:
        """The decisions the store holds about the trials in `waiting` (those still undecided are left out)."""
        waiting = list(waiting)
        if not waiting:
            return []
        rows = {t.index: t for t in self.store.trials(self.campaign_id)}
        out = []
        for index in waiting:
            row = rows[index]
            if row.status == "approved":
                out.append(Review(index, True))
            elif row.status == "rejected":
                out.append(Review(index, False, row.failure or "rejected by the operator"))
        return out

    def waiting_notice(self, waiting: Iterable[int]) -> str | None:
        """The words asking for approval of the trials in `waiting`, when that set changed since
        the last notice (None otherwise, or when nothing waits)."""
        ids = tuple(sorted(waiting))
        text = None
        if ids and ids != self._waiting_shown:
            approve = command_line("approve", self.campaign_id, self.store.url)
            reject = command_line("reject", self.campaign_id, self.store.url)
            text = f"waiting for approval of trial(s) {list(ids)}: `{approve} [TRIAL ...]` or `{reject} TRIAL --reason TEXT`"
        self._waiting_shown = ids
        return text
