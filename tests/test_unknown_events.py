"""Events a node does not know (a newer credex's types or standings): refused with a reason, caught up after upgrade.

Revocation, expiry, repair, objections and hiding added event types and standings to
the wire contract. A node that predates one must neither guess what it means nor stall
on it: it rejects the event as ``event.type_unknown``, records the rejection, changes
nothing, and leaves the gap in the origin's log for catch-up to fill once it knows better.
"""

from __future__ import annotations

import pytest

from credex.crypto import trust
from credex.crypto.envelope import seal
from credex.node.config import events_topic
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import event_pb2, lookup_pb2

from .conftest import TestFederation, eventually
from .forgery import event_payload
from .test_expiry import penalty
from .test_hostile_messages import all_counted, counters, member_key, produce, rejection_rows


async def progress(node: Node, origin: str) -> tuple[int, int] | None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT contiguous_seq, max_seq FROM origin_progress WHERE origin = $1", origin)
    return None if row is None else (int(row["contiguous_seq"]), int(row["max_seq"]))


async def held(node: Node, origin: str) -> dict[str, int]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, status FROM records WHERE origin = $1", origin)
    return {r["record_id"]: int(r["status"]) for r in rows}


async def test_an_event_of_an_unknown_type_or_standing_signed_by_a_trusted_key_is_refused_and_leaves_a_gap(
    federation: TestFederation,
) -> None:
    receiver = await federation.start_node("320000")  # Shanghai is not running: only the bus brings its events
    key = member_key(federation, "310000")
    messages = [
        seal(key, event_payload("310000", 1)),
        seal(key, event_payload("310000", 2)),
        seal(key, event_payload("310000", 3, event_type=42)),  # a type from the future
        seal(key, event_payload("310000", 4, standing=99)),  # a known type, a standing from the future
        seal(key, event_payload("310000", 5)),
    ]
    await produce(federation, events_topic("310000"), [m.SerializeToString() for m in messages])

    seen = await eventually(lambda: all_counted(receiver, "310000", 5))
    assert seen == {"applied": 3, "rejected:event.type_unknown": 2}
    assert await held(receiver, "310000") == {f"310000-CF-forged{n}": lookup_pb2.ENTRY_STATUS_ACTIVE for n in (1, 2, 5)}
    assert await progress(receiver, "310000") == (2, 5)  # the gap at 3-4 stays for catch-up to fill
    rows = await rejection_rows(receiver, "310000")
    assert [r["reason"] for r in rows] == ["event.type_unknown"] * len(rows)
    # Both are counted; evidence of one reason in one batch is kept as one row with its repeats.
    assert sum(int(r["repeats"]) for r in rows) == 2  # type: ignore[call-overload]
    assert "event type 42 or standing 0 is unknown to this credex; upgrade it" in str(rows[0]["message"])


async def test_a_node_that_predates_hiding_refuses_it_and_catches_up_once_upgraded(
    federation: TestFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jiangsu's credex predates EVENT_TYPE_HIDE: its verifier does not list it.
    monkeypatch.setattr(trust, "_KNOWN_TYPES", trust._KNOWN_TYPES - {event_pb2.EVENT_TYPE_HIDE})
    shanghai = await federation.start_node("310000", expiry={"enabled": False})
    jiangsu = await federation.start_node("320000")
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn, conn.transaction():
        await shanghai.ledger.append(conn, [Change.of(penalty("310000", 1, "2099-12-31"))])
        await shanghai.ledger.amend(
            conn, "310000-CF-ex1", event_pb2.EVENT_TYPE_HIDE, "重整", standing=lookup_pb2.ENTRY_STATUS_HIDDEN
        )
        await shanghai.ledger.append(conn, [Change.of(penalty("310000", 2, "2099-12-31"))])

    async def refused_and_gapped() -> bool:
        seen = await counters(jiangsu, "310000")
        return seen.get("rejected:event.type_unknown", 0) >= 1 and await progress(jiangsu, "310000") == (1, 3)

    await eventually(refused_and_gapped)
    assert await held(jiangsu, "310000") == {
        "310000-CF-ex1": lookup_pb2.ENTRY_STATUS_ACTIVE,
        "310000-CF-ex2": lookup_pb2.ENTRY_STATUS_ACTIVE,
    }

    monkeypatch.undo()  # upgraded: the verifier knows HIDE
    await eventually(lambda: _caught_up(jiangsu))
    assert await held(jiangsu, "310000") == {
        "310000-CF-ex1": lookup_pb2.ENTRY_STATUS_HIDDEN,
        "310000-CF-ex2": lookup_pb2.ENTRY_STATUS_ACTIVE,
    }


async def _caught_up(node: Node) -> bool:
    return await progress(node, "310000") == (3, 3)
