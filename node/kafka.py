"""Kafka plumbing shared by the relay and intake: client settings, topics, CloudEvents headers,
and the rule of what may cross the bus at all.

Nothing here depends on idempotent producers or transactions (the embedded
broker has neither): delivery is at-least-once and the effect exactly-once,
because events are identified by (origin, seq) and applying one twice changes
nothing.

Confidentiality: whoever can read a topic reads every message on it (on the
embedded broker, any local user; on a production cluster, every principal granted
read). So only events of public records about legal entities go on the bus with
their content (``may_cross_bus``). Every other event
is announced by a *withheld notice* — the origin, the seq and the event id, no
payload, no key, no subject — and peers fetch it over mutual-TLS gRPC
(``FetchEvents``, peers only), where the origin's signature is checked as for any
event. A notice is an unsigned hint that seq N exists; it is never evidence.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code
from google.protobuf.message import DecodeError

from credex.crypto.tls import client_context
from credex.domain.audience import PUBLIC_ROLE, kind_shown_to
from credex.node.cancellation import pause, raise_if_cancelling
from credex.node.config import NodeConfig
from credex.node.store.database import RETRYABLE as DATABASE_RETRYABLE
from credex.v1 import event_pb2, record_pb2

log = logging.getLogger(__name__)

# What the relay's and intake's loops outlive by reconnecting after a pause: the bus or the database went away.
RETRYABLE: tuple[type[BaseException], ...] = (KafkaError, *DATABASE_RETRYABLE)

ENVELOPE_CONTENT_TYPE = "application/vnd.credex.envelope.v1+protobuf"
CHECKPOINT_CONTENT_TYPE = "text/x.c2sp.signed-note; charset=utf-8"
WITHHELD_TYPE = "cn.credex.record.withheld.v1"
_MAX_SEQ = 2**63 - 1  # seqs are PostgreSQL bigints
# Subjects whose records may cross the bus when public: legal entities (法人及非法人组织).
# An individual business (个体工商户) does not: its record names its operator, a natural
# person, and nothing about natural persons goes where anyone who can read a topic reads
# it. A natural person, or a subject of unknown type, never does either (fail closed).
_BUS_SUBJECT_TYPES = frozenset({record_pb2.SUBJECT_TYPE_LEGAL_ENTITY})


def client_kwargs(config: NodeConfig, bootstrap_servers: str) -> dict[str, Any]:
    """aiokafka client settings for the configured security protocol.

    With SASL_SSL the node logs in as its own principal (``credex-<origin>`` unless
    configured), so the cluster's topic ACLs decide what it may write and read. The
    password file is read at every connect, so a rotated secret takes effect on the
    next reconnect without a restart.
    """
    bus = config.bus
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap_servers}
    if bus.security_protocol in ("SSL", "SASL_SSL"):
        context = client_context(bus.ssl_cafile, bus.ssl_certfile, bus.ssl_keyfile)
        kwargs.update(security_protocol=bus.security_protocol, ssl_context=context)
    if bus.security_protocol == "SASL_SSL":
        kwargs.update(
            sasl_mechanism=bus.sasl_mechanism,
            sasl_plain_username=bus.sasl_username or f"credex-{config.origin}",
            sasl_plain_password=sasl_password(config),
        )
    return kwargs


def sasl_password(config: NodeConfig) -> str:
    """The node's Kafka password, from CREDEX_BUS__SASL_PASSWORD or the password file."""
    if config.bus.sasl_password is not None:
        return config.bus.sasl_password.get_secret_value()
    path = config.bus.sasl_password_file
    if path is None:
        raise KafkaError("bus.security_protocol = SASL_SSL needs CREDEX_BUS__SASL_PASSWORD or bus.sasl_password_file")
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaError(
            f"cannot read the Kafka password file {path}: {exc}; mount the node's secret there"
            " or set CREDEX_BUS__SASL_PASSWORD"
        ) from None
    if not password:
        raise KafkaError(f"the Kafka password file {path} is empty; write the node's SCRAM password into it")
    return password


def plaintext_warning(config: NodeConfig, bootstrap_servers: str) -> str | None:
    """Why this bus configuration is unsafe, or None: plaintext to a broker beyond this host."""
    if config.bus.security_protocol != "PLAINTEXT":
        return None
    remote = [s for s in bootstrap_servers.split(",") if s.strip().rpartition(":")[0] not in _LOOPBACK_HOSTS]
    if not remote:
        return None
    return (
        f"the bus to {', '.join(remote)} is plaintext and unauthenticated: anyone on the network can read"
        ' the public events and write to the topics; set bus.security_protocol = "SASL_SSL" (see deploy/)'
    )


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


