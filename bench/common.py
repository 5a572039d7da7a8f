"""Shared parts of the benchmarks: embedded services, a local federation, and the raw limits.

Every benchmark prints its figure beside a raw limit measured in the same run on
the same machine (raw Ed25519, raw COPY, raw produce/consume, raw gRPC echo), so
the ratio means something on a noisy two-core machine. Nothing here asserts a
time: benchmarks report, tests check behaviour.

A benchmark stopped early (Ctrl-C, ``timeout``, a SIGTERM from whoever ran it) stops
what it started: run its ``main`` through :func:`run`, which turns SIGTERM into the
same cancellation Ctrl-C gives, so every ``finally`` runs and :func:`services` stops
its PostgreSQL and broker (an embedded PostgreSQL outlives a killed parent by design,
see :mod:`credex.node.embedded`, and a bench left six of them running once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import resource
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.cpu import cpu_of_tree
from credex.adapters.profile import Profile
from credex.node.demo.federation import LocalFederation
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.feeds import FileReport
from credex.node.runtime import Node

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
logging.basicConfig(level=logging.WARNING)
logging.getLogger("aiokafka").setLevel(logging.ERROR)


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with SIGTERM taken as Ctrl-C is: ``main`` cancelled, so what it started is stopped.

    A second SIGTERM ends the process at once, as a second Ctrl-C does, for a clean-up
    that hangs; then, as after SIGKILL, :class:`EmbeddedPostgres` stops the leftover
    server only at the next start in the same folder.
    """

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def stop() -> None:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            task.cancel("SIGTERM")

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(guarded())


async def finish_in_thread(blocking: Callable[[], T]) -> T:
    """Run ``blocking`` in a thread and wait for it even if cancelled meanwhile (then re-raise the cancellation).

    Starting a server cannot be abandoned half-way: whoever cancels must know it
    finished, or it would start after the clean-up and run on with nobody to stop it.
    """
    future = asyncio.ensure_future(asyncio.to_thread(blocking))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(future)
        raise


async def join_process(process: multiprocessing.process.BaseProcess) -> None:
    """Wait for a child process; if cancelled, SIGTERM it (it stops what it started, see :func:`run`) and wait."""
    try:
        await asyncio.shield(asyncio.to_thread(process.join))
    except asyncio.CancelledError:
        if process.is_alive():
            process.terminate()
        await finish_in_thread(process.join)
        raise


def line(name: str, value: float, unit: str, limit: float | None = None, limit_name: str = "") -> None:
    ratio = f"   ({value / limit:.0%} of {limit_name} {limit:,.0f} {unit})" if limit else ""
    print(f"  {name:<44} {value:>12,.0f} {unit}{ratio}", flush=True)


@dataclass
class Services:
    root: Path
    postgres: EmbeddedPostgres
    broker: EmbeddedBroker


@contextlib.asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """A PostgreSQL and a broker in a temporary folder, stopped (and the folder removed) however the bench ends."""
    with tempfile.TemporaryDirectory(prefix="credex-bench-") as folder:
        root = Path(folder)
        postgres = EmbeddedPostgres(root / "postgres")
        broker = EmbeddedBroker(root / "broker")
        try:
            await finish_in_thread(postgres.start)
            await finish_in_thread(broker.start)
            yield Services(root, postgres, broker)
        finally:
            await finish_in_thread(broker.stop)
            await finish_in_thread(postgres.stop)


async def start_node(federation: LocalFederation, running: Services, origin: str, **extra: Any) -> Node:
    overrides: dict[str, Any] = {
        "database": {"url": running.postgres.uri(f"bench_{uuid.uuid4().hex[:8]}_{origin}"), "pool_max": 20},
        "bus": {"bootstrap_servers": running.broker.bootstrap_servers},
        **extra,
    }
    return await federation.start_node(origin, **overrides)


def federation(running: Services) -> LocalFederation:
    """Shanghai and Jiangsu, with mutual TLS, as every benchmark uses them."""
    built = LocalFederation(running.root / "federation", ["310000", "320000"], tls=True)
    built.prepare()
    return built


async def ingest_and_publish(node: Node, sample: Path) -> tuple[FileReport, float, float]:
    """Take a file in; return its report and the seconds until stored and until published."""
    started = time.perf_counter()
    [report] = await node.ingest([sample], Profile.load("national"))
    stored = time.perf_counter() - started
    while (await node.status()).published < report.new:
        await asyncio.sleep(0.05)
    return report, stored, time.perf_counter() - started


