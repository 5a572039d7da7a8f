"""Hostile messages on the bus: none can stop intake, fill the disk, or keep sync busy forever.

Anyone who can write to a peer's topic can send anything. Whatever it is, it is
counted (applied, replay, rejected or held: nothing silently dropped), its
evidence is bounded, and the messages after it are still taken in. The peers
in these tests are not running, so only Kafka intake can bring their events:
sync has no one to fetch from and cannot mask a stalled consumer.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from credex.crypto.checkpoint import Checkpoint, log_name
from credex.crypto.envelope import EVENT_PAYLOAD_TYPE, seal
from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node import kafka as bus
from credex.node.config import checkpoints_topic, events_topic
from credex.node.runtime import Node
from credex.node.store import evidence as rejections
from credex.v1 import event_pb2

from .conftest import TestFederation, eventually
from .forgery import event_payload
from .test_checkpoints import take_in
from .trust_support import add_restricted_record

OUTCOMES = ("applied", "replay", "held")


def member_key(federation: TestFederation, origin: str) -> SigningKey:
    return SigningKey.load(federation.layout.member_dir(origin) / "keys")


def genuine(federation: TestFederation, origin: str, seqs: Sequence[int]) -> list[bytes]:
    """Events of ``origin`` signed with its own key: what its relay would have published."""
    key = member_key(federation, origin)
    return [seal(key, event_payload(origin, seq)).SerializeToString() for seq in seqs]


async def produce(federation: TestFederation, topic: str, values: Sequence[bytes]) -> None:
    """Write raw messages to a topic, in order, on one partition (one key), as anyone on the bus could."""
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"hostile")
    finally:
        await producer.stop()


async def counters(node: Node, origin: str) -> dict[str, int]:
    return (await node.status()).intake_counters.get(origin, {})


def taken_in(seen: dict[str, int]) -> int:
    """Every message counted once: applied, replay, rejected (any reason) or held."""
    return sum(n for outcome, n in seen.items() if outcome in OUTCOMES or outcome.startswith("rejected:"))


async def all_counted(node: Node, origin: str, n: int) -> dict[str, int] | None:
    seen = await counters(node, origin)
    return seen if taken_in(seen) >= n else None


async def rejection_rows(node: Node, origin: str) -> list[dict[str, object]]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT reason, key_id, message, evidence, size, digest, repeats FROM intake_rejections"
            " WHERE origin = $1 ORDER BY id",
            origin,
        )
    return [dict(r) for r in rows]


async def committed_to_the_end(node: Node, bootstrap: str, topic: str) -> bool:
    """The node's consumer group has committed every message of ``topic``: nothing stalls it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=node.config.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) or 0 for tp in ends}
        return all(committed[tp] >= end for tp, end in ends.items())
    finally:
        await consumer.stop()


async def test_a_poison_message_is_counted_and_skipped_and_the_topic_goes_on(federation: TestFederation) -> None:
    receiver = await federation.start_node("320000")
    own_key = member_key(federation, "310000")
    garbage = b"\xff" * 16 + os.urandom(256 * 1024)  # not even protobuf: a varint longer than any
    hostile = [
        # No key needed: a NUL in key_id used to fail the rejection insert and stall every peer topic.
        event_pb2.Envelope(
            payload=b"x", payload_type=EVENT_PAYLOAD_TYPE, key_id="k\x00\x01ey", signature=b"s"
        ).SerializeToString(),
        event_pb2.Envelope(payload=b"x", payload_type="\x00" * 5000, key_id="k", signature=b"s").SerializeToString(),
        garbage,
        # Validly signed by the origin, but a NUL in an id the store keeps as text.
        seal(own_key, event_payload("310000", 1, record_id="310000-CF-\x00nul")).SerializeToString(),
    ]
    await produce(federation, events_topic("310000"), [*hostile, *genuine(federation, "310000", range(1, 6))])

    seen = await eventually(lambda: all_counted(receiver, "310000", len(hostile) + 5))
    assert seen.get("applied") == 5
    assert taken_in(seen) == len(hostile) + 5
    assert seen["rejected:event.unstorable"] == 1
    assert await eventually(
        lambda: committed_to_the_end(receiver, federation.broker.bootstrap_servers, events_topic("310000"))
    )

    rows = await rejection_rows(receiver, "310000")
    assert sum(int(r["repeats"]) for r in rows) == len(hostile)  # type: ignore[call-overload]
    # The sender chose that key id: the row is not grouped by it, but its message names it, escaped,
    # so an operator sees what was sent.
    assert any(r["key_id"] == "" and "k\\x00\\x01ey" in str(r["message"]) for r in rows)
    limit = receiver.config.intake.evidence_bytes
    for row in rows:
        assert len(row["evidence"]) <= limit  # type: ignore[arg-type]
        assert "\x00" not in str(row["message"]) and len(str(row["message"])) <= 600
    whole = next(r for r in rows if r["size"] == len(garbage))
    assert whole["digest"] == hashlib.sha256(garbage).digest()
    assert whole["evidence"] == garbage[:limit]


