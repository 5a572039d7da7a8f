"""Confidentiality on the bus: whoever can read a topic learns nothing that is not public.

Anyone who can reach a broker — on the embedded default, any user of the host —
can read every topic. So only events of public records about legal entities cross
Kafka with their content; government-shared and restricted records, and anything
about a natural person — a person's own records, and an individual business's
(个体工商户), which name its operator — are announced by a content-free notice and
move between members over mutual-TLS gRPC only. Confidentiality must not cost delivery: the
peers still end up holding every record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.domain import uscc as uscc_codes
from credex.node import kafka as bus
from credex.node.config import ConfigError, NodeConfig, events_topic, load_config
from credex.node.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedServiceError,
    is_loopback,
    listening_addresses,
)
from credex.node.ledger import Change
from credex.node.runtime import Node
from credex.v1 import event_pb2, record_pb2

from .conftest import TestFederation, eventually

NATIONAL = Profile.load("national")
PUBLIC, GOVERNMENT, RESTRICTED = (
    record_pb2.SHARING_LEVEL_PUBLIC,
    record_pb2.SHARING_LEVEL_GOVERNMENT,
    record_pb2.SHARING_LEVEL_RESTRICTED,
)
ENTITY, PERSON, INDIVIDUAL_BUSINESS = (
    record_pb2.SUBJECT_TYPE_LEGAL_ENTITY,
    record_pb2.SUBJECT_TYPE_NATURAL_PERSON,
    record_pb2.SUBJECT_TYPE_INDIVIDUAL_BUSINESS,
)
NOTICE_HEADERS = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_sequence"}


# -- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "subject_type", "crosses"),
    [
        (PUBLIC, ENTITY, True),
        (PUBLIC, INDIVIDUAL_BUSINESS, False),
        (PUBLIC, PERSON, False),
        (PUBLIC, record_pb2.SUBJECT_TYPE_UNSPECIFIED, False),
        (GOVERNMENT, ENTITY, False),
        (RESTRICTED, ENTITY, False),
        (GOVERNMENT, PERSON, False),
        (GOVERNMENT, INDIVIDUAL_BUSINESS, False),
        (RESTRICTED, PERSON, False),
        (record_pb2.SHARING_LEVEL_UNSPECIFIED, ENTITY, False),
    ],
)
def test_only_public_records_about_legal_entities_may_cross_the_bus(
    level: int, subject_type: int, crosses: bool
) -> None:
    record = record_pb2.Record(
        sharing_level=record_pb2.SharingLevel.ValueType(level),
        subject=record_pb2.Subject(type=record_pb2.SubjectType.ValueType(subject_type), uscc="91310000MA1FL8XQ3B"),
    )
    assert bus.may_cross_bus(record) is crosses


def test_a_record_with_a_person_pseudonym_never_crosses_whatever_its_declared_type() -> None:
    record = record_pb2.Record(
        sharing_level=PUBLIC, subject=record_pb2.Subject(type=ENTITY, person_pseudonym="psn:abc")
    )
    assert not bus.may_cross_bus(record)
    assert not bus.envelope_may_cross_bus(b"\xff not an envelope")


@dataclass
class _Message:
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_a_withheld_notice_names_only_its_origin_seq_and_event_id() -> None:
    headers = bus.withheld_notice_headers("310000", 42, "0b7e0c2e-3f7c-4d8e-9a51-5d1c2f3e4a5b")
    assert {k for k, _ in headers} == NOTICE_HEADERS
    notice = _Message(None, headers)
    assert bus.is_withheld_notice(notice) and bus.notice_seq(notice) == 42
    envelope = _Message(
        b"...", bus.cloudevent_headers("310000", 7, "id", 1, "91310000MA1FL8XQ3B", dt.datetime.now(dt.UTC))
    )
    assert not bus.is_withheld_notice(envelope)


@pytest.mark.parametrize("seq", [b"", b"0", b"-1", b"1e3", b"9" * 19, b"9" * 400, b"\x00"])
def test_a_notice_with_a_malformed_seq_announces_nothing(seq: bytes) -> None:
    notice = _Message(None, [("ce_type", bus.WITHHELD_TYPE.encode()), ("ce_sequence", seq)])
    assert bus.is_withheld_notice(notice)
    assert bus.notice_seq(notice) == 0


# -- the federation ---------------------------------------------------------------------


@dataclass
class Secrets:
    """What must never show on the bus, and how many events of the origin's log are not public."""

    strings: set[str] = field(default_factory=set)
    withheld: int = 0


