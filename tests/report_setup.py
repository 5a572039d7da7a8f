"""A federation holding one enterprise's and one person's records, for the report tests.

Jiangsu (320000) publishes; Shanghai (310000) takes Jiangsu's log in over the bus and
issues the reports. The enterprise has, from Jiangsu: a serious penalty by market
supervision, a simple-procedure warning by the tax office, a serious-dishonesty list
entry, a licence, an evaluation grade (never shown), a disputed penalty, a penalty
repaired, one revoked, one decided before the five-year period, and one shared with
government only. The person has a penalty and an authorization for the financing
unit ``AUTHORIZED`` to take reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import grpc

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import event_pb2, lookup_pb2, record_pb2, report_pb2, report_pb2_grpc

from .conftest import TestFederation, eventually

RECENT = (publicity_today() - dt.timedelta(days=200)).isoformat()
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
PERSON_TYPE = record_pb2.SUBJECT_TYPE_NATURAL_PERSON
COMPANY = uscc_codes.make("91", "320500", "RP000001")
COMPANY_NAME = "苏州报告测试贸易有限公司"
CLEAN = uscc_codes.make("91", "320500", "RP000002")
PERSON = "psn:" + "a" * 32
AUTHORIZED = uscc_codes.make("91", "310000", "XYD00001")  # a financing platform the person authorized
AUTHORIZATION_ID = "SQ-2026-001"  # the platform's id for the person's authorization document
AUTHORIZATION_DIGEST = hashlib.sha256("张某 授权书 SQ-2026-001".encode()).digest()
PORTAL = "enterprise-portal"  # a public caller: the enterprise asking for its own report


def record(number: str, kind: record_pb2.Kind.ValueType, **fields: object) -> record_pb2.Record:
    subject = fields.pop("subject", None) or record_pb2.Subject(type=ENTITY, uscc=COMPANY, name=COMPANY_NAME)
    base = record_pb2.Record(
        record_id=f"320000-T-{number}",
        origin="320000",
        kind=kind,
        subject=subject,  # type: ignore[arg-type]
        decision_date=str(fields.pop("decision_date", RECENT)),
        sharing_level=fields.pop("sharing_level", record_pb2.SHARING_LEVEL_PUBLIC),  # type: ignore[arg-type]
        publicity=record_pb2.PublicityWindow(start=RECENT, end="2099-12-31"),
        deciding_authority=record_pb2.Authority(name=str(fields.pop("authority", "苏州市市场监督管理局"))),
        document_number=f"苏文{number}号",
    )
    for name, value in fields.items():
        getattr(base, name).CopyFrom(value)
    return base


def penalty(number: str, **fields: object) -> record_pb2.Record:
    details = fields.pop(
        "penalty",
        record_pb2.PenaltyDetails(
            content="罚款 50000 元",
            types=[record_pb2.PENALTY_TYPE_FINE],
            fine_yuan="50000",
            severity=record_pb2.SEVERITY_SERIOUS,
        ),
    )
    return record(number, record_pb2.KIND_PENALTY, penalty=details, **fields)


SERIOUS = penalty("1")
WARNING = penalty(
    "2",
    authority="国家税务总局苏州市税务局",
    penalty=record_pb2.PenaltyDetails(content="警告", types=[record_pb2.PENALTY_TYPE_WARNING]),
)
LISTED = record(
    "3",
    record_pb2.KIND_BLACK_LIST,
    authority="江苏省发展和改革委员会",
    black_list=record_pb2.BlackListDetails(list_name="严重失信主体名单", rule="拒不履行法定义务"),
)
LICENCE = record(
    "4", record_pb2.KIND_LICENCE, licence=record_pb2.LicenceDetails(document_name="食品经营许可证", content="食品销售")
)
GRADE = record(
    "5",
    record_pb2.KIND_EVALUATION,
    evaluation=record_pb2.EvaluationDetails(grade=record_pb2.GRADE_D, grade_as_published="较差"),
)
DISPUTED = penalty("6", authority="苏州市生态环境局")
REPAIRED = penalty("7", authority="苏州市交通运输局")
REVOKED = penalty("8", authority="苏州市卫生健康委员会")
OLD = penalty("9", decision_date=(publicity_today() - dt.timedelta(days=6 * 366)).isoformat())
GOVERNMENT_ONLY = penalty("10", sharing_level=record_pb2.SHARING_LEVEL_GOVERNMENT)
PERSON_PENALTY = penalty(
    "11",
    subject=record_pb2.Subject(type=PERSON_TYPE, person_pseudonym=PERSON, name="张某"),
    sharing_level=record_pb2.SHARING_LEVEL_GOVERNMENT,
)
PERSON_AUTHORIZATION = record(
    "12",
    record_pb2.KIND_AUTHORIZATION,
    subject=record_pb2.Subject(type=PERSON_TYPE, person_pseudonym=PERSON, name="张某"),
    sharing_level=record_pb2.SHARING_LEVEL_RESTRICTED,
    authorization=record_pb2.AuthorizationDetails(
        grantee=record_pb2.Authority(name="某信易贷平台", uscc=AUTHORIZED),
        scope="report,stream",
        valid_from=RECENT,
        valid_to="2099-12-31",
        authorization_id=AUTHORIZATION_ID,
        document_sha256=AUTHORIZATION_DIGEST,
    ),
)
ALL = [
    SERIOUS,
    WARNING,
    LISTED,
    LICENCE,
    GRADE,
    DISPUTED,
    REPAIRED,
    REVOKED,
    OLD,
    GOVERNMENT_ONLY,
    PERSON_PENALTY,
    PERSON_AUTHORIZATION,
]


@dataclass
class Pair:
    jiangsu: Node
    shanghai: Node


async def start_pair(federation: TestFederation, **shanghai_settings: object) -> Pair:
    jiangsu = await federation.start_node("320000")
    shanghai = await federation.start_node("310000", **shanghai_settings)
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(r) for r in ALL])
        await jiangsu.ledger.amend(
            conn, DISPUTED.record_id, event_pb2.EVENT_TYPE_DISPUTE, "信息主体提出异议", disputed=True
        )
        await jiangsu.ledger.amend(
            conn,
            REPAIRED.record_id,
            event_pb2.EVENT_TYPE_REPAIR,
            "信用修复",
            standing=lookup_pb2.ENTRY_STATUS_REPAIRED,
        )
        await jiangsu.ledger.revoke(conn, REVOKED.record_id, "撤销行政处罚决定")
    await taken_in(shanghai, jiangsu)
    return Pair(jiangsu, shanghai)


async def taken_in(node: Node, origin: Node) -> None:
    """Wait until ``node`` holds ``origin``'s whole log, under a checkpoint ``origin`` signed."""
    assert origin.pool is not None
    async with origin.pool.acquire() as conn:
        head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1", origin.origin)

    async def held() -> bool:
        assert node.pool is not None
        async with node.pool.acquire() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE origin = $1 AND size >= $2"
                    " AND state IN ('own', 'verified'))",
                    origin.origin,
                    head,
                )
            )

    await eventually(held)


def issue_request(
    subject: str = COMPANY, kind: int = report_pb2.REPORT_KIND_SPECIAL, **fields: object
) -> report_pb2.IssueReportRequest:
    return report_pb2.IssueReportRequest(subject=subject, kind=kind, **fields)  # type: ignore[arg-type]


async def issue(channel: grpc.aio.Channel, request: report_pb2.IssueReportRequest) -> report_pb2.IssuedReport:
    return await report_pb2_grpc.ReportServiceStub(channel).IssueReport(request, timeout=60)


async def verify(channel: grpc.aio.Channel, request: report_pb2.VerifyReportRequest) -> report_pb2.ReportVerdict:
    return await report_pb2_grpc.ReportServiceStub(channel).VerifyReport(request, timeout=60)
