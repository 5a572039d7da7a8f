"""Proofs: inclusion and consistency proofs served per second, and their size as logs grow.

    python -m bench.proofs [--rows 100000] [--seconds 8] [--store-sizes 30000,3000000] [--rounds 2]

Part one builds a Merkle tree of one million leaves in memory and times proof
generation and verification there. Part two builds two logs' tiles in PostgreSQL
(random leaf hashes, grown as the ledger grows them) and times inclusion proofs of
random leaves as the node answers them: one statement reads the leaf, then the
proof reads the tiles the tile cache lacks. It does so with and without the leaf's
path inside its tile read in the leaf's statement, in alternating rounds at the
two sizes, each round on a cold cache (as after a start), beside that leaf
statement alone under the same load (the floor of one statement per call). Part
three serves proofs over gRPC (mutual TLS) from a node holding a real log, driven
from another process, beside a bare gRPC echo server under the same load. Proof
sizes at 1M are measured; at 10M they are computed from the RFC 6962 recursion,
which needs no hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Awaitable

import asyncpg

from bench.common import (
    LoadResult,
    drive,
    federation,
    ingest_and_publish,
    line,
    load,
    merged,
    postgres_cpu,
    run,
    services,
    start_node,
)
from bench.lookup import start_echo
from bench.tiles import cover_leaves
from credex.adapters.samples import synth
from credex.crypto.merkle import MerkleTree, verify_consistency, verify_inclusion
from credex.node.chain import LogBook
from credex.node.store import database, tiles

HASH = 32
WARMUP_SECONDS = 1.0  # bench.common.drive's default warm-up, run before the measured seconds


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[size]), following the RFC 6962 recursion without hashing."""
    length = 0
    while size > 1:
        k = _split(size)
        length += 1
        if index < k:
            size = k
        else:
            index, size = index - k, size - k
    return length


def consistency_length(old: int, new: int, complete: bool = True) -> int:
    """Hashes in PROOF(old, D[new]), RFC 6962 §2.1.2."""
    if old == new:
        return 0 if complete else 1
    k = _split(new)
    if old <= k:
        return consistency_length(old, k, complete) + 1
    return consistency_length(old - k, new - k, False) + 1


