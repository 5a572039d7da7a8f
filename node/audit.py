"""The audit trail of lookups, written with group commit.

Every answer waits until its audit entry is committed: no trail, no answer. To
keep that cheap under load, entries queue up while a write is in flight and the
next write takes all of them in one COPY, so the cost per lookup falls as load
rises and the latency added is one database round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

_COLUMNS = ("at", "caller", "role", "method", "subject_id", "purpose", "answered", "status")


class AuditUnavailable(RuntimeError):
    """The audit entry could not be written, so the lookup must not be answered."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    caller: str
    role: str
    method: str
    subject_id: str
    purpose: str
    answered: int
    status: str
    at: dt.datetime

    def row(self) -> tuple[object, ...]:
        return (
            self.at,
            self.caller,
            self.role,
            self.method,
            self.subject_id,
            self.purpose,
            self.answered,
            self.status,
        )


class AuditLog:
    def __init__(self, pool: asyncpg.Pool, max_batch: int = 2000, linger: float = 0.002) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.linger = linger
        self._last_write = 0.0
        self._queue: asyncio.Queue[tuple[AuditEntry, asyncio.Future[None]]] = asyncio.Queue(maxsize=20000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(AuditUnavailable("node is shutting down"))

    def _busy(self) -> bool:
        """A write finished within the last few lingers: more lookups are probably arriving."""
        return time.monotonic() - self._last_write < 5 * self.linger

    async def record(self, entry: AuditEntry) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((entry, future))  # a full queue pushes back on callers
        await future

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Under load, wait a moment for company: one commit for many lookups
            # costs the database far less than one each.
            if self._queue.qsize() or self._busy():
                await asyncio.sleep(self.linger)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._last_write = time.monotonic()
            try:
                async with self.pool.acquire() as conn:
                    await conn.copy_records_to_table("audit_log", records=[e.row() for e, _ in batch], columns=_COLUMNS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.error("audit log write failed: %s", exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(AuditUnavailable(f"audit log unavailable: {exc}"))
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
