"""Scale: a node holding a national-size store, beside the raw limits measured in the same run.

    python -m bench.scale [--scale 1.0] [--seconds 8] [--concurrency 32] [--catch-up-seconds 120]
                          [--rounds 2] [--build-minutes M]

At ``--scale 1`` the store holds 10,000,000 events in Shanghai's log (310000) and
1,000,000 in each of three others (320000, 330000, 340000); ``--scale 0.01``
builds a hundredth of that. Every event is honestly signed by its origin's key:
synthetic rows → national profile → the ledger's signing, in worker processes, one
per core → the ledger's own store step (COPY, tiles grown in the same transactions),
see :mod:`bench.scale_store`. The store is built by a child process, so the serving
node's resident memory is its own and not the builder's. The built history counts as
already published, as a broker's retention would have it: the broker holds only what
the serving node publishes, and older events reach a member by catch-up (measured).

Then, with Shanghai's log first at its small size (100,000 × scale, at least
1,000) and then at its full size, the node is started in this process and
measured: time from start to serving, resident memory while serving, GetProfile
and GetInclusionProof rate and p50/p99 (mutual TLS, audited, load from another
process), beside a bare gRPC echo server under the same load; hash tiles served
over HTTP beside a bare HTTP/1.1 server on the same TLS; and a fresh member's
catch-up of the log over gRPC beside raw Ed25519 verification × cores. Catch-up
runs until the copy is complete or ``--catch-up-seconds`` have passed (10M events
at a few thousand a second would take an hour), and its rate is what it fetched,
verified and applied in that time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import h11

from bench.common import (
    LoadResult,
    Services,
    drive,
    join_process,
    line,
    load,
    merged,
    raw_ed25519,
    result_of,
    run,
    services,
    start_node,
)
from bench.lookup import start_echo
from bench.scale_store import BUILD_NICENESS, bulk_load, fill, give_way, history_published
from credex.crypto.tiles import TILE_WIDTH, tile_path
from credex.crypto.tls import client_context
from credex.node.demo.federation import LocalFederation
from credex.node.embedded import EmbeddedBroker
from credex.node.runtime import Node

OWN = "310000"
PEERS = ("320000", "330000", "340000")
FRESH = "350000"  # a member that starts empty and catches up


@dataclass
class Serving:
    """What one start of the node measured."""

    size: int
    start_seconds: float
    rss_mb: float
    profile: LoadResult
    inclusion: LoadResult
    echo: LoadResult


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for text in status:
            if text.startswith("VmRSS:"):
                return int(text.split()[1]) / 1024
    return 0.0


# -- building the store (in a child process) ---------------------------------------------------


def _build(root: str, overrides: dict[str, Any], sizes: dict[str, int], until: float | None) -> None:
    """Child process: grow the store of ``overrides``' database to ``sizes``, at a lower priority than measuring.

    With ``until`` (a ``time.time()``) the logs stop growing then, short of ``sizes``.
    """
    os.nice(BUILD_NICENESS)

    async def grow() -> None:
        members = LocalFederation(Path(root), [OWN, *PEERS, FRESH], tls=True)
        # Storing only: no relay, intake or sync (the relay would put the whole history on the broker).
        node = Node(members.config(OWN, **overrides))
        await node.start(serve=False, exchange=False)
        assert node.pool is not None
        niced = asyncio.create_task(give_way(node.pool))
        try:
            async with bulk_load(node.pool):
                for origin, want in sizes.items():
                    async with node.pool.acquire() as conn:
                        have = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events WHERE origin = $1", origin)
                    # Shared subjects grow with the log (as in bench.lookup): a profile holds a few records at any size.
                    shared = max(40, want // 50)
                    keys = members.layout.member_dir(origin) / "keys"
                    reached = await fill(node, keys, origin, int(have), want, shared, until)
                    if reached < want:
                        print(
                            f"  {origin} stopped at {reached:,} of {want:,} events: the build's time ran out",
                            flush=True,
                        )
                    if origin == OWN:
                        await history_published(node.pool, OWN)
                    else:  # this node holds the peer's log; only the peer signs more of it
                        async with node.pool.acquire() as conn:
                            await conn.execute("DELETE FROM ledger_head WHERE origin = $1", origin)
            async with node.pool.acquire() as conn:  # what national size costs on disk
                held = int(await conn.fetchval("SELECT count(*) FROM events"))
                size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
                biggest = await conn.fetch(
                    "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 2 DESC LIMIT 5"
                )
            tables = ", ".join(f"{r['relname']} {r['bytes'] / held:,.0f}" for r in biggest)
            print(f"store: {held:,} events, {size / 2**30:.2f} GiB = {size / held:,.0f} B/event ({tables})", flush=True)
        finally:
            niced.cancel()
            await asyncio.wait([niced])
            await node.stop()

    run(grow())


async def build(
    members: LocalFederation, overrides: dict[str, Any], sizes: dict[str, int], until: float | None = None
) -> float:
    """Grow the store to ``sizes`` (events per origin) in a child process; return the seconds it took."""
    started = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(
        target=_build, args=(str(members.root), overrides, sizes, until)
    )
    process.start()
    await join_process(process)
    if process.exitcode != 0:
        raise RuntimeError(f"building the store failed (exit {process.exitcode})")
    return time.perf_counter() - started


async def clone(running: Services, template: str, name: str) -> None:
    """A copy of database ``template`` as ``name`` (a file copy in the server: no row is re-signed or re-stored)."""
    conn = await asyncpg.connect(running.postgres.uri("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()


# -- serving -------------------------------------------------------------------------------------


async def serve_and_measure(
    members: LocalFederation, overrides: dict[str, Any], seconds: float, concurrency: int
) -> tuple[Node, Serving]:
    started = time.perf_counter()
    node = await members.start_node(OWN, **overrides)
    start_seconds = time.perf_counter() - started
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        size = int(await conn.fetchval("SELECT tiled_seq FROM origin_progress WHERE origin = $1", OWN))
        subjects = [
            r["subject_id"]
            for r in await conn.fetch(
                "SELECT subject_id FROM records WHERE origin = $1 AND subject_id NOT LIKE 'psn:%'"
                " ORDER BY random() LIMIT 20000",
                OWN,
            )
        ]
    # A proof needs a checkpoint covering its leaf; a store just grown has none yet until the node signs one.
    while (await node.status()).checkpoints.get(OWN, (0, ""))[0] < size:
        await asyncio.sleep(0.2)
    tls = members.layout.client_tls()
    profile = await load("profile", node.port, tls, subjects, seconds, concurrency)
    inclusion = await load("inclusion", node.port, tls, [OWN, str(size)], seconds, concurrency)
    rss = rss_mb()
    echo_server, echo_port = await start_echo(members)
    try:
        echo = await load("echo", echo_port, tls, subjects, seconds, concurrency)
    finally:
        await echo_server.stop(None)
    return node, Serving(size, start_seconds, rss, profile, inclusion, echo)


# -- tiles over HTTP -----------------------------------------------------------------------------


def _tile_load(
    port: int, tls: tuple[Path, Path, Path], paths: list[str], seconds: float, concurrency: int, out: Any
) -> None:
    """Worker process: GET ``paths`` at random over ``concurrency`` keep-alive HTTPS connections."""
    import httpx

    async def measure() -> LoadResult:
        ca, cert, key = tls
        context = client_context(ca, cert, key)
        rng = random.Random(3)
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=context, limits=httpx.Limits(max_connections=concurrency)
        ) as client:

            async def call(i: int) -> None:
                answer = await client.get(rng.choice(paths))
                if answer.status_code != 200:
                    raise RuntimeError(f"{answer.status_code} for {answer.url}")

            return await drive(call, concurrency=concurrency, seconds=seconds)

    out.put(asyncio.run(measure()))


async def tile_load(
    port: int, tls: tuple[Path, Path, Path], paths: list[str], seconds: float, concurrency: int
) -> LoadResult:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_tile_load, args=(port, tls, paths, seconds, concurrency, out))
    process.start()
    result: LoadResult = await result_of(process, out)
    return result


async def start_bare_http(members: LocalFederation, body: bytes) -> tuple[asyncio.Server, int]:
    """A bare HTTP/1.1 server (h11 on asyncio streams, the tile server's stack) answering ``body`` to any GET."""
    tls = members.layout.member_dir(OWN) / "tls"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls / "node.crt", tls / "node.key")
    context.load_verify_locations(members.layout.ca_dir / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    headers = [("content-type", "application/octet-stream"), ("content-length", str(len(body)))]
                    writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


# -- catch-up ------------------------------------------------------------------------------------


async def catch_up(members: LocalFederation, running: Any, size: int, budget: float) -> tuple[float, int, bool]:
    """A fresh member catching up Shanghai's log of ``size``: seconds, events of it held, whether complete.

    Complete means held whole and checkpoint-verified; a log too big for ``budget``
    seconds is measured on the part fetched, verified and applied by then.
    """
    with EmbeddedBroker(running.root / "empty-broker") as empty:
        started = time.perf_counter()
        fresh = await start_node(
            members, running, FRESH, bus={"bootstrap_servers": empty.bootstrap_servers}, sync={"probe_seconds": 1.0}
        )
        while True:
            status = await fresh.status()
            held = status.contiguous_by_origin.get(OWN, 0)
            complete = held >= size and status.checkpoints.get(OWN, (0, ""))[0] >= size
            if complete or time.perf_counter() - started >= budget:
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        await members.stop_node(FRESH)
    return elapsed, held, complete


def combined(rounds: list[Serving]) -> Serving:
    """The rounds at one size: the slowest start, the largest RSS, the loads merged."""
    return Serving(
        rounds[0].size,
        max(r.start_seconds for r in rounds),
        max(r.rss_mb for r in rounds),
        merged([r.profile for r in rounds]),
        merged([r.inclusion for r in rounds]),
        merged([r.echo for r in rounds]),
    )


async def main(
    scale: float, seconds: float, concurrency: int, catch_up_seconds: float, rounds: int, build_minutes: float | None
) -> None:
    until = time.time() + build_minutes * 60 if build_minutes else None
    big = max(1000, int(10_000_000 * scale))
    small = max(1000, min(big, int(100_000 * scale)))
    peer = max(1000, int(1_000_000 * scale))
    async with services() as running:
        members = LocalFederation(running.root / "federation", [OWN, *PEERS, FRESH], tls=True)
        members.prepare()
        with contextlib.ExitStack() as stack:
            # Each store has a broker of its own: a relay checks the broker holds what its store says it published.
            small_broker = stack.enter_context(EmbeddedBroker(running.root / "small-broker"))
            brokers = {f"bench_scale_{OWN}_small": small_broker, f"bench_scale_{OWN}_full": running.broker}

            def on(database: str) -> dict[str, Any]:
                return {
                    "database": {"url": running.postgres.uri(database), "pool_max": 20},
                    "bus": {"bootstrap_servers": brokers[database].bootstrap_servers},
                    "grpc": {"max_concurrent_calls_per_caller": max(16, concurrency)},
                }

            # Two stores, the full one grown from a copy of the small one, so the two sizes can be measured in
            # alternate rounds: load from elsewhere on the machine then falls on both alike.
            small_db, full_db = f"bench_scale_{OWN}_small", f"bench_scale_{OWN}_full"
            print(f"building: {OWN} to {small:,} events, {', '.join(PEERS)} to {peer:,} each", flush=True)
            built_small = await build(members, on(small_db), {OWN: small, **dict.fromkeys(PEERS, peer)})
            print(f"  built in {built_small:.1f}s; copying it and growing {OWN} to {big:,} events", flush=True)
            started = time.perf_counter()
            await clone(running, small_db, full_db)
            await build(members, on(full_db), {OWN: big}, until)
            built_big = time.perf_counter() - started
            print(f"  grown in {built_big:.1f}s (copy included)", flush=True)
            measured: dict[str, list[Serving]] = {small_db: [], full_db: []}
            try:
                for round_ in range(1, rounds + 1):
                    for database in (small_db, full_db):
                        node, serving = await serve_and_measure(members, on(database), seconds, concurrency)
                        measured[database].append(serving)
                        print(
                            f"  round {round_}, {serving.size:,} events: start {serving.start_seconds:.2f}s,"
                            f" RSS {serving.rss_mb:.0f} MB, GetProfile {serving.profile.rate:,.0f}/s"
                            f" p99 {serving.profile.percentile(0.99):.1f} ms,"
                            f" GetInclusionProof {serving.inclusion.rate:,.0f}/s"
                            f" p99 {serving.inclusion.percentile(0.99):.1f} ms ({serving.inclusion.errors} errors),"
                            f" echo {serving.echo.rate:,.0f}/s",
                            flush=True,
                        )
                        if not (round_ == rounds and database == full_db):
                            await members.stop_node(OWN)
                at_small, at_big = combined(measured[small_db]), combined(measured[full_db])
                assert node.tiles is not None
                full = at_big.size // TILE_WIDTH
                paths = [f"/{OWN}/{tile_path(0, i)}" for i in range(full)] or [f"/{OWN}/checkpoint"]
                tiles = await tile_load(node.tiles.port, members.layout.client_tls(), paths, seconds, concurrency)
                serving_rss = rss_mb()  # the node serving now waited for its checkpoint when it started
                caught_up, fetched, complete = await catch_up(members, running, at_big.size, catch_up_seconds)
            finally:
                await members.stop()
            bare, bare_port = await start_bare_http(members, bytes(TILE_WIDTH * 32))
            try:
                raw_http = await tile_load(bare_port, members.layout.client_tls(), ["/tile"], seconds, concurrency)
            finally:
                bare.close()
                await bare.wait_closed()
    signing, verifying = raw_ed25519()
    cores = os.cpu_count() or 1
    print(f"\nscale {scale}: {OWN} {small:,} then {big:,} events; {', '.join(PEERS)} {peer:,} each")
    print(f"  {'store built (small / grown to full), child':<44} {built_small:>9.1f}s / {built_big:.1f}s")
    # The child's whole work: node start, synthetic rows, mapping and signing (workers), storing, tiles.
    line(
        "  build rate (rows made, mapped, signed, stored)",
        (small + 3 * peer) / built_small,
        "ev/s",
        signing,
        "raw sign",
    )
    if at_big.size < big:
        print(f"  {OWN} grew to {at_big.size:,} of {big:,} events in the --build-minutes given")
    line(
        "  growth rate (copy of the small store included)",
        (at_big.size - small) / built_big,
        "ev/s",
        signing,
        "raw sign",
    )
    for at in (at_small, at_big):
        print(
            f"\nserving with {OWN} at {at.size:,} events ({concurrency} concurrent calls from another process,"
            f" {rounds} rounds alternating with the other size):"
        )
        print(f"  {'time from start to serving':<44} {at.start_seconds:>9.2f}s (goal: at most 10 s)")
        print(f"  {'node process RSS while serving':<44} {at.rss_mb:>9.0f} MB (goal: at most 1 GB)")
        line("GetProfile", at.profile.rate, "req/s", at.echo.rate, "raw gRPC echo")
        print(
            f"  {'  p50 / p99':<44} {at.profile.p50:>9.1f} / {at.profile.percentile(0.99):.1f} ms"
            f"   ({at.profile.errors} errors)"
        )
        line("GetInclusionProof", at.inclusion.rate, "req/s", at.echo.rate, "raw gRPC echo")
        print(
            f"  {'  p50 / p99':<44} {at.inclusion.p50:>9.1f} / {at.inclusion.percentile(0.99):.1f} ms"
            f"   ({at.inclusion.errors} errors)"
        )
        line("raw gRPC echo (same TLS, same load)", at.echo.rate, "req/s")
        print(f"  {'  p50 / p99':<44} {at.echo.p50:>9.1f} / {at.echo.percentile(0.99):.1f} ms")
    for name, pick in (("GetProfile", "profile"), ("GetInclusionProof", "inclusion")):
        low, high = getattr(at_small, pick).percentile(0.99), getattr(at_big, pick).percentile(0.99)
        print(
            f"  {name + ' p99 at full / at small':<44} {high / low if low else float('nan'):>9.2f}x (goal: at most 2x)"
        )
    print(f"\ntiles over HTTP (full level-0 tiles of {OWN}, {concurrency} connections, audited):")
    line("hash tiles served", tiles.rate, "tiles/s", raw_http.rate, "bare h11 server")
    print(f"  {'  p50 / p99':<44} {tiles.p50:>9.1f} / {tiles.percentile(0.99):.1f} ms   ({tiles.errors} errors)")
    line("bare h11 HTTPS server, same 8 KiB body", raw_http.rate, "req/s")
    print(f"  {'node process RSS after the tile load':<44} {serving_rss:>9.0f} MB")
    print(f"\ncatch-up of a fresh member ({FRESH}) over gRPC, empty broker:")
    line(
        f"{OWN}'s log fetched, verified, applied",
        fetched / caught_up,
        "ev/s",
        verifying * cores,
        f"raw Ed25519 verify x {cores} cores",
    )
    done = "a complete, checkpoint-verified copy" if complete else f"stopped at the {catch_up_seconds:.0f} s budget"
    print(f"  {'events held / seconds':<44} {fetched:>9,} / {caught_up:.1f}s ({done})")
    line("raw Ed25519 sign (one core)", signing, "sig/s")
    line("raw Ed25519 verify (one core)", verifying, "ver/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--catch-up-seconds", type=float, default=120)
    parser.add_argument("--rounds", type=int, default=2, help="alternate rounds of measuring at the two sizes")
    parser.add_argument(
        "--build-minutes",
        type=float,
        default=None,
        help="stop growing the full log this long after the start, and measure the size it reached",
    )
    args = parser.parse_args()
    run(
        main(args.scale, args.seconds, args.concurrency, args.catch_up_seconds, max(1, args.rounds), args.build_minutes)
    )
