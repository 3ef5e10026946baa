"""usage_events partitioned by month: dedupe across months, partitions ahead, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import INTERNAL_KEY
from tests.factories import event, iso
from tests.metering_helpers import at, put


def partitions(db) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'waybill.usage_events'::regclass ORDER BY 1").fetchall()]


def test_partitions_exist_around_today_and_are_made_ahead(db):
    this_month = datetime.now(UTC).strftime("usage_events_%Y_%m")
    assert this_month in partitions(db) and "usage_events_default" in partitions(db)
    created = db.execute("SELECT waybill.ensure_event_partitions(%s, 3)",
                         (at("2031-06-15 00:00"),)).fetchone()[0]
    assert created == [f"usage_events_{m}" for m in
                       ("2031_04", "2031_05", "2031_06", "2031_07", "2031_08", "2031_09")]
    assert db.execute("SELECT waybill.ensure_event_partitions(%s, 3)",
                      (at("2031-06-15 00:00"),)).fetchone()[0] == []


def test_dedupe_spans_months(client, db):
    now = datetime.now(UTC)
    last_month = now - timedelta(days=30)
    first = event(idempotency_key="once", timestamp=iso(last_month))
    headers = {"Authorization": f"Bearer {INTERNAL_KEY}"}
    assert client.post("/internal/events", json=first, headers=headers).status_code == 201
    assert client.post("/internal/events", json=first, headers=headers).status_code == 200
    moved = dict(first, timestamp=iso(now - timedelta(minutes=1)))
    assert client.post("/internal/events", json=moved, headers=headers).status_code == 409
    months = db.execute("SELECT tableoid::regclass::text, count(*) FROM waybill.usage_events"
                        " GROUP BY 1").fetchall()
    assert months == [(last_month.strftime("waybill.usage_events_%Y_%m"), 1)]


def test_events_stay_append_only_in_every_partition(client, db):
    headers = {"Authorization": f"Bearer {INTERNAL_KEY}"}
    assert client.post("/internal/events", json=event(), headers=headers).status_code == 201
    partition = db.execute("SELECT tableoid::regclass::text FROM waybill.usage_events").fetchone()[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"DELETE FROM {partition}")  # noqa: S608 - a catalog name
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"UPDATE {partition} SET resource_id = 'x'")  # noqa: S608


def test_retention_drops_only_old_months_that_are_rolled_up_and_finalized(db):
    db.execute("SELECT waybill.ensure_event_partitions(%s, 0)", (at("2025-03-10 00:00"),))
    project = "5e7e0000-0000-4000-8000-000000000001"
    put(db, project, "bandwidth.usage", "svc", "2025-01-10 10:00", egress_gb=5)
    now = at("2026-11-25 08:00")

    def run() -> dict:
        return db.execute("SELECT waybill.drop_expired_event_partitions(%s, 13)", (now,)).fetchone()[0]

    first = run()
    assert "rolled up" in first["kept"]["waybill.usage_events_2025_01"]
    assert "waybill.usage_events_2025_02" in first["dropped"]  # old, empty: nothing to keep
    db.execute("SELECT waybill.rollup_hourly(%s)", (at("2025-02-01 00:00"),))
    db.execute("SELECT waybill.rollup_daily(%s)", (at("2025-02-01 00:00").date(),))
    assert "not billed" in run()["kept"]["waybill.usage_events_2025_01"]
    db.execute("SELECT waybill.bill_period(%s, %s)", (at("2025-01-01 00:00").date(),
                                                       at("2025-02-01 00:00")))
    assert "draft" in run()["kept"]["waybill.usage_events_2025_01"]
    db.execute("SELECT waybill.finalize_period(%s, %s)", (at("2025-01-01 00:00").date(),
                                                           at("2025-02-02 00:00")))
    result = run()
    assert result["dropped"] == ["waybill.usage_events_2025_01"]
    assert "usage_events_2025_01" not in partitions(db)
    # The usage and the invoice outlive the raw events.
    assert db.execute("SELECT count(*) FROM waybill.hourly_usage WHERE project_id = %s",
                      (project,)).fetchone()[0] == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT waybill.drop_expired_event_partitions(%s, 1)", (now,))


def test_retention_keeps_a_month_holding_the_state_late_events_still_need(db):
    """A late resize is replayed from the volume's last reset: the month that
    holds its creation stays until a newer reset is old enough."""
    db.execute("SELECT waybill.ensure_event_partitions(%s, 0)", (at("2025-03-10 00:00"),))
    project = "5e7e0000-0000-4000-8000-000000000002"
    put(db, project, "volume.created", "data", "2025-01-10 10:00", size_gb=10)
    db.execute("SELECT waybill.rollup_hourly(%s)", (at("2025-02-01 00:00"),))
    db.execute("SELECT waybill.rollup_daily(%s)", (at("2025-02-01 00:00").date(),))
    db.execute("SELECT waybill.bill_period(%s, %s)", (at("2025-01-01 00:00").date(),
                                                       at("2025-02-01 00:00")))
    db.execute("SELECT waybill.finalize_period(%s, %s)", (at("2025-01-01 00:00").date(),
                                                           at("2025-02-02 00:00")))
    now = at("2025-05-20 08:00")
    kept = db.execute("SELECT waybill.drop_expired_event_partitions(%s, 2)", (now,)).fetchone()[0]
    assert "last reset" in kept["kept"]["waybill.usage_events_2025_01"]

    # A late resize within the accepted age is replayed from the creation.
    put(db, project, "volume.resized", "data", "2025-04-20 10:00", size_gb=20)
    db.execute("SELECT waybill.rollup_hourly(%s)", (at("2025-04-21 00:00"),))
    hour = db.execute("SELECT storage_gb_seconds FROM waybill.hourly_usage"
                      " WHERE project_id = %s AND hour = %s",
                      (project, at("2025-04-20 11:00"))).fetchone()[0]
    assert hour == 20 * 3600

    # A newer reset, older than any event still accepted, releases the month.
    put(db, project, "volume.created", "data", "2025-03-05 00:00", size_gb=20)
    db.execute("SELECT waybill.rollup_hourly(%s)", (at("2025-04-21 00:00"),))
    dropped = db.execute("SELECT waybill.drop_expired_event_partitions(%s, 2)",
                         (now,)).fetchone()[0]
    assert dropped["dropped"] == ["waybill.usage_events_2025_01"]
