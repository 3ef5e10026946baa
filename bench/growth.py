"""Growth benchmark (issue: reliability): do ingest and rollup slow down as history grows?

One database grows in stages (BENCH_GROWTH_STAGES, millions of stored events;
default 1,10,50), along one timeline that ends two hours before the current
one: 2,000 projects and 20,000 resources (compute snapshots, 60 %, and
bandwidth, 40 %) at the same rate throughout, so stage k's history fills the
part of the last 30 days proportional to its events. At each stage:
- the history is generated with SQL and rolled up (the catch-up, reported,
  not a target);
- then two hours of operation, each: BATCHES batches of 1000 new events over
  HTTP (4 clients) timed in that hour, a checkpoint, and the hourly rollup
  that closes the hour (its new events and every project's level in it; the
  shards at once, each in its session, as the scheduled jobs run them). The
  first hour is not measured: an hourly schedule follows the previous hour's
  run, not a backfill that pushed everything out of the caches. The second
  hour's ingestion rate and rollup time are the stage's results.
Flat numbers across stages mean the cost follows the new events, not the
history.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import api_process, fresh_database, record, rollup_shards
from bench.ingest import KEY, make_batches, send_batches

STAGES = [int(float(s) * 1_000_000) for s in
          os.environ.get("BENCH_GROWTH_STAGES", "1,10,50").split(",")]
BATCHES = int(os.environ.get("BENCH_GROWTH_BATCHES", "50"))
CHUNK = 2_000_000
SPAN = timedelta(days=30)
HOUR = timedelta(hours=1)

# Events lo..hi of the timeline, evenly spread over [from, until); each resource
# keeps its shape, so a snapshot changes nothing unless something else did.
_HISTORY_SQL = """
WITH g AS (
    SELECT g, %(from)s::timestamptz + make_interval(secs => (g - %(first)s) * %(step)s) AS at,
           (g * 7919) %% 20000 AS r
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
), keys AS (
    INSERT INTO waybill.event_keys (project_id, dedupe_key, content_digest, event_id)
    SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(r %% 2000), 12, '0'))::uuid,
           md5('k' || g)::uuid, md5('k' || g)::uuid, md5('e' || g)::uuid FROM g
)
INSERT INTO waybill.usage_events (event_id, project_id, event_type, resource_type, resource_id,
    event_time, received_at, replicas, cpu_millicores, memory_mb, quantity, metrics)
SELECT md5('e' || g)::uuid, ('00000000-0000-4000-8000-' || lpad(to_hex(r %% 2000), 12, '0'))::uuid,
       CASE WHEN g %% 10 < 6 THEN 'compute.snapshot' ELSE 'bandwidth.usage' END::waybill.event_type,
       'deployment', 'd' || r, at, at,
       CASE WHEN g %% 10 < 6 THEN 1 + r %% 3 END, CASE WHEN g %% 10 < 6 THEN 500 END,
       CASE WHEN g %% 10 < 6 THEN 1024 END, CASE WHEN g %% 10 >= 6 THEN 0.25 END,
       CASE WHEN g %% 10 < 6 THEN jsonb_build_object('replicas', 1 + r %% 3,
                                                    'cpu_millicores', 500, 'memory_mb', 1024)
            ELSE '{"egress_gb": 0.25}'::jsonb END
  FROM g ORDER BY at
"""


def grow(url: str, first: int, last: int, start: datetime, until: datetime) -> float:
    """Store events first..last spread over [start, until)."""
    started = time.perf_counter()
    step = (until - start).total_seconds() / (last - first + 1)
    with psycopg.connect(url, autocommit=True) as conn:
        for lo in range(first, last + 1, CHUNK):
            hi = min(lo + CHUNK - 1, last)
            conn.execute(_HISTORY_SQL, {"lo": lo, "hi": hi, "first": first, "step": step,
                                        "from": start})
            print(f"  {hi:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE waybill.usage_events")
        conn.execute("VACUUM ANALYZE waybill.event_keys")
    return time.perf_counter() - started


def hourly_run(url: str, base: str, hour: datetime) -> tuple[float, int, float, Any]:
    """One hour of operation: BATCHES batches over HTTP timed in `hour`, then
    (after a checkpoint) the hourly rollup that closes it."""
    batch_rate, failures = send_batches(
        base, make_batches(BATCHES, now=hour + timedelta(seconds=3599)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # as before every hourly run (bench/metering.py)
    seconds, shards = rollup_shards(url, hour + HOUR)  # the shards at once, as scheduled
    return batch_rate, failures, seconds, shards


def run() -> None:
    url = fresh_database("waybill_bench_growth")
    # the timeline ends two hours back: each stage runs two hours after its history
    last_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 2 * HOUR
    start = last_hour - SPAN
    rows, loaded, history_from = [], 0, start
    for target in STAGES:
        # the hour after this stage's history: the timeline's share of its events
        hour = (start + SPAN * (target / STAGES[-1])).replace(minute=0, second=0, microsecond=0)
        generate_s = grow(url, loaded + 1, target, history_from, hour)
        catch_up_s, _ = rollup_shards(url, hour, days=True)
        with api_process(url, INTERNAL_API_KEY=KEY) as (_, base):
            # An hourly schedule runs after the previous hour's run, not after
            # a backfill that pushed everything out of the caches: one hour
            # first, unmeasured, then the measured one.
            hourly_run(url, base, hour)
            batch_rate, failures, incremental_s, result = hourly_run(url, base, hour + HOUR)
        with psycopg.connect(url, autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM waybill.usage_events").fetchone()[0]
        loaded, history_from = target, hour + 2 * HOUR
        rows.append({"history_events": target, "stored_events": stored,
                     "generate_s": round(generate_s, 1), "rollup_catch_up_s": round(catch_up_s, 1),
                     "batch_events_per_s": round(batch_rate), "batch_failures": failures,
                     "incremental_rollup_ms": round(incremental_s * 1000, 1),
                     "incremental_events": sum(r["events"] for r in result),
                     "incremental_timings_ms": [r["timings"] for r in result]})
        print(rows[-1], flush=True)
    table = "\n".join(
        f"| {r['stored_events']:,} | {r['batch_events_per_s']:,} | {r['batch_failures']} |"
        f" {r['incremental_events']:,} | {r['incremental_rollup_ms']:,} | {r['rollup_catch_up_s']} |"
        for r in rows)
    first, last = rows[0], rows[-1]
    summary = f"""One timeline of 2,000 projects and 20,000 resources grown in stages; at each stage, after an unmeasured hour of operation, {BATCHES * 1000:,} new events over HTTP (batches of 1000, 4 clients) in the next hour, then (after a checkpoint) the incremental hourly rollup that closes it, its shards at once.

| events stored when measured | batch ingestion (events/s) | failed batches | events the rollup applied | incremental rollup (ms) | rollup catch-up of the stage's history (s) |
|---|---|---|---|---|---|
{table}

Largest / smallest history: ingestion {last['batch_events_per_s'] / first['batch_events_per_s']:.2f}x the rate, incremental rollup {last['incremental_rollup_ms'] / first['incremental_rollup_ms']:.2f}x the time.

Incremental rollup steps (ms), by stage: {'; '.join(str(r['incremental_timings_ms']) for r in rows)}
"""
    record("growth", {"stages": rows}, summary)