def in_memory(leaves: int) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    tree = MerkleTree(os.urandom(32) for _ in range(leaves))
    built = time.perf_counter() - started
    root = tree.root()
    indexes = [rng.randrange(leaves) for _ in range(20000)]
    started = time.perf_counter()
    proofs = [tree.inclusion_proof(i) for i in indexes]
    inclusion = len(indexes) / (time.perf_counter() - started)
    started = time.perf_counter()
    assert all(verify_inclusion(tree.leaf(i), i, leaves, p, root) for i, p in zip(indexes, proofs, strict=True))
    verifying = len(indexes) / (time.perf_counter() - started)
    olds = [rng.randrange(1, leaves) for _ in range(5000)]
    started = time.perf_counter()
    consistency = [(old, tree.consistency_proof(old)) for old in olds]
    consistent = len(olds) / (time.perf_counter() - started)
    assert all(verify_consistency(o, leaves, tree.root(o), root, p) for o, p in consistency[:200])
    print(f"\nin memory, a tree of {leaves:,} leaves built in {built:.1f}s:")
    line("inclusion proofs generated", inclusion, "proofs/s")
    line("inclusion proofs verified", verifying, "proofs/s")
    line("consistency proofs generated", consistent, "proofs/s")
    for size in (1_000_000, 10_000_000):
        worst_inclusion = max(inclusion_length(i, size) for i in (0, size // 3, size - 1))
        worst_consistency = max(consistency_length(o, size) for o in (1, size // 3, size // 2 + 1, size - 1))
        print(
            f"  at {size:>10,} entries: inclusion proof {worst_inclusion} hashes ({worst_inclusion * HASH} B),"
            f" consistency proof up to {worst_consistency} hashes ({worst_consistency * HASH} B)"
        )
    assert inclusion_length(0, leaves) == len(tree.inclusion_proof(0)), "the computed size matches a real proof"


# -- from the store --------------------------------------------------------------------------

GROWTH = 200_000  # leaves per transaction while building a log's tiles
MODES = ("tile", "path", "floor")


async def grow_log(pool: asyncpg.Pool, origin: str, size: int) -> None:
    """Random leaves' tiles up to ``size``, grown in batches the way the ledger grows them."""
    done = 0
    while done < size:
        batch = [os.urandom(32) for _ in range(min(GROWTH, size - done))]
        await cover_leaves(pool, origin, done, batch)
        done += len(batch)


def leaf_statement(with_path: bool) -> str:
    """The stand-in for the service's leaf statement: the tiles' reach, and the leaf's path if asked ($3)."""
    path = tiles.leaf_path_sql("$1::text", "$2::bigint") if with_path else "NULL::bytea"
    return (
        "SELECT (SELECT tiled_seq FROM origin_progress WHERE origin = $1) AS tiled,"
        f" CASE WHEN $2::bigint > 0 AND $3::boolean THEN {path} END AS path"
    )


async def store_proofs(
    pool: asyncpg.Pool, origin: str, size: int, mode: str, seconds: float, concurrency: int
) -> LoadResult:
    """Proofs of random leaves of ``origin``'s log in ``mode``: "path", "tile" (the leaf's tile read), "floor"."""
    book = LogBook(pool)  # a cold cache, as after a start
    rng = random.Random(size)
    statement = leaf_statement(mode == "path")

    async def call(_: int) -> None:
        seq = rng.randrange(1, size + 1)
        async with pool.acquire() as conn:
            # As the service asks: the path only when the cache lacks the leaf's tile.
            row = await conn.fetchrow(
                statement, origin, seq, mode == "path" and not book.holds_leaf_tile(origin, seq - 1)
            )
            assert row is not None  # one row, whatever the store holds
            if mode == "floor":
                return
            view = book.view(origin, int(row["tiled"]))
            if mode == "tile":
                await view.inclusion_proof(seq - 1, size, conn=conn)
            else:
                await view.inclusion_proof(seq - 1, size, conn=conn, path=bytes(row["path"]) if row["path"] else None)

    return await drive(call, concurrency=concurrency, seconds=seconds)


async def from_store(
    sizes: tuple[int, int], seconds: float, concurrency: int, rounds: int, modes: tuple[str, ...] = MODES
) -> None:
    modes = (*(mode for mode in modes if mode != "floor"), "floor")  # the floor is always measured beside
    async with services() as running:
        pool = await database.open_pool(running.postgres.uri("bench_proofs"), create=True, min_size=4, max_size=20)
        try:
            started = time.perf_counter()
            for size in sizes:
                await grow_log(pool, f"log{size}", size)
            print(
                f"\nfrom the store: tiles of logs of {sizes[0]:,} and {sizes[1]:,} leaves built in"
                f" {time.perf_counter() - started:.1f}s; {rounds} alternating rounds, {concurrency} concurrent,"
                " a cold tile cache each round",
                flush=True,
            )
            measured: dict[tuple[str, int], list[LoadResult]] = {}
            spent: dict[tuple[str, int], list[tuple[float, float]]] = {}  # per call: this process's CPU, PostgreSQL's
            for round_ in range(rounds):
                for mode in modes:
                    for size in sizes:
                        database_cpu = postgres_cpu(running.postgres)
                        result, cpu = await cpu_per_call(
                            store_proofs(pool, f"log{size}", size, mode, seconds, concurrency)
                        )
                        calls = result.rate * (result.seconds + WARMUP_SECONDS)
                        database_ms = (postgres_cpu(running.postgres) - database_cpu) * 1000 / max(calls, 1.0)
                        measured.setdefault((mode, size), []).append(result)
                        spent.setdefault((mode, size), []).append((cpu, database_ms))
                        print(
                            f"  round {round_ + 1} {mode:<5} at {size:>10,}: {result.rate:>8,.0f}/s"
                            f" p50 {result.p50:.1f} p99 {result.percentile(0.99):.1f} ms,"
                            f" CPU per call {cpu:.3f} ms here + {database_ms:.3f} ms PostgreSQL",
                            flush=True,
                        )
        finally:
            await pool.close()
    names = {
        "tile": "proof, the leaf's tile read (before)",
        "path": "proof, the leaf's path read with the leaf",
        "floor": "the leaf statement alone (raw floor)",
    }
    for mode in modes:
        at = {size: merged(measured[(mode, size)]) for size in sizes}
        for size in sizes:
            floor = merged(measured[("floor", size)])
            line(f"{names[mode]} at {size:,}", at[size].rate, "proofs/s", floor.rate, "leaf statement alone")
            print(f"  {'  p50 / p99':<44} {at[size].p50:>9.1f} / {at[size].percentile(0.99):.1f} ms")
            here = [cpu for cpu, _ in spent[(mode, size)]]
            there = [database for _, database in spent[(mode, size)]]
            print(
                f"  {'  CPU per call: here / PostgreSQL':<44} {min(here):>9.3f} / {min(there):.3f} ms"
                " (least of the rounds)"
            )
        low, high = at[sizes[0]].percentile(0.99), at[sizes[1]].percentile(0.99)
        print(f"  {'  p99 at ' + f'{sizes[1]:,} / at {sizes[0]:,}':<44} {high / low if low else float('nan'):>9.2f}x")


async def cpu_per_call(running: Awaitable[LoadResult]) -> tuple[LoadResult, float]:
    """The load's result, and this process's CPU (the node or the echo server, not the load generator) per call.

    The rate alone hides a busy machine: a faster handler shows as less CPU per call even when
    the cores are shared with other work. Calls in the load's warm-up second are counted at the
    measured rate, since the CPU clock runs through it too.
    """
    started = time.process_time()
    result = await running
    spent = time.process_time() - started
    calls = result.rate * (result.seconds + WARMUP_SECONDS)
    return result, spent * 1000 / max(calls, 1.0)


def cpu_line(name: str, ms: float, echo_ms: float | None = None) -> None:
    beside = f"   ({ms / echo_ms:.1f}x raw gRPC echo's {echo_ms:.3f} ms)" if echo_ms else ""
    print(f"  {name:<44} {ms:>12.3f} ms{beside}", flush=True)


async def served(rows: int, seconds: float, concurrency: int) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0))
        members = federation(running)
        try:
            node = await start_node(members, running, "310000")
            report, _, _ = await ingest_and_publish(node, sample)
            while (await node.status()).checkpoints.get("310000", (0,))[0] < report.new:
                await asyncio.sleep(0.2)
            tls = members.layout.member_dir("320000") / "tls"
            peer_tls = (members.layout.ca_dir / "ca.crt", tls / "node.crt", tls / "node.key")
            keys = ["310000", str(report.new)]
            inclusion, inclusion_cpu = await cpu_per_call(
                load("inclusion", node.port, peer_tls, keys, seconds, concurrency)
            )
            consistency, consistency_cpu = await cpu_per_call(
                load("consistency", node.port, peer_tls, keys, seconds, concurrency)
            )
        finally:
            await members.stop()
        echo_server, echo_port = await start_echo(members)
        try:
            echo, echo_cpu = await cpu_per_call(
                load("echo", echo_port, members.layout.client_tls(), ["91310000600037341L"], seconds, concurrency)
            )
        finally:
            await echo_server.stop(None)
    print(f"\nserved over gRPC from a log of {report.new:,} events ({concurrency} concurrent calls):")
    line("GetInclusionProof", inclusion.rate, "req/s", echo.rate, "raw gRPC echo")
    print(f"  {'  latency p50 / p99':<44} {inclusion.p50:>9.1f} / {inclusion.percentile(0.99):.1f} ms")
    cpu_line("  node CPU per call", inclusion_cpu, echo_cpu)
    line("GetConsistencyProof", consistency.rate, "req/s", echo.rate, "raw gRPC echo")
    print(f"  {'  latency p50 / p99':<44} {consistency.p50:>9.1f} / {consistency.percentile(0.99):.1f} ms")
    cpu_line("  node CPU per call", consistency_cpu, echo_cpu)
    line("raw gRPC echo", echo.rate, "req/s")
    cpu_line("  echo server CPU per call", echo_cpu)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store-sizes", default="30000,3000000", help="the two logs' sizes for proofs from the store")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of proofs from the store")
    parser.add_argument("--only-store", action="store_true", help="measure proofs from the store only")
    parser.add_argument("--modes", default=",".join(MODES), help="which proofs from the store: tile, path, floor")
    args = parser.parse_args()
    small, big = (int(n) for n in args.store_sizes.split(","))
    if not args.only_store:
        in_memory(args.leaves)
    modes = tuple(mode for mode in args.modes.split(",") if mode in MODES)
    run(from_store((small, big), args.seconds, args.concurrency, max(1, args.rounds), modes))
    if not args.only_store:
        run(served(args.rows, args.seconds, args.concurrency))
