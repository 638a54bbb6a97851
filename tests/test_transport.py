"""Wire format and MQTT transport, against the embedded broker and the real Mosquitto."""

from __future__ import annotations

import queue
import socket
import time

import numpy as np
import pytest

from sdl.errors import ProtocolError, TransportError
from sdl.protocol import ArrayPayload, Envelope, command, topic
from sdl.transport import EmbeddedBroker, MqttClient, _Subscriptions, parse_broker_url


# ----- wire format ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [np.linspace(0, 1, 7), np.arange(12, dtype=np.int32).reshape(3, 4),
                               np.random.default_rng(0).random((50, 200)).astype(np.float32),
                               np.array([True, False]), np.array([], dtype=float)])
def test_array_round_trip(a):
    back = ArrayPayload.model_validate(ArrayPayload.encode(a).model_dump()).decode()
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)


def test_big_endian_input_goes_out_little_endian():
    a = np.arange(5, dtype=">f8")
    p = ArrayPayload.encode(a)
    assert p.dtype == "<f8" and np.array_equal(p.decode(), a)


def test_array_errors_name_the_array():
    p = ArrayPayload.encode(np.arange(4.0)).model_dump()
    with pytest.raises(ProtocolError, match=r"array 'intensity': 32 bytes do not fit shape \[5\]"):
        ArrayPayload.model_validate({**p, "shape": [5]}).decode("intensity")
    with pytest.raises(ProtocolError, match="dtype 'object' not allowed"):
        ArrayPayload.model_validate({**p, "dtype": "object"}).decode("x")
    with pytest.raises(ProtocolError, match="not valid base64"):
        ArrayPayload.model_validate({**p, "data": "***"}).decode("x")


def test_envelope_errors_name_topic_and_field():
    with pytest.raises(ProtocolError, match="message on 'sdl/l/x/reply' is not JSON"):
        Envelope.from_bytes(b"\xff\x00", "sdl/l/x/reply")
    with pytest.raises(ProtocolError, match="kind"):
        Envelope.from_bytes(b'{"kind": "shout"}', "t")
    with pytest.raises(ProtocolError, match="schema_version 2 not supported"):
        Envelope.from_bytes(b'{"kind": "ack", "schema_version": 2}', "t")
    env = command("measure", correlation_id="c1", params={"exposure_s": 1.0})
    assert Envelope.from_bytes(env.to_bytes()) == env


def test_topic_segments_checked():
    assert topic("lab", "saxs", "cmd") == "sdl/lab/saxs/cmd"
    assert topic("lab", "+", "reply") == "sdl/lab/+/reply"
    with pytest.raises(ProtocolError, match="cannot be a topic segment"):
        topic("a/b", "saxs", "cmd")


def test_broker_url_parsing():
    assert parse_broker_url("mqtt://u:p%40ss@host:1884") == ("host", 1884, False, "u", "p@ss")
    assert parse_broker_url("mqtts://host")[1:3] == (8883, True)
    assert parse_broker_url("tcp://10.0.0.5") == ("10.0.0.5", 1883, False, None, None)
    with pytest.raises(TransportError, match=r"'http://host' not understood; use mqtt://HOST\[:PORT\], tcp://"):
        parse_broker_url("http://host")
    with pytest.raises(TransportError, match="invalid port"):
        parse_broker_url("mqtt://host:99999")
    with pytest.raises(TransportError, match="not understood"):
        parse_broker_url("127.0.0.1:1883")


# ----- live brokers -----------------------------------------------------------------------------------


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.integration)])
def broker_url(request, embedded_broker):
    return embedded_broker.url if request.param == "embedded" else request.getfixturevalue("mosquitto_url")


def test_publish_subscribe_and_nodelay(broker_url, lab_id):
    got: queue.Queue = queue.Queue()
    with MqttClient(broker_url) as a, MqttClient(broker_url) as b:
        b.subscribe(topic(lab_id, "+", "reply"), lambda t, p: got.put((t, p)))
        time.sleep(0.2)
        a.publish(topic(lab_id, "saxs", "reply"), b"hello", qos=1, wait=True)
        assert got.get(timeout=5) == (f"sdl/{lab_id}/saxs/reply", b"hello")
        sock = a._client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_callback_exception_does_not_stop_the_loop(broker_url, lab_id):
    got: queue.Queue = queue.Queue()

    def flaky(t, p):
        if p == b"boom":
            raise RuntimeError("bug in a callback")
        got.put(p)

    with MqttClient(broker_url) as c:
        c.subscribe(f"sdl/{lab_id}/x", flaky)
        time.sleep(0.2)
        c.publish(f"sdl/{lab_id}/x", b"boom", wait=True)
        c.publish(f"sdl/{lab_id}/x", b"fine", wait=True)
        assert got.get(timeout=5) == b"fine"


