"""The billing endpoints, CONTRACT.md section 7: plans, estimate, usage/current,
invoices, and the internal subscription and credit endpoints."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from litestar.testing import TestClient

from app.web import create_app
from tests.billing_support import finalize, new_project, put_usage, record, subscribe, utc
from tests.conftest import DASHBOARD_KEY, make_settings

DASH = {"Authorization": f"Bearer {DASHBOARD_KEY}"}
SHAPE = {"replicas": 2, "cpu_millicores": 500, "memory_mb": 1024, "storage_gb": 10,
         "avg_build_minutes": 5}


def test_plans_lists_the_contract_table(client):
    answer = client.get("/api/v1/plans")
    assert answer.status_code == 200
    plans = {p["id"]: p for p in answer.json()["plans"]}
    assert list(plans) == ["hobby", "pro", "team"]
    assert plans["hobby"]["base_fee_cents"] == 500
    assert plans["hobby"]["included"] == {
        "compute_gb_hours": "500", "build_minutes": "500", "storage_gb_months": "1",
        "bandwidth_gb": "100", "custom_domains": 1}
    assert plans["pro"]["included"]["custom_domains"] is None  # unlimited
    assert plans["team"]["rates"] == {"compute_gb_hour": "0.0004", "build_minute": "0.008",
                                      "storage_gb_month": "0.15", "bandwidth_gb": "0.05",
                                      "custom_domain": "0"}
    assert plans["team"]["included"]["bandwidth_gb"] == "1024"
    assert answer.json()["pay_as_you_go"]["storage_gb_month"] == "0.25"


def test_estimate_prices_line_by_line(client):
    body = {**SHAPE, "plan": "hobby", "month": "2026-11", "builds_per_month": 150,
            "bandwidth_gb": 150}
    answer = client.post("/api/v1/estimate", json=body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    # 2 replicas x max(1 GB, 0.5 core) = 2 GB-eq x 720 h = 1440 GB-h; 940 over x 0.0463c = 43.5
    # -> 44; builds 750 min, 250 over = 250; storage 10 GB all month = 10 GB-months, 9 over x
    # 25c = 225; 50 GB over x 10c = 500.
    assert [(line["metric"], line["amount_cents"]) for line in doc["lines"]] == [
        (None, 500), ("compute_gb_hours", 44), ("build_minutes", 250),
        ("storage_gb_months", 225), ("bandwidth_gb", 500), ("custom_domains", 0)]
    assert doc["total_cents"] == 1519 and doc["hours"] == "720" and doc["currency"] == "usd"
    compute = doc["lines"][1]
    assert (compute["quantity"], compute["included"], compute["billable"]) == (
        "1440.000000", "500.000000", "940.000000")


def test_estimate_defaults_to_pay_as_you_go_for_the_whole_month(client):
    answer = client.post("/api/v1/estimate", json={**SHAPE, "month": "2026-02"})
    doc = answer.json()
    assert doc["plan"] is None and doc["hours"] == "672"
    # 2 GB-eq x 672 h = 1344 GB-h x 0.0463c = 62.23 -> 62; 22 builds x 5 min = 110 min = 110c;
    # 10 GB-months x 25c = 250.
    assert [line["amount_cents"] for line in doc["lines"]] == [62, 110, 250, 0, 0]


@pytest.mark.parametrize(("body", "status"), [
    ({**SHAPE, "plan": "enterprise"}, 422),
    ({**SHAPE, "hours": 800, "month": "2026-11"}, 422),
    ({**SHAPE, "replicas": -1}, 400),
    ({**SHAPE, "surprise": 1}, 400),
    ({"replicas": 1}, 400),
    ({**SHAPE, "month": "2026-13"}, 400),
])
def test_estimate_refuses_bad_input(client, body, status):
    answer = client.post("/api/v1/estimate", json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    if body.get("plan") == "enterprise":
        assert answer.json()["known_plans"] == ["hobby", "pro", "team"]


def test_price_defaults_come_from_the_environment(db_url):
    settings = make_settings(price_compute_gb_hour=Decimal("0.001"))
    with TestClient(create_app(settings, database_url=db_url)) as client:
        doc = client.post("/api/v1/estimate", json={**SHAPE, "month": "2026-11",
                                                    "avg_build_minutes": 0}).json()
        # 1440 GB-h x 0.1c = 144c
        assert doc["lines"][0]["amount_cents"] == 144
        assert client.get("/api/v1/plans").json()["pay_as_you_go"]["compute_gb_hour"] == "0.001"


def test_subscription_endpoint_sets_cancels_and_refuses(client, internal_headers, db):
    project = uuid.uuid4()
    path = f"/internal/projects/{project}/subscription"
    answer = client.put(path, json={"plan": "pro", "effective_at": "2026-10-01T00:00:00Z"},
                        headers=internal_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["plan"] == "pro"
    assert client.put(path, json={"plan": "gold"}, headers=internal_headers).status_code == 422
    assert client.put(path, json={"plan": "pro"}).status_code == 401
    assert client.put(path, json={"plan": "pro", "effective_at": "2026-10-01T00:00:00"},
                      headers=internal_headers).status_code == 400  # no offset
    finalize(db, date(2026, 10, 1))
    late = client.put(path, json={"plan": "team", "effective_at": "2026-10-15T00:00:00Z"},
                      headers=internal_headers)
    assert late.status_code == 409 and late.json()["period"] == "2026-10"
    now = client.put(path, json={"plan": None}, headers=internal_headers)
    assert now.status_code == 200 and now.json()["plan"] is None
    effective = datetime.fromisoformat(now.json()["effective_at"])
    assert abs((effective - datetime.now(UTC)).total_seconds()) < 60


def test_credit_endpoint_grants(client, internal_headers, db):
    project = uuid.uuid4()
    path = f"/internal/projects/{project}/credits"
    answer = client.post(path, json={"amount_cents": 1500, "reason": "launch promo",
                                     "expires_at": "2027-01-01T00:00:00+00:00"},
                         headers=internal_headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["amount_cents"] == 1500 and answer.json()["currency"] == "usd"
    for bad in ({"amount_cents": 0, "reason": "x"}, {"amount_cents": 5, "reason": ""},
                {"amount_cents": 5}):
        assert client.post(path, json=bad, headers=internal_headers).status_code == 400
    doc = client.get(f"/api/v1/projects/{project}/usage/current", headers=DASH).json()
    assert doc["credits_available_cents"] == 1500


def test_invoices_newest_first_with_lines_status_and_stripe_ids(client, db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 9, 1))
    put_usage(db, project, utc(2026, 10, 3), bandwidth_gb=101)
    finalize(db, date(2026, 9, 1))
    finalize(db, date(2026, 10, 1))
    answer = client.get(f"/api/v1/projects/{project}/invoices", headers=DASH)
    assert answer.status_code == 200, answer.text
    invoices = answer.json()["invoices"]
    assert [i["period"] for i in invoices] == ["2026-10", "2026-09"]
    october = invoices[0]
    assert (october["status"], october["total_cents"], october["stripe_invoice_id"]) == (
        "open", 510, None)
    assert october["record_id"] == str(record(db, project, date(2026, 10, 1))["record_id"])
    assert [(line["kind"], line["amount_cents"]) for line in october["lines"]][:2] == [
        ("base_fee", 500), ("usage", 0)]
    assert october["lines"][4]["billable"] == "1.000000"
    assert october["period_start"].startswith("2026-10-01T00:00:00")
    assert client.get(f"/api/v1/projects/{project}/invoices?limit=1",
                      headers=DASH).json()["invoices"][0]["period"] == "2026-10"


def test_project_endpoints_need_a_reader_and_a_known_project(client, db):
    project = new_project()
    assert client.get(f"/api/v1/projects/{project}/invoices").status_code == 401
    assert client.get(f"/api/v1/projects/{project}/invoices", headers=DASH).status_code == 404
    subscribe(db, project, "pro", utc(2026, 11, 1))  # a subscription makes it known
    assert client.get(f"/api/v1/projects/{project}/invoices", headers=DASH).status_code == 200
    other = client.post(f"/internal/projects/{uuid.uuid4()}/api-keys",
                        headers={"Authorization": "Bearer test-internal-key"}).json()["key"]
    denied = client.get(f"/api/v1/projects/{project}/usage/current",
                        headers={"Authorization": f"Bearer {other}"})
    assert denied.status_code == 404


def test_usage_current_over_http(client, db):
    project = new_project()
    subscribe(db, project, "pro", utc(2026, 1, 1))
    now = datetime.now(UTC)
    put_usage(db, project, now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
              bandwidth_gb=510)
    answer = client.get(f"/api/v1/projects/{project}/usage/current", headers=DASH)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["plan"] == "pro" and doc["period"]["month"] == now.strftime("%Y-%m")
    assert doc["base_fee_cents"] == 2000
    # 10 GB over x 8c, the same pricing function as invoices.
    assert [line["amount_cents"] for line in doc["lines"] if line["metric"] == "bandwidth_gb"] \
        == [80]
    assert doc["total_so_far_cents"] == 2080
    assert doc["projected_total_cents"] >= doc["total_so_far_cents"]


@pytest.mark.parametrize("limit", ["-173", "0", "121", "ten"])
def test_invoice_limit_out_of_range_is_a_400_not_a_500(client, internal_headers, limit):
    project = new_project()
    assert client.post(f"/internal/projects/{project}/api-keys",
                       headers=internal_headers).status_code == 201  # the project now exists
    response = client.get(f"/api/v1/projects/{project}/invoices?limit={limit}",
                          headers={"Authorization": f"Bearer {DASHBOARD_KEY}"})
    assert response.status_code == 400, response.text