async def produce_one_by_one(federation: TestFederation, node: Node, values: Sequence[bytes]) -> None:
    """Each message taken in before the next is sent: each one its own batch, its own evidence row
    (with ``evidence_window_seconds = 0``: nothing is grouped across batches)."""
    before = taken_in(await counters(node, "310000"))
    for n, value in enumerate(values, start=1):
        await produce(federation, events_topic("310000"), [value])
        await eventually(lambda n=n: all_counted(node, "310000", before + n))


async def test_evidence_is_trimmed_to_its_budget_oldest_first_and_the_counts_stay(federation: TestFederation) -> None:
    receiver = await federation.start_node(
        "320000", intake={"evidence_max_rows": 5, "evidence_bytes": 64, "evidence_window_seconds": 0}
    )
    strangers = [SigningKey.generate() for _ in range(8)]
    await produce_one_by_one(
        federation,
        receiver,
        [seal(key, event_payload("310000", 100 + i)).SerializeToString() for i, key in enumerate(strangers)],
    )

    seen = await counters(receiver, "310000")
    assert seen["rejected:key.unknown"] == 8
    rows = await rejection_rows(receiver, "310000")
    assert len(rows) == 5  # a budget of 5 has no margin to speak of: trimmed at once
    for row, key in zip(rows, strangers[-5:], strict=True):  # the newest kept, oldest first
        assert key.key_id in str(row["message"])
    assert all(len(r["evidence"]) <= 64 for r in rows)  # type: ignore[arg-type]


async def test_evidence_is_trimmed_to_its_byte_budget(federation: TestFederation) -> None:
    receiver = await federation.start_node(
        "320000", intake={"evidence_max_bytes": 2000, "evidence_bytes": 300, "evidence_window_seconds": 0}
    )
    padded = "310000-CF-" + "x" * 1000  # each message well over the 300 bytes of evidence kept of it
    await produce_one_by_one(
        federation,
        receiver,
        [seal(SigningKey.generate(), event_payload("310000", i, padded)).SerializeToString() for i in range(1, 13)],
    )

    assert receiver.pool is not None
    async with receiver.pool.acquire() as conn:
        kept = await conn.fetchval(
            "SELECT sum(octet_length(evidence) + octet_length(message)) FROM intake_rejections WHERE origin = '310000'"
        )
        totals = await conn.fetchrow("SELECT n_rows, n_bytes FROM intake_evidence_totals WHERE origin = '310000'")
    assert 0 < kept <= rejections.ceiling(2000)  # over the budget by at most a tenth, never by 12 x 300
    assert totals is not None and totals["n_bytes"] == kept  # the running totals agree with the rows


