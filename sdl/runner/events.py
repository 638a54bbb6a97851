"""The typed events the loop emits, and the synchronous dispatcher that hands them to subscribers.

Like the documents of bluesky's RunEngine: the loop (sdl.runner.loop) decides, the subscribers do
the rest. A subscriber is any callable taking one event; it is called in the thread of the loop,
in subscription order, and returns before the loop takes its next step. The store recorder
(sdl.runner.recorder) is subscribed first, so everything is stored before any other subscriber (the
console, a progress bar, a user's list) hears of it and before the loop goes on. An exception in
a subscriber propagates into the loop, as a failing store write must.

Every event names its campaign and carries `at`, the UTC time it was emitted (the recorder uses
it as the finish time of a command). Events are frozen; the trial rows some of them carry are the
loop's own record of the trial at that moment (see sdl.runner.trials), read them, do not change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from sdl.analysis.base import Descriptor
    from sdl.config import Campaign
    from sdl.measurement import Measurement
    from sdl.outcome import Outcome
    from sdl.store import ManualRow, TrialRow
    from sdl.strategy import Evaluation


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class Event:
    campaign_id: str
    at: datetime = field(default_factory=_now, compare=False)


# ----- the campaign ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CampaignCreated(Event):
    """A new campaign, before anything else happens in it."""

    campaign: Campaign


@dataclass(frozen=True, kw_only=True)
class WarmStartQueued(Event):
    """`strategy.warm_start`: an earlier campaign's completed trials queued as manual experiments
    (attached to the strategy when the loop starts); `skipped` says which were left out and why."""

    rows: tuple[ManualRow, ...]
    source: str  # the earlier campaign as the warm_start option names it
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CampaignStarted(Event):
    """The instruments are online and the loop starts (a new campaign, or a resumed one with
    `done` trials already finished)."""

    campaign: Campaign
    done: int
    authenticated: bool = False  # commands signed, replies and statuses checked with the lab secret


@dataclass(frozen=True, kw_only=True)
class TrialResumed(Event):
    """A trial left in progress by an earlier run, taken up again at workflow step `step`."""

    trial_index: int
    step: int
    n_steps: int


# ----- a trial -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrialProposed(Event):
    """The strategy proposed a trial (`trial.status` "proposed" when it waits for `sdl approve`,
    else "running"); `strategy_state` is the snapshot taken right after the proposal."""

    trial: TrialRow
    parameters: dict[str, Any]
    strategy_state: str | None
    expected_improvement: float | None = None  # standardised; None from a start design


@dataclass(frozen=True, kw_only=True)
class TrialApproved(Event):
    """The operator approved a proposed trial: it runs now."""

    trial_index: int


@dataclass(frozen=True, kw_only=True)
class CommandSent(Event):
    """A command published to an instrument (its first attempt)."""

    trial_index: int
    command_id: str  # the correlation id on the wire, "<campaign>:<trial>:<step>"
    step: str
    instrument: str
    action: str
    params: dict[str, Any]
    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class CommandResent(CommandSent):
    """The same command again, with the same id (drivers are idempotent): after no result came
    within `retry_after_s`; or (`retry_after_s` None) because a resumed run takes the trial up, or
    because the command or its reply may have been lost (`reason`: a broker reconnect, a new driver
    session), which does not count as an attempt."""

    retry_after_s: float | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Reply(Event):
    """A reply from an instrument to the command in progress."""

    trial_index: int
    command_id: str
    step: str
    instrument: str


@dataclass(frozen=True, kw_only=True)
class Acked(Reply):
    """The driver accepted the command."""


@dataclass(frozen=True, kw_only=True)
class ResultReceived(Reply):
    """The step is done: the result body (without the measurement's arrays) and the instrument
    time the driver reported."""

    body: dict[str, Any]
    duration_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class MeasurementReceived(ResultReceived):
    """The result of a measuring step, with its measurement (stored with the command's result in
    one transaction)."""

    measurement: Measurement


@dataclass(frozen=True, kw_only=True)
class ErrorReceived(Reply):
    """The driver could not do the step (`reason`, for the trial's failure); `infeasible`: the
    recipe itself failed (`synthesis_failed`), an outcome the strategy learns from."""

    body: dict[str, Any]
    reason: str
    infeasible: bool = False


@dataclass(frozen=True, kw_only=True)
class ResultRefused(Reply):
    """A result the loop could not use (an invalid measurement): the command counts as failed."""

    error: str


@dataclass(frozen=True, kw_only=True)
class CommandTimedOut(Event):
    """No result within the step's timeout after every retry."""

    trial_index: int
    command_id: str
    instrument: str


@dataclass(frozen=True, kw_only=True)
class Analysed(Event):
    """The descriptors the analysers produced for a trial and their evaluation against the
    objectives. Not stored on its own: the descriptors and analyses are stored with the trial's
    outcome (Told, or TrialFailed when the analysers flagged them untrustworthy), in one
    transaction, so a crash cannot store them twice."""

    trial_index: int
    descriptors: tuple[Descriptor, ...]
    analyses: tuple[tuple[str, str, dict, dict], ...]  # (step, analyser, info, curves)
    evaluation: Evaluation


@dataclass(frozen=True, kw_only=True)
class Told(Event):
    """A trial completed: its evaluation was told to the strategy (`strategy_state` after it)."""

    trial: TrialRow
    evaluation: Evaluation
    descriptors: tuple[Descriptor, ...]
    analyses: tuple[tuple[str, str, dict, dict], ...]
    strategy_state: str | None


@dataclass(frozen=True, kw_only=True)
class TrialFailed(Event):
    """A trial failed (`reason`); the strategy was told it failed (`infeasible`: an outcome of the
    recipe it should avoid, else a lab fault that teaches it nothing)."""

    trial: TrialRow
    reason: str
    infeasible: bool = False
    evaluation: Evaluation | None = None
    descriptors: tuple[Descriptor, ...] = ()
    strategy_state: str | None = None


# ----- messages for the people watching ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Message(Event):
    """Text for whoever watches the run: `level` info | warning | error."""

    level: str
    text: str


@dataclass(frozen=True, kw_only=True)
class MalformedMessage(Message):
    """An MQTT message that is not the protocol (`error` says how), ignored."""

    error: str


@dataclass(frozen=True, kw_only=True)
class InstrumentOffline(Message):
    """An instrument with work in progress went offline: the campaign stops."""

    instrument: str
    trial_indices: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class WaitingForApproval(Message):
    """Proposed trials wait for `sdl approve` (said again whenever the set changes)."""

    trial_indices: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class ManualAttached(Message):
    """A manual experiment (`sdl add`, or a warm-start trial) attached to the strategy as a
    completed trial."""

    trial: TrialRow
    request: ManualRow
    descriptors: tuple[Descriptor, ...]
    strategy_state: str | None


# ----- the end -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    """The campaign stopped early (an instrument offline, Ctrl-C); `sdl resume` continues it."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class CampaignFailed(Event):
    """The run ended on an error (no driver online, broker unreachable, a strategy error)."""

    reason: str


@dataclass
class Summary:
    campaign_id: str
    status: str
    stop_reason: str
    n_trials: int
    n_completed: int
    n_failed: int
    best_trial: int | None  # trial index (from 0) of the best trial (sdl.outcome's rule)
    target_met_at: int | None  # experiment number (from 1) at which the target was first met
    timings_s: dict[str, float]
    clock: str = "instrument"  # which clock makespan/utilisation use (sdl.timeline)
    makespan_s: float | None = None
    utilisation: dict[str, float] = field(default_factory=dict)  # instrument -> busy / makespan
    outcome: Outcome | None = None  # what the campaign came to, in words (sdl.outcome)
    store_url: str | None = None  # where it is stored (for the `sdl status ... --store` hint)


@dataclass(frozen=True, kw_only=True)
class Finished(Event):
    """The loop ended (budget, target, a stop rule; status "finished", or "stopped" after an
    instrument went offline): its summary."""

    summary: Summary


# ----- dispatch ----------------------------------------------------------------------------------------

Subscriber = Callable[[Event], Any]


class Dispatcher:
    """Calls each subscriber with each event, in subscription order, synchronously."""

    def __init__(self, subscribers: Iterable[Subscriber] = ()):
        self._subscribers: dict[int, Subscriber] = {}
        self._next = 0
        for fn in subscribers:
            self.subscribe(fn)

    def subscribe(self, fn: Subscriber) -> int:
        """Add a subscriber (called after those already there); returns a token for unsubscribe."""
        if not callable(fn):
            raise TypeError(f"a subscriber is a callable taking one event, got {fn!r}")
        token, self._next = self._next, self._next + 1
        self._subscribers[token] = fn
        return token

    def unsubscribe(self, token: int) -> None:
        self._subscribers.pop(token, None)

    def __call__(self, event: Event) -> None:
        for fn in list(self._subscribers.values()):
            fn(event)
