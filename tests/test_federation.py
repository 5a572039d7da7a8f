"""A record taken in by one region's node is answered by every other region's node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.node.embedded import EmbeddedBroker
from credex.node.runtime import Node
from credex.node.services import get_profile

from .conftest import TestFederation, eventually

NATIONAL = Profile.load("national")


def sample(tmp_path: Path, region: str, rows: int = 60, **spec: object) -> tuple[Path, synth.SynthSummary]:
    path = tmp_path / f"{region}-{rows}.csv"
    summary = synth.write(path, synth.SynthSpec(region=region, rows=rows, bad_share=0.0, **spec))  # type: ignore[arg-type]
    return path, summary


async def holds(node: Node, origin: str, count: int) -> bool:
    status = await node.status()
    return status.records_by_origin.get(origin, 0) >= count


async def test_a_record_taken_in_by_one_node_is_returned_by_every_other_node(
    federation: TestFederation, tmp_path: Path
) -> None:
    nodes = {origin: await federation.start_node(origin) for origin in federation.origins}
    path, summary = sample(tmp_path, "310000", shared_share=0.5)
    [report] = await nodes["310000"].ingest([path], NATIONAL)
    assert report.accepted == summary.rows

    for origin in ("320000", "330000"):
        await eventually(lambda origin=origin: holds(nodes[origin], "310000", report.new))

    subject = sorted(summary.shared_subjects)[0]
    for origin in ("320000", "330000"):
        subject_id, entries = await get_profile(
            f"127.0.0.1:{nodes[origin].port}",
            subject,
            federation.bundle_now(),
            purpose="test",
            tls=federation.layout.client_tls(),
        )
        assert subject_id == subject
        assert entries, f"{origin} returned no records for {subject}"
        assert all(c.entry.origin == "310000" and c.verified for c in entries)
        assert all(c.entry.record.subject.uscc == subject for c in entries)


async def test_a_node_started_after_the_others_published_ends_up_with_all_their_records(
    federation: TestFederation, tmp_path: Path
) -> None:
    early = {o: await federation.start_node(o) for o in ("310000", "320000")}
    counts = {}
    for origin, node in early.items():
        path, _ = sample(tmp_path, origin, rows=80)
        [report] = await node.ingest([path], NATIONAL)
        counts[origin] = report.new
    await eventually(lambda: _published(early))

    late = await federation.start_node("330000")
    for origin, n in counts.items():
        await eventually(lambda origin=origin, n=n: holds(late, origin, n))


async def test_a_late_node_catches_up_over_grpc_when_kafka_cannot_deliver(
    federation: TestFederation, tmp_path: Path
) -> None:
    early = await federation.start_node("310000")
    path, _ = sample(tmp_path, "310000", rows=120)
    [report] = await early.ingest([path], NATIONAL)
    await eventually(lambda: _published({"310000": early}))

    # The late node talks to a broker that has never seen 310000's log: only
    # FetchEvents over gRPC can bring it the events.
    with EmbeddedBroker(tmp_path / "other-broker") as empty_broker:
        late = await federation.start_node("320000", bus={"bootstrap_servers": empty_broker.bootstrap_servers})
        await eventually(lambda: holds(late, "310000", report.new))
        status = await late.status()
        assert status.contiguous_by_origin["310000"] == report.last_seq
        assert status.intake_counters["310000"]["applied"] == report.new
        await federation.stop_node("320000")


async def _published(nodes: dict[str, Node]) -> bool:
    for node in nodes.values():
        status = await node.status()
        if status.published < status.own_events:
            return False
    return True


async def test_events_on_the_topic_carry_cloudevents_headers_and_the_subject_key(
    federation: TestFederation, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from credex.crypto.envelope import EVENT_PAYLOAD_TYPE
    from credex.v1 import event_pb2

    node = await federation.start_node("310000")
    path, _ = sample(tmp_path, "310000", rows=5)
    [report] = await node.ingest([path], NATIONAL)
    await eventually(lambda: _published({"310000": node}))
    consumer = AIOKafkaConsumer(bootstrap_servers=federation.broker.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic("credex.310000.events") or set()
        consumer.assign([TopicPartition("credex.310000.events", p) for p in partitions])
        messages: list[Any] = []
        async with asyncio.timeout(60):  # a broker slow to answer one fetch is not a relay that published less
            while len(messages) < report.new:
                batch = await consumer.getmany(timeout_ms=2000)
                messages += [m for part in batch.values() for m in part]
    finally:
        await consumer.stop()
    for message in messages:
        headers = {k: v.decode() for k, v in message.headers}
        envelope = event_pb2.Envelope.FromString(message.value)
        event = event_pb2.Event.FromString(envelope.payload)
        assert envelope.payload_type == EVENT_PAYLOAD_TYPE
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_id"] == event.event_id
        assert headers["ce_source"] == "urn:credex:origin:310000"
        assert headers["ce_type"] == "cn.credex.record.upsert.v1"
        assert headers["ce_sequence"] == str(event.seq)
        assert headers["ce_subject"] == message.key.decode() == event.record.subject.uscc
        assert headers["content-type"] == "application/vnd.credex.envelope.v1+protobuf"
    assert sorted(int(dict(m.headers)["ce_sequence"]) for m in messages) == list(range(1, report.new + 1))
