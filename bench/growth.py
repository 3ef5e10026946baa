"""Growth benchmark (issue: reliability): do ingest and rollup slow down as history grows?

One database grows in stages (BENCH_GROWTH_STAGES, millions of events; default
1,10,50). At each stage the history is generated with SQL (compute snapshots and
bandwidth over the last 30 days, 2,000 projects, 20,000 resources, into the
monthly partitions), the rollups are caught up, then measured in one run:
- batch ingestion over HTTP: BATCHES batches of 1000 new events, 4 clients;
- the incremental hourly rollup over exactly those new events.
Flat numbers across stages mean cost follows the new events, not the history.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench.common import api_process, fresh_database, record
from bench.ingest import KEY, make_batches, send_batches

STAGES = [int(float(s) * 1_000_000) for s in
          os.environ.get("BENCH_GROWTH_STAGES", "1,10,50").split(",")]
BATCHES = int(os.environ.get("BENCH_GROWTH_BATCHES", "50"))
CHUNK = 2_000_000
SPAN_SECONDS = 30 * 86400

# History: event g of the stream, spread over the 30 days before `until`.
_HISTORY_SQL = f"""
WITH g AS (
    SELECT g, %(until)s::timestamptz - make_interval(secs => {SPAN_SECONDS} - (g %% {SPAN_SECONDS})) AS at,
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
       CASE WHEN g %% 10 < 6 THEN 1 + g %% 3 END, CASE WHEN g %% 10 < 6 THEN 500 END,
       CASE WHEN g %% 10 < 6 THEN 1024 END, CASE WHEN g %% 10 >= 6 THEN 0.25 END,
       CASE WHEN g %% 10 < 6 THEN '{{"replicas": 2, "cpu_millicores": 500, "memory_mb": 1024}}'::jsonb
            ELSE '{{"egress_gb": 0.25}}'::jsonb END
  FROM g ORDER BY at
"""


def grow(url: str, start: int, stop: int, until: datetime) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for lo in range(start + 1, stop + 1, CHUNK):
            hi = min(lo + CHUNK - 1, stop)
            conn.execute(_HISTORY_SQL, {"lo": lo, "hi": hi, "until": until})
            print(f"  {hi:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE waybill.usage_events")
        conn.execute("VACUUM ANALYZE waybill.event_keys")
    return time.perf_counter() - started


def rollup(url: str, until: datetime) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("SELECT waybill.rollup_hourly(%s)", (until,))
        return time.perf_counter() - started


def run() -> None:
    url = fresh_database("waybill_bench_growth")
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows, loaded = [], 0
    for target in STAGES:
        generate_s = grow(url, loaded, target, until - timedelta(hours=1))
        catch_up_s = rollup(url, until)
        with api_process(url, INTERNAL_API_KEY=KEY) as (_, base):
            batch_rate, failures = send_batches(base, make_batches(BATCHES))
        incremental_s = rollup(url, until)
        loaded = target + BATCHES * 1000
        rows.append({"history_events": target, "generate_s": round(generate_s, 1),
                     "rollup_catch_up_s": round(catch_up_s, 1),
                     "batch_events_per_s": round(batch_rate), "batch_failures": failures,
                     "incremental_rollup_ms": round(incremental_s * 1000, 1),
                     "incremental_events": BATCHES * 1000})
        print(rows[-1], flush=True)
    table = "\n".join(
        f"| {r['history_events']:,} | {r['batch_events_per_s']:,} | {r['incremental_rollup_ms']:,} |"
        f" {r['rollup_catch_up_s']} |" for r in rows)
    first, last = rows[0], rows[-1]
    summary = f"""History grown in stages; at each stage {BATCHES * 1000:,} new events over HTTP (batches of 1000, 4 clients), then the incremental hourly rollup over exactly those events.

| events already stored | batch ingestion (events/s) | incremental rollup of the new events (ms) | rollup catch-up after generating the stage (s) |
|---|---|---|---|
{table}

Largest / smallest history: ingestion {last['batch_events_per_s'] / first['batch_events_per_s']:.2f}x, incremental rollup {last['incremental_rollup_ms'] / first['incremental_rollup_ms']:.2f}x the time.
"""
    record("growth", {"stages": rows}, summary)
