"""The Litestar application: `create_app(settings=None, *, pool=None)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from psycopg_pool import AsyncConnectionPool

from app.billing.controller import routers as billing_routers
from app.config import Settings
from app.db.pool import make_pool
from app.errors import WaybillError, handle_http_exception, handle_unexpected, handle_waybill_error
from app.health import health, ready
from app.ingest.controller import router as ingest_router
from app.ingest.writer import EventWriter
from app.observability import configure_logging, metrics, request_logging
from app.projects.controller import router as projects_router
from app.stripe_sync.sync import start_stripe_sync
from app.stripe_sync.webhooks import router as stripe_router
from app.usage.controller import router as usage_router

log = logging.getLogger("waybill")


def create_app(settings: Settings | None = None, *, pool: AsyncConnectionPool | None = None,
               database_url: str | None = None) -> Litestar:
    """Build the service. `pool` lets a caller (tests) own the pool's lifetime."""
    if settings is None:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
    url = database_url or settings.database_url
    owns_pool = pool is None
    if pool is None:
        if not url:
            raise ValueError("no database: set DATABASE_URL (or use `waybill dev`)")
        pool = make_pool(settings, url)
    the_pool = pool

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not settings.internal_api_key:
            log.warning("INTERNAL_API_KEY is not set: internal endpoints refuse every call")
        if not settings.stripe_secret_key:
            log.warning("STRIPE_SECRET_KEY is not set: Stripe is off (no invoices sent)")
        if owns_pool:
            await the_pool.open(wait=False)
        writer = EventWriter(the_pool)
        app.state.writer = writer
        writer.start()
        # Stripe sync (issue #6): the outbox worker loop, only when Stripe is configured.
        stripe_loop = start_stripe_sync(settings, str(the_pool.conninfo))
        try:
            yield
        finally:
            if stripe_loop is not None:
                await stripe_loop.stop()
            await writer.stop()
            if owns_pool:
                await the_pool.close()

    return Litestar(
        route_handlers=[health, ready, metrics, ingest_router, projects_router, *billing_routers,
                        usage_router,
                        stripe_router],  # Stripe webhooks (issue #6)
        exception_handlers={
            WaybillError: handle_waybill_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        middleware=[request_logging],
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Waybill", version="0.1.0", path="/schema"),
        state=State({"settings": settings, "pool": the_pool}),
        logging_config=None,  # the CLI configures JSON logging
        debug=False,
    )
