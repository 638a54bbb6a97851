"""Driver SDK: status, idempotency on command ids, error replies for bad commands."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from drivers.base import ActionFailed, Driver
from sdl.protocol import Envelope, StatusBody, command, topic
from sdl.transport import MqttClient


class Counter(Driver):
    """Counts how often each action really ran."""

    def __init__(self, lab, url):
        super().__init__("counter", lab, url)
        self.runs = 0
        self.lock = threading.Lock()

    def actions(self):
        return {"count": self.count, "fail": self.fail}

    def count(self, cmd):
        with self.lock:
            self.runs += 1
        time.sleep(float(cmd.params.get("sleep_s", 0)))
        return {"runs": self.runs}

    def fail(self, cmd):
        raise ActionFailed("measurement_failed", "detector saturated")


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.integration)])
def setup(request, embedded_broker, lab_id):
    url = embedded_broker.url if request.param == "embedded" else request.getfixturevalue("mosquitto_url")
    drv = Counter(lab_id, url).start()
    client = MqttClient(url).connect()
    replies: queue.Queue = queue.Queue()
    client.subscribe(topic(lab_id, "counter", "reply"), lambda t, p: replies.put(Envelope.from_bytes(p)))
    status: queue.Queue = queue.Queue()
    client.subscribe(topic(lab_id, "counter", "status"), lambda t, p: status.put(Envelope.from_bytes(p)))
    time.sleep(0.2)

    def send(env_or_bytes):
        data = env_or_bytes if isinstance(env_or_bytes, bytes) else env_or_bytes.to_bytes()
        client.publish(topic(lab_id, "counter", "cmd"), data, wait=True)

    def final(cid, timeout=10):
        while True:
            env = replies.get(timeout=timeout)
            if env.correlation_id == cid and env.kind in ("result", "error"):
                return env

    yield drv, send, final, status
    client.close()
    drv.stop()


def test_status_is_retained_online_with_actions(setup):
    drv, send, final, status = setup
    env = status.get(timeout=5)
    body = StatusBody.model_validate(env.body)
    assert body.state in ("online", "busy") and body.actions == ["count", "fail"]


def test_same_command_twice_runs_once(setup):
    drv, send, final, _ = setup
    cmd = command("count", correlation_id="cmd-1", params={"sleep_s": 0.3})
    send(cmd)
    send(cmd)  # a QoS 1 duplicate while it runs
    first = final("cmd-1")
    send(cmd)  # and a re-send after it finished (e.g. an orchestrator resuming)
    second = final("cmd-1")
    assert first.kind == second.kind == "result" and first.body == second.body == {"runs": 1}
    assert drv.runs == 1


def test_action_failure_and_unknown_action(setup):
    drv, send, final, _ = setup
    send(command("fail", correlation_id="f1"))
    err = final("f1")
    assert err.kind == "error" and err.body == {"code": "measurement_failed", "message": "detector saturated"}
    send(command("dance", correlation_id="u1"))
    err = final("u1")
    assert err.body["code"] == "unknown_action" and "['count', 'fail']" in err.body["message"]


def test_malformed_command_gets_bad_command(setup):
    drv, send, final, _ = setup
    bad = {"schema_version": 1, "kind": "command", "correlation_id": "b1", "body": {"params": {}}}  # no action
    send(json.dumps(bad).encode())
    err = final("b1")
    assert err.body["code"] == "bad_command" and "action" in err.body["message"]
    send(b"garbage")  # no id to answer to: dropped, the driver keeps serving
    send(command("count", correlation_id="ok"))
    assert final("ok").kind == "result"


def test_simulated_lab_rejects_bad_settings_and_recipes(embedded_broker, lab_id):
    from sdl.orchestrator import start_simulated_lab

    drivers = start_simulated_lab("nanoparticles", lab_id, embedded_broker.url, seed=0, time_scale=0)
    client = MqttClient(embedded_broker.url).connect()
    replies: queue.Queue = queue.Queue()
    client.subscribe(topic(lab_id, "+", "reply"), lambda t, p: replies.put(Envelope.from_bytes(p)))
    time.sleep(0.2)

    def ask(instrument, env):
        client.publish(topic(lab_id, instrument, "cmd"), env.to_bytes(), wait=True)
        while True:
            r = replies.get(timeout=10)
            if r.correlation_id == env.correlation_id and r.kind in ("result", "error"):
                return r

    try:
        r = ask("saxs", command("measure", correlation_id="m1", sample_id="s1", params={"exposure": 5}))
        assert r.body["code"] == "bad_command" and "unknown saxs setting(s) ['exposure']" in r.body["message"]
        assert "exposure_s" in r.body["message"]
        r = ask("saxs", command("measure", correlation_id="m2", sample_id="never-made"))
        assert r.body["code"] == "unknown_sample"
        r = ask("robot", command("synthesize", correlation_id="s1", sample_id="s1", params={"temperature_C": 80}))
        assert r.body["code"] == "bad_command" and "missing" in r.body["message"]
    finally:
        client.close()
        for d in drivers:
            d.stop()
