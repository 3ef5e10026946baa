"""The one way Waybill talks to Stripe: an explicit `stripe.StripeClient`.

Never the module-global key. The SDK's own retries are off (max_network_retries=0):
retries belong to the outbox, which backs off and shows the last error. Every
write carries an idempotency key derived from Waybill ids (see `keys`), so a
retry after a crash or a timeout replays instead of creating a second object.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import stripe

from app.config import Settings

# Seconds a single Stripe call may take before it counts as failed (and is retried
# later with the same idempotency key).
DEFAULT_TIMEOUT = 30.0


class keys:  # noqa: N801 - a namespace of key builders
    """Idempotency keys: stable for a Waybill object, distinct for each Stripe write."""

    @staticmethod
    def customer(project_id: uuid.UUID) -> str:
        return f"waybill-customer-{project_id}"

    @staticmethod
    def invoice(record_id: uuid.UUID) -> str:
        return f"waybill-invoice-{record_id}"

    @staticmethod
    def line(record_id: uuid.UUID, line_no: int) -> str:
        return f"waybill-invoice-{record_id}-line-{line_no}"

    @staticmethod
    def finalize(record_id: uuid.UUID) -> str:
        return f"waybill-invoice-{record_id}-finalize"


@dataclass(frozen=True)
class Invoice:
    id: str
    status: str
    total: int
    currency: str


def _invoice(obj: Any) -> Invoice:
    return Invoice(id=obj["id"], status=obj["status"], total=int(obj["total"]),
                   currency=str(obj["currency"]))


class StripeGateway:
    """The Stripe calls the sync makes, each with its idempotency key."""

    def __init__(self, secret_key: str, *, api_base: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        base_addresses: dict[str, str] = {"api": api_base} if api_base else {}
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> StripeGateway | None:
        """None when STRIPE_SECRET_KEY is unset: Stripe is off and nothing calls it."""
        if not settings.stripe_secret_key:
            return None
        return cls(settings.stripe_secret_key, api_base=settings.stripe_api_base, timeout=timeout)

    def create_customer(self, project_id: uuid.UUID) -> str:
        customer = self.client.v1.customers.create(
            {"description": f"Waybill project {project_id}",
             "metadata": {"waybill_project_id": str(project_id)}},
            {"idempotency_key": keys.customer(project_id)})
        return str(customer["id"])

    def create_invoice(self, *, customer_id: str, project_id: uuid.UUID, record_id: uuid.UUID,
                       period: str, currency: str) -> Invoice:
        # auto_advance off until every item is attached: Stripe would otherwise
        # finalize a draft on its own about an hour after creation, even a partial one.
        created = self.client.v1.invoices.create(
            {"customer": customer_id, "currency": currency, "auto_advance": False,
             "collection_method": "charge_automatically",
             "pending_invoice_items_behavior": "exclude",
             "description": f"Waybill usage {period}",
             "metadata": {"waybill_project_id": str(project_id),
                          "waybill_record_id": str(record_id), "waybill_period": period}},
            {"idempotency_key": keys.invoice(record_id)})
        return _invoice(created)

    def retrieve_invoice(self, invoice_id: str) -> Invoice:
        return _invoice(self.client.v1.invoices.retrieve(invoice_id))

    def invoice_line_numbers(self, invoice_id: str) -> set[int]:
        """Waybill line numbers already on the invoice (from each item's metadata)."""
        found: set[int] = set()
        page = self.client.v1.invoices.line_items.list(invoice_id, {"limit": 100})
        for line in page.auto_paging_iter():
            number = (line.to_dict().get("metadata") or {}).get("waybill_line_no")
            if number is not None:
                found.add(int(number))
        return found

    def add_line(self, *, customer_id: str, invoice_id: str, record_id: uuid.UUID, line_no: int,
                 amount_cents: int, currency: str, description: str) -> str:
        item = self.client.v1.invoice_items.create(
            {"customer": customer_id, "invoice": invoice_id, "amount": amount_cents,
             "currency": currency, "description": description[:500],
             "metadata": {"waybill_record_id": str(record_id), "waybill_line_no": str(line_no)}},
            {"idempotency_key": keys.line(record_id, line_no)})
        return str(item["id"])

    def finalize_invoice(self, invoice_id: str, record_id: uuid.UUID) -> Invoice:
        # auto_advance on from here: Stripe collects (charges, retries, dunning).
        return _invoice(self.client.v1.invoices.finalize_invoice(
            invoice_id, {"auto_advance": True}, {"idempotency_key": keys.finalize(record_id)}))
