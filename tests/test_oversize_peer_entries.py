"""A peer's validly signed event too long for a tlog-tiles entry bundle: applied, named, counted, never a 500.

A credex origin refuses to sign an event over 65,535 bytes (``EntryTooLarge``), so an
origin that signs one broke the protocol. Refusing it would stall that origin's log at
that seq for good, on every node; so the event is applied like any authentic event, the
log goes on past it, and the receiving node raises an ``entry.oversize`` alarm naming the
origin and seq (without freezing the origin) and counts it. Its tile server keeps serving
the hash tiles, the checkpoint and every entry bundle that does not hold it, and answers
the one that does with 501 and the seq, never 500.
"""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaProducer

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.envelope import seal
from credex.crypto.keys import SigningKey
from credex.crypto.tiles import MAX_ENTRY
from credex.node.chain import AlarmKind
from credex.node.chain.alarms import list_alarms
from credex.node.config import events_topic
from credex.node.runtime import Node
from credex.v1 import event_pb2

from .conftest import TestFederation, eventually
from .forgery import event_payload
from .test_tile_http import client

NATIONAL = Profile.load("national")


def oversize_payload(origin: str, seq: int) -> bytes:
    """An event whose penalty facts alone are longer than any tlog-tiles entry may be."""
    event = event_pb2.Event.FromString(event_payload(origin, seq))
    event.record.penalty.facts = "违" * (MAX_ENTRY // 3 + 1000)  # three bytes each in UTF-8
    return event.SerializeToString(deterministic=True)


async def _contiguous(node: Node, origin: str, seq: int) -> bool:
    return (await node.status()).contiguous_by_origin.get(origin, 0) >= seq


async def test_a_validly_signed_oversize_peer_event_is_applied_alarmed_counted_and_its_bundle_answered_501(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    receiver = await federation.start_node("320000")
    sample = tmp_path / "penalties.csv"
    synth.write(sample, synth.SynthSpec(region="310000", rows=3, bad_share=0.0))
    [report] = await publisher.ingest([sample], NATIONAL)
    assert report.new == 3
    await eventually(lambda: _contiguous(receiver, "310000", 3))

    # 310000's own key signs what a credex origin never would: seq 4 too long for a bundle, then seq 5.
    key = SigningKey.load(federation.layout.member_dir("310000") / "keys")
    oversize = seal(key, oversize_payload("310000", 4)).SerializeToString()
    after = seal(key, event_payload("310000", 5)).SerializeToString()
    assert len(oversize) > MAX_ENTRY
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for value in (oversize, after):
            await producer.send_and_wait(events_topic("310000"), value=value, key=b"x")
    finally:
        await producer.stop()

    # Applied, and the log goes on past it: not frozen, not stalled.
    await eventually(lambda: _contiguous(receiver, "310000", 5))
    status = await receiver.status()
    counters = status.intake_counters["310000"]
    assert counters["applied"] == 5 and counters["oversize"] == 1
    assert not any(k.startswith("rejected:") for k in counters)
    assert "310000" not in receiver.alarms.frozen
    assert receiver.pool is not None
    async with receiver.pool.acquire() as conn:
        held = bytes(await conn.fetchval("SELECT envelope FROM events WHERE origin = '310000' AND seq = 4"))
        alarms = [a for a in await list_alarms(conn) if a.kind == AlarmKind.ENTRY_OVERSIZE]
    assert held == oversize
    [alarm] = alarms
    assert alarm.origin == "310000" and alarm.evidence["seq"] == 4 and alarm.evidence["count"] == 1
    assert "at seq 4" in alarm.message and "310000 broke the protocol" in alarm.message

    # The same event again (a replay) neither counts nor alarms twice.
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(events_topic("310000"), value=oversize, key=b"x")
    finally:
        await producer.stop()

    async def replayed() -> bool:
        return (await receiver.status()).intake_counters["310000"].get("replay", 0) >= 1

    await eventually(replayed)
    assert (await receiver.status()).intake_counters["310000"]["oversize"] == 1
    async with receiver.pool.acquire() as conn:
        assert len([a for a in await list_alarms(conn) if a.kind == AlarmKind.ENTRY_OVERSIZE]) == 1

    async def agreed_checkpoint() -> bool:
        return await receiver.keeper.latest("310000") is not None

    await eventually(agreed_checkpoint)  # 310000's own, of the 3 events it signed
    async with client(federation, receiver, "330000") as http:
        assert (await http.get("/310000/tile/0/000.p/5")).status_code == 200  # hashes serve
        assert (await http.get("/310000/checkpoint")).status_code == 200
        narrower = await http.get("/310000/tile/entries/000.p/3")  # a prefix without it
        assert narrower.status_code == 200 and len(narrower.content) > 0
        answer = await http.get("/310000/tile/entries/000.p/5")
    assert answer.status_code == 501
    assert answer.headers["credex-oversize-seq"] == "4"
    assert "310000's entry at seq 4 is" in answer.text and f"({MAX_ENTRY:,})" in answer.text
    assert "FetchEvents (from_seq=4)" in answer.text
