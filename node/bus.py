"""Kafka plumbing shared by the relay and intake: client settings, topics, CloudEvents headers.

Nothing here depends on idempotent producers or transactions (the embedded
broker has neither): delivery is at-least-once and the effect exactly-once,
because events are identified by (origin, seq) and applying one twice changes
nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from credex.node.config import NodeConfig

log = logging.getLogger(__name__)

ENVELOPE_CONTENT_TYPE = "application/vnd.credex.envelope.v1+protobuf"
CHECKPOINT_CONTENT_TYPE = "text/x.c2sp.signed-note; charset=utf-8"
_EVENT_TYPE_NAMES = {1: "upsert", 2: "correct", 3: "revoke", 4: "expire"}


def client_kwargs(config: NodeConfig, bootstrap_servers: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap_servers}
    if config.bus.security_protocol == "SSL":
        context = ssl.create_default_context(cafile=str(config.bus.ssl_cafile) if config.bus.ssl_cafile else None)
        if config.bus.ssl_certfile and config.bus.ssl_keyfile:
            context.load_cert_chain(str(config.bus.ssl_certfile), str(config.bus.ssl_keyfile))
        kwargs.update(security_protocol="SSL", ssl_context=context)
    return kwargs


async def ensure_topics(config: NodeConfig, bootstrap_servers: str, topics: Iterable[str]) -> None:
    """Create topics that do not exist yet; existing ones are left as they are."""
    if not config.bus.create_topics:
        return
    admin = AIOKafkaAdminClient(**client_kwargs(config, bootstrap_servers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            # A checkpoint topic keeps one partition: checkpoints are read in the order they were signed.
            NewTopic(t, 1 if t.endswith(".checkpoints") else config.bus.partitions, config.bus.replication_factor)
            for t in topics
            if t not in existing
        ]
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                log.info("created topic %s (%d partitions)", topic.name, config.bus.partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def cloudevent_headers(
    origin: str, seq: int, event_id: str, event_type: int, subject: str, recorded_at: dt.datetime
) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 Kafka binary-mode headers, so generic consumers can route without parsing.

    They are routing hints only: intake trusts nothing but the signed envelope.
    """
    return _headers(
        event_id,
        origin,
        f"cn.credex.record.{_EVENT_TYPE_NAMES.get(event_type, 'unknown')}.v1",
        subject,
        recorded_at,
        str(seq),
        ENVELOPE_CONTENT_TYPE,
    )


def checkpoint_headers(origin: str, size: int, signed_at: dt.datetime) -> list[tuple[str, bytes]]:
    return _headers(
        f"{origin}-checkpoint-{size}",
        origin,
        "cn.credex.checkpoint.v1",
        origin,
        signed_at,
        str(size),
        CHECKPOINT_CONTENT_TYPE,
    )


def _headers(
    ce_id: str, origin: str, ce_type: str, subject: str, time: dt.datetime, sequence: str, content_type: str
) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", f"urn:credex:origin:{origin}".encode()),
        ("ce_type", ce_type.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z").encode()),
        ("ce_sequence", sequence.encode()),
        ("content-type", content_type.encode()),
    ]


RETAINED_AWAY = "<below the beginning offset: removed by retention>"


async def message_id_at(config: NodeConfig, bootstrap_servers: str, topic: str, partition: int, offset: int) -> str:
    """The CloudEvents id of the message at (partition, offset): '' if the broker has none there.

    A fresh client each time: a long-lived one keeps metadata from before the
    topic was (re)created. Returns ``RETAINED_AWAY`` when retention removed it.
    """
    consumer = AIOKafkaConsumer(**client_kwargs(config, bootstrap_servers), enable_auto_commit=False)
    await consumer.start()
    try:
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            return ""
        where = TopicPartition(topic, partition)
        consumer.assign([where])
        beginning = (await consumer.beginning_offsets([where]))[where]
        if beginning > offset:
            return RETAINED_AWAY
        consumer.seek(where, offset)
        batch = await consumer.getmany(where, timeout_ms=2000, max_records=1)
        for message in batch.get(where, []):
            if message.offset == offset:
                return str(dict(message.headers).get("ce_id", b"").decode())
        return ""
    finally:
        await consumer.stop()


async def backoff(attempt: int, cap: float = 10.0) -> None:
    await asyncio.sleep(min(cap, 0.2 * 2 ** min(attempt, 8)))


__all__ = ["KafkaError", "backoff", "client_kwargs", "cloudevent_headers", "ensure_topics"]
