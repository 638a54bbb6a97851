"""StoreRecorder: the subscriber that writes every event of the loop to the store.

It is the loop's first subscriber and writes synchronously, so each step is stored before any
other subscriber hears of it and before the loop takes the next step: a process killed at any
point loses nothing, and `sdl resume` takes up exactly where the store says the campaign was.
Each event is one transaction where the store groups things (a trial with the strategy state
that proposed it; a measurement with its command's result; a trial's outcome with its
descriptors, analyses and the strategy state after it).
"""

from __future__ import annotations

import json
from typing import Callable

from sdl.runner import events as ev
from sdl.store import CommandRow, Store


# the `lab_messages` event of each run's start: `sdl status` shows the latest
AUTHENTICATED = "authenticated: commands signed, replies and statuses checked with the lab secret (HMAC-SHA256)"
NOT_AUTHENTICATED = "not authenticated: no lab secret (SDL_LAB_SECRET / SDL_LAB_SECRET_FILE)"


class StoreRecorder:
    """Writes the events of one Orchestrator to `store` (events it has no record for are ignored)."""

    def __init__(self, store: Store):
        self.store = store
        self._handlers: dict[type, Callable] = {
            ev.CampaignCreated: self._created, ev.WarmStartQueued: self._warm_start,
            ev.CampaignStarted: self._started, ev.TrialResumed: self._resumed, ev.TrialProposed: self._proposed,
            ev.TrialApproved: self._approved, ev.CommandSent: self._sent, ev.CommandResent: self._resent,
            ev.Acked: self._acked, ev.ResultReceived: self._result, ev.MeasurementReceived: self._measurement,
            ev.ErrorReceived: self._error, ev.ResultRefused: self._refused, ev.CommandTimedOut: self._timed_out,
            ev.Told: self._told, ev.TrialFailed: self._failed, ev.ManualAttached: self._manual,
            ev.MalformedMessage: self._malformed, ev.WaitingForApproval: self._waiting, ev.Stopped: self._stopped,
            ev.CampaignFailed: self._campaign_failed, ev.Finished: self._finished,
        }

    def __call__(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    # campaign
    def _created(self, e: ev.CampaignCreated) -> None:
        self.store.create_campaign(e.campaign_id, e.campaign.name, e.campaign.model_dump_json())

    def _warm_start(self, e: ev.WarmStartQueued) -> None:
        for row in e.rows:
            self.store.add_manual_request(row)
        self.store.log(e.campaign_id, "warm_start", f"{len(e.rows)} trials of campaign {e.source} queued as prior "
                       f"experiments; {len(e.skipped)} skipped" + "".join(f"\n  {r}" for r in e.skipped))

    def _started(self, e: ev.CampaignStarted) -> None:
        self.store.update_campaign(e.campaign_id, status="running", stop_reason=None)
        self.store.log(e.campaign_id, "lab_messages", AUTHENTICATED if e.authenticated else NOT_AUTHENTICATED)

    def _stopped(self, e: ev.Stopped) -> None:
        self.store.update_campaign(e.campaign_id, status="stopped", stop_reason=e.reason)
        self.store.log(e.campaign_id, "campaign_stopped", e.reason, level="warning")

    def _campaign_failed(self, e: ev.CampaignFailed) -> None:
        self.store.update_campaign(e.campaign_id, status="failed", stop_reason=e.reason)
        self.store.log(e.campaign_id, "campaign_failed", e.reason, level="error")

    def _finished(self, e: ev.Finished) -> None:
        self.store.update_campaign(e.campaign_id, status=e.summary.status, stop_reason=e.summary.stop_reason)

    # trials
    def _resumed(self, e: ev.TrialResumed) -> None:
        self.store.log(e.campaign_id, "trial_resumed", f"trial {e.trial_index} resumed at step {e.step} of {e.n_steps}",
                       trial_index=e.trial_index)

    def _proposed(self, e: ev.TrialProposed) -> None:
        t = e.trial
        self.store.add_trial(e.campaign_id, t.index, e.parameters, t.sample_id, e.strategy_state, status=t.status)
        if e.expected_improvement is not None:
            self.store.log(e.campaign_id, "proposal", f"expected improvement {e.expected_improvement:.3g} (standardised)",
                           trial_index=t.index)

    def _approved(self, e: ev.TrialApproved) -> None:
        self.store.set_trial_status(e.campaign_id, e.trial_index, "running")

    def _told(self, e: ev.Told) -> None:
        m = e.evaluation
        self.store.finish_trial(e.campaign_id, e.trial.index, status="completed", strategy_state=e.strategy_state,
                                objectives={k: list(v) for k, v in m.metrics.items()}, target_met=m.target_met,
                                score=m.score, descriptors=list(e.descriptors), analyses=list(e.analyses))

    def _failed(self, e: ev.TrialFailed) -> None:
        m = e.evaluation
        self.store.finish_trial(e.campaign_id, e.trial.index, status="failed", failure=e.reason,
                                strategy_state=e.strategy_state, descriptors=list(e.descriptors),
                                objectives={k: list(v) for k, v in m.metrics.items()} if m else None)

    def _manual(self, e: ev.ManualAttached) -> None:
        self.store.add_manual_trial(e.request, e.trial.index, e.strategy_state, list(e.descriptors))

    # commands
    def _sent(self, e: ev.CommandSent) -> None:
        self.store.add_command(CommandRow(id=e.command_id, campaign_id=e.campaign_id, trial_index=e.trial_index,
                                          step=e.step, instrument=e.instrument, action=e.action,
                                          params_json=json.dumps(e.params)))

    def _resent(self, e: ev.CommandResent) -> None:
        if e.retry_after_s is not None:
            self.store.log(e.campaign_id, "command_retry",
                           f"no result from {e.instrument} for {e.command_id} within {e.retry_after_s:g} s; "
                           f"re-sending (attempt {e.attempt})", level="warning", trial_index=e.trial_index)
        elif e.reason:
            self.store.log(e.campaign_id, "command_resent", f"re-sent {e.command_id} to {e.instrument}: {e.reason}",
                           trial_index=e.trial_index)
        self.store.update_command(e.command_id, attempts=e.attempt, status="sent")

    def _acked(self, e: ev.Acked) -> None:
        self.store.update_command(e.command_id, status="acked")

    @staticmethod
    def _done(e: ev.ResultReceived) -> dict:
        return {"status": "done", "finished_at": e.at, "duration_s": e.duration_s,
                "reply_json": json.dumps(e.body, default=str)}

    def _result(self, e: ev.ResultReceived) -> None:
        self.store.update_command(e.command_id, **self._done(e))

    def _measurement(self, e: ev.MeasurementReceived) -> None:
        self.store.add_measurement(e.campaign_id, e.trial_index, e.step, e.command_id, e.measurement, self._done(e))

    def _error(self, e: ev.ErrorReceived) -> None:
        self.store.update_command(e.command_id, status="error", reply_json=json.dumps(e.body)[:10_000],
                                  finished_at=e.at)

    def _refused(self, e: ev.ResultRefused) -> None:
        self.store.update_command(e.command_id, status="error", finished_at=e.at,
                                  reply_json=json.dumps({"error": e.error}))

    def _timed_out(self, e: ev.CommandTimedOut) -> None:
        self.store.update_command(e.command_id, status="timeout", finished_at=e.at)

    # messages
    def _malformed(self, e: ev.MalformedMessage) -> None:
        self.store.log(e.campaign_id, "protocol_error", e.error, level="warning")

    def _waiting(self, e: ev.WaitingForApproval) -> None:
        self.store.log(e.campaign_id, "waiting_for_approval", e.text)
