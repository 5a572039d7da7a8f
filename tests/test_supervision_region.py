"""A supervisor sees the risk classes of its own region only, in every lookup path as in its streams.

A supervision caller's region (``access.regions``) is one fact, carried on the caller
(:attr:`Caller.region`) and asked by lookups, search, inclusion proofs and streams through one
rule (:func:`credex.domain.jurisdiction.in_region`): everything of an origin inside the region;
of its province's origin, the records about a subject registered in the region or decided by a
unit of it. What a supervisor sees for being a supervisor (a risk class, credit-use.md Check
rule 9) is its region's business; everything else it sees as the government office it is. A
supervision caller no operator has given a region is refused every call, saying so.

The node is Jiangsu's provincial platform (320000), with the classes, penalties and grade of
tests/test_risk_classes.py: Suzhou's supervisor (320500) and Nanjing's (320100) ask about a
Suzhou firm, a Nanjing firm, a Suzhou firm known by its class alone and a provincial group.
"""

from __future__ import annotations

from typing import Any

import grpc
import pydantic
import pytest

from credex.domain import uscc as uscc_codes
from credex.node.config import AccessConfig, Role, SubscriptionsConfig
from credex.node.services.access import Caller
from credex.v1 import (
    log_pb2,
    log_pb2_grpc,
    lookup_pb2,
    lookup_pb2_grpc,
    record_pb2,
    subscription_pb2,
    subscription_pb2_grpc,
)

from .callers import audit_rows, client_channel
from .conftest import eventually
from .test_risk_classes import (
    GRADE,
    HIDDEN_FIRM,
    JS,
    NJ_FIRM,
    PENALTY,
    PROVINCE_FIRM,
    RISK,
    SUPERVISION_JS,
    SUPERVISION_NJ,
    SUPERVISION_NOWHERE,
    SUPERVISION_SZ,
    SZ_FIRM,
    WHY,
    Jiangsu,
    jiangsu_fixture,  # noqa: F401 (the jiangsu fixture)
)

# What each supervisor's profile of each firm holds: risk classes of its own region only.
PROFILES = {
    SUPERVISION_SZ: {SZ_FIRM: [PENALTY, GRADE, RISK], NJ_FIRM: [PENALTY, PENALTY], HIDDEN_FIRM: [RISK]},
    SUPERVISION_NJ: {SZ_FIRM: [PENALTY, GRADE], NJ_FIRM: [PENALTY, PENALTY, RISK], HIDDEN_FIRM: []},
    SUPERVISION_JS: {SZ_FIRM: [PENALTY, GRADE, RISK], NJ_FIRM: [PENALTY, PENALTY, RISK], HIDDEN_FIRM: [RISK]},
}
FIRMS = [SZ_FIRM, NJ_FIRM, HIDDEN_FIRM]


def kinds(profile: lookup_pb2.Profile) -> list[int]:
    return sorted(e.record.kind for e in profile.entries)


@pytest.mark.parametrize("supervisor", sorted(PROFILES))
async def test_profiles_and_batches_show_a_supervisor_the_classes_of_its_region_only(
    jiangsu: Jiangsu, supervisor: str
) -> None:
    expected = PROFILES[supervisor]
    async with client_channel(jiangsu.federation, jiangsu.node, supervisor) as channel:
        lookup = lookup_pb2_grpc.LookupServiceStub(channel)
        for firm in FIRMS:
            profile = await lookup.GetProfile(lookup_pb2.GetProfileRequest(uscc=firm, purpose=WHY))
            assert kinds(profile) == sorted(expected[firm]), (supervisor, firm)
        batch = await lookup.BatchGetProfiles(lookup_pb2.BatchGetProfilesRequest(usccs=FIRMS, purpose=WHY))
    assert [kinds(p) for p in batch.profiles] == [sorted(expected[firm]) for firm in FIRMS]


