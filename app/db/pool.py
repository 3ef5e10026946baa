"""The async connection pool and the translation of driver errors.

Connections run in autocommit: each ingestion call is one statement, so it is
committed (and on disk) when the statement returns. Work that needs several
statements opens an explicit transaction. Every connection acts as the
`waybill_app` role, which cannot change or remove an event.
"""

from __future__ import annotations

import json

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from app.config import Settings
from app.errors import Conflict, Unavailable, Unprocessable, WaybillError

# SQLSTATEs Waybill's own functions raise (class WB), and what a client sees.
_WAYBILL_STATES: dict[str, type[WaybillError]] = {
    "WB409": Conflict,
    "WB422": Unprocessable,
}


async def _configure(conn: psycopg.AsyncConnection[object]) -> None:
    # Request queries touch a few rows, but the planner's estimates for the
    # plpgsql functions behind them can exceed jit_above_cost; compiling then
    # costs half a second for a query that runs in milliseconds.
    await conn.execute("SET ROLE waybill_app")
    await conn.execute("SET jit = off")


def make_pool(settings: Settings, url: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout,
        # A bounded queue: past this many waiting requests, answer 503 at once.
        max_waiting=settings.db_pool_max * 8,
        kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": 2},
        configure=_configure,
        open=False,
        name="waybill",
    )


def translate(exc: BaseException) -> WaybillError | None:
    """Map a driver or pool error to a client-facing error; None if it is a bug."""
    if isinstance(exc, (PoolTimeout, TooManyRequests)):
        return Unavailable("the database is busy; retry shortly")
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable("the database is unreachable; retry shortly")
    if isinstance(exc, psycopg.Error) and exc.sqlstate in _WAYBILL_STATES:
        diag = exc.diag
        return _WAYBILL_STATES[exc.sqlstate](diag.message_primary or "refused",
                                             **_detail_fields(diag.message_detail))
    return None


def _detail_fields(detail: str | None) -> dict[str, object]:
    """Waybill functions put a JSON object in DETAIL to carry structured fields."""
    if not detail:
        return {}
    try:
        parsed = json.loads(detail)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
