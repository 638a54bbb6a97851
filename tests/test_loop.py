"""The closed loop end to end: campaign -> MQTT drivers -> analysis -> strategy -> store.

Runs against the embedded broker and the real Mosquitto, SQLite and the real PostgreSQL, and
covers the failure paths: malformed MQTT messages, NaNs in a measurement, a driver that never
answers, a driver that goes offline, and kill -9 followed by `sdl resume`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivers.base import Driver
from sdl.config import load_campaign
from sdl.runner import Orchestrator, run_campaign
from sdl.runner.lab import running_lab, simulated_labs
from sdl.protocol import topic
from sdl.store import Store
from sdl.transport import MqttClient

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "campaigns" / "nanoparticle_size.yaml"


def campaign(tmp_path, lab_id="demo", **over):
    d = yaml.safe_load(DEMO.read_text())
    d["store"] = f"sqlite:///{tmp_path}/sdl.db"
    d["lab"]["id"] = lab_id
    d["strategy"].update(kind="sobol", initial_trials=2)
    d["budget"].update(max_experiments=3, stop_on_target=False)
    for dotted, v in over.items():
        node = d
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = v
    return load_campaign(d)


def check_consistent(store: Store, cid: str, n: int) -> None:
    trials = store.trials(cid)
    assert [t.index for t in trials] == list(range(n)), "trials lost or duplicated"
    for t in trials:
        assert t.status in ("completed", "failed"), (t.index, t.status)
        meas = store.measurements(cid, t.index)
        assert len(meas) <= 1
        if t.status == "completed":
            assert len(meas) == 1
            names = {d.name for d in store.descriptors(cid, t.index)}
            assert {"saxs.radius_nm", "saxs.polydispersity", "saxs.model"} <= names
        else:
            assert t.failure


def test_loop_embedded_broker_sqlite(tmp_path):
    c = campaign(tmp_path)
    store = Store(c.store)
    s = run_campaign(c, store=store)
    assert s.status == "finished" and s.n_trials == 3
    check_consistent(store, s.campaign_id, 3)
    cmds = store.commands(s.campaign_id)
    assert {c.step for c in cmds} == {"synthesis", "saxs"}
    # every command id is unique and was answered once
    assert len({c.id for c in cmds}) == len(cmds)


@pytest.mark.integration
def test_loop_mosquitto_postgres(tmp_path, mosquitto_url, postgres_url, lab_id):
    c = campaign(tmp_path, lab_id=lab_id, broker=mosquitto_url, store=postgres_url)
    store = Store(c.store)
    s = run_campaign(c, store=store)
    assert s.status == "finished"
    check_consistent(store, s.campaign_id, 3)


@pytest.mark.slow
def test_bayesian_in_flight_two(tmp_path, embedded_broker):
    """Model-based proposals with two samples in flight (pending trials) complete consistently."""
    c = campaign(tmp_path, **{"strategy.kind": "bayesian", "strategy.max_in_flight": 2,
                              "budget.max_experiments": 5, "broker": embedded_broker.url})
    store = Store(c.store)
    s = run_campaign(c, store=store)
    check_consistent(store, s.campaign_id, 5)
    assert s.n_trials == 5


def test_same_seed_same_decisions(tmp_path, embedded_broker):
    runs = []
    for k in range(2):
        c = campaign(tmp_path / str(k), broker=embedded_broker.url)
        store = Store(c.store)
        s = run_campaign(c, store=store)
        runs.append([(t.parameters, t.score) for t in store.trials(s.campaign_id)])
    assert runs[0] == runs[1]


# ----- failure paths ----------------------------------------------------------------------------------


class NaNSaxs(Driver):
    """A SAXS instrument whose detector returns NaNs in every other measurement."""

    def __init__(self, lab, url):
        super().__init__("saxs", lab, url)
        self.n = 0

    def actions(self):
        return {"measure": self.measure}

    def measure(self, cmd):
        from sdl.measurement import Measurement

        self.n += 1
        q = np.geomspace(0.005, 0.5, 100)
        i = 1e3 / (1 + (q * 80) ** 4)
        if self.n % 2:
            i[10:13] = np.nan
        return {"measurement": Measurement(technique="saxs", arrays={"q_inv_angstrom": q, "intensity": i}).to_wire()}


class SilentSaxs(Driver):
    """Accepts commands and never finishes them."""

    def actions(self):
        return {"measure": lambda cmd: time.sleep(3600)}


def _robot(lab, url):
    """The nanoparticle lab's synthesis robot alone, started."""
    drivers = simulated_labs()["nanoparticles"].load()(lab, url, seed=0, time_scale=0)
    return [d.start() for d in drivers if d.instrument == "robot"]


