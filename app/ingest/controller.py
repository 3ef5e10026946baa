"""POST /internal/events and /internal/events/batch (CONTRACT.md section 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, Router, post

from app.auth import require_internal_key
from app.errors import BadRequest, Unprocessable, UnsupportedMediaType
from app.ingest.store import store_events
from app.ingest.validate import EventRow, event_json_schema, parse_batch, parse_event
from app.observability import EVENTS_ACCEPTED, EVENTS_DUPLICATE, EVENTS_REJECTED
from app.openapi import json_request_body

# What a body that is not usable JSON raises: msgspec checks UTF-8 as it goes,
# and gives up on nesting deeper than the interpreter's recursion limit.
MALFORMED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _json(body: object, status: int) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def _require_json(request: Request[Any, Any, Any]) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in ("application/json", "") and not media_type.endswith("+json"):
        EVENTS_REJECTED.labels(reason="content_type").inc()
        raise UnsupportedMediaType(f"send the body as application/json, not {media_type}")


def _reject(reason: str, count: int = 1) -> None:
    EVENTS_REJECTED.labels(reason=reason).inc(count)


_EVENT_SCHEMA = event_json_schema()


@post("/events", status_code=201,
      operation_class=json_request_body(_EVENT_SCHEMA, "one usage event"))
async def ingest_one(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Record one event. 201 when new; 200 with `duplicate: true` for a replay."""
    _require_json(request)
    settings = request.app.state.settings
    body = await request.body()
    try:
        parsed = parse_event(body, now=datetime.now(UTC), max_age=settings.event_max_age,
                             max_future=settings.event_max_future)
    except MALFORMED as exc:
        _reject("malformed")
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(parsed, EventRow):
        _reject("invalid")
        raise Unprocessable("the event is invalid", errors=[{"index": 0, "errors": parsed}])
    stored = await request.app.state.writer.write(parsed)
    if stored.duplicate:
        EVENTS_DUPLICATE.inc()
        return _json({"event_id": stored.event_id, "duplicate": True}, 200)
    EVENTS_ACCEPTED.inc()
    return _json({"event_id": stored.event_id, "duplicate": False}, 201)


@post("/events/batch", status_code=201, operation_class=json_request_body(
    {"type": "object", "required": ["events"], "additionalProperties": False,
     "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}}},
    "a batch of usage events, stored all or none"))
async def ingest_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Record a batch atomically: every event is valid and stored, or none is."""
    _require_json(request)
    pool, settings = request.app.state.pool, request.app.state.settings
    body = await request.body()
    try:
        parsed = parse_batch(body, now=datetime.now(UTC), max_age=settings.event_max_age,
                             max_future=settings.event_max_future)
    except msgspec.ValidationError as exc:
        _reject("invalid")
        raise Unprocessable(f"the body must be {{\"events\": [...]}}: {exc}") from None
    except MALFORMED as exc:
        _reject("malformed")
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not parsed:
        _reject("empty_batch")
        raise Unprocessable("the batch holds no events")
    if len(parsed) > settings.max_batch_events:
        _reject("batch_too_large", len(parsed))
        raise Unprocessable(
            f"the batch holds {len(parsed)} events; the limit is {settings.max_batch_events}"
        )
    rows = [p for p in parsed if isinstance(p, EventRow)]
    errors = [{"index": i, "errors": p} for i, p in enumerate(parsed) if not isinstance(p, EventRow)]
    if errors:
        _reject("invalid", len(parsed))
        raise Unprocessable(f"{len(errors)} of {len(parsed)} events are invalid; "
                            "nothing was stored", errors=errors)
    stored = await store_events(pool, rows)
    duplicates = sum(1 for s in stored if s.duplicate)
    EVENTS_ACCEPTED.inc(len(stored) - duplicates)
    EVENTS_DUPLICATE.inc(duplicates)
    return _json({"accepted": len(stored) - duplicates, "duplicates": duplicates}, 201)


router = Router(path="/internal", route_handlers=[ingest_one, ingest_batch],
                guards=[require_internal_key], tags=["ingestion"])
