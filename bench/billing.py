"""Billing benchmark (issue #5): a month of 10,000 projects, and the estimate endpoint.

Measures in one run:
- the floor: one GROUP BY over the month's hourly_usage (what any billing must read);
- bill_period for the month (drafts for every project: segments, pricing, lines);
- finalize_period (recomputes the drafts, applies credits, finalizes), and running
  it again (idempotent: nothing left to do);
- POST /api/v1/estimate against the real API process: sequential latency
  (p50/p99 over ESTIMATES requests on one keep-alive connection) and wrk's
  throughput and p99 with a few connections.

The data is generated with SQL, as metering leaves it: hourly_usage, daily_usage
summed from it, and 1% of projects with their last day still dirty (a late event
re-rolled the hours, the daily rollup has not run yet: billing reads those hours).
PROJECTS projects (30% hobby, 30% pro, 10% team,
30% pay as you go, 5% changing plan mid-month, 10% with a credit); 60% run all
month (744 hourly rows), the rest in a quarter of the hours.
"""

from __future__ import annotations

import os
import shutil
import time

import psycopg

from bench.common import api_process, fresh_database, record, run_wrk, sequential_latency

PROJECTS = int(os.environ.get("BENCH_BILLING_PROJECTS", "10000"))
ESTIMATES = int(os.environ.get("BENCH_ESTIMATES", "3000"))
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
PERIOD = "2026-10-01"
ESTIMATE_BODY = (b'{"replicas": 2, "cpu_millicores": 500, "memory_mb": 1024, "storage_gb": 10,'
                 b' "avg_build_minutes": 4, "plan": "pro", "bandwidth_gb": 120,'
                 b' "month": "2026-10"}')

GENERATE = """
CREATE TEMP TABLE bench_projects AS
SELECT i, ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS id,
       (ARRAY['hobby', 'hobby', 'hobby', 'pro', 'pro', 'pro', 'team', NULL, NULL, NULL])[i % 10 + 1]
           AS plan
  FROM generate_series(1, {projects}) i;

INSERT INTO waybill.subscriptions (project_id, plan_id, effective_at, source)
SELECT id, plan, '2026-08-01', 'cli' FROM bench_projects WHERE plan IS NOT NULL;
INSERT INTO waybill.subscriptions (project_id, plan_id, effective_at, source)
SELECT id, 'team', '2026-10-01'::timestamptz + (i % 28) * interval '1 day' + interval '12:34:56',
       'cli'
  FROM bench_projects WHERE i % 20 = 0;
INSERT INTO waybill.credits (project_id, amount_cents, reason, granted_at)
SELECT id, 1000 + i % 5000, 'bench', '2026-09-01' FROM bench_projects WHERE i % 10 = 5;

INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds, storage_gb_seconds,
                                  build_seconds, bandwidth_gb, custom_domains, computed_at)
SELECT p.id, h,
       (p.i % 8 + 1) * 1800,
       (p.i % 20) * 3600,
       CASE WHEN (p.i + n) % 17 = 0 THEN round((random() * 900)::numeric, 3) ELSE 0 END,
       round((random() * 0.8)::numeric, 6),
       p.i % 3,
       h + interval '65 minutes'
  FROM bench_projects p
 CROSS JOIN LATERAL generate_series(0, 743) n
 CROSS JOIN LATERAL (SELECT '2026-10-01'::timestamptz + n * interval '1 hour' AS h) hh
 WHERE p.i % 10 < 6 OR (p.i + n) % 4 = 0;

INSERT INTO waybill.daily_usage (project_id, day, compute_gb_seconds, storage_gb_seconds,
                                 build_seconds, bandwidth_gb, custom_domains, computed_at)
SELECT project_id, (hour AT TIME ZONE 'UTC')::date, sum(compute_gb_seconds),
       sum(storage_gb_seconds), sum(build_seconds), sum(bandwidth_gb), max(custom_domains),
       max(hour) + interval '75 minutes'
  FROM waybill.hourly_usage GROUP BY 1, 2;

INSERT INTO waybill.rollup_dirty_days (project_id, day)
SELECT id, '2026-10-31' FROM bench_projects WHERE i % 100 = 7;

UPDATE waybill.rollup_shards SET closed_until = '2026-11-01 00:00+00';
"""

FLOOR = """
SELECT count(*), sum(c) FROM (
    SELECT project_id, sum(compute_gb_seconds) c, sum(storage_gb_seconds),
           sum(build_seconds), sum(bandwidth_gb), max(custom_domains)
      FROM waybill.daily_usage
     WHERE day >= '2026-10-01' AND day < '2026-11-01'
     GROUP BY project_id) x
"""
HOURLY_FLOOR = FLOOR.replace("daily_usage", "hourly_usage").replace("day >=", "hour >=").replace(
    "day <", "hour <")


def timed(conn: psycopg.Connection[object], sql: str, *params: object) -> tuple[float, object]:
    started = time.perf_counter()
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    return time.perf_counter() - started, row[0] if row else None


