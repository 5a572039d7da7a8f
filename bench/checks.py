"""Checks: Check of 1 subject, Check of 100 subjects and Search, beside GetProfile and the raw gRPC echo.

    python -m bench.checks [--records 1000000] [--seconds 12] [--rounds 3] [--concurrency 16,64] [--kinds profile,…]

The node holds N records (five per subject, a tenth of them on a serious-dishonesty list,
a tenth serious penalties), COPYed straight into its migrated store as bench.quality does
(taking a million records in through the ledger is bench.ingest's figure, not this one's),
and serves gRPC with mutual TLS and its audit trail; the bus is off, since nothing here
crosses it. A load generator in another process drives each kind of call for the same
time at the same concurrency, and the same load drives a bare gRPC echo server on the
same TLS credentials in the same process: the raw limit. The kinds take turns, in
rounds, so that a neighbour's burst on a shared machine falls on all of them alike; the
ratios of each round are printed too. Each concurrency given is driven in every round
(a group-committing server gains with concurrency, a bare echo less: both are shown).
A diagnostic, not a raw limit, is driven beside them ("floor"): echo plus one SELECT of
the subject's records and one committed INSERT through bare asyncpg, which says how much
of GetProfile's gap to echo is the durable audit the rules demand. Targets: a one-subject Check at ≥ 0.8× the
GetProfile rate and one 100-subject Check ≥ 20× faster than 100 single Checks (issue
9); GetProfile ≥ 0.6× the raw echo (issue 12).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterator

from bench.common import (
    LOAD_CHANNELS,
    LoadResult,
    federation,
    line,
    load,
    merged,
    postgres_cpu,
    raw_copy,
    run,
    services,
)
from bench.lookup import start_durable_floor, start_echo
from credex.crypto.envelope import SIGNATURE_SIZE, sealed_bytes
from credex.domain import uscc as uscc_codes
from credex.node.runtime import Node
from credex.node.store import Connection
from credex.node.store.events import EVENT_COLUMNS, STATE_COLUMNS, backfill_subjects
from credex.protowire import varint
from credex.v1 import event_pb2, record_pb2

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
    """(record_states row, events row) of ``n`` records, :data:`PER_SUBJECT` per subject, in the columns' order.

    Each record's bytes live once, inside its event's envelope, where the ledger puts them
    (migration 0029): the record_states row says where, and reading a record costs what it
    costs a node that took it in. The envelope is as big as a sealed one; its signature is
    random bytes, since nothing here verifies one.
    """
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
        seq, event_id, digest = i + 1, uuid.uuid4(), hashlib.sha256(encoded).digest()
        envelope, record_at = _sealed(seq, event_id, record.record_id, digest, encoded)
        yield (
            # record NULL: its bytes are at record_at in the envelope
            (
                record.record_id,
                ORIGIN,
                code,
                record.kind,
                seq,
                1,
                1,
                window_end,
                digest,
                None,
                False,
                record_at,
                len(encoded),
            ),
            (ORIGIN, seq, event_id, 1, record.record_id, code, envelope, dt.datetime.now(dt.UTC), bytes(32)),
        )


_EVENT_HEAD = event_pb2.Event(origin=ORIGIN, type=event_pb2.EVENT_TYPE_UPSERT)
_KEY_ID = f"{ORIGIN}-ledger-1"


def _sealed(seq: int, event_id: uuid.UUID, record_id: str, digest: bytes, encoded: bytes) -> tuple[bytes, int]:
    """An envelope of an UPSERT carrying ``encoded`` as the ledger lays it out, and where ``encoded`` starts in it."""
    head = event_pb2.Event()
    head.CopyFrom(_EVENT_HEAD)
    head.seq, head.event_id, head.record_id, head.record_digest = seq, str(event_id), record_id, digest
    head.recorded_at.GetCurrentTime()
    payload = head.SerializeToString(deterministic=True) + b"\x32" + varint(len(encoded)) + encoded  # record last
    envelope = sealed_bytes(_KEY_ID, payload, os.urandom(SIGNATURE_SIZE))
    return envelope, envelope.index(payload) + len(payload) - len(encoded)


async def fill(conn: Connection, people: list[tuple[str, str]], n: int) -> float:
    """COPY ``n`` records and their events, then make the subjects searchable; the seconds taken."""
    assert len(STATE_COLUMNS) == 13 and len(EVENT_COLUMNS) == 9, "the rows below follow the store's columns"
    started = time.perf_counter()
    rows = generated(people, n)
    while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
        async with conn.transaction():
            await conn.copy_records_to_table("record_states", records=[r for r, _ in batch], columns=STATE_COLUMNS)
            await conn.copy_records_to_table("events", records=[e for _, e in batch], columns=EVENT_COLUMNS)
    await backfill_subjects(conn)
    await conn.execute("ANALYZE record_states; ANALYZE events; ANALYZE subjects")
    return time.perf_counter() - started


KINDS = ("profile", "check1", "check100", "search")


DIAGNOSTIC = "floor"  # bench.lookup.start_durable_floor: what the database alone costs a durable lookup


async def main(
    n: int, seconds: float, concurrencies: tuple[int, ...], kinds: tuple[str, ...] = KINDS, rounds: int = 3
) -> None:
    people = subjects(max(1, n // PER_SUBJECT))
    full = set(kinds) == set(KINDS)
    async with services() as running:
        members = federation(running)
        url = running.postgres.uri(f"bench_checks_{uuid.uuid4().hex[:8]}")
        node = Node(
            members.config(
                ORIGIN,
                database={"url": url, "pool_max": 20},
                grpc={"max_concurrent_calls_per_caller": max(16, *concurrencies)},
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
                f"load: {' and '.join(map(str, concurrencies))} concurrent calls over {LOAD_CHANNELS} channels for"
                f" {seconds:.0f}s each ({rounds} rounds of {seconds / rounds:.1f}s, interleaved), from another process",
                flush=True,
            )
            tls, codes = members.layout.client_tls(), [code for code, _ in people]
            fragments = [name[2:5] for _, name in random.Random(2).sample(people, min(2000, len(people)))]
            keys_of = {
                "profile": codes,
                "check1": [UNIT, *codes],
                "check100": [UNIT, *codes],
                "search": fragments,
                "echo": codes[:1],
                DIAGNOSTIC: codes,
            }
            # The echo server shares the node's process (idle while the node is driven, and the node while it is):
            # every round drives each kind in turn, so a neighbour's burst on this shared machine falls on all alike.
            echo_server, echo_port = await start_echo(members)
            floor_server, floor_port, floor_pool = await start_durable_floor(members, url)
            port_of = {"echo": echo_port, DIAGNOSTIC: floor_port}
            results: dict[tuple[str, int], list[LoadResult]] = {}
            # CPU seconds of the serving process (every thread; the load runs in another process), of the
            # database server and of the load generator, per kind: unlike a rate, they hardly move when the
            # neighbours take the machine's cores, and their sum says how much of the machine a call takes.
            cpu_of: dict[tuple[str, int], tuple[float, float, float]] = {}
            try:
                for round_ in range(rounds):
                    for concurrency in concurrencies:
                        for kind in (*kinds, "echo", DIAGNOSTIC) if full else kinds:
                            port = port_of.get(kind, node.port)
                            cpu, database = time.process_time(), postgres_cpu(running.postgres)
                            got = await load(kind, port, tls, keys_of[kind], seconds / rounds, concurrency)
                            used = (
                                time.process_time() - cpu,
                                postgres_cpu(running.postgres) - database,
                                got.client_cpu,
                            )
                            so_far = cpu_of.get((kind, concurrency), (0.0, 0.0, 0.0))
                            cpu_of[kind, concurrency] = (so_far[0] + used[0], so_far[1] + used[1], so_far[2] + used[2])
                            results.setdefault((kind, concurrency), []).append(got)
                            print(
                                f"  round {round_ + 1} at {concurrency}: {kind}: {got.rate:,.1f} calls/s,"
                                f" {got.errors} errors",
                                flush=True,
                            )
            finally:
                await echo_server.stop(None)
                await floor_server.stop(None)
                await floor_pool.close()
            async with node.pool.acquire() as conn:
                answered = await conn.fetchval("SELECT count(*) FROM check_answers")
        finally:
            await node.stop()
        # Calls counted over the measured seconds; the CPU also covers each round's warm-up second, alike for all.
        calls = {k: max(1, sum(len(r.latencies_ms) + r.errors for r in results[k])) for k in cpu_of}
        per_call = {k: 1000 * cpu_of[k][0] / calls[k] for k in cpu_of}
        shares = {k: tuple(1000 * used / calls[k] for used in cpu_of[k]) for k in cpu_of}
        if not full:  # a partial run (for a profiler): what was driven, beside echo if it was
            for concurrency in concurrencies:
                partial(concurrency, {k: r for (k, c), r in results.items() if c == concurrency}, per_call)
            machine(concurrencies, shares)
            return
        copy = await raw_copy(running.postgres.uri("postgres"), 100000)
    print(f"\nchecks against {held:,} records ({answered:,} subject answers stored during the run)")
    for concurrency in concurrencies:
        summary(concurrency, {k: r for (k, c), r in results.items() if c == concurrency}, per_call)
    machine(concurrencies, shares)
    line("raw COPY of event-sized rows", copy, "rows/s")


def machine(concurrencies: tuple[int, ...], shares: dict[tuple[str, int], tuple[float, ...]]) -> None:
    """Where a call's CPU goes on the whole machine: the serving process, PostgreSQL, the load generator.

    Warm-up seconds included (alike for every kind). Their sum bounds the rate the
    machine's cores allow when nothing else runs: ``cores × 1000 / total`` calls/s.
    """
    cores = os.cpu_count() or 1
    print(f"\n  CPU per call on the whole machine ({cores} cores), ms: serving process + PostgreSQL + load generator")
    for concurrency in concurrencies:
        for (kind, at), (server, database, client) in shares.items():
            if at == concurrency:
                total = server + database + client
                print(
                    f"    at {concurrency:>3} {kind:<10} {server:6.3f} + {database:6.3f} + {client:6.3f} = {total:6.3f}"
                    f"   (the cores allow {cores * 1000 / total:,.0f} calls/s)"
                )


def partial(concurrency: int, results: dict[str, list[LoadResult]], per_call: dict[tuple[str, int], float]) -> None:
    """What a partial run drove at one concurrency, with GetProfile's ratios to echo if both were driven."""
    print(f"\n  at {concurrency} concurrent: serving process CPU per call (all its threads):")
    for k, driven in results.items():
        print(f"    {k:<12} {per_call[k, concurrency]:8.3f} ms, {merged(driven).rate:,.1f} calls/s")
    if "echo" in results:
        echo = merged(results["echo"]).rate
        for k in ("profile", DIAGNOSTIC):
            if k in results:
                print(
                    f"  {k} {per_call['echo', concurrency] / per_call[k, concurrency]:.2f}x echo by CPU per call,"
                    f" {merged(results[k]).rate / echo:.2f}x by rate"
                )
        for i, pair in enumerate(zip(results.get("profile", []), results["echo"], strict=False)):
            print(f"  round {i + 1}: GetProfile {pair[0].rate / pair[1].rate:.2f}x echo")


