"""MQTT transport: a small paho-mqtt client wrapper and the embedded broker.

`MqttClient` sets TCP_NODELAY on its socket: without it a QoS 1 request/reply on loopback costs
~88 ms (Nagle + delayed ACK), with it < 1 ms. It reconnects by itself and re-subscribes after a
broker restart. It logs in and speaks TLS as its URL says (sdl.broker: credentials from the
environment or a credentials file, `tls_ca_file` and the other options in the URL's query); the
URL it shows in messages (`.url`) has its password replaced by ***. `EmbeddedBroker` runs amqtt (a
maintained Python broker) on a free loopback port in a daemon thread, for the zero-set-up default;
asyncio sets TCP_NODELAY on its sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import uuid
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt

from sdl import broker
from sdl.broker import SCHEMES, redact_url  # noqa: F401  (SCHEMES: kept for importers)
from sdl.errors import TransportError

log = logging.getLogger("sdl.transport")

Callback = Callable[[str, bytes], None]
# X509_V_ERR_*: what a failed certificate check means, and what to do about it
_CERT_HELP = {
    18: "self-signed", 19: "self-signed", 20: "unknown CA", 21: "unknown CA", 10: "expired", 9: "not yet valid",
    62: "hostname", 64: "hostname",
}


def parse_broker_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, username, password) from mqtt://[user:pass@]host[:port] (mqtts:// for TLS);
    the password is None where the URL has none (or its *** placeholder). sdl.broker.parse has the rest."""
    b = broker.parse(url)
    return b.host, b.port, b.tls, b.username, b.password


