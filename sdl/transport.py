"""MQTT transport: a small paho-mqtt client wrapper and the embedded broker.

`MqttClient` sets TCP_NODELAY on its socket: without it a QoS 1 request/reply on loopback costs
~88 ms (Nagle + delayed ACK), with it < 1 ms. It reconnects by itself and re-subscribes after a
broker restart. `EmbeddedBroker` runs amqtt (a maintained Python broker) on a free loopback port
in a daemon thread, for the zero-set-up default; asyncio sets TCP_NODELAY on its sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from typing import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from sdl.errors import TransportError

log = logging.getLogger("sdl.transport")

Callback = Callable[[str, bytes], None]
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


def parse_broker_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, username, password) from mqtt://[user:pass@]host[:port] (mqtts:// for TLS)."""
    parts = urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme not in SCHEMES or not parts.hostname:
        raise TransportError(f"broker URL {url!r} not understood; use mqtt://HOST[:PORT], tcp://HOST[:PORT] or "
                             "mqtts://HOST[:PORT] for TLS (user:password@ allowed; default port 1883, 8883 with TLS)")
    tls = SCHEMES[parts.scheme]
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise TransportError(f"broker URL {url!r} has an invalid port; use 1-65535") from None
    return (parts.hostname, port, tls, unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)


