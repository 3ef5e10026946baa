"""POST /webhooks/stripe: signed with Stripe's real scheme, processed once, never backwards."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import pytest
from litestar.testing import TestClient

from app.web import create_app
from tests.billing_support import new_project
from tests.conftest import make_settings
from tests.stripe_fake import finalized_record, sign

SECRET = "whsec_test_secret"
INVOICE = "in_test_0001"


@pytest.fixture
def hook_client(db_url):
    app = create_app(make_settings(stripe_webhook_secret=SECRET), database_url=db_url)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def rec(db) -> dict[str, Any]:
    project = new_project()
    record = finalized_record(db, project, date(2026, 9, 1))
    db.execute("UPDATE waybill.billing_records SET stripe_invoice_id = %s WHERE record_id = %s",
               (INVOICE, record["record_id"]))
    record["project"] = project
    return record


_seq = iter(range(1, 10_000))


def event(type_: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
          ) -> bytes:
    return json.dumps({"id": event_id or f"evt_{next(_seq):05d}", "object": "event", "type": type_,
                       "created": created or int(time.time()), "data": {"object": obj}}).encode()


def invoice_event(type_: str, **kw: Any) -> bytes:
    return event(type_, {"id": INVOICE, "object": "invoice", "attempt_count": 1}, **kw)


def deliver(client: TestClient, body: bytes, *, secret: str = SECRET, timestamp: int | None = None,
            header: str | None = "sign") -> Any:
    headers = {"content-type": "application/json"}
    if header == "sign":
        headers["Stripe-Signature"] = sign(body, secret, timestamp)
    elif header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/webhooks/stripe", content=body, headers=headers)


def status(db, rec) -> str:
    return db.execute("SELECT status::text FROM waybill.billing_records WHERE record_id = %s",
                      (rec["record_id"],)).fetchone()[0]


def events(db) -> list[tuple[str, str, str, int]]:
    return db.execute("SELECT event_id, type, outcome, deliveries FROM waybill.stripe_webhook_events"
                      " ORDER BY received_at, event_id").fetchall()


def test_valid_invoice_paid_marks_the_record_paid_and_is_recorded(hook_client, db, rec):
    body = invoice_event("invoice.paid", event_id="evt_paid")
    response = deliver(hook_client, body)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "applied: open -> paid"
    assert status(db, rec) == "paid"
    row = db.execute("SELECT type, outcome, received_at IS NOT NULL, payload->>'id'"
                     " FROM waybill.stripe_webhook_events WHERE event_id = 'evt_paid'").fetchone()
    assert row == ("invoice.paid", "applied: open -> paid", True, "evt_paid")


@pytest.mark.parametrize("how", ["tampered body", "wrong secret", "expired timestamp", "missing header",
                                 "garbage header", "v0 scheme only"])
def test_bad_signatures_are_400_and_change_nothing(hook_client, db, rec, how):
    body = invoice_event("invoice.paid")
    if how == "tampered body":
        header = sign(body, SECRET)
        body = body.replace(b"invoice.paid", b"invoice.void")
        response = deliver(hook_client, body, header=header)
    elif how == "wrong secret":
        response = deliver(hook_client, body, secret="whsec_other")
    elif how == "expired timestamp":
        response = deliver(hook_client, body, timestamp=int(time.time()) - 301)
    elif how == "v0 scheme only":
        # Right key, right HMAC, but under a scheme other than v1: not accepted.
        response = deliver(hook_client, body, header=sign(body, SECRET).replace("v1=", "v0="))
    elif how == "missing header":
        response = deliver(hook_client, body, header=None)
    else:
        response = deliver(hook_client, body, header="t=abc,v1=zzz")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert status(db, rec) == "open"
    assert events(db) == []


def test_a_replayed_event_is_processed_once(hook_client, db, rec):
    uncollectible = invoice_event("invoice.marked_uncollectible", event_id="evt_u")
    assert deliver(hook_client, uncollectible).json()["outcome"] == "applied: open -> uncollectible"
    paid = invoice_event("invoice.paid", event_id="evt_p")
    assert deliver(hook_client, paid).status_code == 200
    assert status(db, rec) == "paid"
    again = deliver(hook_client, uncollectible)  # Stripe redelivers the first event
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": True, "outcome": "applied: open -> uncollectible"}
    assert status(db, rec) == "paid"
    assert [(e[0], e[3]) for e in events(db)] == [("evt_u", 2), ("evt_p", 1)]


def test_payment_failed_after_paid_records_the_failure_and_keeps_paid(hook_client, db, rec):
    assert deliver(hook_client, invoice_event("invoice.paid")).status_code == 200
    late = deliver(hook_client, invoice_event("invoice.payment_failed"))
    assert late.status_code == 200
    assert late.json()["outcome"] == "payment failure recorded; status stays paid"
    assert status(db, rec) == "paid"
    failures = db.execute("SELECT payment_failures, last_payment_error FROM waybill.stripe_outbox"
                          " WHERE record_id = %s", (rec["record_id"],)).fetchone()
    assert failures == (1, "payment attempt 1 failed")


def test_payment_failed_leaves_an_open_record_open(hook_client, db, rec):
    assert deliver(hook_client, invoice_event("invoice.payment_failed")).status_code == 200
    assert status(db, rec) == "open"


@pytest.mark.parametrize(("sequence", "final"), [
    (["invoice.paid", "invoice.voided"], "paid"),
    (["invoice.paid", "invoice.marked_uncollectible"], "paid"),
    (["invoice.voided", "invoice.paid"], "void"),
    (["invoice.marked_uncollectible", "invoice.paid"], "paid"),
    (["invoice.marked_uncollectible", "invoice.voided"], "void"),
    (["invoice.voided", "invoice.marked_uncollectible"], "void"),
])
def test_status_only_moves_forward(hook_client, db, rec, sequence, final):
    for type_ in sequence:
        assert deliver(hook_client, invoice_event(type_)).status_code == 200
    assert status(db, rec) == final


def test_invoice_found_by_metadata_when_its_id_is_not_stored_yet(hook_client, db):
    project = new_project()
    record = finalized_record(db, project, date(2026, 9, 1))
    body = event("invoice.paid", {"id": "in_other", "object": "invoice",
                                  "metadata": {"waybill_project_id": str(project),
                                               "waybill_record_id": str(record["record_id"])}})
    assert deliver(hook_client, body).json()["outcome"] == "applied: open -> paid"
    assert db.execute("SELECT status::text, stripe_invoice_id FROM waybill.billing_records"
                      " WHERE record_id = %s", (record["record_id"],)).fetchone() == ("paid", "in_other")


def test_unknown_types_and_foreign_invoices_are_200_and_ignored(hook_client, db, rec):
    response = deliver(hook_client, event("charge.refunded", {"id": "ch_1", "object": "charge"}))
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored: unhandled type"
    foreign = deliver(hook_client, event("invoice.paid", {"id": "in_not_ours", "object": "invoice"}))
    assert foreign.json()["outcome"] == "ignored: not a Waybill invoice"
    assert status(db, rec) == "open"
    assert len(events(db)) == 2


def test_a_signed_body_that_is_not_an_event_is_400(hook_client, db):
    assert deliver(hook_client, b'{"hello": "world"}').status_code == 400
    assert events(db) == []


def test_without_a_webhook_secret_webhooks_refuse(client, db):
    body = invoice_event("invoice.paid")
    response = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, SECRET)})
    assert response.status_code == 503
    assert events(db) == []


def subscription(status_: str = "active", price: str = "price_pro", sub_id: str = "sub_1") -> dict[str, Any]:
    return {"id": sub_id, "object": "subscription", "customer": "cus_sub", "status": status_,
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}}]}}


def plans(db, project) -> list[tuple[str | None, str, str | None]]:
    return db.execute("SELECT plan_id, source, stripe_subscription_id FROM waybill.subscriptions"
                      " WHERE project_id = %s AND superseded_at IS NULL ORDER BY effective_at",
                      (project,)).fetchall()


def test_subscription_events_set_the_plan_by_stripe_price_in_order(hook_client, db):
    project = new_project()
    db.execute("UPDATE waybill.pricing_plans SET stripe_price_id = 'price_' || plan_id")
    db.execute("INSERT INTO waybill.stripe_customers (project_id, customer_id) VALUES (%s, 'cus_sub')",
               (project,))
    now = int(time.time())
    created = deliver(hook_client, event("customer.subscription.created", subscription(), created=now - 100))
    assert created.json()["outcome"].startswith("applied: plan pro")
    updated = deliver(hook_client, event("customer.subscription.updated", subscription(price="price_team"),
                                         created=now - 50))
    assert updated.json()["outcome"].startswith("applied: plan team")
    # An older update delivered late never moves the plan backwards.
    stale = deliver(hook_client, event("customer.subscription.updated", subscription(price="price_hobby"),
                                       created=now - 80))
    assert stale.json()["outcome"] == "ignored: a newer Stripe change is already applied"
    assert [p[0] for p in plans(db, project)] == ["pro", "team"]
    assert plans(db, project)[-1] == ("team", "stripe", "sub_1")
    unknown = deliver(hook_client, event("customer.subscription.updated", subscription(price="price_x"),
                                         created=now - 40))
    assert unknown.json()["outcome"] == "ignored: no plan has Stripe price price_x"
    deleted = deliver(hook_client, event("customer.subscription.deleted", subscription("canceled"),
                                         created=now - 10))
    assert deleted.json()["outcome"].startswith("applied: plan none")
    assert [p[0] for p in plans(db, project)] == ["pro", "team", None]


def test_subscription_for_an_unknown_customer_is_ignored(hook_client, db):
    body = event("customer.subscription.created", subscription())
    assert deliver(hook_client, body).json()["outcome"] == "ignored: customer is not a Waybill project"
