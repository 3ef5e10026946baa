"""GET /api/v1/projects/{id}/usage/history and who may read it (CONTRACT.md section 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.conftest import DASHBOARD_KEY
from tests.metering_helpers import at, put, rollup

DASH = {"Authorization": f"Bearer {DASHBOARD_KEY}"}
HISTORY = "/api/v1/projects/{}/usage/history"


def seeded(db) -> str:
    project = str(uuid.uuid4())
    put(db, project, "deployment.started", "web", "2026-03-03 10:20",
        replicas=2, cpu_millicores=500, memory_mb=512)
    put(db, project, "deployment.stopped", "web", "2026-03-03 12:00")
    put(db, project, "build.completed", "b1", "2026-03-03 11:10", duration_seconds=90)
    put(db, project, "bandwidth.usage", "web", "2026-03-04 09:00", egress_gb=1.5)
    rollup(db, "2026-03-05 00:00")
    return project


def test_hourly_history_in_display_units(client, db):
    project = seeded(db)
    response = client.get(HISTORY.format(project), headers=DASH, params={
        "from": "2026-03-03T10:00:00Z", "to": "2026-03-03T13:00:00Z", "granularity": "hour"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["granularity"] == "hour" and body["as_of"].startswith("2026-03-05T00:00:00")
    assert [(p["start"][:16], p["compute_gb_hours"], p["build_minutes"]) for p in body["periods"]] \
        == [("2026-03-03T10:00", "0.666667", "0"), ("2026-03-03T11:00", "1", "1.5"),
            ("2026-03-03T12:00", "0", "0")]


def test_daily_and_monthly_history(client, db):
    project = seeded(db)
    days = client.get(HISTORY.format(project), headers=DASH, params={
        "from": "2026-03-03T00:00:00Z", "to": "2026-03-05T00:00:00Z"}).json()
    assert days["granularity"] == "day"
    assert [(p["compute_gb_hours"], p["bandwidth_gb"]) for p in days["periods"]] == [
        ("1.666667", "0"), ("0", "1.5")]
    months = client.get(HISTORY.format(project), headers=DASH, params={
        "from": "2026-02-01T00:00:00Z", "to": "2026-04-01T00:00:00Z",
        "granularity": "month"}).json()
    assert [(p["start"][:10], p["build_minutes"]) for p in months["periods"]] == [
        ("2026-02-01", "0"), ("2026-03-01", "1.5")]


def test_months_form_counts_back_from_this_month(client, db):
    project = str(uuid.uuid4())
    now = datetime.now(UTC)
    put(db, project, "bandwidth.usage", "web", now - timedelta(minutes=1), egress_gb=4)
    rollup(db, (now + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0))
    body = client.get(HISTORY.format(project), headers=DASH, params={"months": 3}).json()
    assert body["granularity"] == "month" and len(body["periods"]) == 3
    assert body["periods"][-1]["start"][:7] == now.strftime("%Y-%m")
    assert [p["bandwidth_gb"] for p in body["periods"]] == ["0", "0", "4"]


def test_bad_queries_are_problem_details(client, db):
    project = seeded(db)
    for params in ({"months": 0}, {"months": "x"}, {"granularity": "week", "from": "2026-03-03T00:00:00Z",
                   "to": "2026-03-04T00:00:00Z"},
                   {"from": "2026-03-03T00:30:00Z", "to": "2026-03-04T00:00:00Z"},
                   {"from": "2026-03-03T00:00:00Z"}, {"months": 2, "from": "2026-03-03T00:00:00Z"},
                   {"from": "2026-03-04T00:00:00Z", "to": "2026-03-03T00:00:00Z"},
                   {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z",
                    "granularity": "hour"}):
        response = client.get(HISTORY.format(project), headers=DASH, params=params)
        assert response.status_code in (400, 422), (params, response.status_code)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_who_may_read_a_projects_usage(client, db, internal_headers):
    project, other = seeded(db), seeded(db)
    path = HISTORY.format(project)
    issued = client.post(f"/internal/projects/{project}/api-keys", headers=internal_headers)
    assert issued.status_code == 201
    key = issued.json()
    own = {"Authorization": f"Bearer {key['key']}"}
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wb_nope"}).status_code == 401
    assert client.get(path, headers=DASH).status_code == 200
    assert client.get(path, headers=own).status_code == 200
    assert client.get(HISTORY.format(other), headers=own).status_code == 404
    assert client.get(HISTORY.format(uuid.uuid4()), headers=own).status_code == 404
    assert client.get(HISTORY.format(uuid.uuid4()), headers=DASH).status_code == 404
    revoked = client.delete(f"/internal/projects/{project}/api-keys/{key['id']}",
                            headers=internal_headers)
    assert revoked.status_code == 204
    assert client.get(path, headers=own).status_code == 401
    row = db.execute("SELECT key_hash FROM waybill.project_api_keys WHERE project_id = %s",
                     (project,)).fetchone()
    assert key["key"].encode() not in bytes(row[0])


def test_usage_between_for_billing(db):
    project = seeded(db)
    row = db.execute("SELECT * FROM waybill.usage_between(%s, %s, %s)",
                     (project, at("2026-03-01 00:00"), at("2026-04-01 00:00"))).fetchone()
    assert row == (6000, 0, 90, 1.5, 0)  # GB-seconds, GB-seconds, seconds, GB, domains
