"""Validation of usage events (CONTRACT.md section 1) and their dedupe keys.

`parse_event` turns one raw JSON event into an `EventRow` ready to store, or a
list of error messages. Numbers in metrics are read as exact decimals from the
JSON text, never through float.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import msgspec

# Required metrics per event type; None means "no metric required".
REQUIRED_METRICS: dict[str, tuple[str, ...]] = {
    "deployment.started": ("replicas", "cpu_millicores", "memory_mb"),
    "deployment.scaled": (),  # at least one of the shape metrics, checked below
    "deployment.stopped": (),
    "compute.snapshot": ("replicas", "cpu_millicores", "memory_mb"),
    "build.started": (),
    "build.completed": ("duration_seconds",),
    "build.failed": ("duration_seconds",),
    "volume.created": ("size_gb",),
    "volume.resized": ("size_gb",),
    "volume.deleted": (),
    "bandwidth.usage": ("egress_gb",),
    "domain.added": (),
    "domain.removed": (),
}
EVENT_TYPES = tuple(REQUIRED_METRICS)
SHAPE_METRICS = ("replicas", "cpu_millicores", "memory_mb")
# The metric that becomes an event's `quantity`, for the types billed by sum.
QUANTITY_METRIC = {
    "build.completed": "duration_seconds",
    "build.failed": "duration_seconds",
    "bandwidth.usage": "egress_gb",
}
MAX_METRIC = Decimal(10) ** 15
MAX_METRIC_DECIMALS = 20
MAX_METADATA_BYTES = 16 * 1024
MAX_RESOURCE_NAME = 255

ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    project_id: uuid.UUID
    resource_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    resource_id: ShortText
    metrics: dict[str, Any]  # numbers arrive as int or exact Decimal (float_hook)
    timestamp: datetime | None = None
    idempotency_key: ShortText | None = None
    metadata: dict[str, str] | None = None
    team_id: uuid.UUID | None = None
    resource_name: Annotated[str, msgspec.Meta(max_length=MAX_RESOURCE_NAME)] | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: list[EventIn]


class RawBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """A batch whose events are decoded one by one, to report every bad one."""

    events: list[msgspec.Raw]


class EventRow(msgspec.Struct, frozen=True):
    """One validated event, as waybill.ingest_events takes it (encoded to JSON)."""

    event_id: str  # UUID text
    project_id: uuid.UUID
    event_type: str
    resource_type: str
    resource_id: str
    event_time: datetime
    idempotency_key: str | None
    dedupe_key: str  # UUID text (32 hex digits)
    content_digest: str
    replicas: Decimal | None
    cpu_millicores: Decimal | None
    memory_mb: Decimal | None
    size_gb: Decimal | None
    quantity: Decimal | None
    metrics: msgspec.Raw  # the metrics object, already JSON
    metadata: msgspec.Raw | None
    team_id: uuid.UUID | None
    resource_name: str | None


# float_hook: a JSON number with a fraction or exponent becomes a Decimal read from
# its own text, so 45.2 is exactly 45.2.
_event_decoder = msgspec.json.Decoder(EventIn, float_hook=Decimal)
_batch_decoder = msgspec.json.Decoder(BatchIn, float_hook=Decimal)
_raw_batch_decoder = msgspec.json.Decoder(RawBatchIn)
_encoder = msgspec.json.Encoder(decimal_format="number")
# JSON can only carry a NUL character as this escape, so a body without it has none.
_NUL_ESCAPE = b"\\u0000"


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7) in canonical text form.

    Millisecond time first, so ids sort by creation; the rest is random. Built as
    text directly: uuid.UUID objects cost more than the whole event on the hot path.
    """
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _digest(payload: bytes) -> str:
    """128-bit digest as 32 hex digits, which PostgreSQL reads as a uuid."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _check_metric(name: str, value: Any, errors: list[str]) -> Decimal | None:
    if type(value) is int:  # bool is a subclass of int, and is refused below
        value = Decimal(value)
    elif type(value) is not Decimal:
        errors.append(f"metrics.{name}: must be a number")
        return None
    if not value.is_finite() or value >= MAX_METRIC:
        errors.append(f"metrics.{name}: must be finite and below 1e15")
        return None
    if value < 0:
        errors.append(f"metrics.{name}: must be >= 0")
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_METRIC_DECIMALS:
        errors.append(f"metrics.{name}: at most {MAX_METRIC_DECIMALS} decimal places")
        return None
    normalized: Decimal = value + 0  # folds -0 into 0
    return normalized


def _has_nul(*texts: str | None) -> bool:
    return any(t is not None and "\x00" in t for t in texts)


def parse_event(
    raw: bytes | msgspec.Raw, *, now: datetime, max_age: timedelta, max_future: timedelta
) -> EventRow | list[str]:
    """Decode and validate one event; return the row to store or the reasons it is refused."""
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return [str(exc)]
    return check_event(event, now=now, max_age=max_age, max_future=max_future,
                       may_hold_nul=_NUL_ESCAPE in bytes(raw))


def parse_batch(
    body: bytes, *, now: datetime, max_age: timedelta, max_future: timedelta
) -> list[EventRow | list[str]]:
    """Decode and validate a batch body: per event, the row to store or its errors.

    Raises msgspec.ValidationError when the body is not {"events": [...]}, and the
    decode errors of malformed JSON. A batch that decodes as a whole (the common
    case) is decoded in one call; otherwise each event is decoded on its own so
    that every bad one is reported.
    """
    may_hold_nul = _NUL_ESCAPE in body
    try:
        events = _batch_decoder.decode(body).events
    except msgspec.ValidationError:
        return [parse_event(raw, now=now, max_age=max_age, max_future=max_future)
                for raw in _raw_batch_decoder.decode(body).events]
    return [check_event(event, now=now, max_age=max_age, max_future=max_future,
                        may_hold_nul=may_hold_nul) for event in events]


def check_event(
    event: EventIn, *, now: datetime, max_age: timedelta, max_future: timedelta,
    may_hold_nul: bool = True,
) -> EventRow | list[str]:
    """Validate one decoded event; return the row to store or the reasons it is refused."""
    errors: list[str] = []
    if event.event_type not in REQUIRED_METRICS:
        errors.append(
            f"event_type: unknown type {event.event_type!r}; known types: {', '.join(EVENT_TYPES)}"
        )
    metrics: dict[str, Decimal] = {}
    for name, value in event.metrics.items():
        parsed = _check_metric(name, value, errors)
        if parsed is not None:
            metrics[name] = parsed
    for name in REQUIRED_METRICS.get(event.event_type, ()):
        if name not in event.metrics:
            errors.append(f"metrics.{name}: required for {event.event_type}")
    if event.event_type == "deployment.scaled" and not any(m in event.metrics for m in SHAPE_METRICS):
        errors.append("metrics: deployment.scaled needs at least one of " + ", ".join(SHAPE_METRICS))

    event_time = now
    if event.timestamp is not None:
        if event.timestamp.tzinfo is None:
            errors.append("timestamp: must be RFC 3339 with an offset (e.g. Z or +00:00)")
        elif event.timestamp > now + max_future:
            errors.append(f"timestamp: more than {max_future} in the future")
        elif event.timestamp < now - max_age:
            errors.append(f"timestamp: older than EVENT_MAX_AGE ({max_age})")
        else:
            event_time = event.timestamp.astimezone(UTC)

    metadata = None
    if event.metadata is not None:
        metadata = msgspec.Raw(_encoder.encode(event.metadata))
        if len(metadata) > MAX_METADATA_BYTES:
            errors.append(f"metadata: larger than {MAX_METADATA_BYTES} bytes encoded")
        if may_hold_nul and any(_has_nul(k, v) for k, v in event.metadata.items()):
            errors.append("metadata: strings may not contain NUL characters")
    if may_hold_nul and _has_nul(event.event_type, event.resource_type, event.resource_id,
                                 event.idempotency_key, event.resource_name, *event.metrics):
        errors.append("strings may not contain NUL characters")
    if errors:
        return errors

    # The content as sent (timestamp absent stays absent): a retry of the same call
    # has the same digest, which is what an idempotency key is checked against.
    sent_time = event_time if event.timestamp is not None else None
    normalized_metrics = sorted((k, str(v.normalize())) for k, v in metrics.items())
    content_digest = _digest(_encoder.encode(
        ["content", event.event_type, event.project_id, event.resource_type, event.resource_id,
         sent_time, normalized_metrics]))
    if event.idempotency_key is not None:
        dedupe_key = _digest(_encoder.encode(["key", event.project_id, event.idempotency_key]))
    elif sent_time is not None:
        dedupe_key = content_digest
    else:  # no key, no timestamp: the receive time makes it a new event (CONTRACT.md 1)
        dedupe_key = _digest(_encoder.encode(
            ["content", event.event_type, event.project_id, event.resource_type,
             event.resource_id, event_time, normalized_metrics]))
    quantity_metric = QUANTITY_METRIC.get(event.event_type)
    return EventRow(
        event_id=uuid7(),
        project_id=event.project_id,
        event_type=event.event_type,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        event_time=event_time,
        idempotency_key=event.idempotency_key,
        dedupe_key=dedupe_key,
        content_digest=content_digest,
        replicas=metrics.get("replicas"),
        cpu_millicores=metrics.get("cpu_millicores"),
        memory_mb=metrics.get("memory_mb"),
        size_gb=metrics.get("size_gb"),
        quantity=metrics.get(quantity_metric) if quantity_metric else None,
        metrics=msgspec.Raw(_encoder.encode(metrics)),
        metadata=metadata,
        team_id=event.team_id,
        resource_name=event.resource_name,
    )


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one event: the Struct's, plus the rules parse_event checks."""
    schema: dict[str, Any] = msgspec.json.schema(EventIn)["$defs"]["EventIn"]
    properties = schema["properties"]
    properties["event_type"]["enum"] = list(EVENT_TYPES)
    properties["metrics"]["additionalProperties"] = {
        "type": "number", "minimum": 0, "exclusiveMaximum": 10**15}
    properties["metrics"]["description"] = "required metrics per event_type: CONTRACT.md section 1"
    properties["timestamp"] = {"type": "string", "format": "date-time",
                               "description": "RFC 3339 with an offset; default: receive time"}
    return schema


