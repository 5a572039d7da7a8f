"""Expiry: the origin's daily job signing EXPIRE for records whose publicity window has ended.

    python -m bench.expiry [--records 50000] [--batch 500]

Prints records/s expired (selected, signed, stored, one transaction per batch) beside
the raw Ed25519 signing rate measured in the same run, and the same records' append
rate (UPSERTs through the same ledger) as the ledger's own ceiling on this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from bench.common import federation, line, raw_ed25519, run, services, start_node
from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.ledger import Change
from credex.node.ledger.expiry import expire_due
from credex.v1 import record_pb2

APPEND_BATCH = 2000


def lapsed(n: int, end: str) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"310000-CF-bench{n}",
        origin="310000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=uscc_codes.make("91", "310000", f"{n:08d}"), name=f"企业{n}"
        ),
        decision_date="2025-01-06",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2025-01-06", end=end),
        penalty=record_pb2.PenaltyDetails(content="罚款 5000 元", severity=record_pb2.SEVERITY_GENERAL),
    )


async def main(records: int, batch: int) -> None:
    end = (publicity_today() - dt.timedelta(days=1)).isoformat()
    async with services() as running:
        members = federation(running)
        node = await start_node(members, running, "310000", expiry={"enabled": False})
        try:
            assert node.pool is not None
            started = time.perf_counter()
            for first in range(0, records, APPEND_BATCH):
                changes = [Change.of(lapsed(n, end)) for n in range(first, min(first + APPEND_BATCH, records))]
                async with node.pool.acquire() as conn, conn.transaction():
                    await node.ledger.append(conn, changes)
            appended = time.perf_counter() - started
            started = time.perf_counter()
            run = await expire_due(node.pool, node.ledger, batch)
            expired = time.perf_counter() - started
            started = time.perf_counter()
            again = await expire_due(node.pool, node.ledger, batch)
            idle = time.perf_counter() - started
        finally:
            await members.stop()
    assert run.expired == records and again.expired == 0
    signing, _ = raw_ed25519()
    print(f"\nexpiry of {records:,} lapsed records in {run.batches} batches of {batch}")
    line("records expired (signed, stored)", records / expired, "rec/s", signing, "raw Ed25519 sign")
    line("records appended (same ledger, UPSERT)", records / appended, "rec/s", signing, "raw Ed25519 sign")
    line("raw Ed25519 sign (one core)", signing, "sig/s")
    print(f"  {'a second run, nothing due':<44} {idle * 1000:>9.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--batch", type=int, default=500)
    arguments = parser.parse_args()
    run(main(arguments.records, arguments.batch))
