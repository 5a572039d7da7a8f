"""A record's bytes are stored once, inside the envelope of the event that left the record so.

``record_states`` points into that envelope, and the view ``records`` reads the bytes
from there, exactly as the old table held them; a record whose bytes its envelope
lacks (a peer's record not in canonical form) keeps its own. Migration 0029 moves a
store's rows over without losing a byte. The ledger's public batch API (prepare,
sign, store) stores only a batch that follows the log's head.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.envelope import signature_valid
from credex.crypto.keys import SigningKey
from credex.node.embedded import EmbeddedPostgres
from credex.node.ledger import Change, Ledger
from credex.node.ledger.appender import LedgerError
from credex.node.store import database
from credex.node.store import events as store
from credex.v1 import event_pb2

from .conftest import TestFederation, eventually
from .test_ledger_store import ORIGIN, penalty


async def test_the_ledger_stores_a_record_once_and_records_reads_it_whole(federation: TestFederation) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    first, corrected = penalty(1), penalty(1, "罚款 8000 元")
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(first), Change.of(penalty(2))])
        await node.ledger.append(conn, [Change.of(corrected)])
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT s.record_id, s.record AS own, s.record_at, s.record_len, r.record, e.envelope"
            " FROM record_states s JOIN records r USING (record_id)"
            " JOIN events e ON e.origin = s.origin AND e.seq = s.seq ORDER BY s.record_id"
        )
    assert [r["record_id"] for r in rows] == [penalty(1).record_id, penalty(2).record_id]
    for row, record in zip(rows, [corrected, penalty(2)], strict=True):
        assert row["own"] is None
        assert bytes(row["record"]) == store.record_bytes(record)  # the newest content, byte for byte
        envelope = event_pb2.Envelope.FromString(bytes(row["envelope"]))
        assert event_pb2.Event.FromString(envelope.payload).record == record
        start = row["record_at"]
        assert bytes(row["envelope"])[start : start + row["record_len"]] == bytes(row["record"])


async def test_a_record_its_envelope_lacks_is_kept_with_its_own_bytes(federation: TestFederation) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    record = penalty(3)
    # A verified peer event whose record is not in canonical form: its envelope does not hold the bytes the store keeps.
    held = store.StoredEvent(
        origin="320000",
        seq=1,
        event_id=uuid.uuid4(),
        event_type=event_pb2.EVENT_TYPE_UPSERT,
        state=store.RecordState.of(record),
        envelope=b"\x0a\x05other",
        recorded_at=dt.datetime.now(dt.UTC),
    )
    assert held.record_at == -1
    async with node.pool.acquire() as conn, conn.transaction():
        await store.copy_events(conn, [held])
        await store.upsert_records(conn, [held], fresh={record.record_id})
    async with node.pool.acquire() as conn:
        own = await conn.fetchval("SELECT record FROM record_states WHERE record_id = $1", record.record_id)
        read = await conn.fetchval("SELECT record FROM records WHERE record_id = $1", record.record_id)
    assert bytes(own) == bytes(read) == store.record_bytes(record)


async def test_rows_inserted_into_records_land_in_record_states_and_lock_as_before(federation: TestFederation) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    state = store.RecordState.of(penalty(4))
    async with node.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO records (record_id, origin, subject_id, kind, seq, status, sharing_level, digest, record)"
            " VALUES ($1, $2, $3, $4, 9, 1, 1, $5, $6)",
            state.record_id,
            ORIGIN,
            state.subject_id,
            state.kind,
            state.digest,
            state.encoded,
        )
        async with conn.transaction():
            locked = await conn.fetchval("SELECT record FROM records WHERE record_id = $1 FOR UPDATE", state.record_id)
        disputed = await conn.fetchval("SELECT disputed FROM record_states WHERE record_id = $1", state.record_id)
    assert bytes(locked) == state.encoded and disputed is False


async def test_a_prepared_batch_signed_elsewhere_is_stored_only_after_the_head_it_follows(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    ledger = Ledger(ORIGIN, node.ledger.key)  # signs in this process, as a bulk loader's worker does
    ahead = ledger.sign_here(ledger.prepare([Change.of(penalty(5))], {}, 7))
    async with node.pool.acquire() as conn:
        with pytest.raises(LedgerError, match="cannot follow the head 0"):
            async with conn.transaction():
                await ledger.store(conn, ahead)
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        assert await conn.fetchval("SELECT count(*) FROM records") == 0

        prepared = ledger.prepare([Change.of(penalty(5)), Change.of(penalty(6))], {}, 0)
        assert (prepared.result.new, prepared.head, prepared.result.seqs) == (2, 2, [1, 2])
        async with conn.transaction():
            await ledger.store(conn, ledger.sign_here(prepared))
        rows = await conn.fetch("SELECT envelope FROM events WHERE origin = $1 ORDER BY seq", ORIGIN)
        progress = await conn.fetchrow(
            "SELECT contiguous_seq, tiled_seq FROM origin_progress WHERE origin = $1", ORIGIN
        )
        head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1", ORIGIN)
    assert progress is not None
    public = Ed25519PublicKey.from_public_bytes(node.ledger.key.public_raw)
    assert all(signature_valid(event_pb2.Envelope.FromString(bytes(r["envelope"])), public) for r in rows)
    assert (len(rows), head, progress["contiguous_seq"], progress["tiled_seq"]) == (2, 2, 2, 2)


async def test_migration_0029_keeps_every_record_byte_for_byte(postgres: EmbeddedPostgres) -> None:
    url = postgres.uri("m" + uuid.uuid4().hex[:12])
    await database.ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await database.migrate(conn, before=29)  # the store as an older credex left it
        ledger = Ledger(ORIGIN, SigningKey.generate())  # a key of its own: no node runs here
        signed = ledger.sign_here(ledger.prepare([Change.of(penalty(7)), Change.of(penalty(8))], {}, 0))
        inside, lacking = signed.events
        lacking_envelope = b"\x0a\x03not"
        await conn.copy_records_to_table(
            "events",
            records=[inside.event_row(), (*lacking.event_row()[:6], lacking_envelope, *lacking.event_row()[7:])],
            columns=store.EVENT_COLUMNS,
        )
        old_rows = [(*e.state_row()[:9], e.state.encoded, False) for e in signed.events]
        await conn.copy_records_to_table("records", records=old_rows, columns=store.RECORD_COLUMNS)

        assert await database.migrate(conn, before=30) == ["0029_record_bytes_once.sql"]

        states = {r["record_id"]: r for r in await conn.fetch("SELECT record_id, record, record_at FROM record_states")}
        assert states[inside.record_id]["record"] is None and states[inside.record_id]["record_at"] >= 0
        assert bytes(states[lacking.record_id]["record"]) == lacking.state.encoded
        read = {r["record_id"]: bytes(r["record"]) for r in await conn.fetch("SELECT record_id, record FROM records")}
        assert read == {e.record_id: e.state.encoded for e in signed.events}
        columns = {
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'events'::regclass AND NOT attisdropped"
            )
        }
        assert "received_at" not in columns
    finally:
        await conn.close()


async def test_after_a_bulk_load_the_statistics_of_the_table_behind_records_are_refreshed(
    federation: TestFederation,
) -> None:
    """``ANALYZE records`` only warns since records is a view: the planner's figures must come from
    ``record_states`` (and ``events``, which the view reads record bytes from), or lookups scan."""
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(penalty(n)) for n in range(20, 30)])

    async def analyzed() -> dict[str, int]:
        async with node.pool.acquire() as conn:  # type: ignore[union-attr]
            rows = await conn.fetch(
                "SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname IN ('record_states', 'events')"
            )
        return {r["relname"]: r["analyze_count"] for r in rows}

    before = await analyzed()
    async with node.pool.acquire() as conn:
        await store.analyze_after_bulk_load(conn)

    async def counted() -> bool:
        after = await analyzed()
        return all(after[table] > before[table] for table in ("record_states", "events"))

    await eventually(counted)


async def test_a_growing_table_has_its_statistics_refreshed_after_a_share_of_it_is_written_not_every_few_rows(
    federation: TestFederation,
) -> None:
    """Intake refreshes statistics as autovacuum would, without its minute's wait: a 10M-row catch-up
    ANALYZEs 59 times, not 1,000. One batch starts each refresh, however many are applied meanwhile."""
    node = await federation.start_node(ORIGIN)
    assert node.pool is not None
    statistics = store.Statistics(floor=5, share=0.1)
    assert [statistics.due(n) for n in (2, 2)] == [False, False]  # below the floor
    async with node.pool.acquire() as conn:
        async with conn.transaction():
            await node.ledger.append(conn, [Change.of(penalty(n)) for n in range(100, 300)])
        assert statistics.due(200)
        assert not statistics.due(1)  # a batch applied while the refresh runs does not start another
        await statistics.refresh(conn)
        tuples = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'record_states'::regclass")
    assert tuples >= 200
    # The next refresh comes after a tenth of the table as ANALYZE counted it, not after the floor.
    share = int(0.1 * tuples)
    assert [statistics.due(1) for _ in range(share - 2)] == [False] * (share - 2)  # one came during the refresh
    assert statistics.due(1)
