"""Filling the scale benchmark's store fast, with the same honestly signed events the ingest path makes.

A file taken in through :func:`~credex.node.feeds.ingest_file` maps its rows and signs
its events on one core, and at national size (13M events) that took about 70 minutes.
Here the rows of each chunk are written, read and mapped through the same profile and
signed by the same :class:`~credex.node.ledger.Ledger` code in worker processes, one
per core, while this process stores the chunks before them in log order through the
ledger's own store step (COPY of the events, the records and their subjects, the head,
the watermark, and the tiles grown in the same transaction).

What makes the workers' seqs right without the store's head lock: every synthetic row
is a record the log does not hold yet (row ids are dense and never reused), so chunk k
of a fill is exactly seqs ``have + k * CHUNK + 1 ..`` — and each stored chunk is checked
for that (its first seq is the head plus one, one new event per row, no rejection), so
a fill that broke the rule stops instead of storing a wrong log.

While a store is filled (:func:`bulk_load`) the tables it grows keep only their
primary keys and constraints: the other indexes the migrations made are dropped,
as read from ``pg_indexes``, and made again from those same definitions at the end,
then the tables are analyzed; a unique index made again checks every row at once.
Making them again is part of the fill and counts in its time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import multiprocessing
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from credex.adapters.profile import MappingContext, Profile
from credex.adapters.samples import synth
from credex.crypto.keys import SigningKey
from credex.node.feeds.files import _changes
from credex.node.feeds.mapping import Reader
from credex.node.ledger import Ledger, Signed
from credex.node.runtime import Node
from credex.node.store.database import Connection

CHUNK = 20_000  # rows a worker maps and signs at once: about 30 MB of events to hand over
# The tables a fill grows (record_states: the table behind the view records).
FILLED = ("events", "record_states", "subjects")
BUILD_NICENESS = 5  # the fill gives way to other work on the machine; measuring runs at normal priority


@dataclass(frozen=True)
class Chunk:
    """Rows ``first_row ..`` of an origin's synthetic log, to become seqs ``first_seq ..``."""

    origin: str
    first_row: int
    rows: int
    shared_pool: int

    @property
    def first_seq(self) -> int:
        return self.first_row + 1


@functools.cache
def _signer(key_dir: str, origin: str) -> Ledger:
    return Ledger(origin, SigningKey.load(Path(key_dir)))


def sign_chunk(chunk: Chunk, key_dir: str, context: MappingContext) -> Signed:
    """Worker process: the chunk's rows written as a national-format file, mapped, and signed as new records."""
    ledger = _signer(key_dir, chunk.origin)
    with tempfile.TemporaryDirectory(prefix="credex-scale-rows-") as folder:
        path = Path(folder) / f"rows-{chunk.origin}-{chunk.first_row}.csv"
        spec = synth.SynthSpec(
            region=chunk.origin,
            rows=chunk.rows,
            bad_share=0.0,
            first_row=chunk.first_row,
            seed=chunk.first_row + 1,
            shared_pool=chunk.shared_pool,
        )
        synth.write(path, spec)
        reader = Reader(path, Profile.load("national"), context, batch_size=chunk.rows)
        changes = []
        while (batch := reader.next_batch()) is not None:
            if batch.rejections:
                raise RuntimeError(f"{chunk}: {len(batch.rejections)} rows rejected by the profile")
            changes.extend(_changes(batch.records))
    # Nothing of these records is held: each row is signed as the UPSERT the ledger signs for a new record.
    prepared = ledger.prepare(changes, {}, chunk.first_seq - 1)
    if prepared.result.new != chunk.rows or len(prepared.drafts) != chunk.rows:
        raise RuntimeError(f"{chunk}: {prepared.result.new} new records of {chunk.rows} rows")
    return ledger.sign_here(prepared)


async def _secondary_indexes(conn: Connection) -> list[asyncpg.Record]:
    """The filled tables' indexes that back no constraint: name and definition, as the migrations made them."""
    return list(
        await conn.fetch(
            "SELECT i.indexname AS name, i.indexdef AS definition FROM pg_indexes i"
            " JOIN pg_namespace n ON n.nspname = i.schemaname"
            " JOIN pg_class c ON c.relname = i.indexname AND c.relnamespace = n.oid"
            " WHERE i.schemaname = current_schema() AND i.tablename = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)"
            " ORDER BY i.tablename, i.indexname",
            list(FILLED),
        )
    )


