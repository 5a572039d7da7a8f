"""Profiles: how a platform's row becomes a canonical record, as a data file.

A profile (``profiles/<name>.toml``) lists, per record kind, which columns feed
which record field, with a value type and code lists. An operator copies and
edits the file for a platform whose export differs; no Python changes. What is
rule rather than mapping — who the subject is, the record's identity, the
publicity window — is applied here in code, the same way for every profile.

A mapped row is either a :class:`credex.v1.record_pb2.Record` or a
:class:`Rejection` listing every problem found, each with a reason code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from pydantic import BaseModel, ValidationError

from credex.crypto.pseudonym import Pseudonymizer
from credex.domain import uscc as uscc_codes
from credex.domain.normalize import ValueRejected, clean_text, parse_date, parse_wanyuan, published_text
from credex.domain.persons import validate_ric
from credex.domain.publicity import PublicityRules, penalty_window
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

# Short tags in record ids, so an id says what it is at a glance.
KIND_TAGS: dict[int, str] = {
    record_pb2.KIND_LICENCE: "XK",
    record_pb2.KIND_PENALTY: "CF",
    record_pb2.KIND_BLACK_LIST: "HMD",
    record_pb2.KIND_RED_LIST: "HONG",
    record_pb2.KIND_DISHONEST_DEBTOR: "SX",
    record_pb2.KIND_COMMITMENT: "CN",
    record_pb2.KIND_EVALUATION: "PJ",
    record_pb2.KIND_CONTRACT: "HT",
    record_pb2.KIND_PERSONAL_POINTS: "JF",
    record_pb2.KIND_HOUSEHOLD_WORKER: "JZ",
    record_pb2.KIND_AUTHORIZATION: "SQ",
}

_SERIOUS_PENALTIES = frozenset(
    {
        record_pb2.PENALTY_TYPE_SUSPEND_BUSINESS,
        record_pb2.PENALTY_TYPE_REVOKE_LICENCE,
        record_pb2.PENALTY_TYPE_DETENTION,
        record_pb2.PENALTY_TYPE_RESTRICT_BUSINESS,
        record_pb2.PENALTY_TYPE_RESTRICT_PRACTICE,
        record_pb2.PENALTY_TYPE_ORDER_CLOSURE,
    }
)
# Pseudo-fields: read and checked, never set on the record as such.
_SPECIAL_PREFIXES = ("person.", "discard.")
_RULE_FIELDS = frozenset({"publicity.end"})


class ProfileError(Exception):
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


class ProfileSpec(BaseModel, frozen=True):
    name: str
    description: str = ""
    # For sources whose rows carry their kind (JSON records, 前置库 tables): the column naming it.
    kind_field: str | None = None
    codes: dict[str, dict[str, str]] = {}
    kinds: tuple[KindSpec, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
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
    def reasons(self) -> list[str]:
        return [p.reason for p in self.problems]


@dataclass(frozen=True, slots=True)
class MappingContext:
    origin: str
    publicity: PublicityRules = field(default_factory=PublicityRules)
    pseudonymizer: Pseudonymizer | None = None
    today: dt.date = field(default_factory=dt.date.today)


def header_key(header: str) -> str:
    """Headers match after full-width to half-width and removing spaces: 罚款金额（万元） = 罚款金额(万元)."""
    return "".join(unicodedata.normalize("NFKC", header).split()).upper()


class Profile:
    def __init__(self, spec: ProfileSpec) -> None:
        self.spec = spec
        self.name = spec.name
        for kind in spec.kinds:
            _enum_number(record_pb2.Kind.DESCRIPTOR, kind.kind)
            _enum_number(record_pb2.Category.DESCRIPTOR, kind.category)
            _enum_number(record_pb2.SharingLevel.DESCRIPTOR, kind.sharing_level)
            for path, spec_field in kind.fields.items():
                if spec_field.codes and spec_field.codes not in spec.codes:
                    raise ProfileError(f"profile {spec.name}: {path} uses unknown code list {spec_field.codes!r}")
                if not path.startswith(_SPECIAL_PREFIXES):
                    _field_path(record_pb2.Record.DESCRIPTOR, path)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Profile:
        """A shipped profile by name (``national``) or a profile file by path."""
        path = Path(name_or_path)
        if path.suffix == ".toml" and path.exists():
            text, source = path.read_text(encoding="utf-8"), str(path)
        else:
            entry = resources.files("credex.adapters").joinpath("profiles", f"{name_or_path}.toml")
            if not entry.is_file():
                raise ProfileError(f"no profile {name_or_path!r}; shipped profiles: {', '.join(shipped_profiles())}")
            text, source = entry.read_text(encoding="utf-8"), f"profile {name_or_path}"
        try:
            data = tomllib.loads(text)
            base = data.pop("include", None)
            if base is not None:
                data = _merged(cls.load(base).spec, data)
            spec = ProfileSpec.model_validate(data)
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ProfileError(f"{source} is not a valid profile:\n{exc}") from exc
        return cls(spec)

    def bind(
        self,
        header: Sequence[str],
        source: str,
        context: MappingContext,
        *,
        sheet: str = "",
        kind_value: str | None = None,
    ) -> TableMapper:
        """Choose the record kind (by kind field, sheet name or header) and map columns to fields."""
        keys = [header_key(h) for h in header]
        present = set(keys)
        if kind_value is not None:
            wanted = header_key(kind_value)
            chosen = next((k for k in self.spec.kinds if wanted in {header_key(w) for w in k.when}), None)
            if chosen is None:
                raise ProfileError(f"{source}: kind {kind_value!r} is not one profile {self.name} takes in")
            return TableMapper(self, chosen, header, keys, source, context)
        for kind in self.spec.kinds:
            if sheet and sheet in kind.sheets:
                return TableMapper(self, kind, header, keys, source, context)
        for kind in self.spec.kinds:
            if any(header_key(d) in present for d in kind.detect):
                return TableMapper(self, kind, header, keys, source, context)
        detectors = "; ".join(f"{k.kind}: {' or '.join(k.detect or k.sheets or k.when)}" for k in self.spec.kinds)
        raise ProfileError(
            f"{source}: the header matches no record kind of profile {self.name} (looked for {detectors})"
        )


def _merged(base: ProfileSpec, data: dict[str, Any]) -> dict[str, Any]:
    """A profile built on another (``include = "national"``): its code lists, and its kinds.

    A kind listed without fields adjusts how the included kind is recognised (sheets,
    kind field values, columns) and keeps its fields; a kind with fields replaces or adds.
    """
    merged = base.model_dump()
    merged.update({k: v for k, v in data.items() if k not in ("codes", "kinds")})
    merged["codes"] = {**merged["codes"], **data.get("codes", {})}
    kinds = {k["kind"]: k for k in merged["kinds"]}
    for kind in data.get("kinds", []):
        if kind.get("fields"):
            kinds[kind["kind"]] = kind
        elif kind["kind"] in kinds:
            kinds[kind["kind"]] = {**kinds[kind["kind"]], **kind}
        else:
            raise ProfileError(f"kind {kind['kind']} has no fields and is not in the included profile")
    merged["kinds"] = list(kinds.values())
    return merged


def shipped_profiles() -> list[str]:
    folder = resources.files("credex.adapters").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


@dataclass(frozen=True, slots=True)
class _Binding:
    path: str
    column_index: int  # -1 when the table has no such column
    column_label: str
    spec: FieldSpec
    convert: Callable[[object], Any]
    target: tuple[str, ...] | None  # attribute path on the record, None for pseudo-fields
    verbatim: tuple[str, ...] | None  # where the raw text is kept as well


class TableMapper:
    """A profile kind bound to one table's header; maps that table's rows."""

    def __init__(
        self,
        profile: Profile,
        kind: KindSpec,
        header: Sequence[str],
        keys: Sequence[str],
        source: str,
        context: MappingContext,
    ) -> None:
        self.profile, self.kind, self.header, self.source, self.context = (
            profile,
            kind,
            list(header),
            source,
            context,
        )
        self.kind_number = _enum_number(record_pb2.Kind.DESCRIPTOR, kind.kind)
        self.category_number = _enum_number(record_pb2.Category.DESCRIPTOR, kind.category)
        self.sharing_number = _enum_number(record_pb2.SharingLevel.DESCRIPTOR, kind.sharing_level)
        index = {key: i for i, key in enumerate(keys)}
        bindings: list[_Binding] = []
        missing: list[str] = []
        for path, spec in kind.fields.items():
            column = next((index[header_key(c)] for c in spec.columns if header_key(c) in index), -1)
            if column < 0 and spec.required:
                missing.append(" / ".join(spec.columns))
            label = self.header[column] if column >= 0 else spec.columns[0]
            target = None if path.startswith(_SPECIAL_PREFIXES) or path in _RULE_FIELDS else tuple(path.split("."))
            verbatim = tuple(spec.verbatim.split(".")) if spec.verbatim else None
            bindings.append(_Binding(path, column, label, spec, self._converter(path, spec), target, verbatim))
        if missing:
            raise ProfileError(f"{source}: required columns missing for {kind.kind}: {'; '.join(missing)}")
        self.bindings = bindings
        # Bindings that can yield a value: a column is present or a default is set.
        self._active = [b for b in bindings if b.column_index >= 0 or b.spec.default is not None]
        self._source_unit = next((b for b in bindings if b.path == "source_unit.name"), None)
        self._source_unit_uscc = next((b for b in bindings if b.path == "source_unit.uscc"), None)

    def _converter(self, path: str, spec: FieldSpec) -> Callable[[object], Any]:
        kind = spec.type
        if kind in ("code", "codes"):
            if path.startswith(_SPECIAL_PREFIXES) or not spec.codes:
                raise ProfileError(
                    f"profile {self.profile.name}: coded field {path} needs a record field and a code list"
                )
            target_enum = _enum_of(path)
            table = self.profile.spec.codes[spec.codes]
            numbers = {header_key(k): _enum_number(target_enum, v) for k, v in table.items()}
            return _code_converter(numbers, multiple=kind == "codes", list_name=spec.codes)
        return _CONVERTERS[kind]

    def map_row(self, values: Sequence[object], locator: str) -> record_pb2.Record | Rejection:
        problems: list[Problem] = []
        converted: dict[str, Any] = {}
        # Fields are gathered as keyword arguments and the record is built once:
        # far cheaper than setting nested attributes one by one on a message.
        fields: dict[str, Any] = {}
        width = len(values)
        if width != len(self.header):
            problems.append(Problem("row.columns", "", f"row has {width} cells but the header has {len(self.header)}"))
        for binding in self._active:
            index = binding.column_index
            raw = values[index] if 0 <= index < width else None
            if raw is None or raw == "":  # blank-but-not-empty cells convert to "" and count as missing below
                raw = binding.spec.default
                if raw is None:  # empty and no default: nothing to convert
                    if binding.spec.required:
                        problems.append(
                            Problem("field.missing", binding.column_label, f"{binding.column_label} is empty")
                        )
                    continue
            try:
                value = binding.convert(raw)
            except (ValueRejected, uscc_codes.InvalidSubjectCode) as exc:
                problems.append(Problem(exc.reason, binding.column_label, f"{binding.column_label}: {exc.message}"))
                continue
            if value is None or value in ("", []):
                if binding.spec.required:
                    problems.append(Problem("field.missing", binding.column_label, f"{binding.column_label} is empty"))
                continue
            converted[binding.path] = value
            target = binding.target
            if target is not None:
                if len(target) == 2:  # inlined from _gather: the common, one-message-deep case
                    holder = fields.get(target[0])
                    if holder is None:
                        holder = fields[target[0]] = {}
                    holder[target[1]] = value.isoformat() if isinstance(value, dt.date) else value
                else:
                    _gather(fields, target, value)
            if binding.verbatim is not None:
                _gather(fields, binding.verbatim, clean_text(raw))
        if problems:
            return self._rejection(values, locator, problems, converted)
        record = record_pb2.Record(
            origin=self.context.origin,
            kind=record_pb2.Kind.ValueType(self.kind_number),
            category=record_pb2.Category.ValueType(self.category_number),
            sharing_level=record_pb2.SharingLevel.ValueType(self.sharing_number),
            **fields,
        )
        self._apply_rules(record, converted, problems)
        if problems:
            return self._rejection(values, locator, problems, converted)
        return record

    def _rejection(
        self, values: Sequence[object], locator: str, problems: list[Problem], converted: dict[str, Any]
    ) -> Rejection:
        return Rejection(
            locator=locator,
            problems=tuple(problems),
            raw=self.raw_dict(values),
            source_unit=str(converted.get("source_unit.name", self._raw_text(values, self._source_unit))),
            source_unit_uscc=str(converted.get("source_unit.uscc", self._raw_text(values, self._source_unit_uscc))),
        )

    def reject_unread(self, values: Sequence[object], locator: str, reason: str, message: str) -> Rejection:
        """A row the reader already found broken (bad bytes, bad CSV quoting)."""
        return Rejection(
            locator=locator,
            problems=(Problem(reason, "", message),),
            raw=self.raw_dict(values),
            source_unit=self._raw_text(values, self._source_unit),
            source_unit_uscc=self._raw_text(values, self._source_unit_uscc),
        )

    def raw_dict(self, values: Sequence[object]) -> dict[str, str]:
        """The row as published, for the quarantine; never includes ID-number columns."""
        hidden = {b.column_index for b in self.bindings if b.spec.type in ("id_number", "discard")}
        raw: dict[str, str] = {}
        for i, value in enumerate(values):
            label = self.header[i] if i < len(self.header) else f"extra_{i + 1}"
            if value is None:
                continue
            text = str(value).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
            raw[label] = "<withheld>" if i in hidden and text.strip() else text[:2000]
        return raw

    @staticmethod
    def _raw_text(values: Sequence[object], binding: _Binding | None) -> str:
        if binding is None or not 0 <= binding.column_index < len(values):
            return ""
        value = values[binding.column_index]
        try:
            return clean_text(value)[:200] if value is not None else ""
        except ValueRejected:
            return ""

    # -- rules shared by every profile -------------------------------------------

    def _apply_rules(self, record: record_pb2.Record, values: dict[str, Any], problems: list[Problem]) -> None:
        subject_id = self._subject_identity(record, values, problems)
        decision = values.get("decision_date")
        if isinstance(decision, dt.date) and decision > self.context.today:
            problems.append(Problem("date.future", "decision_date", f"decision date {decision} is after today"))
        if record.kind == record_pb2.KIND_PENALTY and isinstance(decision, dt.date):
            self._penalty_publicity(record, decision, values)
        elif record.kind == record_pb2.KIND_LICENCE and isinstance(decision, dt.date):
            self._licence_publicity(record, decision, values, problems)
        elif isinstance(decision, dt.date):
            # Lists, grades, commitments...: public from the decision; an end the source gives
            # (a removal from a list, the end of a validity) stops publication.
            record.publicity.start = decision.isoformat()
            end = values.get("publicity.end")
            if isinstance(end, dt.date):
                if end < decision:
                    problems.append(
                        Problem("date.order", "publicity.end", f"end {end} is before the decision {decision}")
                    )
                record.publicity.end = end.isoformat()
        if problems or not subject_id:
            return
        key_parts = [str(values.get(path, "")) for path in self.kind.natural_key]
        tag = KIND_TAGS.get(record.kind, f"K{record.kind}")
        digest = hashlib.sha256("\x1f".join([record.origin, tag, subject_id, *key_parts]).encode()).hexdigest()[:20]
        record.record_id = f"{record.origin}-{tag}-{digest}"

    def _subject_identity(self, record: record_pb2.Record, values: dict[str, Any], problems: list[Problem]) -> str:
        subject = record.subject
        if subject.type == record_pb2.SUBJECT_TYPE_UNSPECIFIED:
            subject.type = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
        if subject.type == record_pb2.SUBJECT_TYPE_NATURAL_PERSON:
            id_number = values.get("person.id_number")
            if not id_number:
                problems.append(Problem("ric.missing", "证件号码", "a natural person needs an ID number (证件号码)"))
                return ""
            if self.context.pseudonymizer is None:
                problems.append(
                    Problem(
                        "person.no_pseudonym_key",
                        "证件号码",
                        "this node has no pseudonym key (keys.pseudonym_key), so it cannot take in natural persons",
                    )
                )
                return ""
            subject.person_pseudonym = self.context.pseudonymizer.pseudonym(id_number)
            subject.uscc = ""
            return subject.person_pseudonym
        if not subject.uscc:
            problems.append(Problem("uscc.missing", "统一社会信用代码", "统一社会信用代码 is empty"))
            return ""
        return subject.uscc

    def _penalty_publicity(self, record: record_pb2.Record, decision: dt.date, values: dict[str, Any]) -> None:
        penalty = record.penalty
        if penalty.severity == record_pb2.SEVERITY_UNSPECIFIED:
            serious = any(t in _SERIOUS_PENALTIES for t in penalty.types)
            penalty.severity = record_pb2.SEVERITY_SERIOUS if serious else record_pb2.SEVERITY_GENERAL
        window = penalty_window(self.context.publicity, decision, penalty.severity, values.get("publicity.end"))
        record.publicity.start = window.start.isoformat()
        record.publicity.end = window.end.isoformat()
        record.publicity.earliest_repair = window.earliest_repair.isoformat()

    @staticmethod
    def _licence_publicity(
        record: record_pb2.Record, decision: dt.date, values: dict[str, Any], problems: list[Problem]
    ) -> None:
        valid_from, valid_to = values.get("licence.valid_from"), values.get("licence.valid_to")
        if isinstance(valid_from, dt.date) and isinstance(valid_to, dt.date) and valid_to < valid_from:
            problems.append(Problem("date.order", "有效期至", f"有效期至 {valid_to} is before 有效期自 {valid_from}"))
        record.publicity.start = decision.isoformat()
        if isinstance(valid_to, dt.date):
            record.publicity.end = valid_to.isoformat()


# -- value converters ---------------------------------------------------------------


def _uscc(raw: object) -> str:
    text = clean_text(raw)
    return uscc_codes.validate_recurring(text).code if text else ""


def _code_text(raw: object) -> str:
    return clean_text(raw).replace(" ", "").upper()


def _date(raw: object) -> dt.date | None:
    return parse_date(raw)


def _id_number(raw: object) -> str:
    text = clean_text(raw)
    return validate_ric(text) if text else ""


def _discard(raw: object) -> str:
    return ""


def _integer(raw: object) -> int | None:
    text = clean_text(raw).replace(",", "")
    if not text:
        return None
    try:
        value = int(float(text)) if "." in text and float(text).is_integer() else int(text)
    except ValueError:
        raise ValueRejected("number.format", f"{text!r} is not a whole number") from None
    if abs(value) > 10**12:
        raise ValueRejected("number.absurd", f"{text!r} is out of range")
    return value


_TRUE = frozenset({"1", "true", "yes", "y", "是", "已撤回", "撤回"})
_FALSE = frozenset({"0", "false", "no", "n", "否", "有效"})


def _boolean(raw: object) -> bool | None:
    text = clean_text(raw).lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueRejected("code.unknown", f"{text!r} is not yes or no")


_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "text": clean_text,
    "name": published_text,
    "code_text": _code_text,
    "uscc": _uscc,
    "date": _date,
    "wanyuan": parse_wanyuan,
    "id_number": _id_number,
    "discard": _discard,
    "integer": _integer,
    "boolean": _boolean,
}


def _code_converter(table: dict[str, int], *, multiple: bool, list_name: str) -> Callable[[object], Any]:
    def lookup(token: str) -> int:
        key = header_key(token)
        if key in table:
            return table[key]
        if key.isdigit() and key.zfill(2) in table:
            return table[key.zfill(2)]
        raise ValueRejected("code.unknown", f"{token!r} is not in code list {list_name}")

    def convert(raw: object) -> Any:
        text = clean_text(raw)
        if not text:
            return [] if multiple else None
        if not multiple:
            return lookup(text)
        tokens = [t.strip() for t in text.replace("；", ";").split(";") if t.strip()]
        numbers: list[int] = []
        for token in tokens:
            number = lookup(token)
            if number not in numbers:
                numbers.append(number)
        return numbers

    return convert


# -- proto plumbing -----------------------------------------------------------------


def _enum_number(descriptor: EnumDescriptor, name: str) -> int:
    value = descriptor.values_by_name.get(name)
    if value is None:
        raise ProfileError(f"{name!r} is not a value of {descriptor.name}")
    return int(value.number)


def _field_path(descriptor: Descriptor, path: str) -> FieldDescriptor:
    parts = path.split(".")
    current = descriptor
    for i, part in enumerate(parts):
        found = current.fields_by_name.get(part)
        if found is None:
            raise ProfileError(f"{path!r} is not a field of the canonical record")
        if i < len(parts) - 1:
            if found.message_type is None:
                raise ProfileError(f"{path!r}: {part} has no fields")
            current = found.message_type
        else:
            return found
    raise ProfileError(f"{path!r} is empty")


def _enum_of(path: str) -> EnumDescriptor:
    found = _field_path(record_pb2.Record.DESCRIPTOR, path)
    if found.enum_type is None:
        raise ProfileError(f"{path!r} is not a coded field")
    return found.enum_type


def _gather(fields: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put a converted value where the record constructor expects it (nested dicts for messages)."""
    if isinstance(value, dt.date):
        value = value.isoformat()
    if len(path) == 2:  # the common case: one message deep
        holder = fields.get(path[0])
        if holder is None:
            holder = fields[path[0]] = {}
        holder[path[1]] = value
        return
    holder = fields
    for part in path[:-1]:
        holder = holder.setdefault(part, {})
    holder[path[-1]] = value