def _record(node: Node, n: int, level: int, subject_type: int, rng: random.Random) -> record_pb2.Record:
    """A penalty of ``level`` on a company, on an individual business named with its operator,
    or on a natural person known only by pseudonym."""
    if subject_type == PERSON:
        assert node.pseudonymizer is not None
        subject = record_pb2.Subject(
            type=PERSON,
            person_pseudonym=node.pseudonymizer.pseudonym(synth.draw_resident_id(rng, "31")),
            name=f"欧阳保密{n:03d}",
        )
    elif subject_type == INDIVIDUAL_BUSINESS:
        subject = record_pb2.Subject(
            type=INDIVIDUAL_BUSINESS,
            uscc=uscc_codes.make("92", "310105", f"{rng.randrange(10**7, 10**8)}"),
            name=f"长宁区秘密小吃店{n:03d}",
            legal_representative=f"诸葛经营{n:03d}",  # the operator: a natural person
        )
    else:
        subject = record_pb2.Subject(
            type=ENTITY,
            uscc=uscc_codes.make("91", "310105", f"{rng.randrange(10**7, 10**8)}"),
            name=f"上海保密测试{n:03d}有限公司",
            legal_representative=f"司马机密{n:03d}",
        )
    return record_pb2.Record(
        record_id=f"310000-bus-test-{n:03d}",
        origin="310000",
        kind=record_pb2.KIND_PENALTY,
        category=record_pb2.CATEGORY_SUPERVISION,
        subject=subject,
        decision_date="2026-03-02",
        publicity=record_pb2.PublicityWindow(start="2026-03-02", end="2027-03-02", earliest_repair="2026-06-02"),
        deciding_authority=record_pb2.Authority(name="上海市长宁区市场监督管理局", uscc="11310105002425014X"),
        source_unit=record_pb2.Authority(name="上海市长宁区市场监督管理局", uscc="11310105002425014X"),
        sharing_level=record_pb2.SharingLevel.ValueType(level),
        document_number=f"沪长市监罚〔2026〕{n:03d}号",
        penalty=record_pb2.PenaltyDetails(facts=f"内部核查线索第{n:03d}号", fine_yuan="5000"),
    )


def _secrets_of(record: record_pb2.Record) -> set[str]:
    subject = record.subject
    found = {record.record_id, record.document_number, record.penalty.facts, subject.name, subject.person_pseudonym}
    found |= {subject.uscc, subject.legal_representative}
    return {s for s in found if s}


async def _append(node: Node, records: Iterable[record_pb2.Record]) -> None:
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(r, "bus-test.json", str(i)) for i, r in enumerate(records)])


