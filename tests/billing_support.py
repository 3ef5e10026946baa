"""Helpers for the billing tests: usage rows written directly, billing runs, reads."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

GB_HOUR = 3600  # GB-seconds in a GB-hour


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def new_project() -> uuid.UUID:
    return uuid.uuid4()


def put_usage(db: psycopg.Connection[Any], project: uuid.UUID, hour: datetime, *,
              compute_gb_hours: Decimal | int = 0, storage_gb_seconds: Decimal | int = 0,
              build_minutes: Decimal | int = 0, bandwidth_gb: Decimal | int | str = 0,
              custom_domains: int = 0, computed_at: datetime | None = None) -> None:
    """Write (or overwrite) one hourly_usage row as metering does: the row, and its day
    marked in rollup_dirty_days (daily_usage not yet recomputed). computed_at defaults
    to just after the hour."""
    mark_dirty(db, project, hour)
    db.execute(
        "INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds,"
        " storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains, computed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (project_id, hour) DO UPDATE SET compute_gb_seconds = excluded.compute_gb_seconds,"
        " storage_gb_seconds = excluded.storage_gb_seconds, build_seconds = excluded.build_seconds,"
        " bandwidth_gb = excluded.bandwidth_gb, custom_domains = excluded.custom_domains,"
        " computed_at = excluded.computed_at",
        (project, hour, Decimal(compute_gb_hours) * GB_HOUR, Decimal(storage_gb_seconds),
         Decimal(build_minutes) * 60, Decimal(bandwidth_gb), custom_domains,
         computed_at or hour + timedelta(minutes=65)))


def mark_dirty(db: psycopg.Connection[Any], project: uuid.UUID, hour: datetime) -> None:
    db.execute("INSERT INTO waybill.rollup_dirty_days (project_id, day)"
               " VALUES (%s, (%s::timestamptz AT TIME ZONE 'UTC')::date) ON CONFLICT DO NOTHING",
               (project, hour))


def roll_up_days(db: psycopg.Connection[Any]) -> None:
    """What metering's daily rollup does: dirty days -> daily_usage, then clean."""
    db.execute("""
        INSERT INTO waybill.daily_usage AS u (project_id, day, compute_gb_seconds,
            storage_gb_seconds, build_seconds, bandwidth_gb, custom_domains)
        SELECT h.project_id, (h.hour AT TIME ZONE 'UTC')::date, sum(h.compute_gb_seconds),
               sum(h.storage_gb_seconds), sum(h.build_seconds), sum(h.bandwidth_gb),
               max(h.custom_domains)
          FROM waybill.hourly_usage h
          JOIN waybill.rollup_dirty_days d
            ON d.project_id = h.project_id AND d.day = (h.hour AT TIME ZONE 'UTC')::date
         GROUP BY 1, 2
        ON CONFLICT (project_id, day) DO UPDATE SET
            compute_gb_seconds = excluded.compute_gb_seconds,
            storage_gb_seconds = excluded.storage_gb_seconds,
            build_seconds = excluded.build_seconds, bandwidth_gb = excluded.bandwidth_gb,
            custom_domains = excluded.custom_domains, computed_at = now()""")
    db.execute("DELETE FROM waybill.rollup_dirty_days")


def subscribe(db: psycopg.Connection[Any], project: uuid.UUID, plan: str | None,
              at: datetime) -> None:
    db.execute("SELECT * FROM waybill.set_subscription(%s, %s, %s)", (project, plan, at))


def month_end(period: date) -> datetime:
    nxt = date(period.year + period.month // 12, period.month % 12 + 1, 1)
    return datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def bill(db: psycopg.Connection[Any], period: date, as_of: datetime | None = None) -> int:
    return db.execute("SELECT waybill.bill_period(%s, %s)",
                      (period, as_of or month_end(period))).fetchone()[0]


def finalize(db: psycopg.Connection[Any], period: date, as_of: datetime | None = None) -> int:
    return db.execute("SELECT waybill.finalize_period(%s, %s)",
                      (period, as_of or month_end(period) + timedelta(hours=1))).fetchone()[0]


def record(db: psycopg.Connection[Any], project: uuid.UUID, period: date) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT record_id, status::text, subtotal_cents, credits_cents, total_cents,"
        " carried_forward_cents FROM waybill.billing_records"
        " WHERE project_id = %s AND period_start = %s", (project, period)).fetchone()
    if row is None:
        return None
    lines = db.execute(
        "SELECT kind::text, coalesce(metric, ''), plan_id, amount_cents, quantity, included,"
        " billable, unit_price, adjustment_period, credit_id"
        " FROM waybill.billing_record_lines WHERE project_id = %s AND record_id = %s"
        " ORDER BY line_no", (project, row[0])).fetchall()
    return {"record_id": row[0], "status": row[1], "subtotal": row[2], "credits": row[3],
            "total": row[4], "carried_forward": row[5], "lines": lines,
            "amounts": [(k, m, a) for k, m, _, a, *_ in lines]}
