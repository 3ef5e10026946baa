"""Invoice sync: the real `stripe` SDK against a local Stripe-speaking server.

Asserts the exact calls, amounts and idempotency keys; injects a 500 or a
timeout at every step and shows that the retry ends with one invoice and the
right items.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.config import Settings
from app.stripe_sync.client import StripeGateway
from app.stripe_sync.sync import MAX_ATTEMPTS, StripeSync, backoff
from tests.billing_support import new_project
from tests.stripe_fake import FakeStripe, FakeStripeServer, finalized_record

PERIOD = date(2026, 9, 1)
LATER = datetime.now(UTC) + timedelta(days=2)  # past any backoff


@pytest.fixture
def stripe_server():
    server = FakeStripeServer(FakeStripe(hang_seconds=1.0))
    with server as fake:
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def sync(db_url, stripe_server) -> StripeSync:
    gateway = StripeGateway("sk_test_waybill", api_base=stripe_server.url, timeout=0.5)
    return StripeSync(db_url, gateway)


def outbox(db, record_id) -> dict[str, Any]:
    row = db.execute("SELECT state::text, attempts, last_error, stripe_invoice_id, stripe_total_cents,"
                     " next_attempt_at FROM waybill.stripe_outbox WHERE record_id = %s", (record_id,)).fetchone()
    assert row is not None
    return dict(zip(("state", "attempts", "last_error", "invoice", "stripe_total", "next_attempt_at"),
                    row, strict=True))


def assert_one_right_invoice(fake: FakeStripe, rec: dict[str, Any]) -> dict[str, Any]:
    """Exactly one invoice, finalized, with exactly one item per line, right amounts and total."""
    invoices = [i for i in fake.invoices.values()
                if i["metadata"]["waybill_record_id"] == str(rec["record_id"])]
    assert len(invoices) == 1
    invoice = invoices[0]
    items = sorted((int(i["metadata"]["waybill_line_no"]), i["amount"])
                   for i in fake.items.values() if i["invoice"] == invoice["id"])
    assert items == [(n, amount) for n, amount, _ in rec["lines_by_no"]]
    assert invoice["status"] == "open" and invoice["total"] == rec["total"]
    return invoice


def test_finalizing_enqueues_the_record_in_the_same_transaction(db):
    project = new_project()
    rec = finalized_record(db, project, PERIOD)
    assert outbox(db, rec["record_id"])["state"] == "pending"
    free = new_project()
    zero = finalized_record(db, free, date(2026, 10, 1), plan="hobby", compute_gb_hours=1,
                            build_minutes=1, credit_cents=10_000)
    assert zero["total"] == 0
    assert outbox(db, zero["record_id"])["state"] == "skipped"


def test_draft_records_are_not_enqueued(db):
    project = new_project()
    from tests.billing_support import bill, put_usage, subscribe, utc
    subscribe(db, project, "pro", utc(2026, 9, 1))
    put_usage(db, project, utc(2026, 9, 3), compute_gb_hours=10)
    bill(db, PERIOD)
    assert db.execute("SELECT count(*) FROM waybill.stripe_outbox").fetchone()[0] == 0


def test_sync_makes_exactly_the_expected_calls(db, sync, stripe_server):
    project = new_project()
    rec = finalized_record(db, project, PERIOD, bandwidth_gb=600, credit_cents=700)
    rid = rec["record_id"]
    assert any(amount < 0 for _, amount, _ in rec["lines_by_no"]), "a credit line"

    report = sync.run_once()

    assert report.synced == [rid]
    calls = [(c.method, c.path, c.idempotency_key) for c in stripe_server.calls]
    inv = next(iter(stripe_server.invoices))
    cus = next(iter(stripe_server.customers))
    assert calls == [
        ("POST", "/v1/customers", f"waybill-customer-{project}"),
        ("POST", "/v1/invoices", f"waybill-invoice-{rid}"),
        *[("POST", "/v1/invoiceitems", f"waybill-invoice-{rid}-line-{n}") for n, _, _ in rec["lines_by_no"]],
        ("POST", f"/v1/invoices/{inv}/finalize", f"waybill-invoice-{rid}-finalize"),
    ]
    customer_call, invoice_call, *item_calls, finalize_call = stripe_server.calls
    assert customer_call.params["metadata"] == {"waybill_project_id": str(project)}
    assert invoice_call.params["customer"] == cus
    assert invoice_call.params["auto_advance"] == "false"
    assert invoice_call.params["metadata"]["waybill_record_id"] == str(rid)
    assert [(c.params["invoice"], int(c.params["amount"]), c.params["description"]) for c in item_calls] == [
        (inv, amount, description) for _, amount, description in rec["lines_by_no"]]
    assert finalize_call.params == {"auto_advance": "true"}
    assert_one_right_invoice(stripe_server, rec)

    state = outbox(db, rid)
    assert (state["state"], state["invoice"], state["stripe_total"], state["last_error"]) == (
        "synced", inv, rec["total"], None)
    assert db.execute("SELECT stripe_invoice_id FROM waybill.billing_records WHERE record_id = %s",
                      (rid,)).fetchone()[0] == inv
    assert db.execute("SELECT customer_id FROM waybill.stripe_customers WHERE project_id = %s",
                      (project,)).fetchone()[0] == cus
    # Done means done: another round calls nothing.
    before = len(stripe_server.calls)
    assert sync.run_once(now=LATER).claimed == 0
    assert len(stripe_server.calls) == before


STEPS = [
    ("customer", "POST", r"/v1/customers", 1),
    ("invoice", "POST", r"/v1/invoices", 1),
    ("first item", "POST", r"/v1/invoiceitems", 1),
    ("third item", "POST", r"/v1/invoiceitems", 3),
    ("finalize", "POST", r"/v1/invoices/[^/]+/finalize", 1),
]


@pytest.mark.parametrize("mode", ["fail", "hang"])
@pytest.mark.parametrize(("step", "method", "pattern", "nth"), STEPS, ids=[s[0] for s in STEPS])
def test_a_failure_at_any_step_then_a_retry_gives_one_invoice_with_the_right_items(
        db, sync, stripe_server, step, method, pattern, nth, mode):
    project = new_project()
    rec = finalized_record(db, project, PERIOD, bandwidth_gb=600, credit_cents=700)
    rid = rec["record_id"]
    if nth > 1:  # let the first items through, fail a later one
        stripe_server.inject(method, "never", "fail", 0)
        original = stripe_server._fault
        seen = {"n": 0}

        def nth_fault(m: str, p: str) -> str | None:
            if m == method and p == "/v1/invoiceitems":
                seen["n"] += 1
                if seen["n"] == nth:
                    return mode
            return original(m, p)
        stripe_server._fault = nth_fault  # type: ignore[method-assign]
    else:
        stripe_server.inject(method, pattern, mode)

    first = sync.run_once()
    assert first.failed == [rid]
    state = outbox(db, rid)
    assert state["state"] == "pending" and state["attempts"] == 1
    assert state["last_error"] and ("APIError" in state["last_error"] or "APIConnectionError" in state["last_error"])
    assert state["next_attempt_at"] > datetime.now(UTC)
    # Not due yet: the next round leaves it alone.
    assert sync.run_once().claimed == 0

    second = sync.run_once(now=LATER)
    assert second.synced == [rid]
    assert_one_right_invoice(stripe_server, rec)
    assert len(stripe_server.customers) == 1
    assert outbox(db, rid)["state"] == "synced"
    assert outbox(db, rid)["attempts"] == 2


def test_retry_after_stripe_forgot_the_idempotency_keys_adds_no_duplicate_item(db, sync, stripe_server):
    project = new_project()
    rec = finalized_record(db, project, PERIOD, bandwidth_gb=600)
    seen = {"n": 0}
    original = stripe_server._fault

    def third_item_fails(m: str, p: str) -> str | None:
        if p == "/v1/invoiceitems":
            seen["n"] += 1
            if seen["n"] == 3:
                return "hang"
        return original(m, p)
    stripe_server._fault = third_item_fails  # type: ignore[method-assign]
    assert sync.run_once().failed == [rec["record_id"]]
    stripe_server._idem.clear()  # Stripe keeps keys for 24 hours; a late retry has none
    assert sync.run_once(now=LATER).synced == [rec["record_id"]]
    assert_one_right_invoice(stripe_server, rec)
    assert any(c.method == "GET" and c.path.endswith("/lines") for c in stripe_server.calls)


def test_a_total_mismatch_is_flagged_and_the_sync_stops(db, sync, stripe_server):
    project = new_project()
    rec = finalized_record(db, project, PERIOD)
    stripe_server.total_skew = 1
    report = sync.run_once()
    assert report.mismatched == [rec["record_id"]]
    state = outbox(db, rec["record_id"])
    assert state["state"] == "mismatch" and state["stripe_total"] == rec["total"] + 1
    assert "differs from Waybill total" in state["last_error"]
    calls = len(stripe_server.calls)
    assert sync.run_once(now=LATER).claimed == 0
    assert len(stripe_server.calls) == calls, "no further calls, no silent adjustment"
    # The record itself is untouched: still open, same total.
    row = db.execute("SELECT status::text, total_cents FROM waybill.billing_records WHERE record_id = %s",
                     (rec["record_id"],)).fetchone()
    assert row == ("open", rec["total"])


def test_zero_total_records_are_not_sent(db, sync, stripe_server):
    rec = finalized_record(db, new_project(), PERIOD, plan="hobby", compute_gb_hours=1, build_minutes=1,
                           credit_cents=10_000)
    assert sync.run_once().claimed == 0
    assert stripe_server.calls == []
    assert outbox(db, rec["record_id"])["state"] == "skipped"


def test_two_syncs_racing_create_one_customer(db, db_url, stripe_server):
    project = new_project()
    first = finalized_record(db, project, PERIOD)
    second = finalized_record(db, project, date(2026, 10, 1))
    stripe_server.hang_seconds = 0.3
    stripe_server.inject("POST", r"/v1/customers", "hang")  # slow: the other sync arrives meanwhile
    results: list[Any] = []

    def run(record_id: uuid.UUID) -> None:
        gateway = StripeGateway("sk_test_waybill", api_base=stripe_server.url, timeout=2)
        results.append(StripeSync(db_url, gateway).run_once(record_id=record_id))

    threads = [threading.Thread(target=run, args=(r["record_id"],)) for r in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r.synced) for r in results) == [1, 1]
    assert len(stripe_server.customers) == 1
    assert sum(1 for c in stripe_server.calls if c.path == "/v1/customers") == 1
    customers = {i["customer"] for i in stripe_server.invoices.values()}
    assert customers == set(stripe_server.customers)
    assert db.execute("SELECT count(*) FROM waybill.stripe_customers").fetchone()[0] == 1


def test_a_claimed_row_is_not_taken_by_another_worker_until_its_lease_ends(db, db_url, sync, stripe_server):
    rec = finalized_record(db, new_project(), PERIOD)
    db.execute("UPDATE waybill.stripe_outbox SET lease_until = now() + interval '5 minutes'")
    assert sync.run_once().claimed == 0
    assert sync.run_once(now=datetime.now(UTC) + timedelta(minutes=6)).synced == [rec["record_id"]]


def test_backoff_grows_and_gives_up_after_max_attempts(db, sync, stripe_server):
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(50) == timedelta(hours=6)
    rec = finalized_record(db, new_project(), PERIOD)
    db.execute("UPDATE waybill.stripe_outbox SET attempts = %s", (MAX_ATTEMPTS - 1,))
    stripe_server.inject("POST", r"/v1/customers", "fail")
    sync.run_once()
    state = outbox(db, rec["record_id"])
    assert state["state"] == "failed" and state["attempts"] == MAX_ATTEMPTS


def test_without_a_secret_key_stripe_is_off(db_url, monkeypatch, capsys):
    assert StripeGateway.from_settings(Settings()) is None
    from app.cli import main
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    assert main(["stripe-sync", "--once"]) == 0
    assert "Stripe is off" in capsys.readouterr().out


def test_ready_says_whether_stripe_is_on(client):
    assert client.get("/ready").json()["stripe"] == "off"


def test_status_command_shows_failures_and_retry_failed_requeues(db, db_url, monkeypatch, capsys):
    from app.cli import main
    rec = finalized_record(db, new_project(), PERIOD)
    db.execute("UPDATE waybill.stripe_outbox SET state = 'failed', attempts = 20,"
               " last_error = 'APIError: injected failure'")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    assert main(["stripe-sync", "--status"]) == 0
    out = capsys.readouterr().out
    assert str(rec["record_id"]) in out and "failed" in out and "APIError: injected failure" in out
    assert main(["stripe-sync", "--retry-failed", "--once"]) == 0
    assert "1 failed record(s) back to pending" in capsys.readouterr().out
    assert outbox(db, rec["record_id"])["state"] == "pending"
