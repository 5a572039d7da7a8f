"""A profile kind bound to one table's header, mapping that table's rows to canonical records.

Binding resolves each field to a column index and a converter once; mapping a
row is then a loop over those bindings. Every problem of a row is collected, not
just the first, because the rejection goes back to the unit that sent the row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from credex.adapters.profile.converters import Converter, converter_for
from credex.adapters.profile.reflection import enum_number, gather
from credex.adapters.profile.rules import apply_rules
from credex.adapters.profile.schema import (
    RULE_FIELDS,
    SPECIAL_PREFIXES,
    WITHDRAWAL,
    FieldSpec,
    KindSpec,
    MappingContext,
    Problem,
    ProfileError,
    ProfileSpec,
    Rejection,
    Withdrawn,
    header_key,
)
from credex.domain import uscc as uscc_codes
from credex.domain.normalize import ValueRejected, clean_text
from credex.domain.reasons import Reason
from credex.v1 import record_pb2


@dataclass(frozen=True, slots=True)
class _Binding:
    path: str
    column_index: int  # -1 when the table has no such column
    column_label: str
    spec: FieldSpec
    convert: Converter
    target: tuple[str, ...] | None  # attribute path on the record, None for pseudo-fields
    verbatim: tuple[str, ...] | None  # where the raw text is kept as well


def _missing(binding: _Binding) -> Problem:
    """A required field with nothing in it: no cell, an empty cell, or a cell that normalizes to nothing."""
    return Problem(Reason.FIELD_MISSING, binding.column_label, f"{binding.column_label} is empty")


class TableMapper:
    """A profile kind bound to one table's header; maps that table's rows."""

    def __init__(
        self,
        profile: ProfileSpec,
        kind: KindSpec,
        header: Sequence[str],
        source: str,
        context: MappingContext,
    ) -> None:
        self.profile, self.kind, self.header, self.source, self.context = profile, kind, list(header), source, context
        self.kind_number = enum_number(record_pb2.Kind.DESCRIPTOR, kind.kind)
        self.category_number = enum_number(record_pb2.Category.DESCRIPTOR, kind.category)
        self.sharing_number = enum_number(record_pb2.SharingLevel.DESCRIPTOR, kind.sharing_level)
        index = {header_key(h): i for i, h in enumerate(self.header)}
        bindings: list[_Binding] = []
        missing: list[str] = []
        for path, spec in kind.fields.items():
            column = next((index[header_key(c)] for c in spec.columns if header_key(c) in index), -1)
            if column < 0 and spec.required:
                missing.append(" / ".join(spec.columns))
            label = self.header[column] if column >= 0 else spec.columns[0]
            special = path.startswith(SPECIAL_PREFIXES) or path in RULE_FIELDS or path == WITHDRAWAL
            target = None if special else tuple(path.split("."))
            verbatim = tuple(spec.verbatim.split(".")) if spec.verbatim else None
            bindings.append(_Binding(path, column, label, spec, converter_for(profile, path, spec), target, verbatim))
        if missing:
            raise ProfileError(f"{source}: required columns missing for {kind.kind}: {'; '.join(missing)}")
        self.bindings = bindings
        # Columns the quarantine never shows as sent: ID numbers, and what the profile discards.
        self._hidden = frozenset(b.column_index for b in bindings if b.spec.type in ("id_number", "discard"))
        # Bindings that can yield a value: a column is present or a default is set.
        self._active = [b for b in bindings if b.column_index >= 0 or b.spec.default is not None]
        self._source_unit = next((b for b in bindings if b.path == "source_unit.name"), None)
        self._source_unit_uscc = next((b for b in bindings if b.path == "source_unit.uscc"), None)
        self._withdrawal = next((b for b in bindings if b.path == WITHDRAWAL), None)

    def map_row(self, values: Sequence[object], locator: str) -> record_pb2.Record | Withdrawn | Rejection:
        """The row's record; :class:`Withdrawn` around it if the platform marks it withdrawn; else why not."""
        problems: list[Problem] = []
        converted: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        width = len(values)
        if width != len(self.header):
            problems.append(
                Problem(Reason.ROW_COLUMNS, "", f"row has {width} cells but the header has {len(self.header)}")
            )
        for binding in self._active:
            index = binding.column_index
            raw = values[index] if 0 <= index < width else None
            if raw is None or raw == "":  # blank-but-not-empty cells convert to "" and count as missing below
                raw = binding.spec.default
                if raw is None:  # empty and no default: nothing to convert
                    if binding.spec.required:
                        problems.append(_missing(binding))
                    continue
            try:
                value = binding.convert(raw)
            except (ValueRejected, uscc_codes.InvalidSubjectCode) as exc:
                problems.append(Problem(exc.reason, binding.column_label, f"{binding.column_label}: {exc.message}"))
                continue
            if value is None or value in ("", []):
                if binding.spec.required:
                    problems.append(_missing(binding))
                continue
            converted[binding.path] = value
            target = binding.target
            if target is not None:
                if len(target) == 2:  # inlined from gather: the common, one-message-deep case
                    holder = fields.get(target[0])
                    if holder is None:
                        holder = fields[target[0]] = {}
                    holder[target[1]] = value.isoformat() if isinstance(value, dt.date) else value
                else:
                    gather(fields, target, value)
            if binding.verbatim is not None:
                gather(fields, binding.verbatim, clean_text(raw))
        if problems:
            return self._rejection(values, locator, problems, converted)
        record = record_pb2.Record(
            origin=self.context.origin,
            kind=record_pb2.Kind.ValueType(self.kind_number),
            category=record_pb2.Category.ValueType(self.category_number),
            sharing_level=record_pb2.SharingLevel.ValueType(self.sharing_number),
            **fields,
        )
        apply_rules(record, converted, problems, self.context, self.kind.natural_key)
        if problems:
            return self._rejection(values, locator, problems, converted)
        withdrawal = converted.get(WITHDRAWAL)
        if withdrawal and self._withdrawal is not None:
            state = clean_text(values[self._withdrawal.column_index]) if self._withdrawal.column_index >= 0 else ""
            return Withdrawn(record, f"{self._withdrawal.column_label} {state} {withdrawal}".replace("  ", " "))
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

    def reject_unread(self, values: Sequence[object], locator: str, reason: Reason, message: str) -> Rejection:
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
        raw: dict[str, str] = {}
        for i, value in enumerate(values):
            label = self.header[i] if i < len(self.header) else f"extra_{i + 1}"
            if value is None:
                continue
            text = str(value).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
            raw[label] = "<withheld>" if i in self._hidden and text.strip() else text[:2000]
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
