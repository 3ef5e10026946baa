"""Property tests: for random usage and plans, every total is the sum of its rounded
lines and never negative, and the estimate of a usage profile is, line for line,
the invoice of the same usage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.billing_support import (
    finalize,
    month_end,
    new_project,
    record,
    roll_up_days,
    subscribe,
)

PLANS = st.sampled_from([None, "hobby", "pro", "team"])
MONTHS = st.sampled_from([date(2026, 2, 1), date(2026, 4, 1), date(2026, 12, 1),
                          date(2028, 2, 1)])
money = st.decimals(min_value=0, max_value=5000, places=3)


@st.composite
def profiles(draw):
    month = draw(MONTHS)
    month_hours = int((month_end(month) - datetime(month.year, month.month, 1,
                                                   tzinfo=UTC)).total_seconds() // 3600)
    return {
        "plan": draw(PLANS), "month": month,
        "hours": draw(st.integers(min_value=0, max_value=month_hours)),
        "replicas": draw(st.integers(min_value=0, max_value=6)),
        "cpu": draw(st.integers(min_value=0, max_value=8000)),
        "memory": draw(st.integers(min_value=0, max_value=32768)),
        "storage": draw(st.decimals(min_value=0, max_value=300, places=2)),
        "build_minutes": draw(st.decimals(min_value=0, max_value=12000, places=2)),
        "bandwidth": draw(money),
        "domains": draw(st.integers(min_value=0, max_value=6)),
        "credit": draw(st.integers(min_value=0, max_value=8000)),
        "second_plan": draw(PLANS),
        "change_after": draw(st.integers(min_value=1, max_value=27 * 86400)),
    }


def insert_profile(db, project, p):
    start = datetime(p["month"].year, p["month"].month, 1, tzinfo=UTC)
    gbeq = max(Decimal(p["memory"]) / 1024, Decimal(p["cpu"]) / 1000) * p["replicas"]
    db.execute(
        "INSERT INTO waybill.hourly_usage (project_id, hour, compute_gb_seconds,"
        " storage_gb_seconds, computed_at)"
        " SELECT %s, %s + h * interval '1 hour', %s * 3600, %s * 3600, %s"
        "   FROM generate_series(0, %s - 1) h",
        (project, start, gbeq, p["storage"], start, p["hours"]))
    db.execute(
        "INSERT INTO waybill.hourly_usage (project_id, hour, build_seconds, bandwidth_gb,"
        " custom_domains, computed_at) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (project_id, hour) DO UPDATE SET build_seconds = excluded.build_seconds,"
        " bandwidth_gb = excluded.bandwidth_gb, custom_domains = excluded.custom_domains",
        (project, start, p["build_minutes"] * 60, p["bandwidth"], p["domains"], start))
    db.execute("INSERT INTO waybill.rollup_dirty_days (project_id, day)"
               " SELECT DISTINCT project_id, (hour AT TIME ZONE 'UTC')::date"
               "   FROM waybill.hourly_usage WHERE project_id = %s ON CONFLICT DO NOTHING",
               (project,))
    return start


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(p=profiles())
def test_totals_are_sums_of_rounded_lines_and_estimates_equal_invoices(db, p):
    # One database for every example: clear the last one (bypassing the immutability
    # triggers, which is what session_replication_role is for).
    db.execute("SET session_replication_role = replica")
    for table in ("credit_applications", "billing_record_lines", "billing_records", "credits",
                  "subscriptions", "hourly_usage", "daily_usage", "rollup_dirty_days"):
        db.execute(f"DELETE FROM waybill.{table}")
    db.execute("RESET session_replication_role")
    steady, changing = new_project(), new_project()
    start = insert_profile(db, steady, p)
    insert_profile(db, changing, p)
    before = start - timedelta(days=3)
    for project in (steady, changing):
        if p["plan"]:
            subscribe(db, project, p["plan"], before)
    subscribe(db, changing, p["second_plan"], start + timedelta(seconds=p["change_after"]))
    if p["credit"]:
        db.execute("INSERT INTO waybill.credits (project_id, amount_cents, reason)"
                   " VALUES (%s, %s, 'p'), (%s, %s, 'p')",
                   (steady, p["credit"], changing, p["credit"]))
    if p["domains"] % 2:  # half the time, bill from daily_usage as metering leaves it
        roll_up_days(db)
    finalize(db, p["month"], month_end(p["month"]) + timedelta(hours=2))

    for project in (steady, changing):
        invoice = record(db, project, p["month"])
        if invoice is None:  # no plan and no usage at all: nothing to bill
            continue
        charges = [a for kind, _, a in invoice["amounts"] if kind != "credit"]
        credits = [a for kind, _, a in invoice["amounts"] if kind == "credit"]
        assert all(isinstance(a, int) for a in charges + credits)
        assert invoice["subtotal"] == sum(charges)
        assert invoice["credits"] == -sum(credits) <= min(p["credit"], max(invoice["subtotal"], 0))
        assert invoice["total"] == max(0, invoice["subtotal"] - invoice["credits"]) >= 0
        assert invoice["status"] == "open"

    estimate = db.execute(
        "SELECT kind::text, coalesce(metric, ''), amount_cents, quantity, included, billable,"
        " unit_price FROM waybill.price_estimate(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ORDER BY line_no",
        (p["plan"], p["month"], p["hours"], p["replicas"], p["cpu"], p["memory"], p["storage"],
         p["build_minutes"], p["bandwidth"], p["domains"])).fetchall()
    steady_invoice = record(db, steady, p["month"])
    if steady_invoice is None:
        assert p["plan"] is None and all(line[2] == 0 for line in estimate)
        return
    invoice_lines = [(k, m, a, q, i, b, u) for k, m, _, a, q, i, b, u, *_
                     in steady_invoice["lines"] if k != "credit"]
    assert invoice_lines == estimate
