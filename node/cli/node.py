"""``credex demo``, ``credex node run`` and ``credex health``: a federation to try, a node to run, its health."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import grpc
import typer

from credex.node.channels import call_failed, open_channel
from credex.node.cli.app import app, console, err, fail, load_settings, node_app, setup_logging


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="keep the federation here instead of a temporary folder")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a four-region federation on the embedded services and show cross-region lookups."""
    from credex.node.demo import run_demo

    setup_logging("INFO" if verbose else "ERROR")
    try:
        asyncio.run(run_demo(console, workdir.resolve() if workdir else None))
    except KeyboardInterrupt:
        err.print("interrupted; everything was shut down")
        raise typer.Exit(130) from None


@node_app.command("run")
def node_run(config: Annotated[Path, typer.Option("--config", "-c", help="node.toml")]) -> None:
    """Run a node until SIGTERM or Ctrl-C."""
    from credex.node.runtime import Node

    settings = load_settings(config)
    setup_logging(settings.log_level)

    async def main() -> None:
        node = Node(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        if settings.metrics_listen:
            from prometheus_client import start_http_server

            host, port = settings.metrics_listen.rsplit(":", 1)
            start_http_server(int(port), addr=host)
        print(f"node {settings.origin} ready on port {node.port}", flush=True)
        try:
            await node.serve_until(stop)  # raises when a background task fails for good: exit non-zero
        finally:
            await node.stop()

    try:
        asyncio.run(main())
    except Exception as exc:
        # A node that cannot start or dies says which node and why; the log above has the detail.
        raise fail(f"node {settings.origin}: {exc}") from None


@app.command()
def health(
    node: Annotated[str | None, typer.Option(help="host:port (default: the config's listen address)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="node.toml, for TLS and address")] = None,
) -> None:
    """Ask a node's standard gRPC health service; exit 0 only when it is SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ca = cert = key = None
    if config is not None:
        settings = load_settings(config)
        tls = settings.grpc.tls
        ca, cert, key = tls.client_ca, tls.cert, tls.key
        node = node or settings.grpc.listen.replace("0.0.0.0", "127.0.0.1")
    if node is None:
        raise fail("give --node or --config")
    endpoint = node

    async def check() -> int:
        async with open_channel(endpoint, ca=ca, cert=cert, key=key) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(response.status)

    try:
        status = asyncio.run(check())
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, endpoint, "health check", ca=ca, cert=cert, key=key) from None
    serving = status == 1  # HealthCheckResponse.SERVING
    console.print(f"{endpoint}: {'SERVING' if serving else 'NOT SERVING'}")
    if not serving:
        raise typer.Exit(1)
