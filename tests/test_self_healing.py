"""Self-healing sync: lost broker logs, offline nodes and lying peers do not leave holes or forgeries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.checkpoint import Checkpoint, log_name
from credex.crypto.keys import SigningKey
from credex.crypto.tls import spki_sha256
from credex.node.chain.alarms import Alarm, list_alarms
from credex.node.config import events_topic
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.runtime import Node
from credex.v1 import exchange_pb2, exchange_pb2_grpc, log_pb2, log_pb2_grpc

from .callers import member_server, peer_channel
from .conftest import TestFederation, eventually
from .trust_support import add_restricted_record, issue, quick_refresh

__all__ = ["quick_refresh"]  # a fixture, used by name

NATIONAL = Profile.load("national")


async def take_in(node: Node, tmp_path: Path, rows: int, first_row: int = 0) -> int:
    path = tmp_path / f"{node.origin}-{first_row}-{rows}.csv"
    synth.write(path, synth.SynthSpec(region=node.origin, rows=rows, bad_share=0.0, first_row=first_row))
    [report] = await node.ingest([path], NATIONAL)
    return report.new


async def missing(nodes: dict[str, Node], heads: dict[str, int]) -> list[str]:
    """What is not yet true of: every node holds every origin's log up to its head, checkpoint verified."""
    gaps = []
    for name, node in nodes.items():
        status = await node.status()
        for origin, head in heads.items():
            held = status.contiguous_by_origin.get(origin, 0)
            signed = status.checkpoints.get(origin, (0,))[0]
            if held < head or signed < head:
                gaps.append(f"{name} holds {origin} to {held}, checkpoint {signed}, head {head}")
    return gaps


