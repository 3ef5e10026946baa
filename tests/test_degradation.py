"""Degradation: a database that goes away, and a pool that runs dry.

These run the real `waybill serve` process against a PostgreSQL cluster of their
own, which the test stops and starts; nothing else shares it.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from app.db.cluster import Cluster
from bench.common import api_process
from tests.conftest import INTERNAL_KEY
from tests.factories import event


@pytest.fixture(scope="module")
def own_cluster(private_cluster: Cluster) -> Cluster:
    return private_cluster


def request(base: str, method: str, path: str, body: Any = None) -> tuple[int, float, dict[str, Any]]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                          "Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.monotonic() - started
    conn.close()
    return response.status, elapsed, json.loads(payload) if payload else {}


def test_database_down_answers_503_fast_and_recovers_by_itself(own_cluster):
    with api_process(own_cluster.url(), INTERNAL_API_KEY=INTERNAL_KEY) as (_, base):
        assert request(base, "POST", "/internal/events", event())[0] == 201
        own_cluster.down()
        try:
            for _ in range(3):
                status, elapsed, body = request(base, "POST", "/internal/events", event())
                assert status == 503 and elapsed < 1.0, (status, elapsed)
                assert "Traceback" not in json.dumps(body) and body["status"] == 503
            status, elapsed, body = request(base, "GET", "/ready")
            assert status == 503 and elapsed < 1.5 and body["database"] == "unreachable"
            assert request(base, "GET", "/health")[0] == 200
        finally:
            own_cluster.up()
        deadline = time.monotonic() + 15
        recovered = False
        while time.monotonic() < deadline and not recovered:
            recovered = request(base, "POST", "/internal/events", event())[0] == 201
            time.sleep(0.2)
        assert recovered, "ingestion did not recover after the database came back"
        assert request(base, "GET", "/ready")[0] == 200
    with psycopg.connect(own_cluster.url()) as conn:
        stored = conn.execute("SELECT count(*) FROM waybill.usage_events").fetchone()[0]
    assert stored >= 2  # the event before the outage and the one that proved recovery


def test_exhausted_pool_waits_a_bounded_time_then_answers_503(own_cluster):
    env = {"INTERNAL_API_KEY": INTERNAL_KEY, "DB_POOL_MIN": "2", "DB_POOL_MAX": "2",
           "DB_POOL_TIMEOUT": "0.3"}
    with api_process(own_cluster.url(), **env) as (_, base):
        assert request(base, "POST", "/internal/events/batch", {"events": [event()]})[0] == 201
        with psycopg.connect(own_cluster.url()) as blocker:
            # Every write now waits on this lock, holding its pooled connection.
            blocker.execute("LOCK TABLE waybill.event_keys IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(8) as workers:
                futures = [workers.submit(request, base, "POST", "/internal/events/batch",
                                          {"events": [event()]}) for _ in range(8)]
                time.sleep(1.5)
                finished = [f.result() for f in futures if f.done()]
                blocker.rollback()
                results = [f.result() for f in futures]
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201, 201] + [503] * 6, statuses
    assert len(finished) == 6 and all(s == 503 and t < 1.0 for s, t, _ in finished), finished
