"""Event ingestion, CONTRACT.md section 1: exactly once, atomic, every bad input refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from app.ingest.store import store_events
from app.ingest.validate import EventRow, parse_event
from tests.conftest import INTERNAL_KEY, make_settings
from tests.factories import event, iso


def count_events(db: psycopg.Connection[Any], project_id: str | None = None) -> int:
    if project_id is None:
        return db.execute("SELECT count(*) FROM waybill.usage_events").fetchone()[0]
    return db.execute("SELECT count(*) FROM waybill.usage_events WHERE project_id = %s",
                      (project_id,)).fetchone()[0]


def post(client: Any, body: Any, path: str = "/internal/events", **headers: str) -> Any:
    return client.post(path, json=body, headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                                                 **headers})


def test_new_event_is_stored_with_both_times_and_typed_metrics(client, db):
    body = event(timestamp="2026-11-25T09:30:00+02:00", idempotency_key="k-1",
                 metrics={"replicas": 2, "cpu_millicores": 500, "memory_mb": 512, "gpu": 1.5},
                 metadata={"region": "eu"}, resource_name="web")
    body["timestamp"] = iso(datetime.now(UTC) - timedelta(hours=1)).replace("Z", "+00:00")
    response = post(client, body)
    assert response.status_code == 201
    answer = response.json()
    assert answer["duplicate"] is False
    row = db.execute(
        "SELECT event_id, event_time, received_at, replicas, cpu_millicores, memory_mb, metrics,"
        " metadata, resource_name, seq FROM waybill.usage_events").fetchone()
    assert str(row[0]) == answer["event_id"]
    assert row[1] == datetime.fromisoformat(body["timestamp"])
    assert abs((row[2] - datetime.now(UTC)).total_seconds()) < 30
    assert (row[3], row[4], row[5]) == (Decimal(2), Decimal(500), Decimal(512))
    assert row[6] == {"replicas": 2, "cpu_millicores": 500, "memory_mb": 512, "gpu": 1.5}
    assert row[7] == {"region": "eu"} and row[8] == "web" and row[9] >= 1


def test_offset_timestamps_are_stored_as_the_same_instant(client, db):
    instant = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    local = instant.astimezone(__import__("datetime").timezone(timedelta(hours=-5)))
    assert post(client, event(timestamp=local.isoformat())).status_code == 201
    assert db.execute("SELECT event_time FROM waybill.usage_events").fetchone()[0] == instant


def test_replay_answers_as_the_first_call_and_counts_once(client, db):
    body = event()
    first = post(client, body)
    second = post(client, body)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    assert count_events(db) == 1


def test_idempotency_key_dedupes_even_when_the_timestamp_is_missing(client, db):
    body = event(idempotency_key="build-42", event_type="build.completed",
                 metrics={"duration_seconds": 45.2})
    del body["timestamp"]
    assert post(client, body).status_code == 201
    assert post(client, body).status_code == 200
    assert count_events(db) == 1


def test_key_reused_for_different_content_is_a_conflict_and_stores_nothing(client, db):
    body = event(idempotency_key="k")
    assert post(client, body).status_code == 201
    other = dict(body, metrics={"replicas": 3, "cpu_millicores": 500, "memory_mb": 512})
    response = post(client, other)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert count_events(db) == 1


def test_without_key_the_content_is_the_key(client, db):
    body = event()
    changed = dict(body, metrics={"replicas": 3, "cpu_millicores": 500, "memory_mb": 512})
    assert post(client, body).status_code == 201
    assert post(client, changed).status_code == 201
    assert post(client, dict(body, metrics={"memory_mb": 512.0, "replicas": 2.00,
                                            "cpu_millicores": 5e2})).status_code == 200
    assert count_events(db) == 2


def test_events_without_timestamp_or_key_are_each_new(client, db):
    body = event()
    del body["timestamp"]
    assert post(client, body).status_code == 201
    assert post(client, body).status_code == 201
    assert count_events(db) == 2


def test_same_key_in_two_projects_is_two_events(client, db):
    assert post(client, event(idempotency_key="shared")).status_code == 201
    assert post(client, event(idempotency_key="shared")).status_code == 201
    assert count_events(db) == 2


def test_batch_is_stored_and_a_replayed_batch_counts_once(client, db):
    events = [event(event_type="bandwidth.usage", metrics={"egress_gb": i + 0.5})
              for i in range(50)]
    first = post(client, {"events": events}, "/internal/events/batch")
    assert first.status_code == 201 and first.json() == {"accepted": 50, "duplicates": 0}
    again = post(client, {"events": events}, "/internal/events/batch")
    assert again.status_code == 201 and again.json() == {"accepted": 0, "duplicates": 50}
    assert count_events(db) == 50


def test_batch_repeating_a_key_inside_itself_stores_it_once(client, db):
    body = event(idempotency_key="dup")
    response = post(client, {"events": [body, event(), body]}, "/internal/events/batch")
    assert response.json() == {"accepted": 2, "duplicates": 1}
    assert count_events(db) == 2


def test_batch_with_one_bad_event_stores_nothing_and_names_each_bad_index(client, db):
    events = [event(), event(event_type="nope"), event(),
              event(metrics={"replicas": -1, "cpu_millicores": 1, "memory_mb": 1})]
    response = post(client, {"events": events}, "/internal/events/batch")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1, 3]
    assert "deployment.started" in errors[0]["errors"][0]  # names the known types
    assert "metrics.replicas" in errors[1]["errors"][0]
    assert count_events(db) == 0


def test_batch_conflicting_key_rolls_back_the_whole_batch(client, db):
    taken = event(idempotency_key="taken")
    assert post(client, taken).status_code == 201
    reused = dict(taken, resource_id="another")
    response = post(client, {"events": [event(), reused]}, "/internal/events/batch")
    assert response.status_code == 409 and response.json()["indexes"] == [1]
    assert count_events(db) == 1


def test_batch_limits(db_url, db):
    from litestar.testing import TestClient

    from app.web import create_app

    with TestClient(create_app(make_settings(max_batch_events=3), database_url=db_url)) as small:
        too_many = post(small, {"events": [event() for _ in range(4)]}, "/internal/events/batch")
        assert too_many.status_code == 422 and "limit is 3" in too_many.json()["detail"]
        empty = post(small, {"events": []}, "/internal/events/batch")
        assert empty.status_code == 422
        assert post(small, {"event": []}, "/internal/events/batch").status_code == 422
    assert count_events(db) == 0


@pytest.mark.parametrize("event_type,metrics", [
    ("deployment.started", {"replicas": 1, "cpu_millicores": 100}),
    ("compute.snapshot", {"cpu_millicores": 100, "memory_mb": 128}),
    ("deployment.scaled", {}),
    ("build.completed", {}),
    ("build.failed", {"image_size_mb": 3}),
    ("volume.created", {}),
    ("volume.resized", {"egress_gb": 1}),
    ("bandwidth.usage", {"ingress_gb": 4}),
])
def test_required_metrics_per_type(client, db, event_type, metrics):
    response = post(client, event(event_type=event_type, metrics=metrics))
    assert response.status_code == 422
    assert count_events(db) == 0


@pytest.mark.parametrize("event_type,metrics", [
    ("deployment.scaled", {"replicas": 4}),
    ("deployment.stopped", {}),
    ("compute.snapshot", {"replicas": 1, "cpu_millicores": 250, "memory_mb": 256}),
    ("build.started", {}),
    ("build.completed", {"duration_seconds": 45.2, "image_size_mb": 250}),
    ("build.failed", {"duration_seconds": 3}),
    ("volume.created", {"size_gb": 10}),
    ("volume.resized", {"size_gb": 20}),
    ("volume.deleted", {}),
    ("bandwidth.usage", {"egress_gb": 1.25, "ingress_gb": 9}),
    ("domain.added", {}),
    ("domain.removed", {}),
])
def test_every_event_type_is_accepted_with_its_metrics(client, db, event_type, metrics):
    response = post(client, event(event_type=event_type, metrics=metrics))
    assert response.status_code == 201, response.text
    quantity = db.execute("SELECT quantity FROM waybill.usage_events").fetchone()[0]
    expected = metrics.get("duration_seconds", metrics.get("egress_gb"))
    assert quantity == (Decimal(str(expected)) if expected is not None else None)


@pytest.mark.parametrize("timestamp,reason", [
    (lambda: iso(datetime.now(UTC) + timedelta(minutes=6)), "future"),
    (lambda: iso(datetime.now(UTC) - timedelta(days=36)), "EVENT_MAX_AGE"),
    (lambda: datetime.now(UTC).replace(tzinfo=None).isoformat(), "offset"),
    (lambda: "yesterday", "datetime"),
    (lambda: "9999-12-31T23:59:59Z", "future"),
    (lambda: "0001-01-01T00:00:00Z", "EVENT_MAX_AGE"),
])
def test_timestamp_rules(client, db, timestamp, reason):
    response = post(client, event(timestamp=timestamp()))
    assert response.status_code == 422
    assert reason in json.dumps(response.json())
    assert count_events(db) == 0


def test_timestamp_within_five_minutes_ahead_is_accepted(client):
    ahead = iso(datetime.now(UTC) + timedelta(minutes=4))
    assert post(client, event(timestamp=ahead)).status_code == 201


@pytest.mark.parametrize("field,value", [
    ("metrics", {"replicas": "2", "cpu_millicores": 1, "memory_mb": 1}),
    ("metrics", {"replicas": True, "cpu_millicores": 1, "memory_mb": 1}),
    ("metrics", {"replicas": "HUGE", "cpu_millicores": 1, "memory_mb": 1}),
    ("metrics", {"replicas": -0.5, "cpu_millicores": 1, "memory_mb": 1}),
    ("metrics", {"replicas": None, "cpu_millicores": 1, "memory_mb": 1}),
    ("metrics", [1, 2]),
    ("project_id", "not-a-uuid"),
    ("resource_type", ""),
    ("resource_type", "x" * 65),
    ("resource_id", "x" * 256),
    ("resource_id", "a\u0000b"),
    ("idempotency_key", ""),
    ("idempotency_key", "k" * 256),
    ("metadata", {"a": 1}),
    ("metadata", {"big": "x" * 17000}),
    ("metadata", {"a\u0000": "b"}),
    ("team_id", "nope"),
    ("surprise", 1),
])
def test_bad_fields_are_refused_and_nothing_is_stored(client, db, field, value):
    text = json.dumps(event(**{field: value})).replace('"HUGE"', "1e309")
    response = client.post("/internal/events", content=text,
                           headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                                    "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert count_events(db) == 0


def test_missing_required_fields(client, db):
    for field in ("event_type", "project_id", "resource_type", "resource_id", "metrics"):
        body = event()
        del body[field]
        assert post(client, body).status_code == 422, field
    assert count_events(db) == 0


def test_malformed_json_is_400_and_leaks_nothing(client, db):
    response = client.post("/internal/events", content=b'{"event_type": ',
                           headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                                    "content-type": "application/json"})
    assert response.status_code == 400
    assert "Traceback" not in response.text and "psycopg" not in response.text
    invalid_utf8 = client.post("/internal/events", content=b'{"event_type": "\xff"}',
                               headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                                        "content-type": "application/json"})
    assert invalid_utf8.status_code == 400
    assert count_events(db) == 0


def test_body_over_the_limit_is_413(db_url, db):
    from litestar.testing import TestClient

    from app.web import create_app

    with TestClient(create_app(make_settings(max_body_bytes=2048), database_url=db_url)) as small:
        body = {"events": [event() for _ in range(20)]}
        response = post(small, body, "/internal/events/batch")
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")
    assert count_events(db) == 0


def test_wrong_content_type_is_415(client, db):
    response = client.post("/internal/events", content=json.dumps(event()),
                           headers={"Authorization": f"Bearer {INTERNAL_KEY}",
                                    "content-type": "text/plain"})
    assert response.status_code == 415
    assert count_events(db) == 0


def test_internal_key_is_required_in_either_header(client, db):
    body = event()
    assert client.post("/internal/events", json=body).status_code == 401
    assert client.post("/internal/events", json=body,
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/internal/events", json=body,
                       headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/internal/events", json=body,
                       headers={"X-API-Key": INTERNAL_KEY}).status_code == 201
    assert count_events(db) == 1


def test_without_a_configured_key_internal_endpoints_fail_closed(db_url, db):
    from litestar.testing import TestClient

    from app.web import create_app

    with TestClient(create_app(make_settings(internal_api_key=None), database_url=db_url)) as c:
        for key in ("", "None", "anything"):
            response = c.post("/internal/events", json=event(),
                              headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 503
            assert "INTERNAL_API_KEY" in response.json()["detail"]
    assert count_events(db) == 0


def test_concurrent_replays_from_many_connections_store_one_row(db_url, db):
    now = datetime.now(UTC)
    body = json.dumps(event(idempotency_key="race")).encode()
    settings = make_settings()

    def fresh_row() -> EventRow:
        row = parse_event(body, now=now, max_age=settings.event_max_age,
                          max_future=settings.event_max_future)
        assert isinstance(row, EventRow)
        return row

    async def race() -> list[Any]:
        async with AsyncConnectionPool(db_url, min_size=8, max_size=8,
                                       kwargs={"autocommit": True}) as pool:
            await pool.wait()
            return await asyncio.gather(*(store_events(pool, [fresh_row()]) for _ in range(24)))

    results = [stored for (stored,) in asyncio.run(race())]
    assert sum(1 for r in results if not r.duplicate) == 1
    assert len({r.event_id for r in results}) == 1
    assert count_events(db) == 1


def test_events_are_append_only_for_the_service_role_and_everyone_else(client, db):
    assert post(client, event()).status_code == 201
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE waybill.usage_events SET resource_id = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM waybill.usage_events")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("TRUNCATE waybill.usage_events")
    with db.transaction():
        db.execute("SET LOCAL ROLE waybill_app")
        privileges = db.execute(
            "SELECT has_table_privilege('waybill.usage_events', 'UPDATE'),"
            " has_table_privilege('waybill.usage_events', 'DELETE'),"
            " has_table_privilege('waybill.event_keys', 'DELETE')").fetchone()
    assert privileges == (False, False, False)
    assert count_events(db) == 1


def test_metrics_count_accepted_duplicate_and_rejected(client):
    body = event()
    post(client, body)
    post(client, body)
    post(client, event(event_type="bad"))
    text = client.get("/metrics").text
    assert "waybill_events_accepted_total" in text
    assert 'waybill_events_rejected_total{reason="invalid"}' in text
    assert "waybill_request_duration_seconds_bucket" in text


def test_responses_carry_a_request_id(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert client.get("/health").headers["x-request-id"]



def test_uuid_event_ids_are_time_ordered(client):
    first = post(client, event()).json()["event_id"]
    second = post(client, event()).json()["event_id"]
    assert uuid.UUID(first).version == 7 and first < second


def test_concurrent_single_events_share_commits_but_keep_their_own_answers(db_url, db):
    from concurrent.futures import ThreadPoolExecutor

    from bench.common import api_process
    from tests.test_degradation import request

    taken = event(idempotency_key="taken")
    reused = dict(taken, resource_id="another-resource")
    bodies = [event() for _ in range(40)]
    with api_process(db_url, INTERNAL_API_KEY=INTERNAL_KEY) as (_, base):
        assert request(base, "POST", "/internal/events", taken)[0] == 201
        with ThreadPoolExecutor(16) as workers:
            results = list(workers.map(lambda b: request(base, "POST", "/internal/events", b),
                                       [*bodies, reused, bodies[0]]))
        metrics = http_get(base, "/metrics")
    statuses = [status for status, _, _ in results]
    assert statuses[1:40] == [201] * 39
    assert statuses[40] == 409
    assert sorted([statuses[0], statuses[41]]) == [200, 201]
    assert results[0][2]["event_id"] == results[41][2]["event_id"]
    assert count_events(db) == 41
    assert "waybill_events_accepted_total 41.0" in metrics


def http_get(base: str, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + path, timeout=5) as response:  # noqa: S310 - loopback
        return response.read().decode()


def test_group_commit_retries_a_refused_group_event_by_event(db_url, db):
    from app.ingest.writer import EventWriter

    settings = make_settings()
    now = datetime.now(UTC)

    def row(body: dict[str, Any]) -> EventRow:
        parsed = parse_event(json.dumps(body).encode(), now=now, max_age=settings.event_max_age,
                             max_future=settings.event_max_future)
        assert isinstance(parsed, EventRow)
        return parsed

    taken = event(idempotency_key="taken")
    rows = [row(event()) for _ in range(40)]
    reused = row(dict(taken, resource_id="another"))

    async def scenario() -> list[Any]:
        async with AsyncConnectionPool(db_url, min_size=2, max_size=4,
                                       kwargs={"autocommit": True}) as pool:
            await store_events(pool, [row(taken)])
            writer = EventWriter(pool)
            writer.start()
            try:
                # Queued before any flusher runs, so they are written in shared groups.
                return await asyncio.gather(*(writer.write(r) for r in [*rows, reused]),
                                            return_exceptions=True)
            finally:
                await writer.stop()

    results = asyncio.run(scenario())
    assert all(not r.duplicate for r in results[:40])
    assert isinstance(results[40], psycopg.Error) and results[40].sqlstate == "WB409"
    assert count_events(db) == 41


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"event_type": "build.completed", "metrics": {"duration_seconds": {"a": {"b": {"c": 1}}}}}',
    b"null",
    b'"just a string"',
    b"",
])
def test_deep_or_odd_bodies_are_clear_4xx(client, db, body):
    for path in ("/internal/events", "/internal/events/batch"):
        response = client.post(path, content=body, headers={
            "Authorization": f"Bearer {INTERNAL_KEY}", "content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("application/problem+json")
    assert count_events(db) == 0


def test_sql_fragments_in_strings_are_stored_verbatim(client, db):
    fragment = "'; DROP TABLE waybill.usage_events; --"
    body = event(resource_type=fragment[:64], resource_id=fragment, idempotency_key=fragment,
                 resource_name=fragment, metadata={fragment: fragment})
    assert post(client, body).status_code == 201
    row = db.execute("SELECT resource_id, idempotency_key, metadata FROM waybill.usage_events"
                     ).fetchone()
    assert row == (fragment, fragment, {fragment: fragment})


def test_every_bad_event_of_a_batch_is_reported_even_with_nul_escapes(client, db):
    events = [event(), event(resource_id="a\u0000b"), event(project_id="not-a-uuid"),
              event(metadata={"k": "\u0000"})]
    response = post(client, {"events": events}, "/internal/events/batch")
    assert response.status_code == 422
    assert [e["index"] for e in response.json()["errors"]] == [1, 2, 3]
    assert count_events(db) == 0
