"""Damaged or forged events on a topic are rejected, counted, logged and never stored as data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.envelope import seal
from credex.crypto.keys import SigningKey
from credex.node.config import events_topic
from credex.node.runtime import Node
from credex.v1 import event_pb2

from .conftest import TestFederation, eventually
from .forgery import event_payload

NATIONAL = Profile.load("national")


async def counters(node: Node, origin: str) -> dict[str, int]:
    return (await node.status()).intake_counters.get(origin, {})


async def test_damaged_and_forged_events_are_rejected_and_the_consumer_keeps_going(
    federation: TestFederation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await federation.start_node("310000")
    receiver = await federation.start_node("320000")
    first = tmp_path / "first.csv"
    synth.write(first, synth.SynthSpec(region="310000", rows=20, bad_share=0.0))
    [report] = await publisher.ingest([first], NATIONAL)
    await eventually(lambda: _applied(receiver, report.new))

    assert publisher.pool is not None
    async with publisher.pool.acquire() as conn:
        genuine = bytes(await conn.fetchval("SELECT envelope FROM events WHERE origin = '310000' AND seq = 1"))
    flipped_envelope = event_pb2.Envelope.FromString(genuine)
    flipped_envelope.payload = (
        flipped_envelope.payload[:20] + bytes([flipped_envelope.payload[20] ^ 1]) + (flipped_envelope.payload[21:])
    )
    own_key = SigningKey.load(federation.layout.member_dir("310000") / "keys")
    other_key = SigningKey.load(federation.layout.member_dir("330000") / "keys")
    damaged = {
        "signature.invalid": flipped_envelope.SerializeToString(),
        "key.unknown": seal(SigningKey.generate(), event_payload("310000", 9001)).SerializeToString(),
        "key.other_origin": seal(other_key, event_payload("310000", 9002)).SerializeToString(),
        "origin.mismatch": seal(own_key, event_payload("330000", 9003)).SerializeToString(),
        "envelope.malformed": b"\xff\xfe not a protobuf envelope",
    }
    caplog.set_level(logging.WARNING, logger="credex.node.intake.peer_events")
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers)
    await producer.start()
    try:
        for value in damaged.values():
            await producer.send_and_wait(events_topic("310000"), value=value, key=b"x")
        await producer.send_and_wait(events_topic("310000"), value=genuine, key=b"x")  # a replay
    finally:
        await producer.stop()

    async def all_counted() -> dict[str, int] | None:
        seen = await counters(receiver, "310000")
        wanted = {f"rejected:{reason}" for reason in damaged}
        return seen if wanted <= seen.keys() and seen.get("replay", 0) >= 1 else None

    seen = await eventually(all_counted)
    for reason in damaged:
        assert seen[f"rejected:{reason}"] == 1
        assert reason in caplog.text

    assert receiver.pool is not None
    async with receiver.pool.acquire() as conn:
        forged = await conn.fetchval("SELECT count(*) FROM records WHERE record_id LIKE '%forged%'")
        assert forged == 0
        assert await conn.fetchval("SELECT count(*) FROM events WHERE seq > 9000") == 0
        evidence = await conn.fetch("SELECT reason, channel, evidence FROM intake_rejections ORDER BY id")
    assert {r["reason"] for r in evidence} == set(damaged)
    assert all(r["channel"] == "kafka:credex.310000.events" and r["evidence"] for r in evidence)

    # The consumer is still running: a new genuine file arrives as usual.
    second = tmp_path / "second.csv"
    synth.write(second, synth.SynthSpec(region="310000", rows=15, bad_share=0.0, first_row=1000))
    [later] = await publisher.ingest([second], NATIONAL)
    await eventually(lambda: _applied(receiver, report.new + later.new))


async def _applied(node: Node, n: int) -> bool:
    return (await counters(node, "310000")).get("applied", 0) >= n
