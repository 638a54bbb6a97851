"""Trusting the lab (docs/security.md): lab isolation (a second lab under a lab id already served is
refused; a simulated lab started for a campaign gets a lab id of its own; replies and `offline`
count only from the driver session serving the instrument), message authentication (HMAC-SHA256
over the exact bytes, with a lab secret: forged, altered, stale and replayed messages are dropped
and logged in both directions, and the campaign goes on), unpredictable command ids, the drivers'
own safety limits (published with the status, enforced whatever the campaign says, checked by
`sdl validate` when the drivers are online), and the Mosquitto ACLs `sdl` writes.

Over the real Mosquitto on 127.0.0.1:1883 under this test's own lab ids; the ACL test starts a
Mosquitto of its own on a free port."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from drivers.base import Driver, InstrumentInUse
from sdl.config import load_campaign
from sdl.errors import ConfigError, ProtocolError
from sdl.protocol import (
    AuthError, Authenticator, Envelope, StatusBody, command, lab_secret, new_correlation_id, topic, utcnow,
)
from sdl.runner import Orchestrator
from sdl.runner import events as ev
from sdl.runner.lab import campaign_lab, mosquitto_acl, running_lab
from sdl.store import Store
from sdl.transport import MqttClient

ROOT = Path(__file__).parents[1]
SECRET = "0123456789abcdef-test-lab-secret"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytestmark = pytest.mark.integration


def _campaign(tmp_path, lab_id: str, broker: str, **over):
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d.update(store=f"sqlite:///{tmp_path}/sdl.db", broker=broker)
    d["lab"].update(id=lab_id, world=None)  # the test starts the lab's drivers itself
    d["strategy"].update(kind="sobol", initial_trials=1)
    d["budget"].update(max_experiments=1, stop_on_target=False)
    for key, value in over.items():
        d[key] = value
    return load_campaign(d)


class Spy:
    """Every raw payload on a lab's topics, by topic."""

    def __init__(self, url: str, lab: str):
        self.got: queue.Queue = queue.Queue()
        self.client = MqttClient(url).connect()
        self.client.subscribe(f"sdl/{lab}/#", lambda t, p: self.got.put((t, p)))

    def wait_for(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            t, p = self.got.get(timeout=max(0.01, deadline - time.monotonic()))
            if pred(t, p):
                return t, p

    def close(self):
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tamper(sealed: bytes) -> bytes:
    """The message with the last hex digit of its signature changed."""
    last = sealed[-3:-2]
    return sealed[:-3] + (b"1" if last == b"0" else b"0") + sealed[-2:]


@pytest.fixture(autouse=True)
def no_secret_in_the_environment(monkeypatch):
    monkeypatch.delenv("SDL_LAB_SECRET", raising=False)
    monkeypatch.delenv("SDL_LAB_SECRET_FILE", raising=False)


# ----- the signature, as docs/protocol.md describes it ---------------------------------------------------------


def test_signature_is_an_hmac_over_the_exact_bytes_and_the_topic():
    auth = Authenticator(SECRET)
    where = topic("labA", "robot", "reply")
    env = Envelope(kind="ack", correlation_id="c1", session="s1", body={"queued": 0})
    raw = env.to_bytes()
    sealed = auth.seal(where, raw)
    # what a driver in another language does, following docs/protocol.md
    key = hmac.new(SECRET.encode(), b"sdl-key-v1\nlabA\nrobot", hashlib.sha256).digest()
    mac = hmac.new(key, b"sdl-mac-v1\n" + where.encode() + b"\n" + raw, hashlib.sha256).hexdigest()
    assert sealed == raw[:-1] + b',"auth":"hmac-sha256:' + mac.encode() + b'"}'
    assert auth.open(where, sealed).body == {"queued": 0}
    with pytest.raises(AuthError, match="a replay of ack"):
        auth.open(where, sealed)  # the same signed message twice
    fresh = Authenticator(SECRET)
    for bad, why in [(sealed.replace(b'"queued":0', b'"queued":1'), "wrong hmac-sha256 signature"),
                     (raw, "not signed"),
                     (Authenticator("another-secret-of-16-bytes").seal(where, raw), "wrong hmac-sha256 signature")]:
        with pytest.raises(AuthError, match=why):
            fresh.open(where, bad)
    with pytest.raises(AuthError, match="wrong hmac-sha256 signature"):  # bound to the topic (and the lab)
        fresh.open(topic("labA", "saxs", "reply"), sealed)
    with pytest.raises(AuthError, match="wrong hmac-sha256 signature"):
        fresh.open(topic("labB", "robot", "reply"), sealed)
    with pytest.raises(AuthError, match="wrong hmac-sha256 signature"):
        fresh.open(where, _tamper(sealed))
    old = Envelope(kind="result", correlation_id="c1", sent_at=utcnow() - timedelta(hours=1)).to_bytes()
    with pytest.raises(AuthError, match=r"3600 s from this clock \(more than 300 s\)"):
        fresh.open(where, auth.seal(where, old))
    status = Envelope(kind="status", sent_at=utcnow() - timedelta(days=3),
                      body={"state": "online", "instrument": "robot"}).to_bytes()
    sealed_status = auth.seal(topic("labA", "robot", "status"), status)
    for _ in range(2):  # retained: old and repeated by nature, tied to its driver session instead
        assert fresh.open(topic("labA", "robot", "status"), sealed_status).kind == "status"
    # the test vector of docs/protocol.md
    doc = (ROOT / "docs" / "protocol.md").read_text()
    b = doc.split("\nB = ", 1)[1].split("\n", 1)[0].encode()
    vector = Authenticator("correct horse battery staple 42").seal("sdl/demo/robot/reply", b)
    mac_line = doc.split("\nmac = ", 1)[1].split("\n", 1)[0]
    assert vector == b[:-1] + b',"auth":"hmac-sha256:' + mac_line.encode() + b'"}'
    # unsigned (no secret): nothing signed, nothing checked, and the wire format of before
    assert Authenticator(None).seal(where, raw) == raw and b'"auth"' not in raw
    assert Authenticator(None).open(where, sealed).auth.startswith("hmac-sha256:")


def test_lab_secret_from_the_environment_or_a_file(tmp_path):
    assert lab_secret({}) is None
    assert lab_secret({"SDL_LAB_SECRET": f" {SECRET}\n"}) == SECRET.encode()
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    assert lab_secret({"SDL_LAB_SECRET_FILE": str(f)}) == SECRET.encode()
    with pytest.raises(ConfigError, match="use at least 16"):
        lab_secret({"SDL_LAB_SECRET": "short"})
    with pytest.raises(ConfigError, match="set one"):
        lab_secret({"SDL_LAB_SECRET": SECRET, "SDL_LAB_SECRET_FILE": str(f)})
    with pytest.raises(ConfigError, match="cannot read the lab secret"):
        lab_secret({"SDL_LAB_SECRET_FILE": str(tmp_path / "missing")})


def test_correlation_ids_are_unpredictable():
    ids = [new_correlation_id("camp:3:saxs") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    tails = [i.rsplit(":", 1)[1] for i in ids]
    assert all(i.startswith("camp:3:saxs:") for i in ids) and {len(t) for t in tails} == {24}
    assert all(int(t, 16) >= 0 for t in tails)
    # 96 random bits: every hex digit used at every position across 2000 draws
    assert all(len({t[k] for t in tails}) == 16 for k in range(24))


# ----- lab isolation ------------------------------------------------------------------------------------------


def test_a_second_lab_under_the_same_id_is_refused(mosquitto_url, lab_id):
    with running_lab("nanoparticles", lab_id, mosquitto_url) as first:
        sessions = {d.instrument: d.session for d in first.drivers}
        with pytest.raises(InstrumentInUse) as refused:
            with running_lab("nanoparticles", lab_id, mosquitto_url):
                pass
        text = str(refused.value)
        assert f"instrument 'robot' of lab '{lab_id}' not started: a driver of that instrument is already online" in text
        assert f"session {sessions['robot']}" in text and f"pid {os.getpid()}" in text
        assert f"mosquitto_pub -h 127.0.0.1 -p 1883 -r -n -t 'sdl/{lab_id}/robot/status'" in text
        # the refused lab published nothing: the retained statuses are still the first lab's
        with MqttClient(mosquitto_url) as c:
            got: queue.Queue = queue.Queue()
            c.subscribe(topic(lab_id, "+", "status"), lambda t, p: got.put(Envelope.from_bytes(p)))
            seen = {e.body["instrument"]: (e.session, e.body["state"]) for e in (got.get(timeout=5), got.get(timeout=5))}
        assert seen == {i: (s, "online") for i, s in sessions.items()}
    with running_lab("nanoparticles", lab_id, mosquitto_url) as again:  # stopped: the id is free again
        assert len(again.drivers) == 2


class Counter(Driver):
    def __init__(self, lab, url, secret=None):
        super().__init__("counter", lab, url, secret=secret)
        self.runs = 0

    def actions(self):
        return {"count": self.count}

    def count(self, cmd):
        self.runs += 1
        return {"runs": self.runs}


def test_two_sessions_started_at_once_leave_the_instrument_to_the_first(mosquitto_url, lab_id, monkeypatch):
    """A race the start-up check cannot see: the later session stops taking commands, the earlier
    one says again that it serves the instrument, and only it answers."""
    first = Counter(lab_id, mosquitto_url).start()
    second = Counter(lab_id, mosquitto_url)
    monkeypatch.setattr(second, "_rival", lambda probe, broker: None)  # as if both had checked at the same moment
    second.start()
    spy = None
    try:
        deadline = time.monotonic() + 10
        while not second._yielded and time.monotonic() < deadline:
            time.sleep(0.02)
        assert second._yielded and not first._yielded
        spy = Spy(mosquitto_url, lab_id)
        _, p = spy.wait_for(lambda t, p: t.endswith("/status"))  # retained: the first session's again
        assert Envelope.from_bytes(p).session == first.session
        spy.client.publish(topic(lab_id, "counter", "cmd"), command("count", correlation_id="c1").to_bytes(), wait=True)
        _, p = spy.wait_for(lambda t, p: t.endswith("/reply") and Envelope.from_bytes(p).kind == "result")
        assert Envelope.from_bytes(p).session == first.session
        time.sleep(0.3)
        assert (first.runs, second.runs) == (1, 0)
    finally:
        if spy is not None:
            spy.close()
        second.stop()
        first.stop()


def test_simulated_labs_of_campaigns_get_lab_ids_and_secrets_of_their_own(tmp_path, mosquitto_url, lab_id):
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d.update(store=f"sqlite:///{tmp_path}/sdl.db", broker=mosquitto_url)
    del d["lab"]["id"]  # the default
    c = load_campaign(d)
    with campaign_lab(c) as a, campaign_lab(c) as b:  # two campaigns, one broker: both start
        assert a.id != b.id and a.id.startswith("lab-") and b.id.startswith("lab-")
        assert a.secret and b.secret and a.secret != b.secret
        assert all(drv.lab == a.id and drv._auth.enabled for drv in a.drivers)
    d["lab"]["id"] = lab_id  # an id the user chose is kept
    with campaign_lab(load_campaign(d)) as lab:
        assert lab.id == lab_id


# ----- message authentication over a campaign ---------------------------------------------------------------


def test_forged_stale_and_replayed_messages_are_dropped_both_ways_and_the_campaign_goes_on(
        tmp_path, mosquitto_url, lab_id, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SDL_LAB_SECRET", SECRET)  # the lab's drivers and the orchestrator share it
    c = _campaign(tmp_path, lab_id, mosquitto_url)
    auth, wrong = Authenticator(SECRET), Authenticator("a-secret-of-another-lab")
    robot_reply, robot_status = topic(lab_id, "robot", "reply"), topic(lab_id, "robot", "status")
    saxs_cmd = topic(lab_id, "saxs", "cmd")
    sent: list[str] = []

    with running_lab("nanoparticles", lab_id, mosquitto_url) as lab, MqttClient(mosquitto_url) as intruder:
        robot = next(d for d in lab.drivers if d.instrument == "robot")
        spy = Spy(mosquitto_url, lab_id)
        store = Store(c.store)
        orch = Orchestrator(c, store, mosquitto_url)
        cid = orch.campaign_id

        def send(where, payload, retain=False):
            intruder.publish(where, payload, qos=1, retain=retain, wait=True)

        def inject(e):
            if isinstance(e, ev.CommandSent):
                sent.append(e.command_id)
            if isinstance(e, ev.CommandSent) and e.step == "synthesis":  # before the command goes out
                cmd = e.command_id
                result = Envelope(kind="result", correlation_id=cmd, campaign_id=cid, session=robot.session,
                                  body={"sample_id": "x", "sample": {"made": True}})
                send(robot_reply, result.to_bytes())  # unsigned
                send(robot_reply, wrong.seal(robot_reply, result.to_bytes()))  # another secret
                error = Envelope(kind="error", correlation_id=cmd, campaign_id=cid, session=robot.session,
                                 body={"code": "synthesis_failed", "message": "forged: learn this as a bad recipe"})
                send(robot_reply, _tamper(auth.seal(robot_reply, error.to_bytes())))  # altered signature
                stale = result.model_copy(update={"sent_at": utcnow() - timedelta(hours=1)})
                send(robot_reply, auth.seal(robot_reply, stale.to_bytes()))  # right secret, an hour old
                offline = Envelope(kind="status", session=robot.session,
                                   body={"state": "offline", "instrument": "robot", "actions": ["synthesize"]})
                send(robot_status, offline.to_bytes(), retain=True)  # a forged retained "offline"
                # forged commands to the camera: unsigned, and signed with another lab's secret
                for k, a in enumerate((Authenticator(None), wrong)):
                    forged = command("measure", correlation_id=f"forged-{k}", sample_id="x")
                    send(saxs_cmd, a.seal(saxs_cmd, forged.to_bytes()))
            elif isinstance(e, ev.ResultReceived) and e.step == "synthesis":
                # replay the robot's genuine signed ack of this command
                _, ack = spy.wait_for(lambda t, p: t == robot_reply and Envelope.from_bytes(p).kind == "ack")
                send(robot_reply, ack)

        orch.subscribe(inject)
        seen: list = []
        orch.subscribe(seen.append)
        s = orch.run()
        # the driver put its own status back over the forged one
        with MqttClient(mosquitto_url) as c2:
            got: queue.Queue = queue.Queue()
            c2.subscribe(robot_status, lambda t, p: got.put(p))
            retained = got.get(timeout=5)
        assert Envelope.from_bytes(retained).session == robot.session
        assert auth.open(robot_status, retained).body["state"] in ("online", "busy")
        assert not any(Envelope.from_bytes(p).correlation_id in ("forged-0", "forged-1")
                       for t, p in list(spy.got.queue) if t.endswith("/reply"))
        spy.close()

    trials = store.trials(cid)
    assert s.status == "finished" and [t.status for t in trials] == ["completed"], [t.failure for t in trials]
    assert not any(isinstance(e, ev.Message) and e.level == "warning" and "not authenticated" in e.text for e in seen)
    dropped = [r.getMessage() for r in caplog.records if r.name == "sdl.runner" and ": ignored " in r.getMessage()]
    for why in ["not signed (no `\"auth\":\"hmac-sha256:...\"` member at its end)",
                "wrong hmac-sha256 signature: signed with another lab secret, altered on the way, or forged",
                "s from this clock (more than 300 s): a replayed message, or clocks out of step",
                "a replay of ack"]:
        assert any(why in m for m in dropped), (why, dropped)
    assert sum("failed authentication" in m for m in dropped) == 6, dropped
    assert sum(f"on '{robot_status}' that failed authentication" in m for m in dropped) == 1
    refused = [r.getMessage() for r in caplog.records if r.name == "sdl.drivers"
               and "dropped a command" in r.getMessage()]
    assert len(refused) == 2 and all(saxs_cmd in m for m in refused), refused
    stored = [e.message for e in store.events(cid) if e.kind == "protocol_error"]
    assert len(stored) == 6
    # the command ids the campaign sent end in 96 random bits
    assert len(sent) == 2 and all(len(i.rsplit(":", 1)[1]) == 24 for i in sent)


def test_without_a_secret_other_sessions_neither_answer_nor_stop_the_campaign(tmp_path, mosquitto_url, lab_id,
                                                                              monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="sdl.runner")
    c = _campaign(tmp_path, lab_id, mosquitto_url)
    robot_reply, robot_status = topic(lab_id, "robot", "reply"), topic(lab_id, "robot", "status")
    with running_lab("nanoparticles", lab_id, mosquitto_url), MqttClient(mosquitto_url) as other:
        store = Store(c.store)
        orch = Orchestrator(c, store, mosquitto_url)
        cid = orch.campaign_id

        def inject(e):
            if isinstance(e, ev.CommandSent) and e.step == "synthesis":
                err = Envelope(kind="error", correlation_id=e.command_id, campaign_id=cid, session="0ther1ab",
                               body={"code": "synthesis_failed", "message": "another lab's answer"})
                other.publish(robot_reply, err.to_bytes(), wait=True)
                gone = Envelope(kind="status", session="0ther1ab",
                                body={"state": "offline", "instrument": "robot", "actions": ["synthesize"]})
                other.publish(robot_status, gone.to_bytes(), retain=True, wait=True)

        orch.subscribe(inject)
        seen: list = []
        orch.subscribe(seen.append)
        s = orch.run()
    assert s.status == "finished" and [t.status for t in store.trials(cid)] == ["completed"]
    dropped = [r.getMessage() for r in caplog.records if ": ignored " in r.getMessage()]
    assert sum("answered by driver session 0ther1ab, not by session" in m for m in dropped) == 1, dropped
    assert sum("'offline' status of 'robot' from driver session 0ther1ab, not from session" in m
               for m in dropped) == 1, dropped
    warned = [e.text for e in seen if isinstance(e, ev.Message) and e.level == "warning"]
    assert any(f"lab '{lab_id}': commands and replies are not authenticated" in t for t in warned)


def test_an_orchestrator_without_the_secret_of_a_signing_lab_says_so(tmp_path, mosquitto_url, lab_id, monkeypatch):
    from sdl.errors import DriverError
    from sdl.runner import loop

    monkeypatch.setattr(loop, "STATUS_WAIT_S", 1.0)
    c = _campaign(tmp_path, lab_id, mosquitto_url)
    with running_lab("nanoparticles", lab_id, mosquitto_url, secret=SECRET):
        with pytest.raises(DriverError, match=r"the drivers of \['robot', 'saxs'\] .* sign their messages"):
            Orchestrator(c, Store(c.store), mosquitto_url).run()
        with pytest.raises(DriverError, match=r"failed authentication \(wrong hmac-sha256 signature.*SDL_LAB_SECRET"):
            Orchestrator(c, Store(c.store), mosquitto_url, secret="the-wrong-secret-for-this-lab").run()


# ----- safety limits ------------------------------------------------------------------------------------------


def test_the_robot_refuses_a_command_outside_its_safety_limits_whatever_the_campaign(tmp_path, mosquitto_url,
                                                                                    lab_id, capsys):
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d.update(store=f"sqlite:///{tmp_path}/sdl.db", broker=mosquitto_url)
    d["lab"].update(id=lab_id, world=None)
    d["strategy"].update(kind="sobol", initial_trials=1)
    d["budget"].update(max_experiments=1, stop_on_target=False)
    d["parameters"][0]["bounds"] = [20, 900]
    f = tmp_path / "hot.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    from sdl import preflight
    from sdl.cli import main

    assert main(["validate", str(f)]) == 0  # no driver online: nothing to check the bounds against
    capsys.readouterr()
    with running_lab("nanoparticles", lab_id, mosquitto_url), Spy(mosquitto_url, lab_id) as spy:
        # the limits travel with the status
        _, p = spy.wait_for(lambda t, p: t == topic(lab_id, "robot", "status"))
        limits = StatusBody.model_validate(Envelope.from_bytes(p).body).limits
        assert limits["temperature_C"].model_dump() == {"min": 20.0, "max": 200.0, "unit": "degC"}
        # sdl validate checks the campaign's bounds against them
        preflight._ONLINE_CACHE.clear()  # what sdl.preflight remembers of the lab for a few seconds
        assert main(["validate", str(f)]) == 1
        err = capsys.readouterr().err
        assert (f"parameters[0](temperature_C).bounds: [20, 900] reach outside 20 to 200 degC, the limits instrument "
                f"'robot' of lab '{lab_id}' (online on {mosquitto_url}) declares") in err, err
        notes = " ".join(preflight.lab_notes(load_campaign(f)))
        assert "inside the safety limits the drivers of ['robot', 'saxs'] publish" in notes
        assert "messages NOT authenticated" in notes
        # the driver refuses 900 °C itself, in an error naming the limit
        spy.client.publish(topic(lab_id, "robot", "cmd"), command(
            "synthesize", correlation_id="hot-1", sample_id="s-hot",
            params={"temperature_C": 900.0, "precursor_mM": 5.0, "surfactant_ratio": 1.0,
                    "reducing_agent": "citrate", "time_min": 30.0}).to_bytes(), wait=True)
        _, p = spy.wait_for(lambda t, p: t.endswith("/robot/reply") and Envelope.from_bytes(p).kind == "error")
        body = Envelope.from_bytes(p).body
        assert body["code"] == "bad_command" and "temperature_C=900.0 out of range" in body["message"]
        assert "safety limits 20 to 200 degC" in body["message"]
        assert body["limit"] == {"param": "temperature_C", "value": 900.0, "min": 20.0, "max": 200.0, "unit": "degC"}
        # a campaign that skips the checks (a fixed 900 °C) gets the trial failed, not learned as infeasible
        d["parameters"][0] = {"name": "temperature_C", "type": "fixed", "value": 900.0}
        c = load_campaign(d)
        store = Store(c.store)
        failed: list = []
        s = Orchestrator(c, store, mosquitto_url, subscribers=[
            lambda e: failed.append(e) if isinstance(e, ev.TrialFailed) else None]).run()
    assert s.n_failed == 1 and len(failed) == 1 and not failed[0].infeasible
    assert "robot synthesize failed (bad_command): robot temperature_C=900.0 out of range" in failed[0].reason


# ----- broker ACLs ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def acl_broker(tmp_path, lab_id):
    """A Mosquitto of this test's own with passwords and the ACL file sdl writes for the lab."""
    if not (shutil.which("mosquitto") and shutil.which("mosquitto_passwd")):
        if IN_CI:
            pytest.fail("mosquitto and mosquitto_passwd must be installed (CI=true)")
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    users = {f"sdl-{lab_id}-orchestrator": "pw-orch", f"sdl-{lab_id}-robot": "pw-robot",
             f"sdl-{lab_id}-saxs": "pw-saxs", "intruder": "pw-intruder"}
    pw = tmp_path / "passwd"
    pw.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
    acl = tmp_path / "acl"
    acl.write_text(mosquitto_acl(lab_id, ["robot", "saxs"]))
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\nacl_file {acl}\n"
                    f"set_tcp_nodelay true\npersistence false\nuser {getpass.getuser()}\n")  # run as root: stay so
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"mosquitto did not start: {proc.stdout.read().decode() if proc.poll() is not None else ''}")
                time.sleep(0.05)
        yield lambda user: f"mqtt://{user}:{users[user]}@127.0.0.1:{port}" if user else f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_acl_sdl_writes_lets_each_user_do_only_its_part(acl_broker, lab_id):
    text = mosquitto_acl(lab_id, ["saxs", "robot"])
    assert f"user sdl-{lab_id}-orchestrator\ntopic write sdl/{lab_id}/+/cmd\n" in text
    assert f"user sdl-{lab_id}-robot\ntopic read sdl/{lab_id}/robot/cmd\ntopic write sdl/{lab_id}/robot/reply\n" \
           f"topic readwrite sdl/{lab_id}/robot/status\n" in text
    from sdl.errors import TransportError

    with pytest.raises(TransportError, match="(?i)not authori"):
        MqttClient(acl_broker(None)).connect(timeout_s=5)  # anonymous
    got: queue.Queue = queue.Queue()
    with MqttClient(acl_broker(f"sdl-{lab_id}-orchestrator")) as orch, \
            MqttClient(acl_broker(f"sdl-{lab_id}-robot")) as robot, MqttClient(acl_broker("intruder")) as intruder:
        orch.subscribe(topic(lab_id, "+", "reply"), lambda t, p: got.put((t, p)))
        robot_cmds: queue.Queue = queue.Queue()
        robot.subscribe(topic(lab_id, "robot", "cmd"), lambda t, p: robot_cmds.put(p))
        try:  # refused, or granted and given nothing: either way the intruder sees no command
            intruder.subscribe(topic(lab_id, "+", "cmd"), lambda t, p: got.put(("intruder saw", p)))
        except TransportError:
            pass
        intruder.publish(topic(lab_id, "robot", "reply"), b"forged by the intruder", wait=True)
        intruder.publish(topic(lab_id, "robot", "cmd"), b"intruder's command", wait=True)
        robot.publish(topic(lab_id, "saxs", "reply"), b"the robot posing as the camera", wait=True)
        robot.publish(topic(lab_id, "robot", "reply"), b"the robot's reply", wait=True)
        orch.publish(topic(lab_id, "robot", "cmd"), b"the orchestrator's command", wait=True)
        assert got.get(timeout=5) == (topic(lab_id, "robot", "reply"), b"the robot's reply")
        assert robot_cmds.get(timeout=5) == b"the orchestrator's command"
        time.sleep(0.5)
        assert got.empty() and robot_cmds.empty()
