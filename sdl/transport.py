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
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise TransportError(f"broker URL {url!r} not understood; use mqtt://HOST[:PORT] or mqtts://HOST[:PORT] "
                             "(user:password@ allowed)")
    tls = SCHEMES[parts.scheme]
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise TransportError(f"broker URL {url!r} has an invalid port") from None
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
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._first = threading.Event()
        self._refused: str | None = None
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
        self._client = c

    # ----- lifecycle --------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> "MqttClient":
        host, port = self._addr
        try:
            self._client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TransportError(f"cannot reach MQTT broker at {self.url}: {reason}; start one, or omit `broker:` "
                                 "to use the embedded broker") from None
        self._client.loop_start()
        if not self._first.wait(timeout_s) or self._refused:
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

    # ----- pub/sub ----------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, callback: Callback, qos: int = 1) -> None:
        with self._lock:
            self._subs[topic_filter] = callback
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, wait: bool = False,
                timeout_s: float = 10.0) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and not wait:
            return  # queued by paho, sent after reconnect
        if wait:
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise TransportError(f"publish to {topic!r} on {self.url} failed: {exc}") from None
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
        for f in filters:  # clean session: subscriptions come back only if we send them again
            client.subscribe(f, qos=1)
        if self._first.is_set() and not self._connected.is_set():
            log.warning("reconnected to %s", self.url)
        self._connected.set()
        self._first.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("lost connection to %s (%s); reconnecting", self.url, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            matches = [cb for f, cb in self._subs.items() if mqtt.topic_matches_sub(f, msg.topic)]
        for cb in matches:
            try:
                cb(msg.topic, msg.payload)
            except Exception:  # a callback's bug must not stop the network loop
                log.exception("callback for %s failed", msg.topic)


class EmbeddedBroker:
    """An in-process MQTT broker (amqtt) on 127.0.0.1, for campaigns that name no broker."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> str:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ready = threading.Event()
        error: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def boot() -> None:
            self._broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                                   "sys_interval": 0})
            await self._broker.start()
            self.port = self._broker._servers["default"].instance.sockets[0].getsockname()[1]

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # report to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="sdl-embedded-broker", daemon=True)
        self._thread.start()
        ready.wait(30)
        if error:
            raise TransportError(f"embedded MQTT broker could not start on {self.host}:{self.port}: {error[0]}")
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def down() -> None:
            try:
                await self._broker.shutdown()
            finally:
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in rest:
                    t.cancel()
                await asyncio.gather(*rest, return_exceptions=True)
                loop.stop()

        asyncio.run_coroutine_threadsafe(down(), loop)
        self._thread.join(10)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
