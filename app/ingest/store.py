"""Writes validated events through `waybill.ingest_events` (one statement, atomic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from psycopg_pool import AsyncConnectionPool

from app.ingest.validate import EventRow

_INSERT = "SELECT ordinal, event_id FROM waybill.ingest_events(%s::json)"
_encoder = msgspec.json.Encoder(decimal_format="number")


@dataclass(frozen=True, slots=True)
class Stored:
    event_id: str
    duplicate: bool


async def store_events(pool: AsyncConnectionPool, rows: Sequence[EventRow]) -> list[Stored]:
    """Store the rows in one statement: committed (durable) when this returns."""
    document = _encoder.encode(rows).decode()
    async with pool.connection() as conn:
        cursor = await conn.execute(_INSERT, (document,))
        taken = {ordinal: str(event_id) for ordinal, event_id in await cursor.fetchall()}
    return [Stored(event_id=taken[i], duplicate=True) if i in taken
            else Stored(event_id=row.event_id, duplicate=False) for i, row in enumerate(rows)]
