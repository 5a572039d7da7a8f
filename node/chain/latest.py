"""The latest checkpoint served of each origin, kept in memory while the store's news of checkpoints is heard.

Every proof, checkpoint answer, stream and report asks which checkpoint of an origin
is the latest this node serves; asking the store each time cost a pool connection
and a round trip per call. The answer changes only when a row of ``checkpoints``
changes, and migration 0028's trigger rings :data:`CHANNEL` with the origin on
every such change, committed, by whichever replica or task made it. So an answer
is kept while a connection listens on that channel, and forgotten when the
channel names its origin.

Three rules keep a kept answer never staler than what the store said:

- nothing is kept, and nothing is answered from memory, unless the channel is
  being listened to (until the listener is connected, and after it is lost, every
  call asks the store, as before);
- any news (and the listener's connecting) moves a generation on, and an answer
  read from the store is kept only if no news came while it was read, so a read
  that raced a change is used once and not kept;
- a task of this node that changes checkpoints calls :meth:`LatestCheckpoints.forget`
  once its transaction commits, so the node itself uses a new checkpoint at once,
  not when its own notification comes back round;
- an answer is kept :data:`KEPT_SECONDS` at most, so even a listening connection that
  died without the node noticing leaves it that far behind, not for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Generic, TypeVar

import asyncpg

from credex.node.cancellation import pause
from credex.node.store.database import RETRYABLE

log = logging.getLogger(__name__)

CHANNEL = "credex_checkpoints"  # migration 0028's trigger: payload is the origin whose checkpoints changed
RELISTEN_SECONDS = 1.0  # pause before listening again after the listener's connection failed
KEPT_ORIGINS = 1024  # a federation has a few dozen members; beyond this the memory starts afresh
KEPT_SECONDS = 5.0  # the longest an answer is used from memory: one store read per origin and period at most

T = TypeVar("T")


class Missing:
    """What :meth:`LatestCheckpoints.get` answers for an origin not kept."""


MISSING = Missing()


class LatestCheckpoints(Generic[T]):
    """Per origin, the latest checkpoint served as of a trust bundle version, while the store's news is heard."""

    def __init__(self, kept_seconds: float = KEPT_SECONDS) -> None:
        self.kept_seconds = kept_seconds
        self._kept: dict[str, tuple[int, T, float]] = {}  # origin -> (bundle version, answer, kept until)
        self._generation = 0
        self._listening = False

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def generation(self) -> int:
        """Read before asking the store; hand back to :meth:`keep` with what the store said."""
        return self._generation

    def get(self, origin: str, version: int) -> T | Missing:
        """The answer kept for ``origin`` under bundle ``version``, or :data:`MISSING`."""
        if not self._listening:
            return MISSING
        kept = self._kept.get(origin)
        if kept is None or kept[0] != version or kept[2] < time.monotonic():
            return MISSING
        return kept[1]

    def keep(self, origin: str, version: int, answer: T, generation: int) -> None:
        """Keep what the store said, unless news came since ``generation`` was read or nobody listens."""
        if not self._listening or generation != self._generation:
            return
        if len(self._kept) >= KEPT_ORIGINS and origin not in self._kept:
            self._kept.clear()
        self._kept[origin] = (version, answer, time.monotonic() + self.kept_seconds)

    def forget(self, origin: str | None = None) -> None:
        """``origin``'s checkpoints changed (None: perhaps any origin's): ask the store next time."""
        self._generation += 1
        if origin is None:
            self._kept.clear()
        else:
            self._kept.pop(origin, None)

    def _heard(self, _conn: object, _pid: int, _channel: str, origin: object) -> None:
        self.forget(str(origin))

    async def listen(self, pool: asyncpg.Pool) -> None:
        """Hear the store's news of checkpoints for as long as this runs (a supervised task of the node)."""
        while True:
            try:
                conn = await pool.acquire()
            except RETRYABLE as exc:
                log.warning("latest checkpoints: cannot listen (%s); asking the store on every call meanwhile", exc)
                await pause(RELISTEN_SECONDS)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(CHANNEL, self._heard)
                self.forget()  # whatever changed while nobody listened
                self._listening = True
                await lost.wait()
                log.warning("latest checkpoints: the listening connection was lost; listening again")
            except RETRYABLE as exc:
                log.warning("latest checkpoints: listening failed (%s); asking the store on every call meanwhile", exc)
                await pause(RELISTEN_SECONDS)
            finally:
                self._listening = False
                self.forget()
                with contextlib.suppress(*RETRYABLE):
                    await conn.remove_listener(CHANNEL, self._heard)
                await pool.release(conn)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()
