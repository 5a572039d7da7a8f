"""A node's life: it stops every task it started, cleans up after a start that fails, and does not
serve on with part of it dead.

A task that swallows its cancellation (aiokafka can, while it bootstraps) would hold
a database connection and hang the node's stop for ever; ``Node.stop`` names such a
task in an error and goes on, and these tests say that never happens.

A start that fails half-way (the gRPC port taken, a bad bundle) must not leave the
embedded PostgreSQL or broker it had already started running behind it. And a
background task that fails for good turns the standard gRPC health service to
NOT_SERVING and makes :meth:`Node.serve_until` raise, so ``credex node run`` exits
non-zero; one that fails now and then is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credex.node.demo.federation import LocalFederation
from credex.node.runtime import Node
from credex.node.services.server import ServerError
from credex.node.supervision import NEVER, Restart, Supervisor, TaskFailed

from .callers import government_channel
from .conftest import TestFederation
from .test_cancellation import swallow_a_cancellation

QUICK = Restart(first_pause=0.01, max_pause=0.01, stable_after=3600.0, give_up_after=3)


async def test_a_node_stopped_right_after_it_started_stops_every_task(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credex.node")
    for _ in range(8):
        await federation.start_node("310000")
        await federation.stop_node("310000")  # intake, relay and sync are still connecting
    assert stuck_stops(caplog) == []


async def test_a_node_stopped_while_it_exchanges_with_its_peers_stops_every_task(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credex.node")
    await federation.start_node("310000")
    await federation.start_node("320000")
    await federation.stop()
    assert stuck_stops(caplog) == []


async def test_a_node_whose_grpc_port_is_taken_says_so_and_leaves_no_embedded_service_running(
    tmp_path: Path,
) -> None:
    """Embedded PostgreSQL and broker start before the gRPC server; its failure stops them again."""
    federation = LocalFederation(tmp_path / "federation", ["310000"])
    federation.prepare()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        node = Node(federation.config("310000", grpc={"listen": address}))
        with pytest.raises(ServerError, match=f"cannot listen on {address}"):
            await node.start()
    data = node.config.data_dir
    assert (data / "postgres" / "PG_VERSION").exists(), "the embedded PostgreSQL was started"
    assert not (data / "postgres" / "postmaster.pid").exists(), "and is stopped again"
    assert (data / "broker" / "broker.log").exists(), "the embedded broker was started"
    assert node._embedded_broker is None and node.pool is None


async def test_a_background_task_that_fails_for_good_turns_health_to_not_serving(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    async with government_channel(federation, node) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert await status_of(health) == health_pb2.HealthCheckResponse.SERVING

        async def broken() -> None:
            raise ValueError("a bug outside every try")

        node.supervisor.spawn("broken", broken, NEVER)
        stop = asyncio.Event()  # nobody sets it: only the failure ends serve_until
        with pytest.raises(TaskFailed, match="background task broken failed: ValueError: a bug outside every try"):
            await node.serve_until(stop)
        assert await status_of(health) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await status_of(health, "credex.v1.LookupService") == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_task_that_fails_now_and_then_is_restarted_and_the_node_keeps_serving(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    runs = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= QUICK.give_up_after:  # as many failures in a row as it may have, no more
            raise ConnectionResetError("the peer went away")
        recovered.set()
        await asyncio.Event().wait()  # runs on until the node stops

    node.supervisor.spawn("flaky", flaky, QUICK)
    await recovered.wait()
    assert node.supervisor.restarts["flaky"] == QUICK.give_up_after
    assert node.supervisor.failure is None
    async with government_channel(federation, node) as channel:
        assert await status_of(health_pb2_grpc.HealthStub(channel)) == health_pb2.HealthCheckResponse.SERVING


async def test_failures_in_a_row_are_counted_afresh_after_a_run_that_lasted() -> None:
    """A run as long as ``stable_after`` was a success: it resets the count, so the task is never given up."""
    supervisor = Supervisor("test")
    runs = 0
    enough = asyncio.Event()

    async def fails_after_a_good_run() -> None:
        nonlocal runs
        runs += 1
        if runs == 4 * QUICK.give_up_after:
            enough.set()
            await asyncio.Event().wait()
        raise OSError("lost the database")

    supervisor.spawn("steady", fails_after_a_good_run, Restart(first_pause=0.0, stable_after=0.0, give_up_after=1))
    await enough.wait()
    assert supervisor.failure is None
    await supervisor.stop(timeout=10)

    given_up = Supervisor("test")
    given_up.spawn("unsteady", fails_after_a_good_run, QUICK)
    failure = await given_up.failed()
    assert failure.task == "unsteady" and isinstance(failure.cause, OSError)
    assert given_up.restarts["unsteady"] == QUICK.give_up_after
    assert f"({QUICK.give_up_after + 1} times in a row)" in str(failure)
    await given_up.stop(timeout=10)


async def test_a_task_that_fails_as_it_is_cancelled_is_not_restarted() -> None:
    """A library below that swallowed the cancellation and raised an error instead must not buy a restart."""
    supervisor = Supervisor("test")
    running = asyncio.Event()

    async def swallows_then_fails() -> None:
        await swallow_a_cancellation(running)
        raise ConnectionResetError("the connection went away as it was closed")

    supervisor.spawn("swallowing", swallows_then_fails, QUICK)
    await running.wait()
    await supervisor.stop(timeout=60)
    assert supervisor.restarts == {} and supervisor.failure is None


async def test_a_task_that_will_not_stop_is_named_with_the_frame_it_waits_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor("test")
    running = asyncio.Event()
    released = asyncio.Event()

    async def deep_inside_a_library() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                running.set()
                await released.wait()

    async def stubborn() -> None:
        await deep_inside_a_library()

    supervisor.spawn("stubborn", stubborn, QUICK)
    (left_behind,) = [t for t in asyncio.all_tasks() if t.get_name() == "test:stubborn"]
    await running.wait()
    caplog.set_level(logging.ERROR, logger="credex.node")
    await supervisor.stop(timeout=0.5)  # it swallows every cancellation: the stop must give up on it
    (said,) = stuck_stops(caplog)
    assert "task test:stubborn did not stop" in said
    assert "in stubborn" in said and "in deep_inside_a_library" in said, said
    released.set()  # let go, it returns; asked to stop long since, it is not restarted but ends cancelled
    with pytest.raises(asyncio.CancelledError):
        await left_behind


async def status_of(health: health_pb2_grpc.HealthStub, service: str = "") -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(response.status)


def stuck_stops(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What ``Node.stop`` said about tasks or steps that did not end when asked."""
    return [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage() or "took over" in r.getMessage()]