async def ensure_topics(config: NodeConfig, bootstrap_servers: str, topics: Iterable[str]) -> None:
    """Create topics that do not exist yet; existing ones are left as they are.

    Under topic ACLs a node may create only its own topics; a peer's topic it may
    not create is left to its owner (or the cluster's set-up) with a warning.
    """
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
            # The answer carries an error code per topic rather than raising.
            response = await admin.create_topics([topic])
            for name, code, *_ in response.topic_errors:
                error = for_code(code) if code else None
                if error is None:
                    log.info("created topic %s (%d partitions)", name, topic.num_partitions)
                elif error is TopicAuthorizationFailedError:
                    log.warning(
                        "topic %s does not exist and this node may not create it; its owner creates it"
                        " (or the cluster's set-up does, see deploy/)",
                        name,
                    )
                elif error is not TopicAlreadyExistsError:
                    log.warning("could not create topic %s: %s", name, error.__name__)
    finally:
        await admin.close()
        raise_if_cancelling()  # aiokafka's close() swallows a cancellation of its caller


def may_cross_bus(record: record_pb2.Record) -> bool:
    """Whether an event of this record may go on Kafka with its content.

    Only public records about legal entities do. Government-shared and restricted
    records, and anything about a natural person (even a public one: the pseudonym
    links a person's records across regions), move only between members over
    mutual-TLS gRPC. So do public records of individual businesses: they name the
    operator, a natural person. Nor do kinds kept from public callers whatever their level (risk
    classes, grades: domain.audience): anyone who reads the topic reads as the public.
    """
    return (
        record.sharing_level == record_pb2.SHARING_LEVEL_PUBLIC
        and kind_shown_to(record.kind, PUBLIC_ROLE)
        and record.subject.type in _BUS_SUBJECT_TYPES
        and not record.subject.person_pseudonym
    )


def envelope_may_cross_bus(envelope: bytes) -> bool:
    """``may_cross_bus`` for one of our own stored envelopes; what cannot be read stays off the bus."""
    try:
        event = event_pb2.Event.FromString(event_pb2.Envelope.FromString(envelope).payload)
    except DecodeError:
        return False
    return may_cross_bus(event.record)


def withheld_notice_headers(origin: str, seq: int, event_id: str) -> list[tuple[str, bytes]]:
    """Headers of a withheld notice: that ``origin``'s seq exists, and nothing about its content.

    The event id is a random UUID and stays, so the relay's check that the broker
    still holds what it acknowledged works the same for notices as for events.
    """
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", f"urn:credex:origin:{origin}".encode()),
        ("ce_type", WITHHELD_TYPE.encode()),
        ("ce_sequence", str(seq).encode()),
    ]


class _Message(Protocol):
    """What intake sees of a Kafka message (aiokafka's ConsumerRecord has these)."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def is_withheld_notice(message: _Message) -> bool:
    """Whether a message on an events topic is a withheld notice rather than an envelope.

    Intake skips notices instead of verifying them (they carry no envelope, so they
    would only count as rejections) and lets sync fetch the seq over gRPC now.
    """
    return _header(message, "ce_type") == WITHHELD_TYPE.encode()


def notice_seq(message: _Message) -> int:
    """The seq a withheld notice announces; 0 when the header is missing or malformed.

    A hint only (notices are unsigned): it may prompt a sync, never set how far an
    origin's log must reach.
    """
    raw = _header(message, "ce_sequence") or b""
    if not (0 < len(raw) <= 19 and raw.isdigit()):
        return 0
    seq = int(raw)
    return seq if 0 < seq <= _MAX_SEQ else 0


def _header(message: _Message, name: str) -> bytes | None:
    for key, value in message.headers or ():
        if key == name:
            return value
    return None


def _event_type_name(event_type: int) -> str:
    """The proto enum's name without its prefix, lower case: EVENT_TYPE_UPSERT -> "upsert"."""
    if event_type not in event_pb2.EventType.values() or event_type == 0:
        return "unknown"
    return event_pb2.EventType.Name(event_pb2.EventType.ValueType(event_type)).removeprefix("EVENT_TYPE_").lower()


def cloudevent_headers(
    origin: str, seq: int, event_id: str, event_type: int, subject: str, recorded_at: dt.datetime
) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 Kafka binary-mode headers, so generic consumers can route without parsing.

    They are routing hints only: intake trusts nothing but the signed envelope.
    """
    return _headers(
        event_id,
        origin,
        f"cn.credex.record.{_event_type_name(event_type)}.v1",
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
        raise_if_cancelling()  # aiokafka's close() swallows a cancellation of its caller


async def backoff(attempt: int, cap: float = 10.0) -> None:
    await pause(min(cap, 0.2 * 2 ** min(attempt, 8)))


__all__ = [
    "WITHHELD_TYPE",
    "KafkaError",
    "backoff",
    "client_kwargs",
    "cloudevent_headers",
    "ensure_topics",
    "envelope_may_cross_bus",
    "is_withheld_notice",
    "may_cross_bus",
    "notice_seq",
    "withheld_notice_headers",
]
