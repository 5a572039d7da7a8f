"""The relay: publishes this node's own log from the outbox to ``credex.<origin>.events``.

Events are read in sequence order above the outbox watermark, sent keyed by
subject (so one subject's events stay in order within a partition), and the
watermark moves only after the broker acknowledged every event of the batch. A
crash in between publishes some events twice; intake treats that as a replay.
One relay per origin publishes at a time, chosen by a PostgreSQL advisory lock,
so replicas of a node can all run one.

Only events that ``bus.may_cross_bus`` allows go out with their content; for every
other event (government-shared, restricted, about a natural person) the relay
publishes a withheld notice in its place — no payload, no key, no subject — so
peers learn at once that the seq exists and fetch it over mutual-TLS gRPC. Every
seq still gets one message, so the watermark, the checkpoints that follow it and
the check that the broker kept its log work the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from credex.node import kafka as bus
from credex.node.cancellation import pause, wait_for_event
from credex.node.config import NodeConfig, checkpoints_topic
from credex.node.metrics import METRICS
from credex.node.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=65536)
def _partition(subject: str, count: int) -> int:
    """Kafka's default partitioner for a key: positive murmur2 modulo the partition count."""
    return int(murmur2(subject.encode()) & 0x7FFFFFFF) % count


_RELAY_LOCK = 0x72656C61  # "rela"


