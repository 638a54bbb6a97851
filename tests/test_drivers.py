"""Driver SDK: status, idempotency on command ids, error replies for bad commands."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.base import ActionFailed, Driver
from sdl.measurement import Measurement
from sdl.protocol import Envelope, StatusBody, command, topic
from sdl.transport import MqttClient


class Counter(Driver):
    """Counts how often each action really ran."""

    def __init__(self, lab, url):
        super().__init__("counter", lab, url)
        self.runs = 0
        self.lock = threading.Lock()

    def actions(self):
        return {"count": self.count, "fail": self.fail, "numpy": self.numpy, "simulate": self.simulate}

    def count(self, cmd):
        with self.lock:
            self.runs += 1
        time.sleep(float(cmd.params.get("sleep_s", 0)))
        return {"runs": self.runs}

    def fail(self, cmd):
        raise ActionFailed("measurement_failed", "detector saturated")

    def numpy(self, cmd):  # a driver bug: a numpy array is not JSON (encode it as an ArrayPayload)
        return {"value": np.arange(3.0)}

    def simulate(self, cmd):
        self.simulate_time(120.0)
        self.simulate_time(30.0)
        return {"order": cmd.params.get("i"), "correlation_id": self.current.correlation_id}


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
    drv.stop()
    client.publish(topic(lab_id, "counter", "status"), b"", retain=True, wait=True)  # leave no retained status behind
    client.close()


def test_status_is_retained_online_with_actions(setup):
    drv, send, final, status = setup
    env = status.get(timeout=5)
    body = StatusBody.model_validate(env.body)
    assert body.state in ("online", "busy") and body.actions == ["count", "fail", "numpy", "simulate"]
    assert env.kind == "status" and body.instrument == "counter" and body.driver == "Counter"


def test_same_command_twice_runs_once(setup):
    drv, send, final, _ = setup
    cmd = command("count", correlation_id="cmd-1", params={"sleep_s": 0.3})
    send(cmd)
    send(cmd)  # a QoS 1 duplicate while it runs
    first = final("cmd-1")
    send(cmd)  # and a re-send after it finished (e.g. an orchestrator resuming)
    second = final("cmd-1")
    assert first.kind == second.kind == "result" and first.body == second.body == {"runs": 1, "duration_s": 0.0}
    assert first.message_id == second.message_id  # the stored reply itself, re-published
    assert drv.runs == 1


def test_action_failure_and_unknown_action(setup):
    drv, send, final, _ = setup
    send(command("fail", correlation_id="f1"))
    err = final("f1")
    assert err.kind == "error" and err.body == {"code": "measurement_failed", "message": "detector saturated"}
    send(command("dance", correlation_id="u1"))
    err = final("u1")
    assert err.body["code"] == "unknown_action" and "['count', 'fail', 'numpy', 'simulate']" in err.body["message"]


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
    from sdl.runner.lab import running_lab

    with running_lab("nanoparticles", lab_id, embedded_broker.url, seed=0, time_scale=0), \
            MqttClient(embedded_broker.url) as client:
        replies: queue.Queue = queue.Queue()
        client.subscribe(topic(lab_id, "+", "reply"), lambda t, p: replies.put(Envelope.from_bytes(p)))
        time.sleep(0.2)

        def ask(instrument, env):
            client.publish(topic(lab_id, instrument, "cmd"), env.to_bytes(), wait=True)
            while True:
                r = replies.get(timeout=10)
                if r.correlation_id == env.correlation_id and r.kind in ("result", "error"):
                    return r

        r = ask("saxs", command("measure", correlation_id="m1", sample_id="s1", params={"exposure": 5}))
        assert r.body["code"] == "bad_command" and "unknown saxs setting(s) ['exposure']" in r.body["message"]
        assert "exposure_s" in r.body["message"]
        r = ask("saxs", command("measure", correlation_id="m2", sample_id="never-made"))
        assert r.body["code"] == "unknown_sample"
        r = ask("robot", command("synthesize", correlation_id="s1", sample_id="s1", params={"temperature_C": 80}))
        assert r.body["code"] == "bad_command" and "missing" in r.body["message"]


def test_driver_bug_is_an_internal_error_and_the_driver_keeps_serving(setup):
    drv, send, final, _ = setup
    send(command("numpy", correlation_id="n1"))
    err = final("n1")
    assert err.kind == "error" and err.body["code"] == "internal" and "serial" in err.body["message"].lower()
    send(command("count", correlation_id="after-bug"))
    assert final("after-bug").kind == "result"


def test_fifo_one_at_a_time_with_ack_and_simulated_duration(setup):
    drv, send, final, _ = setup
    for i in range(5):
        send(command("simulate", correlation_id=f"q{i}", params={"i": i}))
    results = [final(f"q{i}") for i in range(5)]
    assert [r.body["order"] for r in results] == list(range(5))
    assert all(r.body["duration_s"] == 150.0 and r.body["correlation_id"] == f"q{i}" for i, r in enumerate(results))
    assert drv.busy_s == 750.0


def test_ack_comes_before_result(embedded_broker, lab_id):
    url = embedded_broker.url
    with Counter(lab_id, url), MqttClient(url) as client:
        got: queue.Queue = queue.Queue()
        client.subscribe(topic(lab_id, "counter", "reply"), lambda t, p: got.put(Envelope.from_bytes(p)))
        time.sleep(0.2)
        client.publish(topic(lab_id, "counter", "cmd"), command("count", correlation_id="a1", campaign_id="camp").to_bytes())
        ack, res = got.get(timeout=5), got.get(timeout=5)
        assert (ack.kind, res.kind) == ("ack", "result")
        assert ack.correlation_id == res.correlation_id == "a1" and res.campaign_id == "camp"


def test_stop_publishes_offline_and_dead_driver_triggers_last_will(embedded_broker, lab_id):
    url = embedded_broker.url
    states: queue.Queue = queue.Queue()
    with MqttClient(url) as watcher:
        watcher.subscribe(topic(lab_id, "counter", "status"), lambda t, p: states.put(Envelope.from_bytes(p).body["state"]))
        drv = Counter(lab_id, url).start()
        assert states.get(timeout=5) == "online"
        drv.stop()
        assert states.get(timeout=5) == "offline"
        drv.start()  # a driver can be started again
        assert states.get(timeout=5) == "online"
        drv._client._client.socket().close()  # the process dies: no DISCONNECT, the broker sends the will
        drv._client._client.loop_stop()
        assert states.get(timeout=30) == "offline"
        drv._client = None


# ----- the simulated nanoparticle lab ---------------------------------------------------------------

RECIPE = {"temperature_C": 80.0, "precursor_mM": 5.0, "surfactant_ratio": 1.0, "reducing_agent": "citrate",
          "time_min": 30.0}


class Lab:
    """The nanoparticle lab's drivers and a client that asks them things."""

    def __init__(self, url, lab, seed=0):
        from drivers.labs import nanoparticles

        self.lab, self.drivers = lab, [d.start() for d in nanoparticles(lab, url, seed=seed)]
        self.client = MqttClient(url).connect()
        self.replies: queue.Queue = queue.Queue()
        self.client.subscribe(topic(lab, "+", "reply"), lambda t, p: self.replies.put(Envelope.from_bytes(p)))
        time.sleep(0.2)

    def ask(self, instrument, env):
        self.client.publish(topic(self.lab, instrument, "cmd"), env.to_bytes(), wait=True)
        while True:
            r = self.replies.get(timeout=30)
            if r.correlation_id == env.correlation_id and r.kind in ("result", "error"):
                return r

    def close(self):
        self.client.close()
        for d in self.drivers:
            d.stop()


