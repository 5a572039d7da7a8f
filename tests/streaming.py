"""Helpers of the subscription tests: records to append, and a subscriber that reads and checks a stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from credex.crypto.trust import TrustBundle
from credex.domain import uscc as uscc_codes
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.node.streams.subscriber import Subscriber, Taken, positions
from credex.v1 import record_pb2, subscription_pb2, subscription_pb2_grpc

READ_TIMEOUT = 60.0  # a failure bound only: a stream that says nothing for this long has hung


def company(n: int, division: str = "310100") -> str:
    return uscc_codes.make("91", division, f"TX{n:06d}")


def penalty(
    origin: str, number: int, subject: str, level: int = record_pb2.SHARING_LEVEL_PUBLIC, note: str = ""
) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"{origin}-CF-S{number}",
        origin=origin,
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=subject, name=f"某公司{number}"),
        decision_date="2026-01-05",
        sharing_level=level,  # type: ignore[arg-type]
        publicity=record_pb2.PublicityWindow(start="2026-01-05", end="2099-12-31"),
        penalty=record_pb2.PenaltyDetails(content=f"罚款 {number} 元 {note}", severity=record_pb2.SEVERITY_GENERAL),
    )


async def append(node: Node, records: Sequence[record_pb2.Record]) -> list[int]:
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        result = await node.ledger.append(conn, [Change.of(r) for r in records])
    return result.seqs


async def revoke(node: Node, record_id: str, reason: str = "撤销行政处罚决定") -> None:
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.revoke(conn, record_id, reason)


@dataclass
class Reading:
    """A subscriber reading one call: every message checked and kept in order."""

    call: grpc.aio.UnaryStreamCall[subscription_pb2.SubscribeRequest, subscription_pb2.SubscribeResponse]
    subscriber: Subscriber
    taken: list[Taken] = field(default_factory=list)

    async def until(self, done: Callable[[Reading], bool]) -> Reading:
        """Read until ``done`` says so; a stream that ends first, or says nothing for long, fails the test."""
        while not done(self):
            message = await asyncio.wait_for(self.call.read(), READ_TIMEOUT)
            if not isinstance(message, subscription_pb2.SubscribeResponse):
                raise AssertionError("the stream ended")
            self.taken.extend(self.subscriber.take(message))
        return self

    def seqs(self, origin: str, kind: str = "event") -> list[int]:
        return [t.seq for t in self.taken if t.origin == origin and t.kind == kind]

    def proved(self, origin: str) -> set[int]:
        return {t.seq for t in self.taken if t.origin == origin and t.proved}

    def at(self, origin: str) -> int:
        return self.subscriber.cursor.get(origin, 0)


def reached(origin: str, seq: int, *more: tuple[str, int]) -> Callable[[Reading], bool]:
    """Done once the reading's cursor for ``origin`` is at ``seq`` or beyond (and for each of ``more``)."""
    wanted = [(origin, seq), *more]
    return lambda reading: all(reading.at(o) >= s for o, s in wanted)


def subscribe(
    channel: grpc.aio.Channel,
    bundle: TrustBundle,
    cursor: dict[str, int] | None = None,
    purpose: str = "测试订阅",
    proved: dict[str, int] | None = None,
    **filter_fields: object,
) -> Reading:
    stub = subscription_pb2_grpc.SubscriptionServiceStub(channel)
    request = subscription_pb2.SubscribeRequest(
        filter=subscription_pb2.SubscriptionFilter(**filter_fields),  # type: ignore[arg-type]
        cursor=positions(cursor or {}),
        proved=positions(proved or {}),
        purpose=purpose,
    )
    return Reading(stub.Subscribe(request), Subscriber(bundle, cursor, proved))
