"""Metering benchmark (issue #4): the rollups against a bare scan of the same events.

A realistic month (April 2026, 720 hours): 2,000 projects, 20,000 resources
(12,000 deployments, 4,000 volumes, 4,000 domains), BENCH_EVENTS events (10
million by default), mostly compute snapshots (55 %) and bandwidth (40 %), the
rest builds, scales, stops and resizes; generated with generate_series straight
into waybill.usage_events and waybill.event_keys. Measures in one run:
- the floor: a bare `GROUP BY project, hour` over all the events;
- the full rollup from scratch (hourly, then daily) over the first 719 hours;
- an incremental hourly run after the last hour's events (1/720 of the month),
  after a checkpoint, as every hourly run comes; BENCH_INCREMENTAL_RUNS times
  (each but the last rolled back, so each does the same work) and the median
  reported, since one run on a shared machine varies by up to 2x;
- an incremental run with nothing new (the fixed cost);
- GET /api/v1/projects/{id}/usage/current with the month loaded, against the
  real API process (dashboard key): sequential latency (p50/p99 over
  BENCH_USAGE_REQUESTS requests on one keep-alive connection, over varying
  projects) and non-200 answers. The endpoint reads the month of the clock, so
  the rolled-up month (hourly_usage, daily_usage, dirty days) is first copied
  into the current month up to the current hour, and rollup_state.closed_until
  moved to that hour, as metering would leave it mid-month.
The hourly rollups run as the scheduled jobs run them: every shard of projects in
a session of its own, all at once (docs/metering.md, "Shards"); their time is the
wall time from the first start to the last end. Each shard's run reports its own
per-step timings (rollup_hourly's `timings`).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import api_process, fresh_database, record, rollup_shards, sequential_latency

EVENTS = int(os.environ.get("BENCH_EVENTS", "10000000"))
PROJECTS, DEPLOYMENTS, VOLUMES, DOMAINS = 2000, 12000, 4000, 4000
START = datetime(2026, 4, 1, tzinfo=UTC)
HOURS = 720
END = START + timedelta(hours=HOURS)
LAST_HOUR = END - timedelta(hours=1)
USAGE_REQUESTS = int(os.environ.get("BENCH_USAGE_REQUESTS", "2000"))
INCREMENTAL_RUNS = int(os.environ.get("BENCH_INCREMENTAL_RUNS", "5"))
DASHBOARD_KEY = "bench-dashboard-key"


def _project_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012x}"

# One generated event per g; its time is spread evenly over the month, so
# ingestion order follows event time as it does in production.
_EVENTS_SQL = f"""
INSERT INTO waybill.usage_events (event_id, project_id, event_type, resource_type, resource_id,
    event_time, received_at, replicas, cpu_millicores, memory_mb, size_gb, quantity, metrics)
SELECT md5('e' || g)::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(r %% {PROJECTS}), 12, '0'))::uuid,
       t.event_type::waybill.event_type, t.resource_type, t.resource_id, at, at,
       t.replicas, t.cpu, t.memory, t.size, t.quantity, t.metrics
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
 CROSS JOIN LATERAL (SELECT %(start)s::timestamptz
                            + make_interval(secs => (g - 1) * {HOURS * 3600}.0
                                                    / %(total)s) AS at,
                            CASE WHEN g %% 100 < 95 THEN (g * 7919) %% {DEPLOYMENTS}
                                 WHEN g %% 100 = 98 THEN {DEPLOYMENTS} + g %% {VOLUMES}
                                 ELSE (g * 31) %% {DEPLOYMENTS} END AS r) x
 CROSS JOIN LATERAL (SELECT * FROM (VALUES
    (g %% 100 < 55, 'compute.snapshot', 'deployment', 'd' || r, 1 + g %% 3, 500::numeric,
     512 * (1 + g %% 4)::numeric, NULL::numeric, NULL::numeric,
     jsonb_build_object('replicas', 1 + g %% 3, 'cpu_millicores', 500, 'memory_mb', 512 * (1 + g %% 4))),
    (g %% 100 BETWEEN 55 AND 94, 'bandwidth.usage', 'deployment', 'd' || r, NULL, NULL, NULL, NULL,
     (g %% 100) / 100.0, jsonb_build_object('egress_gb', (g %% 100) / 100.0)),
    (g %% 100 IN (95, 96), 'build.completed', 'build', 'b' || g, NULL, NULL, NULL, NULL,
     (g %% 600)::numeric, jsonb_build_object('duration_seconds', g %% 600)),
    (g %% 100 = 97, 'deployment.scaled', 'deployment', 'd' || r, 1 + g %% 5, NULL, NULL, NULL, NULL,
     jsonb_build_object('replicas', 1 + g %% 5)),
    (g %% 100 = 98, 'volume.resized', 'volume', 'v' || r, NULL, NULL, NULL, 1 + g %% 50, NULL,
     jsonb_build_object('size_gb', 1 + g %% 50)),
    (g %% 100 = 99, 'deployment.stopped', 'deployment', 'd' || r, NULL, NULL, NULL, NULL, NULL,
     '{{}}'::jsonb)
 ) v(pick, event_type, resource_type, resource_id, replicas, cpu, memory, size, quantity, metrics)
   WHERE v.pick) t
 ORDER BY g
