"""A full month, end to end: events in, rollups, billing record, Stripe invoice, paid by webhook.

Uses only the public paths: POST /internal/events (EVENT_MAX_AGE raised so last
month's timestamps are accepted), the rollup and billing SQL functions as pg_cron
runs them, the API process's own sync loop against the fake Stripe, a signed
webhook, and GET /api/v1/projects/{id}/invoices.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from litestar.testing import TestClient

from app.web import create_app
from tests.conftest import DASHBOARD_KEY, INTERNAL_KEY, make_settings
from tests.stripe_fake import FakeStripeServer, sign

WEBHOOK_SECRET = "whsec_month"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_a_month_of_usage_is_invoiced_in_stripe_and_paid(db_url, db):
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (this_month - timedelta(days=1)).replace(day=1)
    project = str(uuid.uuid4())
    internal = {"Authorization": f"Bearer {INTERNAL_KEY}"}
    server = FakeStripeServer()
    with server as fake:
        settings = make_settings(event_max_age=timedelta(days=100), stripe_secret_key="sk_test_month",
                                 stripe_api_base=server.url, stripe_webhook_secret=WEBHOOK_SECRET)
        with TestClient(create_app(settings, database_url=db_url)) as client:
            assert client.get("/ready").json()["stripe"] == "on"
            put = client.put(f"/internal/projects/{project}/subscription", headers=internal,
                             json={"plan": "hobby", "effective_at": iso(start)})
            assert put.status_code == 200, put.text
            credit = client.post(f"/internal/projects/{project}/credits", headers=internal,
                                 json={"amount_cents": 200, "reason": "welcome"})
            assert credit.status_code == 201, credit.text
            base = {"project_id": project}
            for body in (
                {"event_type": "deployment.started", "resource_type": "deployment", "resource_id": "web",
                 "timestamp": iso(start), "metrics": {"replicas": 2, "cpu_millicores": 500, "memory_mb": 1024}},
                {"event_type": "build.completed", "resource_type": "build", "resource_id": "b1",
                 "timestamp": iso(start + timedelta(days=3)), "metrics": {"duration_seconds": 36000}},
                {"event_type": "bandwidth.usage", "resource_type": "deployment", "resource_id": "web",
                 "timestamp": iso(start + timedelta(days=9)), "metrics": {"egress_gb": 150}},
                {"event_type": "deployment.stopped", "resource_type": "deployment", "resource_id": "web",
                 "timestamp": iso(start + timedelta(days=20)), "metrics": {}},
            ):
                answer = client.post("/internal/events", headers=internal, json={**base, **body})
                assert answer.status_code == 201, answer.text

            # What pg_cron does: hourly and daily rollups, then the monthly billing run.
            db.execute("SELECT waybill.rollup_hourly(%s)", (now.replace(minute=0, second=0, microsecond=0),))
            db.execute("SELECT waybill.rollup_daily(%s)", (now.date(),))
            db.execute("SELECT waybill.bill_period(%s, %s)", (start.date(), now))
            assert db.execute("SELECT waybill.finalize_period(%s, %s)", (start.date(), now)).fetchone()[0] >= 1
            record_id, total, lines = db.execute(
                "SELECT r.record_id, r.total_cents, array_agg(l.amount_cents ORDER BY l.line_no)"
                "  FROM waybill.billing_records r JOIN waybill.billing_record_lines l USING (project_id, record_id)"
                " WHERE r.project_id = %s AND r.period_start = %s GROUP BY 1, 2",
                (project, start.date())).fetchone()
            # hobby: $5 base; 2 GB x 480 h = 960 GB-h, 460 over at 0.000463 = 21c; 600 - 500 build
            # minutes = 100c; 150 - 100 GB egress = 500c; minus the 200c credit.
            assert total == 500 + 21 + 100 + 500 - 200, lines
            assert -200 in lines

            # The API process's sync loop sends it to Stripe.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = db.execute("SELECT state::text, last_error FROM waybill.stripe_outbox"
                                   " WHERE record_id = %s", (record_id,)).fetchone()
                if state[0] != "pending":
                    break
                time.sleep(0.2)
            assert state == ("synced", None)
            (invoice,) = fake.invoices.values()
            assert invoice["status"] == "open" and invoice["total"] == total
            assert sorted(i["amount"] for i in fake.items.values()) == sorted(lines)

            body = json.dumps({"id": "evt_month_paid", "object": "event", "type": "invoice.paid",
                               "created": int(time.time()),
                               "data": {"object": {"id": invoice["id"], "object": "invoice"}}}).encode()
            paid = client.post("/webhooks/stripe", content=body,
                               headers={"Stripe-Signature": sign(body, WEBHOOK_SECRET)})
            assert paid.status_code == 200 and paid.json()["outcome"] == "applied: open -> paid"

            listed = client.get(f"/api/v1/projects/{project}/invoices",
                                headers={"Authorization": f"Bearer {DASHBOARD_KEY}"})
            assert listed.status_code == 200, listed.text
            (shown,) = [i for i in listed.json()["invoices"] if i["record_id"] == str(record_id)]
            assert (shown["status"], shown["stripe_invoice_id"], shown["total_cents"]) == (
                "paid", invoice["id"], total)
