"""Market-supervision risk classes (企业信用风险分类): kept in their scheme, shown to supervision only.

credit-use.md, Check rule 9: the classes (A–D nationally, A–E in Shandong) are never shown in
public views or reports; they reach only supervision subscribers, with the default 双随机
sampling rates, so a supervision platform can set its rates. Evaluation grades are never shown
to public callers. One rule decides (Caller.sees); these tests ask every reader: lookups,
search, checks, reports, streams, the log's proofs, the tile server and the command line.

The classes come in through real ingest, with a fixture profile (tests/profiles/market_risk.toml),
since no seeded platform publishes them. A city's supervisor (Suzhou, 320500) is served the
records of its province's platform (Jiangsu, 320000) that concern its city, never Nanjing's.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from typer.testing import CliRunner

from credex.adapters.profile import MappingContext, Profile, ProfileError
from credex.crypto.tls import CertificateAuthority
from credex.domain import uscc as uscc_codes
from credex.domain.jurisdiction import concerned_divisions
from credex.domain.measures import Catalogue, CatalogueError
from credex.domain.publicity import publicity_today
from credex.domain.reasons import Reason
from credex.domain.risk import RiskSchemes, RiskSchemesError, SamplingRate
from credex.node.cli import app
from credex.node.config import SubscriptionsConfig
from credex.node.feeds.mapping import Reader
from credex.node.kafka import may_cross_bus
from credex.node.ledger.appender import Change
from credex.node.reports.catalogue import FieldsList, FieldsListError
from credex.node.runtime import Node
from credex.node.services.access import Caller
from credex.node.streams.entitlement import Delivery, Entitlement
from credex.v1 import (
    authorization_pb2,
    case_pb2,
    case_pb2_grpc,
    check_pb2,
    check_pb2_grpc,
    log_pb2,
    log_pb2_grpc,
    lookup_pb2,
    lookup_pb2_grpc,
    record_pb2,
    report_pb2,
    report_pb2_grpc,
    subscription_pb2,
    subscription_pb2_grpc,
)

from .callers import GOVERNMENT, PUBLIC, client_channel, peer_channel
from .conftest import TestFederation, eventually
from .streaming import Reading, reached, subscribe

HERE = Path(__file__).resolve().parent
MARKET_RISK = Profile.load(HERE / "profiles" / "market_risk.toml")
JS = "320000"
SUZHOU, NANJING = "320500", "320100"
SUPERVISION_SZ, SUPERVISION_NJ, SUPERVISION_JS = "suzhou-supervision", "nanjing-supervision", "jiangsu-supervision"
SUPERVISION_NOWHERE = "unplaced-supervision"  # a supervision caller no operator has given a region
FINANCING, OPERATOR = "xinyidai-platform", "operator-desk"
FINANCING_UNIT = uscc_codes.make("91", "320000", "XYD00001")
SZ_FIRM = uscc_codes.make("91", "320505", "RK000001")  # registered in 苏州 (虎丘区)
NJ_FIRM = uscc_codes.make("91", "320102", "RK000002")  # registered in 南京 (玄武区)
HIDDEN_FIRM = uscc_codes.make("91", "320506", "RK000003")  # known to the node by its risk class alone
PROVINCE_FIRM = uscc_codes.make("91", "320000", "RK000004")  # registered with the province
SZ_SAMR = uscc_codes.make("11", "320500", "00000011")  # 苏州市市场监督管理局
NJ_SAMR = uscc_codes.make("11", "320100", "00000012")  # 南京市市场监督管理局
JS_SAMR = uscc_codes.make("11", "320000", "00000013")  # 江苏省市场监督管理局
WHY = "双随机抽查前核查"
DECIDED = (publicity_today() - dt.timedelta(days=20)).isoformat()
SETTINGS = {
    "access": {
        "callers": {
            GOVERNMENT: "government",
            SUPERVISION_SZ: "supervision",
            SUPERVISION_NJ: "supervision",
            SUPERVISION_JS: "supervision",
            SUPERVISION_NOWHERE: "supervision",
            FINANCING: "financing",
            OPERATOR: "operator",
        },
        "regions": {SUPERVISION_SZ: SUZHOU, SUPERVISION_NJ: NANJING, SUPERVISION_JS: JS},
    },
    "subscriptions": {
        "grantees": {FINANCING: FINANCING_UNIT},
        "heartbeat_seconds": 0.5,
    },
}
HEADER = [
    "统一社会信用代码",
    "企业名称",
    "风险分类",
    "分类体系",
    "分类期间",
    "分类机关",
    "分类机关统一社会信用代码",
    "分类日期",
    "数据来源单位",
    "数据来源单位统一社会信用代码",
]


def classification(subject: str, name: str, published: str, unit: str, scheme: str = "", period: str = "") -> list[str]:
    authority = {SZ_SAMR: "苏州市市场监督管理局", NJ_SAMR: "南京市市场监督管理局", JS_SAMR: "江苏省市场监督管理局"}
    return [
        subject,
        name,
        published,
        scheme,
        period or publicity_today().strftime("%Y-%m"),
        authority[unit],
        unit,
        DECIDED,
        "江苏省市场监督管理局",
        JS_SAMR,
    ]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return path


def classified() -> list[list[str]]:
    """The classifications, of this month as the node counts it when the test runs."""
    return [
        classification(SZ_FIRM, "苏州风控精密有限公司", "D类", SZ_SAMR),
        classification(NJ_FIRM, "南京风控贸易有限公司", "信用风险较高", NJ_SAMR),
        classification(HIDDEN_FIRM, "苏州隐秘风险有限公司", "B", SZ_SAMR),
        classification(PROVINCE_FIRM, "江苏省属风控集团有限公司", "A", JS_SAMR),
    ]


BAD_ROWS = [
    classification(SZ_FIRM, "苏州风控精密有限公司", "E", SZ_SAMR, period="2020-01"),  # E is no class of A–D
    classification(SZ_FIRM, "苏州风控精密有限公司", "A", SZ_SAMR, scheme="mars-2030", period="2020-02"),
]


def record(number: str, kind: int, subject: str, name: str, unit: str, **details: object) -> record_pb2.Record:
    given = record_pb2.Record(
        record_id=f"{JS}-{number}",
        origin=JS,
        kind=kind,  # type: ignore[arg-type]
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=subject, name=name),
        decision_date=DECIDED,
        deciding_authority=record_pb2.Authority(name="某市场监督管理局", uscc=unit),
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=DECIDED, end="2099-12-31"),
        **details,  # type: ignore[arg-type]
    )
    return given


def penalty(number: str, subject: str, name: str, unit: str) -> record_pb2.Record:
    details = record_pb2.PenaltyDetails(content="罚款", severity=record_pb2.SEVERITY_GENERAL)
    return record(number, record_pb2.KIND_PENALTY, subject, name, unit, penalty=details)


def grade(number: str, subject: str, name: str) -> record_pb2.Record:
    details = record_pb2.EvaluationDetails(grade=record_pb2.GRADE_D, grade_as_published="较差", period="2025")
    return record(number, record_pb2.KIND_EVALUATION, subject, name, JS_SAMR, evaluation=details)


@dataclass
class Jiangsu:
    """Jiangsu's node holding classes from ingest, and penalties and a grade from the ledger."""

    node: Node
    federation: TestFederation
    classes: dict[str, str]  # subject -> its risk class record's id
    penalties: dict[str, str]  # subject -> its penalty's record id
    grade: str

    async def seq_of(self, record_id: str) -> int:
        assert self.node.pool is not None
        async with self.node.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT seq FROM records WHERE record_id = $1", record_id))

    async def head(self) -> int:
        assert self.node.pool is not None
        async with self.node.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT max(seq) FROM events WHERE origin = $1", JS))


