"""GET /health (the process answers) and GET /ready (database reachable, schema current)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get
from psycopg_pool import AsyncConnectionPool

from app.config import Settings
from app.db.migrate import SQL_DIR

_MIGRATIONS = frozenset(p.stem for p in (SQL_DIR / "migrations").glob("*.sql"))


@get("/health", sync_to_thread=False, tags=["health"])
def health() -> dict[str, str]:
    """The process is up. Says nothing about the database."""
    return {"status": "ok"}


@get("/ready", tags=["health"])
async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
    """200 when the database answers within a second and every migration is applied."""
    pool: AsyncConnectionPool = request.app.state.pool
    settings: Settings = request.app.state.settings
    checks: dict[str, str] = {"stripe": "on" if settings.stripe_secret_key else "off"}
    try:
        async with asyncio.timeout(1.0), pool.connection(timeout=1.0) as conn:
            rows = await (await conn.execute("SELECT migration_id FROM _yoyo_migration")).fetchall()
        missing = sorted(_MIGRATIONS - {r[0] for r in rows})
        checks["database"] = "ok"
        checks["schema"] = "current" if not missing else f"missing {', '.join(missing)}"
    except Exception:  # noqa: BLE001 - any failure to reach the database means not ready
        checks["database"] = "unreachable"
        checks["schema"] = "unknown"
    ok = checks["database"] == "ok" and checks["schema"] == "current"
    return Response(msgspec.json.encode({"status": "ready" if ok else "not ready", **checks}),
                    status_code=200 if ok else 503, media_type="application/json")



