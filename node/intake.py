"""Intake: taking in the peers' logs, from Kafka or from gRPC sync, through one door.

Every envelope is verified against the trust bundle for the origin whose log it
claims to belong to (the topic, or the origin asked for over gRPC) before its
payload is parsed. What fails is counted, logged and kept as evidence, never
stored as data. What passes is applied idempotently in one transaction per
batch; Kafka offsets are committed only after that transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from credex.crypto.trust import EventRejected, EventVerifier
from credex.node import bus, state
from credex.node.alarms import Alarms
from credex.node.checkpoints import CheckpointKeeper
from credex.node.config import NodeConfig, checkpoints_topic, events_topic
from credex.node.ingest import ANALYZE_AFTER
from credex.node.metrics import METRICS

log = logging.getLogger(__name__)

GapListener = Callable[[str, int, int], None]
_WORKERS = max(1, os.cpu_count() or 1)
_PARALLEL_FROM = 64  # below this, threads cost more than they save


@dataclass
class AcceptResult:
    origin: str
    applied: int = 0
    replays: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    held: int = 0  # not applied: an alarm on the origin is open
    contiguous_seq: int = 0
    max_seq: int = 0

    @property
    def has_gap(self) -> bool:
        return self.max_seq > self.contiguous_seq


@dataclass(frozen=True, slots=True)
class _Rejection:
    reason: str
    message: str
    key_id: str
    evidence: bytes


@dataclass
class Checked:
    """A batch after verification: events ready to store, and what was rejected."""

    origin: str
    events: list[state.StoredEvent] = field(default_factory=list)
    rejections: list[_Rejection] = field(default_factory=list)


class Intake:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        verifier: EventVerifier,
        alarms: Alarms,
        keeper: CheckpointKeeper,
    ) -> None:
        self.config = config
        self.pool = pool
        self.verifier = verifier
        self.alarms = alarms
        self.keeper = keeper
        self.me = config.origin
        self._gap_listeners: list[GapListener] = []
        self._since_analyze = 0
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def on_gap(self, listener: GapListener) -> None:
        self._gap_listeners.append(listener)

    def verify(self, origin: str, messages: Sequence[bytes]) -> Checked:
        checked = Checked(origin)
        for raw in messages:
            try:
                verified = self.verifier.verify_bytes(raw, origin)
            except EventRejected as exc:
                checked.rejections.append(_Rejection(exc.reason, exc.message, exc.key_id, raw[:65536]))
                continue
            checked.events.append(state.StoredEvent.from_event(verified.event, verified.canonical))
        return checked

    async def check(self, origin: str, messages: Sequence[bytes]) -> Checked:
        """Verify in worker threads, one slice per core: Ed25519 verification releases the GIL."""
        if origin == self.me:
            # Our own log comes from the ledger only; a copy from outside is never applied.
            checked = Checked(origin)
            checked.rejections = [_Rejection("origin.self", "an event of this node's own log", "", b"")] * len(messages)
            return checked
        if len(messages) < _PARALLEL_FROM:
            return self.verify(origin, messages)
        size = -(-len(messages) // _WORKERS)
        parts = await asyncio.gather(
            *(asyncio.to_thread(self.verify, origin, messages[i : i + size]) for i in range(0, len(messages), size))
        )
        checked = Checked(origin)
        for part in parts:
            checked.events.extend(part.events)
            checked.rejections.extend(part.rejections)
        return checked

    async def accept(self, origin: str, messages: Sequence[bytes], channel: str) -> AcceptResult:
        """Verify and apply a batch of envelopes that claim to be ``origin``'s."""
        return await self.apply(await self.check(origin, messages), channel)

    async def apply(self, checked: Checked, channel: str) -> AcceptResult:
        """Store what verified, keep evidence of what did not, in one transaction."""
        origin = checked.origin
        result = AcceptResult(origin)
        if origin in self.alarms.frozen:
            # Evidence of equivocation is open: hold everything until an operator clears it;
            # sync brings these events back afterwards.
            result.held = len(checked.events) + len(checked.rejections)
            METRICS.intake.labels(self.me, origin, "held").inc(result.held)
            log.warning("%s: %d events of %s held: an alarm on %s is open", channel, result.held, origin, origin)
            return result
        rejections = list(checked.rejections)
        async with self._locks[origin], self.pool.acquire() as conn, conn.transaction():
            outcome = await state.insert_events(conn, checked.events)
            await state.upsert_records(conn, outcome.new)
            for conflict in outcome.conflicts:
                rejections.append(
                    _Rejection(
                        "event.conflict",
                        f"{origin} seq {conflict.seq}: a different event is already held under this seq or id",
                        "",
                        conflict.envelope,
                    )
                )
            if outcome.conflicts:
                # Both versions carry the origin's valid signature: that is equivocation.
                held = await conn.fetchval(
                    "SELECT envelope FROM events WHERE origin = $1 AND seq = $2", origin, outcome.conflicts[0].seq
                )
                await self.alarms.raise_alarm(
                    conn,
                    origin,
                    "equivocation.event",
                    f"two validly signed events of {origin} claim seq {outcome.conflicts[0].seq}",
                    {
                        "seq": outcome.conflicts[0].seq,
                        "held": bytes(held or b"").hex(),
                        "received": outcome.conflicts[0].envelope.hex(),
                        "channel": channel,
                    },
                )
            if rejections:
                await conn.executemany(
                    "INSERT INTO intake_rejections (origin, channel, reason, message, key_id, evidence)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    [(origin, channel, r.reason, r.message, r.key_id, r.evidence) for r in rejections],
                )
            result.applied = len(outcome.new)
            result.replays = len(outcome.replays)
            result.rejected.update(r.reason for r in rejections)
            await state.count(conn, origin, "applied", result.applied)
            await state.count(conn, origin, "replay", result.replays)
            for reason, n in result.rejected.items():
                await state.count(conn, origin, f"rejected:{reason}", n)
            result.contiguous_seq, result.max_seq = await state.advance_progress(conn, origin)
        self._report(channel, result, rejections)
        if result.has_gap:
            for listener in self._gap_listeners:
                listener(origin, result.contiguous_seq, result.max_seq)
        if result.applied:
            await self.keeper.check(origin)
            self._since_analyze += result.applied
            if self._since_analyze >= ANALYZE_AFTER:
                # Bulk intake outruns autovacuum's statistics; stale ones make lookups scan.
                self._since_analyze = 0
                async with self.pool.acquire() as conn:
                    await conn.execute("ANALYZE records")
        return result

    def _report(self, channel: str, result: AcceptResult, rejections: list[_Rejection]) -> None:
        metric = METRICS.intake
        metric.labels(self.me, result.origin, "applied").inc(result.applied)
        metric.labels(self.me, result.origin, "replay").inc(result.replays)
        for reason, n in result.rejected.items():
            metric.labels(self.me, result.origin, f"rejected:{reason}").inc(n)
        METRICS.peer_contiguous.labels(self.me, result.origin).set(result.contiguous_seq)
        for rejection in rejections[:20]:
            log.warning(
                "%s: rejected event of %s: %s (%s)",
                channel,
                result.origin,
                rejection.message,
                rejection.reason,
            )
        if len(rejections) > 20:
            log.warning("%s: ... and %d more rejected events of %s", channel, len(rejections) - 20, result.origin)
        if result.replays:
            log.info(
                "%s: %d events of %s already held (replay or redelivery), ignored",
                channel,
                result.replays,
                result.origin,
            )

    # -- Kafka --------------------------------------------------------------------

    async def consume(self, bootstrap_servers: str, peers: Sequence[str]) -> None:
        """Consume the peers' event and checkpoint topics until cancelled, restarting after failures."""
        attempt = 0
        topics = {events_topic(p): p for p in peers} | {checkpoints_topic(p): p for p in peers}
        while True:
            try:
                await self._consume(bootstrap_servers, topics)
            except asyncio.CancelledError:
                raise
            except (bus.KafkaError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                METRICS.intake_errors.labels(self.me).inc()
                log.warning("intake: %s; restarting the consumer", exc)
                await bus.backoff(attempt)
                attempt += 1

    async def _store_and_commit(
        self,
        consumer: AIOKafkaConsumer,
        checked: list[Checked],
        notes: list[tuple[str, bytes]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        for batch in checked:
            await self.apply(batch, f"kafka:{events_topic(batch.origin)}")
        for origin, note in notes:  # after the events they may cover
            await self.keeper.receive(origin, note.decode("utf-8", "replace"), f"kafka:{checkpoints_topic(origin)}")
        await consumer.commit(offsets)

    async def _consume(self, bootstrap_servers: str, topics: dict[str, str]) -> None:
        if not topics:
            await asyncio.Event().wait()
        await bus.ensure_topics(self.config, bootstrap_servers, topics)
        consumer = AIOKafkaConsumer(
            **bus.client_kwargs(self.config, bootstrap_servers),
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            if self.config.bus.membership == "group":
                consumer.subscribe(list(topics))
            else:
                await consumer.topics()  # fetch metadata
                partitions = [
                    TopicPartition(topic, p)
                    for topic in topics
                    for p in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                consumer.assign(partitions)
            # Verifying batch N+1 overlaps with storing batch N; offsets of a batch are
            # committed only after its transaction committed.
            storing: asyncio.Task[None] | None = None
            try:
                while True:
                    batch = await consumer.getmany(
                        timeout_ms=self.config.intake.fetch_wait_ms, max_records=self.config.intake.batch_size
                    )
                    if not batch:
                        if storing is not None:
                            await storing
                            storing = None
                        continue
                    by_origin: defaultdict[str, list[bytes]] = defaultdict(list)
                    notes: list[tuple[str, bytes]] = []
                    offsets: dict[TopicPartition, int] = {}
                    for tp, messages in batch.items():
                        origin = topics[tp.topic]
                        if tp.topic == events_topic(origin):
                            by_origin[origin].extend(m.value or b"" for m in messages)
                        else:
                            notes.extend((origin, m.value or b"") for m in messages)
                        offsets[tp] = messages[-1].offset + 1
                    checked = [await self.check(origin, values) for origin, values in by_origin.items()]
                    if storing is not None:
                        await storing
                    storing = asyncio.create_task(self._store_and_commit(consumer, checked, notes, offsets))
            finally:
                if storing is not None:
                    storing.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await storing
        finally:
            await consumer.stop()
