"""Sync fetches only what this node neither holds nor is taking in: no event is verified twice for nothing.

What a node has of an origin's log is what its store holds plus what intake has
verified and is storing now (:meth:`Intake.applying`); sync asks both before it
asks a member for anything. A withheld notice names the exact seq that will never
cross the bus, so sync fetches exactly the seqs announced, not every missing seq up
to the highest: the others may still be on their way from a partition of the topic
that lags, and fetching them too would make them replays when Kafka delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from credex.node.chain import WantedRanges, Why
from credex.node.chain.wanted import MAX_WITHHELD_SEQS
from credex.node.embedded import EmbeddedBroker
from credex.node.runtime import Node
from credex.node.sync import catch_up
from credex.v1 import exchange_pb2, exchange_pb2_grpc

from .callers import member_server, peer_channel
from .conftest import TestFederation, eventually
from .test_batched_intake import fetches_served, publish_log


async def held_seqs(node: Node, origin: str) -> set[int]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return {r["seq"] for r in await conn.fetch("SELECT seq FROM events WHERE origin = $1", origin)}


@contextlib.asynccontextmanager
async def receiver_off_the_bus(
    federation: TestFederation, tmp_path: Path, probe_seconds: float = 3600
) -> AsyncIterator[Node]:
    """320000 on a broker that carries nothing: what it holds of 310000 is what the test hands its intake
    (as Kafka would) or what its sync fetches; stopped before that broker is."""
    with EmbeddedBroker(tmp_path / "empty-broker") as empty:
        receiver = await federation.start_node(
            "320000", bus={"bootstrap_servers": empty.bootstrap_servers}, sync={"probe_seconds": probe_seconds}
        )
        assert receiver.intake is not None and receiver.sync is not None and receiver.pool is not None
        try:
            yield receiver
        finally:
            await federation.stop_node("320000")


def test_a_notice_keeps_its_exact_seqs_merged_and_bounded_and_a_range_wins_over_them() -> None:
    wanted = WantedRanges()
    wanted.put("320000", 9, Why.WITHHELD, seqs=[3, 9])
    wanted.put("320000", 5, Why.WITHHELD, seqs=[5])
    [merged] = wanted.take()
    assert (merged.upto, merged.seqs) == (9, frozenset({3, 5, 9}))

    wanted.put("320000", 9, Why.WITHHELD, seqs=[9])
    wanted.put("320000", 12, Why.WITHHELD)  # no exact seqs given: every missing seq up to 12
    [ranged] = wanted.take()
    assert (ranged.upto, ranged.seqs) == (12, None)

    wanted.put("320000", 1, Why.GAP, seqs=[1])  # only a notice names exact seqs
    [gap] = wanted.take()
    assert gap.seqs is None

    for seq in range(1, MAX_WITHHELD_SEQS + 2):  # a flood of notices falls back to the range, bounded
        wanted.put("320000", seq, Why.WITHHELD, seqs=[seq])
    [flood] = wanted.take()
    assert (flood.upto, flood.seqs) == (MAX_WITHHELD_SEQS + 1, None)


def test_the_requests_leave_out_every_seq_being_applied() -> None:
    Ask = catch_up.Ask
    applying = frozenset({3, 4, 9, 20})
    assert catch_up._requests([(1, 10), (20, 22)], applying, per_request=4) == [
        Ask(1, 2),
        Ask(5, 4),
        Ask(21, 2),
        Ask(seqs=(10,)),
    ]
    assert catch_up._requests([(1, 10)], frozenset(), per_request=4) == [Ask(1, 4), Ask(5, 4), Ask(9, 2)]
    assert catch_up._requests([(5, 5)], frozenset({5}), per_request=4) == []


def test_scattered_seqs_are_asked_for_together_and_a_round_stays_bounded() -> None:
    """Withheld events are one-seq stretches all through a log: a request per fetch_limit of them, not per seq."""
    Ask = catch_up.Ask
    withheld = [(seq, seq) for seq in range(50, 50 * 200, 50)]  # 199 of them
    asks = catch_up._requests(withheld, frozenset(), per_request=100)
    assert asks == [Ask(seqs=tuple(range(50, 5050, 50))), Ask(seqs=tuple(range(5050, 50 * 200, 50)))]
    assert [a.last for a in asks] == [5000, 9950]
    many = catch_up._requests([(seq, seq) for seq in range(1, 2 * catch_up.ROUND_EVENTS, 2)], frozenset(), 2000)
    assert sum(len(a.seqs) for a in many) == catch_up.ROUND_EVENTS  # a round's worth, asked in a few requests
    assert len(many) == catch_up.ROUND_EVENTS // 2000
    stretches = catch_up._requests([(s, s + 1) for s in range(1, 1000, 3)], frozenset(), per_request=10)
    assert len(stretches) == catch_up.MAX_REQUESTS and all(a.limit == 2 for a in stretches)


async def test_sync_does_not_fetch_what_intake_is_storing_at_that_moment(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 150)
    async with receiver_off_the_bus(federation, tmp_path) as receiver:
        assert receiver.intake is not None and receiver.sync is not None and receiver.pool is not None
        await receiver.intake.accept("310000", log[:10], "test")

        # Another transaction holds the origin's progress row: intake's store of seqs 11-100 waits on it, verified.
        async with receiver.pool.acquire() as blocker:
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("SELECT 1 FROM origin_progress WHERE origin = '310000' FOR UPDATE")
            storing = asyncio.create_task(receiver.intake.accept("310000", log[10:100], "test"))

            intake = receiver.intake

            async def applying() -> frozenset[int]:
                return intake.applying("310000")

            assert await eventually(applying) == frozenset(range(11, 101))
            assert await held_seqs(receiver, "310000") == set(range(1, 11))  # not committed yet
            assert await receiver.sync._missing("310000", len(log), 0) == [catch_up.Ask(101, 50)]
            await blocking.rollback()
        result = await storing
        assert result.applied == 90
        assert receiver.intake.applying("310000") == frozenset()

        served_before = await fetches_served(publisher)
        applied = await receiver.sync.fetch_missing("310000", len(log), receiver.sync.sources("310000"))
        assert applied == 50 and await held_seqs(receiver, "310000") == set(range(1, 151))
        assert await fetches_served(publisher) - served_before == 1
        assert (await receiver.status()).intake_counters["310000"].get("replay", 0) == 0


async def test_a_withheld_notice_fetches_the_seqs_it_names_and_leaves_the_rest_to_kafka(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 150)
    head = len(log)
    withheld = [7, 50, 120]
    lagging = set(range(60, 101))  # on a partition Kafka has yet to deliver
    async with receiver_off_the_bus(federation, tmp_path) as receiver:
        assert receiver.intake is not None and receiver.sync is not None and receiver.pool is not None
        missing = set(withheld) | lagging
        await receiver.intake.accept("310000", [e for seq, e in enumerate(log, start=1) if seq not in missing], "test")
        served_before = await fetches_served(publisher)

        receiver.wanted.put("310000", max(withheld), Why.WITHHELD, seqs=withheld)  # what the notices said

        sync = receiver.sync

        async def fetched() -> bool:  # and the round done: what the notices said is then forgotten
            return set(withheld) <= await held_seqs(receiver, "310000") and sync.withheld("310000") is None

        await eventually(fetched)  # sync's own loop, woken by the notice
        assert await fetches_served(publisher) - served_before == 1  # one request for the seqs named
        assert not lagging & await held_seqs(receiver, "310000")  # left to Kafka

        # Kafka delivers the rest: all of it new, nothing fetched twice.
        result = await receiver.intake.accept("310000", [log[seq - 1] for seq in sorted(lagging)], "kafka")
        assert (result.applied, result.replays, result.contiguous_seq) == (len(lagging), 0, head)
        counters = (await receiver.status()).intake_counters["310000"]
        assert counters["applied"] == head and counters.get("replay", 0) == 0


async def test_notices_that_keep_coming_do_not_keep_a_gap_they_do_not_name_from_being_fetched(
    federation: TestFederation, tmp_path: Path
) -> None:
    """A notice is unsigned: a stream of them naming one seq (here the head, already held) fetches
    that seq only, and must not restart the wait Kafka gets for a gap elsewhere, or it is never fetched."""
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 60)
    lost = 40  # lost by the bus: nothing announces it
    async with receiver_off_the_bus(federation, tmp_path, probe_seconds=1.0) as receiver:
        assert receiver.intake is not None and receiver.sync is not None and receiver.pool is not None
        await receiver.intake.accept("310000", [e for seq, e in enumerate(log, start=1) if seq != lost], "test")
        sync, wanted = receiver.sync, receiver.wanted

        async def notices() -> None:  # a forger on the bus: a notice again whenever sync forgot the last one
            while True:
                if sync.withheld("310000") is None:
                    wanted.put("310000", len(log), Why.WITHHELD, seqs=[len(log)])
                await asyncio.sleep(0.02)

        forger = asyncio.create_task(notices())
        try:

            async def repaired() -> bool:
                return lost in await held_seqs(receiver, "310000")

            await eventually(repaired)
        finally:
            forger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forger


async def test_seqs_whose_store_failed_are_no_longer_applying_and_sync_asks_for_them(
    federation: TestFederation, tmp_path: Path
) -> None:
    """Intake's transaction dies under it (its database connection is killed): what it was applying is missing
    again, so sync asks for it instead of leaving it out for good."""
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 30)
    async with receiver_off_the_bus(federation, tmp_path) as receiver:
        assert receiver.intake is not None and receiver.sync is not None and receiver.pool is not None
        intake = receiver.intake
        await intake.accept("310000", log[:10], "test")
        async with receiver.pool.acquire() as blocker:
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("SELECT 1 FROM origin_progress WHERE origin = '310000' FOR UPDATE")
            storing = asyncio.create_task(intake.accept("310000", log[10:20], "test"))

            async def applying() -> frozenset[int]:
                return intake.applying("310000")

            assert await eventually(applying) == frozenset(range(11, 21))

            async def killed() -> int:  # the backend waiting on the lock is intake's: ended, as a restart would
                return int(
                    await blocker.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                    )
                )

            assert await eventually(killed) == 1
            with contextlib.suppress(Exception):
                await storing
            await blocking.rollback()
        assert intake.applying("310000") == frozenset()
        assert await held_seqs(receiver, "310000") == set(range(1, 11))
        assert await receiver.sync._missing("310000", len(log), 0) == [catch_up.Ask(11, 20)]


class ExchangeBeforeSeqs(exchange_pb2_grpc.ExchangeServiceServicer):
    """A member whose code predates ``seqs``: it reads a request as its fields 1-3, as protobuf reads unknown fields.

    ``claiming``: a member that answers every request with nothing but a head it claims.
    """

    def __init__(self, honest: exchange_pb2_grpc.ExchangeServiceAsyncStub, claiming: int = 0) -> None:
        self.honest = honest
        self.claiming = claiming
        self.asked: list[tuple[int, int]] = []

    @property
    def fetches(self) -> list[tuple[int, int]]:
        """(from_seq, limit) of the requests for events, in order: not sync's probes of the head (1, 0)."""
        return [asked for asked in self.asked if asked != (1, 0)]

    async def FetchEvents(
        self,
        request: exchange_pb2.FetchEventsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> exchange_pb2.FetchEventsResponse:
        self.asked.append((request.from_seq, request.limit))
        if self.claiming:
            return exchange_pb2.FetchEventsResponse(origin=request.origin, head_seq=self.claiming)
        older = exchange_pb2.FetchEventsRequest(origin=request.origin, from_seq=request.from_seq, limit=request.limit)
        return await self.honest.FetchEvents(older)


@contextlib.asynccontextmanager
async def standing_in_for_330000(
    federation: TestFederation, publisher: Node, claiming: int = 0
) -> AsyncIterator[ExchangeBeforeSeqs]:
    """330000's endpoint served by :class:`ExchangeBeforeSeqs`, relaying ``publisher``'s log."""
    async with peer_channel(federation, publisher, "330000") as channel:
        member = ExchangeBeforeSeqs(exchange_pb2_grpc.ExchangeServiceStub(channel), claiming)
        server = member_server(federation, "330000")
        exchange_pb2_grpc.add_ExchangeServiceServicer_to_server(member, server)
        await server.start()
        try:
            yield member
        finally:
            await server.stop(None)


async def test_a_member_that_predates_asking_by_seqs_is_asked_for_them_one_at_a_time(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 60)
    withheld = [7, 30, 41]
    endpoint = federation.bundle_now().member("330000").endpoint  # type: ignore[union-attr]
    # Up before the receiver, whose channel to an endpoint that is not there would back off.
    async with (
        standing_in_for_330000(federation, publisher) as older,
        receiver_off_the_bus(federation, tmp_path) as receiver,
    ):
        assert receiver.intake is not None and receiver.sync is not None
        held = [e for seq, e in enumerate(log, start=1) if seq not in withheld]
        await receiver.intake.accept("310000", held, "test")
        older.asked.clear()  # what the receiver's start asked (its first probes)
        applied = await receiver.sync.fetch_missing("310000", len(log), [endpoint], frozenset(withheld))
        assert set(range(1, len(log) + 1)) == await held_seqs(receiver, "310000")
        # The seqs (read as a stretch of none), the first seq alone (served: an older member), then the rest.
        assert older.fetches[:2] == [(0, 0), (7, 1)] and sorted(older.fetches[2:]) == [(30, 1), (41, 1)]
        older.asked.clear()
        remembered = await receiver.sync._fetch_round(endpoint, "310000", [catch_up.Ask(seqs=tuple(withheld))])
        assert sorted(older.fetches) == [(7, 1), (30, 1), (41, 1)]  # remembered: no ask by seqs first
        assert sorted(remembered) == sorted(log[seq - 1] for seq in withheld)
    assert applied == len(withheld)


async def test_a_member_that_claims_events_and_serves_none_costs_two_requests_not_one_per_seq(
    federation: TestFederation, tmp_path: Path
) -> None:
    publisher = await federation.start_node("310000")
    log = await publish_log(publisher, tmp_path, 60)
    withheld = list(range(2, 60, 2))
    endpoint = federation.bundle_now().member("330000").endpoint  # type: ignore[union-attr]
    async with (
        standing_in_for_330000(federation, publisher, claiming=2**62) as liar,
        receiver_off_the_bus(federation, tmp_path) as receiver,
    ):
        assert receiver.intake is not None and receiver.sync is not None
        held = [e for seq, e in enumerate(log, start=1) if seq not in withheld]
        await receiver.intake.accept("310000", held, "test")
        liar.asked.clear()
        applied = await receiver.sync.fetch_missing("310000", len(log), [endpoint], frozenset(withheld))
        assert liar.fetches == [(0, 0), (withheld[0], 1)]
        assert not set(withheld) & await held_seqs(receiver, "310000")
    assert applied == 0
