"""Driver SDK: everything a driver needs except "do this command".

A driver subclasses `Driver` and returns its actions from `actions()`: a mapping of action name
to a handler `(CommandBody) -> dict` (the result body). The base class connects, publishes the
retained status (its last will sets "offline"), parses and validates commands, acknowledges
them, runs them one at a time in a worker thread (an instrument does one thing at a time),
replies with the result or an error, and is idempotent on the command id (`correlation_id`): a
repeated command gets the stored reply again and is never executed twice.

A handler that needs the command's ids (e.g. to seed a simulation) reads `self.current` (the
Envelope being executed). `simulate_time(seconds)` spends simulated instrument time (sleeping
seconds * time_scale); a result body without `duration_s` gets the simulated time it spent.

Trust (docs/security.md):

- Every start is a new driver *session* (a random id) named in its statuses and replies. A driver
  refuses to start when another session of the same lab id and instrument is online on the broker
  (two labs under one id would each answer the other's commands); a session that finds another one
  started after it anyway (a race) leaves the instrument to the earlier one.
- With a lab secret (`secret=`, else SDL_LAB_SECRET / SDL_LAB_SECRET_FILE) commands must carry a
  valid HMAC (sdl.protocol.Authenticator); unsigned, forged, stale or replayed ones are logged and
  dropped unanswered; statuses and replies are signed.
- `safety_limits()` (class attribute SAFETY_LIMITS by default): the instrument's physical envelope,
  {param: (lo, hi[, unit])}, published with the status and enforced before a command is queued,
  whatever the campaign asks: a value outside is refused with a `bad_command` error whose body
  names the limit (`limit`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Callable

from sdl.errors import DriverError, ProtocolError
from sdl.protocol import (
    AuthError, Authenticator, CommandBody, Envelope, Limit, StatusBody, lab_secret, limits_from, parse_body, reply,
    topic, utcnow,
)
from sdl.transport import MqttClient, parse_broker_url

log = logging.getLogger("sdl.drivers")

Handler = Callable[[CommandBody], dict[str, Any]]
REMEMBERED_REPLIES = 10_000


class ActionFailed(DriverError):
    """An experiment-level failure to report as an `error` reply (e.g. code 'synthesis_failed')."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class OutsideLimits(ProtocolError):
    """A command parameter outside the driver's safety limits: a `bad_command` error whose body
    has `limit` ({param, value, min, max, unit})."""

    def __init__(self, message: str, limit: dict[str, Any]):
        super().__init__(message)
        self.limit = limit


class InstrumentInUse(DriverError):
    """Another driver session of the same lab id and instrument is online: this one does not start."""


