"""What each caller role may see: sharing levels, publicity windows, revocations, older versions.

Regression test of the security review of issue 7's fix: GetInclusionProof by seq
checked the record's current row but returned the event at that seq, so a record
corrected from government-shared to public let a public caller read the
government-shared version.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.node.ledger import Change
from credex.node.runtime import Node
from credex.node.services.access import Caller, peer_address
from credex.node.store.events import entry_status
from credex.v1 import event_pb2, log_pb2, log_pb2_grpc, lookup_pb2, record_pb2

from .callers import PUBLIC as PORTAL
from .callers import client_channel, government_channel
from .conftest import TestFederation, eventually

ACTIVE, EXPIRED, REVOKED = (
    lookup_pb2.ENTRY_STATUS_ACTIVE,
    lookup_pb2.ENTRY_STATUS_EXPIRED,
    lookup_pb2.ENTRY_STATUS_REVOKED,
)
PUBLIC, GOVERNMENT, RESTRICTED = (
    record_pb2.SHARING_LEVEL_PUBLIC,
    record_pb2.SHARING_LEVEL_GOVERNMENT,
    record_pb2.SHARING_LEVEL_RESTRICTED,
)


def test_a_record_past_its_window_is_expired() -> None:
    today = dt.date(2026, 11, 21)
    assert entry_status(ACTIVE, dt.date(2026, 11, 20), today) == EXPIRED
    assert entry_status(ACTIVE, dt.date(2026, 11, 21), today) == ACTIVE
    assert entry_status(ACTIVE, None, today) == ACTIVE
    assert entry_status(REVOKED, dt.date(2020, 1, 1), today) == REVOKED


@pytest.mark.parametrize(
    ("role", "level", "status", "sees"),
    [
        ("public", PUBLIC, ACTIVE, True),
        ("public", PUBLIC, EXPIRED, False),
        ("public", PUBLIC, REVOKED, False),
        ("public", GOVERNMENT, ACTIVE, False),
        ("government", GOVERNMENT, ACTIVE, True),
        ("government", PUBLIC, EXPIRED, True),
        ("government", PUBLIC, REVOKED, False),
        ("government", RESTRICTED, ACTIVE, False),
        ("peer", RESTRICTED, ACTIVE, True),
        ("peer", PUBLIC, REVOKED, True),
    ],
)
def test_each_role_sees_only_what_it_may(role: str, level: int, status: int, sees: bool) -> None:
    assert Caller("someone", role).sees(level, status, record_pb2.KIND_PENALTY) is sees  # type: ignore[arg-type]


def test_only_peers_and_operators_may_fetch_logs() -> None:
    assert [Caller("x", r).may_exchange for r in ("public", "government", "peer", "operator")] == [
        False,
        False,
        True,
        True,
    ]


def test_callers_without_a_certificate_are_told_apart_by_address_not_by_connection() -> None:
    assert peer_address("ipv4:10.1.2.3:50312") == peer_address("ipv4:10.1.2.3:50313") == "10.1.2.3"
    assert peer_address("ipv6:[2001:db8:1:2:aaaa::1]:50312") == "2001:db8:1:2::/64"
    assert peer_address("ipv6:[2001:db8:1:2:bbbb::9]:1") == "2001:db8:1:2::/64"
    assert peer_address("ipv6:%5B::1%5D:50312") == "::/64"
    assert peer_address("unix:/run/credex.sock") == "unix:/run/credex.sock"


async def test_an_older_more_restricted_version_of_a_record_is_not_served_by_seq(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    shared = record("310000-XZCF-1", GOVERNMENT, "罚款 5000 元，涉及商业秘密")
    await append(node, shared, record("310000-XZCF-1", PUBLIC, "罚款 5000 元"))  # corrected to public: seq 1, 2
    opened = record("310000-XZCF-2", PUBLIC, "警告")
    await append(node, opened, record("310000-XZCF-2", GOVERNMENT, "警告，另案移送"))  # restricted later: seq 3, 4
    assert node.keeper is not None
    keeper = node.keeper
    await eventually(lambda: covered(keeper, 4))

    async with client_channel(federation, node, PORTAL) as portal, government_channel(federation, node) as office:
        public = [await proof_content(portal, seq=seq) for seq in (1, 2, 3, 4)]
        government = [await proof_content(office, seq=seq) for seq in (1, 2, 3, 4)]
        by_record = await proof_content(portal, record_id="310000-XZCF-1")
    assert public == [grpc.StatusCode.NOT_FOUND, "罚款 5000 元", grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND]
    assert government == ["罚款 5000 元，涉及商业秘密", "罚款 5000 元", "警告", "警告，另案移送"]
    assert by_record == "罚款 5000 元"


def record(record_id: str, level: int, content: str) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=record_id,
        origin="310000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc="913100006000373412", name="某某有限公司"
        ),
        sharing_level=level,  # type: ignore[arg-type]
        penalty=record_pb2.PenaltyDetails(content=content),
    )


async def append(node: Node, *versions: record_pb2.Record) -> None:
    """Each version through the node's own ledger, one after the other: the later ones are corrections."""
    assert node.pool is not None
    for version in versions:
        async with node.pool.acquire() as conn, conn.transaction():
            await node.ledger.append(conn, [Change.of(version)])


async def covered(keeper: Any, size: int) -> bool:
    held = await keeper.latest("310000")
    return held is not None and held.size >= size


async def proof_content(channel: grpc.aio.Channel, **leaf: Any) -> str | grpc.StatusCode:
    """The penalty content of the event a GetInclusionProof answers, or the status it was refused with."""
    request = log_pb2.GetInclusionProofRequest(origin="310000", purpose="复核", **leaf)
    try:
        proof = await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return str(event_pb2.Event.FromString(proof.envelope.payload).record.penalty.content)
