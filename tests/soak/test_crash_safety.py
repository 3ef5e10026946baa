"""Crash safety (`make soak`): nothing lost, nothing counted twice, whatever dies.

A loader sends 200,000 events in batches of 1000, retrying any failure, while the
test kills the API process (SIGKILL) several times and restarts PostgreSQL once
in crash mode (immediate stop: recovery from the WAL). Rollups run throughout,
one is killed half-way; so is a billing run. At the end every event is stored exactly once and the
usage the incremental rollups computed equals a recomputation from scratch.
Bounded in time; loopback only.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from app.db.cluster import Cluster
from bench.common import free_port, start_api, stop_api
from tests.conftest import INTERNAL_KEY
from tests.metering_helpers import snapshot

pytestmark = pytest.mark.soak

EVENTS = 200_000
BATCH = 1000
LOADERS = 3


def make_batches(now: datetime) -> list[bytes]:
    rng = random.Random(7)
    projects = [str(uuid.UUID(int=(0xC0FFEE << 96) | i)) for i in range(50)]
    batches = []
    for b in range(EVENTS // BATCH):
        events = []
        for i in range(BATCH):
            n = b * BATCH + i
            project = projects[n % len(projects)]
            moment = (now - timedelta(seconds=rng.randint(60, 5 * 3600))).isoformat()
            kind = n % 10
            if kind < 4:
                body = {"event_type": "compute.snapshot", "resource_type": "deployment",
                        "resource_id": f"dep-{n % 400}",
                        "metrics": {"replicas": rng.randint(1, 4), "cpu_millicores": 500,
                                    "memory_mb": rng.choice([256, 512, 1024])}}
            elif kind < 5:
                body = {"event_type": rng.choice(["deployment.stopped", "volume.deleted"]),
                        "resource_type": "deployment", "resource_id": f"dep-{n % 400}",
                        "metrics": {}}
            elif kind < 6:
                body = {"event_type": "volume.created", "resource_type": "volume",
                        "resource_id": f"vol-{n % 100}", "metrics": {"size_gb": rng.randint(1, 50)}}
            elif kind < 7:
                body = {"event_type": "build.completed", "resource_type": "build",
                        "resource_id": f"b-{n}", "metrics": {"duration_seconds": rng.randint(5, 900)}}
            else:
                body = {"event_type": "bandwidth.usage", "resource_type": "service",
                        "resource_id": f"svc-{n % 200}",
                        "metrics": {"egress_gb": round(rng.random() * 2, 6)}}
            events.append({**body, "project_id": project, "timestamp": moment,
                           "idempotency_key": f"soak-{n}"})
        batches.append(json.dumps({"events": events}).encode())
    return batches


class Loader:
    """Sends every batch until it gets a 2xx, through whatever happens to the API."""

    def __init__(self, port: int, batches: list[bytes]) -> None:
        self.port, self.queue, self.lock = port, list(batches), threading.Lock()
        self.failures = 0
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    return
                body = self.queue.pop()
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, "a batch could not be delivered in 120 s"
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                    conn.request("POST", "/internal/events/batch", body=body, headers={
                        "Authorization": f"Bearer {INTERNAL_KEY}", "Content-Type": "application/json"})
                    status = conn.getresponse().status
                    conn.close()
                except OSError:
                    status = 0
                with self.lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 201:
                    break
                with self.lock:
                    self.failures += 1
                time.sleep(0.05)


def kill_half_way(url: str, statement: str, params: tuple[Any, ...]) -> None:
    """Run `statement` and kill its backend 50 ms in, as a crash would."""
    with psycopg.connect(url, autocommit=True) as victim, psycopg.connect(url, autocommit=True) as admin:
        pid = victim.info.backend_pid
        killer = threading.Timer(0.05, lambda: admin.execute(
            "SELECT pg_terminate_backend(%s)", (pid,)))
        killer.start()
        with pytest.raises(psycopg.OperationalError):
            victim.execute(statement, params)
        killer.join()


def rollup_until(url: str, until: datetime) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT waybill.rollup_hourly(%s)", (until,))


def test_kills_and_restarts_lose_nothing_and_count_nothing_twice(private_cluster: Cluster):
    url = private_cluster.url()
    now = datetime.now(UTC)
    until = now.replace(minute=0, second=0, microsecond=0)
    batches = make_batches(now)
    port = free_port()
    env = {"INTERNAL_API_KEY": INTERNAL_KEY, "DB_POOL_TIMEOUT": "2"}
    api = start_api(url, port, **env)
    loader = Loader(port, batches)
    threads = [threading.Thread(target=loader.run) for _ in range(LOADERS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    kills = 0
    try:
        for round_no in range(6):
            time.sleep(1.0)
            if round_no == 3:  # PostgreSQL dies as in a crash, and comes back
                private_cluster._run("pg_ctl", "stop", "-m", "immediate", "-D",
                                     str(private_cluster.data_dir))
                time.sleep(0.5)
                private_cluster.up()
                continue
            api.send_signal(signal.SIGKILL)
            api.wait()
            kills += 1
            api = start_api(url, port, **env)
            try:
                rollup_until(url, until)  # rollups interleave with the load
            except psycopg.OperationalError:
                pass
        for t in threads:
            t.join(timeout=300)
    finally:
        stop_api(api)
    elapsed = time.monotonic() - started

    # A rollup killed half-way changes nothing; the rerun finishes the work.
    kill_half_way(url, "SELECT waybill.recompute_usage_from_scratch(%s), pg_sleep(1)", (until,))
    rollup_until(url, until)

    with psycopg.connect(url, autocommit=True) as conn:
        stored, keys, distinct = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM waybill.event_keys),"
            " count(DISTINCT idempotency_key) FROM waybill.usage_events").fetchone()
        incremental = snapshot(conn)
        conn.execute("SELECT waybill.recompute_usage_from_scratch(%s)", (until,))
        from_scratch = snapshot(conn)
    billing = kill_and_rerun_billing(url, until)

    report: dict[str, Any] = {"seconds": round(elapsed, 1), "api_kills": kills,
                              "postgres_crash_restarts": 1, "retried_batches": loader.failures,
                              "answers": loader.statuses}
    print("crash soak:", report)
    assert kills == 5 and loader.failures > 0, report  # the faults really hit the loader
    assert (stored, keys, distinct) == (EVENTS, EVENTS, EVENTS), report
    assert incremental["hourly"], "the rollups produced usage"
    assert incremental == from_scratch
    assert billing["records"] > 0 and billing["after_kill"] == billing["again"]
    assert billing["mismatched_totals"] == 0


BILLING_SNAPSHOT = """
SELECT r.project_id, r.subtotal_cents, r.total_cents,
       r.subtotal_cents = coalesce(sum(l.amount_cents) FILTER (WHERE l.kind <> 'credit'), 0) AS sums
  FROM waybill.billing_records r
  LEFT JOIN waybill.billing_record_lines l ON l.project_id = r.project_id AND l.record_id = r.record_id
 WHERE r.period_start = %s
 GROUP BY 1, 2, 3 ORDER BY 1
"""


def kill_and_rerun_billing(url: str, until: datetime) -> dict[str, Any]:
    """Bill this month (as if it had ended), killed half-way, then again twice."""
    period = until.date().replace(day=1)
    month_end = datetime(period.year + period.month // 12, period.month % 12 + 1, 1, tzinfo=UTC)
    kill_half_way(url, "SELECT waybill.bill_period(%s, %s), pg_sleep(1)", (period, month_end))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM waybill.billing_records WHERE period_start = %s",
                            (period,)).fetchone()[0] == 0, "a killed billing run left records"
        conn.execute("SELECT waybill.bill_period(%s, %s)", (period, month_end))
        after_kill = conn.execute(BILLING_SNAPSHOT, (period,)).fetchall()
        conn.execute("SELECT waybill.bill_period(%s, %s)", (period, month_end))
        again = conn.execute(BILLING_SNAPSHOT, (period,)).fetchall()
    return {"records": len(after_kill), "after_kill": after_kill, "again": again,
            "mismatched_totals": sum(1 for row in after_kill if not row[3])}
