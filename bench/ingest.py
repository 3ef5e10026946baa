"""Ingestion benchmark (issue: foundation): the API against the COPY ceiling.

With the events table already holding PRELOAD events (5 million by default,
BENCH_PRELOAD to change), measures in one run:
- the ceiling: rows/s of a bare COPY of the same events into a scratch copy of
  the tables, with the same indexes and the dedupe constraint;
- batch ingestion over HTTP (batches of 1000, several clients), new events;
- the same batches replayed (all duplicates);
- single-event requests over HTTP (wrk, several connections), with p50/p99;
- the API's peak resident memory.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from bench.common import api_process, fresh_database, peak_rss_mb, record, run_wrk

PRELOAD = int(os.environ.get("BENCH_PRELOAD", "5000000"))
BATCHES = int(os.environ.get("BENCH_BATCHES", "200"))
BATCH_SIZE = 1000
CLIENTS = 4
WORKERS = int(os.environ.get("API_WORKERS", "1"))  # API processes (the default); see the README
SINGLE_SECONDS = int(os.environ.get("BENCH_SINGLE_SECONDS", "20"))
SINGLE_CONNECTIONS = 32
KEY = "bench-internal-key"
PROJECTS = [uuid.UUID(int=(0x5EED << 96) | i) for i in range(2000)]


def preload(url: str) -> None:
    """Fill the tables with PRELOAD events (random keys, as real traffic has)."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        conn.execute(f"""
            CREATE UNLOGGED TABLE public.preload AS
            SELECT i, gen_random_uuid() AS event_id,
                   ('00000000-0000-4000-8000-' || lpad(to_hex(i % 2000), 12, '0'))::uuid AS project_id,
                   gen_random_uuid() AS dedupe_key
              FROM generate_series(1, {PRELOAD}) AS i""")
        conn.execute("""
            INSERT INTO waybill.event_keys (project_id, dedupe_key, content_digest, event_id)
            SELECT project_id, dedupe_key, dedupe_key, event_id FROM public.preload""")
        conn.execute("""
            INSERT INTO waybill.usage_events (event_id, project_id, event_type, resource_type,
                resource_id, event_time, quantity, metrics)
            SELECT event_id, project_id, 'bandwidth.usage', 'service', 'svc-' || (i % 20000),
                   now() - make_interval(secs => i % 2592000), 0.5, '{"egress_gb": 0.5}'
              FROM public.preload ORDER BY i""")
        conn.execute("DROP TABLE public.preload")
        conn.execute("VACUUM ANALYZE waybill.usage_events")
        conn.execute("VACUUM ANALYZE waybill.event_keys")
    print(f"preloaded {PRELOAD} events in {time.perf_counter() - started:.0f} s")


def make_event(index: int, now: datetime) -> dict[str, object]:
    project = PROJECTS[index % len(PROJECTS)]
    moment = (now - timedelta(seconds=random.randint(0, 3599))).isoformat()
    if index % 4 == 0:
        return {"event_type": "compute.snapshot", "project_id": str(project),
                "resource_type": "deployment", "resource_id": f"dep-{index % 20000}",
                "timestamp": moment, "idempotency_key": f"snap-{uuid.uuid4()}",
                "metrics": {"replicas": 2, "cpu_millicores": 500, "memory_mb": 1024}}
    return {"event_type": "bandwidth.usage", "project_id": str(project),
            "resource_type": "service", "resource_id": f"svc-{index % 20000}",
            "timestamp": moment, "idempotency_key": f"bw-{uuid.uuid4()}",
            "metrics": {"egress_gb": round(random.random() * 3, 6)}}


def make_batches(count: int, now: datetime | None = None) -> list[bytes]:
    """`count` batches of new events, timed in the hour before `now` (default: the clock)."""
    now = now or datetime.now(UTC)
    return [json.dumps({"events": [make_event(b * BATCH_SIZE + i, now)
                                   for i in range(BATCH_SIZE)]}).encode()
            for b in range(count)]


def copy_ceiling(url: str, batches: list[bytes]) -> float:
    """Rows/s of a bare COPY of the same events into scratch copies of both tables."""
    from app.ingest.validate import EventRow, parse_event

    now = datetime.now(UTC)
    rows: list[EventRow] = []
    for body in batches:
        for raw in json.loads(body)["events"]:
            parsed = parse_event(json.dumps(raw).encode(), now=now, max_age=timedelta(days=35),
                                 max_future=timedelta(minutes=5))
            assert isinstance(parsed, EventRow)
            rows.append(parsed)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("usage_events", "event_keys"):
            conn.execute(f"DROP TABLE IF EXISTS public.scratch_{table}")
            conn.execute(f"CREATE TABLE public.scratch_{table} "
                         f"(LIKE waybill.{table} INCLUDING ALL)")
            # generated columns (metering_kind, metering_value) compute themselves
            columns = ", ".join(name for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " 'waybill' AND table_name = %s AND is_generated = 'NEVER'"
                " ORDER BY ordinal_position", (table,)))
            conn.execute(f"INSERT INTO public.scratch_{table} ({columns}) OVERRIDING SYSTEM VALUE "
                         f"SELECT {columns} FROM waybill.{table}")
            conn.execute(f"VACUUM ANALYZE public.scratch_{table}")
        started = time.perf_counter()
        with conn.transaction():
            with conn.cursor().copy(
                "COPY public.scratch_event_keys (project_id, dedupe_key, content_digest, event_id)"
                " FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((r.project_id, r.dedupe_key, r.content_digest, r.event_id))
            with conn.cursor().copy(
                "COPY public.scratch_usage_events (event_id, project_id, event_type, resource_type,"
                " resource_id, event_time, idempotency_key, replicas, cpu_millicores, memory_mb,"
                " size_gb, quantity, metrics) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((r.event_id, r.project_id, r.event_type, r.resource_type,
                                    r.resource_id, r.event_time, r.idempotency_key, r.replicas,
                                    r.cpu_millicores, r.memory_mb, r.size_gb, r.quantity,
                                    bytes(r.metrics).decode()))
        elapsed = time.perf_counter() - started
        for table in ("usage_events", "event_keys"):
            conn.execute(f"DROP TABLE public.scratch_{table}")
    return len(rows) / elapsed


def send_batches(base: str, batches: list[bytes]) -> tuple[float, int]:
    """Send every batch with CLIENTS keep-alive connections; events/s and non-2xx count."""
    host, port = base.removeprefix("http://").split(":")
    queue = list(enumerate(batches))
    lock = threading.Lock()
    failures = [0]

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        while True:
            with lock:
                if not queue:
                    break
                _, body = queue.pop()
            conn.request("POST", "/internal/events/batch", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                with lock:
                    failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return len(batches) * BATCH_SIZE / elapsed, failures[0]


WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
setup = function(thread) thread_id = thread_id + 1; thread:set("tid", thread_id) end
request = function()
  counter = counter + 1
  local body = string.format('{"event_type":"bandwidth.usage","project_id":"%s",' ..
    '"resource_type":"service","resource_id":"svc-%d","idempotency_key":"wrk-%s-%d-%d",' ..
    '"metrics":{"egress_gb":0.25}}', "%PROJECT%", counter %% 100, "%RUN%", tid, counter)
  return wrk.format("POST", "/internal/events", {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %KEY%"}, body)
end
"""