class MqttClient:
    """paho-mqtt (MQTT 3.1.1, network loop in its own thread) with the habits sdl needs.

    Callbacks run on paho's network thread: keep them short (hand over to a queue). An exception
    in a callback is logged, never allowed to stop the network loop.
    """

    def __init__(self, url: str, client_id: str | None = None, *, will: tuple[str, bytes] | None = None,
                 username: str | None = None, password: str | None = None, credentials: str | None = None,
                 tls_ca_file: str | None = None, tls_cert_file: str | None = None, tls_key_file: str | None = None,
                 tls_insecure: bool | None = None):
        """`url`: see sdl.broker (mqtt[s]://[user@]host[:port][?options]). The keyword options, where
        given, replace those of the URL; `username`/`password` come before any other source."""
        self.url = redact_url(url).split("?", 1)[0]  # what messages show: no password, no options
        b = broker.override(broker.parse(url), credentials=credentials, tls_ca_file=tls_ca_file,
                            tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, tls_insecure=tls_insecure)
        broker.check_options(b, self.url)
        self._addr = (b.host, b.port)
        self._broker = b
        self._subs: dict[str, Callback] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._first = threading.Event()
        self._refused: str | None = None
        self._lost: str | None = None  # why the connection closed before the broker accepted it
        self._tls_failed: str | None = None  # a TLS error on paho's thread before that
        self._unacked: dict[int, tuple[threading.Event, str]] = {}  # subscribe mid -> (set on SUBACK, filter)
        self._denied: dict[str, str] = {}  # topic filter -> the broker's refusal of its subscription
        self._waiting: set[str] = set()  # topic filters whose SUBACK subscribe() waits for
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sdl-{uuid.uuid4().hex[:12]}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        if b.tls:
            self._tls(c, b)
        creds = broker.credentials(b, username, password)
        self._login = creds
        if creds.password is not None and not creds.username:
            raise TransportError(f"broker {self.url}: a password (from {creds.source}) but no user name; give it "
                                 f"in the URL (mqtt://USER@HOST), as {broker.ENV_USERNAME}, or as `username:` in "
                                 "the credentials file")
        if creds.username:
            c.username_pw_set(creds.username, creds.password)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=0.05, max_delay=2.0)
        c.max_inflight_messages_set(100)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_log = self._on_log  # until the first connection: an error on paho's thread (a TLS alert) is kept
        self._client = c

    def _tls(self, c: mqtt.Client, b: broker.BrokerUrl) -> None:
        files = {"tls_ca_file": b.tls_ca_file, "tls_cert_file": b.tls_cert_file, "tls_key_file": b.tls_key_file}
        for option, path in files.items():
            if path is None:
                continue
            try:
                with open(Path(path).expanduser(), "rb"):
                    pass
            except OSError as exc:
                raise TransportError(f"broker {self.url}: {option} {path}: {exc.strerror or exc}") from None
        path = {k: str(Path(v).expanduser()) if v else None for k, v in files.items()}
        try:
            c.tls_set(ca_certs=path["tls_ca_file"], certfile=path["tls_cert_file"], keyfile=path["tls_key_file"])
        except (ssl.SSLError, ValueError, OSError) as exc:
            what = ("tls_cert_file/tls_key_file " + (b.tls_cert_file or "") if b.tls_cert_file else
                    f"tls_ca_file {b.tls_ca_file}" if b.tls_ca_file else "the system's CA certificates")
            raise TransportError(f"broker {self.url}: cannot load {what}: {getattr(exc, 'reason', None) or exc} "
                                 "(PEM files expected; a key must belong to its certificate)") from None
        if b.tls_insecure:
            c.tls_insecure_set(True)
            broker.warn_once(f"insecure:{self.url}", f"broker {self.url}: tls_insecure: the broker's certificate is "
                             "not checked against its host name; any server with a certificate of that CA can pose "
                             "as the broker (for tests only)")

    # ----- lifecycle --------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> "MqttClient":
        host, port = self._addr
        try:
            self._client.connect(host, port, keepalive=30)
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(self._certificate_error(exc)) from None
        except ssl.SSLError as exc:
            raise TransportError(f"TLS handshake with the MQTT broker at {self.url} failed: "
                                 f"{exc.reason or exc}{self._tls_hint(str(exc.reason or exc))}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            reason = reason[:1].lower() + reason[1:]
            if self._broker.tls and isinstance(exc, (ConnectionResetError, BrokenPipeError)):  # in the handshake
                raise TransportError(f"TLS handshake with the MQTT broker at {self.url} failed: {reason}; is it a "
                                     "TLS port? (plain MQTT is mqtt://, usually port 1883)") from None
            raise TransportError(f"cannot reach MQTT broker at {self.url}: {reason}; start one, or omit `broker:` "
                                 "to use the embedded broker") from None
        self._client.loop_start()
        if not self._first.wait(timeout_s) or self._refused or self._tls_failed:
            self._client.disconnect()
            self._client.loop_stop()
            if self._refused:
                raise TransportError(self._refusal())
            if self._tls_failed:
                raise TransportError(f"TLS with the MQTT broker at {self.url} failed: {self._tls_failed}"
                                     f"{self._tls_hint(self._tls_failed)}")
            why = f": the connection closed ({self._lost})" if self._lost else ""
            hint = "" if self._broker.tls else "; if it listens with TLS, use mqtts://"
            if self._lost and self._broker.tls:
                hint = self._tls_hint(self._lost)
            raise TransportError(f"MQTT broker at {self.url} did not accept the connection within {timeout_s:g} s"
                                 f"{why}{hint}")
        return self

    def _refusal(self) -> str:
        """The one line for a broker's refused CONNECT: who, why, and what to do."""
        login = self._login
        text = f"MQTT broker at {self.url} refused the connection: {self._refused}"
        if "user name or password" in self._refused or "not authori" in self._refused:
            if login.password is None and not login.username:
                return f"{text}; it needs a user name and password: {broker.HOW}"
            sent = f"user {login.username!r}" + (f" with the password from {login.source}" if login.source
                                                 else " without a password")
            return f"{text} ({sent}); check them, or {broker.HOW}"
        return text

    def _certificate_error(self, exc: ssl.SSLCertVerificationError) -> str:
        b = self._broker
        kind = _CERT_HELP.get(exc.verify_code)
        text = f"TLS: the MQTT broker at {self.url} presented a certificate that failed the check: " \
            f"{(exc.verify_message or str(exc)).rstrip('.')}"
        if kind in ("self-signed", "unknown CA"):
            where = (f"the CA file {b.tls_ca_file} did not sign it; give the CA that did" if b.tls_ca_file else
                     "it is not signed by a CA this machine trusts; give the CA certificate that signed it")
            return f"{text}; {where} (broker_tls: {{ca_file: PATH}} in the campaign, --tls-ca-file PATH)"
        if kind == "hostname":
            return (f"{text}; connect by a name the certificate lists (or, for tests only, broker_tls: "
                    "{insecure: true} / --tls-insecure skips this check)")
        if kind in ("expired", "not yet valid"):
            return f"{text}; the broker needs a valid certificate (or this machine's clock is wrong)"
        return text

    def _tls_hint(self, reason: str) -> str:
        r = reason.lower()
        if "wrong_version" in r or "wrong version" in r or "record layer" in r or "eof" in r:
            return "; is it a TLS port? (plain MQTT is mqtt://, usually port 1883)"
        if "certificate required" in r or "handshake failure" in r or "certificate" in r and "alert" in r:
            return ("; the broker may require a client certificate: broker_tls: {cert_file: PATH, key_file: PATH} "
                    "(--tls-cert-file, --tls-key-file), signed by a CA it trusts")
        return ""

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
        next cannot be missed; TransportError when the broker refuses it (its ACL)."""
        with self._lock:
            self._subs[topic_filter] = callback
        if self.connected:
            with self._lock:
                self._waiting.add(topic_filter)
            try:
                self._subscribe(self._client, topic_filter, qos).wait(timeout_s)
            finally:
                with self._lock:
                    self._waiting.discard(topic_filter)
                    refused = self._denied.pop(topic_filter, None)
                    if refused:
                        self._subs.pop(topic_filter, None)
            if refused:
                raise TransportError(self._denial(topic_filter, refused))

    def _denial(self, topic_filter: str, reason: str) -> str:
        who = f"user {self._login.username!r}" if self._login.username else "an anonymous client"
        return (f"MQTT broker at {self.url} refused the subscription to {topic_filter!r} ({reason}); its ACL must let "
                f"{who} read it")

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

    def _on_log(self, client, userdata, level, text) -> None:
        if level == mqtt.MQTT_LOG_ERR and not self._first.is_set():
            self._lost = str(text)
            if "[SSL" in self._lost:  # a TLS alert after the handshake (no client certificate): no retry helps
                self._tls_failed = self._lost.removeprefix("failed to receive on socket: ")
                self._first.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.on_log = None  # nothing more to learn from paho's log
        if reason_code.is_failure:
            self._refused = str(reason_code).lower()
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
                self._unacked[mid] = (acked, topic_filter)
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
            acked, topic_filter = self._unacked.pop(mid, (None, None))
        failed = next((rc for rc in reason_codes or [] if getattr(rc, "is_failure", False)), None)
        if failed is not None and topic_filter is not None:
            with self._lock:
                waited = topic_filter in self._waiting
                if waited:
                    self._denied[topic_filter] = str(failed).lower()
            if not waited:  # a re-subscription after a reconnect: nobody to raise to
                log.warning(self._denial(topic_filter, str(failed).lower()))
        if acked is not None:
            acked.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._first.is_set() or self._refused:  # connect() says why, once
            self._lost = self._lost or str(reason_code).lower()
            return
        if reason_code != 0:
            log.warning("lost connection to %s (%s); reconnecting", self.url, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            matches = [cb for f, cb in self._subs.items() if mqtt.topic_matches_sub(f, msg.topic)]
        if not matches:  # e.g. retained messages in flight when a driver's start-up check unsubscribed
            log.debug("dropped a %d-byte message on %s from %s: no subscription of this client matches it",
                        len(msg.payload), msg.topic, self.url)
        for cb in matches:
            try:
                cb(msg.topic, msg.payload)
            except Exception:  # a callback's bug must not stop the network loop
                log.exception("dropped a %d-byte message on %s: its callback failed", len(msg.payload), msg.topic)


class _Subscriptions(dict):
    """amqtt's topic-filter -> subscribers map, iterated over a snapshot of its keys. amqtt 0.12 awaits inside
    `for topic in self._subscriptions` while a client (re)connects; a subscription made meanwhile raised
    "dictionary changed size during iteration" and dropped that client's session (seen once in
    tests/test_soak_faults.py: the SAXS driver's command was never answered)."""

    def __iter__(self):
        return iter(list(super().__iter__()))


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
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self._subscriptions = _Subscriptions()

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
