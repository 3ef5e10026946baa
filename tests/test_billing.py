"""Billing records, CONTRACT.md section 5: idempotent generation, draft and grace
period, finalization and immutability, late usage as adjustments, credits."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest

from tests.billing_support import (
    bill,
    finalize,
    new_project,
    put_usage,
    record,
    subscribe,
    utc,
)

OCT, NOV, DEC = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)


def grant(db, project, cents, reason="promo", expires_at=None, granted_at=None):
    return db.execute(
        "INSERT INTO waybill.credits (project_id, amount_cents, reason, expires_at, granted_at)"
        " VALUES (%s, %s, %s, %s, coalesce(%s, now())) RETURNING credit_id",
        (project, cents, reason, expires_at, granted_at)).fetchone()[0]


def remaining(db, credit_id):
    return db.execute(
        "SELECT c.amount_cents - coalesce(sum(a.amount_cents), 0) FROM waybill.credits c"
        " LEFT JOIN waybill.credit_applications a USING (project_id, credit_id)"
        " WHERE c.credit_id = %s GROUP BY c.amount_cents", (credit_id,)).fetchone()[0]


def test_generation_is_idempotent_one_record_per_project_and_period(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    put_usage(db, project, utc(2026, 11, 2), bandwidth_gb=120)
    assert bill(db, NOV) == 1
    first = record(db, project, NOV)
    assert bill(db, NOV) == 1
    again = record(db, project, NOV)
    assert again == first and first["total"] == 500 + 200
    assert db.execute("SELECT count(*) FROM waybill.billing_records").fetchone()[0] == 1


def test_concurrent_runs_write_one_record_each(db_url, db):
    projects = [new_project() for _ in range(20)]
    for p in projects:
        subscribe(db, p, "pro", utc(2026, 10, 1))
        put_usage(db, p, utc(2026, 11, 3), compute_gb_hours=2500)
    errors: list[BaseException] = []

    def run(finalizing: bool) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                (finalize if finalizing else bill)(conn, NOV)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = db.execute("SELECT status::text, total_cents, count(*) FROM waybill.billing_records"
                      " GROUP BY 1, 2").fetchall()
    # 500 GB-h over x 0.0463c = 23.15 -> 23; every record finalized once.
    assert rows == [("open", 2023, 20)]
    lines = db.execute("SELECT count(*) FROM waybill.billing_record_lines").fetchone()[0]
    assert lines == 20 * 6


def test_billing_a_month_that_has_not_ended_is_refused(db):
    with pytest.raises(psycopg.Error) as info:
        bill(db, NOV, utc(2026, 11, 30, 23, 59))
    assert info.value.sqlstate == "WB422"


def test_draft_recomputes_late_usage_inside_the_grace_period_then_finalizes(db):
    project = new_project()
    put_usage(db, project, utc(2026, 10, 31, 22), bandwidth_gb=10)
    bill(db, OCT, utc(2026, 11, 1, 0, 20))
    assert record(db, project, OCT)["total"] == 100
    # An event for 23:00 arrives during the grace period: the draft picks it up.
    put_usage(db, project, utc(2026, 10, 31, 23), bandwidth_gb=5,
              computed_at=utc(2026, 11, 1, 0, 40))
    with pytest.raises(psycopg.Error) as info:
        finalize(db, OCT, utc(2026, 11, 1, 0, 59))  # grace (1 h) not over
    assert info.value.sqlstate == "WB409"
    assert finalize(db, OCT, utc(2026, 11, 1, 1, 0)) == 1
    rec = record(db, project, OCT)
    assert (rec["status"], rec["total"]) == ("open", 150)
    assert finalize(db, OCT, utc(2026, 11, 1, 2)) == 0  # again: nothing changes
    assert record(db, project, OCT) == rec


def test_finalized_records_are_immutable_in_the_database(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    finalize(db, OCT)
    rec = record(db, project, OCT)
    for statement in (
        "UPDATE waybill.billing_records SET total_cents = 1, subtotal_cents = 1 WHERE record_id = %s",
        "UPDATE waybill.billing_records SET status = 'draft', finalized_at = NULL WHERE record_id = %s",
        "DELETE FROM waybill.billing_records WHERE record_id = %s",
        "UPDATE waybill.billing_record_lines SET amount_cents = 0 WHERE record_id = %s",
        "DELETE FROM waybill.billing_record_lines WHERE record_id = %s",
    ):
        with pytest.raises(psycopg.Error) as info:
            db.execute(statement, (rec["record_id"],))
        assert info.value.sqlstate == "WB409", statement
    with pytest.raises(psycopg.Error):
        db.execute("INSERT INTO waybill.billing_record_lines (project_id, record_id, line_no, kind,"
                   " description, amount_cents) VALUES (%s, %s, 99, 'usage', 'x', 1)",
                   (project, rec["record_id"]))
    # The status may move forward, and Stripe's id may be filled in.
    db.execute("UPDATE waybill.billing_records SET status = 'paid', stripe_invoice_id = 'in_1'"
               " WHERE record_id = %s", (rec["record_id"],))
    assert record(db, project, OCT)["status"] == "paid"
    with pytest.raises(psycopg.Error):
        db.execute("UPDATE waybill.billing_records SET status = 'open' WHERE record_id = %s",
                   (rec["record_id"],))


def test_late_usage_after_finalization_is_an_adjustment_on_the_next_record(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    put_usage(db, project, utc(2026, 10, 20), bandwidth_gb=150)
    finalize(db, OCT)
    assert record(db, project, OCT)["total"] == 500 + 500
    # 20 GB more for October 31 arrives on November 3; October stays as it was.
    put_usage(db, project, utc(2026, 10, 31, 22), bandwidth_gb=20,
              computed_at=utc(2026, 11, 3, 12))
    bill(db, NOV)
    assert record(db, project, OCT)["total"] == 1000
    nov = record(db, project, NOV)
    adjustment = [line for line in nov["lines"] if line[0] == "adjustment"]
    assert len(adjustment) == 1
    assert adjustment[0][3] == 200 and adjustment[0][8] == OCT  # 20 GB x 10c, names October
    assert nov["total"] == 500 + 200
    finalize(db, NOV)
    # Already billed: December has no further adjustment for October.
    bill(db, DEC)
    assert [line for line in record(db, project, DEC)["lines"] if line[0] == "adjustment"] == []


def test_negative_adjustment_carries_forward_as_credit(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    put_usage(db, project, utc(2026, 10, 20), compute_gb_hours=1000)
    finalize(db, OCT)
    assert record(db, project, OCT)["total"] == 500 + 23  # 500 GB-h over x 0.0463c = 23.15
    subscribe(db, project, None, utc(2026, 11, 1))  # cancelled: November has no base fee
    # A late stop lowers October's compute to 400 GB-h: 23c was billed too much.
    put_usage(db, project, utc(2026, 10, 20), compute_gb_hours=400,
              computed_at=utc(2026, 11, 2))
    finalize(db, NOV)
    nov = record(db, project, NOV)
    assert nov["amounts"] == [("adjustment", "", -23)]
    assert (nov["subtotal"], nov["total"], nov["carried_forward"]) == (-23, 0, 23)
    # December: 10 GB pay as you go = 100c, less the 23c carried forward.
    put_usage(db, project, utc(2026, 12, 5), bandwidth_gb=10)
    finalize(db, DEC)
    dec = record(db, project, DEC)
    assert (dec["subtotal"], dec["credits"], dec["total"]) == (100, 23, 77)


def test_credits_soonest_expiring_first_expired_skipped_each_cent_once(db_url, db):
    project = new_project()
    subscribe(db, project, "team", utc(2026, 10, 1))
    put_usage(db, project, utc(2026, 11, 2), bandwidth_gb=1024)
    expired = grant(db, project, 500, "expired", expires_at=utc(2026, 11, 20))
    later = grant(db, project, 4000, "no expiry")
    soon = grant(db, project, 3000, "expires soon", expires_at=utc(2026, 12, 15))
    # November: 5000c. Soonest-expiring first: 3000 (soon), then 2000 of 4000 (no expiry).
    threads = [threading.Thread(target=lambda: finalize(psycopg.connect(db_url, autocommit=True),
                                                        NOV)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finalize(db, NOV)
    nov = record(db, project, NOV)
    assert (nov["subtotal"], nov["credits"], nov["total"]) == (5000, 5000, 0)
    credit_lines = [(line[3], line[9]) for line in nov["lines"] if line[0] == "credit"]
    assert credit_lines == [(-3000, soon), (-2000, later)]
    assert (remaining(db, soon), remaining(db, later), remaining(db, expired)) == (0, 2000, 500)
    # December: 5000c again; the 2000 left applies, the expired one never does.
    put_usage(db, project, utc(2026, 12, 2), bandwidth_gb=1)
    finalize(db, DEC)
    dec = record(db, project, DEC)
    assert (dec["credits"], dec["total"]) == (2000, 3000)
    assert remaining(db, later) == 0 and remaining(db, expired) == 500
    applied = db.execute("SELECT sum(amount_cents) FROM waybill.credit_applications").fetchone()[0]
    assert applied == 7000


def test_a_credit_partly_used_keeps_the_rest(db):
    project = new_project()
    put_usage(db, project, utc(2026, 11, 2), bandwidth_gb=3)  # pay as you go: 30c
    credit = grant(db, project, 100)
    finalize(db, NOV)
    rec = record(db, project, NOV)
    assert (rec["subtotal"], rec["credits"], rec["total"]) == (30, 30, 0)
    assert remaining(db, credit) == 70


def test_subscription_change_in_a_finalized_period_is_refused(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    finalize(db, OCT)
    with pytest.raises(psycopg.Error) as info:
        subscribe(db, project, "pro", utc(2026, 10, 31, 23))
    assert info.value.sqlstate == "WB409"
    subscribe(db, project, "pro", utc(2026, 11, 1))  # the open month is fine


def test_backdated_change_supersedes_later_ones_and_keeps_history(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 11, 1))
    subscribe(db, project, "team", utc(2026, 11, 20))
    subscribe(db, project, "pro", utc(2026, 11, 10))  # overrides the team change
    rows = db.execute("SELECT plan_id, effective_at, superseded_at IS NOT NULL"
                      " FROM waybill.subscriptions WHERE project_id = %s ORDER BY created_at,"
                      " effective_at", (project,)).fetchall()
    assert [(r[0], r[2]) for r in rows] == [("hobby", False), ("team", True), ("pro", False)]
    bill(db, NOV)
    plans = {line[2] for line in record(db, project, NOV)["lines"]}
    assert plans == {"hobby", "pro"}


def test_analyst_views_show_invoices_and_monthly_revenue(db):
    for plan in ("hobby", "pro"):
        project = new_project()
        subscribe(db, project, plan, utc(2026, 10, 1))
    finalize(db, OCT)
    db.execute("SET ROLE waybill_analyst")
    try:
        revenue = db.execute("SELECT month, invoices, base_fee_cents, billed_cents, paid_cents,"
                             " outstanding_cents FROM analytics.monthly_revenue").fetchall()
        assert revenue == [(OCT, 2, 2500, 2500, 0, 2500)]
        assert db.execute("SELECT count(*) FROM analytics.invoices").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM analytics.invoice_lines").fetchone()[0] == 12
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT * FROM waybill.billing_records")
    finally:
        db.execute("RESET ROLE")


def test_usage_current_prices_so_far_and_projects_the_month(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    grant(db, project, 250, expires_at=utc(2027, 1, 1))
    # Ten days into November (a 30-day month): 200 GB of egress so far.
    put_usage(db, project, utc(2026, 11, 10, 23), bandwidth_gb=200)
    doc = db.execute("SELECT waybill.usage_current(%s, %s)",
                     (project, utc(2026, 11, 11, 0))).fetchone()[0]
    assert doc["plan"] == "hobby" and doc["period"]["month"] == "2026-11"
    assert doc["as_of"].startswith("2026-11-11T00:00:00")
    bandwidth = [line for line in doc["lines"] if line["metric"] == "bandwidth_gb"][0]
    assert (bandwidth["quantity"], bandwidth["included"], bandwidth["billable"],
            bandwidth["unit_price"], bandwidth["amount_cents"]) == (
        "200.000000", "100.000000", "100.000000", "0.10", 1000)
    assert doc["base_fee_cents"] == 500 and doc["total_so_far_cents"] == 1500
    # Projected: 200 GB in 10 days -> 600 GB in 30: 500 over x 10c + 500 base.
    assert doc["projected_total_cents"] == 5500
    assert doc["credits_available_cents"] == 250
    assert Decimal(bandwidth["unit_price"]) == Decimal("0.10")


def test_cli_bill_runs_the_same_functions(db_url, db, monkeypatch, capsys):
    from app.cli import main

    project = new_project()
    subscribe(db, project, "pro", utc(2026, 10, 1))
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["bill", "--period", "2026-10"]) == 0
    assert record(db, project, OCT)["status"] == "draft"
    assert main(["bill", "--period", "2026-10", "--finalize"]) == 0
    assert "2026-10: 1 finalized" in capsys.readouterr().out
    assert record(db, project, OCT)["status"] == "open"
    assert main(["bill", "--period", "2026-10", "--finalize"]) == 0
    assert main(["bill", "--period", "2099-01"]) == 1  # not ended
    assert main(["bill", "--period", "2026-13"]) == 2


def test_settings_row_holds_the_default_rates(db):
    row = db.execute("SELECT price_compute_gb_hour, price_build_minute, price_storage_gb_month,"
                     " price_bandwidth_gb, grace_period FROM waybill.billing_settings").fetchone()
    assert row == (Decimal("0.000463"), Decimal("0.01"), Decimal("0.25"), Decimal("0.10"),
                   timedelta(hours=1))
