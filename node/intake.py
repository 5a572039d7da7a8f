"""Intake: taking in the peers' logs, from Kafka or from gRPC sync, through one door.

Every envelope is verified against the trust bundle for the origin whose log it
claims to belong to (the topic, or the origin asked for over gRPC) before its
payload is parsed. What fails is counted, logged and kept as evidence, never
stored as data. What passes is applied idempotently in one transaction per
batch; Kafka offsets are committed only after that transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from credex.crypto.trust import EventRejected, EventVerifier, VerifiedEvent
from credex.node import bus, state
from credex.node.config import NodeConfig, events_topic
from credex.node.metrics import METRICS

log = logging.getLogger(__name__)

GapListener = Callable[[str, int, int], None]


@dataclass
class AcceptResult:
    origin: str
    applied: int = 0
    replays: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
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


class Intake:
    def __init__(self, config: NodeConfig, pool: asyncpg.Pool, verifier: EventVerifier) -> None:
        self.config = config
        self.pool = pool
        self.verifier = verifier
        self.me = config.origin
        self._gap_listeners: list[GapListener] = []
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def on_gap(self, listener: GapListener) -> None:
        self._gap_listeners.append(listener)

    def verify(self, origin: str, messages: Sequence[bytes]) -> tuple[list[VerifiedEvent], list[_Rejection]]:
        verified: list[VerifiedEvent] = []
        rejected: list[_Rejection] = []
        for raw in messages:
            try:
                verified.append(self.verifier.verify_bytes(raw, origin))
            except EventRejected as exc:
                rejected.append(_Rejection(exc.reason, exc.message, exc.key_id, raw[:65536]))
        return verified, rejected

    async def accept(self, origin: str, messages: Sequence[bytes], channel: str) -> AcceptResult:
        """Verify and apply a batch of envelopes that claim to be ``origin``'s."""
        result = AcceptResult(origin)
        if origin == self.me:
            # Our own log comes from the ledger only; a copy from outside is never applied.
            result.rejected["origin.self"] += len(messages)
            log.warning("%s: ignored %d events claiming to be this node's own log", channel, len(messages))
            return result
        verified, rejections = self.verify(origin, messages)
        events = [state.StoredEvent.from_event(v.event, v.canonical) for v in verified]
        async with self._locks[origin], self.pool.acquire() as conn, conn.transaction():
            outcome = await state.insert_events(conn, events)
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
        """Consume the peers' topics until cancelled, restarting the consumer after failures."""
        attempt = 0
        topics = {events_topic(p): p for p in peers}
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
            while True:
                batch = await consumer.getmany(
                    timeout_ms=self.config.intake.fetch_wait_ms, max_records=self.config.intake.batch_size
                )
                if not batch:
                    continue
                by_origin: defaultdict[str, list[bytes]] = defaultdict(list)
                offsets: dict[TopicPartition, int] = {}
                for tp, messages in batch.items():
                    origin = topics[tp.topic]
                    by_origin[origin].extend(m.value or b"" for m in messages)
                    offsets[tp] = messages[-1].offset + 1
                for origin, values in by_origin.items():
                    await self.accept(origin, values, f"kafka:{events_topic(origin)}")
                await consumer.commit(offsets)
        finally:
            await consumer.stop()
