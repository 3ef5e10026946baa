"""Writes validated events through `waybill.ingest_events` (one statement, atomic)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from app.ingest.validate import EventRow

_INSERT = """
SELECT ordinal, event_id, duplicate FROM waybill.ingest_events(
    %s::uuid[], %s::uuid[], %s::waybill.event_type[], %s::text[], %s::text[],
    %s::timestamptz[], %s::text[], %s::uuid[], %s::uuid[], %s::numeric[], %s::numeric[],
    %s::numeric[], %s::numeric[], %s::numeric[], %s::text[]::jsonb[], %s::text[]::jsonb[],
    %s::uuid[],
    %s::text[])
"""


@dataclass(frozen=True, slots=True)
class Stored:
    event_id: uuid.UUID
    duplicate: bool


async def store_events(pool: AsyncConnectionPool, rows: Sequence[EventRow]) -> list[Stored]:
    columns = (
        [r.event_id for r in rows], [r.project_id for r in rows],
        [r.event_type for r in rows], [r.resource_type for r in rows],
        [r.resource_id for r in rows], [r.event_time for r in rows],
        [r.idempotency_key for r in rows], [r.dedupe_key for r in rows],
        [r.content_digest for r in rows], [r.replicas for r in rows],
        [r.cpu_millicores for r in rows], [r.memory_mb for r in rows],
        [r.size_gb for r in rows], [r.quantity for r in rows],
        # Already encoded by msgspec: sent as text and cast, never re-encoded.
        [r.metrics.decode() for r in rows],
        [r.metadata.decode() if r.metadata is not None else None for r in rows],
        [r.team_id for r in rows], [r.resource_name for r in rows],
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(_INSERT, columns)
        result = await cursor.fetchall()
    return [Stored(event_id=row[1], duplicate=row[2]) for row in result]
