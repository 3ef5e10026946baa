"""Request and response bodies of the billing endpoints (msgspec Structs).

Amounts are integer cents; rates and quantities are exact decimals, sent as
strings so that no client parses them into floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Month = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]


class EstimateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The seed's shape plus optional plan, hours, builds, bandwidth, domains, month."""

    replicas: Decimal
    cpu_millicores: Decimal
    memory_mb: Decimal
    storage_gb: Decimal
    avg_build_minutes: Decimal
    plan: str | None = None
    hours: Decimal | None = None
    builds_per_month: Decimal | None = None
    bandwidth_gb: Decimal | None = None
    custom_domains: Annotated[int, msgspec.Meta(ge=0)] | None = None
    month: Month | None = None

    def __post_init__(self) -> None:
        for name in ("replicas", "cpu_millicores", "memory_mb", "storage_gb", "avg_build_minutes",
                     "hours", "builds_per_month", "bandwidth_gb"):
            value = getattr(self, name)
            if value is not None and not (value.is_finite() and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")


class SubscriptionRequest(msgspec.Struct, forbid_unknown_fields=True):
    plan: str | None
    effective_at: AwareDatetime | None = None


class CreditRequest(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: Annotated[int, msgspec.Meta(gt=0, le=10**12)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    expires_at: AwareDatetime | None = None


class Line(msgspec.Struct):
    line_no: int
    kind: str
    metric: str | None
    description: str
    amount_cents: int
    plan: str | None = None
    segment_from: datetime | None = None
    segment_to: datetime | None = None
    quantity: Decimal | None = None
    included: Decimal | None = None  # null: unlimited
    billable: Decimal | None = None
    unit: str | None = None
    unit_price: Decimal | None = None
    adjustment_period: str | None = None
    credit_id: UUID | None = None


class Estimate(msgspec.Struct):
    plan: str | None
    month: str
    hours: Decimal
    currency: str
    lines: list[Line]
    total_cents: int


class Included(msgspec.Struct):
    compute_gb_hours: Decimal | None
    build_minutes: Decimal | None
    storage_gb_months: Decimal | None
    bandwidth_gb: Decimal | None
    custom_domains: int | None


class Rates(msgspec.Struct):
    compute_gb_hour: Decimal
    build_minute: Decimal
    storage_gb_month: Decimal
    bandwidth_gb: Decimal
    custom_domain: Decimal


class Plan(msgspec.Struct):
    id: str
    name: str
    base_fee_cents: int
    currency: str
    included: Included  # null: unlimited
    rates: Rates  # overage rates in effect (the plan's own, else PRICE_* defaults)
    stripe_price_id: str | None


class Plans(msgspec.Struct):
    plans: list[Plan]
    pay_as_you_go: Rates


class Subscription(msgspec.Struct):
    project_id: UUID
    subscription_id: UUID
    plan: str | None
    effective_at: datetime


class Credit(msgspec.Struct):
    credit_id: UUID
    project_id: UUID
    amount_cents: int
    currency: str
    reason: str
    granted_at: datetime
    expires_at: datetime | None


class Invoice(msgspec.Struct):
    record_id: UUID
    project_id: UUID
    period: str
    period_start: datetime
    period_end: datetime
    status: str
    currency: str
    subtotal_cents: int
    credits_cents: int
    total_cents: int
    carried_forward_cents: int
    usage_as_of: datetime | None
    computed_at: datetime
    finalized_at: datetime | None
    stripe_invoice_id: str | None
    lines: list[Line]


class Invoices(msgspec.Struct):
    invoices: list[Invoice]


class Period(msgspec.Struct):
    start: datetime
    end: datetime
    month: str


class CurrentLine(msgspec.Struct):
    kind: str
    metric: str | None
    description: str
    amount_cents: int
    plan: str | None = None
    segment_from: datetime | None = None
    segment_to: datetime | None = None
    quantity: Decimal | None = None
    included: Decimal | None = None
    billable: Decimal | None = None
    unit: str | None = None
    unit_price: Decimal | None = None


class UsageCurrent(msgspec.Struct):
    project_id: UUID
    plan: str | None
    currency: str
    period: Period
    as_of: datetime
    lines: list[CurrentLine]
    base_fee_cents: int
    total_so_far_cents: int
    projected_total_cents: int
    credits_available_cents: int
