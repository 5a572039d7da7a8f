"""The applicant withdraws its case, or asks for 复核 of the outcome, on the node it filed on.

A Shanghai government office filed against Jiangsu's records on the Shanghai node. It asks
there; Shanghai checks the request against its copy of the case, signs it, and carries it to
Jiangsu through the durable outbox; Jiangsu takes it only from Shanghai and only for the
office that filed the case. Another office of Shanghai, or another member, is refused and the
refusal is audited; asking twice acts once; a closed case is refused with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from credex.node.cases import messages
from credex.node.runtime import Node
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2, lookup_pb2

from .callers import GOVERNMENT, audit_rows, client_channel
from .cases_support import (
    OPERATOR,
    Regions,
    arrived,
    case_at,
    everywhere,
    objection,
    penalty,
    publish,
    refused,
    repair,
)
from .conftest import TestFederation, eventually
from .test_case_delivery import deliver
from .test_cases_cli import credex, tls_options

ANOTHER = "another-office"  # a second government office known to every node
CALLERS = {"access": {"callers": {GOVERNMENT: "government", OPERATOR: "operator", ANOTHER: "government"}}}
PURPOSE = "异议处理"


@pytest.fixture(name="regions")
async def regions_fixture(federation: TestFederation) -> AsyncIterator[Regions]:
    jiangsu = await federation.start_node("320000", **CALLERS)
    shanghai = await federation.start_node("310000", **CALLERS)
    zhejiang = await federation.start_node("330000", **CALLERS)
    yield Regions(federation, jiangsu, shanghai, zhejiang)


def another(regions: Regions) -> case_pb2_grpc.CaseServiceAsyncStub:
    return case_pb2_grpc.CaseServiceStub(client_channel(regions.federation, regions.shanghai, ANOTHER))


async def requests_queued(node: Node, case_id: str) -> list[dict[str, Any]]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT purpose, delivered_at, refused FROM case_outbox WHERE case_id = $1"
            " AND purpose IN ('withdrawal', 'review') ORDER BY id",
            case_id,
        )
    return [dict(r) for r in rows]


async def state_at(node: Node, case_id: str, state: str) -> None:
    async def there() -> bool:
        row = await case_at(node, case_id)
        return row is not None and row["state"] == state

    await eventually(there, timeout=60)


async def filed_objection(regions: Regions, n: int) -> tuple[str, str]:
    record = penalty(n)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, f"applicant-{n}"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, disputed=True)
    return filed.case.case_id, record.record_id


async def test_the_filer_withdraws_on_the_filing_node_once_and_the_mark_comes_off_everywhere(regions: Regions) -> None:
    case_id, record_id = await filed_objection(regions, 140)
    withdraw = case_pb2.WithdrawCaseRequest(case_id=case_id, reason="已与提供单位沟通，撤回异议")

    stranger = await refused(another(regions).WithdrawCase(withdraw, timeout=30))
    assert stranger.code() == grpc.StatusCode.PERMISSION_DENIED and "only its filer" in (stranger.details() or "")
    assert await requests_queued(regions.shanghai, case_id) == []
    audited = [r for r in await audit_rows(regions.shanghai, "WithdrawCase") if r["caller"] == ANOTHER]
    assert [r["status"] for r in audited] == ["PERMISSION_DENIED"]

    asked = await regions.filer().WithdrawCase(withdraw, timeout=30)
    assert asked.delivery == "withdrawal asked; pending delivery to 320000" or asked.delivery.startswith(
        "withdrawal delivered"
    )
    again = await regions.filer().WithdrawCase(withdraw, timeout=30)
    assert again.case_id == case_id
    assert [r["purpose"] for r in await requests_queued(regions.shanghai, case_id)] == ["withdrawal"]

    await state_at(regions.jiangsu, case_id, "withdrawn")
    await everywhere(regions, record_id, disputed=False, status=lookup_pb2.ENTRY_STATUS_ACTIVE)
    await state_at(regions.shanghai, case_id, "withdrawn")

    async def shown() -> case_pb2.Case | None:
        case = await regions.filer().GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose=PURPOSE), timeout=30)
        return case if case.delivery.startswith("withdrawal delivered to 320000") else None

    case = await eventually(shown, timeout=60)
    withdrawal = [s for s in case.steps if s.stage == "withdrawal"]
    assert [(s.actor, s.opinion) for s in withdrawal] == [("government-office@310000", "已与提供单位沟通，撤回异议")]

    # Closed now: a review is refused with the reason, on the filing node, and nothing is queued.
    closed = await refused(
        regions.filer().ReviewCase(case_pb2.ReviewCaseRequest(case_id=case_id, reason="申请复核"), timeout=30)
    )
    assert closed.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in (closed.details() or "")
    assert [r["purpose"] for r in await requests_queued(regions.shanghai, case_id)] == ["withdrawal"]


async def test_the_filer_asks_for_review_while_the_origin_is_down_and_an_overturned_deletion_restores_the_record(
    regions: Regions,
) -> None:
    case_id, record_id = await filed_objection(regions, 141)
    early = await refused(
        regions.filer().ReviewCase(case_pb2.ReviewCaseRequest(case_id=case_id, reason="申请复核"), timeout=30)
    )
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION and "only a decided objection" in (early.details() or "")
    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="信息有误，删除"), timeout=30
    )
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_DELETED, disputed=False)
    await state_at(regions.shanghai, case_id, "decided")
    closed = await refused(
        regions.filer().WithdrawCase(case_pb2.WithdrawCaseRequest(case_id=case_id, reason="撤回"), timeout=30)
    )
    assert closed.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in (closed.details() or "")

    await regions.federation.stop_node("320000")
    asked = await regions.filer().ReviewCase(
        case_pb2.ReviewCaseRequest(case_id=case_id, reason="删除依据不足，申请复核"), timeout=30
    )
    assert asked.delivery == "review asked; pending delivery to 320000"
    regions.jiangsu = await regions.federation.start_node("320000", **CALLERS)
    await state_at(regions.jiangsu, case_id, "review")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_DELETED, disputed=True)

    async def delivered() -> bool:
        case = await regions.filer().GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose=PURPOSE), timeout=30)
        return case.delivery.startswith("review delivered")

    await eventually(delivered, timeout=60)
    # Asked again, with the CLI this time: one request, already carried out.
    government = tls_options(regions, regions.shanghai, GOVERNMENT)
    again = await credex("objection", "review", case_id, *government, "--reason", "删除依据不足")
    assert again.exit_code == 0 and "review delivered to 320000" in again.output, again.output
    assert len(await requests_queued(regions.shanghai, case_id)) == 1

    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="upheld", opinion="复核认定原信息无误"), timeout=30
    )
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_ACTIVE, disputed=False)
    await state_at(regions.shanghai, case_id, "done")


async def test_a_request_from_another_member_or_for_another_filer_is_refused_at_the_origin(regions: Regions) -> None:
    case_id, record_id = await filed_objection(regions, 142)

    def signed(node: Node, sender: str, **fields: str) -> event_pb2.Envelope:
        body = case_pb2.ApplicantRequest(
            **{"case_id": case_id, "action": "withdraw", "reason": "撤回", "filer": GOVERNMENT, **fields}
        )
        return event_pb2.Envelope.FromString(messages.seal_message(node.ledger.key, messages.message_at(sender, body)))

    for node, sender, fields, code in (
        (regions.zhejiang, "330000", {}, grpc.StatusCode.PERMISSION_DENIED),  # not filed there
        (regions.shanghai, "310000", {"filer": ANOTHER}, grpc.StatusCode.PERMISSION_DENIED),
        (regions.shanghai, "310000", {"action": "decide"}, grpc.StatusCode.INVALID_ARGUMENT),
        (regions.shanghai, "310000", {"reason": " "}, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await deliver(regions, regions.jiangsu, sender, signed(node, sender, **fields))
        assert raised.value.code() == code, (sender, fields, raised.value.details())
    row = await case_at(regions.jiangsu, case_id)
    assert row is not None and row["state"] == "submitted"
    await everywhere(regions, record_id, disputed=True)
    statuses = [r["status"] for r in await audit_rows(regions.jiangsu, "DeliverCase") if r["status"] != "OK"]
    assert statuses == ["PERMISSION_DENIED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "INVALID_ARGUMENT"]

    # The real request delivered twice (an acknowledgement lost) withdraws once.
    first = await deliver(regions, regions.jiangsu, "310000", signed(regions.shanghai, "310000"))
    second = await deliver(regions, regions.jiangsu, "310000", signed(regions.shanghai, "310000"))
    assert (first.state, first.created, second.state, second.created) == ("withdrawn", True, "withdrawn", False)
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        steps = await conn.fetchval(
            "SELECT count(*) FROM case_steps WHERE case_id = $1 AND stage = 'withdrawal'", case_id
        )
    assert steps == 1


async def test_a_repair_is_withdrawn_with_the_cli_and_a_case_filed_at_the_origin_by_its_own_filer(
    regions: Regions,
) -> None:
    record, local = penalty(143), penalty(144)
    await publish(regions.jiangsu, [record, local], regions.shanghai)
    filed = await regions.filer().FileRepair(repair(record, "applicant-repair"), timeout=30)
    await arrived(regions, filed.case.case_id)
    review = await refused(
        regions.filer().ReviewCase(case_pb2.ReviewCaseRequest(case_id=filed.case.case_id, reason="复核"), timeout=30)
    )
    assert review.code() == grpc.StatusCode.FAILED_PRECONDITION and "is a repair" in (review.details() or "")
    government = tls_options(regions, regions.shanghai, GOVERNMENT)
    done = await credex("repair", "withdraw", filed.case.case_id, *government, "--reason", "暂不申请修复")
    assert done.exit_code == 0 and "withdrawal asked" in done.output, done.output
    await state_at(regions.jiangsu, filed.case.case_id, "withdrawn")

    # Filed at Jiangsu itself by an office there: withdrawn at once, with that office as the actor.
    at_origin = await regions.filer(regions.jiangsu).FileObjection(objection(local, "applicant-local"), timeout=30)
    withdrawn = await regions.filer(regions.jiangsu).WithdrawCase(
        case_pb2.WithdrawCaseRequest(case_id=at_origin.case.case_id, reason="撤回"), timeout=30
    )
    assert withdrawn.state == "withdrawn" and withdrawn.steps[-1].actor == "government-office@320000"


async def test_a_withdrawal_waits_until_the_filing_has_reached_the_origin(regions: Regions) -> None:
    """Sent at once, the withdrawal could overtake the filing; the filer is told to ask again once delivered."""
    record = penalty(145)
    await publish(regions.jiangsu, [record], regions.shanghai)
    await regions.federation.stop_node("320000")
    filed = await regions.filer().FileObjection(objection(record, "applicant-early"), timeout=30)
    withdraw = case_pb2.WithdrawCaseRequest(case_id=filed.case.case_id, reason="撤回")
    early = await refused(regions.filer().WithdrawCase(withdraw, timeout=30))
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION and "has not reached 320000" in (early.details() or "")
    assert await requests_queued(regions.shanghai, filed.case.case_id) == []
    regions.jiangsu = await regions.federation.start_node("320000", **CALLERS)
    await arrived(regions, filed.case.case_id)

    async def delivered() -> bool:
        case = await regions.filer().GetCase(
            case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose=PURPOSE), timeout=30
        )
        return case.delivery.startswith("delivered")

    await eventually(delivered, timeout=60)
    await regions.filer().WithdrawCase(withdraw, timeout=30)
    await state_at(regions.jiangsu, filed.case.case_id, "withdrawn")
