"""Every message the orchestrator does not act on is logged once, saying why: malformed JSON, a
`NaN`/`Infinity` literal, a payload above sdl.protocol.MAX_MESSAGE_BYTES, a reply without or with
a wrong correlation id, one on the wrong instrument's topic, a stale duplicate, a kind that is no
reply. Sent over the real Mosquitto broker under this test's own topic prefix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from sdl.config import load_campaign
from sdl.errors import ProtocolError
from sdl.protocol import MAX_MESSAGE_BYTES, Envelope, topic
from sdl.runner import Orchestrator
from sdl.runner import events as ev
from sdl.runner.lab import running_lab
from sdl.store import Store
from sdl.transport import MqttClient

ROOT = Path(__file__).parents[1]


# ----- the wire format -----------------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_not_json(literal):
    payload = b'{"kind": "ack", "correlation_id": "c1", "body": {"queued": ' + literal + b"}}"
    with pytest.raises(ProtocolError, match=rf"message on 'sdl/l/robot/reply' is not JSON: {literal.decode()} is "
                                            r"not a JSON value"):
        Envelope.from_bytes(payload, "sdl/l/robot/reply")


def test_a_number_beyond_a_double_is_refused_and_ordinary_ones_pass():
    with pytest.raises(ProtocolError, match="number 1e999 is out of the range of a double"):
        Envelope.from_bytes(b'{"kind": "ack", "body": {"queued": 1e999}}')
    env = Envelope.from_bytes(b'{"kind": "ack", "body": {"queued": 0, "x": -1.5e-300, "y": 1.7e308}}')
    assert env.body == {"queued": 0, "x": -1.5e-300, "y": 1.7e308}


def test_oversized_payload_is_refused_before_it_is_parsed():
    with pytest.raises(ProtocolError, match=r"is 41 bytes, above the limit of 40 bytes \(sdl.protocol.MAX_MESSAGE_BYTES\)"):
        Envelope.from_bytes(b"x" * 41, "t", max_bytes=40)  # not JSON either: the size is said first
    assert Envelope.from_bytes(b'{"kind": "ack"}', max_bytes=15).kind == "ack"
    assert 16 * 2**20 <= MAX_MESSAGE_BYTES < 50 * 10**6


# ----- the loop over Mosquitto ----------------------------------------------------------------------


def _campaign(tmp_path, lab_id: str, broker: str):
    d = yaml.safe_load((ROOT / "campaigns" / "nanoparticle_size.yaml").read_text())
    d.update(store=f"sqlite:///{tmp_path}/sdl.db", broker=broker)
    d["lab"].update(id=lab_id, world=None)  # the test starts the lab's drivers itself
    d["strategy"].update(kind="sobol", initial_trials=1)
    d["budget"].update(max_experiments=1, stop_on_target=False)
    return load_campaign(d)


@pytest.mark.integration
def test_every_dropped_reply_is_logged_once_with_why(tmp_path, mosquitto_url, lab_id, caplog):
    caplog.set_level(logging.INFO, logger="sdl.runner")
    c = _campaign(tmp_path, lab_id, mosquitto_url)
    robot, saxs = topic(lab_id, "robot", "reply"), topic(lab_id, "saxs", "reply")
    big = 50 * 2**20
    injected: dict[str, str] = {}

    with running_lab("nanoparticles", lab_id, mosquitto_url, seed=0, time_scale=0), MqttClient(mosquitto_url) as spam:
        store = Store(c.store)
        orch = Orchestrator(c, store, mosquitto_url)
        cid = orch.campaign_id

        def send(where: str, payload: bytes) -> None:
            # acknowledged by the broker before the loop goes on: it reaches the orchestrator
            # before any reply to what the loop publishes next
            spam.publish(where, payload, qos=1, wait=True, timeout_s=60)

        def inject(e):
            if isinstance(e, ev.CommandSent) and e.step == "synthesis":  # before the command goes out
                cmd = e.command_id
                ack = Envelope(kind="ack", correlation_id=cmd, campaign_id=cid, body={"queued": 0}).to_bytes()
                for literal in (b"NaN", b"Infinity", b"1e999"):
                    send(robot, ack.replace(b'"queued":0', b'"queued":' + literal))
                send(saxs, ack)  # the right id on the wrong instrument's topic
                send(robot, Envelope(kind="result", correlation_id="other-campaign:0:synthesis",
                                     campaign_id="other-campaign", body={}).to_bytes())
                send(robot, Envelope(kind="result", correlation_id="forged:0:synthesis", body={}).to_bytes())
                send(robot, Envelope(kind="ack", campaign_id=cid).to_bytes())  # no correlation id
                send(robot, Envelope(kind="command", correlation_id=cmd, campaign_id=cid).to_bytes())
                send(robot, b"{not json")
                head, tail = b'{"kind": "ack", "body": {"pad": "', b'"}}'
                send(robot, head + b"x" * (big - len(head) - len(tail)) + tail)
                injected["synthesis"] = cmd
            elif isinstance(e, ev.ResultReceived) and e.step == "synthesis":  # the same result again
                send(robot, Envelope(kind="result", correlation_id=e.command_id, campaign_id=cid, body=e.body).to_bytes())

        orch.subscribe(inject)
        s = orch.run()

    cmd = injected["synthesis"]
    assert s.status == "finished" and [t.status for t in store.trials(cid)] == ["completed"]

    dropped = [r for r in caplog.records if r.name == "sdl.runner" and ": ignored " in r.getMessage()]
    expected = {  # why -> level
        "NaN is not a JSON value": logging.WARNING,
        "Infinity is not a JSON value": logging.WARNING,
        "number 1e999 is out of the range of a double": logging.WARNING,
        f"command {cmd} went to 'robot', not to 'saxs'": logging.WARNING,
        "command other-campaign:0:synthesis is campaign other-campaign's, not this campaign's": logging.INFO,
        f"command forged:0:synthesis was not sent by this campaign ({cid})": logging.WARNING,
        "no correlation_id (a reply echoes its command's id)": logging.WARNING,
        "kind 'command' is not a reply (ack, result or error)": logging.WARNING,
        "is not JSON: Expecting property name": logging.WARNING,
        f"is {big:,} bytes, above the limit of {MAX_MESSAGE_BYTES:,} bytes": logging.WARNING,
        f"command {cmd} is not in flight: answered already": logging.WARNING,
    }
    for why, level in expected.items():
        hits = [r for r in dropped if why in r.getMessage()]
        assert len(hits) == 1, (why, [r.getMessage()[:200] for r in dropped])
        assert hits[0].levelno == level, (why, hits[0].levelname)
        assert hits[0].getMessage().startswith(f"campaign {cid}: ignored ")
    assert len(dropped) == len(expected), [r.getMessage()[:200] for r in dropped]  # nothing else was dropped

    # this campaign's drops are in its event log too (another campaign's replies are not its business)
    stored = [e.message for e in store.events(cid) if e.kind == "protocol_error"]
    assert len(stored) == len(expected) - 1
    for why, level in expected.items():
        assert sum(why in m for m in stored) == (1 if level == logging.WARNING else 0), why
