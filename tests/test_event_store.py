"""Storing events: every copy that comes in is sorted as new, replay or conflict — none is skipped in silence."""

from __future__ import annotations

from credex.node.store.events import StoredEvent, insert_events
from credex.v1 import event_pb2

from .conftest import TestFederation
from .forgery import event_payload


def stored(payload: bytes) -> StoredEvent:
    event = event_pb2.Event.FromString(payload)
    envelope = event_pb2.Envelope(payload=payload, payload_type="test", key_id="k", signature=b"s")
    return StoredEvent.from_event(event, envelope.SerializeToString())


async def test_two_versions_of_one_seq_in_one_batch_are_a_conflict_and_a_second_copy_a_replay(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    first = stored(event_payload("320000", 7))
    other_version = stored(event_payload("320000", 7, "320000-CF-other"))
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        outcome = await insert_events(conn, [first, first, other_version])
        held = await conn.fetchval("SELECT count(*) FROM events WHERE origin = '320000' AND seq = 7")
    assert (outcome.new, outcome.replays, outcome.conflicts) == ([first], [first], [other_version])
    assert held == 1
