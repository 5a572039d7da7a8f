"""Provider review (部门审核): the unit that provided a record decides the objection the platform passed to it.

Jiangsu's platform (中心审核, its operators) passes an objection filed at Shanghai to the unit
that provided the record. From then on the decision is that unit's: a caller Jiangsu binds to
the unit (``access.provider_units``, key-bound) sees and decides the case, with its own deadline
and its own step in the file; a caller bound to another unit is refused and audited, and the
platform may extend the deadline but not decide in the unit's place. The outcome goes out
signed by the origin, naming the unit, and every region applies it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest

from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.domain import uscc as uscc_codes
from credex.node.config import AccessConfig
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2, lookup_pb2

from .callers import GOVERNMENT, audit_rows, client_channel
from .cases_support import (
    OPERATOR,
    SOURCE_UNIT,
    Regions,
    arrived,
    black_list,
    everywhere,
    held,
    objection,
    penalty,
    publish,
    refused,
)
from .conftest import TestFederation, eventually
from .test_objections import last_event

PROVIDER = "provider-desk"  # bound at Jiangsu to SOURCE_UNIT, the unit that provided the test penalties
STRANGER = "stranger-desk"  # bound at Jiangsu to another unit
OTHER_UNIT = uscc_codes.make("11", "320500", "QTDW0001")
PURPOSE = "部门审核"


@pytest.fixture(name="regions")
async def regions_fixture(federation: TestFederation) -> AsyncIterator[Regions]:
    ca_dir = federation.layout.ca_dir
    keys = {}
    for name in (PROVIDER, STRANGER):
        CertificateAuthority.load(ca_dir).issue(name, []).write(ca_dir, name)
        keys[name] = spki_sha256((ca_dir / f"{name}.crt").read_bytes())
    callers = {GOVERNMENT: "government", OPERATOR: "operator"}
    jiangsu = await federation.start_node(
        "320000",
        access={
            "callers": {**callers, PROVIDER: "government", STRANGER: "government"},
            "caller_keys": keys,
            "provider_units": {PROVIDER: SOURCE_UNIT, STRANGER: OTHER_UNIT},
        },
    )
    shanghai = await federation.start_node("310000", access={"callers": callers})
    zhejiang = await federation.start_node("330000", access={"callers": callers})
    yield Regions(federation, jiangsu, shanghai, zhejiang)


def desk(regions: Regions, name: str) -> case_pb2_grpc.CaseServiceAsyncStub:
    return case_pb2_grpc.CaseServiceStub(client_channel(regions.federation, regions.jiangsu, name))


async def passed_to_provider(regions: Regions, n: int) -> tuple[str, str]:
    record = penalty(n)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, f"provider-{n}"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, disputed=True)
    passed = await regions.operator().AcceptCase(
        case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True, to_provider=True, opinion="转数据提供单位"),
        timeout=30,
    )
    assert (passed.state, passed.status_code, passed.status_label) == ("provider_review", 1, "待核实")
    assert passed.steps[-1].stage == "platform_review" and SOURCE_UNIT in passed.steps[-1].opinion
    return filed.case.case_id, record.record_id


async def test_the_providing_unit_decides_with_its_own_step_and_the_outcome_reaches_every_region(
    regions: Regions,
) -> None:
    case_id, record_id = await passed_to_provider(regions, 150)
    listed = await desk(regions, PROVIDER).ListCases(case_pb2.ListCasesRequest(purpose=PURPOSE), timeout=30)
    assert [c.case_id for c in listed.cases] == [case_id]
    decided = await desk(regions, PROVIDER).DecideCase(
        case_pb2.DecideCaseRequest(
            case_id=case_id,
            outcome="corrected",
            opinion="罚款金额录入有误",
            changes=[event_pb2.FieldChange(field="penalty.fine_yuan", old_value="20000", new_value="2000")],
            actor="李四",
        ),
        timeout=30,
    )
    assert (decided.state, decided.outcome, decided.status_label) == ("decided", "corrected", "已通过")
    last = decided.steps[-1]
    assert (last.stage, last.actor, last.state) == ("provider_review", f"李四 ({PROVIDER})", "decided")
    await everywhere(regions, record_id, disputed=False, status=lookup_pb2.ENTRY_STATUS_ACTIVE)
    assert (await held(regions.zhejiang, record_id))["record"].penalty.fine_yuan == "2000"
    resolve = await last_event(regions, record_id)
    assert (resolve.case.outcome, resolve.case.decided_by) == ("corrected", SOURCE_UNIT)

    async def told_at_shanghai() -> bool:
        case = await regions.filer().GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose="查询"), timeout=30)
        return case.state == "decided" and any(s.stage == "provider_review" for s in case.steps)

    await eventually(told_at_shanghai, timeout=60)


async def test_only_the_unit_it_was_passed_to_decides_and_the_platform_may_only_extend(regions: Regions) -> None:
    case_id, record_id = await passed_to_provider(regions, 151)
    before = await held(regions.jiangsu, record_id)
    decide = case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="删除")

    stranger = await refused(desk(regions, STRANGER).DecideCase(decide, timeout=30))
    assert stranger.code() == grpc.StatusCode.PERMISSION_DENIED and OTHER_UNIT in (stranger.details() or "")
    unseen = await refused(
        desk(regions, STRANGER).GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose=PURPOSE), timeout=30)
    )
    assert unseen.code() == grpc.StatusCode.NOT_FOUND
    listed = await desk(regions, STRANGER).ListCases(case_pb2.ListCasesRequest(purpose=PURPOSE), timeout=30)
    assert list(listed.cases) == []
    platform = await refused(regions.operator().DecideCase(decide, timeout=30))
    assert platform.code() == grpc.StatusCode.FAILED_PRECONDITION and "部门审核" in (platform.details() or "")
    office = await refused(regions.filer(regions.jiangsu).DecideCase(decide, timeout=30))
    assert office.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await held(regions.jiangsu, record_id) == before
    audited = [r["status"] for r in await audit_rows(regions.jiangsu, "DecideCase") if r["caller"] == STRANGER]
    assert audited == ["PERMISSION_DENIED"]

    extended = await regions.operator().ExtendCase(
        case_pb2.ExtendCaseRequest(case_id=case_id, reason="提供单位需调取原始档案", working_days=2), timeout=30
    )
    assert extended.state == "provider_review"
    await desk(regions, PROVIDER).DecideCase(decide, timeout=30)
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_DELETED, disputed=False)
    again = await refused(desk(regions, PROVIDER).DecideCase(decide, timeout=30))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in (again.details() or "")


async def test_the_unit_decides_nothing_the_platform_kept_and_a_record_without_a_unit_is_not_passed_on(
    regions: Regions,
) -> None:
    kept, unnamed = penalty(152), black_list(153)  # the list names its identifying unit by name only
    await publish(regions.jiangsu, [kept, unnamed], regions.shanghai)
    filed = [
        (await regions.filer().FileObjection(objection(r, f"provider-kept-{r.record_id}"), timeout=30)).case.case_id
        for r in (kept, unnamed)
    ]
    for case_id in filed:
        await arrived(regions, case_id)
    await regions.operator().AcceptCase(case_pb2.AcceptCaseRequest(case_id=filed[0], accept=True), timeout=30)
    not_passed = await refused(
        desk(regions, PROVIDER).DecideCase(
            case_pb2.DecideCaseRequest(case_id=filed[0], outcome="upheld", opinion="无误"), timeout=30
        )
    )
    assert not_passed.code() == grpc.StatusCode.PERMISSION_DENIED
    no_unit = await refused(
        regions.operator().AcceptCase(
            case_pb2.AcceptCaseRequest(case_id=filed[1], accept=True, to_provider=True), timeout=30
        )
    )
    assert no_unit.code() == grpc.StatusCode.FAILED_PRECONDITION and "names no providing" in (no_unit.details() or "")


async def test_the_providers_deadline_is_the_origin_regions(regions: Regions) -> None:
    """Jiangsu (default rules) gives the unit 10 working days from the day it is passed on."""
    regions.jiangsu.cases.clock = lambda: dt.date(2026, 11, 20)
    case_id, _ = await passed_to_provider(regions, 154)
    shown = await desk(regions, PROVIDER).GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose=PURPOSE), timeout=30)
    assert shown.due_on == "2026-12-04"


def test_a_provider_binding_needs_a_bound_key_and_a_valid_unit() -> None:
    with pytest.raises(ValueError, match="caller_keys does not bind"):
        AccessConfig(callers={PROVIDER: "government"}, provider_units={PROVIDER: SOURCE_UNIT})
    with pytest.raises(ValueError, match="provider_units"):
        AccessConfig(
            callers={PROVIDER: "government"}, caller_keys={PROVIDER: "0" * 64}, provider_units={PROVIDER: "123"}
        )