@contextlib.asynccontextmanager
async def bulk_load(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Fill the store without its secondary indexes; on success make them again and analyze the tables.

    A failed or stopped fill leaves them dropped: its store is half-built and only
    fit for being thrown away, and making indexes on it would only delay the stop.
    """
    async with pool.acquire() as conn:
        dropped = await _secondary_indexes(conn)
        async with conn.transaction():
            for index in dropped:
                await conn.execute(f'DROP INDEX "{index["name"]}"')
    yield
    started = time.perf_counter()
    async with pool.acquire() as conn:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        try:
            for index in dropped:
                await conn.execute(index["definition"])
            for table in FILLED:
                await conn.execute(f"ANALYZE {table}")
        finally:
            await conn.execute("RESET maintenance_work_mem")
        made = {r["name"] for r in await _secondary_indexes(conn)}
    missing = {index["name"] for index in dropped} - made
    if missing:
        raise RuntimeError(f"indexes not made again after the fill: {sorted(missing)}")
    print(
        f"  {len(dropped)} indexes made again and tables analyzed in {time.perf_counter() - started:.1f}s", flush=True
    )


async def give_way(pool: asyncpg.Pool, every: float = 2.0) -> None:
    """Keep the server processes of ``pool``'s database at the fill's lower priority, until cancelled.

    The fill's work in PostgreSQL (COPY, index builds and their parallel workers) runs in
    server processes this one did not start, and new ones come and go; so they are looked
    up, and niced, every ``every`` seconds.
    """
    while True:
        async with pool.acquire() as conn:
            pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        for row in pids:
            with contextlib.suppress(PermissionError, ProcessLookupError):
                if os.getpriority(os.PRIO_PROCESS, row["pid"]) < BUILD_NICENESS:
                    os.setpriority(os.PRIO_PROCESS, row["pid"], BUILD_NICENESS)
        await asyncio.sleep(every)


async def history_published(pool: asyncpg.Pool, origin: str) -> None:
    """Count ``origin``'s log as published up to its head, with no broker message to check it by.

    A national broker keeps days of a log, not its history (the relay tells retention
    apart from a lost log); a member that needs older events fetches them over gRPC,
    which the benchmark measures as catch-up. Without this the serving node's relay
    would first put the whole built history on the bench's in-memory broker: at
    ``--scale 1`` more than 10 GB of it, and CPU taken from the measured calls.
    """
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO relay_outbox (origin, published_seq, published_at)"
            " SELECT $1, coalesce(max(seq), 0), now() FROM events WHERE origin = $1"
            " ON CONFLICT (origin) DO UPDATE SET published_seq = EXCLUDED.published_seq,"
            " published_at = EXCLUDED.published_at, sentinel_event_id = NULL",
            origin,
        )


class Signers:
    """One signing worker per core; stopped at once when the fill is (a chunk half-signed is worth nothing).

    A :class:`multiprocessing.pool.Pool` rather than a process pool executor, whose
    shutdown can only wait for the chunks in hand: a fill stopped by SIGTERM on a
    busy machine then took minutes to stop.
    """

    def __init__(self, workers: int) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(workers)

    def sign(self, chunk: Chunk, key_dir: str, context: MappingContext) -> asyncio.Future[Signed]:
        loop = asyncio.get_running_loop()
        signed: asyncio.Future[Signed] = loop.create_future()

        def settle(events: Signed | None, error: BaseException | None) -> None:
            if signed.done():  # the fill stopped waiting
                return
            if error is not None or events is None:
                signed.set_exception(error or RuntimeError("a signing worker returned nothing"))
            else:
                signed.set_result(events)

        def done(events: Signed) -> None:
            loop.call_soon_threadsafe(settle, events, None)

        def failed(error: BaseException) -> None:
            loop.call_soon_threadsafe(settle, None, error)

        self._pool.apply_async(sign_chunk, (chunk, key_dir, context), callback=done, error_callback=failed)
        return signed

    def stop(self) -> None:
        self._pool.terminate()
        self._pool.join()


async def fill(
    node: Node, key_dir: Path, origin: str, have: int, want: int, shared_pool: int, until: float | None = None
) -> int:
    """Grow ``origin``'s log in ``node``'s store from ``have`` to ``want`` events, signed by the key in ``key_dir``.

    With ``until`` (a ``time.time()``) no chunk is stored after it: the log stops at a
    chunk's end, whole and checked, short of ``want``. Returns the size it reached.
    """
    assert node.pool is not None
    ledger = _signer(str(key_dir), origin)
    context = node.mapping_context()
    context = MappingContext(origin=origin, publicity=context.publicity, pseudonymizer=context.pseudonymizer)
    chunks = [Chunk(origin, first, min(CHUNK, want - first), shared_pool) for first in range(have, want, CHUNK)]
    workers = os.cpu_count() or 1
    pool = Signers(workers)
    reached = have
    try:
        ahead = workers + 1  # chunks signed ahead of the one being stored: every worker busy, memory bounded
        pending = collections.deque(pool.sign(chunk, str(key_dir), context) for chunk in chunks[:ahead])
        for n in range(len(chunks)):
            if until is not None and time.time() >= until:
                break
            signed = await pending.popleft()
            if n + ahead < len(chunks):
                pending.append(pool.sign(chunks[n + ahead], str(key_dir), context))
            async with node.pool.acquire() as conn, conn.transaction():
                await ledger.store(conn, signed)  # refused unless the chunk follows the log's head
            reached = signed.head
            del signed
    finally:  # done, stopped or failed half-way: the chunks not stored are dropped
        pool.stop()
    async with node.pool.acquire() as conn:
        held = await conn.fetchval("SELECT count(*) FROM records WHERE origin = $1", origin)
        if held != reached:
            raise RuntimeError(f"{origin}: {held} records for {reached} events: a row was not a new record")
    return reached