def test_nan_measurement_fails_trial_clearly(tmp_path, embedded_broker, lab_id):
    c = campaign(tmp_path, lab_id=lab_id, broker=embedded_broker.url, **{"lab.world": None})
    drivers = [*_robot(lab_id, embedded_broker.url), NaNSaxs(lab_id, embedded_broker.url)]
    drivers[-1].start()
    try:
        store = Store(c.store)
        s = Orchestrator(c, store, embedded_broker.url).run()
    finally:
        for d in drivers:
            d.stop()
    trials = store.trials(s.campaign_id)
    assert len(trials) == 3
    nan_failures = [t for t in trials if t.status == "failed" and "non-finite" in (t.failure or "")]
    assert nan_failures, [t.failure for t in trials]
    assert "intensity" in nan_failures[0].failure
    assert len(store.measurements(s.campaign_id)) == 3  # the raw data is kept, even the bad one


def test_driver_that_never_answers(tmp_path, embedded_broker, lab_id):
    c = campaign(tmp_path, lab_id=lab_id, broker=embedded_broker.url, **{"lab.world": None, "budget.max_experiments": 2})
    c.workflow[1].timeout_s = 0.5
    c.workflow[1].retries = 1
    silent = SilentSaxs("saxs", lab_id, embedded_broker.url)
    drivers = [*_robot(lab_id, embedded_broker.url), silent]
    silent.start()
    try:
        store = Store(c.store)
        s = Orchestrator(c, store, embedded_broker.url).run()
    finally:
        for d in drivers:
            d.stop()
    trials = store.trials(s.campaign_id)
    assert [t.status for t in trials] == ["failed", "failed"]
    assert "did not answer measure" in trials[0].failure and "2 attempt(s)" in trials[0].failure
    assert {c.status for c in store.commands(s.campaign_id) if c.step == "saxs"} == {"timeout"}
    assert any(e.kind == "command_retry" for e in store.events(s.campaign_id))


def test_no_driver_online_is_a_clear_error(tmp_path, embedded_broker, lab_id, monkeypatch):
    from sdl.errors import DriverError
    from sdl.runner import loop

    monkeypatch.setattr(loop, "STATUS_WAIT_S", 0.5)
    c = campaign(tmp_path, lab_id=lab_id, broker=embedded_broker.url, **{"lab.world": None})
    with pytest.raises(DriverError, match=r"no driver online for instrument\(s\) \['robot', 'saxs'\]"):
        Orchestrator(c, Store(c.store), embedded_broker.url).run()


def test_malformed_messages_are_logged_and_ignored(tmp_path, embedded_broker, lab_id):
    c = campaign(tmp_path, lab_id=lab_id, broker=embedded_broker.url, **{"lab.world": None})
    with running_lab("nanoparticles", lab_id, embedded_broker.url, seed=0, time_scale=0), \
            MqttClient(embedded_broker.url) as spam:
        store = Store(c.store)
        orch = Orchestrator(c, store, embedded_broker.url)
        # retained, so the orchestrator receives them as soon as it subscribes
        for inst, payload in (("saxs", b"not json"), ("robot", b'{"kind": "result"}'),
                              ("junk", json.dumps({"schema_version": 99, "kind": "ack"}).encode())):
            spam.publish(topic(lab_id, inst, "reply"), payload, qos=1, retain=True, wait=True)
        s = orch.run()
    check_consistent(store, s.campaign_id, 3)
    errors = [e.message for e in store.events(s.campaign_id) if e.kind == "protocol_error"]
    assert any("not JSON" in m for m in errors) and any("schema_version" in m for m in errors)


# ----- crash and resume ---------------------------------------------------------------------------------


