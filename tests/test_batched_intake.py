"""Large batches on a running federation: signed and verified in worker processes, fetched by sync in rounds.

A batch large enough for the signature workers comes out exactly as one verified
in process: the same events in the same order, the same rejections for the same
forgeries. Missing seqs scattered through a log (withheld events between those
Kafka brought) are fetched in one round of concurrent requests, one per stretch,
not one round trip after another. A stopped node leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.envelope import seal
from credex.crypto.keys import SigningKey
from credex.node.chain.wanted import stretches
from credex.node.embedded import EmbeddedBroker
from credex.node.intake.peer_events import Checked
from credex.node.runtime import Node
from credex.node.sync import catch_up
from credex.v1 import event_pb2

from .callers import audit_rows
from .conftest import TestFederation, eventually
from .forgery import event_payload

NATIONAL = Profile.load("national")


async def publish_log(node: Node, tmp_path: Path, rows: int) -> list[bytes]:
    """Take ``rows`` rows in at ``node``; return its log's envelopes in seq order."""
    path = tmp_path / "log.csv"
    synth.write(path, synth.SynthSpec(region=node.origin, rows=rows, bad_share=0.0))
    await node.ingest([path], NATIONAL)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows_ = await conn.fetch("SELECT envelope FROM events WHERE origin = $1 ORDER BY seq", node.origin)
    return [bytes(r["envelope"]) for r in rows_]


async def fetches_served(node: Node) -> int:
    """FetchEvents calls ``node`` answered with events (a probe for the head asks for none)."""
    return sum(row["calls"] for row in await audit_rows(node, "FetchEvents") if row["answered"])


def outcome(checked: Checked) -> tuple[list[tuple[int, bytes]], list[tuple[str, bytes]]]:
    return [(e.seq, e.envelope) for e in checked.events], [(r.reason, r.raw) for r in checked.rejections]


async def test_a_large_batch_verified_in_the_workers_comes_out_as_one_verified_in_process(
    federation: TestFederation, tmp_path: Path
) -> None:
    children = set(multiprocessing.active_children())
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 320)
    assert len(log) >= publisher.signatures.min_batch
    assert publisher.signatures.started  # the ingest's batch was signed by the workers

    with EmbeddedBroker(tmp_path / "empty-broker") as empty:
        receiver = await federation.start_node("320000", bus={"bootstrap_servers": empty.bootstrap_servers})
        own = SigningKey.load(federation.layout.member_dir("310000") / "keys")
        flipped = event_pb2.Envelope.FromString(log[7])
        flipped.signature = bytes([flipped.signature[0] ^ 1]) + flipped.signature[1:]
        forged = [
            flipped.SerializeToString(),
            seal(SigningKey.generate(), event_payload("310000", 9001)).SerializeToString(),
            seal(own, event_payload("330000", 9003)).SerializeToString(),
            b"\xff\xfe not an envelope",
        ]
        batch = log[:100] + forged[:2] + log[100:200] + forged[2:] + log[200:]
        assert receiver.intake is not None
        first = await receiver.intake.check("310000", batch)  # starts the workers; done in process meanwhile
        await eventually(lambda: asyncio.sleep(0, receiver.signatures.ready))
        in_workers = await receiver.intake.check("310000", batch)
        in_process = receiver.intake.verify("310000", batch)
        assert outcome(first) == outcome(in_process)
        assert outcome(in_workers) == outcome(in_process)
        assert [e.seq for e in in_workers.events] == list(range(1, len(log) + 1))
        assert [r.reason for r in in_workers.rejections] == [
            "signature.invalid",
            "key.unknown",
            "origin.mismatch",
            "envelope.malformed",
        ]
        await federation.stop_node("320000")
    await federation.stop_node("310000")
    started = set(multiprocessing.active_children()) - children
    assert not any(p.is_alive() for p in started), "a stopped node left signature workers running"


async def test_missing_seqs_scattered_through_a_log_are_fetched_in_one_round_the_lone_ones_in_one_request(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 150)
    head = len(log)
    holes = {seq for seq in range(1, head + 1) if seq % 7 == 0 or seq > head - 3}
    with EmbeddedBroker(tmp_path / "empty-broker") as empty:
        # Kafka cannot help, and sync's own loop waits out its first probe: the fetch below is the only one.
        receiver = await federation.start_node(
            "320000", bus={"bootstrap_servers": empty.bootstrap_servers}, sync={"probe_seconds": 3600}
        )
        assert receiver.intake is not None and receiver.sync is not None
        held = [envelope for seq, envelope in enumerate(log, start=1) if seq not in holes]
        await receiver.intake.accept("310000", held, "test")
        assert (await receiver.status()).contiguous_by_origin["310000"] == 6

        missing = stretches(sorted(holes))
        lone = tuple(first for first, last in missing if first == last)
        asks = [catch_up.Ask(first, last - first + 1) for first, last in missing if last > first]
        assert len(lone) > 10 and asks  # both kinds, so the test says something of each
        assert await receiver.sync._missing("310000", head, 0) == [*asks, catch_up.Ask(seqs=lone)]
        served_before = await fetches_served(publisher)
        endpoint = receiver.sync.sources("310000")[0]
        applied = await receiver.sync.fetch_missing("310000", head, [endpoint])
        assert applied == len(holes)
        assert (await receiver.status()).contiguous_by_origin["310000"] == head
        served = await fetches_served(publisher) - served_before
        # One request per stretch and one for the lone seqs, then one look that finds nothing left (no request):
        # no retries, no extra round.
        assert served == len(asks) + 1
        counters = (await receiver.status()).intake_counters["310000"]
        assert counters.get("replay", 0) == 0
        await federation.stop_node("320000")