async def test_repeated_rejections_of_one_key_are_one_row_with_a_count(federation: TestFederation) -> None:
    receiver = await federation.start_node("320000")
    outsider = SigningKey.generate()  # a key the bundle does not (or no longer) trust, used again and again
    await produce(
        federation,
        events_topic("310000"),
        [seal(outsider, event_payload("310000", seq)).SerializeToString() for seq in range(1, 61)],
    )

    seen = await eventually(lambda: all_counted(receiver, "310000", 60))
    assert seen["rejected:key.unknown"] == 60
    [row] = await rejection_rows(receiver, "310000")
    assert (row["reason"], row["repeats"]) == ("key.unknown", 60)
    assert outsider.key_id in str(row["message"])


async def test_a_new_unknown_key_id_per_message_still_makes_one_row(federation: TestFederation) -> None:
    receiver = await federation.start_node("320000")
    own_key = member_key(federation, "310000")
    forged = []
    for seq in range(1, 201):  # the key id is whatever the sender writes: 200 of them, each new
        envelope = seal(own_key, event_payload("310000", seq))
        envelope.key_id = f"made-up-{seq:03d}"
        forged.append(envelope.SerializeToString())
    await produce(federation, events_topic("310000"), forged)

    seen = await eventually(lambda: all_counted(receiver, "310000", 200))
    assert seen["rejected:key.unknown"] == 200
    [row] = await rejection_rows(receiver, "310000")
    assert (row["reason"], row["key_id"], row["repeats"]) == ("key.unknown", "", 200)
    assert "made-up-001" in str(row["message"])  # the first one's key id, for the operator


async def test_old_evidence_is_deleted_after_its_retention_and_the_counts_stay(federation: TestFederation) -> None:
    receiver = await federation.start_node("320000", intake={"evidence_max_age_days": 30})
    outsider = SigningKey.generate()
    await produce(federation, events_topic("310000"), [seal(outsider, event_payload("310000", 1)).SerializeToString()])
    await eventually(lambda: all_counted(receiver, "310000", 1))
    assert receiver.pool is not None
    async with receiver.pool.acquire() as conn:
        await conn.execute("UPDATE intake_rejections SET last_at = now() - interval '31 days'")

    assert await rejections.expire(receiver.pool, receiver.config.intake) == 1
    assert await rejection_rows(receiver, "310000") == []
    assert (await counters(receiver, "310000"))["rejected:key.unknown"] == 1
    keep_all = receiver.config.intake.model_copy(update={"evidence_max_age_days": 0})
    assert await rejections.expire(receiver.pool, keep_all) == 0


async def test_a_flood_of_forged_checkpoints_is_counted_and_kept_as_one_row(federation: TestFederation) -> None:
    receiver = await federation.start_node("320000")
    stranger = SigningKey.generate()
    notes = [Checkpoint(log_name("310000"), size, bytes(32)).sign(stranger).encode() for size in range(1, 301)]
    await produce(federation, checkpoints_topic("310000"), notes)
    await produce(federation, events_topic("310000"), genuine(federation, "310000", [1]))

    seen = await eventually(lambda: all_counted(receiver, "310000", 301))
    assert seen["applied"] == 1
    assert await eventually(
        lambda: committed_to_the_end(receiver, federation.broker.bootstrap_servers, checkpoints_topic("310000"))
    )
    [row] = await rejection_rows(receiver, "310000")
    assert row["repeats"] == sum(n for outcome, n in seen.items() if outcome.startswith("rejected:"))


async def test_a_withheld_notice_cannot_pin_sync_beyond_what_is_served(
    federation: TestFederation, tmp_path: Path
) -> None:
    origin = await federation.start_node("310000")
    n = await take_in(origin, tmp_path, 10)
    await add_restricted_record(origin)  # seq n + 1: withheld from the bus, announced by a notice
    # Sync's own rounds every 60 s at most: this test drives it.
    receiver = await federation.start_node("320000", sync={"probe_seconds": 3600})
    await eventually(lambda: holds(receiver, "310000", n))
    await eventually(lambda: notices_counted(receiver, 1))

    await produce_notice(federation, "310000", 2**63 - 1)  # unsigned: anyone on the bus can write one
    await eventually(lambda: notices_counted(receiver, 2))
    assert receiver.sync is not None
    await receiver.sync.sync_origin("310000")

    assert await holds(receiver, "310000", n + 1)  # the notice did bring the restricted event at once
    assert receiver.sync.withheld("310000") is None  # and nothing of it stays to make later lags urgent


