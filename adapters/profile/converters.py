"""Value converters: one published cell to one record value, or :class:`ValueRejected` with a reason code.

A profile names a converter by its field type (``text``, ``uscc``, ``date``,
``code`` ...); coded fields get a converter over the profile's code list, built
once per table with the list's enum numbers resolved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from credex.adapters.profile.reflection import enum_number, enum_of
from credex.adapters.profile.schema import (
    SPECIAL_PREFIXES,
    WITHDRAWAL,
    FieldSpec,
    ProfileError,
    ProfileSpec,
    header_key,
)
from credex.domain import uscc as uscc_codes
from credex.domain.normalize import ValueRejected, clean_text, parse_date, parse_wanyuan, published_text
from credex.domain.persons import validate_ric
from credex.domain.reasons import Reason

Converter = Callable[[object], Any]


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
        raise ValueRejected(Reason.NUMBER_FORMAT, f"{text!r} is not a whole number") from None
    if abs(value) > 10**12:
        raise ValueRejected(Reason.NUMBER_ABSURD, f"{text!r} is out of range")
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
    raise ValueRejected(Reason.CODE_UNKNOWN, f"{text!r} is not yes or no")


CONVERTERS: dict[str, Converter] = {
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


def converter_for(profile: ProfileSpec, path: str, spec: FieldSpec) -> Converter:
    """The converter of field ``path``: by type, or over the profile's code list for coded fields."""
    if spec.type not in ("code", "codes"):
        return CONVERTERS[spec.type]
    if path == WITHDRAWAL:
        return _withdrawal_converter(profile, spec)
    if path.startswith(SPECIAL_PREFIXES) or not spec.codes:
        raise ProfileError(f"profile {profile.name}: coded field {path} needs a record field and a code list")
    target_enum = enum_of(path)
    table = profile.codes[spec.codes]
    numbers = {header_key(k): enum_number(target_enum, v) for k, v in table.items()}
    return code_converter(numbers, multiple=spec.type == "codes", list_name=spec.codes)


def _withdrawal_converter(profile: ProfileSpec, spec: FieldSpec) -> Converter:
    """The platform's publication state to the word of its withdrawal ("" while in publication).

    An unknown state is a rejection, never a guess: read as "in publication" it would keep a
    withdrawn penalty public, read as withdrawn it would revoke one in force.
    """
    if spec.type != "code" or not spec.codes:
        raise ProfileError(f'profile {profile.name}: {WITHDRAWAL} needs type = "code" and a code list')
    words = {header_key(k): v.strip() for k, v in profile.codes[spec.codes].items()}

    def convert(raw: object) -> str | None:
        text = clean_text(raw)
        if not text:
            return None
        key = header_key(text)
        if key not in words:
            raise ValueRejected(Reason.CODE_UNKNOWN, f"{text!r} is not in code list {spec.codes}")
        return words[key]

    return convert


def code_converter(table: dict[str, int], *, multiple: bool, list_name: str) -> Converter:
    def lookup(token: str) -> int:
        key = header_key(token)
        if key in table:
            return table[key]
        if key.isdigit() and key.zfill(2) in table:
            return table[key.zfill(2)]
        raise ValueRejected(Reason.CODE_UNKNOWN, f"{token!r} is not in code list {list_name}")

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
