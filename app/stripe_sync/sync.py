"""The outbox worker: each finalized billing record becomes one Stripe invoice.

Contract (docs/stripe.md): for a `pending` outbox row, ensure the project's
customer, create the invoice (or reuse the one already recorded), attach one
invoice item per record line (in cents; credit lines are negative items), then
finalize and compare Stripe's total with Waybill's. Each Stripe write has an
idempotency key from Waybill ids, and the invoice id is stored as soon as it is
known; on a retry the worker asks Stripe which lines the invoice already has,
so a crash between any two calls ends, after a retry, with one invoice and
exactly the right items. Failures back off exponentially; the row keeps its
attempts and last error. A total mismatch flags the row (`mismatch`) and stops.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import stripe

from app.config import Settings
from app.stripe_sync import queries
from app.stripe_sync.client import Invoice, StripeGateway

log = logging.getLogger("waybill.stripe")

LEASE = timedelta(minutes=5)
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
MAX_ATTEMPTS = 20


def backoff(attempts: int) -> timedelta:
    """Delay before attempt `attempts + 1`: 30 s, 1 min, 2 min, ... capped at 6 h."""
    return min(BACKOFF_CAP, BACKOFF_BASE * (1 << min(20, max(0, attempts - 1))))


@dataclass
class SyncReport:
    synced: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    mismatched: list[uuid.UUID] = field(default_factory=list)

    @property
    def claimed(self) -> int:
        return len(self.synced) + len(self.failed) + len(self.mismatched)


class StripeSync:
    """Runs the outbox against Stripe. Connects as the service role (waybill_app)."""

    def __init__(self, conninfo: str, gateway: StripeGateway, *, batch: int = 20) -> None:
        self.conninfo = conninfo
        self.gateway = gateway
        self.batch = batch

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        conn.execute("SET ROLE waybill_app")
        return conn

    def run_once(self, *, now: datetime | None = None, record_id: uuid.UUID | None = None) -> SyncReport:
        """Sync every due outbox row (or just `record_id`); returns what happened."""
        report = SyncReport()
        now = now or datetime.now(UTC)
        with self._connect() as conn:
            rows = conn.execute(queries.CLAIM, {"now": now, "lease": LEASE, "limit": self.batch,
                                                "record": record_id}).fetchall()
            for project_id, record, attempts, invoice_id in rows:
                assert isinstance(project_id, uuid.UUID) and isinstance(record, uuid.UUID)
                try:
                    outcome = self._sync(conn, project_id, record, invoice_id)  # type: ignore[arg-type]
                except stripe.StripeError as exc:
                    self._failed(conn, project_id, record, int(attempts), exc, now)  # type: ignore[call-overload]
                    report.failed.append(record)
                    continue
                except Exception as exc:
                    # A bug or a database hiccup: still visible on the row, still retried.
                    log.exception("stripe sync error", extra={"record_id": str(record)})
                    self._failed(conn, project_id, record, int(attempts), exc, now)  # type: ignore[call-overload]
                    report.failed.append(record)
                    continue
                (report.synced if outcome else report.mismatched).append(record)
        return report

    def _sync(self, conn: psycopg.Connection[tuple[object, ...]], project_id: uuid.UUID,
              record_id: uuid.UUID, invoice_id: str | None) -> bool:
        row = conn.execute(queries.RECORD, (project_id, record_id)).fetchone()
        assert row is not None, "outbox rows reference their record"
        _status, currency, total, period = row
        assert isinstance(currency, str) and isinstance(total, int) and isinstance(period, str)
        customer_id = self._customer(conn, project_id)
        invoice: Invoice | None = None
        if invoice_id is None:
            invoice = self.gateway.create_invoice(customer_id=customer_id, project_id=project_id,
                                                  record_id=record_id, period=period, currency=currency)
            invoice_id = invoice.id
            conn.execute(queries.SET_INVOICE, {"invoice": invoice_id, "project": project_id,
                                               "record": record_id})
            present: set[int] = set()
        else:
            invoice = self.gateway.retrieve_invoice(invoice_id)
            present = self.gateway.invoice_line_numbers(invoice_id) if invoice.status == "draft" else set()
        if invoice.status == "draft":
            for line_no, description, amount in conn.execute(queries.LINES, (project_id, record_id)):
                if line_no in present:
                    continue
                self.gateway.add_line(customer_id=customer_id, invoice_id=invoice_id, record_id=record_id,
                                      line_no=int(line_no), amount_cents=int(amount),  # type: ignore[call-overload]
                                      currency=currency, description=str(description))
            invoice = self.gateway.finalize_invoice(invoice_id, record_id)
        return self._compare(conn, project_id, record_id, invoice, total, currency)

    def _customer(self, conn: psycopg.Connection[tuple[object, ...]], project_id: uuid.UUID) -> str:
        """The project's customer, created once: lock, look, create, store, in one transaction."""
        row = conn.execute(queries.CUSTOMER, (project_id,)).fetchone()
        if row:
            return str(row[0])
        with conn.transaction():
            conn.execute(queries.LOCK_CUSTOMER, (project_id,))
            row = conn.execute(queries.CUSTOMER, (project_id,)).fetchone()
            if row:
                return str(row[0])
            customer_id = self.gateway.create_customer(project_id)
            conn.execute(queries.INSERT_CUSTOMER, (project_id, customer_id))
        log.info("stripe customer created", extra={"project_id": str(project_id),
                                                   "customer_id": customer_id})
        return customer_id

    def _compare(self, conn: psycopg.Connection[tuple[object, ...]], project_id: uuid.UUID,
                 record_id: uuid.UUID, invoice: Invoice, total: int, currency: str) -> bool:
        matches = invoice.total == total and invoice.currency.lower() == currency.lower()
        error = None if matches else (
            f"Stripe invoice {invoice.id} total {invoice.total} {invoice.currency} "
            f"differs from Waybill total {total} {currency}")
        conn.execute(queries.FINISH, {"state": "synced" if matches else "mismatch",
                                      "stripe_total": invoice.total, "error": error,
                                      "project": project_id, "record": record_id})
        if matches:
            log.info("stripe invoice synced", extra={"record_id": str(record_id), "invoice": invoice.id})
        else:
            log.error("stripe total mismatch: record flagged, not adjusted",
                      extra={"record_id": str(record_id), "detail": error})
        return matches

    def _failed(self, conn: psycopg.Connection[tuple[object, ...]], project_id: uuid.UUID,
                record_id: uuid.UUID, attempts: int, exc: Exception, now: datetime) -> None:
        message = f"{type(exc).__name__}: {getattr(exc, 'user_message', None) or exc}"[:1000]
        state = "failed" if attempts >= MAX_ATTEMPTS else "pending"
        conn.execute(queries.FAIL, {"state": state, "error": message, "next": now + backoff(attempts),
                                    "project": project_id, "record": record_id})
        log.warning("stripe sync failed; will retry" if state == "pending" else "stripe sync gave up",
                    extra={"record_id": str(record_id), "attempts": attempts, "error": message})


class SyncLoop:
    """Runs `StripeSync.run_once` every `interval` seconds in a thread, until stopped."""

    def __init__(self, sync: StripeSync, interval: float = 5.0) -> None:
        self.sync = sync
        self.interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stripe-sync")

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.sync.run_once)
            except Exception:  # noqa: BLE001 - the loop must outlive a bad round; the row shows the error
                log.exception("stripe sync round failed")
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def start_stripe_sync(settings: Settings, conninfo: str) -> SyncLoop | None:
    """The API process's sync loop (started from the app lifespan); None when Stripe is off."""
    if not settings.stripe_webhook_secret:
        log.warning("STRIPE_WEBHOOK_SECRET is not set: POST /webhooks/stripe refuses every delivery")
    gateway = StripeGateway.from_settings(settings)
    if gateway is None:
        return None
    loop = SyncLoop(StripeSync(conninfo, gateway))
    loop.start()
    log.info("stripe sync loop started", extra={"interval": loop.interval})
    return loop
