"""The Orchestrator: the loop propose -> make -> measure -> analyse -> tell, a state machine per trial emitting events.

One thread runs the loop; the MQTT network thread only puts replies on a queue. Each instrument
does one command at a time; with `max_in_flight` > 1 the robot makes sample n+1 while sample n is
measured. A command that times out is re-sent with the same id (drivers are idempotent), then the
trial fails with the reason recorded. A synthesis that ran and made nothing usable
(`synthesis_failed`) is an outcome the strategy learns from (it avoids the region); a lab fault
(timeout, driver error) teaches it nothing. An instrument whose driver went offline stops the campaign
with its trial left running, so `sdl resume` finishes that trial instead of losing it.

Pending trials (proposed, not yet told) are Ax trials in state RUNNING, which Ax's generation
accounts for as pending points. With `strategy.require_approval` a proposed trial is stored as
"proposed" and dispatched only once `sdl approve` marks it approved (`sdl reject` fails it with the
reason); manual experiments (`sdl add`) queued in the store are attached to the strategy at the
next step (sdl.runner.operator reads both from the store).

The loop talks to the strategy and the instruments and decides; everything else is a subscriber
of the events it emits (sdl.runner.events): the StoreRecorder, subscribed first, writes each event
to the store before the loop takes its next step, then the console and the user's subscribers
hear of it. The loop keeps its own book of the campaign's trials (sdl.runner.trials), read from the
store once when it starts.

One orchestrator per campaign: the loop holds the campaign's lease in the store (Store.lease) from
before it reads or writes anything of the campaign until run() returns; a second one is refused
(CampaignBusy) before it has touched anything. The lease dies with the process, so a killed
campaign can be resumed at once.

Trusting the lab (docs/security.md): with a lab secret every command is signed and every reply
and status must be (sdl.protocol.Authenticator); command ids end in 96 random bits. A reply counts
only from the driver session that announced itself online for the instrument the command went to,
and an `offline` status only from that session, so another lab instance under the same lab id, or
a stale retained status, neither answers nor stops this campaign. Whatever is not acted on is
dropped with one line saying why (`_drop`).
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections import defaultdict
from typing import Iterable

from sdl.analysis.base import Descriptor, choose
from sdl.analysis.chain import analyse_measurements
from sdl.config import Campaign, Step
from sdl.errors import AnalysisError, ConfigError, DriverError, ProtocolError, SdlError, StrategyError
from sdl.measurement import Measurement
from sdl.outcome import outcome
from sdl.protocol import (
    SECRET_ENV, SECRET_FILE_ENV, AuthError, Authenticator, Envelope, ErrorBody, StatusBody, command, lab_secret,
    new_correlation_id, parse_body, topic,
)
from sdl.runner import start, stop
from sdl.runner import events as ev
from sdl.runner.events import Dispatcher, Event, Subscriber, Summary
from sdl.runner.lab import start_drivers_hint
from sdl.runner.operator import POLL_S, Operator, command_line
from sdl.runner.recorder import StoreRecorder
from sdl.runner.recover import in_flight
from sdl.runner.trials import Active, Book
from sdl.store import Lease, Store
from sdl.strategy import Evaluation, evaluate, make_strategy
from sdl.timeline import timeline
from sdl.transport import MqttClient

STATUS_WAIT_S = 15.0  # how long to wait for each instrument's retained status at start
RECONNECTED = ("", b"")  # put on the inbox by the MQTT client's thread once it has reconnected and re-subscribed

log = logging.getLogger("sdl.runner")
# the loop's messages reach a terminal as events (the console prints them): without logging
# configured, Python's last-resort handler would print each a second time on stderr
log.addHandler(logging.NullHandler())


class Orchestrator:
    """Runs one campaign (new or resumed) against drivers reachable on `broker_url`.

    `subscribers`: callables that receive every event (sdl.runner.events), after the store recorder;
    more can be added with `subscribe` before `run`. A new campaign is created (CampaignCreated)
    when the Orchestrator is made; `campaign_id` resumes a stored one instead. `world_hint`: the
    simulated lab the drivers would come from when the campaign's `lab.world` was cleared to run
    against external drivers (named in the hint to start them). `lease`: the campaign's lease,
    taken by the caller (run_campaign takes it before starting a lab); without one the
    Orchestrator takes it (CampaignBusy if another process runs the campaign). Either way it is
    released when `run` returns, or by `close`. `lab_id`: the lab id the drivers run under (default
    the campaign's `lab.id`; a simulated lab started for the campaign may have one of its own);
    `secret`: the lab secret messages are signed with (default SDL_LAB_SECRET / SDL_LAB_SECRET_FILE;
    neither: unsigned)."""

    def __init__(self, campaign: Campaign, store: Store, broker_url: str, *, campaign_id: str | None = None,
                 subscribers: Iterable[Subscriber] = (), world_hint: str | None = None, lease: Lease | None = None,
                 lab_id: str | None = None, secret: bytes | str | None = None):
        self.campaign = campaign
        self.world_hint = world_hint
        self.store = store
        self.broker_url = broker_url
        self._auth = Authenticator(secret if secret is not None else lab_secret())  # a bad secret: before anything is stored
        self.emit = Dispatcher([StoreRecorder(store), *subscribers])
        self.lab = lab_id or campaign.lab.id
        self._sessions: dict[str, str] = {}  # instrument -> the session of the driver serving it
        self._auth_failed: dict[str, str] = {}  # instrument -> why its last status failed authentication
        self._signed: set[str] = set()  # instruments whose statuses are signed (while this one has no secret)
        self.timings: dict[str, float] = defaultdict(float)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._status: dict[str, StatusBody] = {}
        self._active: dict[int, Active] = {}
        self._busy: dict[str, int] = {}  # instrument -> trial index using it
        self._by_command: dict[str, int] = {}
        self._resent: set[str] = set()  # ids of commands re-sent because they or their replies may have been lost
        self._stop_reason: str | None = None
        self._halt: str | None = None  # set when the campaign must stop now (instrument offline)
        self.book = Book()

        self.lease = lease
        if campaign_id is None:
            self.campaign_id = start.create(campaign, store, self.emit)
            snapshot = None
            try:
                self.lease = self.lease or store.lease(self.campaign_id)
            except BaseException as exc:
                self._mark_failed(exc)  # never leave the new campaign `running`
                raise
        else:
            self.campaign_id = campaign_id
            self.lease = self.lease or store.lease(campaign_id)  # before anything of the campaign is read
            try:
                snapshot = start.snapshot(store, campaign_id)
            except BaseException:
                self.close()
                raise
        self.operator = Operator(store, self.campaign_id)
        t = time.perf_counter()
        try:
            self.strategy = make_strategy(campaign, snapshot)
        except BaseException as exc:
            self._mark_failed(exc)
            self.close()
            raise
        self.timings["strategy_init_s"] = time.perf_counter() - t

    def close(self) -> None:
        """Release the campaign's lease (run() does when it returns); idempotent."""
        if self.lease is not None:
            self.lease.release()

    def subscribe(self, fn: Subscriber) -> int:
        """Add a subscriber (after the others); returns a token for `unsubscribe`."""
        return self.emit.subscribe(fn)

    def unsubscribe(self, token: int) -> None:
        self.emit.unsubscribe(token)

    def _event(self, cls: type[Event], **fields) -> None:
        self.emit(cls(campaign_id=self.campaign_id, **fields))

    def _cli(self, command: str) -> str:
        return command_line(command, self.campaign_id, self.store.url)

    def _mark_failed(self, exc: BaseException) -> None:
        """Record that this run ended on an error (never leave the campaign `running`): status
        `failed`, the reason as stop_reason and an event. `sdl resume` can still continue it."""
        if isinstance(exc, KeyboardInterrupt):
            return
        reason = str(exc) if isinstance(exc, SdlError) else f"{exc.__class__.__name__}: {exc}"
        try:
            self._event(ev.CampaignFailed, reason=reason)
        except Exception:  # the store itself may be what failed; the original error matters more
            pass

    # ----- public ------------------------------------------------------------------------------
    def run(self) -> Summary:
        """Run the loop until the budget, the target or a stop rule ends it. A run that fails
        (no driver online, broker unreachable, a strategy error) marks the campaign `failed` with
        the reason before the error propagates; Ctrl-C marks it `stopped`. A store that fails
        (deleted, read-only, unreachable) stops the run with its StoreError."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> Summary:
        if self.lease is None or not self.lease.held:  # run() called again after it returned
            self.lease = self.store.lease(self.campaign_id)
        try:
            client = MqttClient(self.broker_url, client_id=f"sdl-orchestrator-{uuid.uuid4().hex[:8]}")
            client.connect()
        except BaseException as exc:
            self._mark_failed(exc)
            raise
        self.client = client
        try:
            client.subscribe(topic(self.lab, "+", "reply"), self._on_message)
            client.subscribe(topic(self.lab, "+", "status"), self._on_message)
            client.on_reconnect(lambda: self._inbox.put(RECONNECTED))
            self._wait_for_instruments()
            self.book = Book(self.store.trials(self.campaign_id))
            self._event(ev.CampaignStarted, campaign=self.campaign, done=self.book.n_done(),
                        authenticated=self._auth.enabled)
            if not self._auth.enabled:
                self._event(ev.Message, level="warning", text=(
                    f"lab {self.lab!r}: commands and replies are not authenticated (neither {SECRET_ENV} nor "
                    f"{SECRET_FILE_ENV} is set): any client of {self.broker_url} can command its instruments or "
                    "forge their replies; set a lab secret, and keep foreign clients off the lab's topics with broker "
                    "ACLs (`sdl acl`); see docs/security.md"))
            self._recover()
            started = time.monotonic()
            try:
                self._loop(started)
            finally:
                self.timings["loop_s"] = time.monotonic() - started
        except KeyboardInterrupt:
            self._halt = f"interrupted (Ctrl-C); `{self._cli('resume')}` continues it"
            raise
        except BaseException as exc:
            if not self._halt:
                self._mark_failed(exc)
            raise
        finally:
            if self._halt:
                self._event(ev.Stopped, reason=self._halt)
            client.close()
        reason = self._halt or self._stop_reason or "budget used"
        summary = self.summary(reason, "stopped" if self._halt else "finished")
        self._event(ev.Finished, summary=summary)
        return summary

    def _loop(self, started: float) -> None:
        while not self._halt:
            if not self._stop_reason:
                self._stop_reason = stop.wall_time_used(self.campaign, time.monotonic() - started)
            self._propose()
            self._dispatch()
            if not self._active:
                return
            self._wait_and_handle()

    def summary(self, reason: str, status: str) -> Summary:
        """The campaign so far: its trials (all of them, from every run), outcome, timings of this
        run, and the timeline of every stored command."""
        trials = self.book.rows()
        result = outcome(self.campaign, trials, self.store.descriptors(self.campaign_id))
        tl = timeline(self.store.commands(self.campaign_id))
        return Summary(self.campaign_id, status, reason, len(trials), result.n_completed, result.n_failed,
                       result.best, result.target_met_at, dict(self.timings), tl.clock if tl else "instrument",
                       tl.makespan_s if tl else None, tl.utilisation if tl else {}, result, self.store.url)

    # ----- start-up and resume ---------------------------------------------------------------
    def _wait_for_instruments(self) -> None:
        needed = {i for s in self.campaign.workflow for i in s.pool}
        deadline = time.monotonic() + STATUS_WAIT_S
        while time.monotonic() < deadline:
            self._drain(timeout=0.05)
            if all(self._status.get(i) and self._status[i].state != "offline" for i in needed):
                break
        missing = sorted(i for i in needed if not self._status.get(i) or self._status[i].state == "offline")
        if missing:
            online = sorted(i for i, st in self._status.items() if st.state != "offline")
            failed = {i: why for i, why in self._auth_failed.items() if i in missing}
            refused = (f"; the status of {sorted(failed)} failed authentication ({next(iter(failed.values()))}): do "
                       f"its drivers use this lab's secret ({SECRET_ENV} or {SECRET_FILE_ENV})?") if failed else ""
            raise DriverError(
                f"no driver online for instrument(s) {missing} of lab {self.lab!r} on {self.broker_url} "
                f"(waited {STATUS_WAIT_S:g} s for retained status on {topic(self.lab, '<instrument>', 'status')})"
                f"{refused}; " + start_drivers_hint(self.campaign, self.world_hint, online, self.broker_url)
            )
        signed = sorted(i for i in needed if i in self._signed)
        if signed and not self._auth.enabled:
            raise DriverError(f"the drivers of {signed} of lab {self.lab!r} sign their messages (message "
                              "authentication): they drop unsigned commands. Give this orchestrator the lab's secret "
                              f"({SECRET_ENV} or {SECRET_FILE_ENV})")
        for s in self.campaign.workflow:
            for i in s.pool:
                actions = self._status[i].actions
                if actions and s.action not in actions:
                    raise ConfigError(f"workflow step {s.name!r}: instrument {i!r} has no action {s.action!r} "
                                      f"(it offers {actions})")

    def _recover(self) -> None:
        """Take up the trials an earlier run left in progress (sdl.runner.recover): completed steps
        are not repeated, an in-flight command is re-sent with its id, measured trials are
        analysed again. Then apply what the operator queued meanwhile."""
        n_steps = len(self.campaign.workflow)
        for act in in_flight(self.campaign, self.store, self.campaign_id, self.book.rows()):
            self._active[act.trial.index] = act
            self._event(ev.TrialResumed, trial_index=act.trial.index, step=act.step, n_steps=n_steps)
            if act.step == n_steps:
                self._complete(act)
        self._poll_operator(force=True)

    # ----- the loop ----------------------------------------------------------------------------
    def _propose(self) -> None:
        c = self.campaign
        while not self._stop_reason and not self._halt:
            n_done = self.book.n_experiments()
            used = stop.budget_used(c, n_done)
            if used:
                self._stop_reason = used
                return
            free = c.strategy.max_in_flight - len(self._active)
            if free <= 0:
                return
            n = min(free, c.budget.max_experiments - n_done)
            t = time.perf_counter()
            proposals = self.strategy.ask(n)
            state = self.strategy.snapshot()
            self.timings["strategy_s"] += time.perf_counter() - t
            wait = c.strategy.require_approval
            for index, params in proposals:
                row = self.book.propose(self.campaign_id, index, params, f"{c.name}-{index:04d}",
                                        status="proposed" if wait else "running")
                self._active[index] = Active(trial=row, approved=not wait)
                self._event(ev.TrialProposed, trial=row, parameters=params, strategy_state=state,
                            expected_improvement=self.strategy.expected_improvement(index))
            self._stop_reason = stop.no_improvement_left(c, self.book.rows(), self.strategy.expected_improvement)

    def _dispatch(self) -> None:
        for index in sorted(self._active):
            act = self._active[index]
            if act.step >= len(self.campaign.workflow) or act.deadline or not act.approved:
                continue
            step = self.campaign.workflow[act.step]
            free = [i for i in ([act.instrument] if act.instrument else step.pool) if self._busy.get(i, index) == index]
            if not free:
                continue
            act.instrument = free[0]
            self._send(act, step)

    def _send(self, act: Active, step: Step, retry_after_s: float | None = None, reason: str | None = None) -> None:
        """Send the step's command, or again with the same id (`retry_after_s`: after a timeout;
        `reason`: it may have been lost on the way, not counted as an attempt)."""
        t = act.trial
        params = dict(step.settings) if step.technique else {**t.parameters, **step.settings}
        first = act.command_id is None
        if first:  # readable, and unpredictable: no one can answer a command before seeing it
            act.command_id = new_correlation_id(f"{self.campaign_id}:{t.index}:{step.name}")
        if reason is None:
            act.attempts += 1
        else:
            self._resent.add(act.command_id)
        sent = dict(trial_index=t.index, command_id=act.command_id, step=step.name, instrument=act.instrument,
                    action=step.action, params=params, attempt=act.attempts)
        if first:
            self._event(ev.CommandSent, **sent)
        else:
            self._event(ev.CommandResent, **sent, retry_after_s=retry_after_s, reason=reason)
        act.session = self._sessions.get(act.instrument)
        sample = next((r["sample"] for r in act.results.values() if isinstance(r.get("sample"), dict)), None)
        env = command(step.action, correlation_id=act.command_id, campaign_id=self.campaign_id,
                      sample_id=t.sample_id, params=params, timeout_s=step.timeout_s, sample=sample)
        self._busy[act.instrument] = t.index
        self._by_command[act.command_id] = t.index
        act.sent_at = time.monotonic()
        act.deadline = act.sent_at + step.timeout_s
        where = topic(self.lab, act.instrument, "cmd")
        self.client.publish(where, self._auth.seal(where, env.to_bytes()), qos=1)

    def _wait_and_handle(self) -> None:
        now = time.monotonic()
        next_deadline = min((a.deadline for a in self._active.values() if a.deadline), default=now + 1.0)
        self._drain(timeout=max(0.0, min(next_deadline - now, POLL_S)))
        self._poll_operator()
        now = time.monotonic()
        for act in list(self._active.values()):
            if act.deadline and now > act.deadline:
                self._timed_out(act)

    def _drain(self, timeout: float) -> None:
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _on_message(self, topic_name: str, payload: bytes) -> None:
        self._inbox.put((topic_name, payload))  # network thread: hand over only

    def _handle(self, topic_name: str, payload: bytes) -> None:
        if (topic_name, payload) == RECONNECTED:
            self._reconnected()
            return
        instrument = topic_name.split("/")[-2]
        is_status = topic_name.endswith("/status")
        if is_status and not payload:
            return  # a retained status cleared
        try:
            env = self._auth.open(topic_name, payload)
            if is_status:
                self._on_status(instrument, env, parse_body(StatusBody, env, topic_name), topic_name)
                return
        except AuthError as exc:  # unsigned under a lab secret, forged, stale, replayed
            if is_status:
                self._auth_failed[instrument] = str(exc)
            self._drop(f"ignored message on {topic_name!r} that failed authentication: {exc} (broker ACLs, "
                       "`sdl acl`, keep foreign clients off the lab's topics)", str(exc))
            return
        except ProtocolError as exc:  # too large, not JSON (NaN included), not an envelope
            self._drop(f"ignored malformed message: {exc}", str(exc))
            return
        index = self._by_command.get(env.correlation_id or "")
        act = self._active.get(index) if index is not None else None
        why = self._unmatched(env, instrument, act) or self._other_session(env, instrument)
        if why:
            ours = env.campaign_id in (None, self.campaign_id) or (env.correlation_id or "").startswith(
                self.campaign_id + ":")
            # the second answer to a command re-sent because it may have been lost: expected, at info level
            ours = ours and env.correlation_id not in self._resent
            self._drop(f"ignored {env.kind} on {topic_name!r}: {why}", why, event=ours)
            return
        act.resend = False  # the driver has the command
        step = self.campaign.workflow[act.step]
        reply = dict(trial_index=act.trial.index, command_id=act.command_id, step=step.name, instrument=act.instrument)
        if env.kind == "ack":
            self._event(ev.Acked, **reply)
        elif env.kind == "result":
            self._step_done(act, step, env)
        elif env.kind == "error":
            infeasible = False
            try:
                err = parse_body(ErrorBody, env, topic_name)
                reason = f"{act.instrument} {step.action} failed ({err.code}): {err.message}"
                infeasible = err.code == "synthesis_failed"  # an outcome of the recipe, not of the lab
            except ProtocolError as exc:
                reason = f"{act.instrument} sent a malformed error reply: {exc}"
            self._event(ev.ErrorReceived, **reply, body=env.body, reason=reason, infeasible=infeasible)
            self._release(act)
            self._fail(act, reason, infeasible=infeasible)

    def _unmatched(self, env: Envelope, instrument: str, act: Active | None) -> str | None:
        """Why a well-formed message on a reply topic is not a reply to a command in flight, or None."""
        cid = env.correlation_id
        if env.kind not in ("ack", "result", "error"):
            return f"kind {env.kind!r} is not a reply (ack, result or error)"
        if not cid:
            return "no correlation_id (a reply echoes its command's id)"
        if act is None or cid != act.command_id:
            if cid.startswith(self.campaign_id + ":"):
                return (f"command {cid} is not in flight: answered already (a duplicate, or the answer to a "
                        "re-sent command) or its trial is no longer running")
            if env.campaign_id and env.campaign_id != self.campaign_id:
                return f"command {cid} is campaign {env.campaign_id}'s, not this campaign's"
            return f"command {cid} was not sent by this campaign ({self.campaign_id})"
        if instrument != act.instrument:
            return f"command {cid} went to {act.instrument!r}, not to {instrument!r}"
        return None

    def _on_status(self, instrument: str, env: Envelope, st: StatusBody, topic_name: str) -> None:
        """A status of `instrument`: the session it names serves the instrument from now on (a driver
        restarted, or the earlier of two racing sessions saying again that it serves it), unless it
        is an `offline` of another session than the one online (a stale retained status, another lab
        instance under the same lab id): that is dropped."""
        if not self._auth.enabled and env.auth is not None:
            self._signed.add(instrument)
        self._auth_failed.pop(instrument, None)
        current = self._sessions.get(instrument)
        now_online = self._status.get(instrument) is not None and self._status[instrument].state != "offline"
        if current is not None and env.session != current and now_online:
            who = f"driver session {env.session}" if env.session else "a driver without a session id"
            if st.state == "offline":
                why = (f"'offline' status of {instrument!r} from {who}, not from session {current} that serves it "
                       "(a stale status, or another lab instance under this lab id)")
                self._drop(f"ignored status on {topic_name!r}: {why}", why)
                return
        if env.session:
            self._sessions[instrument] = env.session
        self._status[instrument] = st
        if st.state == "offline":
            self._offline(instrument)
        else:
            self._resend_lost(instrument, env.session)

    def _reconnected(self) -> None:
        """The connection to the broker was lost and is back (a broker restart, a network fault): a
        command in flight, or its reply, may have been lost with it (a broker keeps no message for a
        client that is away). Each command in flight is sent again now (same id: a driver that has it
        acknowledges it again or repeats its stored reply), and at each status of its instrument until
        the driver answers (a driver that reconnects after this one announces itself again)."""
        self._event(ev.Message, level="warning", text=f"reconnected to {self.broker_url}; re-sending the commands in "
                    "flight (same ids: nothing runs twice)")
        for act in self._active.values():
            if act.deadline and act.command_id:
                act.resend = True
                self._send(act, self.campaign.workflow[act.step], reason="reconnected to the broker")

    def _resend_lost(self, instrument: str, session: str | None) -> None:
        """A status of `instrument` that is not offline: re-send its command in flight when the command
        may not have reached this driver session (sent to another session, e.g. one that died, or
        before it came online; or the connection was lost since: `_reconnected`)."""
        for act in self._active.values():
            if not (act.deadline and act.command_id and act.instrument == instrument):
                continue
            if act.resend:
                self._send(act, self.campaign.workflow[act.step], reason="re-sent after a reconnect")
            elif session is not None and session != act.session:
                self._send(act, self.campaign.workflow[act.step],
                           reason=f"driver session {session} serves {instrument!r} now, not the one it was sent to")

    def _other_session(self, env: Envelope, instrument: str) -> str | None:
        """Why a reply is not from the driver session serving `instrument`, or None."""
        current = self._sessions.get(instrument)
        if current is None or env.session == current:
            return None
        who = f"driver session {env.session}" if env.session else "a driver without a session id"
        return (f"command {env.correlation_id} answered by {who}, not by session {current} that serves "
                f"{instrument!r} (another lab instance under lab id {self.lab!r}?)")

    def _drop(self, text: str, why: str, event: bool = True) -> None:
        """A message the loop does not act on: one line saying why, to the log (warning) and, for
        this campaign's messages, to the store's event log (MalformedMessage); another campaign's
        replies on a shared lab are logged at info level only."""
        log.log(logging.WARNING if event else logging.INFO, "campaign %s: %s", self.campaign_id, text)
        if event:
            self._event(ev.MalformedMessage, level="warning", text=text, error=why)

    def _step_done(self, act: Active, step: Step, env: Envelope) -> None:
        body = dict(env.body)
        self.timings["instrument_wall_s"] += time.monotonic() - act.sent_at
        duration = body.get("duration_s")
        reply = dict(trial_index=act.trial.index, command_id=act.command_id, step=step.name, instrument=act.instrument)
        done = dict(duration_s=float(duration) if isinstance(duration, (int, float)) else None)
        if step.technique:
            try:
                m = Measurement.from_wire(body.get("measurement") or {})
                if m.technique != step.technique:
                    raise ProtocolError(f"step {step.name!r} expects technique {step.technique!r}, got {m.technique!r}")
            except ProtocolError as exc:
                self._event(ev.ResultRefused, **reply, error=str(exc))
                self._release(act)
                self._fail(act, f"{act.instrument} returned an invalid measurement: {exc}")
                return
            body.pop("measurement")
            self._event(ev.MeasurementReceived, **reply, **done, body=body, measurement=m)
            act.measurements[step.name] = m
        else:
            self._event(ev.ResultReceived, **reply, **done, body=body)
        act.results[step.name] = body
        self._release(act)
        act.step += 1
        act.command_id, act.deadline, act.attempts, act.instrument, act.session = None, 0.0, 0, None, None
        if act.step == len(self.campaign.workflow):
            self._complete(act)

    def _release(self, act: Active) -> None:
        if act.instrument and self._busy.get(act.instrument) == act.trial.index:
            del self._busy[act.instrument]
        self._by_command.pop(act.command_id or "", None)

    def _timed_out(self, act: Active) -> None:
        step = self.campaign.workflow[act.step]
        status = self._status.get(act.instrument)
        if status is None or status.state == "offline":
            self._offline(act.instrument)
            return
        if act.attempts <= step.retries:
            self._send(act, step, retry_after_s=step.timeout_s)
            return
        self._event(ev.CommandTimedOut, trial_index=act.trial.index, command_id=act.command_id,
                    instrument=act.instrument)
        self._release(act)
        self._fail(act, f"instrument {act.instrument!r} did not answer {step.action} (command {act.command_id}) "
                        f"within {step.timeout_s:g} s after {act.attempts} attempt(s)")

    def _offline(self, instrument: str) -> None:
        users = [a for a in self._active.values() if a.deadline and a.instrument == instrument]
        if not users:
            return
        indices = tuple(a.trial.index for a in users)
        self._halt = (f"instrument {instrument!r} went offline (driver's last will) with trial(s) "
                      f"{list(indices)} in progress; restart its driver and run `{self._cli('resume')}`")
        self._event(ev.InstrumentOffline, level="error", text=self._halt, instrument=instrument, trial_indices=indices)

    # ----- the operator: approvals and manual experiments -----------------------------------
    def _poll_operator(self, force: bool = False) -> None:
        """Every POLL_S: attach queued manual experiments and apply approvals and rejections."""
        if not self.operator.due(force):
            return
        for manual in self.operator.manual_experiments():
            index = self.strategy.attach(manual.parameters, manual.objectives)
            row = self.book.attach(manual.request, index)
            self._event(ev.ManualAttached, level="info", text=f"manual experiment attached as trial {index}",
                        trial=row, request=manual.request, descriptors=manual.descriptors,
                        strategy_state=self.strategy.snapshot())
        waiting = [a.trial.index for a in self._active.values() if not a.approved]
        if not waiting:
            return
        for review in self.operator.reviews(waiting):
            act = self._active[review.index]
            if review.approved:
                self.book.set_status(review.index, "running")
                self._event(ev.TrialApproved, trial_index=review.index)
                act.approved = True
            else:
                self._fail(act, review.reason)
        text = self.operator.waiting_notice(a.trial.index for a in self._active.values() if not a.approved)
        if text:
            self._event(ev.WaitingForApproval, level="info", text=text,
                        trial_indices=tuple(sorted(a.trial.index for a in self._active.values() if not a.approved)))

    # ----- analysis and learning -------------------------------------------------------------
    def _complete(self, act: Active) -> None:
        index = act.trial.index
        t0 = time.perf_counter()
        descriptors: list[Descriptor] = []
        try:
            for step in self.campaign.measuring_steps():
                act.measurements[step.name].metadata.setdefault("source", f"trial {index} step {step.name}")
            descriptors, analyses = analyse_measurements(self.campaign, act.measurements)
            evaluation = evaluate(self.campaign, list(choose(descriptors).values()))
        except (AnalysisError, SdlError) as exc:
            self.timings["analysis_s"] += time.perf_counter() - t0
            self._fail(act, f"analysis failed: {exc}", descriptors=descriptors)
            return
        self.timings["analysis_s"] += time.perf_counter() - t0
        self._event(ev.Analysed, trial_index=index, descriptors=tuple(descriptors), analyses=tuple(analyses),
                    evaluation=evaluation)
        if evaluation.untrusted:
            self._fail(act, f"analysers flagged {evaluation.untrusted} as untrustworthy (out of distribution or "
                            "failed fit); not told to the strategy", descriptors=descriptors, evaluation=evaluation)
            return
        t1 = time.perf_counter()
        try:
            self.strategy.tell(index, evaluation.metrics)
        except Exception as exc:  # Ax raises many kinds
            raise StrategyError(f"strategy rejected the outcome of trial {index}: {exc}") from exc
        state = self.strategy.snapshot()
        self.timings["strategy_s"] += time.perf_counter() - t1
        row = self.book.finish(index, status="completed", objectives={k: list(v) for k, v in evaluation.metrics.items()},
                               target_met=evaluation.target_met, score=evaluation.score)
        self._active.pop(index, None)
        self._event(ev.Told, trial=row, evaluation=evaluation, descriptors=tuple(descriptors),
                    analyses=tuple(analyses), strategy_state=state)
        if not self._stop_reason:
            self._stop_reason = stop.target_met(self.campaign, index, evaluation.target_met)

    def _fail(self, act: Active, reason: str, descriptors: list[Descriptor] | None = None,
              evaluation: Evaluation | None = None, infeasible: bool = False) -> None:
        index = act.trial.index
        self.strategy.fail(index, reason, infeasible=infeasible)
        state = self.strategy.snapshot()
        row = self.book.finish(index, status="failed", failure=reason,
                               objectives={k: list(v) for k, v in evaluation.metrics.items()} if evaluation else None)
        self._active.pop(index, None)
        self._event(ev.TrialFailed, trial=row, reason=reason, infeasible=infeasible, evaluation=evaluation,
                    descriptors=tuple(descriptors or ()), strategy_state=state)
