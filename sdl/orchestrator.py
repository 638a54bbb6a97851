"""The closed loop: propose -> synthesise -> measure -> analyse -> tell, with the store written
before every next step.

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
next step. The loop polls the store for both, so the store stays the one source of truth.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from sdl.analysis.base import Descriptor, choose
from sdl.analysis.chain import analyse_measurements
from sdl.config import Campaign, Step
from sdl.errors import AnalysisError, ConfigError, DriverError, ProtocolError, SdlError, StrategyError
from sdl.measurement import Measurement
from sdl.outcome import Outcome, outcome
from sdl.protocol import Envelope, ErrorBody, StatusBody, command, parse_body, topic
from sdl.store import CommandRow, Store, TrialRow, store_option, unpack_arrays
from sdl.strategy import Evaluation, evaluate, make_strategy
from sdl.strategy.objectives import feasible
from sdl.timeline import timeline
from sdl.transport import MqttClient

STATUS_WAIT_S = 15.0  # how long to wait for each instrument's retained status at start
POLL_S = 0.5  # how often the store is read for approvals and manual experiments (s)


class Reporter(Protocol):
    """What a user interface hears from the loop (the CLI prints; tests collect)."""

    def started(self, campaign_id: str, campaign: Campaign, done: int) -> None: ...

    def trial_finished(self, trial: TrialRow, evaluation: Evaluation | None, descriptors: list[Descriptor]) -> None: ...

    def message(self, level: str, text: str) -> None: ...

    def finished(self, summary: "Summary") -> None: ...


class NullReporter:
    def started(self, *a: Any) -> None: ...

    def trial_finished(self, *a: Any) -> None: ...

    def message(self, *a: Any) -> None: ...

    def finished(self, *a: Any) -> None: ...


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


@dataclass
class _Active:
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


def new_campaign_id(name: str) -> str:
    return f"{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


class Orchestrator:
    """Runs one campaign (new or resumed) against drivers reachable on `broker_url`."""

    def __init__(self, campaign: Campaign, store: Store, broker_url: str, *, campaign_id: str | None = None,
                 reporter: Reporter | None = None, world_hint: str | None = None):
        """`world_hint`: the simulated lab the drivers would come from when the campaign's
        `lab.world` was cleared to run against external drivers (named in the hint to start them)."""
        self.campaign = campaign
        self.world_hint = world_hint
        self.store = store
        self.broker_url = broker_url
        self.reporter = reporter or NullReporter()
        self.lab = campaign.lab.id
        self.timings: dict[str, float] = defaultdict(float)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._status: dict[str, StatusBody] = {}
        self._active: dict[int, _Active] = {}
        self._busy: dict[str, int] = {}  # instrument -> trial index using it
        self._by_command: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._halt: str | None = None  # set when the campaign must stop now (instrument offline)
        self._polled = 0.0  # monotonic time of the last store poll
        self._waiting_shown: tuple[int, ...] = ()

        if campaign_id is None:
            from sdl.manual import warm_start

            prior, skipped = warm_start(store, campaign)  # before creating: an unknown source stores nothing
            self.campaign_id = new_campaign_id(campaign.name)
            self.store.create_campaign(self.campaign_id, campaign.name, campaign.model_dump_json())
            snapshot = None
            for row in prior:
                row.campaign_id = self.campaign_id
                store.add_manual_request(row)
            if campaign.strategy.warm_start:
                store.log(self.campaign_id, "warm_start", f"{len(prior)} trials of campaign "
                          f"{campaign.strategy.warm_start.campaign} queued as prior experiments; {len(skipped)} "
                          "skipped" + "".join(f"\n  {r}" for r in skipped))
        else:
            self.campaign_id = campaign_id
            snapshot = self.store.find_campaign(campaign_id).strategy_state
        t = time.perf_counter()
        try:
            self.strategy = make_strategy(campaign, snapshot)
        except BaseException as exc:
            self._mark_failed(exc)
            raise
        self.timings["strategy_init_s"] = time.perf_counter() - t

    def _cli(self, command: str) -> str:
        """A `sdl ...` command line for this campaign, with the --store it needs."""
        return f"sdl {command} {self.campaign_id}{store_option(self.store.url)}"

    def _mark_failed(self, exc: BaseException) -> None:
        """Record that this run ended on an error (never leave the campaign `running`): status
        `failed`, the reason as stop_reason and an event. `sdl resume` can still continue it."""
        if isinstance(exc, KeyboardInterrupt):
            return
        reason = str(exc) if isinstance(exc, SdlError) else f"{exc.__class__.__name__}: {exc}"
        try:
            self.store.update_campaign(self.campaign_id, status="failed", stop_reason=reason)
            self.store.log(self.campaign_id, "campaign_failed", reason, level="error")
        except Exception:  # the store itself may be what failed; the original error matters more
            pass

    # ----- public ------------------------------------------------------------------------------
    def run(self) -> Summary:
        """Run the loop until the budget, the target or a stop rule ends it. A run that fails
        (no driver online, broker unreachable, a strategy error) marks the campaign `failed` with
        the reason before the error propagates; Ctrl-C marks it `stopped`."""
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
            self._wait_for_instruments()
            self.store.update_campaign(self.campaign_id, status="running", stop_reason=None)
            done = sum(t.status in ("completed", "failed") for t in self.store.trials(self.campaign_id))
            self.reporter.started(self.campaign_id, self.campaign, done)
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
                self.store.update_campaign(self.campaign_id, status="stopped", stop_reason=self._halt)
                self.store.log(self.campaign_id, "campaign_stopped", self._halt, level="warning")
            client.close()
        reason = self._stop_reason or "budget used"
        self.store.update_campaign(self.campaign_id, status="finished" if not self._halt else "stopped",
                                   stop_reason=self._halt or reason)
        summary = self.summary(self._halt or reason)
        self.reporter.finished(summary)
        return summary

    def _loop(self, started: float) -> None:
        while not self._halt:
            wall = self.campaign.budget.max_wall_time_s
            if wall and time.monotonic() - started > wall and not self._stop_reason:
                self._stop_reason = f"wall time budget of {wall:g} s used"
            self._propose()
            self._dispatch()
            if not self._active:
                return
            self._wait_and_handle()

    def summary(self, reason: str) -> Summary:
        trials = self.store.trials(self.campaign_id)
        result = outcome(self.campaign, trials, self.store.descriptors(self.campaign_id))
        status = self.store.find_campaign(self.campaign_id).status
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
            raise DriverError(
                f"no driver online for instrument(s) {missing} of lab {self.lab!r} on {self.broker_url} "
                f"(waited {STATUS_WAIT_S:g} s for retained status on {topic(self.lab, '<instrument>', 'status')}); "
                + self._start_drivers_hint()
            )
        for s in self.campaign.workflow:
            for i in s.pool:
                actions = self._status[i].actions
                if actions and s.action not in actions:
                    raise ConfigError(f"workflow step {s.name!r}: instrument {i!r} has no action {s.action!r} "
                                      f"(it offers {actions})")

    def _start_drivers_hint(self) -> str:
        """What to do about instruments without a driver, in commands the user can paste."""
        online = sorted(i for i, st in self._status.items() if st.state != "offline")
        if self.campaign.lab.world:  # sdl started that simulated lab here: it lacks the instrument
            return (f"the simulated lab {self.campaign.lab.world!r} started in this process runs {online or 'none'}; "
                    "check the workflow's instrument names")
        world = self.world_hint
        if world is None:
            from importlib.metadata import entry_points

            labs = sorted(ep.name for ep in entry_points(group="sdl.labs"))
            world = "<" + "|".join(labs) + ">" if labs else "<lab>"
            what = "start the lab's drivers on that broker; for a simulated lab"
        else:
            what = "start them"
        return f"{what}: `sdl drivers start --lab {world} --id {self.lab} --broker {self.broker_url}`"

    def _recover(self) -> None:
        """Rebuild in-flight trials from the store (resume): completed steps are not repeated,
        an in-flight command is re-sent with its id, measured trials are analysed again."""
        for t in self.store.trials(self.campaign_id):
            if t.status in ("completed", "failed"):
                continue
            act = _Active(trial=t, approved=t.status not in ("proposed", "rejected"))
            cmds = {c.step: c for c in self.store.commands(self.campaign_id, t.index)}
            stored = {m.step: m for m in self.store.measurements(self.campaign_id, t.index)}
            for i, step in enumerate(self.campaign.workflow):
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
            self._active[t.index] = act
            self.store.log(self.campaign_id, "trial_resumed",
                           f"trial {t.index} resumed at step {act.step} of {len(self.campaign.workflow)}",
                           trial_index=t.index)
            if act.step == len(self.campaign.workflow):
                self._complete(act)
        self._poll_store(force=True)

    # ----- the loop ----------------------------------------------------------------------------
    def _n_trials(self) -> int:
        """Experiments that count against the budget (manual ones do not)."""
        return sum(not t.manual for t in self.store.trials(self.campaign_id))

    def _propose(self) -> None:
        c = self.campaign
        while not self._stop_reason and not self._halt:
            n_done = self._n_trials()
            if n_done >= c.budget.max_experiments:
                self._stop_reason = f"budget of {c.budget.max_experiments} experiments used"
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
                sample_id = f"{c.name}-{index:04d}"
                row = self.store.add_trial(self.campaign_id, index, params, sample_id, state,
                                           status="proposed" if wait else "running")
                self._active[index] = _Active(trial=row, approved=not wait)
                ei = self.strategy.expected_improvement(index)
                if ei is not None:
                    self.store.log(self.campaign_id, "proposal", f"expected improvement {ei:.3g} (standardised)",
                                   trial_index=index)
            if self._no_improvement_left():
                self._stop_reason = (f"no expected improvement left: the last {c.budget.patience} proposals each "
                                     f"expected less than {c.budget.min_expected_improvement:g} (standardised units)")

    def _no_improvement_left(self) -> bool:
        """The stop rule `budget.min_expected_improvement`, read from the strategy's own record of
        each proposal (so it holds across a resume). Only proposals made after a trial met every
        constraint count: before that the expected improvement is weighted by a small probability
        of feasibility and says the model has not found the feasible region, not that nothing is
        left to gain. Manual and start-design trials do not count."""
        b = self.campaign.budget
        if b.min_expected_improvement is None:
            return False
        trials = self.store.trials(self.campaign_id)
        first = next((t.index for t in trials if t.status == "completed" and feasible(self.campaign, t.objectives)), None)
        if first is None:
            return False
        seen = [self.strategy.expected_improvement(t.index) for t in trials if t.index > first]
        last = [e for e in seen if e is not None][-b.patience:]
        return len(last) == b.patience and all(e < b.min_expected_improvement for e in last)

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

    def _send(self, act: _Active, step: Step) -> None:
        t = act.trial
        params = dict(step.settings) if step.technique else {**t.parameters, **step.settings}
        first = act.command_id is None
        if first:
            act.command_id = f"{self.campaign_id}:{t.index}:{step.name}"
        act.attempts += 1
        if first:
            self.store.add_command(CommandRow(id=act.command_id, campaign_id=self.campaign_id, trial_index=t.index,
                                              step=step.name, instrument=act.instrument, action=step.action,
                                              params_json=json.dumps(params)))
        else:
            self.store.update_command(act.command_id, attempts=act.attempts, status="sent")
        sample = next((r["sample"] for r in act.results.values() if isinstance(r.get("sample"), dict)), None)
        env = command(step.action, correlation_id=act.command_id, campaign_id=self.campaign_id,
                      sample_id=t.sample_id, params=params, timeout_s=step.timeout_s, sample=sample)
        self._busy[act.instrument] = t.index
        self._by_command[act.command_id] = t.index
        act.sent_at = time.monotonic()
        act.deadline = act.sent_at + step.timeout_s
        self.client.publish(topic(self.lab, act.instrument, "cmd"), env.to_bytes(), qos=1)

    def _wait_and_handle(self) -> None:
        now = time.monotonic()
        next_deadline = min((a.deadline for a in self._active.values() if a.deadline), default=now + 1.0)
        self._drain(timeout=max(0.0, min(next_deadline - now, POLL_S)))
        self._poll_store()
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
        instrument = topic_name.split("/")[-2]
        try:
            env = Envelope.from_bytes(payload, topic_name)
            if topic_name.endswith("/status"):
                self._status[instrument] = parse_body(StatusBody, env, topic_name)
                if self._status[instrument].state == "offline":
                    self._offline(instrument)
                return
        except ProtocolError as exc:
            if hasattr(self, "campaign_id"):
                self.store.log(self.campaign_id, "protocol_error", str(exc), level="warning")
            self.reporter.message("warning", f"ignored malformed message: {exc}")
            return
        index = self._by_command.get(env.correlation_id or "")
        act = self._active.get(index) if index is not None else None
        if act is None or env.correlation_id != act.command_id:
            return  # a duplicate (QoS 1) or a reply to another campaign's command
        step = self.campaign.workflow[act.step]
        if env.kind == "ack":
            self.store.update_command(act.command_id, status="acked")
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
            self.store.update_command(act.command_id, status="error", reply_json=json.dumps(env.body)[:10_000],
                                      finished_at=datetime.now(timezone.utc))
            self._release(act)
            self._fail(act, reason, infeasible=infeasible)

    def _step_done(self, act: _Active, step: Step, env: Envelope) -> None:
        body = dict(env.body)
        self.timings["instrument_wall_s"] += time.monotonic() - act.sent_at
        duration = body.get("duration_s")
        done = {"status": "done", "finished_at": datetime.now(timezone.utc),
                "duration_s": float(duration) if isinstance(duration, (int, float)) else None}
        if step.technique:
            try:
                m = Measurement.from_wire(body.get("measurement") or {})
                if m.technique != step.technique:
                    raise ProtocolError(f"step {step.name!r} expects technique {step.technique!r}, got {m.technique!r}")
            except ProtocolError as exc:
                self.store.update_command(act.command_id, status="error", finished_at=done["finished_at"],
                                          reply_json=json.dumps({"error": str(exc)}))
                self._release(act)
                self._fail(act, f"{act.instrument} returned an invalid measurement: {exc}")
                return
            body.pop("measurement")
            done["reply_json"] = json.dumps(body, default=str)
            self.store.add_measurement(self.campaign_id, act.trial.index, step.name, act.command_id, m, done)
            act.measurements[step.name] = m
        else:
            done["reply_json"] = json.dumps(body, default=str)
            self.store.update_command(act.command_id, **done)
        act.results[step.name] = body
        self._release(act)
        act.step += 1
        act.command_id, act.deadline, act.attempts, act.instrument = None, 0.0, 0, None
        if act.step == len(self.campaign.workflow):
            self._complete(act)

    def _release(self, act: _Active) -> None:
        if act.instrument and self._busy.get(act.instrument) == act.trial.index:
            del self._busy[act.instrument]
        self._by_command.pop(act.command_id or "", None)

    def _timed_out(self, act: _Active) -> None:
        step = self.campaign.workflow[act.step]
        status = self._status.get(act.instrument)
        if status is None or status.state == "offline":
            self._offline(act.instrument)
            return
        if act.attempts <= step.retries:
            self.store.log(self.campaign_id, "command_retry",
                           f"no result from {act.instrument} for {act.command_id} within {step.timeout_s:g} s; "
                           f"re-sending (attempt {act.attempts + 1})", level="warning", trial_index=act.trial.index)
            self._send(act, step)
            return
        self.store.update_command(act.command_id, status="timeout", finished_at=datetime.now(timezone.utc))
        self._release(act)
        self._fail(act, f"instrument {act.instrument!r} did not answer {step.action} (command {act.command_id}) "
                        f"within {step.timeout_s:g} s after {act.attempts} attempt(s)")

    def _offline(self, instrument: str) -> None:
        users = [a for a in self._active.values() if a.deadline and a.instrument == instrument]
        if not users:
            return
        self._halt = (f"instrument {instrument!r} went offline (driver's last will) with trial(s) "
                      f"{[a.trial.index for a in users]} in progress; restart its driver and run "
                      f"`{self._cli('resume')}`")
        self.reporter.message("error", self._halt)

    # ----- the operator: approvals and manual experiments -----------------------------------
    def _poll_store(self, force: bool = False) -> None:
        """Every POLL_S: apply approvals/rejections and attach queued manual experiments."""
        now = time.monotonic()
        if not force and now - self._polled < POLL_S:
            return
        self._polled = now
        from sdl.manual import apply_pending

        for index in apply_pending(self.store, self.campaign_id, self.strategy):
            self.reporter.message("info", f"manual experiment attached as trial {index}")
        waiting = [a for a in self._active.values() if not a.approved]
        if not waiting:
            return
        rows = {t.index: t for t in self.store.trials(self.campaign_id)}
        for act in waiting:
            row = rows[act.trial.index]
            if row.status == "approved":
                self.store.set_trial_status(self.campaign_id, row.index, "running")
                act.approved = True
            elif row.status == "rejected":
                self._fail(act, row.failure or "rejected by the operator")
        self._show_waiting()

    def _show_waiting(self) -> None:
        ids = tuple(sorted(a.trial.index for a in self._active.values() if not a.approved))
        if ids and ids != self._waiting_shown:
            text = (f"waiting for approval of trial(s) {list(ids)}: `{self._cli('approve')} [TRIAL ...]` "
                    f"or `{self._cli('reject')} TRIAL --reason TEXT`")
            self.reporter.message("info", text)
            self.store.log(self.campaign_id, "waiting_for_approval", text)
        self._waiting_shown = ids

    # ----- analysis and learning -------------------------------------------------------------
    def _complete(self, act: _Active) -> None:
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
        self.store.finish_trial(self.campaign_id, index, status="completed", strategy_state=state,
                                objectives={k: list(v) for k, v in evaluation.metrics.items()},
                                target_met=evaluation.target_met, score=evaluation.score,
                                descriptors=descriptors, analyses=analyses)
        self._finished(act, evaluation, descriptors)
        if evaluation.target_met and self.campaign.budget.stop_on_target and not self._stop_reason:
            self._stop_reason = f"target met by trial {index}"

    def _fail(self, act: _Active, reason: str, descriptors: list[Descriptor] | None = None,
              evaluation: Evaluation | None = None, infeasible: bool = False) -> None:
        index = act.trial.index
        self.strategy.fail(index, reason, infeasible=infeasible)
        self.store.finish_trial(self.campaign_id, index, status="failed", failure=reason,
                                strategy_state=self.strategy.snapshot(), descriptors=descriptors,
                                objectives={k: list(v) for k, v in evaluation.metrics.items()} if evaluation else None)
        self._finished(act, evaluation, descriptors or [])

    def _finished(self, act: _Active, evaluation: Evaluation | None, descriptors: list[Descriptor]) -> None:
        self._active.pop(act.trial.index, None)
        trial = next(t for t in self.store.trials(self.campaign_id) if t.index == act.trial.index)
        self.reporter.trial_finished(trial, evaluation, descriptors)


# ----- running a campaign with its lab ----------------------------------------------------------


def start_simulated_lab(world: str, lab: str, broker_url: str, *, seed: int, time_scale: float) -> list:
    """Start the drivers of a simulated lab (entry-point group `sdl.labs`) in this process."""
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="sdl.labs")}
    if world not in eps:
        raise ConfigError(f"lab.world {world!r} is not a known simulated lab; known: {sorted(eps)}")
    drivers = eps[world].load()(lab, broker_url, seed=seed, time_scale=time_scale)
    for d in drivers:
        d.start()
    return drivers


def run_campaign(campaign: Campaign, *, store: Store, campaign_id: str | None = None,
                 reporter: Reporter | None = None, world_hint: str | None = None) -> Summary:
    """Run (or resume) a campaign: start the embedded broker and the simulated lab if the campaign
    asks for them, run the loop, and stop what was started. `world_hint`: see Orchestrator."""
    from sdl.transport import EmbeddedBroker

    broker = None
    drivers: list = []
    try:
        if campaign.broker:
            broker_url = campaign.broker
        else:
            broker = EmbeddedBroker()
            broker_url = broker.start()
        if campaign.lab.world:
            seed = campaign.lab.seed if campaign.lab.seed is not None else campaign.strategy.seed
            drivers = start_simulated_lab(campaign.lab.world, campaign.lab.id, broker_url, seed=seed,
                                          time_scale=campaign.lab.time_scale)
        orch = Orchestrator(campaign, store, broker_url, campaign_id=campaign_id, reporter=reporter,
                            world_hint=world_hint)
        return orch.run()
    finally:
        for d in drivers:
            d.stop()
        if broker is not None:
            broker.stop()
