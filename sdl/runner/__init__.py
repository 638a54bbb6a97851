"""Running a campaign: the loop (Orchestrator), the events it emits, and run_campaign with its lab.

    sdl.runner.events    the event types and the dispatcher (subscribers are plain callables)
    sdl.runner.loop      the Orchestrator: the loop and the state machine of a trial
    sdl.runner.recorder  StoreRecorder, the first subscriber: writes every event to the store
    sdl.runner.console   ConsoleReporter, the subscriber `sdl run` prints with
    sdl.runner.lab       the embedded broker and a simulated lab's drivers (entry points `sdl.labs`)
    sdl.runner.operator  approvals, rejections and manual experiments, read from the store
    sdl.runner.start     a new campaign (and its warm start), or a stored one's strategy snapshot
    sdl.runner.recover   the trials an earlier run left in progress, rebuilt from the store
    sdl.runner.stop      the stop rules of `budget`
    sdl.runner.trials    the loop's book of trials

(A package named `runner`, not `run`: `sdl.run` is the public function, sdl.api.run.)

A subscriber of one's own::

    seen = []
    run_campaign(campaign, store=Store(campaign.store), subscribers=[seen.append])
    [type(e).__name__ for e in seen]   # CampaignCreated, CampaignStarted, TrialProposed, CommandSent, ...
"""

from __future__ import annotations

from typing import Iterable

from sdl.config import Campaign
from sdl.preflight import check
from sdl.runner.events import (
    Acked, Analysed, CampaignCreated, CampaignFailed, CampaignStarted, CommandResent, CommandSent, CommandTimedOut,
    Dispatcher, ErrorReceived, Event, Finished, InstrumentOffline, MalformedMessage, ManualAttached,
    MeasurementReceived, Message, Reply, ResultReceived, ResultRefused, Stopped, Subscriber, Summary, Told,
    TrialApproved, TrialFailed, TrialProposed, TrialResumed, WaitingForApproval, WarmStartQueued,
)
from sdl.runner.lab import campaign_lab
from sdl.runner.loop import Orchestrator
from sdl.store import Store


def run_campaign(campaign: Campaign, *, store: Store, campaign_id: str | None = None,
                 subscribers: Iterable[Subscriber] = (), world_hint: str | None = None) -> Summary:
    """Run (or, with `campaign_id`, resume) a campaign: start the embedded broker and the
    simulated lab if the campaign asks for them (sdl.runner.lab), run the loop, and stop what was
    started. `subscribers` receive every event after the store recorder; `world_hint`: see
    Orchestrator. Raises ConfigError (sdl.preflight.check: an unknown technique or analyser, a
    descriptor no analyser declares, bounds outside the simulated lab's limits) before storing
    anything, and CampaignBusy, before starting anything, when another process runs the campaign."""
    # techniques, analysers, descriptors and the simulated lab's limits: before anything is stored
    check(campaign)
    # a resumed campaign's lease first: a second orchestrator is refused before it starts a second lab
    lease = store.lease(campaign_id) if campaign_id is not None else None
    try:
        with campaign_lab(campaign) as lab:
            orch = Orchestrator(campaign, store, lab.broker_url, campaign_id=campaign_id, subscribers=subscribers,
                                world_hint=world_hint, lease=lease, lab_id=lab.id, secret=lab.secret)
            return orch.run()
    finally:
        if lease is not None:
            lease.release()


__all__ = [
    "Acked", "Analysed", "CampaignCreated", "CampaignFailed", "CampaignStarted", "CommandResent", "CommandSent",
    "CommandTimedOut", "Dispatcher", "ErrorReceived", "Event", "Finished", "InstrumentOffline", "MalformedMessage",
    "ManualAttached", "MeasurementReceived", "Message", "Orchestrator", "Reply", "ResultReceived", "ResultRefused",
    "Stopped", "Subscriber", "Summary", "Told", "TrialApproved", "TrialFailed", "TrialProposed", "TrialResumed",
    "WaitingForApproval", "WarmStartQueued", "run_campaign",
]
