"""The MQTT wire format (docs/protocol.md is the contract for driver authors).

Topics:   sdl/<lab>/<instrument>/cmd     orchestrator -> driver   (QoS 1)
          sdl/<lab>/<instrument>/reply   driver -> orchestrator   (QoS 1)
          sdl/<lab>/<instrument>/status  driver, retained; its last will sets "offline"

Every payload is a JSON `Envelope` of at most MAX_MESSAGE_BYTES, strict JSON (no `NaN` or
`Infinity` literals). Arrays travel as `ArrayPayload`: dtype, shape and the little-endian bytes in
base64, validated (size, finiteness is the analyser's business) on receipt.

Message authentication (`Authenticator`): with a lab secret (SDL_LAB_SECRET or the file named by
SDL_LAB_SECRET_FILE) every message carries, as its last member, `"auth":"hmac-sha256:<hex>"`: an
HMAC-SHA256 over the exact bytes sent before it (and the topic), keyed per instrument from the lab
secret; commands and replies are also checked for freshness (`sent_at`) and replays. Without a
secret messages go unsigned, as before. A driver's statuses and replies carry its `session`, so a
receiver can tell one driver process (and one lab instance) from another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdl.errors import ConfigError, ProtocolError

SCHEMA_VERSION = 1
TOPIC_ROOT = "sdl"

MessageKind = Literal["command", "ack", "result", "error", "status"]
# the largest payload a receiver accepts (a 2048 x 2048 float32 image in base64 is 22.4 MB); larger
# messages are refused unread
MAX_MESSAGE_BYTES = 32 * 2**20
# dtypes a driver may send; always little-endian on the wire
ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "<u2", "<u4", "|u1", "|b1"}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def topic(lab: str, instrument: str, channel: Literal["cmd", "reply", "status"]) -> str:
    """The topic of one instrument's channel; instrument "+" gives the filter for all of a lab's."""
    for label, part in (("lab", lab), ("instrument", instrument)):
        if part == "+" and label == "instrument":
            continue
        if not part or any(c in part for c in "/+#"):
            raise ProtocolError(f"{label} name {part!r} cannot be a topic segment (no '/', '+', '#', not empty)")
    return f"{TOPIC_ROOT}/{lab}/{instrument}/{channel}"


class ArrayPayload(BaseModel):
    """A numpy array on the wire: `{"dtype": "<f8", "shape": [200], "data": "<base64>"}`."""

    model_config = ConfigDict(extra="forbid")
    dtype: str
    shape: list[int]
    data: str

    @classmethod
    def encode(cls, array: np.ndarray) -> "ArrayPayload":
        a = np.asarray(array)
        if a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8):
            a = a.astype("<f8")
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
        return cls(dtype=a.dtype.str, shape=list(a.shape), data=base64.b64encode(a.tobytes()).decode("ascii"))

    def decode(self, name: str = "array") -> np.ndarray:
        if self.dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {self.dtype!r} not allowed; use one of {sorted(ALLOWED_DTYPES)}")
        if any(n < 0 for n in self.shape):
            raise ProtocolError(f"array {name!r}: negative dimension in shape {self.shape}")
        try:
            raw = base64.b64decode(self.data, validate=True)
        except ValueError as exc:
            raise ProtocolError(f"array {name!r}: data is not valid base64 ({exc})") from None
        dt = np.dtype(self.dtype)
        expected = int(np.prod(self.shape, dtype=np.int64)) * dt.itemsize
        if len(raw) != expected:
            raise ProtocolError(
                f"array {name!r}: {len(raw)} bytes do not fit shape {self.shape} of {self.dtype} ({expected} bytes expected)"
            )
        return np.frombuffer(raw, dtype=dt).reshape(self.shape).astype(dt.newbyteorder("="))


class Envelope(BaseModel):
    """Every MQTT payload. `correlation_id` is the command id: stable across re-sends of the same
    command (a resumed campaign re-sends with the same id), echoed by every reply to it."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    message_id: str = Field(default_factory=new_id)
    correlation_id: str | None = None
    campaign_id: str | None = None
    kind: MessageKind
    sent_at: datetime = Field(default_factory=utcnow)
    body: dict[str, Any] = Field(default_factory=dict)
    # the sending driver's session (a random id per start of a driver), in its statuses and replies
    session: str | None = None
    # "hmac-sha256:<64 hex>", the last member of a signed message (Authenticator.seal); left out unsigned
    auth: str | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} not supported (this sdl speaks {SCHEMA_VERSION})")
        return v

    def to_bytes(self) -> bytes:
        """Compact JSON; `session` and `auth` are left out when None (an unsigned message of a driver
        without sessions is what schema version 1 always was)."""
        return self.model_dump_json(exclude={k for k in ("session", "auth") if getattr(self, k) is None}).encode("utf-8")

    @classmethod
    def from_bytes(cls, payload: bytes, topic_name: str = "?", max_bytes: int | None = None) -> "Envelope":
        """The envelope in `payload`; ProtocolError saying why not: larger than `max_bytes`
        (default MAX_MESSAGE_BYTES; checked before parsing), not JSON (a `NaN`, `Infinity` or
        `-Infinity` literal included: RFC 8259 has none, and Python's json would accept them; a
        number beyond a double, which would arrive as inf), not a valid envelope."""
        limit = MAX_MESSAGE_BYTES if max_bytes is None else max_bytes
        if len(payload) > limit:
            raise ProtocolError(f"message on {topic_name!r} is {len(payload):,} bytes, above the limit of "
                                f"{limit:,} bytes (sdl.protocol.MAX_MESSAGE_BYTES)")
        try:
            data = json.loads(payload, parse_constant=_no_constant, parse_float=_finite)
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, _no_constant's
            raise ProtocolError(f"message on {topic_name!r} is not JSON: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ProtocolError(f"message on {topic_name!r} is not a valid envelope: {_explain(exc)}") from None


# ----- bodies -----------------------------------------------------------------------------------


class CommandBody(BaseModel):
    """Body of a `command`: run `action` with `params`. `sample_id` names the physical sample."""

    model_config = ConfigDict(extra="forbid")
    action: str
    sample_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = None
    sample: dict[str, Any] | None = None  # what is known of the sample (the synthesis result's record)


class ErrorBody(BaseModel):
    """Body of an `error` reply. `code` is machine-readable: bad_command, unknown_action,
    busy, synthesis_failed, measurement_failed, internal."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class Limit(BaseModel):
    """A hard safety limit of one command parameter (the instrument's physical envelope): the
    driver refuses a command whose value lies outside [min, max], whatever the campaign says."""

    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None
    unit: str | None = None

    def text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return f"{lo} to {hi}{unit}"


def limits_from(spec: dict[str, Any] | None) -> dict[str, Limit]:
    """Safety limits from a declaration: {param: (lo, hi) | (lo, hi, unit) | {"min", "max", "unit"} | Limit}."""
    out: dict[str, Limit] = {}
    for name, v in (spec or {}).items():
        if isinstance(v, Limit):
            out[name] = v
        elif isinstance(v, dict):
            out[name] = Limit.model_validate(v)
        else:
            lo, hi, *unit = v
            out[name] = Limit(min=lo, max=hi, unit=unit[0] if unit else None)
    return out


class StatusBody(BaseModel):
    """Body of the retained `status` message. `limits`: the driver's hard safety limits per
    command parameter; `since`, `host`, `pid`: when and where this driver session started (the
    envelope's `session` names it), for the person told that the instrument is already served."""

    model_config = ConfigDict(extra="allow")
    state: Literal["online", "busy", "offline"]
    instrument: str
    actions: list[str] = Field(default_factory=list)
    driver: str | None = None
    limits: dict[str, Limit] = Field(default_factory=dict)
    since: datetime | None = None
    host: str | None = None
    pid: int | None = None


def command(action: str, *, correlation_id: str, campaign_id: str | None = None, sample_id: str | None = None,
            params: dict[str, Any] | None = None, timeout_s: float | None = None,
            sample: dict[str, Any] | None = None) -> Envelope:
    body = CommandBody(action=action, sample_id=sample_id, params=params or {}, timeout_s=timeout_s, sample=sample)
    return Envelope(kind="command", correlation_id=correlation_id, campaign_id=campaign_id,
                    body=body.model_dump(exclude_none=True))


def reply(to: Envelope, kind: MessageKind, body: dict[str, Any]) -> Envelope:
    return Envelope(kind=kind, correlation_id=to.correlation_id, campaign_id=to.campaign_id, body=body)


def new_correlation_id(prefix: str) -> str:
    """A command id: `prefix` (readable: campaign, trial, step) and 96 random bits, so that no one
    can guess the id of a command before it is sent."""
    return f"{prefix}:{secrets.token_hex(12)}"


def parse_body(model: type[BaseModel], env: Envelope, topic_name: str = "?"):
    try:
        return model.model_validate(env.body)
    except ValidationError as exc:
        raise ProtocolError(f"{env.kind} body on {topic_name!r} invalid: {_explain(exc)}") from None


def _no_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON value (send null for a missing number)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON, but it would arrive as inf
        raise ValueError(f"number {text[:40]} is out of the range of a double")
    return value


def _explain(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


# ----- message authentication ---------------------------------------------------------------------

SECRET_ENV = "SDL_LAB_SECRET"
SECRET_FILE_ENV = "SDL_LAB_SECRET_FILE"
MIN_SECRET_BYTES = 16
MAX_CLOCK_SKEW_S = 300.0  # a command or reply whose sent_at is further from the receiver's clock is refused
REPLAY_MEMORY = 100_000  # signatures remembered against replays (each for 2 x MAX_CLOCK_SKEW_S)
AUTH_ALG = "hmac-sha256"
_AUTH_TAIL = re.compile(rb',"auth":"hmac-sha256:([0-9a-f]{64})"\}\Z')


class AuthError(ProtocolError):
    """A message that fails authentication: unsigned under a lab secret, a wrong signature, too old
    or too new, or a replay."""


def lab_secret(environ: dict[str, str] | None = None) -> bytes | None:
    """The lab's shared secret from SDL_LAB_SECRET, or from the file SDL_LAB_SECRET_FILE names
    (surrounding whitespace stripped); None when neither is set. ConfigError for both set, an
    unreadable file, or a secret shorter than MIN_SECRET_BYTES."""
    env = os.environ if environ is None else environ
    value, path = env.get(SECRET_ENV), env.get(SECRET_FILE_ENV)
    if value and path:
        raise ConfigError(f"both {SECRET_ENV} and {SECRET_FILE_ENV} are set; set one")
    if path:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{SECRET_FILE_ENV}={path}: cannot read the lab secret: {exc.strerror or exc}") from None
        where = f"{SECRET_FILE_ENV}={path}"
    elif value:
        raw, where = value.strip().encode("utf-8"), SECRET_ENV
    else:
        return None
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(f"{where}: the lab secret has {len(raw)} bytes; use at least {MIN_SECRET_BYTES} "
                          "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return raw


def new_secret() -> str:
    """A fresh random lab secret (256 bits, hex)."""
    return secrets.token_hex(32)


def instrument_key(secret: bytes, lab: str, instrument: str) -> bytes:
    """The HMAC key of one instrument's topics: HMAC-SHA256(secret, "sdl-key-v1\n<lab>\n<instrument>")."""
    return hmac.new(secret, b"sdl-key-v1\n" + lab.encode("utf-8") + b"\n" + instrument.encode("utf-8"),
                    hashlib.sha256).digest()


def message_mac(key: bytes, topic_name: str, signed: bytes) -> str:
    """HMAC-SHA256(key, "sdl-mac-v1\n<topic>\n" + the message bytes before the auth member + "}"), hex."""
    return hmac.new(key, b"sdl-mac-v1\n" + topic_name.encode("utf-8") + b"\n" + signed, hashlib.sha256).hexdigest()


class Authenticator:
    """Signs and checks messages with a lab secret (docs/protocol.md#message-authentication); with
    no secret (`enabled` False) it signs nothing and checks nothing beyond the envelope.

    `seal(topic, payload)`: the payload with `,"auth":"hmac-sha256:<hex>"` put before its final `}`.
    `open(topic, payload)`: the Envelope, or AuthError (unsigned, wrong signature, a command or reply
    whose `sent_at` is more than MAX_CLOCK_SKEW_S from this clock, a replay of a command or reply
    already received) / ProtocolError (too large, not JSON, not an envelope)."""

    def __init__(self, secret: bytes | str | None, *, max_skew_s: float = MAX_CLOCK_SKEW_S):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self.secret = secret or None
        self.max_skew_s = max_skew_s
        self._keys: dict[tuple[str, str], bytes] = {}
        self._seen: OrderedDict[str, float] = OrderedDict()  # mac -> monotonic time it may be forgotten
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def _key(self, topic_name: str) -> bytes:
        parts = topic_name.split("/")
        if len(parts) != 4 or parts[0] != TOPIC_ROOT:
            raise AuthError(f"topic {topic_name!r} is not sdl/<lab>/<instrument>/<channel>: no key for it")
        lab, instrument = parts[1], parts[2]
        key = self._keys.get((lab, instrument))
        if key is None:
            key = self._keys[(lab, instrument)] = instrument_key(self.secret, lab, instrument)
        return key

    def seal(self, topic_name: str, payload: bytes) -> bytes:
        if not self.enabled:
            return payload
        if not payload.endswith(b"}"):
            raise ProtocolError("only a JSON object can be signed")
        mac = message_mac(self._key(topic_name), topic_name, payload)
        return payload[:-1] + b',"auth":"' + AUTH_ALG.encode() + b":" + mac.encode("ascii") + b'"}'

    def failure(self, topic_name: str, payload: bytes) -> str | None:
        """Why `payload` is not signed with this secret for `topic_name`, or None (signature only:
        no freshness or replay check)."""
        m = _AUTH_TAIL.search(payload)
        if m is None:
            return (f"not signed (no `\"auth\":\"{AUTH_ALG}:...\"` member at its end), and this lab requires "
                    f"message authentication ({SECRET_ENV})")
        try:
            key = self._key(topic_name)
        except AuthError as exc:
            return str(exc)
        expected = message_mac(key, topic_name, payload[:m.start()] + b"}")
        if not hmac.compare_digest(expected.encode("ascii"), m.group(1)):
            return (f"wrong {AUTH_ALG} signature: signed with another lab secret, altered on the way, or "
                    "forged")
        return None

    def open(self, topic_name: str, payload: bytes) -> Envelope:
        if not self.enabled:
            return Envelope.from_bytes(payload, topic_name)
        if len(payload) > MAX_MESSAGE_BYTES:
            return Envelope.from_bytes(payload, topic_name)  # raises: the size is said first
        why = self.failure(topic_name, payload)
        if why:
            raise AuthError(why)
        env = Envelope.from_bytes(payload, topic_name)
        if env.kind == "status":
            return env  # retained: may be old by nature; tied to its driver session instead
        skew = abs((utcnow() - env.sent_at).total_seconds()) if env.sent_at.tzinfo else float("inf")
        if skew > self.max_skew_s:
            raise AuthError(f"{env.kind} {env.message_id} was sent at {env.sent_at.isoformat()}, {skew:.0f} s from "
                            f"this clock (more than {self.max_skew_s:g} s): a replayed message, or clocks out of step")
        mac = _AUTH_TAIL.search(payload).group(1).decode("ascii")
        now = time.monotonic()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > REPLAY_MEMORY):
                self._seen.popitem(last=False)
            if mac in self._seen:
                raise AuthError(f"a replay of {env.kind} {env.message_id} (the same signed message received before)")
            self._seen[mac] = now + 2 * self.max_skew_s
        return env