@pytest.fixture(name="jiangsu")
async def jiangsu_fixture(federation: TestFederation, tmp_path: Path) -> AsyncIterator[Jiangsu]:
    node = await federation.start_node(JS, **SETTINGS)
    [report] = await node.ingest([write_csv(tmp_path / "risk.csv", classified())], MARKET_RISK)
    assert (report.rows_in, report.accepted, report.quarantined) == (4, 4, 0)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        held = await conn.fetch("SELECT subject_id, record_id FROM records WHERE kind = $1", record_pb2.KIND_RISK_CLASS)
    given = [
        penalty("CF-1", SZ_FIRM, "苏州风控精密有限公司", SZ_SAMR),
        penalty("CF-2", NJ_FIRM, "南京风控贸易有限公司", NJ_SAMR),
        penalty("CF-3", NJ_FIRM, "南京风控贸易有限公司", SZ_SAMR),  # a Nanjing firm penalised by Suzhou's bureau
        grade("PJ-1", SZ_FIRM, "苏州风控精密有限公司"),
    ]
    async with node.pool.acquire() as conn, conn.transaction():
        appended = await node.ledger.append(conn, [Change.of(r) for r in given])

    async def signed() -> bool:  # reports embed proofs: a checkpoint must cover every record
        held = await node.keeper.latest(JS)
        return held is not None and held.size >= max(appended.seqs)

    await eventually(signed)
    yield Jiangsu(
        node,
        federation,
        classes={r["subject_id"]: r["record_id"] for r in held},
        penalties={SZ_FIRM: f"{JS}-CF-1", NJ_FIRM: f"{JS}-CF-2"},
        grade=f"{JS}-PJ-1",
    )