class Relay:
    def __init__(self, config: NodeConfig, pool: asyncpg.Pool, bootstrap_servers: str) -> None:
        self.config = config
        self.pool = pool
        self.bootstrap_servers = bootstrap_servers
        self.origin = config.origin
        self.topic = config.topic
        self.checkpoint_topic = checkpoints_topic(config.origin)
        self._wakeup = asyncio.Event()

    def wake(self, *_: Any) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._run_as_leader()
            except asyncio.CancelledError:
                raise
            except bus.RETRYABLE as exc:
                METRICS.relay_errors.labels(self.origin).inc()
                log.warning("relay: %s; retrying", exc)
                await bus.backoff(attempt)
                attempt += 1

    async def _run_as_leader(self) -> None:
        conn = await self.pool.acquire()
        try:
            lock = "SELECT pg_try_advisory_lock($1, hashtext($2))"
            while not await conn.fetchval(lock, _RELAY_LOCK, self.origin):
                await pause(2.0)  # another replica publishes
            await conn.add_listener(NOTIFY_CHANNEL, self.wake)
            producer = AIOKafkaProducer(
                **bus.client_kwargs(self.config, self.bootstrap_servers),
                acks="all",
                enable_idempotence=False,
                linger_ms=5,
                max_batch_size=512 * 1024,
                request_timeout_ms=15000,
            )
            try:
                await producer.start()  # inside the try: a start cut short still closes what it opened
                warning = bus.plaintext_warning(self.config, self.bootstrap_servers)
                if warning:
                    log.warning("relay: %s", warning)
                await bus.ensure_topics(self.config, self.bootstrap_servers, [self.topic, self.checkpoint_topic])
                checked_at = 0.0
                while True:
                    if time.monotonic() - checked_at >= self.config.relay.broker_check_seconds:
                        await self._check_broker()
                        checked_at = time.monotonic()
                    sent = await self._publish_batch(producer)
                    if sent == 0:
                        await self._publish_checkpoints(producer)
                        self._wakeup.clear()
                        await wait_for_event(self._wakeup, self.config.relay.idle_poll_seconds)
            finally:
                await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(NOTIFY_CHANNEL, self.wake)
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _RELAY_LOCK, self.origin)
            await self.pool.release(conn)

    def _message(self, row: asyncpg.Record, count: int) -> tuple[int, dict[str, Any], bool]:
        """The partition and message for one event, and whether it is a withheld notice.

        A notice goes to a partition chosen by its seq, not by its subject: the
        subject of a withheld event must not show even in the choice of partition.
        """
        envelope = bytes(row["envelope"])
        event_id = str(row["event_id"])
        if not bus.envelope_may_cross_bus(envelope):
            notice = {
                "key": None,
                "value": None,
                "timestamp": None,
                "headers": bus.withheld_notice_headers(self.origin, row["seq"], event_id),
            }
            return int(row["seq"]) % count, notice, True
        subject = row["subject_id"]
        message = {
            "key": subject.encode(),
            "value": envelope,
            "timestamp": None,
            "headers": bus.cloudevent_headers(
                self.origin, row["seq"], event_id, row["event_type"], subject, row["recorded_at"]
            ),
        }
        return _partition(subject, count), message, False

    async def _send(self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]) -> tuple[int, int, str, int]:
        """Send rows as per-partition record batches and wait for every acknowledgement.

        Building the batches here, with the same murmur2 partitioning as Kafka's
        default partitioner, costs a fraction of one ``send`` call per message;
        each partition's batches go out in sequence order. Returns where the
        last batch landed and its first event id (the sentinel for
        ``_check_broker``), and how many events went out as withheld notices.
        """
        try:
            async with asyncio.timeout(10):
                count = len(await producer.partitions_for(self.topic))
        except TimeoutError:
            raise bus.KafkaError(f"no metadata for {self.topic}; is the topic there?") from None
        builders: dict[int, Any] = {}
        first_ids: dict[int, str] = {}
        deliveries: list[Any] = []
        sent_first_ids: list[str] = []
        withheld = 0
        for row in rows:
            partition, record, notice = self._message(row, count)
            withheld += notice
            builder = builders.get(partition)
            if builder is None or builder.append(**record) is None:
                if builder is not None:
                    deliveries.append(await producer.send_batch(builder, self.topic, partition=partition))
                    sent_first_ids.append(first_ids[partition])
                builder = builders[partition] = producer.create_batch()
                first_ids[partition] = str(row["event_id"])
                if builder.append(**record) is None:
                    raise bus.KafkaError(f"event {row['seq']} does not fit in an empty record batch")
        for partition, builder in builders.items():
            deliveries.append(await producer.send_batch(builder, self.topic, partition=partition))
            sent_first_ids.append(first_ids[partition])
        landed = await asyncio.gather(*deliveries)
        return landed[-1].partition, landed[-1].offset, sent_first_ids[-1], withheld

    async def _check_broker(self) -> None:
        """Republish everything if the broker no longer holds the newest batch it acknowledged.

        The embedded broker keeps its log in memory and loses it on a restart; a
        topic can also be deleted and recreated. Retention is told apart: it only
        removes messages below the partition's beginning offset.
        """
        async with self.pool.acquire() as conn:
            sentinel = await conn.fetchrow(
                "SELECT published_seq, sentinel_partition, sentinel_offset, sentinel_event_id FROM relay_outbox"
                " WHERE origin = $1",
                self.origin,
            )
        # A broker that lost its log lost its topics too; put them back before anything else.
        await bus.ensure_topics(self.config, self.bootstrap_servers, [self.topic, self.checkpoint_topic])
        if sentinel is None or sentinel["sentinel_event_id"] is None:
            return
        held = await bus.message_id_at(
            self.config, self.bootstrap_servers, self.topic, sentinel["sentinel_partition"], sentinel["sentinel_offset"]
        )
        if held == sentinel["sentinel_event_id"] or held == bus.RETAINED_AWAY:
            return
        async with self.pool.acquire() as conn:
            log.warning(
                "relay: %s no longer holds event %s at partition %d offset %d (published through seq %d):"
                " the broker lost its log; republishing",
                self.topic,
                sentinel["sentinel_event_id"],
                sentinel["sentinel_partition"],
                sentinel["sentinel_offset"],
                sentinel["published_seq"],
            )
            await conn.execute(
                "UPDATE relay_outbox SET published_seq = 0, published_checkpoint = 0, sentinel_event_id = NULL"
                " WHERE origin = $1",
                self.origin,
            )
        METRICS.relay_errors.labels(self.origin).inc()

    async def _publish_checkpoints(self, producer: AIOKafkaProducer) -> None:
        """Publish our signed checkpoints once the events they cover are on the broker."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT published_seq, published_checkpoint FROM relay_outbox WHERE origin = $1", self.origin
            )
            if row is None:
                return
            pending = await conn.fetch(
                "SELECT size, note, first_seen FROM checkpoints WHERE origin = $1 AND state = 'own'"
                " AND size > $2 AND size <= $3 ORDER BY size",
                self.origin,
                row["published_checkpoint"],
                row["published_seq"],
            )
        if not pending:
            return
        for checkpoint in pending:
            await producer.send_and_wait(
                self.checkpoint_topic,
                value=checkpoint["note"].encode(),
                key=self.origin.encode(),
                headers=bus.checkpoint_headers(self.origin, checkpoint["size"], checkpoint["first_seen"]),
            )
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE relay_outbox SET published_checkpoint = $2 WHERE origin = $1", self.origin, pending[-1]["size"]
            )

    async def _publish_batch(self, producer: AIOKafkaProducer) -> int:
        async with self.pool.acquire() as conn:
            # Read first: an idle relay polls this row every few seconds, and an upsert would
            # write (and leave a dead tuple) on every poll.
            published = await conn.fetchval("SELECT published_seq FROM relay_outbox WHERE origin = $1", self.origin)
            if published is None:
                published = await conn.fetchval(
                    "INSERT INTO relay_outbox (origin) VALUES ($1)"
                    " ON CONFLICT (origin) DO UPDATE SET origin = EXCLUDED.origin RETURNING published_seq",
                    self.origin,
                )
            rows = await conn.fetch(
                "SELECT seq, event_id, event_type, subject_id, envelope, recorded_at FROM events"
                " WHERE origin = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                self.origin,
                published,
                self.config.relay.batch_size,
            )
        if not rows:
            return 0
        partition, offset, event_id, withheld = await self._send(producer, rows)
        last = int(rows[-1]["seq"])
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE relay_outbox SET published_seq = $2, published_at = now(), sentinel_partition = $3,"
                " sentinel_offset = $4, sentinel_event_id = $5 WHERE origin = $1 AND published_seq < $2",
                self.origin,
                last,
                partition,
                offset,
                event_id,
            )
        METRICS.events_published.labels(self.origin).inc(len(rows) - withheld)
        METRICS.events_withheld.labels(self.origin).inc(withheld)
        return len(rows)
