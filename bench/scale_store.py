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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import multiprocessing
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from credex.adapters.profile import MappingContext, Profile
from credex.adapters.samples import synth
from credex.crypto.keys import SigningKey
from credex.node.feeds.files import _changes
from credex.node.feeds.mapping import Reader
from credex.node.ledger import Ledger, Signed
from credex.node.runtime import Node

CHUNK = 20_000  # rows a worker maps and signs at once: about 30 MB of events to hand over


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


async def fill(node: Node, key_dir: Path, origin: str, have: int, want: int, shared_pool: int) -> None:
    """Grow ``origin``'s log in ``node``'s store from ``have`` to ``want`` events, signed by the key in ``key_dir``."""
    assert node.pool is not None
    ledger = _signer(str(key_dir), origin)
    context = node.mapping_context()
    context = MappingContext(origin=origin, publicity=context.publicity, pseudonymizer=context.pseudonymizer)
    chunks = [Chunk(origin, first, min(CHUNK, want - first), shared_pool) for first in range(have, want, CHUNK)]
    workers = os.cpu_count() or 1
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead = workers + 1  # chunks signed ahead of the one being stored: every worker busy, memory bounded
        pending = collections.deque(
            loop.run_in_executor(pool, sign_chunk, chunk, str(key_dir), context) for chunk in chunks[:ahead]
        )
        for n in range(len(chunks)):
            signed = await pending.popleft()
            if n + ahead < len(chunks):
                pending.append(loop.run_in_executor(pool, sign_chunk, chunks[n + ahead], str(key_dir), context))
            async with node.pool.acquire() as conn, conn.transaction():
                await ledger.store(conn, signed)  # refused unless the chunk follows the log's head
            del signed
    finally:  # stopped or failed half-way: the chunks not begun are dropped, not signed for nothing
        pool.shutdown(wait=True, cancel_futures=True)
    async with node.pool.acquire() as conn:
        held = await conn.fetchval("SELECT count(*) FROM records WHERE origin = $1", origin)
        if held != want:
            raise RuntimeError(f"{origin}: {held} records for {want} events: a row was not a new record")
        await conn.execute("ANALYZE record_states")  # the table behind the view records (migration 0029)
        await conn.execute("ANALYZE events")
