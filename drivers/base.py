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
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Callable

from sdl.errors import DriverError, ProtocolError
from sdl.protocol import CommandBody, Envelope, StatusBody, parse_body, reply, topic
from sdl.transport import MqttClient

log = logging.getLogger("sdl.drivers")

Handler = Callable[[CommandBody], dict[str, Any]]
REMEMBERED_REPLIES = 10_000


class ActionFailed(DriverError):
    """An experiment-level failure to report as an `error` reply (e.g. code 'synthesis_failed')."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Driver(ABC):
    """Base class of every driver, simulated or real."""

    def __init__(self, instrument: str, lab: str, broker_url: str, *, time_scale: float = 0.0):
        self.instrument, self.lab, self.broker_url = instrument, lab, broker_url
        self.time_scale = time_scale
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

    # ----- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Driver":
        offline = Envelope(kind="status", body=self._status("offline")).to_bytes()
        # a unique client id: two processes with the same id would knock each other off the broker forever
        client = MqttClient(self.broker_url, client_id=f"sdl-{self.lab}-{self.instrument}-{uuid.uuid4().hex[:6]}",
                            will=(self._status_topic, offline))
        client.connect()
        client.on_reconnect(lambda: self._publish_status(self._state))  # a restarted broker lost it
        with self._lock:  # commands dropped by an earlier stop() run when the orchestrator re-sends them
            self._accepted.clear()
            self._work, self._stopping = queue.Queue(), threading.Event()
        self._client = client
        self._worker = threading.Thread(target=self._run, args=(self._work, self._stopping),
                                        name=f"driver-{self.lab}-{self.instrument}", daemon=True)
        self._worker.start()
        client.subscribe(self._cmd_topic, self._on_command)
        self._publish_status("online")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the command running now (up to `timeout_s`), drop the queued ones (the orchestrator
        re-sends them with the same id), publish the retained "offline" status and disconnect."""
        if self._client is None:
            return
        self._stopping.set()
        self._work.put(None)
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)
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

    # ----- commands ---------------------------------------------------------------------------
    def _on_command(self, topic_name: str, payload: bytes) -> None:
        try:
            env = Envelope.from_bytes(payload, topic_name)
            if env.kind != "command":
                raise ProtocolError(f"driver {self.instrument!r} takes kind 'command' on {topic_name}, got {env.kind!r}")
            body = parse_body(CommandBody, env, topic_name)
        except ProtocolError as exc:
            corr = _recover_correlation_id(payload)
            log.warning("%s: %s", self.instrument, exc)
            if corr:
                self._send(Envelope(kind="error", correlation_id=corr, body={"code": "bad_command", "message": str(exc)}))
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
            self._send(done)  # idempotent: the same answer again, not a second execution
            return
        if duplicate:
            self._send(reply(env, "ack", {"queued": True, "duplicate": True}))
            return
        handlers = self.actions()
        if body.action not in handlers:
            self._finish(env, reply(env, "error", {"code": "unknown_action", "message":
                         f"{self.instrument} has no action {body.action!r}; it offers {sorted(handlers)}"}))
            return
        self._send(reply(env, "ack", {"queued": self._work.qsize()}))
        self._work.put(env)

    def _run(self, work: queue.Queue, stopping: threading.Event) -> None:
        while not stopping.is_set():
            env = work.get()
            if env is None or stopping.is_set():
                return
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
        if self._client is not None:
            self._client.publish(self._reply_topic, env.to_bytes(), qos=1)

    def _status(self, state: str) -> dict[str, Any]:
        return StatusBody(state=state, instrument=self.instrument, actions=sorted(self.actions()),
                          driver=type(self).__name__).model_dump()

    def _publish_status(self, state: str, wait: bool = False, timeout_s: float = 10.0) -> None:
        self._state = state
        if self._client is not None:
            self._client.publish(self._status_topic, Envelope(kind="status", body=self._status(state)).to_bytes(),
                                 qos=1, retain=True, wait=wait, timeout_s=timeout_s)


def _recover_correlation_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
        cid = data.get("correlation_id") if isinstance(data, dict) else None
        return cid if isinstance(cid, str) and cid else None
    except (ValueError, UnicodeDecodeError):
        return None