def _sdl(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "sdl.cli", *args], cwd=kw.pop("cwd"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_kill9_then_resume_loses_and_repeats_nothing(tmp_path):
    d = yaml.safe_load(DEMO.read_text())
    d["store"] = f"sqlite:///{tmp_path}/sdl.db"
    d["lab"]["time_scale"] = 2e-4  # each synthesis takes ~0.1-3 s of real time
    d["strategy"].update(kind="sobol", initial_trials=2, max_in_flight=2)
    d["budget"].update(max_experiments=8, stop_on_target=False)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(d))
    proc = _sdl("run", str(f), "--quiet", cwd=tmp_path)
    store = Store(d["store"])
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            trials = store.trials(store.find_campaign("nanoparticle_size").id)
        except Exception:
            trials = []
        if sum(t.status != "running" for t in trials) >= 3 and any(t.status == "running" for t in trials):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cid = store.find_campaign("nanoparticle_size").id
    before = {t.index: t for t in store.trials(cid)}
    assert any(t.status == "running" for t in before.values()), "kill came too late to test anything"

    out = subprocess.run([sys.executable, "-m", "sdl.cli", "resume", str(f), "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    after = store.trials(cid)
    check_consistent(store, cid, 8)
    for t in after:  # trials finished before the crash are untouched
        if before.get(t.index) is not None and before[t.index].status != "running":
            assert t.completed_at == before[t.index].completed_at
    # each synthesis was recorded once per trial (a resumed command keeps its id)
    synth = [c for c in store.commands(cid) if c.step == "synthesis"]
    assert len(synth) == len({c.trial_index for c in synth}) == 8
    assert any(e.kind == "trial_resumed" for e in store.events(cid))


# ----- events ------------------------------------------------------------------------------------------


def test_loop_emits_events_in_order_to_the_users_subscribers_after_the_store(tmp_path, embedded_broker):
    """One trial at a time: each event type in the order the loop takes its steps, to a user's
    subscribers (a list, then a checker) after the store recorder has written it."""
    from sdl.runner import events as ev

    c = campaign(tmp_path, broker=embedded_broker.url, **{"strategy.max_in_flight": 1})
    store = Store(c.store)
    seen: list = []
    stored_first: list = []

    def check_stored(e):  # the recorder, subscribed first, has written the event already
        if isinstance(e, ev.TrialProposed):
            stored_first.append(any(t.index == e.trial.index for t in store.trials(e.campaign_id)))
        elif isinstance(e, ev.Told):
            stored_first.append(store.trials(e.campaign_id)[e.trial.index].status == "completed")
        elif isinstance(e, ev.MeasurementReceived):
            stored_first.append(len(store.measurements(e.campaign_id, e.trial_index)) == 1)

    s = run_campaign(c, store=store, subscribers=[seen.append, check_stored])
    per_trial = ["TrialProposed", "CommandSent", "Acked", "ResultReceived", "CommandSent", "Acked",
                 "MeasurementReceived", "Analysed", "Told"]
    assert [type(e).__name__ for e in seen] == ["CampaignCreated", "CampaignStarted", *per_trial * 3, "Finished"]
    assert stored_first == [True] * 9
    assert all(e.campaign_id == s.campaign_id for e in seen)
    told = [e for e in seen if isinstance(e, ev.Told)]
    assert [e.trial.index for e in told] == [0, 1, 2]
    assert [e.trial.parameters for e in told] == [t.parameters for t in store.trials(s.campaign_id)]
    sent = [e for e in seen if isinstance(e, ev.CommandSent)]
    assert [(e.trial_index, e.step, e.instrument) for e in sent[:2]] == [(0, "synthesis", "robot"), (0, "saxs", "saxs")]
    assert {c.id for c in store.commands(s.campaign_id)} == {e.command_id for e in sent}
    assert seen[-1].summary is s and s.n_completed == 3


def test_failures_and_messages_are_events(tmp_path, embedded_broker, lab_id):
    """A camera that never answers: the command is re-sent, times out, the trial fails; a
    malformed message is a warning Message. A subscriber added with Orchestrator.subscribe hears
    them too."""
    from sdl.runner import events as ev

    c = campaign(tmp_path, lab_id=lab_id, broker=embedded_broker.url,
                 **{"lab.world": None, "budget.max_experiments": 1, "strategy.max_in_flight": 1})
    c.workflow[1].timeout_s = 0.5
    c.workflow[1].retries = 1
    silent = SilentSaxs("saxs", lab_id, embedded_broker.url)
    drivers = [*_robot(lab_id, embedded_broker.url), silent.start()]
    seen: list = []
    try:
        with MqttClient(embedded_broker.url) as spam:
            spam.publish(topic(lab_id, "saxs", "reply"), b"not json", qos=1, retain=True, wait=True)
            orch = Orchestrator(c, Store(c.store), embedded_broker.url)
            orch.subscribe(seen.append)
            orch.run()
    finally:
        for d in drivers:
            d.stop()
    kinds = [type(e).__name__ for e in seen]
    assert "CampaignCreated" not in kinds  # emitted while the Orchestrator was made, before subscribe
    assert kinds.index("MalformedMessage") < kinds.index("CampaignStarted")
    bad = next(e for e in seen if isinstance(e, ev.Message))
    assert bad.level == "warning" and bad.text.startswith("ignored malformed message: ") and "not JSON" in bad.error
    resent = next(e for e in seen if isinstance(e, ev.CommandResent))
    assert (resent.step, resent.attempt, resent.retry_after_s) == ("saxs", 2, 0.5)
    after = [k for k in kinds[kinds.index("CommandResent"):] if k != "Acked"]  # the driver acks the re-sent command
    assert after == ["CommandResent", "CommandTimedOut", "TrialFailed", "Finished"]
    failed = seen[-2]
    assert failed.trial.status == "failed" and "did not answer measure" in failed.reason and not failed.infeasible
    assert failed.trial.failure == failed.reason


def test_dispatcher_calls_subscribers_in_order_until_unsubscribed():
    from sdl.runner.events import Dispatcher, Message

    got = []
    d = Dispatcher([lambda e: got.append(("a", e.text))])
    token = d.subscribe(lambda e: got.append(("b", e.text)))
    d(Message(campaign_id="c", level="info", text="one"))
    d.unsubscribe(token)
    d(Message(campaign_id="c", level="info", text="two"))
    assert got == [("a", "one"), ("b", "one"), ("a", "two")]
    with pytest.raises(TypeError, match="callable"):
        d.subscribe("not a function")