async def test_another_citys_class_is_not_found_by_record_and_has_no_proof_as_a_missing_record_has_none(
    jiangsu: Jiangsu,
) -> None:
    nanjing_class, suzhou_class = jiangsu.classes[NJ_FIRM], jiangsu.classes[SZ_FIRM]
    nanjing_seq = await jiangsu.seq_of(nanjing_class)
    async with client_channel(jiangsu.federation, jiangsu.node, SUPERVISION_SZ) as channel:
        lookup, log = lookup_pb2_grpc.LookupServiceStub(channel), log_pb2_grpc.LogServiceStub(channel)
        own = await lookup.GetRecord(lookup_pb2.GetRecordRequest(record_id=suzhou_class, purpose=WHY))
        assert own.entry.record.risk_class.risk_class == "D" and own.proof.seq == await jiangsu.seq_of(suzhou_class)
        said = {}
        for record_id in (nanjing_class, f"{JS}-NO-SUCH-RECORD"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await lookup.GetRecord(lookup_pb2.GetRecordRequest(record_id=record_id, purpose=WHY))
            said[record_id] = (refused.value.code(), (refused.value.details() or "").replace(record_id, "ID"))
        assert said[nanjing_class] == said[f"{JS}-NO-SUCH-RECORD"]
        assert said[nanjing_class][0] == grpc.StatusCode.NOT_FOUND
        for asked in (
            log_pb2.GetInclusionProofRequest(origin=JS, record_id=nanjing_class, purpose=WHY),
            log_pb2.GetInclusionProofRequest(origin=JS, seq=nanjing_seq, purpose=WHY),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await log.GetInclusionProof(asked)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        mine = await log.GetInclusionProof(
            log_pb2.GetInclusionProofRequest(origin=JS, record_id=suzhou_class, purpose=WHY)
        )
        assert mine.seq == await jiangsu.seq_of(suzhou_class)
    async with client_channel(jiangsu.federation, jiangsu.node, SUPERVISION_NJ) as channel:
        theirs = await lookup_pb2_grpc.LookupServiceStub(channel).GetRecord(
            lookup_pb2.GetRecordRequest(record_id=nanjing_class, purpose=WHY)
        )
        assert theirs.entry.record.kind == RISK
        proof = await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
            log_pb2.GetInclusionProofRequest(origin=JS, seq=nanjing_seq, purpose=WHY)
        )
        assert proof.seq == nanjing_seq


async def search(jiangsu: Jiangsu, supervisor: str, query: str, page_size: int = 0) -> list[dict[str, int]]:
    """Every page of a search, each as subject -> records counted."""
    pages: list[dict[str, int]] = []
    token = ""
    async with client_channel(jiangsu.federation, jiangsu.node, supervisor) as channel:
        lookup = lookup_pb2_grpc.LookupServiceStub(channel)
        while True:
            answer = await lookup.SearchSubjects(
                lookup_pb2.SearchSubjectsRequest(query=query, purpose=WHY, page_size=page_size, page_token=token)
            )
            pages.append({m.subject_id: m.record_count for m in answer.subjects})
            token = answer.next_page_token
            if not token:
                return pages


async def test_search_counts_and_finds_only_the_classes_of_the_supervisors_region(jiangsu: Jiangsu) -> None:
    assert await search(jiangsu, SUPERVISION_SZ, "南京风控贸易有限公司") == [{NJ_FIRM: 2}]
    assert await search(jiangsu, SUPERVISION_NJ, "南京风控贸易有限公司") == [{NJ_FIRM: 3}]
    assert await search(jiangsu, SUPERVISION_SZ, "苏州隐秘风险有限公司") == [{HIDDEN_FIRM: 1}]
    # A subject known by another region's class alone is no hit at all.
    assert await search(jiangsu, SUPERVISION_NJ, "苏州隐秘风险有限公司") == [{}]
    assert await search(jiangsu, SUPERVISION_NJ, HIDDEN_FIRM) == [{}]


async def test_pages_of_a_supervisors_search_stay_full_where_another_regions_class_was_judged_away(
    jiangsu: Jiangsu,
) -> None:
    """A short page followed by more would say a hidden subject sat there: pages fill past it."""
    whole = await search(jiangsu, SUPERVISION_JS, "风控")
    assert set(whole[0]) == {SZ_FIRM, NJ_FIRM, PROVINCE_FIRM}
    for supervisor, found in ((SUPERVISION_SZ, {SZ_FIRM, NJ_FIRM}), (SUPERVISION_JS, set(whole[0]))):
        pages = await search(jiangsu, supervisor, "风控", page_size=1)
        assert [len(page) for page in pages] == [1] * len(found), supervisor
        assert {subject for page in pages for subject in page} == found, supervisor
    # The provincial group's class (classified by the province, registered with it) is no city's.
    assert PROVINCE_FIRM not in (await search(jiangsu, SUPERVISION_NJ, "风控"))[0]


async def test_a_supervisor_with_no_region_is_refused_every_lookup_and_stream_saying_why(jiangsu: Jiangsu) -> None:
    asked = 0
    async with client_channel(jiangsu.federation, jiangsu.node, SUPERVISION_NOWHERE) as channel:
        lookup = lookup_pb2_grpc.LookupServiceStub(channel)
        calls: list[Any] = [  # each call's own answer type: all refused alike
            lookup.GetProfile(lookup_pb2.GetProfileRequest(uscc=SZ_FIRM, purpose=WHY)),
            lookup.BatchGetProfiles(lookup_pb2.BatchGetProfilesRequest(usccs=[SZ_FIRM], purpose=WHY)),
            lookup.GetRecord(lookup_pb2.GetRecordRequest(record_id=jiangsu.classes[SZ_FIRM], purpose=WHY)),
            lookup.SearchSubjects(lookup_pb2.SearchSubjectsRequest(query="苏州风控精密有限公司", purpose=WHY)),
            log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
                log_pb2.GetInclusionProofRequest(origin=JS, record_id=jiangsu.classes[SZ_FIRM], purpose=WHY)
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            asked += 1
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "has no region in access.regions" in (refused.value.details() or "")
        stream = subscription_pb2_grpc.SubscriptionServiceStub(channel).Subscribe(
            subscription_pb2.SubscribeRequest(purpose=WHY)
        )
        with pytest.raises(grpc.aio.AioRpcError) as unstreamed:
            await stream.read()
        assert unstreamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "has no region in access.regions" in (unstreamed.value.details() or "")

    async def audited() -> bool:
        rows = [r for r in await audit_rows(jiangsu.node) if r["caller"] == SUPERVISION_NOWHERE]
        return len(rows) == asked + 1 and all(r["status"] == "PERMISSION_DENIED" and not r["answered"] for r in rows)

    await eventually(audited)


def test_a_region_is_a_supervisors_division_and_the_old_subscriptions_setting_says_where_it_went() -> None:
    supervisor: dict[str, Role] = {"sup": "supervision"}
    with pytest.raises(pydantic.ValidationError, match=r"six-digit GB/T 2260 code"):
        AccessConfig(callers=supervisor, regions={"sup": "Suzhou"})
    with pytest.raises(pydantic.ValidationError, match=r"does not make a supervision caller"):
        AccessConfig(callers={"sup": "government"}, regions={"sup": "320500"})
    with pytest.raises(pydantic.ValidationError, match=r"moved to access\.regions"):
        SubscriptionsConfig.model_validate({"regions": {"sup": "320500"}})
    assert AccessConfig(callers=supervisor, regions={"sup": "320500"}).regions == {"sup": "320500"}


@pytest.mark.parametrize(
    ("region", "origin", "classified_in", "sees"),
    [
        ("320500", "320000", "320505", True),  # its city's firm on the province's log
        ("320500", "320000", "320102", False),  # another city's firm
        ("320500", "320500", "320102", True),  # every record of its own city's log
        ("320500", "310000", "320505", False),  # no record of another province's log
        ("320000", "320000", "320102", True),  # the province sees every city
    ],
)
def test_a_supervisors_class_is_judged_by_the_one_rule_streams_use(
    region: str, origin: str, classified_in: str, sees: bool
) -> None:
    record = record_pb2.Record(
        kind=record_pb2.KIND_RISK_CLASS,
        subject=record_pb2.Subject(uscc=uscc_codes.make("91", classified_in, "RK000009")),
    )
    assert Caller("sup", "supervision", region).sees_record(origin, record) is sees
    assert Caller("gov", "government").sees_record(origin, record)  # kept from it by kind, not region
    penalty = record_pb2.Record(kind=record_pb2.KIND_PENALTY, subject=record.subject)
    assert Caller("sup", "supervision", region).sees_record(origin, penalty)  # as a government office sees it
