"""SubscriptionService.Subscribe: a filtered, resumable, provable stream, on the real federation.

The subscriber checks every message with the trust bundle alone (tests/streaming.py uses
the same Subscriber as ``credex subscribe``): signatures, proofs against the origin's
signed checkpoints, and seqs against its cursor, so a duplicate fails the read itself
and a gap shows as a missing seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from credex.node.streams.stream import MAX_MESSAGE_BYTES, SCAN_WINDOW_BATCHES
from credex.node.streams.subscriber import load_cursor
from credex.v1 import event_pb2, lookup_pb2, record_pb2, subscription_pb2, subscription_pb2_grpc

from .callers import PUBLIC, audit_rows, client_channel, peer_channel
from .conftest import TestFederation, eventually
from .streaming import READ_TIMEOUT, Reading, append, company, penalty, reached, revoke, subscribe

SH = "310000"


async def test_a_stream_resumes_after_the_subscriber_goes_away_with_no_gap_and_no_duplicate(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 31)])
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        first = await subscribe(channel, bundle).until(lambda r: r.at(SH) >= 12)
        first.call.cancel()
    cursor = dict(first.subscriber.cursor)
    await append(node, [penalty(SH, n, company(n)) for n in range(31, 41)])

    async with peer_channel(federation, node, "320000") as channel:
        second = await subscribe(channel, bundle, cursor).until(lambda r: r.at(SH) >= 40)
        second.call.cancel()

    assert first.seqs(SH) + second.seqs(SH) == list(range(1, 41))
    assert min(second.seqs(SH)) == cursor[SH] + 1


async def test_a_stream_resumes_after_the_node_is_killed_and_restarted(federation: TestFederation) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 21)])
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        first = subscribe(channel, bundle)
        await first.until(lambda r: r.at(SH) >= 20)
        await federation.stop_node(SH)  # the stream is cut by the node going away
        with pytest.raises(grpc.aio.AioRpcError):
            await first.until(lambda r: False)
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(21, 36)])
    async with peer_channel(federation, node, "320000") as channel:
        second = await subscribe(channel, bundle, first.subscriber.cursor).until(lambda r: r.at(SH) >= 35)
        second.call.cancel()
    assert first.seqs(SH) + second.seqs(SH) == list(range(1, 36))


async def test_every_event_sent_is_proved_against_the_origins_signed_checkpoint(federation: TestFederation) -> None:
    node = await federation.start_node(SH, checkpoint={"every_seconds": 0.3})
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        reading = subscribe(channel, bundle)
        await append(node, [penalty(SH, n, company(n)) for n in range(1, 11)])
        # Sent at once, before a checkpoint covers them: their proofs follow as later messages.
        await reading.until(lambda r: r.proved(SH) >= set(range(1, 11)))
        reading.call.cancel()
    assert reading.seqs(SH) == list(range(1, 11))


async def test_proofs_a_cut_stream_still_owed_are_sent_again_on_resuming(federation: TestFederation) -> None:
    node = await federation.start_node(SH, checkpoint={"every_seconds": 3600, "every_events": 100_000})
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 11)])
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        first = await subscribe(channel, bundle).until(reached(SH, 10))
        first.call.cancel()
    assert first.proved(SH) == set()  # no checkpoint yet: every proof still owed when the stream was cut
    assert first.subscriber.proved() == {SH: 0}
    assert node.keeper is not None
    await node.keeper.sign_own()
    async with peer_channel(federation, node, "320000") as channel:
        second = subscribe(channel, bundle, first.subscriber.cursor, proved=first.subscriber.proved())
        await second.until(lambda r: r.subscriber.proved() == {SH: 10})
        second.call.cancel()
    assert second.proved(SH) == set(range(1, 11)), [(t.kind, t.seq) for t in second.taken]
    assert second.seqs(SH) == []  # the events themselves are not sent again


async def test_a_revoked_record_arrives_as_a_change(federation: TestFederation) -> None:
    node = await federation.start_node(SH)
    subject = company(7)
    await append(node, [penalty(SH, 7, subject)])
    bundle = federation.bundle_now()
    async with client_channel(federation, node, PUBLIC) as public, peer_channel(federation, node, "320000") as peer:
        seen_by_public = await subscribe(public, bundle).until(lambda r: r.at(SH) >= 1)
        seen_by_peer = await subscribe(peer, bundle).until(lambda r: r.at(SH) >= 1)
        await revoke(node, f"{SH}-CF-S7")
        await seen_by_public.until(lambda r: r.at(SH) >= 2)
        await seen_by_peer.until(lambda r: r.at(SH) >= 2)
        seen_by_public.call.cancel()
        seen_by_peer.call.cancel()
    # The public subscriber learns the record is withdrawn, without being sent the withdrawn record.
    assert seen_by_public.seqs(SH) == [1]
    assert seen_by_public.seqs(SH, "change") == [2]
    # A peer gets the signed revocation itself.
    revocation = [t.event for t in seen_by_peer.taken if t.kind == "event" and t.seq == 2]
    assert revocation and revocation[0] is not None and revocation[0].type == event_pb2.EVENT_TYPE_REVOKE


async def test_a_dispute_arrives_with_its_mark_and_a_repair_as_a_change(federation: TestFederation) -> None:
    node = await federation.start_node(SH)
    record_id = f"{SH}-CF-S8"
    await append(node, [penalty(SH, 8, company(8))])
    assert node.pool is not None
    bundle = federation.bundle_now()
    async with client_channel(federation, node, PUBLIC) as public:
        reading = subscribe(public, bundle, event_types=[event_pb2.EVENT_TYPE_DISPUTE, event_pb2.EVENT_TYPE_REPAIR])
        async with node.pool.acquire() as conn, conn.transaction():
            await node.ledger.amend(conn, record_id, event_pb2.EVENT_TYPE_DISPUTE, "异议受理", disputed=True)
        await reading.until(reached(SH, 2))
        async with node.pool.acquire() as conn, conn.transaction():
            await node.ledger.amend(
                conn,
                record_id,
                event_pb2.EVENT_TYPE_REPAIR,
                "信用修复",
                standing=lookup_pb2.ENTRY_STATUS_REPAIRED,
                disputed=False,
                case=event_pb2.CaseRef(case_id="R-1", kind="repair", outcome="approved"),
            )
        await reading.until(reached(SH, 3))
        reading.call.cancel()
    # Sent while the record was in view (an event judged before the repair is sent as it stood then).
    [dispute] = [t.event for t in reading.taken if t.event is not None]
    assert dispute is not None and dispute.type == event_pb2.EVENT_TYPE_DISPUTE and dispute.disputed
    assert reading.seqs(SH, "change") == [3]  # repaired: out of the public view, said without the record


async def test_the_filter_takes_only_what_was_asked_and_the_cursor_still_moves_past_the_rest(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(SH)
    wanted = company(3)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 11)])
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        reading = await subscribe(channel, bundle, subjects=[wanted]).until(lambda r: r.at(SH) >= 10)
        reading.call.cancel()
    assert [t.event.record.subject.uscc for t in reading.taken if t.event is not None] == [wanted]


async def test_a_scenario_filter_takes_the_records_that_trigger_a_measure_in_that_scenario(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(SH)
    listed = record_pb2.Record(
        record_id=f"{SH}-HMD-1",
        origin=SH,
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=company(1), name="某失信公司"),
        decision_date="2026-01-05",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2026-01-05", end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(list_name="严重失信主体名单"),
    )
    licence = record_pb2.Record(
        record_id=f"{SH}-XK-2",
        origin=SH,
        kind=record_pb2.KIND_LICENCE,
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=company(2), name="某守法公司"),
        decision_date="2026-01-05",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2026-01-05", end="2099-12-31"),
        licence=record_pb2.LicenceDetails(document_name="许可决定书"),
    )
    await append(node, [listed, licence])
    async with peer_channel(federation, node, "320000") as channel:
        reading = await subscribe(channel, federation.bundle_now(), scenario="政府采购").until(reached(SH, 2))
        reading.call.cancel()
    assert [t.event.record_id for t in reading.taken if t.event is not None] == [listed.record_id]


@pytest.mark.parametrize(
    ("filter_fields", "cursor", "code", "says"),
    [
        ({"origins": ["31000"]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "division code"),
        ({"origins": ["110000"]}, {}, grpc.StatusCode.NOT_FOUND, "not a member"),
        ({"kinds": [99]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "not a record kind"),
        ({"event_types": [42]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "not an event type"),
        ({"subjects": ["91310000ZZZZ"]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "subjects[0]"),
        ({"subjects": ["x" * 65]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "at most 64"),
        ({"scenario": "no-such-scenario"}, {}, grpc.StatusCode.INVALID_ARGUMENT, "unknown scenario"),
        ({"scenario": "政府采购\u202e"}, {}, grpc.StatusCode.INVALID_ARGUMENT, "control character"),
        ({}, {"cursor": [("310000", 1), ("310000", 2)]}, grpc.StatusCode.INVALID_ARGUMENT, "second time"),
        ({}, {"cursor": [("999999", 1)]}, grpc.StatusCode.INVALID_ARGUMENT, "division code"),
        ({}, {"cursor": [("310000", 2**63)]}, grpc.StatusCode.INVALID_ARGUMENT, "2^63-1"),
    ],
)
async def test_filters_and_cursors_are_validated_at_the_edge_before_anything_is_sent(
    federation: TestFederation,
    filter_fields: dict[str, object],
    cursor: dict[str, list[tuple[str, int]]],
    code: grpc.StatusCode,
    says: str,
) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, 1, company(1))])
    request = subscription_pb2.SubscribeRequest(
        filter=subscription_pb2.SubscriptionFilter(**filter_fields),  # type: ignore[arg-type]
        cursor=[subscription_pb2.Position(origin=o, seq=s) for o, s in cursor.get("cursor", [])],
    )
    async with client_channel(federation, node, PUBLIC) as channel:
        call = subscription_pb2_grpc.SubscriptionServiceStub(channel).Subscribe(request)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() == code
    assert says in (refused.value.details() or "")
    rows = await audit_rows(node, "Subscribe")
    assert [(r["caller"], r["status"]) for r in rows] == [(PUBLIC, code.name)]


async def test_a_caller_over_its_stream_limit_is_refused_with_a_clear_error(federation: TestFederation) -> None:
    node = await federation.start_node(SH, subscriptions={"max_streams_per_caller": 2, "heartbeat_seconds": 0.2})
    bundle = federation.bundle_now()
    async with client_channel(federation, node, PUBLIC) as channel, peer_channel(federation, node, "320000") as peer:
        held = [await subscribe(channel, bundle).until(lambda r: bool(r.taken)) for _ in range(2)]
        third = subscribe(channel, bundle)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await third.until(lambda r: bool(r.taken))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many streams open" in (refused.value.details() or "")
        # Another caller is not held to this caller's share.
        other = await subscribe(peer, bundle).until(lambda r: bool(r.taken))
        # Closing one frees its place.
        held[0].call.cancel()

        async def reopened() -> bool:
            again = subscribe(channel, bundle)
            try:
                await again.until(lambda r: bool(r.taken))
            except grpc.aio.AioRpcError:
                return False
            again.call.cancel()
            return True

        await eventually(reopened)
        for reading in (held[1], other):
            reading.call.cancel()


async def test_public_subscribers_together_cannot_take_every_stream_of_the_node(federation: TestFederation) -> None:
    node = await federation.start_node(
        SH, subscriptions={"max_streams": 2, "heartbeat_seconds": 0.2}, grpc={"public_share": 0.5}
    )
    bundle = federation.bundle_now()
    async with (
        client_channel(federation, node, PUBLIC) as first,
        client_channel(federation, node, "another-portal") as second,
        peer_channel(federation, node, "320000") as peer,
    ):
        held = await subscribe(first, bundle).until(lambda r: bool(r.taken))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await subscribe(second, bundle).until(lambda r: bool(r.taken))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "public callers" in (refused.value.details() or "")
        kept = await subscribe(peer, bundle).until(lambda r: bool(r.taken))  # the rest is the peers'
        for reading in (held, kept):
            reading.call.cancel()


async def test_every_stream_is_audited_once_at_open_and_once_at_close_with_what_was_sent(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 6)])
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        reading = await subscribe(channel, bundle, purpose="监管订阅", kinds=[record_pb2.KIND_PENALTY]).until(
            lambda r: r.at(SH) >= 5
        )
        reading.call.cancel()

    async def closed() -> list[Any]:
        rows = await audit_rows(node, "Subscribe")
        return rows if len(rows) == 2 else []

    opened_row, closed_row = await eventually(closed)
    assert (opened_row["caller"], opened_row["status"], opened_row["purpose"]) == ("320000", "OK", "监管订阅")
    assert "stream opened" in opened_row["detail"] and f"kinds={record_pb2.KIND_PENALTY}" in opened_row["detail"]
    assert closed_row["status"] == "CANCELLED" and closed_row["answered"] == 5
    assert "stream closed" in closed_row["detail"] and "5 events" in closed_row["detail"]


async def test_ten_subscribers_one_stalled_do_not_hold_up_the_others_or_grow_the_nodes_memory(
    federation: TestFederation,
) -> None:
    batch = 50
    node = await federation.start_node(
        SH, subscriptions={"max_streams_per_caller": 16, "batch_size": batch, "heartbeat_seconds": 0.5}
    )
    jiangsu = await federation.start_node("320000")  # a peer whose log intake keeps taking in meanwhile
    bundle = federation.bundle_now()
    padding = "款" * 600  # ~2 KB an event: the stalled stream's window fills after a few dozen
    # The stalled subscriber never reads; without BDP probing its HTTP/2 window stays at its initial size.
    stalled_channel = peer_channel(federation, node, "330000", options=(("grpc.http2.bdp_probe", 0),))
    readers_channel = peer_channel(federation, node, "320000")
    try:
        stub = subscription_pb2_grpc.SubscriptionServiceStub(stalled_channel)
        stalled = stub.Subscribe(subscription_pb2.SubscribeRequest())
        readers = [subscribe(readers_channel, bundle) for _ in range(9)]
        envelope_bytes = 0
        for round_ in range(3):
            first = round_ * 400 + 1
            await append(node, [penalty(SH, n, company(n), note=padding) for n in range(first, first + 400)])
            assert node.pool is not None
            async with node.pool.acquire() as conn:
                envelope_bytes = max(
                    envelope_bytes,
                    await conn.fetchval("SELECT max(length(envelope)) FROM events WHERE origin = $1", SH),
                )
            await append(jiangsu, [penalty("320000", n, company(n, "320500")) for n in range(first, first + 20)])
            # The readers get Shanghai's new events, and Jiangsu's once intake has taken them in.
            both = reached(SH, first + 399, ("320000", 20 * (round_ + 1)))
            await asyncio.gather(*(r.until(both) for r in readers))

            async def held_back() -> float:
                value = REGISTRY.get_sample_value("credex_stream_buffered_bytes", {"origin": SH})
                return float(value or 0.0)

            # The stalled stream holds at most one batch read from the store and one message it could not
            # write (an item over MAX_MESSAGE_BYTES at most, with its proof), whatever was appended.
            held = await eventually(held_back)
            bound = batch * envelope_bytes + MAX_MESSAGE_BYTES + 2 * envelope_bytes + 4096
            assert held <= bound, (round_, held, bound)
        assert 1200 * envelope_bytes > 4 * bound  # what the stalled subscriber did not take is far more
        for reader in readers:
            assert reader.seqs(SH) == list(range(1, 1201))
            assert reader.seqs("320000") == list(range(1, 61))
        stalled.cancel()
        for reader in readers:
            reader.call.cancel()
    finally:
        with contextlib.suppress(Exception):
            await stalled_channel.close(None)
        await readers_channel.close(None)


async def test_credex_subscribe_killed_mid_stream_resumes_from_its_cursor_file(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node(SH)
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 41)])
    tls = federation.layout.member_dir("320000") / "tls"
    cursor_file = tmp_path / "cursor.json"
    command = [
        sys.executable,
        "-m",
        "credex.node.cli",
        "subscribe",
        "--node",
        f"127.0.0.1:{node.port}",
        "--from",
        str(cursor_file),
        "--kinds",
        "penalty",
        "--bundle",
        str(federation.layout.bundle),
        "--federation-key",
        str(federation.layout.federation_public),
        "--ca",
        str(federation.layout.ca_dir / "ca.crt"),
        "--cert",
        str(tls / "node.crt"),
        "--key",
        str(tls / "node.key"),
    ]
    first = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert first.stdout is not None
    printed: list[bytes] = []  # event lines; proofs that follow earlier events print lines of their own
    while len(printed) < 15:
        line = await asyncio.wait_for(first.stdout.readline(), READ_TIMEOUT)
        assert line, "credex subscribe stopped"
        if b" signed" in line:
            printed.append(line)
    first.kill()  # no goodbye: the cursor file is whatever was last saved whole
    await first.wait()
    saved = load_cursor(cursor_file)[0][SH]
    assert saved >= 15
    taken_before = [int(line.split()[0].split(b":")[1]) for line in printed]
    second = await asyncio.create_subprocess_exec(
        *command, "--max-events", str(40 - saved), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(second.communicate(), READ_TIMEOUT)
    assert second.returncode == 0
    taken_after = [int(line.split()[0].split(b":")[1]) for line in out.splitlines() if b" signed" in line]
    assert taken_after == list(range(saved + 1, 41))
    assert taken_before == list(range(1, 16))


async def test_a_filter_that_passes_little_reads_history_a_window_at_a_time_and_says_how_far_it_got(
    federation: TestFederation,
) -> None:
    """No one read of the store scans an unbounded stretch of history however rarely the filter matches:
    the cursor moves a bounded window of seqs per read, and each step reaches the subscriber."""
    batch = 10
    node = await federation.start_node(SH, subscriptions={"batch_size": batch, "heartbeat_seconds": 0.5})
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 501)])
    bundle = federation.bundle_now()
    cursors: list[int] = []

    def noted(reading: Reading) -> bool:
        cursors.append(reading.at(SH))
        return reading.at(SH) >= 500

    async with peer_channel(federation, node, "320000") as channel:
        reading = await subscribe(channel, bundle, subjects=[company(9999)]).until(noted)
        reading.call.cancel()
    assert reading.seqs(SH) == []
    steps = sorted(set(cursors))
    assert steps[0] == 0 and steps[-1] == 500
    window = batch * SCAN_WINDOW_BATCHES
    assert all(later - earlier <= window for earlier, later in itertools.pairwise(steps)), steps


async def test_when_every_subscriber_goes_away_the_node_lets_go_of_the_streams_and_the_bells_connection(
    federation: TestFederation,
) -> None:
    node = await federation.start_node(SH, subscriptions={"heartbeat_seconds": 0.2})
    await append(node, [penalty(SH, n, company(n)) for n in range(1, 4)])
    bundle = federation.bundle_now()
    assert node.pool is not None

    async def listening() -> int:
        assert node.pool is not None
        async with node.pool.acquire() as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
                )
                or 0
            )

    def open_streams() -> float:
        return float(REGISTRY.get_sample_value("credex_streams_open", {"origin": SH}) or 0.0)

    async def settled() -> int | None:
        count = await listening()  # the relay's publisher and the latest-checkpoints news listen from the start
        return count if count == 2 else None

    others: int = await eventually(settled)
    async with peer_channel(federation, node, "320000") as channel:
        readings = [await subscribe(channel, bundle).until(reached(SH, 3)) for _ in range(3)]
        assert open_streams() == 3

        async def one_more() -> bool:
            return await listening() == others + 1  # one connection listens for all the streams

        await eventually(one_more)
        for reading in readings:
            reading.call.cancel()

        async def let_go() -> bool:
            return open_streams() == 0 and await listening() == others

        await eventually(let_go)
