"""Protobuf's wire format, for the answers credex writes by hand instead of building messages field by field.

Building a message in Python costs a call per field and a copy per sub-message; an
answer made of many small parts (a check's hits, each with its measures) is cheaper
as bytes joined together and parsed once in C. What is written here is what protobuf
itself writes for proto3: fields in number order, a field holding its default left
out. Each user holds its encoding to protobuf's with a property test.
"""

from __future__ import annotations

_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """``value`` (not negative) as a protobuf varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's key: its number and wire type (0 varint, 2 length-delimited)."""
    return varint(number << 3 | wire_type)


def text(key: bytes, value: str) -> bytes:
    """A string field under ``key`` (from :func:`tag`), or nothing for the empty string, as proto3 leaves it out."""
    if not value:
        return b""
    data = value.encode()
    return key + varint(len(data)) + data


def nested(key: bytes, data: bytes) -> bytes:
    """A message field (or one item of a repeated one) whose encoding is ``data``; an empty message is still sent."""
    return key + varint(len(data)) + data