@pytest.fixture
def nano_lab(embedded_broker, lab_id):
    lab = Lab(embedded_broker.url, lab_id)
    yield lab
    lab.close()


def _intensity(reply):
    return Measurement.from_wire(reply.body["measurement"]).arrays["intensity"]


def test_simulated_lab_synthesize_then_measure(nano_lab):
    r = nano_lab.ask("robot", command("synthesize", correlation_id="c-syn", sample_id="np-1", params=RECIPE))
    assert r.kind == "result", r.body
    assert r.body["sample_id"] == "np-1" and r.body["sample"]["params"] == RECIPE and r.body["duration_s"] > 0
    settings = {"q_min_inv_angstrom": 0.01, "q_max_inv_angstrom": 0.3, "n_points": 50, "exposure_s": 5}
    m1 = nano_lab.ask("saxs", command("measure", correlation_id="c-m1", sample_id="np-1", params=settings))
    assert m1.kind == "result", m1.body
    m = Measurement.from_wire(m1.body["measurement"])
    q, i, s = m.require("q_inv_angstrom", "intensity", "sigma")
    assert m.technique == "saxs" and len(q) == 50 and q[0] == pytest.approx(0.01) and q[-1] == pytest.approx(0.3)
    assert np.all(s > 0) and m.metadata["sample_id"] == "np-1" and m1.body["duration_s"] > 5
    # the same command again: the stored reply; a new command on the same sample: fresh noise
    again = nano_lab.ask("saxs", command("measure", correlation_id="c-m1", sample_id="np-1", params=settings))
    assert again.message_id == m1.message_id
    m2 = nano_lab.ask("saxs", command("measure", correlation_id="c-m2", sample_id="np-1", params=settings))
    assert not np.array_equal(_intensity(m1), _intensity(m2))
    assert np.allclose(_intensity(m1), _intensity(m2), rtol=0.5)


