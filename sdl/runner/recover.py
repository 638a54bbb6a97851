"""Resume: the trials an earlier run left in progress, rebuilt from the store."""

from __future__ import annotations

import json
from typing import Iterable, Iterator

from sdl.config import Campaign
from sdl.measurement import Measurement
from sdl.runner.trials import FINISHED, Active
from sdl.store import Store, TrialRow, unpack_arrays


def in_flight(campaign: Campaign, store: Store, campaign_id: str, trials: Iterable[TrialRow]) -> Iterator[Active]:
    """One Active per unfinished trial of `trials`, in their order: the steps whose command is
    done are not repeated (their results and measurements are read back), a command in flight is
    to be re-sent with its id and attempt count, and a trial waiting for approval (or rejected
    while no loop ran) still waits. A trial whose every step is done comes back with `step` ==
    the number of steps: measured, to be analysed again."""
    for t in trials:
        if t.status in FINISHED:
            continue
        act = Active(trial=t, approved=t.status not in ("proposed", "rejected"))
        cmds = {c.step: c for c in store.commands(campaign_id, t.index)}
        stored = {m.step: m for m in store.measurements(campaign_id, t.index)}
        for i, step in enumerate(campaign.workflow):
            c = cmds.get(step.name)
            if c is not None and c.status == "done":
                act.results[step.name] = json.loads(c.reply_json or "{}")
                if step.technique:
                    m = stored[step.name]
                    act.measurements[step.name] = Measurement(
                        technique=m.technique, arrays=unpack_arrays(m.arrays), metadata=json.loads(m.metadata_json))
                act.step = i + 1
                continue
            if c is not None:
                act.command_id, act.attempts, act.instrument = c.id, c.attempts, c.instrument
            break
        yield act