class MqttClient:
    """paho-mqtt (MQTT 3.1.1, network loop in its own thread) with the habits sdl needs.

    Callbacks run on paho's network thread: keep them short (hand over to a queue). An exception
    in a callback is logged, never allowed to stop the network loop.
    """

    def __init__(self, url: str, client_id: str | None = None, *, will: tuple[str, bytes] | None = None):
        self.url = url
        host, port, tls, user, password = parse_broker_url(url)
        self._addr = (host, port)
        self._subs: dict[str, Callback] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._first = threading.Event()
        self._refused: str | None = None
        self._unacked: dict[int, threading.Event] = {}  # subscribe mid -> set on SUBACK
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sdl-{uuid.uuid4().hex[:12]}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        if tls:
            c.tls_set()
        if user:
            c.username_pw_set(user, password)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=0.05, max_delay=2.0)
        c.max_inflight_messages_set(100)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    # ----- lifecycle --------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> "MqttClient":
        host, port = self._addr
        try:
            self._client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            reason = reason[:1].lower() + reason[1:]
            raise TransportError(f"cannot reach MQTT broker at {self.url}: {reason}; start one, or omit `broker:` "
                                 "to use the embedded broker") from None
        self._client.loop_start()
        if not self._first.wait(timeout_s) or self._refused:
            self._client.disconnect()
            self._client.loop_stop()
            raise TransportError(f"MQTT broker at {self.url} did not accept the connection within {timeout_s:g} s"
                                 + (f": {self._refused}" if self._refused else ""))
        return self

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> "MqttClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def on_reconnect(self, fn: Callable[[], None]) -> None:
        """Call `fn()` (on a short-lived thread) after every re-connection, once the broker has
        acknowledged the re-sent subscriptions: e.g. to publish a retained status again, which a
        restarted broker has lost."""
        self._on_reconnect.append(fn)

    # ----- pub/sub ----------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, callback: Callback, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Deliver messages matching `topic_filter` to `callback(topic, payload)`. When connected,
        returns once the broker acknowledged the subscription, so a reply to what is published
        next cannot be missed."""
        with self._lock:
            self._subs[topic_filter] = callback
        if self.connected:
            self._subscribe(self._client, topic_filter, qos).wait(timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, wait: bool = False,
                timeout_s: float = 10.0) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and not wait:
            return  # queued by paho, sent after reconnect
        if wait:
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                queued = " (it stays queued and goes out when the connection is back)" if qos > 0 else ""
                raise TransportError(f"publish to {topic!r} on {self.url} not confirmed: {exc}{queued}") from None
            if not info.is_published():
                raise TransportError(f"publish to {topic!r} on {self.url} not acknowledged within {timeout_s:g} s")

    # ----- paho callbacks (network thread) ----------------------------------------------------
    def _on_socket_open(self, client, userdata, sock) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket (e.g. websockets)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._first.set()
            return
        with self._lock:
            filters = list(self._subs)
        # clean session: subscriptions come back only if we send them again
        acks = [self._subscribe(client, f) for f in filters]
        again = self._first.is_set()
        self._connected.set()
        self._first.set()
        if again:
            log.warning("reconnected to %s", self.url)
            # the hooks (e.g. "online again") wait for the SUBACKs: a command sent on seeing
            # them must find the subscription in place; this thread delivers the SUBACKs, so wait elsewhere
            threading.Thread(target=self._after_reconnect, args=(acks,), daemon=True).start()

    def _subscribe(self, client, topic_filter: str, qos: int = 1) -> threading.Event:
        acked = threading.Event()
        with self._lock:  # held so that the SUBACK cannot be handled before its mid is known
            rc, mid = client.subscribe(topic_filter, qos=qos)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._unacked[mid] = acked
            else:
                acked.set()  # not connected: sent again on (re)connect
        return acked

    def _after_reconnect(self, acks: list[threading.Event]) -> None:
        for a in acks:
            a.wait(10.0)
        for fn in list(self._on_reconnect):
            try:
                fn()
            except Exception:
                log.exception("on_reconnect hook failed")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            acked = self._unacked.pop(mid, None)
        if acked is not None:
            acked.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("lost connection to %s (%s); reconnecting", self.url, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            matches = [cb for f, cb in self._subs.items() if mqtt.topic_matches_sub(f, msg.topic)]
        if not matches:  # a broker should not send it; said rather than lost without a word
            log.warning("dropped a %d-byte message on %s from %s: no subscription of this client matches it",
                        len(msg.payload), msg.topic, self.url)
        for cb in matches:
            try:
                cb(msg.topic, msg.payload)
            except Exception:  # a callback's bug must not stop the network loop
                log.exception("dropped a %d-byte message on %s: its callback failed", len(msg.payload), msg.topic)


class EmbeddedBroker:
    """An in-process MQTT broker (amqtt) on 127.0.0.1, for campaigns that name no broker.

    QoS 0/1/2, retained messages and last wills are amqtt's; anonymous access, nothing persisted.
    Its asyncio loop runs in a daemon thread; asyncio sets TCP_NODELAY on every accepted socket.
    `stop()` closes the listener and every client connection first (amqtt's own shutdown can
    wait for ever on a session), so the port is free again when it returns.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> str:
        from amqtt.broker import Broker

        logging.getLogger("amqtt").setLevel(logging.ERROR)  # WARNING chatters ("messages not broadcasted")
        logging.getLogger("transitions").setLevel(logging.ERROR)
        if self._loop is not None:
            return self.url
        writers = self._writers

        class _Broker(Broker):
            async def stream_connected(self, reader, writer, listener_name):  # remember connections to close them
                writers.add(writer)
                try:
                    await super().stream_connected(reader, writer, listener_name)
                finally:
                    writers.discard(writer)

        ready = threading.Event()
        error: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def boot() -> None:
            self._broker = _Broker({"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                                    "sys_interval": 0}, loop=loop)
            await self._broker.start()
            self.port = self._broker._servers["default"].instance.sockets[0].getsockname()[1]

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # report to start()
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=serve, name=f"sdl-embedded-broker-{self.port}", daemon=True)
        thread.start()
        if not ready.wait(30):
            raise TransportError(f"embedded MQTT broker on {self.host}:{self.port} did not start within 30 s")
        if error:
            thread.join(5)
            raise TransportError(f"embedded MQTT broker could not start on {self.host}:{self.port}: {error[0]}")
        self._loop, self._thread = loop, thread
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        broker, writers = self._broker, self._writers

        async def down() -> None:
            try:
                for server in broker._servers.values():  # free the port at once
                    if server.instance is not None:
                        server.instance.close()
                for w in list(writers):  # clients see the connection drop (and reconnect elsewhere/later)
                    w.transport.abort()
                try:
                    await asyncio.wait_for(broker.shutdown(), timeout=2.0)
                except (asyncio.TimeoutError, Exception) as exc:  # amqtt's shutdown is best effort here
                    log.debug("embedded broker shutdown: %r", exc)
            finally:
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in rest:
                    t.cancel()
                await asyncio.wait(rest, timeout=1.0) if rest else None
                loop.stop()

        asyncio.run_coroutine_threadsafe(down(), loop)
        self._thread.join(10)
        if self._thread.is_alive():
            log.warning("embedded MQTT broker thread did not stop within 10 s")

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