def generate(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET work_mem = '256MB'")
        with conn.transaction():
            for statement in GENERATE.format(projects=int(PROJECTS)).split(";"):
                if statement.strip():
                    conn.execute(statement.encode())
        conn.execute("VACUUM ANALYZE waybill.hourly_usage")
        conn.execute("VACUUM ANALYZE waybill.daily_usage")
        conn.execute("ANALYZE waybill.subscriptions")
        row = conn.execute("SELECT count(*) FROM waybill.hourly_usage").fetchone()
    return int(row[0]) if row else 0


def billing(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        floor, _ = timed(conn, FLOOR)
        hourly_floor, _ = timed(conn, HOURLY_FLOOR)
        draft, drafts = timed(conn, "SELECT waybill.bill_period(%s, '2026-11-01 00:20+00')",
                              PERIOD)
        redraft, _ = timed(conn, "SELECT waybill.bill_period(%s, '2026-11-01 00:40+00')", PERIOD)
        final, finalized = timed(conn, "SELECT waybill.finalize_period(%s, '2026-11-01 01:00+00')",
                                 PERIOD)
        again, again_count = timed(
            conn, "SELECT waybill.finalize_period(%s, '2026-11-01 02:00+00')", PERIOD)
        lines = conn.execute("SELECT count(*) FROM waybill.billing_record_lines").fetchone()
        credited = conn.execute("SELECT count(*) FROM waybill.credit_applications").fetchone()
        conn.execute("VACUUM ANALYZE waybill.billing_record_lines")  # settle before the API runs
    return {"floor_s": floor, "hourly_floor_s": hourly_floor, "bill_period_s": draft, "records": float(drafts),  # type: ignore[arg-type]
            "bill_period_again_s": redraft, "finalize_s": final,
            "finalized": float(finalized), "finalize_again_s": again,  # type: ignore[arg-type]
            "finalized_again": float(again_count),  # type: ignore[arg-type]
            "lines": float(lines[0]) if lines else 0.0,
            "credit_applications": float(credited[0]) if credited else 0.0}


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%BODY%'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_load(base: str) -> dict[str, float]:
    script = WRK_SCRIPT.replace("%BODY%", ESTIMATE_BODY.decode())
    return run_wrk(f"{base}/api/v1/estimate", script, connections=8, seconds=WRK_SECONDS)


def run() -> None:
    url = fresh_database("waybill_bench_billing")
    started = time.perf_counter()
    rows = generate(url)
    generated_s = time.perf_counter() - started
    result = billing(url)
    with api_process(url, LOG_LEVEL="WARNING") as (_, base):
        sequential = sequential_latency(base, "POST", lambda _: "/api/v1/estimate", ESTIMATES,
                                        {"content-type": "application/json"}, ESTIMATE_BODY)
        load = wrk_load(base) if shutil.which("wrk") else {}
    results = {"projects": PROJECTS, "hourly_rows": rows, "generate_s": round(generated_s, 1),
               **{k: round(v, 3) for k, v in result.items()},
               "bill_to_floor_ratio": round(result["bill_period_s"] / result["floor_s"], 2),
               "estimate_sequential": {k: round(v, 3) for k, v in sequential.items()},
               "estimate_wrk_8_connections": {k: round(v, 3) for k, v in load.items()}}
    wrk_row = (f"| estimate under load (wrk, 8 connections, {WRK_SECONDS} s) | "
               f"{load['requests_per_s']:,.0f} req/s, p99 {load['p99_ms']:.2f} ms, "
               f"{load['non_2xx']:.0f} errors | - |\n") if load else ""
    summary = f"""{PROJECTS:,} projects, {rows:,} hourly_usage rows for October 2026 (744 hours), generated with SQL in {generated_s:.0f} s.

| measure | result | target |
|---|---|---|
| floor: one GROUP BY over the month's daily_usage rows | {result['floor_s']:.2f} s | - |
| for scale: the same GROUP BY over the month's hourly_usage rows | {result['hourly_floor_s']:.2f} s | - |
| bill_period (drafts for every project) | {result['bill_period_s']:.2f} s ({result['bill_period_s'] / result['floor_s']:.1f}x floor), {result['records']:,.0f} records, {result['lines']:,.0f} lines | < 5 s |
| bill_period again (recompute drafts) | {result['bill_period_again_s']:.2f} s | < 5 s |
| finalize_period (recompute, credits, finalize) | {result['finalize_s']:.2f} s, {result['finalized']:,.0f} records, {result['credit_applications']:,.0f} credits applied | < 5 s |
| finalize_period again (idempotent) | {result['finalize_again_s']:.2f} s, {result['finalized_again']:.0f} records changed | - |
| POST /api/v1/estimate, sequential, {ESTIMATES:,} requests | p50 {sequential['p50_ms']:.2f} ms, p99 {sequential['p99_ms']:.2f} ms, {sequential['failures']:.0f} failures | p99 < 10 ms |
{wrk_row}"""
    record("billing", results, summary)
