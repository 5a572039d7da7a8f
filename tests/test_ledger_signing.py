"""The ledger signs off the event loop, with the results it always had, and counts what it signs.

Signing a batch (an Ed25519 signature and a serialization per event) runs in a
worker thread; what comes out must be exactly what signing on the loop gave:
dense seqs, envelopes that verify against the node's key, leaf hashes of those
exact bytes. ``credex_events_signed`` counts every event signed, so a dashboard
of it is not a flat zero. The CloudEvents type of an event follows the proto enum.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from prometheus_client import REGISTRY

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.trust import EventVerifier
from credex.node.kafka import cloudevent_headers
from credex.v1 import event_pb2

from .conftest import TestFederation

NATIONAL = Profile.load("national")


def signed(origin: str) -> float:
    return REGISTRY.get_sample_value("credex_events_signed_total", {"origin": origin}) or 0.0


async def test_events_signed_in_a_worker_thread_verify_and_are_counted(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    before = signed("310000")
    path = tmp_path / "rows.csv"
    summary = synth.write(path, synth.SynthSpec(region="310000", rows=300, bad_share=0.0))
    [report] = await node.ingest([path], NATIONAL)
    assert report.new == summary.rows
    assert signed("310000") - before == report.new + report.corrected
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT seq, envelope, leaf_hash FROM events WHERE origin = $1 ORDER BY seq", "310000")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    verifier = EventVerifier(node.bundle)
    for row in rows:
        envelope = bytes(row["envelope"])
        assert verifier.verify_bytes(envelope, "310000").event.seq == row["seq"]
        assert bytes(row["leaf_hash"]) == hashlib.sha256(b"\x00" + envelope).digest()


def test_the_cloudevents_type_is_the_proto_enum_name() -> None:
    now = dt.datetime.now(dt.UTC)
    for name, number in event_pb2.EventType.items():
        headers = dict(cloudevent_headers("310000", 1, "id", number, "subject", now))
        word = "unknown" if number == 0 else name.removeprefix("EVENT_TYPE_").lower()
        assert headers["ce_type"] == f"cn.credex.record.{word}.v1".encode()
    assert dict(cloudevent_headers("310000", 1, "id", 99, "s", now))["ce_type"] == b"cn.credex.record.unknown.v1"
