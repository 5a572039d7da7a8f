"""What a profile file says, and the words mapping speaks in.

A profile (``profiles/<name>.toml``) lists, per record kind, which columns feed
which record field, with a value type and code lists; these models check a file
against that shape before anything is mapped with it. A mapped row is either a
canonical record or a :class:`Rejection` listing every :class:`Problem` found.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, model_validator

from credex.crypto.pseudonym import Pseudonymizer
from credex.domain.publicity import PublicityRules, publicity_today
from credex.domain.reasons import Reason
from credex.domain.risk import RiskSchemes
from credex.errors import CredexError
from credex.v1 import record_pb2

FieldType = Literal[
    "text",
    "name",
    "code_text",
    "uscc",
    "date",
    "wanyuan",
    "integer",
    "boolean",
    "code",
    "codes",
    "id_number",
    "discard",
]
# Pseudo-fields: read and checked, never set on the record as such.
SPECIAL_PREFIXES = ("person.", "discard.")
RULE_FIELDS = frozenset({"publicity.end"})
# The platform's own publication state (公示状态): a code list maps each value to the word of a
# withdrawal (撤销, 删除) or to "" for a record in publication. A withdrawn row becomes a revocation.
WITHDRAWAL = "withdrawal"


class ProfileError(CredexError):
    """A profile file is invalid, or a table does not fit the profile (missing columns)."""


class FieldSpec(BaseModel, frozen=True):
    columns: tuple[str, ...]
    type: FieldType = "text"
    required: bool = False
    codes: str | None = None
    default: str | None = None
    verbatim: str | None = None  # also store the raw text in this field


class KindSpec(BaseModel, frozen=True):
    kind: str
    category: str
    sharing_level: str = "SHARING_LEVEL_PUBLIC"
    # How a table or row is recognised as this kind, tried in this order: the value of the
    # profile's kind_field, the sheet name, a column only this kind has.
    when: tuple[str, ...] = ()
    sheets: tuple[str, ...] = ()
    detect: tuple[str, ...] = ()
    natural_key: tuple[str, ...] = ("document_number",)
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _classes_are_not_published(self) -> KindSpec:
        """Risk classes are never published (不公开): a profile may not share them at the public level.

        The visibility rule keeps them from public callers on this version; the sharing level keeps
        them from the public on a node of an older version too, which does not know the kind.
        """
        if self.kind == "KIND_RISK_CLASS" and self.sharing_level == "SHARING_LEVEL_PUBLIC":
            raise ValueError("KIND_RISK_CLASS records are never published: give sharing_level SHARING_LEVEL_GOVERNMENT")
        return self


class ProfileSpec(BaseModel, frozen=True):
    name: str
    description: str = ""
    # For sources whose rows carry their kind (JSON records, 前置库 tables): the column naming it.
    kind_field: str | None = None
    codes: dict[str, dict[str, str]] = {}
    kinds: tuple[KindSpec, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    reason: Reason
    column: str
    message: str


@dataclass(frozen=True, slots=True)
class Rejection:
    locator: str
    problems: tuple[Problem, ...]
    raw: dict[str, str]
    source_unit: str = ""
    source_unit_uscc: str = ""

    @property
    def reasons(self) -> list[Reason]:
        return [p.reason for p in self.problems]


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A row the platform marks withdrawn: the record it withdraws, and why, as published."""

    record: record_pb2.Record
    reason: str


@dataclass(frozen=True, slots=True)
class MappingContext:
    """What mapping needs beyond the profile: whose rows they are, the publicity rules, the pseudonym key, today.

    ``today`` decides which decision dates lie in the future. ``None`` means the
    calendar day each row is mapped on, so a feed running for weeks does not judge
    rows by the day it started; tests and dry runs pin it, so that sample data
    anchored on a fixed date maps the same way in any year.
    """

    origin: str
    publicity: PublicityRules = field(default_factory=PublicityRules)
    pseudonymizer: Pseudonymizer | None = None
    today: dt.date | None = None
    risk_schemes: RiskSchemes = field(default_factory=RiskSchemes.shipped)

    def day(self) -> dt.date:
        """The day rows are judged on now."""
        return self.today or publicity_today()


def header_key(header: str) -> str:
    """Headers match after full-width to half-width and removing spaces: 罚款金额（万元） = 罚款金额(万元)."""
    return "".join(unicodedata.normalize("NFKC", header).split()).upper()
