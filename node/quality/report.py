"""Data quality per source unit (数据来源单位), from what was taken in and what was quarantined.

The four dimensions the plans judge data on — completeness (全面性), timeliness
(及时性), accuracy (准确性), validity (有效性) — and the 双公示 rates: 上报率
(reported against what the unit should have reported, when that is known),
合规率 (rows that met the standard) and 及时率 (licences and penalties on the
platform within N working days of the decision). Plus the USCC 错码 rate (codes
that fail their checks) and 重码 rate (one code under two names). Every problem
row can be written back to its unit as CSV, with its reasons.

Which dimension a rejection counts against, and whether it is a 错码, is read
from the catalogue of reason codes (:mod:`credex.domain.reasons`), never from
the spelling of the code.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from credex.domain.normalize import name_key
from credex.domain.reasons import Dimension, Reason
from credex.domain.workdays import working_days_between
from credex.v1 import quality_pb2, record_pb2

_DUAL = frozenset({record_pb2.KIND_LICENCE, record_pb2.KIND_PENALTY})  # 双公示


def dimension(reason: str) -> Dimension:
    """Which quality dimension a stored rejection reason counts against, as the catalogue says.

    A code the catalogue does not hold (stored by an older version) still marks a
    row that was refused as unusable, so it counts against validity.
    """
    known = Reason.known(reason)
    return known.dimension if known is not None else Dimension.VALIDITY


def is_wrong_code(reason: str) -> bool:
    """Whether a stored rejection reason makes the subject's USCC a 错码, as the catalogue says."""
    known = Reason.known(reason)
    return known is not None and known.wrong_code


@dataclass
class UnitQuality:
    unit_uscc: str
    unit_name: str = ""
    accepted: int = 0
    quarantined: int = 0
    timed: int = 0  # 双公示 records whose timeliness could be judged
    on_time: int = 0
    expected: int | None = None
    calendar_official: bool = True
    reasons: Counter[str] = field(default_factory=Counter)
    codes: set[str] = field(default_factory=set)
    duplicate_codes: set[str] = field(default_factory=set)

    @property
    def reported(self) -> int:
        return self.accepted + self.quarantined

    def _share(self, part: int, whole: int) -> float | None:
        return part / whole if whole else None

    def _clean(self, kind: Dimension) -> float | None:
        bad = sum(n for reason, n in self.reasons.items() if dimension(reason) is kind)
        return self._share(self.reported - bad, self.reported)

    @property
    def compliance_rate(self) -> float | None:  # 合规率
        return self._share(self.accepted, self.reported)

    @property
    def timeliness_rate(self) -> float | None:  # 及时率
        return self._share(self.on_time, self.timed)

    @property
    def reporting_rate(self) -> float | None:  # 上报率
        return self._share(self.reported, self.expected) if self.expected else None

    @property
    def completeness(self) -> float | None:
        return self._clean(Dimension.COMPLETENESS)

    @property
    def accuracy(self) -> float | None:
        return self._clean(Dimension.ACCURACY)

    @property
    def validity(self) -> float | None:
        return self._clean(Dimension.VALIDITY)

    @property
    def wrong_code_rate(self) -> float | None:  # 错码率
        wrong = sum(n for reason, n in self.reasons.items() if is_wrong_code(reason))
        return self._share(wrong, self.reported)

    @property
    def duplicate_code_rate(self) -> float | None:  # 重码率
        return self._share(len(self.duplicate_codes), len(self.codes))