# --- the record and its schemes ------------------------------------------------------------------


def test_the_default_sampling_rates_are_data_in_each_class_of_its_scheme() -> None:
    schemes = RiskSchemes.shipped()
    national = {c.symbol: c.sampling for c in schemes.schemes["samr-2022"].classes}
    assert national == {
        "A": SamplingRate(0, 5),
        "B": SamplingRate(5, 20),
        "C": SamplingRate(21, 60),
        "D": SamplingRate(61, 100),
    }
    assert schemes.schemes["shandong-2025"].symbols() == ["A", "B", "C", "D", "E"]
    assert schemes.classify("samr-2022", "信用风险较高").symbol == "C"
    assert schemes.classify("samr-2022", "ｄ类").symbol == "D"  # full width, as some exports write it


def test_mapping_keeps_a_class_in_its_scheme_and_a_class_outside_it_is_a_clear_row_error(tmp_path: Path) -> None:
    rows = [
        *classified()[:1],
        classification(SZ_FIRM, "苏州风控精密有限公司", "E类", SZ_SAMR, scheme="shandong-2025", period="2026-01"),
        *BAD_ROWS,
    ]
    reader = Reader(write_csv(tmp_path / "r.csv", rows), MARKET_RISK, MappingContext(origin=JS), 10)
    batch = reader.next_batch()
    assert batch is not None
    taken = [t.record.risk_class for t in batch.records]
    assert [(r.scheme, r.risk_class, r.class_as_published) for r in taken] == [
        ("samr-2022", "D", "D类"),  # no scheme named: the national one
        ("shandong-2025", "E", "E类"),
    ]
    assert taken[0].classifying_authority.uscc == SZ_SAMR and taken[0].period == publicity_today().strftime("%Y-%m")
    problems = [problem for _, rejection in batch.rejections for problem in rejection.problems]
    assert [p.reason for p in problems] == [Reason.RISK_CLASS_OUTSIDE_SCHEME, Reason.RISK_SCHEME_UNKNOWN]
    assert "'E' is not a class of scheme samr-2022 (A/B/C/D)" in problems[0].message
    assert "'mars-2030' is not known" in problems[1].message