async def take_in_every_kind(node: Node, tmp_path: Path) -> Secrets:
    """Records of every sharing level about companies, individual businesses and persons, public persons
    from a platform file too,
    a correction that makes a public record restricted, and the revocation of a government-shared one."""
    secrets = Secrets()
    rng = random.Random(7)
    made: dict[int, record_pb2.Record] = {}
    n = 0
    for level in (PUBLIC, GOVERNMENT, RESTRICTED):
        for subject_type in (ENTITY, INDIVIDUAL_BUSINESS, PERSON):
            for _ in range(4):
                n += 1
                made[n] = _record(node, n, level, subject_type, rng)
    await _append(node, made.values())
    for record in made.values():
        if not (record.sharing_level == PUBLIC and record.subject.type == ENTITY):
            secrets.strings |= _secrets_of(record)
            secrets.withheld += 1

    hidden = record_pb2.Record()
    hidden.CopyFrom(made[1])  # public company record, published; then made restricted by a correction
    hidden.sharing_level = RESTRICTED
    hidden.penalty.facts = "更正后仅限授权查询的内部线索"
    await _append(node, [hidden])
    secrets.strings.add(hidden.penalty.facts)
    secrets.withheld += 1

    government = next(r for r in made.values() if r.sharing_level == GOVERNMENT)
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.revoke(conn, government.record_id, "撤销")
    secrets.withheld += 1

    path = tmp_path / "310000-penalties.csv"
    synth.write(path, synth.SynthSpec(region="310000", rows=60, bad_share=0.0, person_share=0.4, seed=11))
    [report] = await node.ingest([path], NATIONAL)
    assert report.accepted == 60
    for record in await records_of(node, "310000"):
        if record.subject.type == PERSON and not record.record_id.startswith("310000-bus-test-"):
            secrets.strings |= {record.subject.person_pseudonym, record.record_id}
            secrets.withheld += 1
    return secrets


async def records_of(node: Node, origin: str) -> list[record_pb2.Record]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record FROM records WHERE origin = $1 ORDER BY record_id", origin)
    return [record_pb2.Record.FromString(bytes(r["record"])) for r in rows]


async def held(node: Node, origin: str) -> dict[str, tuple[bytes, int]]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, digest, status FROM records WHERE origin = $1", origin)
    return {r["record_id"]: (bytes(r["digest"]), r["status"]) for r in rows}


async def everything_on_the_bus(
    bootstrap_servers: str,
) -> list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]]:
    """Every message of every credex topic, read from the beginning as a client without any credentials."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith("credex.")]
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not partitions:
            return []  # no topics (yet): a broker that just lost its log
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            for tp, messages in batch.items():
                seen += [(tp.topic, m.key, m.value, dict(m.headers)) for m in messages]
        return seen
    finally:
        await consumer.stop()


async def head_of(node: Node) -> int:
    return int((await node.status()).own_events)


async def published_all(node: Node) -> bool:
    status = await node.status()
    return bool(status.own_events and status.published == status.own_events)


async def seqs_on_topic(bootstrap_servers: str, origin: str) -> dict[int, bool]:
    """seq -> whether it went out as a withheld notice, for every message on ``origin``'s events topic."""
    found: dict[int, bool] = {}
    for topic, _, value, headers in await everything_on_the_bus(bootstrap_servers):
        if topic == events_topic(origin):
            notice = headers.get("ce_type") == bus.WITHHELD_TYPE.encode()
            if notice:
                found[int(headers["ce_sequence"])] = True
            else:
                assert value is not None
                found[event_pb2.Event.FromString(event_pb2.Envelope.FromString(value).payload).seq] = False
    return found


async def test_a_reader_without_credentials_learns_nothing_restricted_or_personal_while_peers_get_everything(
    federation: TestFederation, tmp_path: Path
) -> None:
    origin = await federation.start_node("310000")
    peers = [await federation.start_node(o) for o in ("320000", "330000")]
    secrets = await take_in_every_kind(origin, tmp_path)
    head = await head_of(origin)
    await eventually(lambda: published_all(origin), timeout=60)

    # Confidentiality did not cost delivery: every peer holds every record, in the same state, over gRPC.
    expected = await held(origin, "310000")
    for peer in peers:
        await eventually(lambda peer=peer: _same(peer, expected), timeout=90)

    # A client with no credentials reads every credex topic from the beginning.
    bootstrap = federation.broker.bootstrap_servers
    messages = await everything_on_the_bus(bootstrap)
    assert messages, "nothing on the bus at all"
    raw = b"".join((key or b"") + (value or b"") + b"".join(headers.values()) for _, key, value, headers in messages)
    leaked = sorted(s for s in secrets.strings if s.encode() in raw)
    assert not leaked, f"readable on the bus: {leaked[:5]}"

    withheld = 0
    for topic, key, value, headers in messages:
        if not topic.endswith(".events"):
            continue
        if headers.get("ce_type") == bus.WITHHELD_TYPE.encode():
            withheld += 1
            assert (key, value) == (None, None) and set(headers) == NOTICE_HEADERS
            continue
        assert value is not None
        record = event_pb2.Event.FromString(event_pb2.Envelope.FromString(value).payload).record
        assert record.sharing_level == PUBLIC, record.record_id
        assert record.subject.type == ENTITY and not record.subject.person_pseudonym, record.record_id
    assert withheld >= secrets.withheld  # at least: a relay may publish a stretch twice

    # Every seq of the log is on the topic exactly as envelope or notice, so peers see no unexplained hole.
    on_topic = await seqs_on_topic(bootstrap, "310000")
    assert sorted(on_topic) == list(range(1, head + 1))
    assert sum(on_topic.values()) == secrets.withheld
    counted = REGISTRY.get_sample_value("credex_events_withheld_total", {"origin": "310000"})
    assert counted is not None and counted >= secrets.withheld


