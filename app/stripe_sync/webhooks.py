"""POST /webhooks/stripe: payment status in, each event once, never backwards.

The Stripe-Signature header is verified on the raw body with the SDK's scheme
(HMAC-SHA256 over "timestamp.body", `TOLERANCE` seconds); a missing or bad
signature is a 400 and changes nothing. The signature is the authentication: no
internal key. Every verified event is stored (id, type, received, outcome,
payload) and processed once, in the same transaction as its effects. Record
status only moves forward: open -> paid | void | uncollectible, uncollectible ->
paid | void; anything else is recorded as ignored. Unknown types answer 200.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import stripe
from litestar import Request, Router, post

from app.config import Settings
from app.errors import BadRequest, Unavailable
from app.stripe_sync import queries

log = logging.getLogger("waybill.stripe")

TOLERANCE = 300  # seconds; Stripe's own default
Conn = psycopg.AsyncConnection[Any]

# Target status -> the statuses it may come from.
TRANSITIONS: dict[str, frozenset[str]] = {
    "paid": frozenset({"open", "uncollectible"}),
    "void": frozenset({"open", "uncollectible"}),
    "uncollectible": frozenset({"open"}),
}
INVOICE_TARGETS = {"invoice.paid": "paid", "invoice.voided": "void",
                   "invoice.marked_uncollectible": "uncollectible"}
ACTIVE = frozenset({"active", "trialing", "past_due"})
ENDED = frozenset({"canceled", "unpaid", "incomplete_expired", "paused"})


class EventData(msgspec.Struct):
    object: dict[str, Any]


class Event(msgspec.Struct):
    id: str
    type: str
    data: EventData
    created: int | None = None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


async def _invoice_status(conn: Conn, event: Event, at: datetime) -> str:
    obj = event.data.object
    meta = _metadata(obj)
    row = await (await conn.execute(queries.FIND_RECORD, {
        "invoice": obj.get("id"), "project": _uuid(meta.get("waybill_project_id")),
        "record": _uuid(meta.get("waybill_record_id"))})).fetchone()
    if row is None:
        return "ignored: not a Waybill invoice"
    project_id, record_id, status, _ = row
    if event.type == "invoice.payment_failed":
        error = f"payment attempt {obj.get('attempt_count', '?')} failed"
        await conn.execute(queries.PAYMENT_FAILED, {"error": error, "at": at, "project": project_id,
                                                    "record": record_id})
        return f"payment failure recorded; status stays {status}"
    target = INVOICE_TARGETS[event.type]
    if status == target:
        return f"no change: already {status}"
    if status not in TRANSITIONS[target]:
        return f"ignored: {status} -> {target} is not allowed"
    await conn.execute(queries.SET_STATUS, {"status": target, "invoice": obj.get("id"),
                                            "project": project_id, "record": record_id})
    log.info("billing record status from stripe", extra={"record_id": str(record_id),
                                                         "from": status, "to": target})
    return f"applied: {status} -> {target}"


def _price_id(obj: dict[str, Any]) -> str | None:
    items = (obj.get("items") or {}).get("data") or []
    for item in items:
        price = item.get("price") or {}
        if isinstance(price, dict) and price.get("id"):
            return str(price["id"])
        if isinstance(price, str):
            return price
    return None


async def _subscription(conn: Conn, event: Event, at: datetime) -> str:
    obj = event.data.object
    row = await (await conn.execute(queries.PROJECT_OF_CUSTOMER, (obj.get("customer"),))).fetchone()
    project_id = row[0] if row else _uuid(_metadata(obj).get("waybill_project_id"))
    if project_id is None:
        return "ignored: customer is not a Waybill project"
    status = obj.get("status")
    plan_id: str | None = None
    if event.type != "customer.subscription.deleted" and status not in ENDED:
        if status not in ACTIVE:
            return f"ignored: subscription status {status}"
        price = _price_id(obj)
        plan = await (await conn.execute(queries.PLAN_OF_PRICE, (price,))).fetchone()
        if plan is None:
            return f"ignored: no plan has Stripe price {price}"
        plan_id = plan[0]
    if await (await conn.execute(queries.NEWER_STRIPE_CHANGE, (project_id, at))).fetchone():
        return "ignored: a newer Stripe change is already applied"
    current = await (await conn.execute(queries.PLAN_IN_FORCE, (project_id, at))).fetchone()
    if current is not None and current[0] == plan_id:
        return f"no change: already on {plan_id or 'no plan'}"
    try:
        async with conn.transaction():
            await conn.execute(queries.SET_SUBSCRIPTION, (project_id, plan_id, at, obj.get("id")))
    except psycopg.Error as exc:
        if exc.sqlstate not in ("WB409", "WB422"):
            raise
        return f"refused: {exc.diag.message_primary}"
    return f"applied: plan {plan_id or 'none'} from {at.isoformat()}"


Handler = Callable[[Conn, Event, datetime], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "invoice.paid": _invoice_status, "invoice.voided": _invoice_status,
    "invoice.marked_uncollectible": _invoice_status, "invoice.payment_failed": _invoice_status,
    "customer.subscription.created": _subscription, "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
}


def verify(body: bytes, header: str | None, secret: str) -> Event:
    """The event, if the signature over these exact bytes is valid and recent; else BadRequest."""
    try:
        stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, secret, TOLERANCE)
    except Exception as exc:  # noqa: BLE001 - every failure to verify is the same answer
        raise BadRequest("invalid or missing Stripe-Signature") from exc
    try:
        return msgspec.json.decode(body, type=Event)
    except msgspec.DecodeError as exc:
        raise BadRequest("not a Stripe event") from exc


@post("/webhooks/stripe", status_code=200, tags=["stripe"])
async def stripe_webhook(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Receive one Stripe event (signed); answers 200 once it is recorded."""
    settings: Settings = request.app.state.settings
    if not settings.stripe_webhook_secret:
        raise Unavailable("Stripe webhooks are off: STRIPE_WEBHOOK_SECRET is not set")
    body = await request.body()
    event = verify(body, request.headers.get("stripe-signature"), settings.stripe_webhook_secret)
    at = datetime.fromtimestamp(event.created, UTC) if event.created else datetime.now(UTC)
    async with request.app.state.pool.connection() as conn, conn.transaction():
        inserted, outcome = await (await conn.execute(queries.INSERT_EVENT, {
            "id": event.id, "type": event.type, "created": at,
            "payload": body.decode("utf-8")})).fetchone()
        if not inserted:
            return {"received": True, "duplicate": True, "outcome": outcome}
        handler = HANDLERS.get(event.type)
        outcome = await handler(conn, event, at) if handler else "ignored: unhandled type"
        await conn.execute(queries.SET_OUTCOME, (outcome, event.id))
    log.info("stripe webhook", extra={"event_id": event.id, "type": event.type, "outcome": outcome})
    return {"received": True, "duplicate": False, "outcome": outcome}


router = Router(path="/", route_handlers=[stripe_webhook])