def test_a_profile_that_would_publish_risk_classes_is_refused(tmp_path: Path) -> None:
    source = (HERE / "profiles" / "market_risk.toml").read_text(encoding="utf-8")
    public = tmp_path / "public_risk.toml"
    public.write_text(source.replace("SHARING_LEVEL_GOVERNMENT", "SHARING_LEVEL_PUBLIC"), encoding="utf-8")
    with pytest.raises(ProfileError) as refused:
        Profile.load(public)
    assert "KIND_RISK_CLASS records are never published" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no [[scheme]]"),
        ('[[scheme]]\nid = "x"\nname = "x"\n', "basis are required"),
        ('[[scheme]]\nid = "x"\nname = "x"\nbasis = "b"\n', "no [[scheme.class]]"),
        (
            '[[scheme]]\nid = "x"\nname = "x"\nbasis = "b"\n[[scheme.class]]\nsymbol = "A"\nmeaning = "m"\n'
            "sampling_percent = [30, 10]\n",
            "low ≤ high",
        ),
        (
            '[[scheme]]\nid = "x"\nname = "x"\nbasis = "b"\n[[scheme.class]]\nsymbol = "A"\nmeaning = "m"\n'
            'sampling_percent = [0, 5]\npublished = ["低"]\n[[scheme.class]]\nsymbol = "B"\nmeaning = "n"\n'
            'sampling_percent = [5, 9]\npublished = ["低"]\n',
            "already stands for class A",
        ),
        ("[[scheme]\n", "risk.toml"),
    ],
)
def test_a_list_of_schemes_that_cannot_be_used_is_refused_saying_why(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "risk.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RiskSchemesError) as refused:
        RiskSchemes.load(path)
    assert says in str(refused.value)


def test_no_measure_may_be_triggered_by_a_risk_class(tmp_path: Path) -> None:
    """不惩戒: a class is no ground for punishment, so the measures catalogue cannot name one as a trigger."""
    folder = tmp_path / "catalogue"
    source = HERE.parent / "domain" / "catalogue"
    for path in source.rglob("*.toml"):
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    triggers = folder / "triggers.toml"
    triggers.write_text(
        triggers.read_text(encoding="utf-8")
        + '\n[[trigger_set]]\ncode = "高风险"\nname = "D类"\n\n[[trigger_set.trigger]]\nkind = "risk_class"\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogueError) as refused:
        Catalogue.load(folder)
    assert "unknown record kind 'risk_class'" in str(refused.value)


def test_a_report_fields_list_naming_risk_classes_is_refused() -> None:
    text = (
        '[[category]]\ncode = "c"\nname = "c"\nkinds = ["risk_class"]\n'
        '[[section]]\ncode = "s"\nname = "s"\nkinds = ["penalty"]\n'
        '[[field]]\ncode = "other"\nname = "其他"\n'
    )
    with pytest.raises(FieldsListError) as refused:
        FieldsList.parse(text, "fields.toml")
    assert "'risk_class' records never appear in a report" in str(refused.value)


# --- one rule -------------------------------------------------------------------------------------

RISK, GRADE, PENALTY = record_pb2.KIND_RISK_CLASS, record_pb2.KIND_EVALUATION, record_pb2.KIND_PENALTY


@pytest.mark.parametrize(
    ("role", "kinds_seen"),
    [
        ("public", {PENALTY}),
        ("financing", {PENALTY}),
        ("government", {PENALTY, GRADE}),
        ("supervision", {PENALTY, GRADE, RISK}),
        ("peer", {PENALTY, GRADE, RISK}),
        ("operator", {PENALTY, GRADE, RISK}),
    ],
)
def test_risk_classes_reach_supervision_only_and_grades_never_the_public(role: str, kinds_seen: set[int]) -> None:
    caller = Caller("someone", role)  # type: ignore[arg-type]
    level, active = record_pb2.SHARING_LEVEL_PUBLIC, lookup_pb2.ENTRY_STATUS_ACTIVE
    assert {k for k in (RISK, GRADE, PENALTY) if caller.sees(level, active, k)} == kinds_seen
    assert {k for k in (RISK, GRADE, PENALTY) if k not in caller.hidden_kinds()} == kinds_seen


# --- every reader ---------------------------------------------------------------------------------


async def profile_kinds(channel: grpc.aio.Channel, subject: str) -> list[int]:
    profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
        lookup_pb2.GetProfileRequest(uscc=subject, purpose=WHY)
    )
    return sorted(e.record.kind for e in profile.entries)


async def test_lookups_show_a_risk_class_only_to_supervision_and_a_grade_never_to_the_public(
    jiangsu: Jiangsu,
) -> None:
    node, federation = jiangsu.node, jiangsu.federation
    everything = sorted([PENALTY, GRADE, RISK])
    expected = {
        PUBLIC: [PENALTY],
        GOVERNMENT: [PENALTY, GRADE],
        FINANCING: [PENALTY],
        SUPERVISION_SZ: everything,
        OPERATOR: everything,
    }
    for name, kinds in expected.items():
        async with client_channel(federation, node, name) as channel:
            lookup = lookup_pb2_grpc.LookupServiceStub(channel)
            assert await profile_kinds(channel, SZ_FIRM) == kinds, name
            batch = await lookup.BatchGetProfiles(
                lookup_pb2.BatchGetProfilesRequest(usccs=[SZ_FIRM, HIDDEN_FIRM], purpose=WHY)
            )
            assert [sorted(e.record.kind for e in p.entries) for p in batch.profiles] == [
                kinds,
                [RISK] if RISK in kinds else [],
            ], name
            asked = lookup_pb2.GetRecordRequest(record_id=jiangsu.classes[SZ_FIRM], purpose=WHY)
            if RISK in kinds:
                assert (await lookup.GetRecord(asked)).entry.record.risk_class.risk_class == "D"
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await lookup.GetRecord(asked)
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND, name
            proof = log_pb2.GetInclusionProofRequest(origin=JS, record_id=jiangsu.classes[SZ_FIRM], purpose=WHY)
            if RISK not in kinds:
                with pytest.raises(grpc.aio.AioRpcError) as hidden:
                    await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(proof)
                assert hidden.value.code() == grpc.StatusCode.NOT_FOUND, name


async def test_a_risk_class_leaks_through_no_search_hit_and_no_count(jiangsu: Jiangsu) -> None:
    node, federation = jiangsu.node, jiangsu.federation

    async def found(name: str, query: str) -> dict[str, int]:
        async with client_channel(federation, node, name) as channel:
            answer = await lookup_pb2_grpc.LookupServiceStub(channel).SearchSubjects(
                lookup_pb2.SearchSubjectsRequest(query=query, purpose=WHY)
            )
        return {m.subject_id: m.record_count for m in answer.subjects}

    # 苏州风控精密: a penalty, a grade and a class; 苏州隐秘风险: a class alone.
    assert await found(PUBLIC, "苏州风控精密有限公司") == {SZ_FIRM: 1}
    assert await found(GOVERNMENT, "苏州风控精密有限公司") == {SZ_FIRM: 2}
    assert await found(SUPERVISION_SZ, "苏州风控精密有限公司") == {SZ_FIRM: 3}
    for name in (PUBLIC, GOVERNMENT, FINANCING):
        assert await found(name, "苏州隐秘风险有限公司") == {}, name
        assert await found(name, HIDDEN_FIRM) == {}, name
    assert await found(SUPERVISION_SZ, "苏州隐秘风险有限公司") == {HIDDEN_FIRM: 1}


async def test_a_check_answers_without_the_class_and_a_report_never_holds_one(jiangsu: Jiangsu) -> None:
    node, federation = jiangsu.node, jiangsu.federation
    unit = uscc_codes.make("11", "320500", "CG000001")
    async with client_channel(federation, node, GOVERNMENT) as channel:
        answer = await check_pb2_grpc.CheckServiceStub(channel).Check(
            check_pb2.CheckRequest(
                usccs=[SZ_FIRM, HIDDEN_FIRM], scenario="政府采购", requesting_unit_uscc=unit, purpose="采购核查"
            )
        )
    hit_ids = {hit.record_id for subject in answer.subjects for hit in subject.hits}
    assert jiangsu.penalties[SZ_FIRM] in hit_ids
    assert not hit_ids & set(jiangsu.classes.values())
    for name in (OPERATOR, SUPERVISION_SZ):
        async with client_channel(federation, node, name) as channel:
            issued = await report_pb2_grpc.ReportServiceStub(channel).IssueReport(
                report_pb2.IssueReportRequest(subject=SZ_FIRM, kind=report_pb2.REPORT_KIND_FULL, purpose="报告")
            )
        text = _report_text(issued.signed_report)
        assert jiangsu.penalties[SZ_FIRM] in text, name
        assert jiangsu.classes[SZ_FIRM] not in text and jiangsu.grade not in text, name
    # Verified and viewed by code by anyone the subject hands it to: still no class in what comes back.
    code = report_pb2.VerifyReportRequest(
        report_number=issued.report_number, verification_code=issued.verification_code
    )
    async with client_channel(federation, node, PUBLIC) as channel:
        reports = report_pb2_grpc.ReportServiceStub(channel)
        verdict = await reports.VerifyReport(code)
        viewed = await reports.ViewReport(
            report_pb2.ViewReportRequest(
                report_number=issued.report_number, verification_code=issued.verification_code, purpose=WHY
            )
        )
    assert verdict.genuine and verdict.subject_id == SZ_FIRM
    for said in (verdict.SerializeToString(), viewed.SerializeToString()):
        assert jiangsu.classes[SZ_FIRM].encode() not in said and jiangsu.grade.encode() not in said


def _report_text(signed: bytes) -> str:
    envelope = json.loads(signed)
    return base64.b64decode(envelope["payload"]).decode()


async def read_all(reading: Reading, head: int) -> Reading:
    await reading.until(reached(JS, head))
    reading.call.cancel()
    return reading


async def test_streams_send_classes_to_supervision_only_each_with_its_default_sampling_rate(
    jiangsu: Jiangsu,
) -> None:
    node, federation = jiangsu.node, jiangsu.federation
    bundle = federation.bundle_now()
    head = await jiangsu.head()
    async with client_channel(federation, node, OPERATOR) as operator:
        await subscription_pb2_grpc.SubscriptionServiceStub(operator).GrantAuthorization(
            subscription_pb2.GrantAuthorizationRequest(
                authorization=_authorization(SZ_FIRM),
            )
        )
    readings = {}
    for name in (PUBLIC, GOVERNMENT, FINANCING, SUPERVISION_JS):
        async with client_channel(federation, node, name) as channel:
            readings[name] = await read_all(subscribe(channel, bundle), head)
    sent = {name: {t.event.record.record_id: t for t in r.taken if t.event is not None} for name, r in readings.items()}
    for name in (PUBLIC, GOVERNMENT, FINANCING):
        assert not set(sent[name]) & set(jiangsu.classes.values()), name
    assert jiangsu.penalties[SZ_FIRM] in sent[FINANCING]
    assert jiangsu.grade in sent[GOVERNMENT] and jiangsu.grade not in sent[PUBLIC]
    assert set(jiangsu.classes.values()) <= set(sent[SUPERVISION_JS])
    rates = {t.seq: t.sampling for t in readings[SUPERVISION_JS].taken if t.sampling is not None}
    sz_class = rates[await jiangsu.seq_of(jiangsu.classes[SZ_FIRM])]
    assert (sz_class.scheme, sz_class.risk_class, sz_class.low_percent, sz_class.high_percent) == (
        "samr-2022",
        "D",
        61,
        100,
    )
    nj_class = rates[await jiangsu.seq_of(jiangsu.classes[NJ_FIRM])]
    assert (nj_class.risk_class, nj_class.low_percent, nj_class.high_percent) == ("C", 21, 60)
    assert len(rates) == len(jiangsu.classes)  # a rate beside every class, beside nothing else
    line = next(t for t in readings[SUPERVISION_JS].taken if t.sampling is not None).line()
    assert "双随机" in line and "(samr-2022)" in line  # what `credex subscribe` prints


def _authorization(subject: str) -> authorization_pb2.Authorization:
    return authorization_pb2.Authorization(
        authorization_id="RISK-A1",
        subject=subject,
        grantee=FINANCING_UNIT,
        scope="stream",
        valid_from=publicity_today().isoformat(),
        valid_until=(publicity_today() + dt.timedelta(days=30)).isoformat(),
        document_sha256=b"\x01" * 32,
    )


async def test_a_city_supervisor_gets_its_citys_part_of_the_provincial_log_and_never_another_citys(
    jiangsu: Jiangsu,
) -> None:
    node, federation = jiangsu.node, jiangsu.federation
    bundle = federation.bundle_now()
    head = await jiangsu.head()
    sent = {}
    for name in (SUPERVISION_SZ, SUPERVISION_NJ):
        async with client_channel(federation, node, name) as channel:
            reading = await read_all(subscribe(channel, bundle), head)
        sent[name] = {t.event.record.record_id for t in reading.taken if t.event is not None}
    cf3 = f"{JS}-CF-3"  # a Nanjing firm penalised by Suzhou's bureau: both cities' business
    assert sent[SUPERVISION_SZ] == {
        jiangsu.classes[SZ_FIRM],
        jiangsu.classes[HIDDEN_FIRM],
        jiangsu.penalties[SZ_FIRM],
        jiangsu.grade,
        cf3,
    }
    assert sent[SUPERVISION_NJ] == {jiangsu.classes[NJ_FIRM], jiangsu.penalties[NJ_FIRM], cf3}
    # The province's own firm, classified by the province, is neither city's.
    assert jiangsu.classes[PROVINCE_FIRM] not in sent[SUPERVISION_SZ] | sent[SUPERVISION_NJ]


@pytest.mark.parametrize(
    ("region", "subject", "unit", "delivery"),
    [
        (SUZHOU, SZ_FIRM, JS_SAMR, Delivery.FULL),  # a Suzhou firm, whoever decided
        (SUZHOU, NJ_FIRM, SZ_SAMR, Delivery.FULL),  # decided by a Suzhou unit
        (SUZHOU, NJ_FIRM, NJ_SAMR, Delivery.NONE),  # Nanjing's alone
        (SUZHOU, PROVINCE_FIRM, JS_SAMR, Delivery.NONE),  # the province's: no city's
        (NANJING, SZ_FIRM, SZ_SAMR, Delivery.NONE),
        ("320505", SZ_FIRM, JS_SAMR, Delivery.FULL),  # a district's supervisor, its district's firm
        ("320506", SZ_FIRM, SZ_SAMR, Delivery.NONE),  # and not the next district's
        (JS, NJ_FIRM, NJ_SAMR, Delivery.FULL),  # the province's supervisor: the whole log
        ("310000", SZ_FIRM, SZ_SAMR, Delivery.NONE),  # another province: nothing
    ],
)
def test_which_records_of_a_provincial_origin_concern_a_supervisors_division(
    region: str, subject: str, unit: str, delivery: Delivery
) -> None:
    entitlement = Entitlement.of(Caller("sup", "supervision", region), SubscriptionsConfig())
    given = penalty("CF-9", subject, "某公司", unit)
    assert entitlement.covers_origin(JS) is (region != "310000")
    assert entitlement.delivery(JS, given, lookup_pb2.ENTRY_STATUS_ACTIVE, publicity_today(), False) is delivery


def test_a_person_or_a_code_under_no_division_concerns_no_division() -> None:
    person = record_pb2.Record(
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_NATURAL_PERSON, person_pseudonym="P" * 43),
        deciding_authority=record_pb2.Authority(uscc="not-a-code"),
    )
    assert concerned_divisions(person) == set()


