"""The report fields list (node/reports/fields.toml): categories, sections and fields, kept as data.

Shanghai's list of fields is 41 long and Zhejiang's 40, and both change by notice, so
the list is a file an operator edits (``reports.fields``), checked when it is loaded:
every kind named must be a record kind, codes are unique, and exactly one field, the
last, takes the records no other field claims.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from credex.errors import CredexError
from credex.v1 import record_pb2

# Never in a report: market-supervision risk classes (credit-use.md, Check rule 9: "never shown in
# public views or reports"; 国市监信发〔2022〕6号, Shandong's 不公开), grades and points, which are not
# published; an authorization is a permission, not a credit fact.
NEVER_SHOWN = frozenset(
    {
        record_pb2.KIND_RISK_CLASS,
        record_pb2.KIND_EVALUATION,
        record_pb2.KIND_PERSONAL_POINTS,
        record_pb2.KIND_AUTHORIZATION,
    }
)


class FieldsListError(CredexError):
    """The report fields list cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Heading:
    """A special report's category or a full report's section, and the record kinds it is made of."""

    code: str
    name: str
    kinds: frozenset[int]


@dataclass(frozen=True, slots=True)
class Field:
    """A field (领域) a subject may choose, recognised by words in the deciding authority's name."""

    code: str
    name: str
    authorities: tuple[str, ...]

    def claims(self, names: list[str]) -> bool:
        return not self.authorities or any(word in name for name in names for word in self.authorities)


@dataclass(frozen=True, slots=True)
class FieldsList:
    categories: tuple[Heading, ...]
    sections: tuple[Heading, ...]
    fields: tuple[Field, ...]

    @classmethod
    def shipped(cls) -> FieldsList:
        text = resources.files("credex.node.reports").joinpath("fields.toml").read_text(encoding="utf-8")
        return cls.parse(text, "the shipped fields list")

    @classmethod
    def load(cls, path: Path | None) -> FieldsList:
        if path is None:
            return cls.shipped()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FieldsListError(f"cannot read the report fields list {path}: {exc.strerror}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> FieldsList:
        try:
            data = tomllib.loads(text)
            categories = tuple(_heading(item, source) for item in data.get("category", []))
            sections = tuple(_heading(item, source) for item in data.get("section", []))
            fields = tuple(
                Field(str(item["code"]), str(item["name"]), tuple(str(w) for w in item.get("authorities", [])))
                for item in data.get("field", [])
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise FieldsListError(f"{source}: not a report fields list: {exc!r}") from None
        for name, items in (("category", categories), ("section", sections), ("field", fields)):
            codes = [i.code for i in items]
            if not codes:
                raise FieldsListError(f"{source}: no [[{name}]] given")
            if len(set(codes)) != len(codes):
                raise FieldsListError(f"{source}: a {name} code is given twice")
        catch_all = [f.code for f in fields if not f.authorities]
        if catch_all != [fields[-1].code]:
            raise FieldsListError(
                f"{source}: the last field, and only it, must have no authorities: it takes what no other field claims"
            )
        return cls(categories, sections, fields)

    def field_of(self, names: list[str]) -> Field:
        """The first field that claims a record decided or reported by the authorities ``names``."""
        return next(f for f in self.fields if f.claims(names))

    def chosen(self, asked: list[str]) -> list[Field]:
        """The fields named by code or name, in the list's order; all of them when none is named."""
        if not asked:
            return list(self.fields)
        known = {f.code: f for f in self.fields} | {f.name: f for f in self.fields}
        unknown = [a for a in asked if a not in known]
        if unknown:
            raise FieldsListError(
                f"unknown report field {unknown[0][:20]!r}; the fields are "
                + ", ".join(f"{f.code} ({f.name})" for f in self.fields)
            )
        wanted = {known[a].code for a in asked}
        return [f for f in self.fields if f.code in wanted]


def _heading(item: dict[str, object], source: str) -> Heading:
    kinds = []
    raw_kinds = item.get("kinds", [])
    if not isinstance(raw_kinds, list):
        raise TypeError("kinds must be a list")
    for raw in raw_kinds:
        name = "KIND_" + str(raw).upper()
        try:
            kind = record_pb2.Kind.Value(name)
        except ValueError:
            raise FieldsListError(f"{source}: {item.get('code')!r} names the unknown record kind {raw!r}") from None
        if kind in NEVER_SHOWN:
            raise FieldsListError(f"{source}: {raw!r} records never appear in a report")
        kinds.append(kind)
    return Heading(str(item["code"]), str(item["name"]), frozenset(kinds))
