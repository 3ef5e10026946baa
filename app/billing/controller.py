"""Billing endpoints (CONTRACT.md sections 4, 5, 7).

Open: GET /api/v1/plans, POST /api/v1/estimate.
Project readers: GET /api/v1/projects/{id}/usage/current, .../invoices.
Internal key: PUT /internal/projects/{id}/subscription, POST .../credits.
Every amount comes from the SQL pricing function; nothing here does arithmetic
on money.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from app.auth import require_internal_key, require_project_reader
from app.billing import queries
from app.billing.models import (
    Credit,
    CreditRequest,
    Estimate,
    EstimateRequest,
    Included,
    Invoice,
    Invoices,
    Line,
    Plan,
    Plans,
    Rates,
    Subscription,
    SubscriptionRequest,
    UsageCurrent,
)
from app.billing.settings_sync import sync_billing_settings

# Builds a month when an estimate does not say (about one a working day).
DEFAULT_BUILDS_PER_MONTH = Decimal(22)


async def ensure_billing_settings(request: Request[Any, Any, Any]) -> None:
    """before_request hook: write PRICE_* and the grace period once per process."""
    state = request.app.state
    if not state.get("billing_settings_synced"):
        await sync_billing_settings(state.pool, state.settings)
        state.billing_settings_synced = True


def _rates(row: Any) -> Rates:
    return Rates(compute_gb_hour=row[0], build_minute=row[1], storage_gb_month=row[2],
                 bandwidth_gb=row[3], custom_domain=row[4])


@get("/plans")
async def list_plans(request: Request[Any, Any, Any]) -> Plans:
    """Every plan with its included amounts (null = unlimited) and the rates in effect."""
    async with request.app.state.pool.connection() as conn:
        rows = await (await conn.execute(queries.PLANS)).fetchall()
        default = await (await conn.execute(queries.DEFAULT_RATES)).fetchone()
    plans = [Plan(id=r[0], name=r[1], base_fee_cents=r[2], currency=r[3],
                  included=Included(compute_gb_hours=r[4], build_minutes=r[5],
                                    storage_gb_months=r[6], bandwidth_gb=r[7],
                                    custom_domains=r[8]),
                  rates=_rates(r[9:14]), stripe_price_id=r[14]) for r in rows]
    return Plans(plans=plans, pay_as_you_go=_rates(default))


def _month_start(month: str | None, now: datetime) -> date:
    if month is None:
        return date(now.year, now.month, 1)
    year, mon = month.split("-")
    return date(int(year), int(mon), 1)


def _hours_in(month: date) -> Decimal:
    nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return Decimal((nxt - month).days * 24)


@post("/estimate", status_code=200)
async def estimate(request: Request[Any, Any, Any], data: JSONBody[EstimateRequest]) -> Estimate:
    """Price a usage profile for a month, line by line, exactly as an invoice would.

    `hours` is how long the shape runs in the month (default: all of it);
    storage is held for those hours; builds = builds_per_month x avg_build_minutes.
    """
    month = _month_start(data.month, datetime.now(UTC))
    hours = data.hours if data.hours is not None else _hours_in(month)
    builds = data.builds_per_month if data.builds_per_month is not None \
        else DEFAULT_BUILDS_PER_MONTH
    params = {"plan": data.plan, "month": month, "hours": hours, "replicas": data.replicas,
              "cpu": data.cpu_millicores, "memory": data.memory_mb, "storage": data.storage_gb,
              "build_minutes": builds * data.avg_build_minutes,
              "bandwidth": data.bandwidth_gb or Decimal(0), "domains": data.custom_domains or 0}
    async with request.app.state.pool.connection() as conn:
        rows = await (await conn.execute(queries.ESTIMATE, params)).fetchall()
    lines = [Line(line_no=r[0], kind=r[1], metric=r[2], description=r[3], amount_cents=r[4],
                  plan=data.plan, quantity=r[5], included=r[6], billable=r[7], unit=r[8],
                  unit_price=r[9]) for r in rows]
    return Estimate(plan=data.plan, month=month.strftime("%Y-%m"), hours=hours,
                    currency=rows[0][10] if rows else "usd", lines=lines,
                    total_cents=sum(line.amount_cents for line in lines))


@get("/{project_id:uuid}/usage/current")
async def usage_current(request: Request[Any, Any, Any],
                        project_id: FromPath[uuid.UUID]) -> UsageCurrent:
    """This month so far, priced by the same function as invoices, and projected to its end."""
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(queries.USAGE_CURRENT,
                                        {"project": project_id, "now": datetime.now(UTC)}
                                        )).fetchone()
    return msgspec.json.decode(row[0], type=UsageCurrent)


@get("/{project_id:uuid}/invoices")
async def list_invoices(
    request: Request[Any, Any, Any], project_id: FromPath[uuid.UUID],
    limit: Annotated[int, QueryParameter(ge=1, le=120)] = 24,
) -> Invoices:
    """Billing records, newest first, with their lines, status and Stripe ids."""
    async with request.app.state.pool.connection() as conn:
        records = await (await conn.execute(
            queries.INVOICES, {"project": project_id, "limit": limit})).fetchall()
        line_rows = await (await conn.execute(
            queries.INVOICE_LINES,
            {"project": project_id, "records": [r[0] for r in records]})).fetchall()
    lines: dict[uuid.UUID, list[Line]] = {}
    for r in line_rows:
        lines.setdefault(r[0], []).append(Line(
            line_no=r[1], kind=r[2], metric=r[3], description=r[4], amount_cents=r[5],
            plan=r[6], segment_from=r[7], segment_to=r[8], quantity=r[9], included=r[10],
            billable=r[11], unit=r[12], unit_price=r[13], adjustment_period=r[14],
            credit_id=r[15]))
    return Invoices(invoices=[Invoice(
        record_id=r[0], project_id=r[1], period=r[2], period_start=r[3], period_end=r[4],
        status=r[5], currency=r[6], subtotal_cents=r[7], credits_cents=r[8], total_cents=r[9],
        carried_forward_cents=r[10], usage_as_of=r[11], computed_at=r[12], finalized_at=r[13],
        stripe_invoice_id=r[14], lines=lines.get(r[0], [])) for r in records])


@put("/{project_id:uuid}/subscription")
async def set_subscription(request: Request[Any, Any, Any], project_id: FromPath[uuid.UUID],
                           data: JSONBody[SubscriptionRequest]) -> Subscription:
    """Put the project on a plan from `effective_at` (default now); `"plan": null` cancels.

    Changes after that instant are superseded (kept as history). An instant in a
    finalized month is a 409; an unknown plan a 422.
    """
    effective_at = data.effective_at or datetime.now(UTC)
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(queries.SET_SUBSCRIPTION, {
            "project": project_id, "plan": data.plan, "effective_at": effective_at})).fetchone()
    return Subscription(project_id=project_id, subscription_id=row[0], plan=row[1],
                        effective_at=row[2])


@post("/{project_id:uuid}/credits", status_code=201)
async def grant_credit(request: Request[Any, Any, Any], project_id: FromPath[uuid.UUID],
                       data: JSONBody[CreditRequest]) -> Credit:
    """Grant a promotional credit, applied at finalization, soonest-expiring first."""
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(queries.GRANT_CREDIT, {
            "project": project_id, "amount": data.amount_cents, "reason": data.reason,
            "expires_at": data.expires_at})).fetchone()
    return Credit(credit_id=row[0], project_id=row[1], amount_cents=row[2], currency=row[3],
                  reason=row[4], granted_at=row[5], expires_at=row[6])


public_router = Router(path="/api/v1", route_handlers=[list_plans, estimate],
                       before_request=ensure_billing_settings, tags=["billing"])
project_router = Router(path="/api/v1/projects", route_handlers=[usage_current, list_invoices],
                        guards=[require_project_reader], before_request=ensure_billing_settings,
                        tags=["billing"])
internal_router = Router(path="/internal/projects", route_handlers=[set_subscription, grant_credit],
                         guards=[require_internal_key], before_request=ensure_billing_settings,
                         tags=["admin"])
routers = [public_router, project_router, internal_router]