def test_simulated_lab_is_reproducible_with_the_same_seed(embedded_broker, lab_id):
    data = []
    for k, seed in enumerate([3, 3, 4]):
        lab = Lab(embedded_broker.url, f"{lab_id}-{k}", seed=seed)
        try:
            assert lab.ask("robot", command("synthesize", correlation_id=f"run{k}-s", sample_id="np-1",
                                            params=RECIPE)).kind == "result"
            r = lab.ask("saxs", command("measure", correlation_id=f"run{k}-m", sample_id="np-1"))
            data.append(_intensity(r))
        finally:
            lab.close()
    assert np.array_equal(data[0], data[1]) and not np.array_equal(data[0], data[2])


def test_simulated_lab_errors(nano_lab):
    ask = nano_lab.ask
    bad_recipe = {**RECIPE, "temperature_C": 190.0, "reducing_agent": "citrate", "time_min": 240.0}
    r = ask("robot", command("synthesize", correlation_id="e1", sample_id="np-x", params=bad_recipe))
    assert r.kind == "error" and r.body["code"] == "synthesis_failed" and "np-x" in r.body["message"]
    r = ask("saxs", command("measure", correlation_id="e2", sample_id="np-x"))
    assert r.body["code"] == "unknown_sample" and "np-x" in r.body["message"]
    for params, words in [({"n_points": 10**9}, "n_points=1000000000 out of range"),
                          ({"n_points": 20.5}, "n_points=20.5 must be a whole number"),
                          ({"exposure_s": "long"}, "exposure_s='long' is not a float"),
                          ({"flux": 1e9}, "unknown saxs setting(s) ['flux']"),
                          ({"q_min_inv_angstrom": 0.4, "q_max_inv_angstrom": 0.1}, "q_min_inv_angstrom < q_max")]:
        r = ask("saxs", command("measure", correlation_id=f"e-{words}", sample_id="np-x", params=params))
        assert r.body["code"] == "bad_command" and words in r.body["message"], r.body
    r = ask("robot", command("synthesize", correlation_id="e4", params=RECIPE))
    assert r.body["code"] == "bad_command" and "sample_id" in r.body["message"]


