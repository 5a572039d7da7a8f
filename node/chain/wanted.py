"""Wanted ranges: what of the peers' logs this node has learnt it lacks, waiting for sync to fetch it.

Intake and the checkpoint keeper find out that events are missing — a sequence
gap, a withheld notice, a checkpoint or a revocation root beyond the tree held —
and only *put* that here; sync only *takes* it, at its next probe — or at once for
a withheld notice, which nothing but sync can fill (it waits on :meth:`urgent`). Neither side
knows the other: intake and chain never import sync, and nothing calls back
across floors. Runtime creates one queue and hands it to all three.

The queue coalesces by (origin, why): one entry per kind of reason per origin,
the highest seq wanted, the earliest time it was first noticed. However many
messages a peer (or a forger) sends, it holds at most ``origins x len(Why)``
entries. A withheld entry also keeps the exact seqs its notices named, up to
:data:`MAX_WITHHELD_SEQS` per origin: sync fetches just those, not the stretch up to
the highest, whose other seqs a partition of the topic that lags may still be bringing
(fetching them too would be replays). Past that bound only the highest is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from credex.node.cancellation import wait_for_event

MAX_WITHHELD_SEQS = 8000  # exact withheld seqs kept per origin; beyond, sync fetches the stretch up to the highest


def stretches(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending ``seqs`` as their runs of consecutive seqs, (first, last) each: as sync asks for them and the
    audit trail names them."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


class Why(StrEnum):
    """Why events of an origin are wanted; sync treats each differently."""

    GAP = "gap"  # intake stored seqs beyond a hole: Kafka gets one probe to fill it, then gRPC does
    WITHHELD = "withheld"  # a notice says the seq exists but never crosses the bus: fetch at once
    CHECKPOINT = "checkpoint"  # a signed checkpoint claims more than the tree held: fetch up to it
    REVOCATION = "revocation"  # a revocation gives the root at a position beyond the tree held


@dataclass(frozen=True, slots=True)
class Wanted:
    """Events of ``origin`` up to ``upto`` are wanted, for reason ``why``."""

    origin: str
    upto: int
    why: Why
    held: int = 0  # how far the origin's log was held without a gap when this was noticed
    noticed: float = 0.0  # time.monotonic() when first noticed
    # WITHHELD: the exact seqs announced, when they are few enough to keep; None: every seq up to ``upto``
    seqs: frozenset[int] | None = None

    def merged(self, later: Wanted) -> Wanted:
        """This and ``later`` (of the same origin and why) as one: the highest seq, when first noticed kept,
        the exact seqs of both while each has them and they stay within :data:`MAX_WITHHELD_SEQS`."""
        seqs = None if self.seqs is None or later.seqs is None else self.seqs | later.seqs
        return replace(self, upto=max(self.upto, later.upto), seqs=_bounded(seqs))


def _bounded(seqs: frozenset[int] | None) -> frozenset[int] | None:
    return seqs if seqs is None or len(seqs) <= MAX_WITHHELD_SEQS else None


class WantedRanges:
    """The one queue between the floors that notice missing events and sync, which fetches them."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Why], Wanted] = {}
        self._urgent = asyncio.Event()  # set when something only sync can bring is wanted

    def put(self, origin: str, upto: int, why: Why, held: int = 0, seqs: Iterable[int] | None = None) -> None:
        """Say that ``origin``'s log is wanted up to ``upto`` (with a withheld notice: exactly ``seqs``);
        merged with what is already waiting."""
        key = (origin, why)
        exact = _bounded(frozenset(seqs)) if seqs is not None and why is Why.WITHHELD else None
        wanted = Wanted(origin, upto, why, held, time.monotonic(), exact)
        waiting = self._entries.get(key)
        self._entries[key] = wanted if waiting is None else waiting.merged(wanted)
        if why is Why.WITHHELD:
            self._urgent.set()

    async def urgent(self, timeout: float) -> None:
        """Return after ``timeout`` seconds, or sooner once a withheld seq is wanted (Kafka will not bring it)."""
        await wait_for_event(self._urgent, timeout)
        self._urgent.clear()

    def take(self) -> list[Wanted]:
        """Everything put since the last take, oldest first; the queue is empty afterwards."""
        taken = sorted(self._entries.values(), key=lambda w: w.noticed)
        self._entries.clear()
        return taken

    def __len__(self) -> int:
        return len(self._entries)
