"""Sync: the repair path beside Kafka.

Every few seconds the node asks each origin (or, if it does not answer, any other
member) how far its log goes. When this node is behind and Kafka has not closed
the distance by the next probe — a node that started late, a sequence gap, a
broker that lost its log — it fetches exactly the missing stretches over
FetchEvents and passes them through the same intake as Kafka messages: they are
verified against the origin's key, so who relays them does not matter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
import grpc

from credex.crypto.trust import TrustBundle
from credex.node.config import NodeConfig
from credex.node.intake import Intake
from credex.node.metrics import METRICS
from credex.node.peers import PeerChannels
from credex.v1 import exchange_pb2, log_pb2

log = logging.getLogger(__name__)


class Sync:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        bundle: TrustBundle,
        intake: Intake,
        channels: PeerChannels,
    ) -> None:
        self.config = config
        self.pool = pool
        self.bundle = bundle
        self.intake = intake
        self.keeper = intake.keeper
        self.alarms = intake.alarms
        self.channels = channels
        # origin -> (when it was first seen behind, contiguous_seq then)
        self._behind: dict[str, tuple[float, int]] = {}
        # origin -> the largest checkpoint size seen, which the log must reach
        self._wanted: dict[str, int] = {}
        intake.on_gap(self._on_gap)
        self.keeper.on_want(self._on_want)

    def _on_want(self, origin: str, size: int) -> None:
        self._wanted[origin] = max(size, self._wanted.get(origin, 0))

    def _on_gap(self, origin: str, contiguous: int, max_seq: int) -> None:
        self._behind.setdefault(origin, (time.monotonic(), contiguous))

    def peers(self) -> list[str]:
        return [o for o in self.bundle.origins if o != self.config.origin]

    def sources(self, origin: str) -> list[str]:
        """The origin itself first, then every other member that may hold a copy."""
        first = self.bundle.member(origin)
        ordered = [first] if first else []
        ordered += [m for m in self.bundle.members if m.origin not in (origin, self.config.origin)]
        return [m.endpoint for m in ordered if m and m.endpoint]

    async def run(self) -> None:
        while True:
            await self.alarms.load()  # an operator may have cleared an alarm
            for origin in self.peers():
                if origin in self.alarms.frozen:
                    continue
                try:
                    await self.fetch_checkpoint(origin)
                    await self.sync_origin(origin)
                except asyncio.CancelledError:
                    raise
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("sync of %s: %s", origin, exc)
            await asyncio.sleep(self.config.sync.probe_seconds)

    async def sync_origin(self, origin: str) -> int:
        """Probe ``origin``'s head; fetch what is missing if Kafka does not bring it. Returns events applied.

        Kafka gets one probe interval without progress before gRPC steps in, so
        a node that is merely working through a backlog is not sent everything twice.
        """
        contiguous = await self._contiguous(origin)
        head, source = await self._probe(origin)
        head = max(head, self._wanted.get(origin, 0)) if source is not None else head
        if source is None or head <= contiguous:
            self._behind.pop(origin, None)
            return 0
        now = time.monotonic()
        since, seen = self._behind.get(origin, (now, -1))
        if contiguous != seen:  # first probe behind, or Kafka made progress: wait once more
            self._behind[origin] = (now, contiguous)
            return 0
        if now - since < self.config.sync.probe_seconds:
            return 0
        applied = await self.fetch_missing(origin, head, [source, *[s for s in self.sources(origin) if s != source]])
        self._behind.pop(origin, None)
        return applied

    async def fetch_missing(self, origin: str, head: int, sources: Sequence[str]) -> int:
        applied = 0
        for endpoint in sources:
            try:
                while True:
                    start, end = await self._first_missing(origin, head)
                    if start > head:
                        return applied
                    limit = min(self.config.sync.fetch_limit, end - start + 1)
                    response = await self._fetch(endpoint, origin, start, limit)
                    if not response.envelopes:
                        break  # this source has nothing more; try the next
                    result = await self.intake.accept(
                        origin, [e.SerializeToString() for e in response.envelopes], f"sync:{endpoint}"
                    )
                    applied += result.applied
                    METRICS.sync_fetched.labels(self.config.origin, origin).inc(len(response.envelopes))
                    if result.applied == 0:
                        break  # nothing usable from this source (all rejected or replays)
            except grpc.aio.AioRpcError as exc:
                log.info("sync of %s from %s: %s", origin, endpoint, exc.details() or exc.code().name)
        return applied

    async def fetch_checkpoint(self, origin: str) -> None:
        """Ask the origin (or, failing it, any member) for its newest checkpoint; a forged one is evidence."""
        for endpoint in self.sources(origin):
            try:
                checkpoint = await self.channels.log(endpoint).GetCheckpoint(
                    log_pb2.GetCheckpointRequest(origin=origin), timeout=self.config.sync.rpc_timeout_seconds
                )
            except grpc.aio.AioRpcError:
                continue
            outcome = await self.keeper.receive(origin, checkpoint.note, f"sync:{endpoint}")
            if not outcome.startswith("rejected"):
                return

    async def _probe(self, origin: str) -> tuple[int, str | None]:
        for endpoint in self.sources(origin):
            try:
                response = await self._fetch(endpoint, origin, 1, 0)
            except grpc.aio.AioRpcError:
                continue
            return int(response.head_seq), endpoint
        return 0, None

    async def _fetch(self, endpoint: str, origin: str, from_seq: int, limit: int) -> exchange_pb2.FetchEventsResponse:
        stub = self.channels.exchange(endpoint)
        return await stub.FetchEvents(
            exchange_pb2.FetchEventsRequest(origin=origin, from_seq=from_seq, limit=limit),
            timeout=self.config.sync.rpc_timeout_seconds,
        )

    async def _contiguous(self, origin: str) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin)
        return int(value or 0)

    async def _first_missing(self, origin: str, head: int) -> tuple[int, int]:
        """The first stretch of seqs not held: from the watermark to the next held event."""
        async with self.pool.acquire() as conn:
            contiguous = int(
                await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin) or 0
            )
            next_held = await conn.fetchval(
                "SELECT min(seq) FROM events WHERE origin = $1 AND seq > $2", origin, contiguous + 1
            )
        end = min(head, int(next_held) - 1) if next_held else head
        return contiguous + 1, end
