"""Lookup: GetProfile requests/s and latency against a node holding many records.

    python -m bench.lookup [--rows 200000] [--seconds 10] [--concurrency 32]

The node runs in this process; the load generator runs in another process and
drives, with the same settings, first the node's GetProfile (mutual TLS, audit
trail included) and then a bare gRPC echo server on the same TLS credentials.
"""

from __future__ import annotations

import argparse

import asyncpg
import grpc

from bench.common import (
    FLOOR_METHOD,
    LOAD_CHANNELS,
    federation,
    ingest_and_publish,
    line,
    load,
    run,
    services,
    start_node,
)
from credex.adapters.samples import synth
from credex.node.demo.federation import LocalFederation
from credex.v1 import lookup_pb2


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    return request


def _server_credentials(federation: LocalFederation) -> grpc.ServerCredentials:
    tls = federation.layout.member_dir("310000") / "tls"
    return grpc.ssl_server_credentials(
        [((tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())],
        root_certificates=(federation.layout.ca_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )


async def start_echo(federation: LocalFederation) -> tuple[grpc.aio.Server, int]:
    """The raw limit: a bare gRPC server answering the bytes it is sent, on the node's TLS credentials."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", _server_credentials(federation))
    await server.start()
    return server, port


# What a GetProfile must do in the database at the least: read the subject's records with their envelopes,
# and commit one row durably before it answers.
_FLOOR_READ = (
    "SELECT r.record, e.envelope FROM records r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
    " WHERE r.subject_id = $1 ORDER BY r.origin, r.record_id"
)
_FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS bench_floor (at timestamptz NOT NULL, subject_id text NOT NULL, n int)"
_FLOOR_WRITE = "INSERT INTO bench_floor (at, subject_id, n) VALUES (now(), $1, $2)"


async def _no_reset(conn: asyncpg.Connection) -> None:
    """A floor connection runs a SELECT and an INSERT in autocommit: it leaves no session state to reset."""


async def start_durable_floor(federation: LocalFederation, url: str) -> tuple[grpc.aio.Server, int, asyncpg.Pool]:
    """A diagnostic, not a raw limit: echo plus one SELECT and one committed INSERT through asyncpg, no credex code.

    Each call decodes a GetProfileRequest, reads that subject's records and envelopes in
    the node's store, commits one row (a commit per call: PostgreSQL flushes concurrent
    commits together by itself) and answers the rows' bytes. Beside the raw echo it says
    how much of GetProfile's gap is the read and the durable write the rules demand, and
    how much is credex's own.
    """
    pool = await asyncpg.create_pool(url, min_size=4, max_size=20, reset=_no_reset)
    await pool.execute(_FLOOR_TABLE)

    async def floor(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        subject = lookup_pb2.GetProfileRequest.FromString(request).uscc
        async with pool.acquire() as conn:
            rows = await conn.fetch(_FLOOR_READ, subject)
            await conn.execute(_FLOOR_WRITE, subject, len(rows))
        return b"".join(row["record"] + row["envelope"] for row in rows)

    server = grpc.aio.server()
    service, method = FLOOR_METHOD.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(floor)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", _server_credentials(federation))
    await server.start()
    return server, port, pool


async def main(rows: int, seconds: float, concurrency: int) -> None:
    async with services() as running:
        sample = running.root / "penalties.csv"
        # A shared pool that grows with the data keeps profiles realistic (a few records per
        # subject); the demo's pool of 40 would give the shared companies hundreds each.
        synth.write(sample, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0, shared_pool=max(40, rows // 50)))
        members = federation(running)
        try:
            # One government office drives the whole load, so its own share of calls in progress
            # is raised to the load's; the node-wide admission limits stay as configured.
            node = await start_node(
                members, running, "310000", grpc={"max_concurrent_calls_per_caller": max(16, concurrency)}
            )
            report, _, _ = await ingest_and_publish(node, sample)
            assert node.pool is not None
            async with node.pool.acquire() as conn:
                subjects = [
                    r["subject_id"]
                    for r in await conn.fetch(
                        "SELECT DISTINCT subject_id FROM records WHERE subject_id NOT LIKE 'psn:%' LIMIT 20000"
                    )
                ]
                held = await conn.fetchval("SELECT count(*) FROM records")
            print(
                f"node holds {held:,} records of {len(subjects):,}+ subjects; load: {concurrency} concurrent calls"
                f" over {LOAD_CHANNELS} channels for {seconds:.0f}s, from another process",
                flush=True,
            )
            lookups = await load("profile", node.port, members.layout.client_tls(), subjects, seconds, concurrency)
        finally:
            await members.stop()
        echo_server, echo_port = await start_echo(members)
        try:
            echo = await load("echo", echo_port, members.layout.client_tls(), subjects, seconds, concurrency)
        finally:
            await echo_server.stop(None)
    print(f"\nlookups against {report.new:,} records")
    line("GetProfile", lookups.rate, "req/s", echo.rate, "raw gRPC echo")
    print(
        f"  {'GetProfile latency p50 / p99':<44} {lookups.p50:>9.1f} / {lookups.percentile(0.99):.1f} ms"
        f"   ({lookups.errors} errors)"
    )
    line("raw gRPC echo (same TLS, same load)", echo.rate, "req/s")
    print(f"  {'echo latency p50 / p99':<44} {echo.p50:>9.1f} / {echo.percentile(0.99):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    run(main(args.rows, args.seconds, args.concurrency))