# -- raw limits ---------------------------------------------------------------------


def raw_ed25519(n: int = 20000) -> tuple[float, float]:
    """(signatures/s, verifications/s) of the bare library on one core, 1 KiB messages."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = os.urandom(1024)
    started = time.perf_counter()
    signatures = [key.sign(message) for _ in range(n)]
    signing = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for signature in signatures:
        public.verify(signature, message)
    return signing, n / (time.perf_counter() - started)


def raw_ed25519_around(before: tuple[float, float]) -> tuple[float, float, str]:
    """(sign/s, verify/s) as the mean of a measure taken ``before`` a run and one taken now, and a line saying both.

    On a machine shared with other work the load moves during a run; a raw limit
    taken on one side of it only would flatter or blame the run by chance.
    """
    after = raw_ed25519()
    sign, verify = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    spread = (
        f"sign {before[0]:,.0f} before, {after[0]:,.0f} after; verify {before[1]:,.0f} before, {after[1]:,.0f} after"
    )
    return sign, verify, spread


async def raw_copy(url: str, rows: int, width: int = 1200) -> float:
    """Rows/s of a bare COPY of event-sized rows (bytea of ``width`` bytes plus a few columns)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE raw_copy (origin text, seq bigint, id uuid, kind smallint, key text, body bytea)"
        )
        payload = os.urandom(width)
        data = [("310000", i, uuid.uuid4(), 1, f"key-{i}", payload) for i in range(rows)]
        started = time.perf_counter()
        for start in range(0, rows, 2000):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "raw_copy",
                    records=data[start : start + 2000],
                    columns=["origin", "seq", "id", "kind", "key", "body"],
                )
        return rows / (time.perf_counter() - started)
    finally:
        await conn.close()


async def raw_produce_consume(bootstrap: str, n: int = 50000, size: int = 1200) -> tuple[float, float]:
    """(messages/s produced with acks=all, messages/s consumed) by bare aiokafka on the same broker."""
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    value = os.urandom(size)
    started = time.perf_counter()
    deliveries = [await producer.send(topic, value=value, key=str(i % 1000).encode()) for i in range(n)]
    await asyncio.gather(*deliveries)
    produced = n / (time.perf_counter() - started)
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    await consumer.topics()
    consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}])
    got = 0
    started = time.perf_counter()
    while got < n:
        batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
        if not batch:
            break
        got += sum(len(messages) for messages in batch.values())
    consumed = got / (time.perf_counter() - started)
    await consumer.stop()
    return produced, consumed


# -- load generation ------------------------------------------------------------------


def postgres_cpu(postgres: EmbeddedPostgres) -> float:
    """CPU seconds used so far by the PostgreSQL server: its postmaster and every process it runs now (Linux).

    Pooled connections live through a benchmark, so the difference of two readings is
    what the database spent between them (a backend that ended in between is lost).
    """
    postmaster = postgres.pid
    if postmaster is None:
        raise RuntimeError(f"no PostgreSQL server runs in {postgres.directory}")
    return sum(cpu_of_tree(postmaster).values())


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    client_cpu: float = 0.0  # CPU seconds of the load generator's process, warm-up included

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def merged(rounds: list[LoadResult]) -> LoadResult:
    """One load's rounds as one result: calls, seconds and the generator's CPU summed, latencies pooled."""
    return LoadResult(
        sum(r.requests for r in rounds),
        sum(r.errors for r in rounds),
        sum(r.seconds for r in rounds),
        [ms for r in rounds for ms in r.latencies_ms],
        sum(r.client_cpu for r in rounds),
    )