def test_serve_runs_the_lab_until_stopped(embedded_broker, lab_id):
    from sdl.runner.lab import serve

    stop = threading.Event()
    states: queue.Queue = queue.Queue()
    with MqttClient(embedded_broker.url) as watcher:
        watcher.subscribe(topic(lab_id, "+", "status"),
                          lambda t, p: states.put((t.split("/")[2], Envelope.from_bytes(p).body["state"])))
        th = threading.Thread(target=serve, args=("nanoparticles", lab_id, embedded_broker.url),
                              kwargs={"seed": 0, "stop": stop})
        th.start()
        seen = {states.get(timeout=10), states.get(timeout=10)}
        assert seen == {("robot", "online"), ("saxs", "online")}
        stop.set()
        th.join(10)
        assert not th.is_alive()
        seen = {states.get(timeout=10), states.get(timeout=10)}
        assert seen == {("robot", "offline"), ("saxs", "offline")}


def test_drivers_start_serves_a_lab_known_only_by_its_entry_point(tmp_path, embedded_broker, lab_id):
    """`sdl drivers list` and `sdl drivers start` find labs through the `sdl.labs` entry points
    only: a lab another distribution registers (here one on PYTHONPATH) is served like a built-in
    one, until SIGTERM, and its drivers go offline cleanly."""
    (tmp_path / "toy_lab.py").write_text(
        "from drivers.labs import nanoparticles\n\n\n"
        "def robot_only(lab, broker_url, *, seed=0, time_scale=0.0):\n"
        "    return [d for d in nanoparticles(lab, broker_url, seed=seed, time_scale=time_scale)"
        " if d.instrument == 'robot']\n")
    info = tmp_path / "toy_lab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-lab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sdl.labs]\ntoy = toy_lab:robot_only\n")
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    listed = subprocess.run([sys.executable, "-m", "sdl.cli", "drivers", "list"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "toy  (toy_lab:robot_only)" in listed.stdout.splitlines()
    assert "nanoparticles  (drivers.labs:nanoparticles)" in listed.stdout.splitlines()
    states: queue.Queue = queue.Queue()
    with MqttClient(embedded_broker.url) as watcher:
        watcher.subscribe(topic(lab_id, "+", "status"),
                          lambda t, p: states.put((t.split("/")[2], Envelope.from_bytes(p).body["state"])))
        proc = subprocess.Popen([sys.executable, "-m", "sdl.cli", "drivers", "start", "--lab", "toy", "--id", lab_id,
                                 "--broker", embedded_broker.url], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert states.get(timeout=60) == ("robot", "online")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out
        assert f"serving simulated lab 'toy' as sdl/{lab_id}/..." in out
        assert states.get(timeout=10) == ("robot", "offline")


def test_driver_survives_broker_restart(lab_id):
    """Broker restarts on the same port (retained messages lost): the driver comes back, says it is
    online again, and answers commands; the client re-subscribes by itself."""
    from sdl.transport import EmbeddedBroker

    broker = EmbeddedBroker()
    url = broker.start()
    drv = Counter(lab_id, url).start()
    client = MqttClient(url).connect()
    got: queue.Queue = queue.Queue()
    client.subscribe(topic(lab_id, "counter", "#"), lambda t, p: got.put(Envelope.from_bytes(p)))

    def result(cid):
        client.publish(topic(lab_id, "counter", "cmd"), command("count", correlation_id=cid).to_bytes())
        while True:
            env = got.get(timeout=10)
            if env.correlation_id == cid and env.kind == "result":
                return env

    broker2 = None
    try:
        assert result("before").body["runs"] == 1
        broker.stop()
        while not got.empty():  # e.g. the "online" sent after the first command: not the one we wait for
            got.get()
        broker2 = EmbeddedBroker(port=broker.port)
        broker2.start()
        assert client.wait_connected(15) and drv._client.wait_connected(15)
        while (env := got.get(timeout=10)).kind != "status":  # the status comes back without being asked
            pass
        assert env.body["state"] == "online"
        assert result("after").body["runs"] == 2
    finally:
        client.close()
        drv.stop()
        (broker2 or broker).stop()