class Driver(ABC):
    """Base class of every driver, simulated or real.

    `secret`: the lab's shared secret for message authentication; None reads SDL_LAB_SECRET /
    SDL_LAB_SECRET_FILE when the driver starts (neither set: unsigned, as before)."""

    SAFETY_LIMITS: dict[str, Any] = {}  # {param: (lo, hi) | (lo, hi, unit)}: the instrument's physical envelope
    # after the broker acknowledged the subscriptions (retained statuses come before the second
    # SUBACK), how much longer start() waits for a retained status of another driver session
    LIVE_CHECK_S = 0.05
    RESTORE_EVERY_S = 1.0  # at most this often the status is published again over one that failed authentication

    def __init__(self, instrument: str, lab: str, broker_url: str, *, time_scale: float = 0.0,
                 secret: bytes | str | None = None):
        self.instrument, self.lab, self.broker_url = instrument, lab, broker_url
        self.time_scale = time_scale
        self._secret = secret
        self._auth = Authenticator(None)
        self.session: str | None = None  # this start's random id, in every status and reply
        self._since = None
        self._serving = False  # commands are taken (after the start-up check)
        self._yielded = False  # another session serves this instrument: this one stays silent
        self._early: list[tuple[str, bytes]] | None = None  # commands received during the start-up check
        self._rivals: set[str] = set()  # other sessions seen on the status topic since start
        self._restored_at = 0.0  # when this driver last published its status again over another's
        self._restore_due = False  # a later publication of it is scheduled
        self.busy_s = 0.0  # simulated instrument time spent, seconds
        self.current: Envelope | None = None  # the command being executed (worker thread), for its ids
        self._cmd_topic = topic(lab, instrument, "cmd")
        self._reply_topic = topic(lab, instrument, "reply")
        self._status_topic = topic(lab, instrument, "status")
        self._replies: OrderedDict[str, Envelope] = OrderedDict()  # correlation_id -> final reply
        self._accepted: set[str] = set()
        self._work: queue.Queue[Envelope | None] = queue.Queue()
        self._lock = threading.Lock()
        self._client: MqttClient | None = None
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._state = "offline"

    @abstractmethod
    def actions(self) -> dict[str, Handler]:
        """Action name -> handler returning the result body."""

    def safety_limits(self) -> dict[str, Limit]:
        """The instrument's hard safety limits per command parameter (its physical envelope),
        published with the status and enforced by `check` whatever the campaign asks. Default:
        the class attribute SAFETY_LIMITS."""
        return limits_from(self.SAFETY_LIMITS)

    def check(self, cmd: CommandBody) -> None:
        """Refuse a command before it is acknowledged and queued: raise ProtocolError (a
        `bad_command` reply). The default refuses a parameter outside `safety_limits()` (or not a
        number where a limit is declared) with OutsideLimits. Called on the network thread: keep it quick."""
        for name, lim in self.safety_limits().items():
            if name not in cmd.params:
                continue
            value = cmd.params[name]
            info = {"param": name, "value": value, **lim.model_dump(exclude_none=True)}
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OutsideLimits(f"{self.instrument} {name}={value!r} is not a number; its safety limits are "
                                    f"{lim.text()}", info)
            if (lim.min is not None and value < lim.min) or (lim.max is not None and value > lim.max):
                raise OutsideLimits(f"{self.instrument} {name}={value!r} out of range: outside the safety limits "
                                    f"{lim.text()} the driver declares (enforced whatever the campaign asks)", info)

    def use_secret(self, secret: bytes | str | None) -> None:
        """The lab secret to sign and check messages with from the next start() (None: the environment's)."""
        self._secret = secret

    # ----- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Driver":
        """Connect, make sure no other driver session serves this lab's instrument (InstrumentInUse
        otherwise, with nothing published), then take commands and publish the "online" status."""
        self._auth = Authenticator(self._secret if self._secret is not None else lab_secret())
        self.session, self._since = secrets.token_hex(8), utcnow()
        self._serving, self._yielded, self._rivals = False, False, set()
        offline = self._status_payload("offline")
        # a unique client id: two processes with the same id would knock each other off the broker forever
        client = MqttClient(self.broker_url, client_id=f"sdl-{self.lab}-{self.instrument}-{uuid.uuid4().hex[:6]}",
                            will=(self._status_topic, offline))
        client.connect()
        client.on_reconnect(self._republish)  # a restarted broker lost the retained status
        with self._lock:  # commands dropped by an earlier stop() run when the orchestrator re-sends them
            self._accepted.clear()
            self._work, self._stopping = queue.Queue(), threading.Event()
            self._early = []
        self._client = client
        probe: queue.Queue = queue.Queue()
        self._probe = probe
        # the status topic first: its retained message (another session's?) arrives before the
        # SUBACK of the command topic, so the check below cannot miss it
        client.subscribe(self._status_topic, self._on_status)
        client.subscribe(self._cmd_topic, self._on_command)
        rival = self._rival(probe, client.url)
        if rival is not None:
            self._client, self._early = None, None
            client.close()  # a clean DISCONNECT: the broker drops the will, the other session's status stays
            raise InstrumentInUse(rival)
        self._worker = threading.Thread(target=self._run, args=(self._work, self._stopping),
                                        name=f"driver-{self.lab}-{self.instrument}", daemon=True)
        self._worker.start()
        self._publish_status("online")
        with self._lock:
            early, self._early = self._early or [], None
            self._serving = True
        for item in early:
            self._on_command(*item)
        return self

    def _rival(self, probe: queue.Queue, broker: str) -> str | None:
        """What to tell the person when another session of this lab's instrument is online, or None
        (`broker`: the broker's URL as it may be shown, without password)."""
        deadline = time.monotonic() + self.LIVE_CHECK_S
        while True:
            try:
                env, st, why_not = probe.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if st.state == "offline":
                continue
            who = f"session {env.session}" if env.session else "a driver without session id"
            where = ", ".join(x for x in (f"pid {st.pid}" if st.pid else "", f"on {st.host}" if st.host else "",
                                           f"since {st.since.isoformat(timespec='seconds')}" if st.since else "") if x)
            signed = (f"; its status is not signed with this lab's secret ({why_not}): another lab instance using "
                      "the same lab id, or a forgery") if why_not else ""
            host, port, *_ = parse_broker_url(self.broker_url)
            return (f"driver {type(self).__name__} for instrument {self.instrument!r} of lab {self.lab!r} not started: "
                    f"a driver of that instrument is already {st.state} on {broker} ({who}"
                    f"{', ' + where if where else ''}){signed}. Another lab runs under lab id {self.lab!r} on this "
                    f"broker: give this one another lab id (a simulated lab started by `sdl run` without `lab.id` "
                    f"gets a unique one), or stop the other. If no such driver runs any more (it died without its "
                    f"last will), clear its retained status: `mosquitto_pub -h {host} -p {port} -r -n -t "
                    f"'{self._status_topic}'`")
        return None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the command running now (up to `timeout_s`), drop the queued ones (the orchestrator
        re-sends them with the same id), publish the retained "offline" status and disconnect."""
        if self._client is None:
            return
        self._serving = False
        self._stopping.set()
        self._work.put(None)
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)
        if not self._yielded:  # a driver that left the instrument to another session says nothing
            try:
                self._publish_status("offline", wait=True, timeout_s=2.0)
            except Exception:  # the broker may be gone already
                pass
        self._client.close()
        self._client = None

    def __enter__(self) -> "Driver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def simulate_time(self, seconds: float) -> float:
        """Spend `seconds` of simulated instrument time (sleeping seconds * time_scale)."""
        self.busy_s += seconds
        if self.time_scale > 0:
            time.sleep(seconds * self.time_scale)
        return seconds

    # ----- other sessions ---------------------------------------------------------------------
    def _on_status(self, topic_name: str, payload: bytes) -> None:
        """Network thread: statuses on this instrument's topic. Before serving, another session's go
        to the start-up check; while serving, another session's status means a rival (a race at
        start) or a stale/forged status overwrote this one's retained status."""
        if not payload:
            return  # a retained status cleared
        try:
            env = Envelope.from_bytes(payload, topic_name)
            st = parse_body(StatusBody, env, topic_name)
        except ProtocolError as exc:
            log.warning("%s: ignored a status on %s: %s", self.instrument, topic_name, exc)
            return
        if env.session is not None and env.session == self.session:
            return  # this session's own
        why_not = self._auth.failure(topic_name, payload) if self._auth.enabled else None
        if not self._serving:
            if self._early is not None:  # start-up check in progress
                self._probe.put((env, st, why_not))
            return
        if self._yielded:
            return
        other = env.session or "?"
        first = other not in self._rivals
        self._rivals.add(other)
        if why_not and not first:  # a forged status must never stay retained: published over again, at most
            wait = self._restored_at + self.RESTORE_EVERY_S - time.monotonic()  # every RESTORE_EVERY_S (two labs
            if wait <= 0:  # with different secrets under one lab id would answer each other for ever)
                first = True
            elif not self._restore_due:
                self._restore_due = True
                threading.Timer(wait, self._restore).start()
        if st.state != "offline" and not why_not and self._started_before_me(st, env.session):
            self._yielded = True
            self._serving = False
            log.error("%s of lab %s: driver session %s (%s) serves this instrument too and started first; this "
                      "session (%s) stops taking commands. Give one of the labs another lab id.", self.instrument,
                      self.lab, other, st.host or "?", self.session)
            return
        if first:  # the retained status is now the other's: say again who serves the instrument (once per session)
            if why_not:
                log.warning("%s: a status on %s failed authentication (%s); publishing this driver's status again",
                            self.instrument, topic_name, why_not)
            elif st.state != "offline":
                log.warning("%s: driver session %s of the same instrument started after this one (%s); it leaves the "
                            "instrument to this session", self.instrument, other, self.session)
            self._restored_at = time.monotonic()
            self._publish_status(self._state)

    def _restore(self) -> None:
        self._restore_due = False
        if self._serving and not self._yielded:
            self._restored_at = time.monotonic()
            self._publish_status(self._state)

    def _started_before_me(self, st: StatusBody, session: str | None) -> bool:
        if st.since is None or session is None:
            return False  # cannot tell (a driver without sessions, or a stray message): keep serving, say so
        try:
            return (st.since, session) < (self._since, self.session)
        except TypeError:  # a time without zone
            return False

    def _republish(self) -> None:
        if not self._yielded:
            self._publish_status(self._state)

    # ----- commands ---------------------------------------------------------------------------
    def _on_command(self, topic_name: str, payload: bytes) -> None:
        if not self._serving:
            with self._lock:
                if self._early is not None:  # the start-up check runs: taken once it is done
                    self._early.append((topic_name, payload))
                    return
            if not self._serving:
                return
        try:
            env = self._auth.open(topic_name, payload)
        except AuthError as exc:
            log.warning("%s: dropped a command on %s that failed authentication: %s", self.instrument, topic_name, exc)
            return
        except ProtocolError as exc:
            self._malformed(topic_name, payload, exc)
            return
        try:
            if env.kind != "command":
                raise ProtocolError(f"driver {self.instrument!r} takes kind 'command' on {topic_name}, got {env.kind!r}")
            body = parse_body(CommandBody, env, topic_name)
        except ProtocolError as exc:
            self._malformed(topic_name, payload, exc)
            return
        cid = env.correlation_id
        if not cid:
            self._send(reply(env, "error", {"code": "bad_command", "message": "command has no correlation_id"}))
            return
        with self._lock:
            done = self._replies.get(cid)
            duplicate = cid in self._accepted
            if not done and not duplicate:
                self._accepted.add(cid)
        if done is not None:
            # idempotent: the same answer again (same message_id), not a second execution; sent now
            self._send(done.model_copy(update={"sent_at": utcnow()}))
            return
        if duplicate:
            self._send(reply(env, "ack", {"queued": True, "duplicate": True}))
            return
        handlers = self.actions()
        if body.action not in handlers:
            self._finish(env, reply(env, "error", {"code": "unknown_action", "message":
                         f"{self.instrument} has no action {body.action!r}; it offers {sorted(handlers)}"}))
            return
        try:
            self.check(body)
        except OutsideLimits as exc:
            log.warning("%s: refused %s: %s", self.instrument, cid, exc)
            self._finish(env, reply(env, "error", {"code": "bad_command", "message": str(exc), "limit": exc.limit}))
            return
        except ProtocolError as exc:
            self._finish(env, reply(env, "error", {"code": "bad_command", "message": str(exc)}))
            return
        self._send(reply(env, "ack", {"queued": self._work.qsize()}))
        self._work.put(env)

    def _malformed(self, topic_name: str, payload: bytes, exc: ProtocolError) -> None:
        corr = _recover_correlation_id(payload)
        log.warning("%s: %s", self.instrument, exc)
        if corr:
            self._send(Envelope(kind="error", correlation_id=corr, body={"code": "bad_command", "message": str(exc)}))

    def _run(self, work: queue.Queue, stopping: threading.Event) -> None:
        while not stopping.is_set():
            env = work.get()
            if env is None or stopping.is_set():
                return
            if self._yielded:  # another session serves the instrument now
                with self._lock:
                    self._accepted.discard(env.correlation_id)
                continue
            try:
                self._publish_status("busy")
                self._finish(env, self._execute(env))
                if work.empty():
                    self._publish_status("online")
            except Exception:  # never let the worker die: the instrument would go silent
                log.exception("%s: worker failed on %s", self.instrument, env.correlation_id)

    def _execute(self, env: Envelope) -> Envelope:
        """Run one command; the reply to send (result or error), already checked to serialise."""
        body = CommandBody.model_validate(env.body)
        self.current, busy0 = env, self.busy_s
        try:
            result = self.actions()[body.action](body)
            if not isinstance(result, dict):
                raise TypeError(f"action {body.action!r} returned {type(result).__name__}, not a dict")
            result.setdefault("duration_s", self.busy_s - busy0)
            out = reply(env, "result", result)
            out.to_bytes()  # a body that cannot be JSON is a driver bug, reported as such
        except ActionFailed as exc:
            out = reply(env, "error", {"code": exc.code, "message": str(exc)})
        except ProtocolError as exc:
            out = reply(env, "error", {"code": "bad_command", "message": str(exc)})
        except Exception as exc:  # a driver bug: report it, keep serving
            log.exception("%s: %s failed", self.instrument, body.action)
            out = reply(env, "error", {"code": "internal", "message": f"{exc.__class__.__name__}: {exc}"})
        finally:
            self.current = None
        return out

    def _finish(self, env: Envelope, out: Envelope) -> None:
        with self._lock:
            self._replies[env.correlation_id] = out
            self._accepted.discard(env.correlation_id)
            while len(self._replies) > REMEMBERED_REPLIES:
                self._replies.popitem(last=False)
        self._send(out)

    def _send(self, env: Envelope) -> None:
        client = self._client
        if client is not None:
            if env.session != self.session:
                env = env.model_copy(update={"session": self.session})
            client.publish(self._reply_topic, self._auth.seal(self._reply_topic, env.to_bytes()), qos=1)

    def _status(self, state: str) -> dict[str, Any]:
        return StatusBody(state=state, instrument=self.instrument, actions=sorted(self.actions()),
                          driver=type(self).__name__, limits=self.safety_limits(), since=self._since,
                          host=socket.gethostname(), pid=os.getpid()).model_dump(mode="json", exclude_none=True)

    def _status_payload(self, state: str) -> bytes:
        env = Envelope(kind="status", session=self.session, body=self._status(state))
        return self._auth.seal(self._status_topic, env.to_bytes())

    def _publish_status(self, state: str, wait: bool = False, timeout_s: float = 10.0) -> None:
        self._state = state
        client = self._client
        if client is not None:
            client.publish(self._status_topic, self._status_payload(state), qos=1, retain=True, wait=wait,
                           timeout_s=timeout_s)


def _recover_correlation_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
        cid = data.get("correlation_id") if isinstance(data, dict) else None
        return cid if isinstance(cid, str) and cid else None
    except (ValueError, UnicodeDecodeError):
        return None
