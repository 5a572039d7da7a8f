"""Intake: a peer's events and checkpoints verified and applied from Kafka.

    python -m bench.intake [--rows 100000]

One node takes in a file and publishes its log; once the log is on the broker a
second node starts and takes all of it in. Prints events/s verified and applied
beside the raw Ed25519 verification rate (one core and all cores) and the raw
consume rate. The time runs until the peer holds the whole log and has verified
the origin's checkpoint against its own tree.

How the work is spread: verification runs in worker threads, one slice of each
batch per core (Ed25519 verification releases the GIL); storing batch N in
PostgreSQL (another process) overlaps with verifying batch N+1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.common import federation, ingest_and_publish, line, raw_ed25519, raw_produce_consume, services, start_node
from credex.adapters.samples import synth


async def main(rows: int) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0))
        members = federation(running)
        try:
            origin = await start_node(members, running, "310000")
            report, _, _ = await ingest_and_publish(origin, sample)
            print(f"{report.new:,} events of 310000 on the broker; starting 320000", flush=True)
            # Sync stays out of the way: this measures the Kafka path.
            started = time.perf_counter()
            peer = await start_node(members, running, "320000", sync={"probe_seconds": 3600})
            while True:
                status = await peer.status()
                if (
                    status.contiguous_by_origin.get("310000", 0) >= report.new
                    and status.checkpoints.get("310000", (0,))[0] >= report.new
                ):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            counters = (await peer.status()).intake_counters["310000"]
        finally:
            await members.stop()
        _, verifying = raw_ed25519()
        _, consuming = await raw_produce_consume(running.broker.bootstrap_servers, n=min(rows, 50000))
    print(f"\nintake of {report.new:,} events: {counters}")
    cores = os.cpu_count() or 1
    line("events verified and applied", report.new / elapsed, "ev/s", verifying, "raw Ed25519 verify")
    line(
        "  the same, against all cores", report.new / elapsed, "ev/s", verifying * cores, f"raw verify x {cores} cores"
    )
    line("raw Ed25519 verify (one core)", verifying, "ver/s")
    line("raw consume", consuming, "msg/s")
    print(f"  {'time from peer start to complete':<44} {elapsed:>9.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100000)
    asyncio.run(main(parser.parse_args().rows))