async def test_entry_bundles_of_the_tile_server_go_to_peers_only_not_to_supervision(jiangsu: Jiangsu) -> None:
    """The tiles carry every record of the log, risk classes too: a supervision caller, which may see
    classes over gRPC, still gets no entry bundle (only peers and operators do), nor does a government one."""
    node, federation = jiangsu.node, jiangsu.federation
    assert node.tiles is not None
    for name, status in ((SUPERVISION_SZ, 403), (GOVERNMENT, 403), (PUBLIC, 403), (JS, 200)):
        async with _tile_client(federation, node, name) as http:
            answer = await http.get(f"/{JS}/tile/entries/000.p/8")
        assert answer.status_code == status, name


def _tile_client(federation: TestFederation, node: Node, name: str) -> httpx.AsyncClient:
    from .test_tile_http import client

    return client(federation, node, name)


async def test_the_command_line_prints_a_class_for_a_supervisor_and_not_for_a_government_office(
    jiangsu: Jiangsu,
) -> None:
    node, federation = jiangsu.node, jiangsu.federation
    printed = {}
    for name in (GOVERNMENT, SUPERVISION_SZ):
        ca_dir = federation.layout.ca_dir
        if not (ca_dir / f"{name}.crt").exists():
            CertificateAuthority.load(ca_dir).issue(name, []).write(ca_dir, name)
        ca, cert, key = federation.layout.client_tls(name)
        options = ["--node", f"127.0.0.1:{node.port}", "--config", str(federation.layout.config_path(JS))]
        options += ["--ca", str(ca), "--cert", str(cert), "--key", str(key)]
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["lookup", SZ_FIRM, "--json", "--purpose", WHY, *options]
        )
        assert result.exit_code == 0, result.output
        printed[name] = result.output
    assert jiangsu.classes[SZ_FIRM] not in printed[GOVERNMENT]
    assert jiangsu.penalties[SZ_FIRM] in printed[GOVERNMENT]
    assert jiangsu.classes[SZ_FIRM] in printed[SUPERVISION_SZ] and '"risk_class": "D"' in printed[SUPERVISION_SZ]


