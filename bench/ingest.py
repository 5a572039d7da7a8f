"""Ingest: national-format CSV rows to signed, stored and published events.

    python -m bench.ingest [--rows 200000]

Prints records/s to "signed and stored" and to "published" (acknowledged by the
broker), beside the raw Ed25519 signing rate and the raw COPY rate measured in
the same run.
"""

from __future__ import annotations

import argparse
import time

from bench.common import (
    federation,
    ingest_and_publish,
    line,
    raw_copy,
    raw_ed25519,
    raw_ed25519_around,
    raw_produce_consume,
    run,
    services,
    start_node,
)
from credex.adapters.samples import synth


async def main(rows: int) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        started = time.perf_counter()
        summary = synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.02))
        print(
            f"generated {rows:,} rows ({sample.stat().st_size / 1e6:.0f} MB, {summary.bad} deliberately bad)"
            f" in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        members = federation(running)
        node = await start_node(members, running, "310000")
        try:
            limit_before = raw_ed25519()
            report, stored, published = await ingest_and_publish(node, sample)
            signing, _, spread = raw_ed25519_around(limit_before)
        finally:
            await members.stop()
        assert report.rows_in == report.accepted + report.quarantined
        copy = await raw_copy(running.postgres.uri("postgres"), min(rows, 100000))
        produce, _ = await raw_produce_consume(running.broker.bootstrap_servers, n=min(rows, 50000))
    print(
        f"\ningest of {report.rows_in:,} rows: {report.accepted:,} accepted, {report.quarantined:,} quarantined,"
        f" {report.new:,} events"
    )
    line("rows mapped, signed and stored", report.rows_in / stored, "rows/s")
    line("records signed and stored", report.new / stored, "rec/s", signing, "raw Ed25519 sign")
    line("records signed, stored and published", report.new / published, "rec/s", copy, "raw COPY")
    line("raw Ed25519 sign (one core)", signing, "sig/s")
    print(f"  {'  (mean of the raw limit around the run)':<44} {spread}")
    line("raw COPY of event-sized rows", copy, "rows/s")
    line("raw produce, acks=all", produce, "msg/s")
    print(f"  {'time to stored / published':<44} {stored:>9.1f}s / {published:.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200000)
    run(main(parser.parse_args().rows))
