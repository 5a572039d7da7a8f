"""Proofs: inclusion and consistency proofs served per second, and their size as logs grow.

    python -m bench.proofs [--rows 100000] [--seconds 8]

Part one builds a Merkle tree of one million leaves in memory and times proof
generation and verification there. Part two serves proofs over gRPC (mutual TLS)
from a node holding a real log, driven from another process, beside a bare gRPC
echo server under the same load. Proof sizes at 1M are measured; at 10M they are
computed from the RFC 6962 recursion, which needs no hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Awaitable

from bench.common import LoadResult, federation, ingest_and_publish, line, load, run, services, start_node
from bench.lookup import start_echo
from credex.adapters.samples import synth
from credex.crypto.merkle import MerkleTree, verify_consistency, verify_inclusion

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
    args = parser.parse_args()
    in_memory(args.leaves)
    run(served(args.rows, args.seconds, args.concurrency))
