"""Ingest: national-format CSV rows to signed, stored and published events.

    python -m bench.ingest [--rows 200000] [--profile]

Prints records/s to "signed and stored" and to "published" (acknowledged by the
broker), beside the raw Ed25519 signing rate and the raw COPY rate measured in
the same run.

Two diagnostics follow. The store floor: the very rows the ingest left in the
ledger's tables (events, records, subjects, log_tiles), COPYed again, batch by
batch, into empty copies of those tables with the same indexes; what PostgreSQL
alone needs to take them, with no signing, mapping or upsert logic, bounds what
any store step can reach. And the bytes per stored event, by table and index.

``--profile`` also prints where the time went (see :mod:`bench.cpu`): CPU by process
(the mapping and signature workers are the node's child processes) and the store's
statements. cProfile slows the event loop, so a profiled run's rates are not the benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass

import asyncpg

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
from bench.cpu import Breakdown
from credex.adapters.samples import synth
from credex.node.runtime import Node
from credex.node.store import Connection

# The tables the ledger writes per batch, in the order it writes them (a record's state: record_states,
# the table behind the view records).
STORED = ("events", "record_states", "subjects", "log_tiles")


FLOOR_BATCH = 2000  # events per transaction, as the node's default ingest batch


@dataclass
class Floor:
    """Events/s of COPYing the stored rows into same-indexed empty tables, and the seconds per table."""

    events: int
    seconds: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / sum(self.seconds.values())


async def store_floor(conn: Connection, sample: int) -> Floor:
    """COPY the first ``sample`` events' rows again, a batch per transaction, into ``LIKE ... INCLUDING ALL`` copies.

    Each batch takes the events of its seqs, the records whose state they left, the subjects
    those records name for the first time, and its share of the tiles (a tile row once, as
    finally stored; the ledger rewrites a partial tile per batch, which this floor does not).
    """
    await conn.execute("DROP SCHEMA IF EXISTS store_floor CASCADE; CREATE SCHEMA store_floor")
    states = STORED[1]
    for table in STORED:
        await conn.execute(f"CREATE TABLE store_floor.{table} (LIKE public.{table} INCLUDING ALL)")
    origin = await conn.fetchval("SELECT origin FROM ledger_head ORDER BY seq DESC LIMIT 1")
    batches: list[dict[str, list[asyncpg.Record]]] = []
    seen: set[str] = set()
    for first in range(1, sample + 1, FLOOR_BATCH):
        last = min(first + FLOOR_BATCH - 1, sample)
        rows = {
            "events": await conn.fetch(
                "SELECT * FROM events WHERE origin = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq", origin, first, last
            ),
            states: await conn.fetch(
                f"SELECT * FROM {states} WHERE origin = $1 AND seq BETWEEN $2 AND $3", origin, first, last
            ),
        }
        subjects = await conn.fetch(
            "SELECT * FROM subjects WHERE subject_id = ANY($1::text[])",
            list({r["subject_id"] for r in rows[states]} - seen),
        )
        seen.update(r["subject_id"] for r in subjects)
        rows["subjects"] = subjects
        rows["log_tiles"] = await conn.fetch(
            "SELECT * FROM log_tiles WHERE origin = $1 AND level = 0 AND idx * 256 >= $2 - 1 AND idx * 256 < $3"
            " UNION ALL SELECT * FROM log_tiles WHERE origin = $1 AND level > 0 AND $2 = 1",
            origin,
            first,
            last,
        )
        batches.append(rows)
    seconds = dict.fromkeys(STORED, 0.0)
    for rows in batches:
        async with conn.transaction():
            for table in STORED:
                if rows[table]:
                    started = time.perf_counter()
                    await conn.copy_records_to_table(
                        table,
                        schema_name="store_floor",
                        records=[tuple(r.values()) for r in rows[table]],
                        columns=list(rows[table][0].keys()),
                    )
                    seconds[table] += time.perf_counter() - started
    await conn.execute("DROP SCHEMA store_floor CASCADE")
    return Floor(min(sample, sum(len(b["events"]) for b in batches)), seconds)


async def bytes_per_event(conn: Connection) -> list[tuple[str, float]]:
    """Bytes on disk per stored event: each table whole, its heap with TOAST, and each of its indexes."""
    events = int(await conn.fetchval("SELECT count(*) FROM events")) or 1
    lines: list[tuple[str, float]] = []
    for table in STORED:
        total = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        heap = await conn.fetchval("SELECT pg_table_size($1::regclass)", table)
        lines.append((f"{table} (all)", total / events))
        lines.append((f"  {table} heap + TOAST", heap / events))
        for index in await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS size FROM pg_index"
            " WHERE indrelid = $1::regclass ORDER BY 2 DESC",
            table,
        ):
            lines.append((f"  index {index['name']}", index["size"] / events))
    lines.append(("the four tables", sum(v for k, v in lines if k.endswith("(all)"))))
    return lines


async def diagnose(node: Node, sample: int) -> tuple[Floor, list[tuple[str, float]]]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        sizes = await bytes_per_event(conn)
        return await store_floor(conn, sample), sizes


async def main(rows: int, profile: bool) -> None:
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
            breakdown = Breakdown(running.postgres.pid, running.broker.pid)
            with breakdown if profile else contextlib.nullcontext():
                report, stored, published = await ingest_and_publish(node, sample)
            signing, _, spread = raw_ed25519_around(limit_before)
            floor, sizes = await diagnose(node, min(report.new, 50000))
        finally:
            await members.stop()
        assert report.rows_in == report.accepted + report.quarantined
        copy = await raw_copy(running.postgres.uri("postgres"), min(rows, 100000))
        produce, _ = await raw_produce_consume(running.broker.bootstrap_servers, n=min(rows, 50000))
    if profile:
        breakdown.print(report.new)
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
    line(f"store floor: COPY of {floor.events:,} events' rows", floor.rate, "ev/s", copy, "raw COPY")
    print(f"  {'  (the floor beside raw Ed25519 sign)':<44} {floor.rate / signing:.0%} of {signing:,.0f} sig/s")
    per = ", ".join(f"{t} {s / floor.events * 1e6:.0f}" for t, s in floor.seconds.items())
    print(f"  {'  (same tables and indexes; µs per event)':<44} {per}")
    print("\nbytes on disk per stored event:")
    for name, size in sizes:
        print(f"  {name:<44} {size:>9,.0f} B")
    line("raw produce, acks=all", produce, "msg/s")
    print(f"  {'time to stored / published':<44} {stored:>9.1f}s / {published:.1f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--profile", action="store_true", help="also print where the time went (slows the run)")
    arguments = parser.parse_args()
    run(main(arguments.rows, arguments.profile))