async def compute(
    pool: asyncpg.Pool,
    origin: str,
    *,
    deadline_days: int = 7,
    unit: str | None = None,
    expected: dict[str, int] | None = None,
) -> list[UnitQuality]:
    """The report per source unit; reads in SQL, judges off the event loop so serving goes on meanwhile."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT r.record, t.taken FROM records r"
            " LEFT JOIN (SELECT record_id, min(recorded_at) AS taken FROM events WHERE origin = $1"
            " GROUP BY record_id) t ON t.record_id = r.record_id WHERE r.origin = $1",
            origin,
        )
        # A unit that sends the same rows twice (one export as GB18030, then again as
        # UTF-8 with BOM) reported them once: count distinct rows, not deliveries.
        rejected = await conn.fetch(
            "SELECT DISTINCT ON (source_unit_uscc, raw) source_unit_uscc, source_unit, reasons FROM quarantine"
            + (" WHERE source_unit_uscc = $1" if unit else "")
            + " ORDER BY source_unit_uscc, raw, id",
            *([unit] if unit else []),
        )
    return await asyncio.to_thread(_judge, rows, rejected, deadline_days, unit, expected)


def _judge(
    rows: list[asyncpg.Record],
    rejected: list[asyncpg.Record],
    deadline_days: int,
    unit: str | None,
    expected: dict[str, int] | None,
) -> list[UnitQuality]:
    units: dict[str, UnitQuality] = {}
    names_by_code: defaultdict[str, set[str]] = defaultdict(set)
    codes_by_unit: defaultdict[str, set[str]] = defaultdict(set)
    for row in rows:
        record = record_pb2.Record.FromString(row["record"])
        code = record.subject.uscc
        if code:
            names_by_code[code].add(name_key(record.subject.name))
        key = record.source_unit.uscc
        if unit and key != unit:
            continue
        quality = units.setdefault(key, UnitQuality(key, record.source_unit.name))
        quality.accepted += 1
        if code:
            codes_by_unit[key].add(code)
        if record.kind in _DUAL and record.decision_date and row["taken"] is not None:
            days, official = working_days_between(dt.date.fromisoformat(record.decision_date), row["taken"].date())
            quality.timed += 1
            quality.on_time += days <= deadline_days
            quality.calendar_official = quality.calendar_official and official
    for row in rejected:
        key = row["source_unit_uscc"]
        quality = units.setdefault(key, UnitQuality(key, row["source_unit"]))
        quality.unit_name = quality.unit_name or row["source_unit"]
        quality.quarantined += 1
        quality.reasons.update(row["reasons"])
    for key, quality in units.items():
        quality.codes = codes_by_unit[key]
        quality.duplicate_codes = {c for c in quality.codes if len(names_by_code[c]) > 1}
        if expected and key in expected:
            quality.expected = expected[key]
    return sorted(units.values(), key=lambda q: (-q.reported, q.unit_uscc))


async def problem_rows(pool: asyncpg.Pool, unit: str) -> list[dict[str, str]]:
    """Every quarantined row of one source unit, with its reasons, as the unit reported it."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT source, locator, reasons, messages, raw, taken_at FROM ("
            " SELECT DISTINCT ON (raw) id, source, locator, reasons, messages, raw, taken_at FROM quarantine"
            " WHERE source_unit_uscc = $1 ORDER BY raw, id) first_sent ORDER BY id",
            unit,
        )
    result = []
    for row in rows:
        entry = {
            "source": row["source"],
            "locator": row["locator"],
            "reasons": ";".join(row["reasons"]),
            "messages": "；".join(row["messages"]),
            "taken_at": row["taken_at"].isoformat(),
        }
        entry.update({f"raw:{k}": str(v) for k, v in json.loads(row["raw"]).items()})
        result.append(entry)
    return result


def _cell(value: str) -> str:
    """Neutralize formula-like cells: the file is opened in spreadsheet software by the unit."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_problem_csv(path: Path, rows: list[dict[str, str]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # the BOM lets Excel read UTF-8
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def to_message(quality: UnitQuality) -> quality_pb2.UnitQuality:
    message = quality_pb2.UnitQuality(
        unit_uscc=quality.unit_uscc,
        unit_name=quality.unit_name,
        reported=quality.reported,
        accepted=quality.accepted,
        quarantined=quality.quarantined,
        reasons=dict(quality.reasons),
        calendar_official=quality.calendar_official,
    )
    for name in RATES:
        value = getattr(quality, name)
        if value is not None:
            setattr(message, name, value)
    return message


RATES = (
    "compliance_rate",
    "timeliness_rate",
    "reporting_rate",
    "completeness",
    "accuracy",
    "validity",
    "wrong_code_rate",
    "duplicate_code_rate",
)