async def _same(peer: Node, expected: dict[str, tuple[bytes, int]]) -> bool:
    return await held(peer, "310000") == expected


async def test_peers_skip_withheld_notices_instead_of_counting_them_as_rejected_events(
    federation: TestFederation, tmp_path: Path
) -> None:
    origin = await federation.start_node("310000")
    peer = await federation.start_node("320000")
    rng = random.Random(3)
    await _append(origin, [_record(origin, n, RESTRICTED, PERSON if n % 2 == 0 else ENTITY, rng) for n in range(1, 21)])
    head = await head_of(origin)
    await eventually(lambda: published_all(origin))
    await eventually(lambda: _holds_to(peer, "310000", head), timeout=60)
    assert sum((await seqs_on_topic(federation.broker.bootstrap_servers, "310000")).values()) == head
    counters = (await peer.status()).intake_counters.get("310000", {})
    assert not {k: n for k, n in counters.items() if k.startswith("rejected")}, counters


async def _holds_to(node: Node, origin: str, seq: int) -> bool:
    return (await node.status()).contiguous_by_origin.get(origin, 0) >= seq


async def test_a_broker_that_lost_a_log_of_withheld_events_gets_the_notices_again(
    federation: TestFederation,
) -> None:
    """The relay's check that the broker kept what it acknowledged works when every message is a notice."""
    origin = await federation.start_node("310000")
    rng = random.Random(5)
    await _append(origin, [_record(origin, n, GOVERNMENT, ENTITY, rng) for n in range(1, 11)])
    await eventually(lambda: published_all(origin))
    bootstrap = federation.broker.bootstrap_servers
    assert sorted(await seqs_on_topic(bootstrap, "310000")) == list(range(1, 11))

    await asyncio.to_thread(federation.broker.restart)  # the memory log is gone

    async def republished() -> bool:
        return sorted(await seqs_on_topic(bootstrap, "310000")) == list(range(1, 11))

    await eventually(republished, timeout=60)


async def test_the_embedded_broker_listens_on_loopback_only(federation: TestFederation) -> None:
    broker = federation.broker
    assert broker.pid is not None
    addresses = listening_addresses(broker.pid)
    assert addresses, "no listening socket found for the broker (is /proc mounted?)"
    assert all(is_loopback(host) for host, _ in addresses), addresses
    assert ("127.0.0.1", broker.port) in addresses