def single_events(base: str) -> dict[str, float]:
    """wrk: single-event POSTs, each a new event; requests/s, p50, p99 (ms), non-2xx."""
    script = (WRK_SCRIPT.replace("%PROJECT%", str(PROJECTS[0])).replace("%KEY%", KEY)
              .replace("%RUN%", uuid.uuid4().hex[:8]).replace("%%", "%"))
    return run_wrk(base, script, connections=SINGLE_CONNECTIONS, seconds=SINGLE_SECONDS)


def run() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the single-event benchmark (apt-get install wrk)")
    url = fresh_database("waybill_bench_ingest")
    preload(url)
    batches = make_batches(BATCHES)
    ceiling = copy_ceiling(url, batches[: max(1, BATCHES // 4)])
    with api_process(url, INTERNAL_API_KEY=KEY, DB_POOL_MAX="16", API_WORKERS=str(WORKERS)) as (process, base):
        send_batches(base, make_batches(5))  # warm up connections and code paths
        batch_rate, batch_failures = send_batches(base, batches)
        replay_rate, replay_failures = send_batches(base, batches)
        single = single_events(base)
        rss = peak_rss_mb(process.pid)
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM waybill.usage_events").fetchone()[0]
    expected = PRELOAD + (BATCHES + 5) * BATCH_SIZE  # plus every single event wrk sent
    results = {
        "preloaded_events": PRELOAD, "api_workers": WORKERS, "batches": BATCHES, "batch_size": BATCH_SIZE,
        "copy_ceiling_rows_per_s": round(ceiling),
        "batch_events_per_s": round(batch_rate), "batch_failures": batch_failures,
        "replay_events_per_s": round(replay_rate), "replay_failures": replay_failures,
        "batch_to_copy_ratio": round(batch_rate / ceiling, 3),
        "replay_to_new_ratio": round(replay_rate / batch_rate, 3),
        "single": single, "api_peak_rss_mb": round(rss, 1), "events_stored": stored,
        "batch_events_stored_at_least": expected,
    }
    summary = f"""Table already holding {PRELOAD:,} events; API_WORKERS={WORKERS}; batches of {BATCH_SIZE}, {CLIENTS} clients; single events from wrk with {SINGLE_CONNECTIONS} connections for {SINGLE_SECONDS} s.

| measure | result | target |
|---|---|---|
| COPY ceiling (same events, scratch tables, same indexes) | {ceiling:,.0f} rows/s | - |
| batch ingestion over HTTP | {batch_rate:,.0f} events/s | >= 50,000 |
| batch / COPY ceiling | {batch_rate / ceiling:.2f} | >= 0.5 |
| replayed batches (all duplicates) | {replay_rate:,.0f} events/s ({replay_rate / batch_rate:.2f}x new) | >= 1.0x new |
| single events | {single['requests_per_s']:,.0f} requests/s | >= 5,000 |
| single-event latency p50 / p99 | {single['p50_ms']:.2f} ms / {single['p99_ms']:.2f} ms | p99 < 25 ms |
| API peak resident memory (all processes) | {rss:.0f} MB | < 200 MB |
| failed requests (batch, replay, single) | {batch_failures}, {replay_failures}, {single['non_2xx']:.0f} | 0 |
"""
    record("ingest", results, summary)
