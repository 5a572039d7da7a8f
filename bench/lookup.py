"""Lookup: GetProfile requests/s and latency against a node holding many records.

    python -m bench.lookup [--rows 200000] [--seconds 10] [--concurrency 32]

The node runs in this process; the load generator runs in another process and
drives, with the same settings, first the node's GetProfile (mutual TLS, audit
trail included) and then a bare gRPC echo server on the same TLS credentials.
"""

from __future__ import annotations

import argparse

import grpc

from bench.common import LOAD_CHANNELS, federation, ingest_and_publish, line, load, run, services, start_node
from credex.adapters.samples import synth
from credex.node.demo.federation import LocalFederation


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    return request


async def start_echo(federation: LocalFederation) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    tls = federation.layout.member_dir("310000") / "tls"
    credentials = grpc.ssl_server_credentials(
        [((tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())],
        root_certificates=(federation.layout.ca_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


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