def test_last_will_marks_offline(broker_url, lab_id):
    status_topic = topic(lab_id, "saxs", "status")
    got: queue.Queue = queue.Queue()
    watcher = MqttClient(broker_url).connect()
    watcher.subscribe(status_topic, lambda t, p: got.put(p))
    dying = MqttClient(broker_url, will=(status_topic, b"offline")).connect()
    dying.publish(status_topic, b"online", retain=True, wait=True)
    assert got.get(timeout=5) == b"online"
    dying._client.socket().close()  # die without DISCONNECT: the broker publishes the will
    dying._client.loop_stop()
    assert got.get(timeout=60) == b"offline"
    watcher.publish(status_topic, b"", retain=True, wait=True)  # leave no retained status behind
    watcher.close()


def test_unreachable_broker_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError, match=f"cannot reach MQTT broker at mqtt://127.0.0.1:{port}"):
        MqttClient(f"mqtt://127.0.0.1:{port}").connect(timeout_s=2)


def test_client_survives_broker_restart():
    """The broker restarts on the same port: the client reconnects and re-subscribes by itself."""
    broker = EmbeddedBroker()
    url = broker.start()
    port = broker.port
    got: queue.Queue = queue.Queue()
    sub = MqttClient(url).connect()
    sub.subscribe("sdl/restart/x", lambda t, p: got.put(p))
    pub = MqttClient(url).connect()
    time.sleep(0.2)
    pub.publish("sdl/restart/x", b"before", wait=True)
    assert got.get(timeout=5) == b"before"
    broker.stop()
    time.sleep(0.5)
    assert not sub.connected
    broker2 = EmbeddedBroker(port=port)
    broker2.start()
    try:
        assert sub.wait_connected(15) and pub.wait_connected(15)
        time.sleep(0.3)  # re-subscription in flight
        pub.publish("sdl/restart/x", b"after", wait=True)
        assert got.get(timeout=5) == b"after"
    finally:
        sub.close()
        pub.close()
        broker2.stop()


def test_retained_message_reaches_a_late_subscriber(broker_url, lab_id):
    status_topic = topic(lab_id, "saxs", "status")
    with MqttClient(broker_url) as a:
        a.publish(status_topic, b"online", retain=True, wait=True)
    got: queue.Queue = queue.Queue()
    with MqttClient(broker_url) as b:
        b.subscribe(status_topic, lambda t, p: got.put(p))
        assert got.get(timeout=5) == b"online"
        b.publish(status_topic, b"", retain=True, wait=True)  # clear it


def test_subscribe_before_connect_and_publish_wait_without_connection(embedded_broker, lab_id):
    got: queue.Queue = queue.Queue()
    c = MqttClient(embedded_broker.url)
    c.subscribe(f"sdl/{lab_id}/early", lambda t, p: got.put(p))
    assert not c.connected
    with pytest.raises(TransportError, match=f"publish to 'sdl/{lab_id}/early' .* not confirmed.*stays queued"):
        c.publish(f"sdl/{lab_id}/early", b"x", wait=True, timeout_s=0.5)
    c.connect()
    try:
        time.sleep(0.2)
        c.publish(f"sdl/{lab_id}/early", b"y", wait=True)
        assert {got.get(timeout=5), got.get(timeout=5)} == {b"x", b"y"}  # QoS 1: the queued one went out too
    finally:
        c.close()
    assert not c.connected


def test_embedded_broker_starts_and_stops_without_leaking_threads():
    import threading

    before = {t.ident for t in threading.enumerate()}
    with EmbeddedBroker() as broker:
        assert broker.url.startswith("mqtt://127.0.0.1:") and broker.port > 0
        with MqttClient(broker.url) as c:
            assert c.connected
    time.sleep(0.2)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_embedded_broker_iterates_its_subscriptions_over_a_snapshot():
    """amqtt 0.12 awaits inside `for topic in broker._subscriptions` while a client reconnects; a subscription
    added meanwhile must not raise (it dropped the reconnecting client's session once in the soak-fault test)."""
    subs = _Subscriptions({"a/#": []})
    seen = []
    for topic in subs:  # a subscription made while the loop is suspended
        subs[f"b/{len(subs)}"] = []
        seen.append(topic)
    assert seen == ["a/#"] and len(subs) == 2
    broker = EmbeddedBroker()
    broker.start()
    try:
        assert isinstance(broker._broker._subscriptions, _Subscriptions)
    finally:
        broker.stop()
