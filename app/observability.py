"""Structured logs with a request id, and Prometheus metrics at /metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

EVENTS_ACCEPTED = Counter("waybill_events_accepted_total", "Events stored for the first time")
EVENTS_DUPLICATE = Counter("waybill_events_duplicate_total", "Replayed events answered from the store")
EVENTS_REJECTED = Counter("waybill_events_rejected_total", "Events refused, by reason", ["reason"])
REQUEST_SECONDS = Histogram(
    "waybill_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True  # requests are logged below
    logging.getLogger("yoyo").setLevel(logging.WARNING)


_access = logging.getLogger("waybill.request")


def request_logging(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: request id in and out, one log line and one histogram sample."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            handler = scope.get("route_handler")
            route = next(iter(handler.paths), "unmatched") if handler else "unmatched"
            REQUEST_SECONDS.labels(method, route, str(status)).observe(elapsed)
            if _access.isEnabledFor(logging.INFO):
                _access.info("request", extra={"fields": {
                    "method": method, "path": scope["path"], "status": status,
                    "ms": round(elapsed * 1000, 2)}})
            request_id_var.reset(token)

    return middleware


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
