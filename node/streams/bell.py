"""The store's notification channel, listened to once for all of a service's streams.

The ledger and the checkpoint signer ring it on commit, intake after applying a peer's
events; a stream waiting for more wakes at once instead of at its next poll. Listening
takes a pool connection, so it is held only while some stream is open, and a lost
connection is replaced (streams poll every :data:`SAFETY_POLL_SECONDS` meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import asyncpg

from credex.node.cancellation import pause
from credex.node.store import NOTIFY_CHANNEL
from credex.node.store.database import RETRYABLE

log = logging.getLogger(__name__)

SAFETY_POLL_SECONDS = 5.0  # a missed notification (listener reconnecting) delays a stream at most this long


class Bell:
    """Wakes every joined stream whenever the store's channel rings."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiters: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None

    def join(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._waiters.add(wake)
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="credex-stream-bell")
        return wake

    def leave(self, wake: asyncio.Event) -> None:
        self._waiters.discard(wake)
        if not self._waiters and self._task is not None:
            self._task.cancel()
            self._task = None

    def _ring(self, *_: object) -> None:
        for wake in self._waiters:
            wake.set()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self.pool.acquire()
            except RETRYABLE as exc:
                log.warning("streams: cannot listen for new events (%s); polling meanwhile", exc)
                await pause(SAFETY_POLL_SECONDS)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._ring)
                self._ring()  # anything committed while no one listened
                await lost.wait()
            except RETRYABLE as exc:
                log.warning("streams: listening for new events failed (%s); polling meanwhile", exc)
                await pause(SAFETY_POLL_SECONDS)
            finally:
                with contextlib.suppress(*RETRYABLE):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._ring)
                await self.pool.release(conn)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()