async def drive(
    call: Callable[[int], Awaitable[Any]], *, concurrency: int, seconds: float, warmup: float = 1.0
) -> LoadResult:
    """Run ``call(i)`` from ``concurrency`` tasks for ``seconds``; count completions and latencies."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    stop_at = time.perf_counter() + warmup + seconds
    measure_from = time.perf_counter() + warmup

    async def worker() -> None:
        nonlocal errors, counter
        while (now := time.perf_counter()) < stop_at:
            counter += 1
            try:
                await call(counter)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if now >= measure_from:
                latencies.append((time.perf_counter() - now) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(latencies), errors, seconds, latencies)


# -- a load generator in another process ----------------------------------------------

LOAD_CHANNELS = 4
ECHO_METHOD = "/bench.Echo/Echo"
FLOOR_METHOD = "/bench.Floor/Lookup"  # bench.lookup.start_durable_floor: echo + one SELECT + one committed INSERT


def _load(
    kind: str, port: int, tls: tuple[Path, Path, Path], keys: list[str], seconds: float, concurrency: int, out: Any
) -> None:
    """Worker process: drive one kind of call ("profile", "echo", "floor", "inclusion", "consistency", "check<N>",
    "search")."""
    from credex.node.channels import open_channel
    from credex.v1 import check_pb2, check_pb2_grpc, log_pb2, log_pb2_grpc, lookup_pb2, lookup_pb2_grpc

    async def measure() -> LoadResult:
        ca, cert, key = tls
        channels = [open_channel(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key) for _ in range(LOAD_CHANNELS)]
        rng = random.Random(1)
        call: Callable[[int], Awaitable[Any]]
        if kind == "echo":
            echoes = [c.unary_unary(ECHO_METHOD, None, None) for c in channels]
            payload = lookup_pb2.GetProfileRequest(uscc=keys[0], purpose="bench").SerializeToString()

            async def call(i: int) -> Any:
                return await echoes[i % LOAD_CHANNELS](payload, timeout=10)
        elif kind == "floor":  # GetProfile's requests, to the durable floor's bare handler
            floors = [c.unary_unary(FLOOR_METHOD, None, None) for c in channels]

            async def call(i: int) -> Any:
                request = lookup_pb2.GetProfileRequest(uscc=rng.choice(keys), purpose="bench").SerializeToString()
                return await floors[i % LOAD_CHANNELS](request, timeout=10)
        elif kind == "profile":
            stubs = [lookup_pb2_grpc.LookupServiceStub(c) for c in channels]

            async def call(i: int) -> Any:
                request = lookup_pb2.GetProfileRequest(uscc=rng.choice(keys), purpose="bench")
                return await stubs[i % LOAD_CHANNELS].GetProfile(request, timeout=10)
        elif kind.startswith("check"):  # "check<N>": a Check of N random subjects (keys[0] is the requesting unit)
            checkers = [check_pb2_grpc.CheckServiceStub(c) for c in channels]
            unit, subjects, per_call = keys[0], keys[1:], int(kind.removeprefix("check"))

            async def call(i: int) -> Any:
                request = check_pb2.CheckRequest(
                    usccs=rng.sample(subjects, per_call),
                    scenario="政府采购",
                    requesting_unit_uscc=unit,
                    purpose="bench",
                    legal_basis="政府采购法 第二十二条",
                )
                return await checkers[i % LOAD_CHANNELS].Check(request, timeout=30)
        elif kind == "search":  # keys: name fragments
            searchers = [lookup_pb2_grpc.LookupServiceStub(c) for c in channels]

            async def call(i: int) -> Any:
                request = lookup_pb2.SearchSubjectsRequest(query=rng.choice(keys), purpose="bench")
                return await searchers[i % LOAD_CHANNELS].SearchSubjects(request, timeout=30)
        else:
            logs = [log_pb2_grpc.LogServiceStub(c) for c in channels]
            origin, size = keys[0], int(keys[1])

            async def call(i: int) -> Any:
                stub = logs[i % LOAD_CHANNELS]
                if kind == "inclusion":
                    request = log_pb2.GetInclusionProofRequest(
                        origin=origin, seq=rng.randrange(1, size + 1), purpose="bench"
                    )
                    return await stub.GetInclusionProof(request, timeout=10)
                old = rng.randrange(1, size)
                return await stub.GetConsistencyProof(
                    log_pb2.GetConsistencyProofRequest(origin=origin, old_size=old), timeout=10
                )

        result = await drive(call, concurrency=concurrency, seconds=seconds)
        for channel in channels:
            await channel.close(None)
        return result

    out.put(asyncio.run(measure()))


async def load(
    kind: str, port: int, tls: tuple[Path, Path, Path], keys: list[str], seconds: float, concurrency: int
) -> LoadResult:
    """Run the load generator in a separate process, so it does not share the server's interpreter."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_load, args=(kind, port, tls, keys, seconds, concurrency, out))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process.start()
    result: LoadResult = await result_of(process, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the generator, reaped by join
    result.client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result


async def result_of(process: multiprocessing.process.BaseProcess, out: Any) -> Any:
    """What a load process puts on ``out``; if cancelled, the process is ended and waited for."""
    try:
        result = await asyncio.shield(asyncio.to_thread(out.get))
    except asyncio.CancelledError:
        out.put(None)  # wake the thread still waiting on the queue, so the loop can close
        process.terminate()
        await finish_in_thread(process.join)
        raise
    await join_process(process)
    return result