async def produce_notice(federation: TestFederation, origin: str, seq: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers)
    await producer.start()
    try:
        headers = bus.withheld_notice_headers(origin, seq, str(uuid.uuid4()))
        await producer.send_and_wait(events_topic(origin), value=b"", key=b"hostile", headers=headers)
    finally:
        await producer.stop()


async def notices_counted(node: Node, n: int) -> bool:
    return (await counters(node, "310000")).get("withheld_notice", 0) >= n


async def test_a_checkpoint_no_member_can_serve_raises_an_alarm_and_sync_backs_off(
    federation: TestFederation, tmp_path: Path
) -> None:
    origin = await federation.start_node("310000")
    receiver = await federation.start_node(
        "320000", sync={"unreachable_alarm_seconds": 1.0, "unreachable_backoff_max_seconds": 4.0}
    )
    n = await take_in(origin, tmp_path, 20)
    await eventually(lambda: holds(receiver, "310000", n))

    claim = Checkpoint(log_name("310000"), 10**12, bytes(32)).sign(member_key(federation, "310000"))
    await produce(federation, checkpoints_topic("310000"), [claim.encode()])

    status = await eventually(lambda: alarm_of(receiver, "checkpoint.unreachable on 310000"))
    assert len([a for a in status.open_alarms if "checkpoint.unreachable" in a]) == 1
    assert receiver.sync is not None
    backing_off = await eventually(lambda: asked_at_least(receiver, "310000", 3))
    assert backing_off.delay > 2 * receiver.config.sync.probe_seconds  # no longer every probe
    assert backing_off.served == n  # fetched as far as served, not towards 10^12

    # Not evidence of a false log: the origin is not frozen, its new events keep coming.
    more = await take_in(origin, tmp_path, 10, first_row=500)
    await eventually(lambda: holds(receiver, "310000", n + more))


async def test_a_member_added_to_the_bundle_is_consumed_and_a_removed_one_is_not(
    federation: TestFederation,
) -> None:
    full = federation.bundle_now()
    without = full.model_copy(update={"members": tuple(m for m in full.members if m.origin != "330000")})
    write_bundle(federation, without)
    receiver = await federation.start_node("320000")
    assert receiver.intake is not None
    assert "330000" not in receiver.intake.reading.values()
    await produce(federation, events_topic("330000"), genuine(federation, "330000", range(1, 8)))

    receiver.trust.update(write_bundle(federation, full.model_copy(update={"version": without.version + 1})))
    await eventually(lambda: applied(receiver, "330000", 7))
    assert "330000" in receiver.intake.reading.values()

    receiver.trust.update(write_bundle(federation, without.model_copy(update={"version": without.version + 2})))
    await eventually(lambda: not_reading(receiver, "330000"))


def write_bundle(federation: TestFederation, bundle: TrustBundle) -> TrustBundle:
    """Sign ``bundle`` with the federation key and put it where the nodes read it."""
    federation.layout.bundle.write_bytes(bundle.sign(SigningKey.load(federation.layout.federation_key)))
    return federation.bundle_now()


async def holds(node: Node, origin: str, size: int) -> bool:
    return (await node.status()).contiguous_by_origin.get(origin, 0) >= size


async def applied(node: Node, origin: str, n: int) -> bool:
    return (await counters(node, origin)).get("applied", 0) >= n


async def alarm_of(node: Node, text: str) -> object:
    status = await node.status()
    return status if any(text in alarm for alarm in status.open_alarms) else None


async def asked_at_least(node: Node, origin: str, attempts: int) -> object:
    assert node.sync is not None
    state = node.sync.unreachable(origin)
    return state if state is not None and state.attempts >= attempts else None


async def not_reading(node: Node, origin: str) -> bool:
    assert node.intake is not None
    return origin not in node.intake.reading.values()
