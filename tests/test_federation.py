"""A record taken in by one region's node is answered by every other region's node."""

from __future__ import annotations

from pathlib import Path

from credex.adapters import synth
from credex.adapters.profile import Profile
from credex.node.client import get_profile
from credex.node.embedded import EmbeddedBroker
from credex.node.runtime import Node

from .conftest import TestFederation, eventually

NATIONAL = Profile.load("national")


def sample(tmp_path: Path, region: str, rows: int = 60, **spec: object) -> tuple[Path, synth.SynthSummary]:
    path = tmp_path / f"{region}-{rows}.csv"
    summary = synth.write(path, synth.SynthSpec(region=region, rows=rows, bad_share=0.0, **spec))  # type: ignore[arg-type]
    return path, summary


async def holds(node: Node, origin: str, count: int) -> bool:
    status = await node.status()
    return status.records_by_origin.get(origin, 0) >= count


async def test_a_record_taken_in_by_one_node_is_returned_by_every_other_node(
    federation: TestFederation, tmp_path: Path
) -> None:
    nodes = {origin: await federation.start_node(origin) for origin in federation.origins}
    path, summary = sample(tmp_path, "310000", shared_share=0.5)
    [report] = await nodes["310000"].ingest([path], NATIONAL)
    assert report.accepted == summary.rows

    for origin in ("320000", "330000"):
        await eventually(lambda origin=origin: holds(nodes[origin], "310000", report.new))

    subject = sorted(summary.shared_subjects)[0]
    for origin in ("320000", "330000"):
        subject_id, entries = await get_profile(
            f"127.0.0.1:{nodes[origin].port}",
            subject,
            federation.bundle_now(),
            purpose="test",
            tls=federation.layout.client_tls(),
        )
        assert subject_id == subject
        assert entries, f"{origin} returned no records for {subject}"
        assert all(c.entry.origin == "310000" and c.verified for c in entries)
        assert all(c.entry.record.subject.uscc == subject for c in entries)


async def test_a_node_started_after_the_others_published_ends_up_with_all_their_records(
    federation: TestFederation, tmp_path: Path
) -> None:
    early = {o: await federation.start_node(o) for o in ("310000", "320000")}
    counts = {}
    for origin, node in early.items():
        path, _ = sample(tmp_path, origin, rows=80)
        [report] = await node.ingest([path], NATIONAL)
        counts[origin] = report.new
    await eventually(lambda: _published(early))

    late = await federation.start_node("330000")
    for origin, n in counts.items():
        await eventually(lambda origin=origin, n=n: holds(late, origin, n))


async def test_a_late_node_catches_up_over_grpc_when_kafka_cannot_deliver(
    federation: TestFederation, tmp_path: Path
) -> None:
    early = await federation.start_node("310000")
    path, _ = sample(tmp_path, "310000", rows=120)
    [report] = await early.ingest([path], NATIONAL)
    await eventually(lambda: _published({"310000": early}))

    # The late node talks to a broker that has never seen 310000's log: only
    # FetchEvents over gRPC can bring it the events.
    with EmbeddedBroker(tmp_path / "other-broker") as empty_broker:
        late = await federation.start_node("320000", bus={"bootstrap_servers": empty_broker.bootstrap_servers})
        await eventually(lambda: holds(late, "310000", report.new))
        status = await late.status()
        assert status.contiguous_by_origin["310000"] == report.last_seq
        assert status.intake_counters["310000"]["applied"] == report.new
        await federation.stop_node("320000")


async def _published(nodes: dict[str, Node]) -> bool:
    for node in nodes.values():
        status = await node.status()
        if status.published < status.own_events:
            return False
    return True
