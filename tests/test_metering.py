"""Metering in SQL (CONTRACT.md sections 2 and 3): worked examples computed by hand,
anomalies, late events, concurrent and crashed runs, the CLI and pg_cron."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.db.migrate import apply_schedules
from app.usage.commands import aggregate, parse_until
from tests.conftest import clone_database, drop_database
from tests.metering_helpers import at, hourly, put, rollup, snapshot

SHAPE = {"replicas": 2, "cpu_millicores": 500, "memory_mb": 512}


def new_project() -> str:
    return str(uuid.uuid4())


def daily(db: Any, project: str, column: str = "compute_gb_seconds") -> dict[date, Decimal]:
    rows = db.execute(f"SELECT day, {column} FROM waybill.daily_usage"  # noqa: S608
                      " WHERE project_id = %s ORDER BY day", (project,)).fetchall()
    return {r[0]: r[1] for r in rows}


def from_scratch_equals_incremental(db: Any, until: str) -> None:
    before = snapshot(db)
    db.execute("SELECT waybill.recompute_usage_from_scratch(%s)", (at(until),))
    assert snapshot(db) == before


def test_worked_example_start_scale_stop_splits_hours_to_the_second(db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    put(db, project, "deployment.scaled", "web", "2026-03-03 12:50", replicas=4, memory_mb=1024)
    put(db, project, "deployment.stopped", "web", "2026-03-03 13:10")
    rollup(db, "2026-03-04 00:00")
    # 2 x max(512/1024, 500/1000) = 1 GB-eq from 10:20; 4 x max(1024/1024, 0.5) = 4 from 12:50.
    assert hourly(db, project) == {
        at("2026-03-03 10:00"): 40 * 60 * 1,            # 0.6667 GB-h
        at("2026-03-03 11:00"): 3600 * 1,               # 1.0
        at("2026-03-03 12:00"): 50 * 60 * 1 + 10 * 60 * 4,  # 1.5
        at("2026-03-03 13:00"): 10 * 60 * 4,            # 0.6667
    }
    assert daily(db, project) == {date(2026, 3, 3): 2400 + 3600 + 5400 + 2400}
    row = db.execute("SELECT compute_gb_hours FROM analytics.hourly_usage"
                     " WHERE project_id = %s AND hour = %s",
                     (project, at("2026-03-03 12:00"))).fetchone()
    assert row[0] == Decimal("1.5")


def test_volume_held_across_a_month_boundary(db):
    project = new_project()
    put(db, project, "volume.created", "vol", "2026-01-31 22:30", size_gb=10)
    put(db, project, "volume.resized", "vol", "2026-02-01 00:45", size_gb=20)
    put(db, project, "volume.deleted", "vol", "2026-02-01 01:15")
    rollup(db, "2026-02-02 00:00")
    assert hourly(db, project, "storage_gb_seconds") == {
        at("2026-01-31 22:00"): 1800 * 10, at("2026-01-31 23:00"): 3600 * 10,
        at("2026-02-01 00:00"): 2700 * 10 + 900 * 20, at("2026-02-01 01:00"): 900 * 20,
    }
    months = db.execute("SELECT month, storage_gb_hours FROM analytics.monthly_usage"
                        " WHERE project_id = %s ORDER BY month", (project,)).fetchall()
    assert months == [(date(2026, 1, 1), Decimal("15")), (date(2026, 2, 1), Decimal("17.5"))]  # 7.5 + 5 + 5


def test_deployment_running_forty_days_with_one_event(db):
    project = new_project()
    put(db, project, "deployment.started", "api", "2026-01-01 00:00",
        replicas=1, cpu_millicores=1000, memory_mb=512)  # cpu dominates: 1 GB-eq
    for until in ("2026-01-03 00:00", "2026-01-20 05:00", "2026-02-10 00:00"):
        rollup(db, until)  # runs with no new events still accrue the hours since
    hours = hourly(db, project)
    assert len(hours) == 40 * 24 and set(hours.values()) == {Decimal(3600)}
    assert len(daily(db, project)) == 40
    months = db.execute("SELECT month, compute_gb_hours FROM analytics.monthly_usage"
                        " WHERE project_id = %s ORDER BY month", (project,)).fetchall()
    assert months == [(date(2026, 1, 1), Decimal(31 * 24)), (date(2026, 2, 1), Decimal(9 * 24))]
    assert db.execute("SELECT * FROM waybill.usage_between(%s, %s, %s)",
                      (project, at("2026-01-10 00:00"), at("2026-01-10 03:00"))).fetchone() == (
        Decimal(3 * 3600), 0, 0, 0, 0)


def test_snapshot_starts_a_resource_and_gb_equivalent_takes_the_larger_of_cpu_and_memory(db):
    project = new_project()
    put(db, project, "compute.snapshot", "pod", "2026-03-03 10:00",
        replicas=3, cpu_millicores=250, memory_mb=1536)  # 3 x max(1.5, 0.25) = 4.5
    put(db, project, "compute.snapshot", "pod", "2026-03-03 10:30",
        replicas=1, cpu_millicores=2000, memory_mb=256)  # 1 x max(0.25, 2) = 2
    rollup(db, "2026-03-03 12:00")
    assert hourly(db, project) == {at("2026-03-03 10:00"): 1800 * Decimal("4.5") + 1800 * 2,
                                   at("2026-03-03 11:00"): 3600 * 2}


def test_builds_egress_and_the_most_domains_attached_at_once(db):
    project = new_project()
    put(db, project, "build.completed", "b1", "2026-03-03 10:05", duration_seconds=45.2)
    put(db, project, "build.failed", "b2", "2026-03-03 10:55", duration_seconds=14.8)
    put(db, project, "build.started", "b3", "2026-03-03 10:56")
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=1.25)
    put(db, project, "bandwidth.usage", "web", "2026-03-03 11:10", egress_gb=0.5)
    put(db, project, "domain.added", "a.example", "2026-03-03 10:10")
    put(db, project, "domain.added", "b.example", "2026-03-03 10:40")
    # At 10:50, one removed and another added at the same instant: 2 at once, never 3.
    put(db, project, "domain.removed", "a.example", "2026-03-03 10:50")
    put(db, project, "domain.added", "c.example", "2026-03-03 10:50")
    put(db, project, "domain.removed", "b.example", "2026-03-03 11:20")
    put(db, project, "domain.removed", "c.example", "2026-03-03 12:30")
    rollup(db, "2026-03-04 00:00")
    rows = db.execute("SELECT hour, build_seconds, bandwidth_gb, custom_domains"
                      " FROM waybill.hourly_usage WHERE project_id = %s ORDER BY hour",
                      (project,)).fetchall()
    assert rows == [(at("2026-03-03 10:00"), Decimal("60.0"), Decimal("1.25"), 2),
                    (at("2026-03-03 11:00"), 0, Decimal("0.5"), 2),
                    (at("2026-03-03 12:00"), 0, 0, 1)]
    day = db.execute("SELECT build_minutes, custom_domains FROM analytics.daily_usage"
                     " WHERE project_id = %s", (project,)).fetchone()
    assert day == (Decimal(1), 2)


def test_anomalies_are_recorded_and_never_crash_or_bill(db):
    project = new_project()
    stop = put(db, project, "deployment.stopped", "ghost", "2026-03-03 10:00")
    scale = put(db, project, "deployment.scaled", "ghost", "2026-03-03 10:05", replicas=3)
    resize = put(db, project, "volume.resized", "nope", "2026-03-03 10:10", size_gb=50)
    delete = put(db, project, "volume.deleted", "nope", "2026-03-03 10:20")
    remove = put(db, project, "domain.removed", "x.example", "2026-03-03 10:30")
    put(db, project, "deployment.started", "web", "2026-03-03 11:00", **SHAPE)
    late = put(db, project, "deployment.scaled", "web", "2026-03-03 10:30", replicas=5)
    rollup(db, "2026-03-03 13:00")
    found = db.execute("SELECT seq, anomaly FROM analytics.metering_anomalies"
                       " WHERE project_id = %s ORDER BY seq, anomaly", (project,)).fetchall()
    assert found == [(stop, "stop_without_running"), (scale, "scale_without_running"),
                     (resize, "resize_unknown_volume"), (delete, "delete_unknown_volume"),
                     (remove, "remove_unattached_domain"), (late, "out_of_order"),
                     (late, "scale_without_running")]
    # Only the real start counts: 1 GB-eq from 11:00, nothing for the ignored resize.
    assert hourly(db, project) == {at("2026-03-03 11:00"): 3600, at("2026-03-03 12:00"): 3600}
    assert hourly(db, project, "storage_gb_seconds") == {}


def test_late_start_reopens_the_hour_of_the_anomaly_and_clears_it(db):
    project = new_project()
    stop = put(db, project, "deployment.stopped", "web", "2026-03-03 12:00")
    rollup(db, "2026-03-03 14:00")
    assert db.execute("SELECT anomaly FROM waybill.metering_anomalies WHERE seq = %s",
                      (stop,)).fetchall() == [("stop_without_running",)]
    put(db, project, "deployment.started", "web", "2026-03-03 10:30", **SHAPE)
    rollup(db, "2026-03-03 14:00")
    assert db.execute("SELECT anomaly FROM waybill.metering_anomalies WHERE seq = %s",
                      (stop,)).fetchall() == []
    assert hourly(db, project) == {at("2026-03-03 10:00"): 1800, at("2026-03-03 11:00"): 3600}


def test_late_stop_removes_hours_already_billed_and_fixes_the_day(db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:00", **SHAPE)
    rollup(db, "2026-03-04 02:00")
    assert daily(db, project) == {date(2026, 3, 3): 14 * 3600}
    assert len(hourly(db, project)) == 16
    put(db, project, "deployment.stopped", "web", "2026-03-03 12:30")  # arrives late
    result = rollup(db, "2026-03-04 03:00")
    assert result["events"] == 1
    assert hourly(db, project) == {at("2026-03-03 10:00"): 3600, at("2026-03-03 11:00"): 3600,
                                   at("2026-03-03 12:00"): 1800}
    assert daily(db, project) == {date(2026, 3, 3): 9000}
    from_scratch_equals_incremental(db, "2026-03-04 03:00")


def test_event_in_an_open_hour_waits_for_it_to_close(db):
    project = new_project()
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    put(db, project, "deployment.started", "web", "2026-03-03 10:30", **SHAPE)
    rollup(db, "2026-03-03 10:00")
    assert hourly(db, project, "bandwidth_gb") == {}
    again = rollup(db, "2026-03-03 11:00")
    assert again["events"] == 0  # already consumed; the hour is computed as it closes
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 2}
    assert hourly(db, project) == {at("2026-03-03 10:00"): 1800}


def test_a_second_run_changes_nothing(db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    rollup(db, "2026-03-03 12:00")
    before = snapshot(db)
    assert rollup(db, "2026-03-03 12:00")["events"] == 0
    assert snapshot(db) == before


def test_a_run_leaves_the_callers_planner_settings_as_it_found_them(db):
    # The run tunes the planner and ANALYZE for its own statements; whatever the
    # caller's transaction does next (an ANALYZE of a real table, say) must not
    # inherit that.
    names = ("default_statistics_target", "enable_sort", "enable_mergejoin",
             "parallel_setup_cost", "parallel_tuple_cost")

    def settings() -> list[str]:
        return [db.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in names]

    put(db, new_project(), "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    with db.transaction():
        before = settings()
        rollup(db, "2026-03-03 12:00")
        assert settings() == before


def test_until_must_be_an_hour_boundary_and_isolation_read_committed(db_url, db):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT waybill.rollup_hourly(%s)", (at("2026-03-03 10:30"),))
    with psycopg.connect(db_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute("SELECT waybill.rollup_hourly(%s)", (at("2026-03-03 10:00"),))


def test_two_runs_at_once_serialize_and_count_once(db_url, db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    for i in range(50):
        put(db, project, "bandwidth.usage", "web", f"2026-03-03 11:{i:02d}", egress_gb=1)
    results: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def run() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            results.append(rollup(conn, "2026-03-03 13:00"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r["events"] for r in results) == [0, 51]
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 11:00"): 50}
    from_scratch_equals_incremental(db, "2026-03-03 13:00")


def project_in_shard(db: Any, shard: int) -> str:
    shards = db.execute("SELECT count(*) FROM waybill.rollup_shards").fetchone()[0]
    while True:
        project = new_project()
        if db.execute("SELECT waybill.rollup_shard(%s, %s)", (project, shards)).fetchone()[0] == shard:
            return project


def test_shards_roll_up_apart_and_together_equal_a_recomputation(db_url, db):
    first, second = project_in_shard(db, 0), project_in_shard(db, 1)
    for project in (first, second):
        put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
        put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    shard0 = db.execute("SELECT waybill.rollup_hourly(%s, p_shard => 0)",
                        (at("2026-03-03 12:00"),)).fetchone()[0]
    assert (shard0["shard"], shard0["events"]) == (0, 2)
    assert hourly(db, first) == {at("2026-03-03 10:00"): 2400, at("2026-03-03 11:00"): 3600}
    assert hourly(db, second) == {}
    # usage is complete only up to where every shard stands: shard 1 never ran
    assert db.execute("SELECT waybill.usage_as_of()").fetchone()[0] is None
    assert db.execute("SELECT waybill.billing_usage_as_of()").fetchone()[0] is None

    # shard 1 catches up in a session of its own while shard 0 goes on
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT waybill.rollup_hourly(%s, p_shard => 1)", (at("2026-03-03 11:00"),))
    db.execute("SELECT waybill.rollup_hourly(%s, p_shard => 0)", (at("2026-03-03 13:00"),))
    assert hourly(db, second) == {at("2026-03-03 10:00"): 2400}
    assert db.execute("SELECT waybill.usage_as_of()").fetchone()[0] == at("2026-03-03 11:00")
    # a project's day is rolled up once its shard has closed it
    db.execute("SELECT waybill.rollup_daily('2026-03-04')")
    assert daily(db, first) == daily(db, second) == {}
    db.execute("SELECT waybill.rollup_hourly(%s, p_shard => 0)", (at("2026-03-04 00:00"),))
    db.execute("SELECT waybill.rollup_daily('2026-03-04')")
    assert daily(db, first) == {date(2026, 3, 3): Decimal(2400 + 13 * 3600)}
    assert daily(db, second) == {}

    result = rollup(db, "2026-03-04 00:00")  # every shard
    assert [run["shard"] for run in result["shards"]] == [0, 1]
    assert result["closed_until"] == "2026-03-04T00:00:00+00:00"
    assert daily(db, first) == daily(db, second) == {date(2026, 3, 3): Decimal(2400 + 13 * 3600)}
    from_scratch_equals_incremental(db, "2026-03-04 00:00")


def test_scheduled_hourly_runs_skip_a_shard_another_session_holds(db_url, db):
    held = project_in_shard(db, 1)
    put(db, held, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    with psycopg.connect(db_url) as other:  # a run of shard 1 in progress
        other.execute("SELECT waybill.lock_rollup_shard(1)")
        result = db.execute("SELECT waybill.run_scheduled_rollups('hourly')").fetchone()[0]
    assert [run["shard"] for run in result["hourly"]] == [0]
    assert hourly(db, held, "bandwidth_gb") == {}
    result = db.execute("SELECT waybill.run_scheduled_rollups('hourly')").fetchone()[0]
    assert [run["shard"] for run in result["hourly"]] == [0, 1]
    assert hourly(db, held, "bandwidth_gb") == {at("2026-03-03 10:00"): 2}


def test_an_unknown_shard_is_refused(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no shard 2"):
        db.execute("SELECT waybill.rollup_hourly(%s, p_shard => 2)", (at("2026-03-03 10:00"),))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no shard -1"):
        db.execute("SELECT waybill.rollup_daily('2026-03-04', p_shard => -1)")


def test_open_insert_is_never_skipped_by_the_watermark(db_url, db):
    project = new_project()
    with psycopg.connect(db_url) as writer:  # a transaction: holds its seq, uncommitted
        early = put(writer, project, "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=3)
        later = put(db, project, "bandwidth.usage", "web", "2026-03-03 10:20", egress_gb=4)
        assert later > early
        # The run refuses to move past the open transaction's seq rather than skip it,
        # and names the session it waited for.
        with pytest.raises(psycopg.errors.LockNotAvailable) as refused:
            db.execute("SELECT waybill.rollup_hourly(%s, '200 milliseconds')",
                       (at("2026-03-03 12:00"),))
        assert refused.value.diag.message_detail == f"still open: pid {writer.info.backend_pid}"
        assert db.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0] == 0
        # A run that waits sees the insert once it commits, and includes it.
        outcome: list[Any] = []

        def wait_and_run() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                outcome.append(rollup(conn, "2026-03-03 12:00"))

        waiter = threading.Thread(target=wait_and_run)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # still waiting for the writer
        writer.commit()
    waiter.join(30)
    assert outcome and outcome[0]["events"] == 2 and outcome[0]["waited_for_writers"]
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 7}


def test_an_open_insert_straight_into_a_partition_is_never_skipped(db_url, db):
    project = new_project()
    first = put(db, project, "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=3)
    partition = db.execute("SELECT c.relname FROM waybill.usage_events e"
                           " JOIN pg_class c ON c.oid = e.tableoid WHERE e.seq = %s",
                           (first,)).fetchone()[0]
    with psycopg.connect(db_url) as loader:  # an owner's load into the month's partition, open
        loader.execute(sql.SQL(
            "INSERT INTO {} (event_id, project_id, event_type, resource_type, resource_id,"
            " event_time, quantity, metrics) VALUES (%s, %s, 'bandwidth.usage', 'deployment',"
            " 'web', %s, 4, '{{\"egress_gb\": 4}}')").format(sql.Identifier("waybill", partition)),
            (uuid.uuid4(), project, at("2026-03-03 10:20")))
        put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=5)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            db.execute("SELECT waybill.rollup_hourly(%s, '200 milliseconds')",
                       (at("2026-03-03 12:00"),))
        assert db.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0] == 0
        loader.commit()
    rollup(db, "2026-03-03 12:00")
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 12}


def test_a_caching_event_sequence_stops_the_rollup_before_it_can_skip_events(db_url, db):
    project = new_project()
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=3)
    db.execute("ALTER SEQUENCE waybill.usage_events_seq_seq CACHE 20")
    with psycopg.connect(db_url, autocommit=True) as writer:
        put(writer, project, "bandwidth.usage", "web", "2026-03-03 10:20", egress_gb=4)
        # The writer holds 19 numbers it drew but has not used, and holds no lock.
        drawn = db.execute(
            "SELECT pg_sequence_last_value('waybill.usage_events_seq_seq')").fetchone()[0]
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="CACHE 1"):
            rollup(db, "2026-03-03 12:00")
        assert db.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0] == 0
        # Its next event gets one of them: below the bound a run would have taken as safe.
        assert put(writer, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=5) < drawn
    db.execute("ALTER SEQUENCE waybill.usage_events_seq_seq CACHE 1")
    rollup(db, "2026-03-03 12:00")
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 12}


def test_a_sequence_set_back_below_the_watermark_stops_the_rollup(db):
    project = new_project()
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=3)
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:20", egress_gb=4)
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=5)
    rollup(db, "2026-03-03 12:00")
    watermark = db.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0]
    db.execute("SELECT setval('waybill.usage_events_seq_seq', %s)", (watermark - 2,))
    # A new event gets a number the rollups have passed: it would never be billed.
    assert put(db, project, "bandwidth.usage", "web", "2026-03-03 12:10", egress_gb=6) < watermark
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="below shard 0's watermark"):
        db.execute("SELECT waybill.rollup_hourly(%s)", (at("2026-03-03 13:00"),))


def test_a_sequence_left_at_its_next_number_is_not_taken_for_one_set_back(db):
    project = new_project()
    for minute in (10, 20, 30):
        put(db, project, "bandwidth.usage", "web", f"2026-03-03 10:{minute}", egress_gb=1)
    rollup(db, "2026-03-03 12:00")
    watermark = db.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0]
    # As migration 0400 leaves it: the next number is given, none handed out since.
    db.execute("SELECT setval('waybill.usage_events_seq_seq', %s, false)", (watermark + 1,))
    rollup(db, "2026-03-03 13:00")
    assert put(db, project, "bandwidth.usage", "web", "2026-03-03 13:10", egress_gb=2) == watermark + 1
    rollup(db, "2026-03-03 14:00")
    assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 3, at("2026-03-03 13:00"): 2}


def test_a_run_in_progress_does_not_hold_back_a_change_of_the_sequence(db_url, db):
    with psycopg.connect(db_url) as running:  # a run, its transaction still open
        running.execute("SELECT waybill.rollup_hourly(%s)", (at("2026-03-03 12:00"),))
        db.execute("SET lock_timeout = '2s'")
        db.execute("ALTER SEQUENCE waybill.usage_events_seq_seq CACHE 1")  # what 55000 asks for
        running.rollback()


def test_an_open_insert_in_a_copy_of_the_database_is_not_waited_for(server_url, template_url, db):
    other = clone_database(server_url, template_url)  # the same oids as this one
    try:
        with psycopg.connect(other) as writer:
            put(writer, new_project(), "bandwidth.usage", "web", "2026-03-03 10:10", egress_gb=1)
            result = db.execute("SELECT waybill.rollup_hourly(%s, '200 milliseconds')",
                                (at("2026-03-03 12:00"),)).fetchone()[0]
            assert not result["waited_for_writers"]
    finally:
        drop_database(server_url, other)


def test_run_killed_half_way_leaves_nothing_and_the_next_run_is_exact(db_url, db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    put(db, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    pid: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            pid.append(conn.info.backend_pid)
            try:
                rollup(conn, "2026-03-03 12:00")
            except psycopg.Error as exc:
                errors.append(exc)

    with psycopg.connect(db_url) as blocker:
        # Block the last write (hourly_usage), after current states, levels and open usage are written.
        blocker.execute("LOCK TABLE waybill.hourly_usage IN EXCLUSIVE MODE")
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = db.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation ="
                                 " 'waybill.hourly_usage'::regclass").fetchone()[0]
            if waiting:
                break
            time.sleep(0.02)
        assert waiting, "the run never reached hourly_usage"
        db.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
        thread.join(10)
    assert errors
    assert db.execute("SELECT count(*) FROM waybill.resource_current").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM waybill.open_usage").fetchone()[0] == 0
    rollup(db, "2026-03-03 12:00")
    assert hourly(db, project) == {at("2026-03-03 10:00"): 2400, at("2026-03-03 11:00"): 3600}
    from_scratch_equals_incremental(db, "2026-03-03 12:00")


def test_cli_aggregate_runs_the_same_functions(db_url, db):
    project = new_project()
    put(db, project, "deployment.started", "web", "2026-03-03 10:20", **SHAPE)
    until = parse_until("2026-03-03T12:34:56+00:00")
    assert until == at("2026-03-03 12:00")
    result = aggregate(db_url, until)
    shards = db.execute("SELECT count(*) FROM waybill.rollup_shards").fetchone()[0]
    assert [run["shard"] for run in result["hourly"]] == list(range(shards))
    assert sum(run["events"] for run in result["hourly"]) == 1
    assert hourly(db, project) == {at("2026-03-03 10:00"): 2400, at("2026-03-03 11:00"): 3600}
    assert parse_until("2026-03-03T12:10:00") == at("2026-03-03 12:00")  # naive = UTC


@pytest.fixture(scope="module", autouse=True)
def cron_job(server_url: str, template_url: str) -> Iterator[tuple[str, str, int, str]]:
    """A database with one event and a pg_cron job running the scheduled rollup in it,
    scheduled from pg_cron's own database with cron.schedule_in_database."""
    url = clone_database(server_url, template_url)
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]
        project = new_project()
        put(conn, project, "bandwidth.usage", "web", "2026-03-03 10:30", egress_gb=2)
    if not cron_db:
        drop_database(server_url, url)
        pytest.skip("pg_cron is not loaded on this server")
    admin_url = make_conninfo(server_url, dbname=cron_db)
    job_name = f"waybill-test:{name}"
    command = "SELECT waybill.run_scheduled_rollups()"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        try:  # pg_cron >= 1.5 takes seconds; 1.4 runs at the next minute
            job = admin.execute("SELECT cron.schedule_in_database(%s, '2 seconds', %s, %s)",
                                (job_name, command, name)).fetchone()[0]
        except psycopg.errors.InvalidParameterValue:
            job = admin.execute("SELECT cron.schedule_in_database(%s, '* * * * *', %s, %s)",
                                (job_name, command, name)).fetchone()[0]
    try:
        yield admin_url, url, job, project
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
                          (job_name,))
        drop_database(server_url, url)