async def test_peers_still_receive_risk_classes_over_the_exchange(jiangsu: Jiangsu) -> None:
    """Every member holds every log whole (what it serves is decided per caller), classes included."""
    node, federation = jiangsu.node, jiangsu.federation
    async with peer_channel(federation, node, "310000") as channel:
        assert RISK in await profile_kinds(channel, SZ_FIRM)


@pytest.mark.parametrize(("kind", "crosses"), [(PENALTY, True), (GRADE, False), (RISK, False)])
def test_a_kind_kept_from_public_callers_never_crosses_the_bus_in_clear(kind: int, crosses: bool) -> None:
    """Whoever reads a topic reads as the public: a public-level grade or class goes as a withheld notice."""
    given = record("X-1", kind, SZ_FIRM, "苏州风控精密有限公司", SZ_SAMR)
    assert may_cross_bus(given) is crosses


def test_credex_risk_schemes_shows_each_class_rate_and_names_a_bad_file(tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["risk-schemes"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "samr-2022" in shown.output and "61–100 %" in shown.output and "shandong-2025" in shown.output
    bad = tmp_path / "risk.toml"
    bad.write_text('[[scheme]]\nid = "x"\nname = "x"\nbasis = "b"\n', encoding="utf-8")
    refused = CliRunner().invoke(app, ["risk-schemes", "--file", str(bad)])
    assert refused.exit_code == 1
    assert "no [[scheme.class]] listed" in refused.output


async def test_filing_a_case_cannot_probe_for_a_risk_class_a_government_caller_may_not_see(jiangsu: Jiangsu) -> None:
    """A government office filing an objection to a class gets the answer a missing record gets."""
    node, federation = jiangsu.node, jiangsu.federation
    answers: dict[str, tuple[grpc.StatusCode, str]] = {}
    for record_id in (jiangsu.classes[SZ_FIRM], f"{JS}-NO-SUCH-RECORD"):
        async with client_channel(federation, node, GOVERNMENT) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await case_pb2_grpc.CaseServiceStub(channel).FileObjection(
                    case_pb2.FileObjectionRequest(
                        request_id=f"probe-{len(answers)}",
                        record_id=record_id,
                        on_behalf_of=SZ_FIRM,
                        grounds="error",
                        statement="风险分类有误",
                        purpose=WHY,
                    )
                )
        answers[record_id] = (refused.value.code(), (refused.value.details() or "").replace(record_id, "ID"))
    assert answers[jiangsu.classes[SZ_FIRM]] == answers[f"{JS}-NO-SUCH-RECORD"]
    assert answers[jiangsu.classes[SZ_FIRM]][0] == grpc.StatusCode.NOT_FOUND
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cases") == 0
