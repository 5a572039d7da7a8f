"""The ledger's store step: every batch of a pipeline lands whole, at each record's newest content.

New records are COPYed straight into ``records`` (the ledger found no row for them under
its head lock); records the store or an earlier batch already holds are upserted. Either
way the records table ends at each record's latest event, the subjects table has their
names, and the head, the watermark and the tiles all reach the last event. A row that
appears for a "new" record after the ledger looked refuses the batch: nothing of it is
stored, and no row is overwritten or lost.
"""

from __future__ import annotations

import asyncpg
import pytest

from credex.domain import uscc as uscc_codes
from credex.node.ledger.appender import Change
from credex.node.store.events import RecordState
from credex.v1 import lookup_pb2, record_pb2

from .conftest import TestFederation

ORIGIN = "310000"


def penalty(n: int, content: str = "罚款 5000 元") -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"{ORIGIN}-CF-st{n}",
        origin=ORIGIN,
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY,
            uscc=uscc_codes.make("91", ORIGIN, f"TK{n:06d}"),
            name=f"存储测试{n}有限公司",
        ),
        decision_date="2025-01-06",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2025-01-06", end="2099-01-06"),
        penalty=record_pb2.PenaltyDetails(content=content, severity=record_pb2.SEVERITY_GENERAL),
    )


async def test_a_pipeline_of_batches_leaves_every_record_at_its_newest_event(federation: TestFederation) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    a, b, c = penalty(1), penalty(2), penalty(3)
    a2, c2 = penalty(1, "罚款 8000 元"), penalty(3, "罚款 9000 元")
    async with node.pool.acquire() as conn, conn.transaction():
        appending = node.ledger.appending(conn)
        first = await appending.append(conn, [Change.of(a), Change.of(b)])
        # A corrected while its first event is still unstored; C new and corrected in one batch.
        second = await appending.append(conn, [Change.of(a2), Change.of(c), Change.of(c2)])
        third = await appending.append(conn, [Change.of(b, withdrawal="撤销")])
        await appending.flush()
    assert (first.new, second.new, second.corrected, third.revoked) == (2, 1, 2, 1)
    head = third.seqs[-1]
    async with node.pool.acquire() as conn:
        records = {
            r["record_id"]: r
            for r in await conn.fetch("SELECT record_id, seq, status, digest FROM records WHERE origin = $1", ORIGIN)
        }
        names = {r["subject_id"]: r["name"] for r in await conn.fetch("SELECT subject_id, name FROM subjects")}
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM events WHERE origin = $1 ORDER BY seq", ORIGIN)]
        progress = await conn.fetchrow(
            "SELECT contiguous_seq, max_seq, tiled_seq FROM origin_progress WHERE origin = $1", ORIGIN
        )
        ledger_head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1", ORIGIN)
    assert seqs == list(range(1, head + 1)) and ledger_head == head
    assert progress is not None and tuple(progress) == (head, head, head)
    assert bytes(records[a.record_id]["digest"]) == RecordState.of(a2).digest
    assert records[a.record_id]["seq"] == second.seqs[0]
    assert bytes(records[c.record_id]["digest"]) == RecordState.of(c2).digest
    assert records[c.record_id]["seq"] == second.seqs[-1]
    assert records[b.record_id]["status"] == lookup_pb2.ENTRY_STATUS_REVOKED and records[b.record_id]["seq"] == head
    for record in (a, b, c):
        assert names[RecordState.of(record).subject_id] == record.subject.name


async def test_a_row_that_appears_for_a_new_record_refuses_the_batch_and_stores_none_of_it(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    a, b = penalty(11), penalty(12)
    intruder = RecordState.of(penalty(11, "另一来源的同号记录"))
    with pytest.raises(asyncpg.UniqueViolationError):
        async with node.pool.acquire() as conn, conn.transaction():
            appending = node.ledger.appending(conn)
            await appending.append(conn, [Change.of(a), Change.of(b)])  # read: no row for either; signed, unstored
            async with node.pool.acquire() as other:  # meanwhile a row with A's id commits elsewhere
                await other.execute(
                    "INSERT INTO records (record_id, origin, subject_id, kind, seq, status, sharing_level, digest,"
                    " record) VALUES ($1, 'other', $2, $3, 1, 1, 1, $4, $5)",
                    intruder.record_id,
                    intruder.subject_id,
                    intruder.kind,
                    intruder.digest,
                    intruder.encoded,
                )
            await appending.flush()
    async with node.pool.acquire() as conn:
        held = await conn.fetch(
            "SELECT record_id, origin, digest FROM records WHERE record_id = ANY($1::text[])",
            [a.record_id, b.record_id],
        )
        events = await conn.fetchval("SELECT count(*) FROM events WHERE origin = $1", ORIGIN)
        ledger_head = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM ledger_head WHERE origin = $1", ORIGIN)
    assert [(r["record_id"], r["origin"], bytes(r["digest"])) for r in held] == [
        (a.record_id, "other", intruder.digest)
    ]
    assert events == 0 and ledger_head == 0
