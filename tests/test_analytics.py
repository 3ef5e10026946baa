"""The analyst role reads the analytics views and nothing else (CONTRACT.md section 8)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.metering_helpers import put, rollup

VIEWS = ("hourly_usage", "daily_usage", "monthly_usage", "project_usage_summary",
         "metering_anomalies")


def as_analyst(db_url: str) -> psycopg.Connection:
    conn = psycopg.connect(db_url)
    conn.execute("SET ROLE waybill_analyst")
    return conn


def test_analyst_reads_every_view(db_url, db):
    project = str(uuid.uuid4())
    put(db, project, "deployment.started", "web", "2026-03-03 10:00",
        replicas=1, cpu_millicores=1000, memory_mb=1024)
    put(db, project, "deployment.stopped", "ghost", "2026-03-03 10:00")
    rollup(db, "2026-03-04 01:00")
    with as_analyst(db_url) as conn:
        for view in VIEWS:
            conn.execute(f"SELECT * FROM analytics.{view}").fetchall()  # noqa: S608
        hours = conn.execute("SELECT sum(compute_gb_hours) FROM analytics.hourly_usage"
                             " WHERE project_id = %s", (project,)).fetchone()[0]
        anomalies = conn.execute("SELECT anomaly FROM analytics.metering_anomalies"
                                 " WHERE project_id = %s", (project,)).fetchall()
    assert hours == 15 and anomalies == [("stop_without_running",)]


@pytest.mark.parametrize("statement", [
    "SELECT * FROM waybill.usage_events",
    "SELECT * FROM waybill.hourly_usage",
    "SELECT * FROM waybill.resource_states",
    "SELECT * FROM waybill.project_api_keys",
    "SELECT waybill.rollup_hourly('2026-03-03 10:00Z')",
    "INSERT INTO analytics.hourly_usage (project_id, hour) VALUES (gen_random_uuid(), now())",
    "UPDATE analytics.daily_usage SET bandwidth_gb = 0",
    "DELETE FROM analytics.metering_anomalies",
    "CREATE TABLE analytics.mine (x int)",
    "CREATE TABLE public.mine (x int)",
])
def test_analyst_cannot_read_private_tables_or_write_anything(db_url, statement):
    with as_analyst(db_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)
