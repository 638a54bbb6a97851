"""When each instrument was busy, from the stored command records: makespan and utilisation.

Two clocks. Wall clock: the commands' `sent_at`/`finished_at`. Instrument clock: the `duration_s`
each driver reports (simulated seconds in a simulated lab, where real sleep = duration x
time_scale). The instrument-clock timeline replays the commands in the order they were sent:
a command starts when its instrument is free and when everything the orchestrator had heard back
at the moment it sent the command had finished, so the orchestrator's own computing counts as
instantaneous (as it nearly is next to hours of synthesis and measurement).

A function of the stored commands rather than a subscriber of the loop's events: the summary of a
resumed campaign covers the commands of every run, including those sent before the resume, which
only the store has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from sdl.store import CommandRow


@dataclass
class Timeline:
    clock: str  # "instrument" (reported durations) or "wall"
    makespan_s: float
    busy_s: dict[str, float] = field(default_factory=dict)  # instrument -> busy seconds

    @property
    def utilisation(self) -> dict[str, float]:
        """Busy time / makespan per instrument, in [0, 1]."""
        if self.makespan_s <= 0:
            return {k: 0.0 for k in self.busy_s}
        return {k: min(1.0, v / self.makespan_s) for k, v in self.busy_s.items()}

    def lines(self) -> list[str]:
        unit = "simulated s" if self.clock == "instrument" else "s (wall clock)"
        out = [f"makespan {self.makespan_s:.6g} {unit}"]
        for k, u in sorted(self.utilisation.items()):
            out.append(f"{k:12s} busy {self.busy_s[k]:10.6g} {unit.split(' ')[0]}  utilisation {u:6.1%}")
        return out


def _finished(commands: Iterable[CommandRow]) -> list[CommandRow]:
    return [c for c in commands if c.finished_at is not None and c.status == "done"]


def instrument_timeline(commands: Iterable[CommandRow]) -> Timeline | None:
    """Replay on the instruments' own clock; None when a finished command reported no duration."""
    done = sorted(_finished(commands), key=lambda c: c.sent_at)
    if not done or any(c.duration_s is None for c in done):
        return None
    free: dict[str, float] = {}  # instrument -> when it is free (instrument clock)
    heard: list[tuple[datetime, float]] = []  # (wall time the reply arrived, its end on the instrument clock)
    busy: dict[str, float] = {}
    end_of: dict[str, float] = {}
    for c in done:
        known = max((end for at, end in heard if at <= c.sent_at), default=0.0)
        start = max(known, free.get(c.instrument, 0.0))
        end = start + float(c.duration_s)
        free[c.instrument] = end
        busy[c.instrument] = busy.get(c.instrument, 0.0) + float(c.duration_s)
        end_of[c.id] = end
        heard.append((c.finished_at, end))
    return Timeline("instrument", max(end_of.values()), busy)


def wall_timeline(commands: Iterable[CommandRow]) -> Timeline | None:
    """Busy = sent..finished per command (includes messaging), makespan = first send..last finish."""
    done = _finished(commands)
    if not done:
        return None
    start = min(c.sent_at for c in done)
    end = max(c.finished_at for c in done)
    busy: dict[str, float] = {}
    for c in done:
        busy[c.instrument] = busy.get(c.instrument, 0.0) + (c.finished_at - c.sent_at).total_seconds()
    return Timeline("wall", (end - start).total_seconds(), busy)


def timeline(commands: Iterable[CommandRow]) -> Timeline | None:
    """The instrument-clock timeline where every driver reported durations, else the wall clock."""
    commands = list(commands)
    return instrument_timeline(commands) or wall_timeline(commands)
