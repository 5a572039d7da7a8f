"""Checks: Check of 1 subject, Check of 100 subjects and Search, beside GetProfile and the raw gRPC echo.

    python -m bench.checks [--records 1000000] [--seconds 12] [--rounds 3] [--concurrency 16] [--kinds profile,…]

The node holds N records (five per subject, a tenth of them on a serious-dishonesty list,
a tenth serious penalties), COPYed straight into its migrated store as bench.quality does
(taking a million records in through the ledger is bench.ingest's figure, not this one's),
and serves gRPC with mutual TLS and its audit trail; the bus is off, since nothing here
crosses it. A load generator in another process drives each kind of call for the same
time at the same concurrency, and the same load drives a bare gRPC echo server on the
same TLS credentials in the same process: the raw limit. The kinds take turns, in
rounds, so that a neighbour's burst on a shared machine falls on all of them alike; the
ratios of each round are printed too. Targets: a one-subject Check at ≥ 0.8× the
GetProfile rate and one 100-subject Check ≥ 20× faster than 100 single Checks (issue
9); GetProfile ≥ 0.6× the raw echo (issue 12).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator

from bench.common import LOAD_CHANNELS, LoadResult, federation, line, load, raw_copy, run, services
from bench.lookup import start_echo
from credex.domain import uscc as uscc_codes
from credex.node.runtime import Node
from credex.node.store import Connection
from credex.node.store.events import EVENT_COLUMNS, RECORD_COLUMNS, backfill_subjects
from credex.v1 import record_pb2

ORIGIN = "310000"
PER_SUBJECT = 5
BATCH = 20000
TODAY = dt.date.today()
UNIT = uscc_codes.make("11", "310000", "HCG00001")  # the Shanghai procurement office that checks
_WORDS = "华申浦江沪东海宏远鑫达恒泰安盛源丰茂瑞祥和兴隆昌盛"


def subjects(n: int, seed: int = 1) -> list[tuple[str, str]]:
    """``n`` (USCC, name) pairs of Shanghai companies with names made of common trade words."""
    rng = random.Random(seed)
    made = []
    for i in range(n):
        org8 = f"{i:08d}"
        name = "上海" + "".join(rng.choice(_WORDS) for _ in range(3)) + f"{i % 97}号贸易有限公司"
        made.append((uscc_codes.make("91", "310115", org8), name))
    return made


def generated(people: list[tuple[str, str]], n: int) -> Iterator[tuple[tuple[object, ...], tuple[object, ...]]]:
    """(records row, events row) of ``n`` records, :data:`PER_SUBJECT` per subject, in the columns' order."""
    window_end = TODAY + dt.timedelta(days=365 * 3)
    for i in range(n):
        code, name = people[i // PER_SUBJECT]
        record = record_pb2.Record(
            record_id=f"{ORIGIN}-R-{i:010d}",
            origin=ORIGIN,
            decision_date=(TODAY - dt.timedelta(days=30 + i % 300)).isoformat(),
            sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        )
        record.subject.uscc, record.subject.name = code, name
        record.subject.type = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
        record.publicity.end = window_end.isoformat()
        if i % 10 == 0:
            record.kind = record_pb2.KIND_BLACK_LIST
            record.black_list.list_name = "严重失信主体名单"
        elif i % 10 == 1:
            record.kind = record_pb2.KIND_PENALTY
            record.penalty.severity = record_pb2.SEVERITY_SERIOUS
        else:
            record.kind = record_pb2.KIND_LICENCE
        encoded = record.SerializeToString(deterministic=True)
        seq = i + 1
        yield (
            (record.record_id, ORIGIN, code, record.kind, seq, 1, 1, window_end, bytes(32), encoded, False),
            (ORIGIN, seq, uuid.uuid4(), 1, record.record_id, code, b"", dt.datetime.now(dt.UTC), bytes(32)),
        )


async def fill(conn: Connection, people: list[tuple[str, str]], n: int) -> float:
    """COPY ``n`` records and their events, then make the subjects searchable; the seconds taken."""
    assert len(RECORD_COLUMNS) == 11 and len(EVENT_COLUMNS) == 9, "the rows below follow the store's columns"
    started = time.perf_counter()
    rows = generated(people, n)
    while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
        async with conn.transaction():
            await conn.copy_records_to_table("records", records=[r for r, _ in batch], columns=RECORD_COLUMNS)
            await conn.copy_records_to_table("events", records=[e for _, e in batch], columns=EVENT_COLUMNS)
    await backfill_subjects(conn)
    await conn.execute("ANALYZE records; ANALYZE events; ANALYZE subjects")
    return time.perf_counter() - started


KINDS = ("profile", "check1", "check100", "search")


def merged(rounds: list[LoadResult]) -> LoadResult:
    """One kind's rounds as one result: calls and seconds summed, latencies pooled."""
    return LoadResult(
        sum(r.requests for r in rounds),
        sum(r.errors for r in rounds),
        sum(r.seconds for r in rounds),
        [ms for r in rounds for ms in r.latencies_ms],
    )


async def main(n: int, seconds: float, concurrency: int, kinds: tuple[str, ...] = KINDS, rounds: int = 3) -> None:
    people = subjects(max(1, n // PER_SUBJECT))
    async with services() as running:
        members = federation(running)
        node = Node(
            members.config(
                ORIGIN,
                database={"url": running.postgres.uri(f"bench_checks_{uuid.uuid4().hex[:8]}"), "pool_max": 20},
                grpc={"max_concurrent_calls_per_caller": max(16, concurrency)},
            )
        )
        await node.start(exchange=False)
        try:
            assert node.pool is not None
            async with node.pool.acquire() as conn:
                loaded = await fill(conn, people, n)
                held = await conn.fetchval("SELECT count(*) FROM records")
            print(f"loaded {held:,} records of {len(people):,} subjects by COPY in {loaded:.0f}s", flush=True)
            print(
                f"load: {concurrency} concurrent calls over {LOAD_CHANNELS} channels for {seconds:.0f}s each"
                f" ({rounds} rounds of {seconds / rounds:.1f}s, interleaved), from another process",
                flush=True,
            )
            tls, codes = members.layout.client_tls(), [code for code, _ in people]
            fragments = [name[2:5] for _, name in random.Random(2).sample(people, 2000)]
            keys_of = {"profile": codes, "check1": [UNIT, *codes], "check100": [UNIT, *codes], "search": fragments}
            # The echo server shares the node's process (idle while the node is driven, and the node while it is):
            # every round drives each kind in turn, so a neighbour's burst on this shared machine falls on all alike.
            echo_server, echo_port = await start_echo(members)
            results: dict[str, list[LoadResult]] = {}
            # CPU seconds of the serving process (every thread; the load runs in another process) per kind:
            # unlike a rate, it hardly moves when the neighbours take the machine's cores.
            cpu_of: dict[str, float] = {}
            try:
                for round_ in range(rounds):
                    for kind in (*kinds, "echo") if set(kinds) == set(KINDS) else kinds:
                        port, keys = (echo_port, codes[:1]) if kind == "echo" else (node.port, keys_of[kind])
                        cpu = time.process_time()
                        got = await load(kind, port, tls, keys, seconds / rounds, concurrency)
                        cpu_of[kind] = cpu_of.get(kind, 0.0) + time.process_time() - cpu
                        results.setdefault(kind, []).append(got)
                        print(f"  round {round_ + 1} {kind}: {got.rate:,.1f} calls/s, {got.errors} errors", flush=True)
            finally:
                await echo_server.stop(None)
            async with node.pool.acquire() as conn:
                answered = await conn.fetchval("SELECT count(*) FROM check_answers")
        finally:
            await node.stop()
        # Calls counted over the measured seconds; the CPU also covers each round's warm-up second, alike for all.
        per_call = {
            k: 1000 * cpu_of[k] / max(1, sum(len(r.latencies_ms) + r.errors for r in results[k])) for k in cpu_of
        }
        if set(results) != {*KINDS, "echo"}:  # a partial run (for a profiler): what was driven, beside echo if it was
            print("\n  serving process CPU per call (all its threads):")
            for k, driven in results.items():
                print(f"    {k:<12} {per_call[k]:8.3f} ms, {merged(driven).rate:,.1f} calls/s")
            if "profile" in results and "echo" in results:
                print(
                    f"  GetProfile {per_call['echo'] / per_call['profile']:.2f}x echo by CPU per call,"
                    f" {merged(results['profile']).rate / merged(results['echo']).rate:.2f}x by rate"
                )
            return
        copy = await raw_copy(running.postgres.uri("postgres"), 100000)
    profile, one, hundred, search, echo = (
        merged(results[k]) for k in ("profile", "check1", "check100", "search", "echo")
    )
    print(f"\nchecks against {held:,} records ({answered:,} subject answers stored during the run)")
    line("GetProfile", profile.rate, "req/s", echo.rate, "raw gRPC echo")
    line("Check, 1 subject", one.rate, "req/s", profile.rate, "GetProfile")
    line("Check, 100 subjects", hundred.rate, "req/s", echo.rate, "raw gRPC echo")
    line("  subjects checked per second, 100 a call", hundred.rate * 100, "subj/s", one.rate, "1-subject Check")
    line("SearchSubjects", search.rate, "req/s", echo.rate, "raw gRPC echo")
    line("raw gRPC echo (same TLS, same load)", echo.rate, "req/s")
    line("raw COPY of event-sized rows", copy, "rows/s")
    for i, each in enumerate(zip(*(results[k] for k in ("profile", "check1", "check100", "echo")), strict=True)):
        p, c1, c100, e = (r.rate for r in each)
        print(
            f"  round {i + 1}: GetProfile {p / e:.2f}x echo, Check 1 {c1 / p:.2f}x GetProfile,"
            f" Check 100 {100 * c100 / c1:.1f}x faster than 100 single"
        )
    print("\n  serving process CPU per call (all its threads):")
    for name, k in (("GetProfile", "profile"), ("Check 1", "check1"), ("Check 100", "check100"), ("echo", "echo")):
        print(f"    {name:<12} {per_call[k]:8.3f} ms")
    print(
        f"  by CPU per call: Check 1 {per_call['profile'] / per_call['check1']:.2f}x GetProfile,"
        f" Check 100 {100 * per_call['check1'] / per_call['check100']:.1f}x cheaper than 100 single,"
        f" GetProfile {per_call['echo'] / per_call['profile']:.2f}x echo"
    )
    print(f"\n  GetProfile vs raw gRPC echo: {profile.rate / echo.rate:.2f}x (target >= 0.6x)")
    print(f"\n  one 1-subject Check vs GetProfile: {one.rate / profile.rate:.2f}x (target >= 0.8x)")
    print(f"  one 100-subject Check vs 100 single Checks: {100 * hundred.rate / one.rate:.1f}x faster (target >= 20x)")
    for name, result in (("GetProfile", profile), ("Check 1", one), ("Check 100", hundred), ("Search", search)):
        print(
            f"  {name + ' latency p50 / p99':<44} {result.p50:>9.1f} / {result.percentile(0.99):.1f} ms"
            f"   ({result.errors} errors)"
        )
    print(f"  {'echo latency p50 / p99':<44} {echo.p50:>9.1f} / {echo.percentile(0.99):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds over every kind, each kind seconds/rounds a round"
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="the calls to drive, for profiling one (the full set prints ratios; add echo for GetProfile's)",
    )
    args = parser.parse_args()
    kinds = tuple(kind for kind in args.kinds.split(",") if kind)
    if unknown := set(kinds) - {*KINDS, "echo"}:
        parser.error(f"unknown kinds {sorted(unknown)}; choose among {', '.join(KINDS)}, echo")
    run(main(args.records, args.seconds, args.concurrency, kinds, max(1, args.rounds)))