async def complete(nodes: dict[str, Node], heads: dict[str, int], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while gaps := await missing(nodes, heads):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not converged within {timeout}s: {gaps}")
        await asyncio.sleep(0.3)


async def same_roots(nodes: dict[str, Node], origins: list[str]) -> None:
    for origin in origins:
        roots = {o: (await n.status()).checkpoints[origin] for o, n in nodes.items()}
        assert len(set(roots.values())) == 1, (origin, roots)


async def messages_on(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        seen = 0
        while batch := await consumer.getmany(timeout_ms=1500):
            seen += sum(len(m) for m in batch.values())
        return seen
    finally:
        await consumer.stop()


async def test_after_the_broker_lost_everything_nodes_heal_and_publishing_resumes(
    federation: TestFederation, tmp_path: Path
) -> None:
    nodes = {o: await federation.start_node(o) for o in federation.origins}
    heads = {
        "310000": await take_in(nodes["310000"], tmp_path, 80),
        "320000": await take_in(nodes["320000"], tmp_path, 60),
    }
    await complete(nodes, heads, timeout=60)

    await asyncio.to_thread(federation.broker.restart)  # the memory log is gone
    heads["310000"] += await take_in(nodes["310000"], tmp_path, 50, first_row=1000)
    heads["330000"] = await take_in(nodes["330000"], tmp_path, 40)
    await complete(nodes, heads, timeout=90)
    await same_roots(nodes, list(heads))

    # The relays noticed the loss and put their whole logs back on the broker.
    for origin, head in heads.items():
        on_topic = 0
        for _ in range(40):
            on_topic = await messages_on(federation.broker.bootstrap_servers, events_topic(origin))
            if on_topic >= head:
                break
            await asyncio.sleep(1)
        assert on_topic >= head, f"{events_topic(origin)} holds {on_topic} messages, the log has {head}"


async def test_a_node_offline_while_tens_of_thousands_of_events_are_published_catches_up(
    federation: TestFederation, tmp_path: Path
) -> None:
    nodes = {o: await federation.start_node(o) for o in ("310000", "320000")}
    heads = {"310000": await take_in(nodes["310000"], tmp_path, 100)}
    await complete(nodes, heads)
    await federation.stop_node("320000")
    heads["310000"] += await take_in(nodes["310000"], tmp_path, 20000, first_row=10_000)
    nodes["320000"] = await federation.start_node("320000")
    await complete(nodes, heads, timeout=120)
    await same_roots(nodes, ["310000"])


class TamperingExchange(exchange_pb2_grpc.ExchangeServiceServicer):
    """A peer that relays an honest node's events with one byte of each payload flipped."""

    def __init__(self, honest: exchange_pb2_grpc.ExchangeServiceAsyncStub) -> None:
        self.honest = honest
        self.served = 0

    async def FetchEvents(
        self,
        request: exchange_pb2.FetchEventsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> exchange_pb2.FetchEventsResponse:
        response = await self.honest.FetchEvents(request)
        for envelope in response.envelopes:
            payload = bytearray(envelope.payload)
            payload[-1] ^= 0x01
            envelope.payload = bytes(payload)
        self.served += len(response.envelopes)
        return response


class ForgingLog(log_pb2_grpc.LogServiceServicer):
    """A peer that answers with checkpoints signed by its own key in the origin's name."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key

    async def GetCheckpoint(
        self,
        request: log_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.SignedCheckpoint:
        note = Checkpoint(log_name(request.origin), 10**6, bytes(32)).sign(self.key)
        return log_pb2.SignedCheckpoint(origin=request.origin, note=note, size=10**6, root=bytes(32))

    async def GetInclusionProof(
        self,
        request: log_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.InclusionProof:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this lie")
        raise AssertionError

    async def GetConsistencyProof(
        self,
        request: log_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.ConsistencyProof:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this lie")
        raise AssertionError


@pytest.fixture
async def four(tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker) -> AsyncIterator[TestFederation]:
    built = TestFederation(tmp_path / "four", ["310000", "320000", "330000", "340000"], postgres, broker)
    built.prepare()
    yield built
    await built.stop()


async def test_a_peer_serving_tampered_events_and_forged_checkpoints_is_rejected_and_sync_completes_elsewhere(
    four: TestFederation, tmp_path: Path
) -> None:
    origin, honest = await four.start_node("310000"), await four.start_node("340000")
    n = await take_in(origin, tmp_path, 150)
    await complete({"340000": honest}, {"310000": n})
    await four.stop_node("310000")  # the origin is down: only peers can serve its log

    liar = "320000"
    honest_channel = peer_channel(four, honest, liar)
    server = member_server(four, liar)
    tampering = TamperingExchange(exchange_pb2_grpc.ExchangeServiceStub(honest_channel))
    exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(tampering, server)
    log_pb2_grpc.add_LogServiceServicer_to_server(
        ForgingLog(SigningKey.load(four.layout.member_dir(liar) / "keys")), server
    )
    endpoint = four.bundle_now().member(liar).endpoint  # type: ignore[union-attr]
    await server.start()
    try:
        with EmbeddedBroker(tmp_path / "empty-broker") as empty:  # Kafka cannot help the victim
            victim = await four.start_node("330000", bus={"bootstrap_servers": empty.bootstrap_servers})
            await complete({"330000": victim}, {"310000": n}, timeout=60)
            assert tampering.served > 0, "the lying peer was never asked"
            assert victim.pool is not None
            async with victim.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT reason, channel FROM intake_rejections WHERE channel = $1", f"sync:{endpoint}"
                )
                forged = await conn.fetch("SELECT note FROM checkpoints WHERE origin = '310000' AND size = 1000000")
            assert {r["reason"] for r in rows} >= {"signature.invalid", "checkpoint.unsigned"}
            assert not forged, forged
            assert not (await victim.status()).open_alarms
            await four.stop_node("330000")
    finally:
        await server.stop(None)
        await honest_channel.close(None)


async def test_a_member_that_refuses_this_node_as_a_peer_raises_an_alarm_that_clears_itself(
    federation: TestFederation, tmp_path: Path, quick_refresh: None
) -> None:
    bound = federation.bundle_now()
    impostor, _ = issue(federation, "320000", tmp_path / "impostor")  # 320000's name, another key
    member = bound.member("320000")
    assert member is not None
    rebound = member.model_copy(update={"tls_spki_sha256": spki_sha256(impostor.read_bytes())})
    federation.publish(bound.with_member(rebound).next_version())  # 320000's own certificate is not bound
    origin = await federation.start_node("310000")
    await add_restricted_record(origin)  # seq 1, withheld from the bus: only FetchEvents brings it
    receiver = await federation.start_node("320000")

    [alarm] = await eventually(lambda: open_alarms(receiver, "sync.not_a_peer"))
    assert alarm.origin == "310000" and "not recognised as a peer by 310000" in alarm.message
    assert "310000" not in receiver.alarms.frozen  # a warning, not evidence against 310000's log
    denied = REGISTRY.get_sample_value("credex_sync_fetch_denied_total", {"origin": "320000", "peer": "310000"})
    assert (denied or 0) > 0
    assert (await receiver.status()).contiguous_by_origin.get("310000", 0) == 0

    federation.publish(bound.model_copy(update={"version": federation.bundle_now().version + 1}))
    await eventually(lambda: holds_without_alarm(receiver, "310000", 1))


async def open_alarms(node: Node, kind: str) -> list[Alarm]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return [a for a in await list_alarms(conn) if a.kind == kind]


async def holds_without_alarm(node: Node, origin: str, size: int) -> bool:
    status = await node.status()
    return status.contiguous_by_origin.get(origin, 0) >= size and not status.open_alarms


async def test_a_node_of_a_federation_started_without_client_tls_warns_that_peers_will_refuse_it(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="credex.node.runtime")
    await federation.start_node("310000", grpc={"tls": {"cert": None, "key": None, "client_ca": None}})
    assert "grpc.tls.cert/key are not set" in caplog.text
    assert "PERMISSION_DENIED" in caplog.text
