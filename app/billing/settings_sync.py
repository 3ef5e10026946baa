"""Write the PRICE_* defaults and BILLING_GRACE_PERIOD into waybill.billing_settings.

That row is the one place the pricing function and the pg_cron job read them
(pg_cron sees no environment). The service writes it once per process, before
its first billing request; `waybill bill` writes it before each run. The
UPDATE only touches the row when a value differs.
"""

from __future__ import annotations

from typing import Any

from app.billing import queries
from app.config import Settings


def settings_params(settings: Settings) -> dict[str, Any]:
    return {
        "compute": settings.price_compute_gb_hour,
        "build": settings.price_build_minute,
        "storage": settings.price_storage_gb_month,
        "bandwidth": settings.price_bandwidth_gb,
        "grace": settings.billing_grace_period,
    }


async def sync_billing_settings(pool: Any, settings: Settings) -> None:
    async with pool.connection() as conn:
        await conn.execute(queries.SYNC_SETTINGS, settings_params(settings))


def sync_billing_settings_blocking(conn: Any, settings: Settings) -> None:
    conn.execute(queries.SYNC_SETTINGS, settings_params(settings))
