"""Issuing a report: the subject's records in force from the store, their proofs, the issuer's signature.

What a report holds follows credit-use.md's Report rules: only records in force
(:func:`credex.node.store.events.in_force`; withdrawn ones never), repaired ones
shown as 已修复 only where their origin's setting says so, disputes marked, the
period (at most five years) and fields the subject chose, for the special report a
有/无 verdict per category and field with the records behind each 有, and "not
covered" wherever a category has no source in the federation. Every record shown
travels with its origin's envelope and an inclusion proof, so a report is issued
only once each record's event is under a checkpoint its origin signed. The report
and the first row of its access log commit together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.domain.penalties import simple_procedure
from credex.domain.persons import withhold
from credex.domain.publicity import publicity_today
from credex.errors import CredexError
from credex.node.chain import CheckpointKeeper, LogBook
from credex.node.chain.proofs import ProofUnavailable, inclusion_proof, proof_to_json
from credex.node.config import ReportsConfig
from credex.node.reports.catalogue import Field, FieldsList, Heading
from credex.node.reports.document import (
    HAS_RECORD,
    IN_FORCE,
    NO_RECORD,
    NOT_COVERED,
    REPAIRED,
    REPORT_FORMAT,
    authorities,
    describe,
    report_sha256,
    sign_document,
)
from credex.node.store import Connection
from credex.node.store.events import in_force, record_digest
from credex.v1 import lookup_pb2, record_pb2

KINDS = {"special": "专项信用报告", "full": "公共信用信息报告"}
SOURCES_SECONDS = 300.0  # how long which members publish which kinds is taken as known
_LIMIT_LOCK = 0x72657074  # "rept": the advisory lock class of a caller's daily count, keyed by the caller
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off paper


class ReportUnavailable(CredexError):
    """The report cannot be issued yet; the message says why and when to retry."""


class ReportRefused(CredexError):
    """The report will not be issued as asked: too many today for this caller, or too many records."""


@dataclass(frozen=True)
class ReportRequest:
    """What a report is asked for, already checked by the service."""

    subject_id: str
    kind: str  # special or full
    period_start: dt.date
    period_end: dt.date
    fields: list[Field]
    caller: str
    role: str
    sharing_levels: frozenset[int]
    purpose: str = ""


@dataclass(frozen=True)
class Issued:
    report_number: str
    verification_code: str
    issued_at: dt.datetime
    verify_url: str
    signed: bytes
    records: list[str]  # the included records' ids


@dataclass
class _Shown:
    row: asyncpg.Record
    record: record_pb2.Record
    shown_as: str
    belongs_to: Field
    item: dict[str, Any] = field(default_factory=dict)


class Issuer:
    """Builds, signs and registers reports for one node."""

    def __init__(
        self,
        origin: str,
        pool: asyncpg.Pool,
        logbook: LogBook,
        keeper: CheckpointKeeper,
        key: SigningKey,
        settings: ReportsConfig,
        fields_list: FieldsList,
    ) -> None:
        self.origin = origin
        self.pool = pool
        self.logbook = logbook
        self.keeper = keeper
        self.key = key
        self.settings = settings
        self.fields_list = fields_list
        self._sources_cache: tuple[float, dict[int, set[str]]] | None = None

    def verify_url(self, number: str, code: str) -> str:
        return f"{self.settings.verify_url}?n={number}&c={code}"

    async def issue(self, request: ReportRequest, bundle: TrustBundle) -> Issued:
        self.key.check_may_sign()
        today = publicity_today()
        async with self.pool.acquire() as conn:
            await self._within_daily_limit(conn, request.caller)  # early, before any work for a refused caller
            rows = await conn.fetch(
                "SELECT record_id, origin, seq, status, disputed, sharing_level, publicity_end, record"
                " FROM records WHERE subject_id = $1 ORDER BY origin, record_id",
                request.subject_id,
            )
            name = await conn.fetchval("SELECT name FROM subjects WHERE subject_id = $1", request.subject_id)
            held = await conn.fetch("SELECT origin, contiguous_seq FROM origin_progress ORDER BY origin")
        shown = [s for s in (self._shown(row, request, today) for row in rows) if s is not None]
        if len(shown) > self.settings.max_records:
            raise ReportRefused(
                f"the report would show {len(shown):,} records, more than the {self.settings.max_records:,} one report"
                " may; choose a shorter period or fewer fields"
            )
        if not name:
            name = next((s.record.subject.name for s in shown if s.record.subject.name), "")
        evidence = []
        for s in shown:
            origin, seq = s.row["origin"], int(s.row["seq"])
            try:
                proof = await inclusion_proof(self.pool, self.logbook, self.keeper, origin, seq)
            except ProofUnavailable as exc:
                raise ReportUnavailable(
                    f"record {s.row['record_id']} is not yet under a checkpoint {origin} signed ({exc.message});"
                    " retry in a few seconds"
                ) from None
            evidence.append(json.loads(proof_to_json(proof)))
            s.item = _item(s)
        held_seq = {r["origin"]: int(r["contiguous_seq"]) for r in held}
        sources = await self._sources()
        issued_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        code = "-".join("".join(secrets.choice(_CODE_ALPHABET) for _ in range(4)) for _ in range(3))
        # The number is taken, and the document built and signed, holding no connection and no lock: the pool
        # serves every call's audit rows. A number taken by a report refused below is skipped, as a sequence
        # skips one in a rolled-back transaction.
        async with self.pool.acquire() as conn:
            serial = await conn.fetchval("SELECT nextval('report_numbers')")
        number = f"{self.origin}-{issued_at:%Y%m%d}-{serial:08d}"
        document = {
            "format": REPORT_FORMAT,
            "report_number": number,
            "verification_code": code,
            "verify_url": self.verify_url(number, code),
            "kind": request.kind,
            "title": KINDS[request.kind],
            "issued_at": issued_at.isoformat(),
            "data_cutoff": {
                "at": issued_at.isoformat(),
                "logs": [{"origin": o, "seq": held_seq.get(o, 0)} for o in bundle.origins],
            },
            "issuer": {"origin": self.origin, "name": _member_name(bundle, self.origin)},
            "subject": {"id": request.subject_id, "name": name or ""},
            "period": {"start": request.period_start.isoformat(), "end": request.period_end.isoformat()},
            "fields": [{"code": f.code, "name": f.name} for f in request.fields],
            # Only the regions whose logs this node holds: a member it has nothing of is not covered.
            "regions": [{"origin": o, "name": _member_name(bundle, o)} for o in bundle.origins if held_seq.get(o)],
            "sections": self._sections(request, shown, sources, bundle),
            "items": [s.item for s in shown],
            "evidence": evidence,
            "notes": self._notes(request, shown)
            + [
                f"本节点尚无{_member_name(bundle, o) or o}（{o}）的信息，本报告不覆盖该地区。"
                for o in bundle.origins
                if not held_seq.get(o)
            ],
        }
        # Off the event loop: a report of max_records records is megabytes of JSON to encode and sign.
        signed = await asyncio.to_thread(sign_document, document, self.key)
        async with self.pool.acquire() as conn, conn.transaction():
            # Again under a lock on the caller, where the report is registered: many calls at once count as many.
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LIMIT_LOCK, request.caller)
            await self._within_daily_limit(conn, request.caller)
            await conn.execute(
                "INSERT INTO reports (report_number, verification_code, kind, subject_id, issued_at, issued_to, role,"
                " period_start, period_end, fields, included, report_sha256, signed_report)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)",
                number,
                code,
                request.kind,
                request.subject_id,
                issued_at,
                request.caller,
                request.role,
                request.period_start,
                request.period_end,
                [f.code for f in request.fields],
                json.dumps(
                    [
                        {k: s.item[k] for k in ("record_id", "origin", "seq", "disputed", "shown_as", "record_sha256")}
                        for s in shown
                    ]
                ),
                report_sha256(signed),
                signed,
            )
            await log_access(conn, number, request.caller, request.role, "issue", request.purpose)
        return Issued(
            number, code, issued_at, self.verify_url(number, code), signed, [s.item["record_id"] for s in shown]
        )

    async def _within_daily_limit(self, conn: Connection, caller: str) -> None:
        recent = await conn.fetchval(
            "SELECT count(*) FROM reports WHERE issued_to = $1 AND issued_at > now() - interval '1 day'", caller
        )
        if recent >= self.settings.max_per_caller_per_day:
            raise ReportRefused(
                f"{recent} reports were issued to you in the last 24 hours, the most this node issues to one"
                " caller; retry tomorrow"
            )

    async def _sources(self) -> dict[int, set[str]]:
        """Which members publish each record kind: what a heading is covered by.

        A scan of every record, so it is kept for :data:`SOURCES_SECONDS`: members start
        publishing a kind rarely, and a report issued meanwhile says "not covered" for it.
        """
        now = time.monotonic()
        if self._sources_cache is None or now - self._sources_cache[0] > SOURCES_SECONDS:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch("SELECT DISTINCT origin, kind FROM records")
            sources: dict[int, set[str]] = defaultdict(set)
            for row in rows:
                sources[int(row["kind"])].add(row["origin"])
            self._sources_cache = (now, sources)
        return self._sources_cache[1]

    def _shown(self, row: asyncpg.Record, request: ReportRequest, today: dt.date) -> _Shown | None:
        """The record as the report shows it, or ``None`` where the rules leave it out."""
        record = record_pb2.Record.FromString(bytes(row["record"]))
        kind = record.kind
        headings = self.fields_list.categories if request.kind == "special" else self.fields_list.sections
        if not any(kind in h.kinds for h in headings) or row["sharing_level"] not in request.sharing_levels:
            return None  # a kind no heading shows (never a grade: the fields list cannot name one)
        if in_force(row["status"], row["publicity_end"], today):
            shown_as = IN_FORCE
        elif row["status"] == lookup_pb2.ENTRY_STATUS_REPAIRED and row["origin"] in self.settings.show_repaired:
            shown_as = REPAIRED
        else:
            return None
        decided = _decision_date(record)  # a record without a date is shown: the period cannot exclude it
        if decided is not None and not request.period_start <= decided <= request.period_end:
            return None
        if (
            request.kind == "special"
            and kind == record_pb2.KIND_PENALTY
            and row["origin"] in self.settings.simple_procedure_excluded
            and simple_procedure(record)
        ):
            return None
        found = self.fields_list.field_of(authorities(record))
        if found.code not in {f.code for f in request.fields}:
            return None
        return _Shown(row, record, shown_as, found)

    def _sections(
        self,
        request: ReportRequest,
        shown: list[_Shown],
        sources: dict[int, set[str]],
        bundle: TrustBundle,
    ) -> list[dict[str, Any]]:
        sections = []
        headings = self.fields_list.categories if request.kind == "special" else self.fields_list.sections
        for heading in headings:
            origins = sorted(set().union(*(sources.get(k, set()) for k in heading.kinds)))
            records = [s for s in shown if s.record.kind in heading.kinds]
            section: dict[str, Any] = {
                "code": heading.code,
                "name": heading.name,
                "covered": bool(origins),
                "sources": [{"origin": o, "name": _member_name(bundle, o)} for o in origins],
                "records": [s.item["record_id"] for s in records],
            }
            if not origins:
                section["verdict"] = NOT_COVERED
            elif request.kind == "special":
                section["findings"] = _findings(heading, request.fields, records)
            sections.append(section)
        return sections

    def _notes(self, request: ReportRequest, shown: list[_Shown]) -> list[str]:
        notes = [
            "本报告仅列示报告期内、截至数据截止时点仍在公示期内的信息（已撤销、已删除、已屏蔽的信息不列示）。",
            "“not covered”表示本联盟尚无该类信息的数据来源，不表示“无”。",
            "标注“异议中”的信息，其信息主体已提出异议，处理结果以数据来源地区的认定为准。",
        ]
        if self.settings.show_repaired:
            notes.append(
                "已完成信用修复的信息，按其来源地区的规定标注“已修复”列示（"
                + "、".join(self.settings.show_repaired)
                + "）；其他地区的已修复信息不列示。"
            )
        else:
            notes.append("已完成信用修复的信息不列示。")
        if request.kind == "special" and self.settings.simple_procedure_excluded:
            notes.append(
                "按来源地区的规定，以下地区适用简易程序的行政处罚不列入专项信用报告："
                + "、".join(self.settings.simple_procedure_excluded)
                + "。"
            )
        if any(s.item["sharing"] != "public" for s in shown):
            notes.append(
                "本报告含未向社会公开的信息（仅政府部门间共享或经信息主体授权查询），仅供出具对象依法使用，不得向他人提供。"
            )
        if any(s.row["disputed"] for s in shown):
            notes.append("本报告含异议中的信息。")
        notes.append("本报告不含公共信用综合评价等级与监管风险分类。")
        return notes


def _findings(heading: Heading, fields: list[Field], records: list[_Shown]) -> list[dict[str, Any]]:
    """Per chosen field: 有 with the records behind it, or 无."""
    findings = []
    for f in fields:
        behind = [s.item["record_id"] for s in records if s.belongs_to.code == f.code and s.shown_as == IN_FORCE]
        findings.append(
            {"field": f.code, "field_name": f.name, "verdict": HAS_RECORD if behind else NO_RECORD, "records": behind}
        )
    return findings


async def log_access(conn: Connection, number: str, caller: str, role: str, action: str, purpose: str) -> None:
    """Note who issued, viewed or verified a report and why, with any ID number in the name or purpose withheld."""
    await conn.execute(
        "INSERT INTO report_accesses (report_number, caller, role, action, purpose) VALUES ($1, $2, $3, $4, $5)",
        number,
        withhold(caller),
        role,
        action,
        withhold(purpose),
    )


def _decision_date(record: record_pb2.Record) -> dt.date | None:
    text = record.decision_date or (record.black_list.listed_on if record.HasField("black_list") else "")
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _member_name(bundle: TrustBundle, origin: str) -> str:
    member = bundle.member(origin)
    return member.name if member is not None else ""


def _item(s: _Shown) -> dict[str, Any]:
    row = s.row
    return {
        "record_id": row["record_id"],
        "origin": row["origin"],
        "seq": int(row["seq"]),
        **describe(s.record),
        "field": s.belongs_to.code,
        "shown_as": s.shown_as,
        "disputed": bool(row["disputed"]),
        "record_sha256": record_digest(bytes(row["record"])).hex(),
    }
