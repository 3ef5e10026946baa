"""The scheduled entry point and its pg_cron job: the month that just closed is
billed as drafts inside the grace period, then finalized once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.db.migrate import apply_schedules
from tests.billing_support import new_project, put_usage, record, subscribe
from tests.conftest import clone_database, drop_database


def last_closed_month(now: datetime) -> date:
    first = date(now.year, now.month, 1)
    previous = first - timedelta(days=1)
    return date(previous.year, previous.month, 1)


def cron_database(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]


@pytest.fixture(scope="module")
def cron_billing(server_url: str, template_url: str) -> Iterator[tuple[str, str, Any, date]]:
    """A database with last month's usage and the real billing job, scheduled at the
    start of the module (pg_cron 1.4 fires at minute boundaries)."""
    url = clone_database(server_url, template_url)
    cron_db = cron_database(url)
    if not cron_db:
        drop_database(server_url, url)
        pytest.skip("pg_cron is not loaded on this server")
    month = last_closed_month(datetime.now(UTC))
    project = new_project()
    with psycopg.connect(url, autocommit=True) as conn:
        subscribe(conn, project, "hobby", datetime(month.year, month.month, 1, tzinfo=UTC))
        put_usage(conn, project, datetime(month.year, month.month, 2, tzinfo=UTC),
                  bandwidth_gb=101)
    message = apply_schedules(url)
    admin_url = make_conninfo(server_url, dbname=cron_db)
    name = conninfo_to_dict(url)["dbname"]
    try:
        yield admin_url, url, project, month
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s",
                          (name,))
        drop_database(server_url, url)
    assert "applied" in message


def test_schedule_installs_one_named_billing_job(cron_billing):
    admin_url, url, _, _ = cron_billing
    name = conninfo_to_dict(url)["dbname"]
    apply_schedules(url)  # again: replaced, not added
    with psycopg.connect(admin_url, autocommit=True) as admin:
        jobs = admin.execute("SELECT jobname, schedule, command FROM cron.job"
                             " WHERE database = %s AND jobname LIKE '%%:billing'",
                             (name,)).fetchall()
    assert jobs == [(f"waybill:{name}:billing", "20 * * * *",
                     "SELECT waybill.run_scheduled_billing()")]


def test_scheduled_entry_point_drafts_in_grace_then_finalizes_once(db):
    month = last_closed_month(datetime.now(UTC))
    project = new_project()
    subscribe(db, project, "pro", datetime(month.year, month.month, 1, tzinfo=UTC))
    # A grace period longer than the time since the month closed: drafts only.
    db.execute("UPDATE waybill.billing_settings SET grace_period = interval '40 days'")
    assert "draft" in db.execute("SELECT waybill.run_scheduled_billing()").fetchone()[0]
    assert record(db, project, month)["status"] == "draft"
    db.execute("UPDATE waybill.billing_settings SET grace_period = interval '1 hour'")
    assert "1 records finalized" in db.execute("SELECT waybill.run_scheduled_billing()").fetchone()[0]
    assert "already finalized" in db.execute("SELECT waybill.run_scheduled_billing()").fetchone()[0]
    assert record(db, project, month)["status"] == "open"


def test_pg_cron_runs_the_billing_job(cron_billing):
    admin_url, url, project, month = cron_billing
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # The job runs hourly at :20; make it fire at the next minute for the test.
        name = conninfo_to_dict(url)["dbname"]
        admin.execute("SELECT cron.alter_job(jobid, schedule := '* * * * *') FROM cron.job"
                      " WHERE jobname = %s", (f"waybill:{name}:billing",))
    deadline = time.monotonic() + 90
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rec = record(conn, project, month)
            if rec and rec["status"] == "open":
                break
            time.sleep(1)
        rec = record(conn, project, month)
    assert rec is not None and rec["status"] == "open" and rec["total"] == 500 + 10
