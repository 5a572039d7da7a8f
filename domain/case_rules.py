"""Deadlines and repair rules per origin region, kept as data (``case_rules.toml``) that operators edit.

Every deadline of an objection or a repair is the origin region's (the case follows
the region that decides it), counted in working days on the official calendar. The
eligibility of a repair is decided here, at filing, and explains itself: severity is
read from the source record (credex never derives it), the minimum period follows
from it or from the record's own ``publicity.earliest_repair``, and kinds or older
special-serious listings the rules exclude are refused with the rule that excludes them.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from credex.errors import CredexError
from credex.v1 import record_pb2


class CaseRulesError(CredexError):
    """The rules file is not valid; the message names the file and every problem."""


class RegionRules(BaseModel):
    """One region's deadlines and repair rules; every number is working days on the official calendar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objection_accept_days: int = Field(ge=0, le=60)
    objection_platform_days: int = Field(ge=1, le=60)
    objection_provider_days: int = Field(ge=1, le=60)
    objection_review_days: int = Field(ge=1, le=60)
    objection_max_days: int = Field(ge=0, le=250)
    repair_accept_days: int = Field(ge=1, le=60)
    repair_result_days: int = Field(ge=1, le=60)
    repair_propagation_days: int = Field(ge=1, le=60)
    not_repairable_kinds: tuple[str, ...] = ()
    special_serious_before: dt.date
    special_serious_lists: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseRules:
    default: RegionRules
    regions: dict[str, RegionRules]

    def of(self, origin: str) -> RegionRules:
        """The rules of the region that decides a case: its own table, else ``[default]``."""
        return self.regions.get(origin, self.default)

    @classmethod
    def load(cls, path: Path | None = None) -> CaseRules:
        """Read and validate ``path`` (default: the shipped file); :class:`CaseRulesError` names every problem."""
        source = path if path is not None else resources.files("credex.domain").joinpath("case_rules.toml")
        where = str(path) if path is not None else "case_rules.toml (shipped)"
        try:
            data: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CaseRulesError(f"{where}: {exc}") from None
        unknown = set(data) - {"default", "regions"}
        if unknown:
            raise CaseRulesError(f"{where}: unknown tables {sorted(unknown)}; only [default] and [regions.CODE]")
        try:
            default = RegionRules.model_validate(data.get("default", {}))
            regions = {
                code: RegionRules.model_validate({**data.get("default", {}), **table})
                for code, table in dict(data.get("regions", {})).items()
            }
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CaseRulesError(f"{where}: {problems}") from None
        bad = [code for code in regions if not (len(code) == 6 and code.isdigit())]
        if bad:
            raise CaseRulesError(f"{where}: region codes {bad} are not GB/T 2260 division codes such as 310000")
        return cls(default, regions)

    @staticmethod
    @cache
    def shipped() -> CaseRules:
        return CaseRules.load()


# -- repair eligibility -------------------------------------------------------------------

_SEVERITY_NAMES: dict[int, str] = {
    record_pb2.SEVERITY_MINOR: "轻微 (minor)",
    record_pb2.SEVERITY_GENERAL: "一般 (general)",
    record_pb2.SEVERITY_SERIOUS: "严重 (serious)",
}
# The minimum period before a repair may be applied for, from the decision date (credit-use.md, Repair 2).
_MINIMUM_MONTHS: dict[int, int] = {
    record_pb2.SEVERITY_MINOR: 0,
    record_pb2.SEVERITY_GENERAL: 3,
    record_pb2.SEVERITY_SERIOUS: 12,
}


@dataclass(frozen=True, slots=True)
class Eligibility:
    allowed: bool
    reason: str
    earliest: dt.date | None = None


def kind_name(kind: int) -> str:
    return record_pb2.Kind.Name(kind).removeprefix("KIND_").lower()  # type: ignore[arg-type]


def severity_of(record: record_pb2.Record) -> int:
    """The severity the source record states; a serious-list entry is serious by what the list is."""
    if record.WhichOneof("details") == "penalty":
        return int(record.penalty.severity)
    if record.WhichOneof("details") == "black_list":
        return record_pb2.SEVERITY_SERIOUS
    return record_pb2.SEVERITY_UNSPECIFIED


def repair_eligibility(
    record: record_pb2.Record, rules: RegionRules, today: dt.date, *, proof_of_duty: str, commitment: str
) -> Eligibility:
    """Whether a repair of ``record`` may be filed on ``today``, and why (credit-use.md, Repair 1-2)."""
    missing = [name for name, given in (("proof_of_duty", proof_of_duty), ("commitment", commitment)) if not given]
    if missing:
        return Eligibility(
            False,
            f"incomplete: {' and '.join(missing)} missing; a repair needs the proof that the legal duty is fully"
            " met and a signed credit commitment (信用承诺书)",
        )
    kind = kind_name(record.kind)
    if record.kind not in (record_pb2.KIND_PENALTY, record_pb2.KIND_BLACK_LIST) or kind in rules.not_repairable_kinds:
        return Eligibility(False, f"not repairable: a {kind} record is not 失信信息 that credit repair applies to")
    decided = _date(record.decision_date)
    if record.kind == record_pb2.KIND_BLACK_LIST:
        listed = _date(record.black_list.listed_on) or decided
        name = record.black_list.list_name
        special = next((field for field in rules.special_serious_lists if field in name), None)
        if special and listed is not None and listed < rules.special_serious_before:
            return Eligibility(
                False,
                f"not repairable: 特定严重失信 ({special}) listed on {listed} before"
                f" {rules.special_serious_before}; it stays public for its whole window",
            )
    severity = severity_of(record)
    if severity == record_pb2.SEVERITY_UNSPECIFIED:
        return Eligibility(
            False,
            "not decidable: the source record gives no severity (轻微/一般/严重), and credex never derives it;"
            " ask the source unit to report it",
        )
    earliest = _date(record.publicity.earliest_repair)
    basis = "the record's earliest repair date"
    if earliest is None:
        if decided is None:
            return Eligibility(False, "not decidable: the record has no decision date to count the minimum period from")
        earliest = _plus_months(decided, _MINIMUM_MONTHS[severity])
        basis = f"decision date {decided} + the minimum period for {_SEVERITY_NAMES[severity]}"
    if today < earliest:
        return Eligibility(
            False, f"too early: repair may be applied for from {earliest} ({basis}); today is {today}", earliest
        )
    return Eligibility(True, f"eligible: {_SEVERITY_NAMES[severity]}, allowed from {earliest} ({basis})", earliest)


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _plus_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later; the month's last day where it is shorter (31 Aug + 3 months: 30 Nov)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = (following - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))
