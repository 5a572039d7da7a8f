"""Quality report: ``credex.node.quality.compute`` over a node holding N records.

    python -m bench.quality [--records 1000000]

The records are not taken in through the ledger (that is ``bench.ingest``'s
figure, and at a million rows it would take most of the run): realistic record
rows and their events are written with COPY straight into a migrated database,
then the report is timed. Printed beside it, measured in the same run on the
same data: the raw COPY rate, a bare fetch of the records and their first
events (the report's read) and a bare protobuf decode of every record — the
work a report cannot avoid, so the ratios say how much the report adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator

from bench.common import line, raw_copy, run, services
from credex.node.quality import compute
from credex.node.store import Connection
from credex.node.store.database import open_pool
from credex.node.store.events import EVENT_COLUMNS, RECORD_COLUMNS
from credex.v1 import record_pb2

ORIGIN = "310000"
UNITS = 40  # source units (数据来源单位), as a province's districts and departments
BATCH = 20000
RECORDED = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def _uscc(rng: random.Random) -> str:
    return "91310" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(13))


def generated_rows(n: int, seed: int = 1) -> Iterator[tuple[str, bytes, dt.datetime]]:
    """``(record_id, record bytes, recorded_at)`` of licences and penalties spread over the source units.

    One subject code in 200 is published under a second name (重码), decisions
    fall over the year before taking-in so that some miss the 及时 deadline.
    """
    rng = random.Random(seed)
    units = [(_uscc(rng), f"上海市第{i + 1}数据来源单位") for i in range(UNITS)]
    subjects = [(_uscc(rng), f"上海样本企业{i}有限公司") for i in range(max(1, n // 5))]
    for i in range(n):
        code, name = rng.choice(subjects)
        if rng.random() < 0.005:
            name += "（分公司）"
        unit_code, unit_name = units[i % UNITS]
        penalty = i % 3 == 0
        record = record_pb2.Record(
            record_id=f"{ORIGIN}-{'CF' if penalty else 'XK'}-{i:012x}",
            origin=ORIGIN,
            kind=record_pb2.KIND_PENALTY if penalty else record_pb2.KIND_LICENCE,
            decision_date=(RECORDED.date() - dt.timedelta(days=rng.randrange(1, 365))).isoformat(),
            document_number=f"沪市监{'罚' if penalty else '许'}〔2026〕{i}号",
        )
        record.subject.uscc, record.subject.name = code, name
        record.subject.type = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
        record.source_unit.uscc, record.source_unit.name = unit_code, unit_name
        record.deciding_authority.uscc, record.deciding_authority.name = unit_code, unit_name
        record.publicity.end = (RECORDED.date() + dt.timedelta(days=365 * 3)).isoformat()
        yield record.record_id, record.SerializeToString(deterministic=True), RECORDED


async def load(conn: Connection, n: int) -> float:
    """COPY ``n`` records and one event each; return the seconds taken (generation included)."""
    started = time.perf_counter()
    rows = generated_rows(n)
    seq = 0
    while True:
        batch = [row for _, row in zip(range(BATCH), rows, strict=False)]
        if not batch:
            break
        records, events = [], []
        for record_id, encoded, recorded_at in batch:
            seq += 1
            subject = f"uscc:{record_id}"  # rows in the order of RECORD_COLUMNS and EVENT_COLUMNS
            records.append((record_id, ORIGIN, subject, 1, seq, 1, 1, None, b"\0" * 32, encoded, False))
            events.append((ORIGIN, seq, uuid.uuid4(), 1, record_id, subject, b"", recorded_at, bytes(32)))
        async with conn.transaction():
            await conn.copy_records_to_table("record_states", records=records, columns=RECORD_COLUMNS)
            await conn.copy_records_to_table("events", records=events, columns=EVENT_COLUMNS)
    await conn.execute("ANALYZE record_states; ANALYZE events")
    return time.perf_counter() - started


async def raw_read_and_decode(conn: Connection) -> tuple[float, float, int]:
    """(rows/s of the bare read, records/s of the bare decode, rows) — the floor under any report."""
    started = time.perf_counter()
    rows = await conn.fetch(
        "SELECT r.record, t.taken FROM records r LEFT JOIN (SELECT record_id, min(recorded_at) AS taken"
        " FROM events WHERE origin = $1 GROUP BY record_id) t ON t.record_id = r.record_id WHERE r.origin = $1",
        ORIGIN,
    )
    read = time.perf_counter() - started
    started = time.perf_counter()
    for row in rows:
        record_pb2.Record.FromString(row["record"])
    decode = time.perf_counter() - started
    return len(rows) / read, len(rows) / decode, len(rows)


async def main(n: int) -> None:
    async with services() as running:
        url = running.postgres.uri(f"bench_quality_{uuid.uuid4().hex[:8]}")
        pool = await open_pool(url, create=True, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                loaded = await load(conn, n)
                print(f"loaded {n:,} records and their events by COPY in {loaded:.1f}s", flush=True)
                read, decode, held = await raw_read_and_decode(conn)
            started = time.perf_counter()
            units = await compute(pool, ORIGIN, deadline_days=7)
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
        copy = await raw_copy(running.postgres.uri("postgres"), min(n, 100000))
    assert held == n and sum(u.accepted for u in units) == n, "the report must count every record once"
    print(f"\nquality report over {n:,} records of {len(units)} source units: {seconds:.1f}s")
    floor = 1 / (1 / read + 1 / decode)  # reading and decoding every record, nothing else
    line("records judged by the quality report", n / seconds, "rec/s", floor, "raw read+decode")
    line("raw read and decode, one after the other", floor, "rec/s")
    line("raw read of records and first events", read, "rows/s")
    line("raw protobuf decode of every record", decode, "rec/s")
    line("raw COPY of event-sized rows", copy, "rows/s")
    line("load by COPY (generation included)", n / loaded, "rec/s", copy, "raw COPY")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    run(main(parser.parse_args().records))
