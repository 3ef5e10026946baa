"""One error hierarchy, rendered as RFC 9457 problem details.

Handlers raise these; nothing else decides a status code. Driver errors are
translated at the database boundary (`app.db.pool.translate`), so no SQL or stack
trace ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

log = logging.getLogger("waybill.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class WaybillError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(WaybillError):
    status, title = 400, "Bad request"


class Unauthorized(WaybillError):
    status, title = 401, "Unauthorized"


class NotFound(WaybillError):
    status, title = 404, "Not found"


class Conflict(WaybillError):
    status, title = 409, "Conflict"


class PayloadTooLarge(WaybillError):
    status, title = 413, "Payload too large"


class UnsupportedMediaType(WaybillError):
    status, title = 415, "Unsupported media type"


class Unprocessable(WaybillError):
    status, title = 422, "Unprocessable content"


class Unavailable(WaybillError):
    status, title = 503, "Service unavailable"


def problem(status: int, title: str, detail: str, **extra: Any) -> Response[bytes]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def handle_waybill_error(_: Request[Any, Any, Any], exc: WaybillError) -> Response[bytes]:
    return problem(exc.status, exc.title, exc.detail, **exc.extra)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        log.error("http error %s: %s", status, exc.detail)
        return problem(status, "Internal error", "the server could not complete the request")
    titles = {400: "Bad request", 401: "Unauthorized", 404: "Not found",
              405: "Method not allowed", 413: "Payload too large", 415: "Unsupported media type"}
    detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
    if status == 400 and isinstance(exc.extra, (dict, list)) and exc.extra:
        return problem(status, titles[400], detail, errors=exc.extra)
    return problem(status, titles.get(status, "Error"), detail)


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Imported here: the database layer depends on this module, not the reverse.
    from app.db.pool import translate

    translated = translate(exc)
    if translated is not None:
        return handle_waybill_error(_, translated)
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "Internal error", "the server could not complete the request")
