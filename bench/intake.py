"""Intake: a peer's events and checkpoints verified and applied from Kafka.

    python -m bench.intake [--rows 100000] [--profile]

One node takes in a file and publishes its log; once the log is on the broker a
second node starts and takes all of it in. Prints events/s verified and applied
beside the raw Ed25519 verification rate (one core and all cores) and the raw
consume rate. The time runs until the peer holds the whole log and has verified
the origin's checkpoint against its own tree.

How the work is spread: the signatures of a batch are checked in the node's
signature worker processes, one slice per core (``cryptography``'s Ed25519 holds
the GIL, so threads would not help); storing batch N in PostgreSQL (another
process) overlaps with verifying batch N+1. Withheld events (persons never cross
the bus) are fetched by sync in rounds of concurrent requests, up to the seq each
notice announces.

``--profile`` also prints where the time went (see :mod:`bench.cpu`): CPU by process
and thread, event-loop CPU by stage, and PostgreSQL time by statement. Profiling
slows the event loop, so the figures of a profiled run are not the benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

from bench.common import (
    federation,
    ingest_and_publish,
    line,
    raw_ed25519,
    raw_ed25519_around,
    raw_produce_consume,
    run,
    services,
    start_node,
)
from bench.complete import holds_whole_log
from bench.cpu import Breakdown
from credex.adapters.samples import synth


async def main(rows: int, profile: bool) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0))
        members = federation(running)
        try:
            origin = await start_node(members, running, "310000")
            report, _, _ = await ingest_and_publish(origin, sample)
            print(f"{report.new:,} events of 310000 on the broker; starting 320000", flush=True)
            # Sync stays out of the way: this measures the Kafka path.
            limit_before = raw_ed25519()
            breakdown = Breakdown(running.postgres.pid, running.broker.pid)
            watching = breakdown if profile else contextlib.nullcontext()
            started = time.perf_counter()
            with watching:
                peer = await start_node(members, running, "320000", sync={"probe_seconds": 3600})
                await holds_whole_log(peer, "310000", report.new)
            elapsed = time.perf_counter() - started
            _, verifying, spread = raw_ed25519_around(limit_before)
            counters = (await peer.status()).intake_counters["310000"]
        finally:
            await members.stop()
        _, consuming = await raw_produce_consume(running.broker.bootstrap_servers, n=min(rows, 50000))
    if profile:
        breakdown.print(report.new)
    print(f"\nintake of {report.new:,} events: {counters}")
    cores = os.cpu_count() or 1
    line("events verified and applied", report.new / elapsed, "ev/s", verifying, "raw Ed25519 verify")
    line(
        "  the same, against all cores", report.new / elapsed, "ev/s", verifying * cores, f"raw verify x {cores} cores"
    )
    line("raw Ed25519 verify (one core)", verifying, "ver/s")
    print(f"  {'  (mean of the raw limit around the run)':<44} {spread}")
    line("raw consume", consuming, "msg/s")
    print(f"  {'time from peer start to complete':<44} {elapsed:>9.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--profile", action="store_true", help="also print where the time went (slows the run)")
    arguments = parser.parse_args()
    run(main(arguments.rows, arguments.profile))