def _cron_admin(db_url: str) -> tuple[psycopg.Connection[Any], str]:
    name = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]
    if not cron_db:
        pytest.skip("pg_cron is not loaded on this server")
    return psycopg.connect(make_conninfo(db_url, dbname=cron_db), autocommit=True), name


def test_schedules_are_named_jobs_that_reapply_without_duplicates(db_url):
    admin, name = _cron_admin(db_url)
    with admin:
        try:
            for _ in range(2):
                message = apply_schedules(db_url)
                assert "applied" in message
            jobs = admin.execute("SELECT jobname, schedule, command FROM cron.job"
                                 " WHERE database = %s AND jobname LIKE '%%:rollup-%%'"
                                 " ORDER BY jobname", (name,)).fetchall()
            assert [(j[0], j[1]) for j in jobs] == [
                (f"waybill:{name}:rollup-daily", "15 0 * * *"),
                (f"waybill:{name}:rollup-hourly", "5 * * * *"),
                (f"waybill:{name}:rollup-hourly-2", "5 * * * *")]
            assert all("waybill.run_scheduled_rollups" in j[2] for j in jobs)
        finally:
            admin.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s",
                          (name,))


def test_pg_cron_really_runs_the_rollup(cron_job):
    """Scheduled at the start of this module (see `cron_job`), checked last: pg_cron 1.4
    fires at minute boundaries, so the other tests run while it waits."""
    admin_url, url, job, project = cron_job
    with psycopg.connect(admin_url, autocommit=True) as admin:
        deadline = time.monotonic() + 75
        runs: list[Any] = []
        while time.monotonic() < deadline and not runs:
            runs = admin.execute("SELECT status, return_message FROM cron.job_run_details"
                                 " WHERE jobid = %s AND status IN ('succeeded', 'failed')",
                                 (job,)).fetchall()
            time.sleep(0.2)
    assert runs and runs[0][0] == "succeeded", runs
    with psycopg.connect(url, autocommit=True) as db:
        assert hourly(db, project, "bandwidth_gb") == {at("2026-03-03 10:00"): 2}
        as_of = db.execute("SELECT waybill.usage_as_of()").fetchone()[0]
    assert timedelta(0) <= datetime.now(UTC) - as_of < timedelta(hours=1)  # the clock's hour
