"""Profiles name record fields and enum values as text; this resolves them against the proto.

Resolving at load time turns a typo in a profile into a :class:`ProfileError` that
names it, instead of an ``AttributeError`` on the first row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from credex.adapters.profile.schema import ProfileError
from credex.v1 import record_pb2


def enum_number(descriptor: EnumDescriptor, name: str) -> int:
    value = descriptor.values_by_name.get(name)
    if value is None:
        raise ProfileError(f"{name!r} is not a value of {descriptor.name}")
    return int(value.number)


def field_path(descriptor: Descriptor, path: str) -> FieldDescriptor:
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


def enum_of(path: str) -> EnumDescriptor:
    found = field_path(record_pb2.Record.DESCRIPTOR, path)
    if found.enum_type is None:
        raise ProfileError(f"{path!r} is not a coded field")
    return found.enum_type


def gather(fields: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put a converted value where the record constructor expects it (nested dicts for messages).

    Building the record once from keyword arguments is far cheaper than setting
    nested attributes one by one on a message.
    """
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
