"""The MQTT wire format (docs/protocol.md is the contract for driver authors).

Topics:   sdl/<lab>/<instrument>/cmd     orchestrator -> driver   (QoS 1)
          sdl/<lab>/<instrument>/reply   driver -> orchestrator   (QoS 1)
          sdl/<lab>/<instrument>/status  driver, retained; its last will sets "offline"

Every payload is a JSON `Envelope` of at most MAX_MESSAGE_BYTES, strict JSON (no `NaN` or
`Infinity` literals). Arrays travel as `ArrayPayload`: dtype, shape and the little-endian bytes in
base64, validated (size, finiteness is the analyser's business) on receipt.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdl.errors import ProtocolError

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

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} not supported (this sdl speaks {SCHEMA_VERSION})")
        return v

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

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


class StatusBody(BaseModel):
    """Body of the retained `status` message."""

    model_config = ConfigDict(extra="allow")
    state: Literal["online", "busy", "offline"]
    instrument: str
    actions: list[str] = Field(default_factory=list)
    driver: str | None = None


def command(action: str, *, correlation_id: str, campaign_id: str | None = None, sample_id: str | None = None,
            params: dict[str, Any] | None = None, timeout_s: float | None = None,
            sample: dict[str, Any] | None = None) -> Envelope:
    body = CommandBody(action=action, sample_id=sample_id, params=params or {}, timeout_s=timeout_s, sample=sample)
    return Envelope(kind="command", correlation_id=correlation_id, campaign_id=campaign_id,
                    body=body.model_dump(exclude_none=True))


def reply(to: Envelope, kind: MessageKind, body: dict[str, Any]) -> Envelope:
    return Envelope(kind=kind, correlation_id=to.correlation_id, campaign_id=to.campaign_id, body=body)


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
