"""A correction or supplement after an objection, field by field: old → new, checked against what is held.

Each change names a Record field by its dotted name (``penalty.fine_yuan``,
``deciding_authority.name``) and says what it was and what it becomes; the old value
must be what the origin holds, so a decision taken on a stale view is refused instead
of overwriting a later change. Only text, number and enum fields can be changed this
way; identity fields (id, origin, subject) cannot.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from credex.node.cases.model import CaseFailure
from credex.v1 import event_pb2, record_pb2

_FIXED = frozenset({"record_id", "origin", "subject", "kind"})


def apply_changes(record: record_pb2.Record, changes: list[event_pb2.FieldChange]) -> record_pb2.Record:
    """A copy of ``record`` with ``changes`` made; :class:`CaseFailure` names the first change that cannot be."""
    if not changes:
        raise _bad("a correction or supplement names the fields it changes (changes: field, old_value, new_value)")
    changed = record_pb2.Record()
    changed.CopyFrom(record)
    for change in changes:
        path = change.field.split(".")
        if not change.field or path[0] in _FIXED:
            raise _bad(f"field {change.field!r} cannot be changed by an objection's outcome")
        holder: Message = changed
        for part in path[:-1]:
            fd = holder.DESCRIPTOR.fields_by_name.get(part)
            if fd is None or fd.type != FieldDescriptor.TYPE_MESSAGE or fd.is_repeated:
                raise _bad(f"{change.field!r} is not a field of a credit record")
            holder = getattr(holder, part)
        fd = holder.DESCRIPTOR.fields_by_name.get(path[-1])
        if fd is None or fd.type == FieldDescriptor.TYPE_MESSAGE or fd.is_repeated:
            raise _bad(f"{change.field!r} is not a text, number or enum field of a credit record")
        held = _text(holder, fd)
        if held != change.old_value:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{change.field} holds {held[:40]!r}, not the old value {change.old_value[:40]!r} given;"
                " nothing changed",
            )
        _set(holder, fd, change.new_value, change.field)
    return changed


def _text(holder: Message, fd: Any) -> str:
    value = getattr(holder, fd.name)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else str(value)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    return "" if fd.type != FieldDescriptor.TYPE_STRING and not value else str(value)


def _set(holder: Message, fd: Any, new: str, name: str) -> None:
    try:
        if fd.type == FieldDescriptor.TYPE_STRING:
            setattr(holder, fd.name, new)
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            setattr(holder, fd.name, fd.enum_type.values_by_name[new].number)
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            setattr(holder, fd.name, {"true": True, "false": False}[new])
        else:
            setattr(holder, fd.name, int(new) if new else 0)
    except (KeyError, ValueError, TypeError):
        raise _bad(f"{new[:40]!r} is not a valid value of {name}") from None


def _bad(message: str) -> CaseFailure:
    return CaseFailure(grpc.StatusCode.INVALID_ARGUMENT, message + "; nothing changed")
