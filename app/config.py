"""Settings, read once from environment variables.

Every field names its variable and default; the README's configuration table
lists the same. Nothing else in the service reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse `90`, `90s`, `15m`, `1h` or `35d` into a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 60m, 1h, 35d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    # PostgreSQL URL; unset means the embedded cluster under .waybill/.
    database_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8082
    # API processes; more than one lets Python use every core beside PostgreSQL.
    api_workers: int = 1
    # Internal endpoints (events, admin) refuse every call while this is unset.
    internal_api_key: str | None = None
    # Bearer token that reads every project's usage and invoices.
    dashboard_api_key: str | None = None
    max_batch_events: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    event_max_age: timedelta = timedelta(days=35)
    event_max_future: timedelta = timedelta(minutes=5)
    # Whole months of raw events kept before the current one (finalized months only).
    event_retention_months: int = 13
    billing_grace_period: timedelta = timedelta(hours=1)
    db_pool_min: int = 4
    db_pool_max: int = 16
    # How long a request waits for a pooled connection before a 503.
    db_pool_timeout: float = 0.5
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    price_compute_gb_hour: Decimal = Decimal("0.000463")
    price_build_minute: Decimal = Decimal("0.01")
    price_storage_gb_month: Decimal = Decimal("0.25")
    price_bandwidth_gb: Decimal = Decimal("0.10")
    log_level: str = "INFO"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=_env("DATABASE_URL"),
            api_host=_env("API_HOST", "127.0.0.1") or "127.0.0.1",
            api_port=int(_env("API_PORT", "8082") or 8082),
            api_workers=int(_env("API_WORKERS", "1") or 1),
            internal_api_key=_env("INTERNAL_API_KEY"),
            dashboard_api_key=_env("DASHBOARD_API_KEY"),
            max_batch_events=int(_env("MAX_BATCH_EVENTS", "1000") or 1000),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(8 * 1024 * 1024)) or 0),
            event_max_age=parse_duration(_env("EVENT_MAX_AGE", "35d") or "35d"),
            event_retention_months=int(_env("EVENT_RETENTION_MONTHS", "13") or 13),
            billing_grace_period=parse_duration(_env("BILLING_GRACE_PERIOD", "1h") or "1h"),
            db_pool_min=int(_env("DB_POOL_MIN", "4") or 4),
            db_pool_max=int(_env("DB_POOL_MAX", "16") or 16),
            db_pool_timeout=float(_env("DB_POOL_TIMEOUT", "0.5") or 0.5),
            stripe_secret_key=_env("STRIPE_SECRET_KEY"),
            stripe_webhook_secret=_env("STRIPE_WEBHOOK_SECRET"),
            stripe_api_base=_env("STRIPE_API_BASE"),
            price_compute_gb_hour=Decimal(_env("PRICE_COMPUTE_GB_HOUR", "0.000463") or "0"),
            price_build_minute=Decimal(_env("PRICE_BUILD_MINUTE", "0.01") or "0"),
            price_storage_gb_month=Decimal(_env("PRICE_STORAGE_GB_MONTH", "0.25") or "0"),
            price_bandwidth_gb=Decimal(_env("PRICE_BANDWIDTH_GB", "0.10") or "0"),
            log_level=_env("LOG_LEVEL", "INFO") or "INFO",
        )


# Environment variables the service reads; docker-compose.yml is checked against it.
ENVIRONMENT_VARIABLES = (
    "DATABASE_URL", "API_HOST", "API_PORT", "API_WORKERS", "INTERNAL_API_KEY", "DASHBOARD_API_KEY",
    "MAX_BATCH_EVENTS", "MAX_BODY_BYTES", "EVENT_MAX_AGE", "EVENT_RETENTION_MONTHS", "BILLING_GRACE_PERIOD",
    "DB_POOL_MIN", "DB_POOL_MAX", "DB_POOL_TIMEOUT", "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "PRICE_COMPUTE_GB_HOUR",
    "PRICE_BUILD_MINUTE", "PRICE_STORAGE_GB_MONTH", "PRICE_BANDWIDTH_GB", "LOG_LEVEL",
)
