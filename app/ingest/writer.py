"""Group commit for single events: concurrent requests share one statement.

Each single-event request waits for its event to be committed, as before; while
a write is in flight, events that arrive meanwhile queue up and go together in
the next one. Under load this turns N commits (N WAL flushes) into one; with one
request at a time it adds nothing, because an idle flusher takes it at once.

A shared write that fails because of one event (an idempotency key reused for
other content) is retried event by event, so each request gets its own answer
and no event is refused for another's fault.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
from psycopg_pool import AsyncConnectionPool

from app.ingest.store import Stored, store_events
from app.ingest.validate import EventRow

FLUSHERS = 4
MAX_GROUP = 500


class EventWriter:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._pending: list[tuple[EventRow, asyncio.Future[Stored]]] = []
        self._ready = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flusher()) for _ in range(FLUSHERS)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def write(self, row: EventRow) -> Stored:
        """Store one event; returns once it is committed (or raises what storing raised)."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        async with self._ready:
            self._pending.append((row, future))
            self._ready.notify()
        return await future

    async def _flusher(self) -> None:
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: bool(self._pending))
                group = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
            await self._write_group(group)

    async def _write_group(self, group: list[tuple[EventRow, asyncio.Future[Stored]]]) -> None:
        try:
            results = await store_events(self._pool, [row for row, _ in group])
        except psycopg.Error as exc:
            if len(group) > 1 and exc.sqlstate == "WB409":
                await asyncio.gather(*(self._write_group([item]) for item in group))
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # pool timeouts, cancellation: every waiter hears of it
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), stored in zip(group, results, strict=True):
            if not future.done():
                future.set_result(stored)