@pytest.fixture
def impostor() -> Iterator[socket.socket]:
    """A plain listener on a loopback port, as another local user would open one; it never accepts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        yield listener


def _was_contacted(listener: socket.socket) -> bool:
    """Whether anyone connected: the kernel queues a connection even when nobody accepts it."""
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_the_embedded_broker_refuses_a_given_port_another_process_listens_on(
    tmp_path: Path, impostor: socket.socket
) -> None:
    taken = impostor.getsockname()[1]
    broker = EmbeddedBroker(tmp_path / "broker", port=taken)
    with pytest.raises(EmbeddedServiceError, match=rf"another process already listens on 127\.0\.0\.1:{taken}"):
        broker.start()
    assert broker.pid is None, "the broker that could not bind is stopped"
    assert not _was_contacted(impostor)


def test_an_embedded_broker_whose_chosen_port_was_taken_moves_and_never_talks_to_the_taker(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker")
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", broker.port))  # between choosing the port and starting the broker
        taker.listen()
        taker.setblocking(False)
        with broker:
            assert broker.pid is not None and broker.port != taker.getsockname()[1]
            assert ("127.0.0.1", broker.port) in listening_addresses(broker.pid)
        assert not _was_contacted(taker)


def test_embedded_postgres_takes_connections_only_through_a_socket_folder_private_to_it(
    postgres: EmbeddedPostgres,
) -> None:
    """Its connections need no password, so no TCP port, and no other user may reach the socket."""
    folder = Path(parse_qs(urlsplit(postgres.uri()).query)["host"][0])
    assert folder == postgres.directory
    assert not folder.stat().st_mode & 0o077, oct(folder.stat().st_mode)


def test_embedded_postgres_whose_socket_would_leave_its_data_folder_is_refused(tmp_path: Path) -> None:
    """A data path too long for a socket name makes embedded-postgres put the socket in a shared folder."""
    deep = tmp_path.joinpath(*["a-long-folder-name-for-a-data-dir"] * 4)
    server = EmbeddedPostgres(deep / "postgres")
    with pytest.raises(EmbeddedServiceError, match="use a shorter data_dir"):
        server.start()
    with pytest.raises(EmbeddedServiceError, match="not started"):
        server.uri()


# -- production settings ----------------------------------------------------------------


def _config(tmp_path: Path, bus_section: str, **overrides: object) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(f'origin = "310000"\n[bus]\n{bus_section}\n', encoding="utf-8")
    return load_config(path, **overrides)


def test_sasl_ssl_logs_in_as_the_nodes_own_principal_with_the_password_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "kafka.password").write_text("s3cret-from-a-mounted-secret\n")
    config = _config(
        tmp_path,
        'bootstrap_servers = "kafka:9094"\nsecurity_protocol = "SASL_SSL"\nsasl_password_file = "kafka.password"',
    )
    kwargs = bus.client_kwargs(config, config.bus.bootstrap_servers)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["ssl_context"] is not None
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"]) == ("SCRAM-SHA-512", "credex-310000")
    assert kwargs["sasl_plain_password"] == "s3cret-from-a-mounted-secret"
    assert bus.plaintext_warning(config, config.bus.bootstrap_servers) is None


def test_sasl_ssl_takes_the_password_from_the_environment_and_never_prints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDEX_BUS__SASL_PASSWORD", "from-the-environment")
    config = _config(tmp_path, 'security_protocol = "SASL_SSL"\nsasl_username = "shanghai-node"')
    kwargs = bus.client_kwargs(config, "kafka:9094")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("shanghai-node", "from-the-environment")
    assert "from-the-environment" not in repr(config)


def test_sasl_ssl_without_a_password_is_refused_with_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CREDEX_BUS__SASL_PASSWORD or bus\.sasl_password_file"):
        _config(tmp_path, 'security_protocol = "SASL_SSL"')


def test_an_unreadable_password_file_says_where_the_secret_belongs(tmp_path: Path) -> None:
    config = _config(tmp_path, 'security_protocol = "SASL_SSL"\nsasl_password_file = "missing.password"')
    with pytest.raises(bus.KafkaError, match="mount the node's secret there"):
        bus.client_kwargs(config, "kafka:9094")


def test_plaintext_to_a_broker_beyond_this_host_is_called_out() -> None:
    config = NodeConfig(origin="310000")
    assert bus.plaintext_warning(config, "127.0.0.1:9092") is None
    warning = bus.plaintext_warning(config, "127.0.0.1:9092,kafka.example:9092")
    assert warning is not None and "kafka.example:9092" in warning and "SASL_SSL" in warning
