"""An overloaded node refuses at once, with a reason: never a silent CANCELLED.

Regression tests of issue 7's probe "10,000 concurrent lookups over 20 connections:
5,806 came back CANCELLED with no cause logged". gRPC core cancelled calls that
waited too long to be picked up; now the edge's limits refuse first, per caller
(RESOURCE_EXHAUSTED) and for the node (UNAVAILABLE), and count what they refuse.
And of the security review of that fix: without a share for public callers, a few
public identities took the whole node and government lookups and peers'
FetchEvents got UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
from prometheus_client import REGISTRY

from credex.node.runtime import Node
from credex.v1 import exchange_pb2, exchange_pb2_grpc, lookup_pb2, lookup_pb2_grpc

from .callers import PUBLIC, audit_rows, client_channel, government_channel, peer_channel, serve_sample
from .conftest import TestFederation, eventually

DELIBERATE = {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}


async def burst(channels: list[grpc.aio.Channel], uscc: str, calls: int) -> Counter[tuple[str, str]]:
    """``calls`` lookups at once, spread over ``channels``; (status, reason) of each answer, counted."""
    stubs = [lookup_pb2_grpc.LookupServiceStub(c) for c in channels]

    async def one(i: int) -> tuple[str, str]:
        request = lookup_pb2.GetProfileRequest(uscc=uscc, purpose="burst")
        try:
            await stubs[i % len(stubs)].GetProfile(request)  # no deadline: every status is the server's
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, (exc.details() or "").split(":")[0]
        return "OK", ""

    return Counter(await asyncio.gather(*(one(i) for i in range(calls))))


def refused(node: Node, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "credex_rpc_calls_total", {"origin": node.origin, "method": "GetProfile", "status": status}
        )
        or 0.0
    )


async def test_a_flooding_caller_gets_resource_exhausted_and_other_callers_are_still_answered(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(
        federation, tmp_path, rows=20, grpc={"max_concurrent_calls": 32, "max_concurrent_calls_per_caller": 4}
    )
    subject = sorted(summary.shared_subjects)[0]
    counted_before = refused(node, "RESOURCE_EXHAUSTED")
    flood = [client_channel(federation, node, PUBLIC) for _ in range(4)]
    async with government_channel(federation, node) as office:
        stub = lookup_pb2_grpc.LookupServiceStub(office)

        async def steady() -> list[int]:
            request = lookup_pb2.GetProfileRequest(uscc=subject, purpose="资格审查")
            return [len((await stub.GetProfile(request)).entries) for _ in range(20)]

        flooded, answered = await asyncio.gather(burst(flood, subject, 400), steady())
    for channel in flood:
        await channel.close(None)
    assert all(answered)  # the office's calls were all admitted while the flood went on
    assert {status for status, _ in flooded} <= {"OK", "RESOURCE_EXHAUSTED"}
    assert flooded[("RESOURCE_EXHAUSTED", f"too many calls in progress for caller '{PUBLIC}'")] > 0
    assert (
        refused(node, "RESOURCE_EXHAUSTED") - counted_before
        == flooded[("RESOURCE_EXHAUSTED", f"too many calls in progress for caller '{PUBLIC}'")]
    )

    async def summed_up() -> bool:
        rows = [r for r in await audit_rows(node) if r["status"] == "RESOURCE_EXHAUSTED"]
        return bool(rows) and all(r["caller"] == PUBLIC and "calls refused" in r["detail"] for r in rows)

    await eventually(summed_up)


async def test_a_busy_node_answers_unavailable_with_a_reason(federation: TestFederation, tmp_path: Path) -> None:
    node, summary = await serve_sample(
        federation, tmp_path, rows=20, grpc={"max_concurrent_calls": 4, "max_concurrent_calls_per_caller": 64}
    )
    channels = [client_channel(federation, node, PUBLIC) for _ in range(4)]
    answers = await burst(channels, sorted(summary.shared_subjects)[0], 300)
    for channel in channels:
        await channel.close(None)
    assert {status for status, _ in answers} <= DELIBERATE
    assert answers[("UNAVAILABLE", "node busy")] > 0


async def test_thousands_of_concurrent_calls_over_twenty_connections_are_never_cancelled(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(federation, tmp_path, rows=20)
    channels = [government_channel(federation, node) for _ in range(20)]
    answers = await burst(channels, sorted(summary.shared_subjects)[0], 3000)
    for channel in channels:
        await channel.close(None)
    assert {status for status, _ in answers} <= DELIBERATE, answers
    assert answers[("OK", "")] > 0
    assert REGISTRY.get_sample_value("credex_rpc_in_flight", {"origin": node.origin}) == 0


async def test_public_callers_flooding_cannot_lock_out_government_lookups_and_peer_fetches(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(
        federation,
        tmp_path,
        rows=20,
        grpc={"max_concurrent_calls": 16, "max_concurrent_calls_per_caller": 4, "public_share": 0.5},
    )
    subject = sorted(summary.shared_subjects)[0]
    crowd = [client_channel(federation, node, f"{PUBLIC}-{i}") for i in range(6)]  # 6 x 4 calls > the node's 16
    flooding = asyncio.Event()
    flood_answers: Counter[tuple[str, str]] = Counter()

    async def flood(stub: lookup_pb2_grpc.LookupServiceAsyncStub) -> None:
        """Keep a call in flight, whatever the answer, until the others are done."""
        request = lookup_pb2.GetProfileRequest(uscc=subject)
        while not flooding.is_set():
            try:
                await stub.GetProfile(request)
            except grpc.aio.AioRpcError as exc:
                flood_answers[(exc.code().name, (exc.details() or "").split(":")[0])] += 1
            else:
                flood_answers[("OK", "")] += 1

    async def office() -> list[int]:
        async with government_channel(federation, node) as channel:
            stub = lookup_pb2_grpc.LookupServiceStub(channel)
            request = lookup_pb2.GetProfileRequest(uscc=subject, purpose="资格审查")
            return [len((await stub.GetProfile(request)).entries) for _ in range(20)]

    async def peer() -> list[int]:
        async with peer_channel(federation, node, "320000") as channel:
            stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
            request = exchange_pb2.FetchEventsRequest(origin="310000", from_seq=1, limit=5)
            return [len((await stub.FetchEvents(request)).envelopes) for _ in range(20)]

    stubs = [lookup_pb2_grpc.LookupServiceStub(c) for c in crowd]
    flooders = [asyncio.create_task(flood(stubs[i % len(stubs)])) for i in range(6 * 8)]
    await eventually(lambda: _at_least(flood_answers, ("UNAVAILABLE", "node busy"), 1))  # the public share is full
    try:
        async with asyncio.TaskGroup() as steady:
            lookups, fetches = steady.create_task(office()), steady.create_task(peer())
        looked_up, fetched = lookups.result(), fetches.result()
    finally:
        flooding.set()
        await asyncio.gather(*flooders)
        for channel in crowd:
            await channel.close(None)
    assert all(looked_up) and fetched == [5] * 20  # every call of theirs admitted during the flood
    assert flood_answers[("OK", "")] > 0  # public callers were served too, within their share
    assert {status for status, _ in flood_answers} <= DELIBERATE


async def _at_least(counts: Counter[tuple[str, str]], key: tuple[str, str], n: int) -> bool:
    return counts[key] >= n