"""

# The 20,000 resources come to life in the month's first minute.
_INITIAL_SQL = f"""
INSERT INTO waybill.usage_events (event_id, project_id, event_type, resource_type, resource_id,
    event_time, received_at, replicas, cpu_millicores, memory_mb, size_gb, metrics)
SELECT md5('i' || r)::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(r %% {PROJECTS}), 12, '0'))::uuid,
       t, rt, rid, %(start)s::timestamptz + make_interval(secs => r %% 60),
       %(start)s::timestamptz, rep, cpu, mem, size, metrics
  FROM generate_series(0, {DEPLOYMENTS + VOLUMES + DOMAINS} - 1) r
 CROSS JOIN LATERAL (SELECT
       CASE WHEN r < {DEPLOYMENTS} THEN 'deployment.started'
            WHEN r < {DEPLOYMENTS} + {VOLUMES} THEN 'volume.created'
            ELSE 'domain.added' END::waybill.event_type AS t,
       CASE WHEN r < {DEPLOYMENTS} THEN 'deployment'
            WHEN r < {DEPLOYMENTS} + {VOLUMES} THEN 'volume' ELSE 'domain' END AS rt,
       CASE WHEN r < {DEPLOYMENTS} THEN 'd' || r
            WHEN r < {DEPLOYMENTS} + {VOLUMES} THEN 'v' || r ELSE 'dom' || r END AS rid,
       CASE WHEN r < {DEPLOYMENTS} THEN 2 END::numeric AS rep,
       CASE WHEN r < {DEPLOYMENTS} THEN 500 END::numeric AS cpu,
       CASE WHEN r < {DEPLOYMENTS} THEN 1024 END::numeric AS mem,
       CASE WHEN r >= {DEPLOYMENTS} AND r < {DEPLOYMENTS} + {VOLUMES} THEN 10 END::numeric AS size,
       '{{}}'::jsonb AS metrics) x
"""

_KEYS_SQL = """
INSERT INTO waybill.event_keys (project_id, dedupe_key, content_digest, event_id)
SELECT project_id, event_id, event_id, event_id FROM waybill.usage_events WHERE seq > %(after)s
"""

# The floor groups the same way the rollup does (waybill.utc_hour) and gets the
# same work_mem as the rollup gives itself, so neither is measured with a handicap.
_FLOOR_SQL = """
SELECT count(*) FROM (
    SELECT project_id, waybill.utc_hour(event_time) AS hour, count(*), sum(quantity)
      FROM waybill.usage_events GROUP BY 1, 2) x
"""

_PREWARM_REPLAY_INDEX_SQL = """
SELECT sum(pg_prewarm(i.indexrelid, 'read'))
  FROM pg_inherits p JOIN pg_index i ON i.indrelid = p.inhrelid
  JOIN pg_inherits pi ON pi.inhrelid = i.indexrelid
 WHERE p.inhparent = 'waybill.usage_events'::regclass
   AND pi.inhparent = 'waybill.usage_events_replay_idx'::regclass
