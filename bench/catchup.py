"""Catch-up: a node that missed a log of many events becomes complete again over gRPC sync.

    python -m bench.catchup [--rows 100000] [--profile]

The origin takes a file in and publishes; then a peer starts on an empty broker,
so Kafka cannot help and every event comes over FetchEvents: fetched in rounds
of concurrent requests, each round verified in the signature worker processes
and stored while the next is fetched. Prints the time from the peer's start to a complete, checkpoint-verified
copy, beside the raw Ed25519 verification rate. ``--profile``: also where the time went
(:mod:`bench.cpu`; profiling slows the event loop, so not the benchmark's figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

from bench.common import (
    federation,
    ingest_and_publish,
    line,
    raw_ed25519,
    raw_ed25519_around,
    run,
    services,
    start_node,
)
from bench.complete import holds_whole_log
from bench.cpu import Breakdown
from credex.adapters.samples import synth
from credex.node.embedded import EmbeddedBroker


async def main(rows: int, profile: bool) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0))
        members = federation(running)
        try:
            origin = await start_node(members, running, "310000")
            report, _, _ = await ingest_and_publish(origin, sample)
            while (await origin.status()).checkpoints.get("310000", (0,))[0] < report.new:
                await asyncio.sleep(0.2)
            print(f"{report.new:,} events of 310000 signed, stored and checkpointed; starting 320000", flush=True)
            with EmbeddedBroker(running.root / "empty-broker") as empty:
                limit_before = raw_ed25519()
                breakdown = Breakdown(running.postgres.pid, running.broker.pid)
                started = time.perf_counter()
                with breakdown if profile else contextlib.nullcontext():
                    peer = await start_node(
                        members,
                        running,
                        "320000",
                        bus={"bootstrap_servers": empty.bootstrap_servers},
                        sync={"probe_seconds": 1.0},
                    )
                    await holds_whole_log(peer, "310000", report.new, every=0.1)
                elapsed = time.perf_counter() - started
                _, verifying, spread = raw_ed25519_around(limit_before)
                fetched = (await peer.status()).intake_counters["310000"]
                await members.stop_node("320000")
        finally:
            await members.stop()
    if profile:
        breakdown.print(report.new)
    print(f"\ncatch-up of {report.new:,} events over gRPC: {fetched}")
    line(
        "events fetched, verified and applied",
        report.new / elapsed,
        "ev/s",
        verifying * (os.cpu_count() or 1),
        f"raw Ed25519 verify x {os.cpu_count()} cores",
    )
    print(f"  {'  (mean of the raw limit around the run)':<44} {spread}")
    print(f"  {'time to a complete, verified copy':<44} {elapsed:>9.1f}s (goal: under 30 s for 100,000)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--profile", action="store_true", help="also print where the time went (slows the run)")
    arguments = parser.parse_args()
    run(main(arguments.rows, arguments.profile))
