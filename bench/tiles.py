"""The log as tiles in PostgreSQL against the old in-memory tree, at a million leaves.

    python -m bench.tiles [--leaves 1000000] [--seconds 8] [--concurrency 8]

Tiles are grown as the ledger grows them (50,000 leaves a transaction) into an
embedded PostgreSQL; roots and inclusion proofs are then answered from them
(one query each, O(log n) tiles) and from crypto/merkle.py's in-memory tree of
the same leaves. Beside them, in the same run: raw SHA-256 of a 65-byte node
(what one interior hash costs) and the process's resident memory (RSS) each way.
Growing tiles costs about one hash per leaf (255 per full tile, and 1/256 of
that above): the grow rate is reported beside raw SHA-256 for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench.common import line, run
from credex.crypto.merkle import MerkleTree, verify_inclusion
from credex.node.chain import LogBook
from credex.node.embedded import EmbeddedPostgres
from credex.node.store import Connection, database, tiles

ORIGIN = "310000"
BATCH = 50_000


async def cover_leaves(pool: asyncpg.Pool, origin: str, old: int, batch: list[bytes]) -> None:
    """Move ``origin``'s watermark over ``batch`` (leaf hashes after the first ``old``), its tiles in the same
    transaction, as the ledger does: a log of bare leaves for benchmarks of tiles and proofs."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO origin_progress (origin, contiguous_seq, max_seq) VALUES ($1, $2, $2)"
            " ON CONFLICT (origin) DO UPDATE SET contiguous_seq = $2, max_seq = $2",
            origin,
            old + len(batch),
        )
        await tiles.cover(conn, origin, old, old + len(batch), batch)


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for text in status:
            if text.startswith("VmRSS:"):
                return int(text.split()[1]) / 1024
    return 0.0


def raw_sha256(n: int = 500_000) -> float:
    node = b"\x01" + os.urandom(64)
    started = time.perf_counter()
    for _ in range(n):
        hashlib.sha256(node).digest()
    return n / (time.perf_counter() - started)


async def drive(
    seconds: float,
    concurrency: int,
    ask: Callable[[Connection | None], Awaitable[object]],
    pool: asyncpg.Pool | None = None,
) -> float:
    """Asks per second from ``concurrency`` askers; with ``pool``, each asker holds one connection throughout."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        if pool is None:
            while time.perf_counter() < deadline:
                await ask(None)
                done += 1
            return
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                await ask(conn)
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def main(leaves: int, seconds: float, concurrency: int) -> None:
    sha = raw_sha256()
    rng = random.Random(7)
    hashes = [rng.randbytes(32) for _ in range(leaves)]
    with tempfile.TemporaryDirectory(prefix="credex-bench-") as folder:
        postgres = EmbeddedPostgres(Path(folder) / "postgres")
        await asyncio.to_thread(postgres.start)
        try:
            pool = await database.open_pool(postgres.uri("bench_tiles"), create=True, min_size=2, max_size=concurrency)
            before = rss_mb()
            started = time.perf_counter()
            for old in range(0, leaves, BATCH):
                batch = hashes[old : old + BATCH]
                await cover_leaves(pool, ORIGIN, old, batch)
            grown = leaves / (time.perf_counter() - started)
            serving_from = rss_mb()
            book = LogBook(pool)
            started = time.perf_counter()
            tree = await book.tree(ORIGIN)
            opened = time.perf_counter() - started
            root = await tree.root()

            async def inclusion(conn: Connection | None) -> None:
                await tree.inclusion_proof(rng.randrange(leaves), conn=conn)

            async def a_root(conn: Connection | None) -> None:
                await tree.root(rng.randrange(1, leaves + 1), conn=conn)

            from_tiles = await drive(seconds, concurrency, inclusion)
            on_held = await drive(seconds, concurrency, inclusion, pool)
            roots_from_tiles = await drive(seconds, concurrency, a_root)
            index = rng.randrange(leaves)
            assert verify_inclusion(hashes[index], index, leaves, await tree.inclusion_proof(index), root)
            tiles_rss = rss_mb() - before
            serving_rss = rss_mb() - serving_from
            async with pool.acquire() as conn:
                stored = await conn.fetchval("SELECT pg_total_relation_size('log_tiles')")
            await pool.close()
        finally:
            await asyncio.to_thread(postgres.stop)

    before = rss_mb()
    started = time.perf_counter()
    memory = MerkleTree(hashes)
    built = time.perf_counter() - started
    memory_rss = rss_mb() - before
    assert memory.root() == root, "the tiles give the root the in-memory tree gives"
    count = 20000
    indexes = [rng.randrange(leaves) for _ in range(count)]
    started = time.perf_counter()
    for i in indexes:
        memory.inclusion_proof(i)
    in_memory = count / (time.perf_counter() - started)

    print(f"\n{leaves:,} leaves; raw SHA-256 of a 65-byte node: {sha:,.0f} hashes/s in this run")
    line("tiles grown (leaves/s, ~1 hash per leaf)", grown, "leaves/s", sha, "raw SHA-256")
    line("in-memory tree built (leaves/s)", leaves / built, "leaves/s", sha, "raw SHA-256")
    print(f"  {'tree opened from tiles (start-up)':<44} {opened * 1000:>12.1f} ms")
    print(f"\nproofs at {leaves:,} leaves ({concurrency} concurrent askers for tiles, one query each):")
    line("inclusion proofs from tiles", from_tiles, "proofs/s", in_memory, "in-memory tree")
    line("  the same, each asker holding a connection", on_held, "proofs/s", in_memory, "in-memory tree")
    line("roots at random sizes from tiles", roots_from_tiles, "roots/s")
    line("inclusion proofs from the in-memory tree", in_memory, "proofs/s")
    print("\nmemory (resident set growth of this process):")
    print(f"  {'tiles: growing them and serving proofs':<44} {tiles_rss:>12.1f} MB")
    print(f"  {'  of which serving proofs':<44} {serving_rss:>12.1f} MB")
    print(f"  {'in-memory tree':<44} {memory_rss:>12.1f} MB")
    print(f"  {'tiles on disk (log_tiles, with index)':<44} {stored / 2**20:>12.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    run(main(args.leaves, args.seconds, args.concurrency))