"""

# usage/current reads the month of the clock: the rolled-up month is copied into
# the current one, hours before the current hour only (daily_usage: whole days
# before today), and metering's watermark moved to the current hour.
_CURRENT_MONTH_SQL = [
    """INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds, storage_gb_seconds,
                                      build_seconds, bandwidth_gb, custom_domains, computed_at)
       SELECT project_id, hour + %(shift)s, compute_gb_seconds, storage_gb_seconds,
              build_seconds, bandwidth_gb, custom_domains, computed_at + %(shift)s
         FROM waybill.hourly_usage
        WHERE hour >= %(start)s AND hour < %(end)s AND hour + %(shift)s < %(hour)s
       ON CONFLICT DO NOTHING""",
    """INSERT INTO waybill.daily_usage (project_id, day, compute_gb_seconds, storage_gb_seconds,
                                     build_seconds, bandwidth_gb, custom_domains, computed_at)
       SELECT project_id, day + %(days)s::integer, compute_gb_seconds, storage_gb_seconds,
              build_seconds, bandwidth_gb, custom_domains, computed_at + %(shift)s
         FROM waybill.daily_usage
        WHERE day >= %(start)s::date AND day < %(end)s::date AND day + %(days)s::integer < %(today)s
       ON CONFLICT DO NOTHING""",
    """INSERT INTO waybill.rollup_dirty_days (project_id, day)
       SELECT project_id, day + %(days)s::integer FROM waybill.rollup_dirty_days
        WHERE day >= %(start)s::date AND day < %(end)s::date AND day + %(days)s::integer <= %(today)s
       ON CONFLICT DO NOTHING""",
    "UPDATE waybill.rollup_shards SET closed_until = greatest(closed_until, %(hour)s)",
]


def _timed(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> tuple[float, Any]:
    started = time.perf_counter()
    row = conn.execute(sql, params).fetchone()
    return time.perf_counter() - started, row[0] if row else None


def _generate(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Store the month but its last hour; return the g range of that last hour."""
    started = time.perf_counter()
    bulk = EVENTS - (DEPLOYMENTS + VOLUMES + DOMAINS)
    before_last = bulk * (HOURS - 1) // HOURS
    conn.execute(_INITIAL_SQL, {"start": START})
    chunk = 1_000_000
    for lo in range(1, before_last + 1, chunk):
        hi = min(lo + chunk - 1, before_last)
        conn.execute(_EVENTS_SQL, {"lo": lo, "hi": hi, "start": START, "total": bulk})
        print(f"  generated {hi + DEPLOYMENTS + VOLUMES + DOMAINS:,} events "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    conn.execute(_KEYS_SQL, {"after": 0})
    conn.execute("VACUUM ANALYZE waybill.usage_events")
    conn.execute("VACUUM ANALYZE waybill.event_keys")
    print(f"generated the month but its last hour in {time.perf_counter() - started:.0f} s")
    return before_last + 1, bulk


def _load_current_month(conn: psycopg.Connection[Any]) -> datetime:
    """Copy the rolled-up month into the clock's month; return the current hour."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    shift = hour.replace(day=1, hour=0) - START  # whole days
    params = {"shift": shift, "days": shift.days, "start": START, "end": END, "hour": hour,
              "today": hour.date()}
    conn.execute("SET TimeZone = 'UTC'")
    for sql in _CURRENT_MONTH_SQL:
        conn.execute(sql, params)
    conn.execute("VACUUM ANALYZE waybill.hourly_usage")
    conn.execute("VACUUM ANALYZE waybill.daily_usage")
    conn.execute("VACUUM ANALYZE waybill.rollup_dirty_days")
    return hour


def run() -> None:
    url = fresh_database("waybill_bench_metering")
    with psycopg.connect(url, autocommit=True) as conn:
        lo, hi = _generate(conn)
        total = conn.execute("SELECT count(*) FROM waybill.usage_events").fetchone()[0]

        conn.execute("SET work_mem = '1GB'")
        # Both start from memory: the floor reads the table (once to warm it),
        # the rollup the replay index too, which this machine's kernel pages
        # out after a minute unread (DAMON reclaim) while the month is
        # generated; reading it back at random once cost the pass 33 s, not 10.
        # The checkpoint keeps the generation's writes out of the timings.
        conn.execute("CHECKPOINT")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute(_PREWARM_REPLAY_INDEX_SQL)
        _timed(conn, _FLOOR_SQL)
        floor_s, groups = _timed(conn, _FLOOR_SQL)

        full_s, full = rollup_shards(url, LAST_HOUR, keep=True, days=True)
        conn.execute("VACUUM ANALYZE waybill.resource_current")
        conn.execute("VACUUM ANALYZE waybill.hourly_usage")
        current = conn.execute("SELECT count(*) FROM waybill.resource_current").fetchone()[0]
        cells = conn.execute("SELECT count(*) FROM waybill.hourly_usage").fetchone()[0]

        watermark = conn.execute("SELECT watermark FROM waybill.rollup_state").fetchone()[0]
        conn.execute(_EVENTS_SQL, {"lo": lo, "hi": hi, "start": START,
                                   "total": EVENTS - (DEPLOYMENTS + VOLUMES + DOMAINS)})
        conn.execute(_KEYS_SQL, {"after": watermark})
        new_events = hi - lo + 1
        # An hourly run comes at least one checkpoint after the last one: the
        # pages it changes log whole-page images again. Measure that case.
        incr_runs = []
        for run in range(INCREMENTAL_RUNS):
            conn.execute("CHECKPOINT")
            incr_runs.append(rollup_shards(url, END, keep=run == INCREMENTAL_RUNS - 1))
        incr_s, incr = sorted(incr_runs, key=lambda r: r[0])[len(incr_runs) // 2]
        idle_s, idle = rollup_shards(url, END, keep=True)

        as_of = _load_current_month(conn)
    with api_process(url, DASHBOARD_API_KEY=DASHBOARD_KEY) as (_, base):
        usage = sequential_latency(
            base, "GET", lambda i: f"/api/v1/projects/{_project_id(i * 7919 % PROJECTS)}/usage/current",
            USAGE_REQUESTS, {"authorization": f"Bearer {DASHBOARD_KEY}"})

    results = {
        "events": total + new_events, "projects": PROJECTS,
        "resources": DEPLOYMENTS + VOLUMES + DOMAINS, "resource_current_rows": current,
        "hourly_cells": cells, "floor_group_by_seconds": round(floor_s, 3),
        "floor_groups": groups, "full_rollup_seconds": round(full_s, 3),
        "full_vs_floor": round(full_s / floor_s, 2),
        "incremental_new_events": new_events,
        "incremental_seconds": round(incr_s, 4),
        "incremental_runs_seconds": [round(r[0], 4) for r in incr_runs],
        "idle_run_seconds": round(idle_s, 4),
        "full_timings_ms": [r["timings"] for r in full],
        "incremental_timings_ms": [r["timings"] for r in incr],
        "idle_timings_ms": [r["timings"] for r in idle],
        "usage_current_month_loaded_until": as_of.isoformat(),
        "usage_current_sequential": {k: round(v, 3) for k, v in usage.items()},
    }
    summary = (
        f"{results['events']:,} events, {PROJECTS:,} projects, {results['resources']:,} "
        f"resources, one month ({HOURS} hours).\n\n"
        "| measurement | time | target |\n|---|---|---|\n"
        f"| floor: bare GROUP BY project, hour over all events | {floor_s:.2f} s | - |\n"
        f"| full rollup from scratch (hourly + daily) | {full_s:.2f} s "
        f"({results['full_vs_floor']}x the floor) | < 10 s, <= 4x |\n"
        f"| incremental hourly run, {new_events:,} new events, median of {len(incr_runs)} "
        f"({', '.join(f'{r[0] * 1000:.0f}' for r in incr_runs)} ms) | {incr_s * 1000:.0f} ms "
        "| < 100 ms |\n"
        f"| run with nothing new | {idle_s * 1000:.0f} ms | - |\n"
        f"| GET usage/current, sequential, {USAGE_REQUESTS:,} requests | "
        f"p50 {usage['p50_ms']:.2f} ms, p99 {usage['p99_ms']:.2f} ms, "
        f"{usage['failures']:.0f} failures | p99 < 20 ms |\n\n"
        f"Full rollup steps, per shard (ms): {json.dumps(results['full_timings_ms'])}\n\n"
        f"Incremental steps, median run, per shard (ms): "
        f"{json.dumps(results['incremental_timings_ms'])}\n"
    )
    record("metering", results, summary)
