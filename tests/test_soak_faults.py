"""What the soak benchmark (benchmarks/soak.py) found, kept as tests: a reply lost when the broker
restarts, and a command sent while the instrument's driver was down, are re-sent (same id)
when the connection or the driver is back, instead of failing the trial after its timeout.

Both run the demo campaign (Sobol, least-squares analysis: quick) against the simulated lab in this
process, on an embedded broker of the test's own that the test restarts."""

from __future__ import annotations

import socket
import threading

import pytest

import drivers.base as base
from sdl.config import load_campaign
from sdl.runner import run_campaign
from sdl.runner import events as ev
from sdl.store import Store
from sdl.transport import EmbeddedBroker

TIMEOUT_S = 40.0  # a step's timeout: a lost message not re-sent would fail its trial after this long


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _campaign(tmp_path, url: str, budget: int):
    from pathlib import Path

    c = load_campaign(Path(__file__).parents[1] / "campaigns" / "nanoparticle_size.yaml",
                      store=f"sqlite:///{tmp_path}/s.db", broker=url, **{
                          "lab.id": f"soak-{tmp_path.name[-12:]}".replace("_", "-"), "strategy.kind": "sobol",
                          "strategy.initial_trials": 2, "budget.max_experiments": budget,
                          "budget.stop_on_target": False})
    workflow = [s.model_copy(update={"timeout_s": TIMEOUT_S}) for s in c.workflow]
    return c.model_copy(update={"workflow": workflow, "analysis": {"saxs": ["saxs_fit"]}})


class Brokers:
    """An embedded broker on a fixed port that can be restarted (a new one on the same port)."""

    def __init__(self):
        self.port = _free_port()
        self.broker = EmbeddedBroker(port=self.port)
        self.url = self.broker.start()

    def restart(self) -> None:
        self.broker.stop()
        self.broker = EmbeddedBroker(port=self.port)
        self.broker.start()

    def stop(self) -> None:
        self.broker.stop()


def _check(store: Store, budget: int) -> str:
    cid = store.find_campaign("nanoparticle_size").id
    trials = store.trials(cid)
    assert [t.index for t in trials] == list(range(budget))
    assert all(t.status in ("completed", "failed") for t in trials)
    assert not any("did not answer" in (t.failure or "") for t in trials), [t.failure for t in trials]
    commands = store.commands(cid)
    assert all(c.status == "done" for c in commands), [(c.step, c.status) for c in commands]
    assert sorted((c.trial_index, c.step) for c in commands) == sorted(
        (i, s) for i in range(budget) for s in ("synthesis", "saxs"))  # each step commanded once
    return cid


@pytest.mark.slow
def test_lost_commands_and_replies_are_sent_again_when_the_broker_or_the_driver_is_back(tmp_path, monkeypatch):
    """Trial 0: the robot's result is published into a broker that dies with it (restarted at once).
    Then the robot's driver goes away while idle (its last will is seen with nothing in flight on
    it: the campaign goes on), trial 1's synthesis goes out to nobody, and the driver comes back as
    a new session. Both commands are sent again (same ids) and answered, instead of failing their
    trials after TIMEOUT_S; the campaign runs as without faults."""
    brokers = Brokers()
    send, start = base.Driver._send, base.Driver.start
    lost: list[str] = []
    robots: list[base.Driver] = []

    def lossy(self, env):
        if self.instrument == "robot" and env.kind == "result" and not lost:
            lost.append(env.correlation_id)
            threading.Thread(target=brokers.restart, daemon=True).start()
            return
        send(self, env)

    def remember(self):
        if self.instrument == "robot" and self not in robots:
            robots.append(self)
        return start(self)

    def on_event(e) -> None:
        if type(e) is not ev.CommandSent:  # first sends only (CommandResent is a CommandSent)
            return
        if e.trial_index == 0 and e.step == "saxs":  # the robot is idle while the SAXS camera measures
            robots[0].stop()
        elif e.trial_index == 1 and e.step == "synthesis":  # this command goes out to nobody
            threading.Timer(0.5, robots[0].start).start()  # the driver back, as a new session

    monkeypatch.setattr(base.Driver, "_send", lossy)
    monkeypatch.setattr(base.Driver, "start", remember)
    seen: list[ev.Event] = []
    try:
        store = Store(f"sqlite:///{tmp_path}/s.db")
        run_campaign(_campaign(tmp_path, brokers.url, budget=2), store=store, subscribers=[on_event, seen.append])
    finally:
        for r in robots:
            r.stop()
        brokers.stop()
    cid = _check(store, 2)
    assert lost and lost[0].startswith(f"{cid}:0:synthesis:")
    resent = [e for e in seen if isinstance(e, ev.CommandResent)]
    assert {(e.trial_index, e.step) for e in resent} == {(0, "synthesis"), (1, "synthesis")}, resent
    assert all(e.reason for e in resent) and any(e.command_id == lost[0] for e in resent)
    assert any("serves 'robot' now" in e.reason for e in resent if e.trial_index == 1)
    assert all(c.attempts == 1 for c in store.commands(cid))  # a re-send of a lost command is not a retry
    events = store.events(cid)
    assert any(e.kind == "command_resent" for e in events)
    assert not any(e.kind == "protocol_error" for e in events)  # second answers to re-sent commands: not warned
    assert [e.message.split(":")[0] for e in events if e.kind == "lab_messages"] == ["authenticated"]  # random secret
    store.close()