def summary(concurrency: int, results: dict[str, list[LoadResult]], per_call: dict[tuple[str, int], float]) -> None:
    """Every kind's figures at one concurrency, beside the raw echo of the same rounds."""
    profile, one, hundred, search, echo, floor = (
        merged(results[k]) for k in ("profile", "check1", "check100", "search", "echo", DIAGNOSTIC)
    )
    cpu = {k: per_call[k, concurrency] for k in results}
    print(f"\n  at {concurrency} concurrent calls:")
    line("GetProfile", profile.rate, "req/s", echo.rate, "raw gRPC echo")
    line("Check, 1 subject", one.rate, "req/s", profile.rate, "GetProfile")
    line("Check, 100 subjects", hundred.rate, "req/s", echo.rate, "raw gRPC echo")
    line("  subjects checked per second, 100 a call", hundred.rate * 100, "subj/s", one.rate, "1-subject Check")
    line("SearchSubjects", search.rate, "req/s", echo.rate, "raw gRPC echo")
    line("raw gRPC echo (same TLS, same load)", echo.rate, "req/s")
    line("diagnostic: echo + SELECT + committed INSERT", floor.rate, "req/s", echo.rate, "raw gRPC echo")
    for i, each in enumerate(
        zip(*(results[k] for k in ("profile", "check1", "check100", "echo", DIAGNOSTIC)), strict=True)
    ):
        p, c1, c100, e, f = (r.rate for r in each)
        print(
            f"  round {i + 1}: GetProfile {p / e:.2f}x echo ({p / f:.2f}x the durable floor, itself {f / e:.2f}x echo),"
            f" Check 1 {c1 / p:.2f}x GetProfile, Check 100 {100 * c100 / c1:.1f}x faster than 100 single"
        )
    print("\n  serving process CPU per call (all its threads):")
    for name, k in (
        ("GetProfile", "profile"),
        ("Check 1", "check1"),
        ("Check 100", "check100"),
        ("echo", "echo"),
        ("floor", DIAGNOSTIC),
    ):
        print(f"    {name:<12} {cpu[k]:8.3f} ms")
    print(
        f"  by CPU per call: Check 1 {cpu['profile'] / cpu['check1']:.2f}x GetProfile,"
        f" Check 100 {100 * cpu['check1'] / cpu['check100']:.1f}x cheaper than 100 single,"
        f" GetProfile {cpu['echo'] / cpu['profile']:.2f}x echo"
    )
    print(f"\n  GetProfile vs raw gRPC echo: {profile.rate / echo.rate:.2f}x (target >= 0.6x)")
    print(
        f"  diagnostic, the durable floor (echo + SELECT + committed INSERT) vs raw echo: {floor.rate / echo.rate:.2f}x"
    )
    print(f"  one 1-subject Check vs GetProfile: {one.rate / profile.rate:.2f}x (target >= 0.8x)")
    print(f"  one 100-subject Check vs 100 single Checks: {100 * hundred.rate / one.rate:.1f}x faster (target >= 20x)")
    for name, result in (
        ("GetProfile", profile),
        ("Check 1", one),
        ("Check 100", hundred),
        ("Search", search),
        ("echo", echo),
        ("durable floor", floor),
    ):
        print(
            f"  {name + ' latency p50 / p99':<44} {result.p50:>9.1f} / {result.percentile(0.99):.1f} ms"
            f"   ({result.errors} errors)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument(
        "--concurrency",
        default="16,64",
        help="concurrent calls, or several comma-separated: each is driven every round",
    )
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
    if unknown := set(kinds) - {*KINDS, "echo", DIAGNOSTIC}:
        parser.error(f"unknown kinds {sorted(unknown)}; choose among {', '.join(KINDS)}, echo, {DIAGNOSTIC}")
    concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c)
    run(main(args.records, args.seconds, concurrencies, kinds, max(1, args.rounds)))
