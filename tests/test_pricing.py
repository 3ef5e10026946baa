"""Pricing, CONTRACT.md section 4: the three plans under, at and over every included
amount, pay as you go, month lengths, a mid-month upgrade, one rounding per line.

Every expected invoice is written out by hand, in cents. November 2026 has 30
days (720 hours, 2,592,000 seconds) unless a test says otherwise.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tests.billing_support import bill, new_project, put_usage, record, subscribe, utc

NOV = date(2026, 11, 1)
NOV_SECONDS = 30 * 24 * 3600
# One GB held for the whole of November, in GB-seconds: exactly 1 GB-month.
GB_MONTH_NOV = NOV_SECONDS


def usage_invoice(db, plan, *, compute=0, build=0, storage_gb_months=Decimal(0), bandwidth=0,
                  domains=0):
    project = new_project()
    if plan:
        subscribe(db, project, plan, utc(2026, 10, 15))
    # All of a metric in one hour is the same as spread over many: sums are what count.
    put_usage(db, project, utc(2026, 11, 3, 10), compute_gb_hours=compute, build_minutes=build,
              storage_gb_seconds=Decimal(storage_gb_months) * GB_MONTH_NOV,
              bandwidth_gb=bandwidth, custom_domains=domains)
    bill(db, NOV)
    return record(db, project, NOV)


# (plan, usage, expected lines in order: base, compute, build, storage, bandwidth, domains)
CASES = [
    # hobby: $5, 500 GB-h, 500 min, 1 GB-month, 100 GB, 1 domain
    ("hobby", dict(compute=250, build=100, storage_gb_months="0.5", bandwidth=10, domains=0),
     [500, 0, 0, 0, 0, 0], 500),
    ("hobby", dict(compute=500, build=500, storage_gb_months=1, bandwidth=100, domains=1),
     [500, 0, 0, 0, 0, 0], 500),
    # over: 100 GB-h x $0.000463 = 4.63c -> 5; 250 min x 1c = 250; 2 GB-month x 25c = 50;
    # 50.05 GB x 10c = 500.5c -> 501 (half up); 3 domains: 2 over, shown at $0 -> 0.
    ("hobby", dict(compute=600, build=750, storage_gb_months=3, bandwidth="150.05", domains=3),
     [500, 5, 250, 50, 501, 0], 1306),
    # pro: $20, 2000 GB-h, 2000 min, 10 GB-month, 500 GB, unlimited domains
    ("pro", dict(compute=1999, build=1, storage_gb_months="9.99", bandwidth=499, domains=7),
     [2000, 0, 0, 0, 0, 0], 2000),
    ("pro", dict(compute=2000, build=2000, storage_gb_months=10, bandwidth=500, domains=40),
     [2000, 0, 0, 0, 0, 0], 2000),
    # over: 100 GB-h x 0.0463c = 4.63 -> 5; 0.5 min x 1c = 0.5 -> 1 (half up);
    # 2.5 GB-month x 20c = 50; 100 GB x 8c = 800; domains unlimited -> 0.
    ("pro", dict(compute=2100, build="2000.5", storage_gb_months="12.5", bandwidth=600,
                 domains=40),
     [2000, 5, 1, 50, 800, 0], 2856),
    # team: $50, 5000 GB-h, 5000 min, 50 GB-month, 1024 GB
    ("team", dict(compute=10, build=10, storage_gb_months=1, bandwidth=1, domains=2),
     [5000, 0, 0, 0, 0, 0], 5000),
    ("team", dict(compute=5000, build=5000, storage_gb_months=50, bandwidth=1024, domains=2),
     [5000, 0, 0, 0, 0, 0], 5000),
    # over: 1000 GB-h x 0.04c = 40; 100 min x 0.8c = 80; 10 GB-month x 15c = 150;
    # 100 GB x 5c = 500.
    ("team", dict(compute=6000, build=5100, storage_gb_months=60, bandwidth=1124, domains=2),
     [5000, 40, 80, 150, 500, 0], 5770),
]


@pytest.mark.parametrize(("plan", "usage", "amounts", "total"), CASES)
def test_each_plan_under_at_and_over_every_included_amount(db, plan, usage, amounts, total):
    invoice = usage_invoice(db, plan, **{k: (Decimal(v) if isinstance(v, str) else v)
                                         for k, v in usage.items()})
    assert [a for _, _, a in invoice["amounts"]] == amounts
    assert [m for _, m, _ in invoice["amounts"]] == [
        "", "compute_gb_hours", "build_minutes", "storage_gb_months", "bandwidth_gb",
        "custom_domains"]
    assert invoice["subtotal"] == invoice["total"] == total
    assert invoice["status"] == "draft"


def test_line_shows_quantity_included_billable_and_unit_price(db):
    invoice = usage_invoice(db, "hobby", compute=600, build=750, storage_gb_months=3,
                            bandwidth=Decimal("150.05"), domains=3)
    by_metric = {line[1]: line for line in invoice["lines"]}
    _, _, plan, amount, quantity, included, billable, unit_price, *_ = by_metric["compute_gb_hours"]
    assert (plan, quantity, included, billable, unit_price, amount) == (
        "hobby", Decimal(600), Decimal(500), Decimal(100), Decimal("0.000463"), 5)
    assert by_metric["custom_domains"][4:8] == (Decimal(3), Decimal(1), Decimal(2), Decimal(0))
    assert by_metric[""][3] == 500 and by_metric[""][7] == Decimal("5.00")


def test_pay_as_you_go_has_no_base_fee_nothing_included_and_default_rates(db):
    invoice = usage_invoice(db, None, compute=100, build=10, storage_gb_months=1, bandwidth=1)
    # 100 GB-h x 0.0463c = 4.63 -> 5; 10 min x 1c; 1 GB-month x 25c; 1 GB x 10c.
    assert invoice["amounts"] == [("usage", "compute_gb_hours", 5), ("usage", "build_minutes", 10),
                                  ("usage", "storage_gb_months", 25), ("usage", "bandwidth_gb", 10),
                                  ("usage", "custom_domains", 0)]
    assert invoice["total"] == 50


def test_plan_without_its_own_rate_uses_the_price_default(db):
    db.execute("UPDATE waybill.pricing_plans SET rate_bandwidth_gb = NULL WHERE plan_id = 'pro'")
    db.execute("UPDATE waybill.billing_settings SET price_bandwidth_gb = 0.5")
    invoice = usage_invoice(db, "pro", bandwidth=510)
    assert invoice["amounts"][4] == ("usage", "bandwidth_gb", 500)  # 10 GB x 50c


@pytest.mark.parametrize(("period", "hours_in_month", "half_month_cents"), [
    # 10 GB held 336 hours: 3360 GB-h / month hours GB-months x 25c, rounded once.
    (date(2026, 2, 1), 672, 125),    # 3360 / 672 = 5 GB-months -> 125c
    (date(2026, 11, 1), 720, 117),   # 3360 / 720 = 4.6667 -> 116.667c -> 117
    (date(2026, 12, 1), 744, 113),   # 3360 / 744 = 4.5161 -> 112.903c -> 113
])
def test_storage_gb_months_use_the_hours_of_that_month(db, period, hours_in_month,
                                                        half_month_cents):
    whole, half = new_project(), new_project()
    start = utc(period.year, period.month, 1)
    from datetime import timedelta
    for h in range(hours_in_month):
        put_usage(db, whole, start + timedelta(hours=h), storage_gb_seconds=10 * 3600)
    for h in range(336):
        put_usage(db, half, start + timedelta(hours=h), storage_gb_seconds=10 * 3600)
    bill(db, period)
    full = record(db, whole, period)
    storage = [line for line in full["lines"] if line[1] == "storage_gb_months"][0]
    assert storage[4] == Decimal(10) and storage[3] == 250  # 10 GB-months x 25c, any month length
    assert record(db, half, period)["amounts"][2] == ("usage", "storage_gb_months",
                                                       half_month_cents)


def test_period_boundary_is_midnight_utc_whatever_the_session_time_zone(db):
    db.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14
    project = new_project()
    put_usage(db, project, utc(2026, 10, 31, 23), bandwidth_gb=10)  # last October hour
    put_usage(db, project, utc(2026, 11, 1, 0), bandwidth_gb=20)    # first November hour
    put_usage(db, project, utc(2026, 11, 30, 23), bandwidth_gb=30)  # last November hour
    put_usage(db, project, utc(2026, 12, 1, 0), bandwidth_gb=40)    # December
    bill(db, date(2026, 10, 1))
    bill(db, NOV)
    db.execute("SET TimeZone = 'America/Los_Angeles'")
    bill(db, NOV)  # recomputed under another zone: the same
    assert record(db, project, date(2026, 10, 1))["amounts"][3] == ("usage", "bandwidth_gb", 100)
    nov = record(db, project, NOV)
    assert nov["amounts"][3] == ("usage", "bandwidth_gb", 500)  # 50 GB x 10c


def test_mid_month_upgrade_prorates_to_the_second_and_prices_each_segment(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    subscribe(db, project, "pro", utc(2026, 11, 10, 12))
    # Hobby for 9.5 days = 820,800 s (fraction 0.316667), pro for 20.5 days = 1,771,200 s.
    put_usage(db, project, utc(2026, 11, 5, 0), compute_gb_hours=200, build_minutes=100,
              custom_domains=2)
    put_usage(db, project, utc(2026, 11, 10, 11), bandwidth_gb=50)   # hour starts on hobby
    put_usage(db, project, utc(2026, 11, 10, 12), compute_gb_hours=1500, bandwidth_gb=400)
    bill(db, NOV)
    invoice = record(db, project, NOV)
    assert [(k, m, plan, a) for k, m, plan, a, *_ in invoice["lines"]] == [
        # hobby base: 500 x 820800 / 2592000 = 158.33 -> 158
        ("base_fee", "", "hobby", 158),
        # included 500 x 0.316667 = 158.33 GB-h; 41.67 over x 0.0463c = 1.93 -> 2
        ("usage", "compute_gb_hours", "hobby", 2),
        ("usage", "build_minutes", "hobby", 0),       # 100 of 158.33 included
        ("usage", "storage_gb_months", "hobby", 0),
        # included 100 x 0.316667 = 31.67 GB; 18.33 over x 10c = 183.33 -> 183
        ("usage", "bandwidth_gb", "hobby", 183),
        ("usage", "custom_domains", "hobby", 0),      # 2 of 1 included: shown at $0
        # pro base: 2000 x 1771200 / 2592000 = 1366.67 -> 1367
        ("base_fee", "", "pro", 1367),
        # included 2000 x 0.683333 = 1366.67 GB-h; 133.33 over x 0.0463c = 6.17 -> 6
        ("usage", "compute_gb_hours", "pro", 6),
        ("usage", "build_minutes", "pro", 0),
        ("usage", "storage_gb_months", "pro", 0),
        # included 500 x 0.683333 = 341.67 GB; 58.33 over x 8c = 466.67 -> 467
        ("usage", "bandwidth_gb", "pro", 467),
        ("usage", "custom_domains", "pro", 0),
    ]
    assert invoice["total"] == 158 + 2 + 183 + 1367 + 6 + 467 == 2183


def test_hour_belongs_to_the_plan_in_force_at_its_start(db):
    project = new_project()
    subscribe(db, project, "hobby", utc(2026, 10, 1))
    subscribe(db, project, None, utc(2026, 11, 16, 0, 30))  # cancelled at 00:30
    put_usage(db, project, utc(2026, 11, 16, 0), bandwidth_gb=120)  # hour began on hobby
    put_usage(db, project, utc(2026, 11, 16, 1), bandwidth_gb=2)    # pay as you go
    bill(db, NOV)
    lines = [(k, m, plan, a) for k, m, plan, a, *_ in record(db, project, NOV)["lines"]]
    # Hobby from Nov 1 to Nov 16 00:30 = 1,297,800 s: base 500 x 0.500694 = 250.35 -> 250;
    # bandwidth included 100 x 0.500694 = 50.07 GB; 69.93 over x 10c = 699.31 -> 699.
    assert lines[0] == ("base_fee", "", "hobby", 250)
    assert lines[4] == ("usage", "bandwidth_gb", "hobby", 699)
    # After cancelling: no base fee, nothing included: 2 GB x 10c.
    assert ("usage", "bandwidth_gb", None, 20) in lines
    assert not any(k == "base_fee" and plan is None for k, _, plan, _ in lines)
