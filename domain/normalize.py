"""Normalization every profile applies to raw platform values.

Each function takes what a platform export really contains (full-width digits,
``2021年3月19日``, Excel serial numbers, ``1,234.5`` 万元, ``无`` for missing) and
returns one canonical form, or raises :class:`ValueRejected` with a reason code.

Ingest calls these on every cell, and the same authorities, bases and dates recur
on most rows, so the results are cached; but only for short inputs, and only so
many: a cache must never grow with the variety of what it is fed (a file, or
anything a caller could send). No gRPC path uses these functions.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, TypeVar

from credex.domain.memo import memo_size, recurring
from credex.domain.reasons import Reason
from credex.errors import CredexError

MISSING = frozenset({"", "无", "/", "-", "—", "--", "空", "null", "NULL", "None", "N/A", "n/a"})

# Dates outside this range are data errors, not history: the People's Republic's
# credit records start long after 1949, and nothing is decided in the far future.
EARLIEST_DATE = dt.date(1949, 10, 1)
LATEST_DATE = dt.date(2099, 12, 31)
_EXCEL_EPOCH = dt.date(1899, 12, 30)
_MAX_FIELD = 4000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FORMULA = re.compile(r"^(=|@|[+-][A-Za-z(])")

# A fine above 10^8 万元 (one trillion yuan) is a unit or typing error.
MAX_WANYUAN = Decimal(100_000_000)
# Inputs longer than this are normalized every time, never kept: with at most
# ``maxsize`` entries per cache, what the caches hold is bounded.
MEMO_KEY_CHARS = 48

_T = TypeVar("_T")


def memo_sizes() -> dict[str, int]:
    """Entries held by each normalization cache of this module (for tests and diagnostics)."""
    cached: dict[str, Any] = {"clean_text": clean_text, "published_text": published_text, "parse_date": parse_date}
    return {name: memo_size(function) for name, function in cached.items()}


class ValueRejected(CredexError, ValueError):
    """A raw value could not be normalized; ``reason`` says why, from the catalogue of reason codes."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@recurring(maxsize=16384, key_chars=MEMO_KEY_CHARS)
def clean_text(raw: object) -> str:
    """Full-width to half-width, trim, collapse runs of whitespace; ``MISSING`` spellings become ''."""
    if raw is None:
        return ""
    text = str(raw)
    if not text.isascii():  # ASCII is already in NFKC
        text = unicodedata.normalize("NFKC", text)
    text = " ".join(text.split())
    if text in MISSING:
        return ""
    return _checked(text)


def _checked(text: str) -> str:
    if len(text) > _MAX_FIELD:
        raise ValueRejected(Reason.FIELD_TOO_LONG, f"value of {len(text)} characters exceeds {_MAX_FIELD}")
    if _FORMULA.match(text):
        # A spreadsheet would run it when the row is opened again (in a report sent back, say).
        raise ValueRejected(Reason.FIELD_FORMULA, f"value {text[:40]!r} looks like a spreadsheet formula")
    if text.isprintable():  # the common case, checked in C
        return text
    if _CONTROL.search(text):
        raise ValueRejected(Reason.FIELD_CONTROL, "value contains control characters")
    # Invisible format characters (zero-width spaces, a stray BOM) are debris of copy and paste.
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


@recurring(maxsize=8192, key_chars=MEMO_KEY_CHARS)
def published_text(raw: object) -> str:
    """Keep a name as published (original characters) but trim it and treat ``MISSING`` as ''."""
    if raw is None:
        return ""
    text = " ".join(str(raw).split())
    if unicodedata.normalize("NFKC", text) in MISSING:
        return ""
    return _checked(text)


@lru_cache(maxsize=1)
def _t2s() -> object:
    import opencc

    return opencc.OpenCC("t2s")


def name_key(name: str) -> str:
    """A key for matching names across regions: half-width, simplified, no spaces or brackets style."""
    text = unicodedata.normalize("NFKC", name)
    text = _t2s().convert(text)  # type: ignore[attr-defined]
    return "".join(text.split())


_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


@recurring(maxsize=8192, key_chars=MEMO_KEY_CHARS)
def parse_date(raw: object) -> dt.date | None:
    """Every date form seen in the exports, or None when missing.

    Excel serial numbers (1 to 5 digits, optionally with a fraction) are read on
    the 1900 date system, as Excel and WPS write them.
    """
    if isinstance(raw, dt.datetime):
        return _in_range(raw.date(), str(raw))
    if isinstance(raw, dt.date):
        return _in_range(raw, str(raw))
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return _excel_serial(float(raw), str(raw))
    text = clean_text(raw)
    if not text:
        return None
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text)
        if match:
            year, month, day = (int(g) for g in match.groups())
            try:
                value = dt.date(year, month, day)
            except ValueError:
                raise ValueRejected(Reason.DATE_INVALID, f"{text!r} is not a calendar date") from None
            return _in_range(value, text)
    if re.fullmatch(r"\d{1,5}(\.\d+)?", text):
        return _excel_serial(float(text), text)
    raise ValueRejected(Reason.DATE_FORMAT, f"{text!r} is not a date in any known form")


def _excel_serial(serial: float, text: str) -> dt.date:
    if serial < 1:
        raise ValueRejected(Reason.DATE_INVALID, f"{text!r} is not a valid Excel date serial")
    return _in_range(_EXCEL_EPOCH + dt.timedelta(days=int(serial)), text)


def _in_range(value: dt.date, text: str) -> dt.date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueRejected(
            Reason.DATE_OUT_OF_RANGE, f"{text!r} is outside {EARLIEST_DATE.isoformat()}..{LATEST_DATE.isoformat()}"
        )
    return value


def parse_wanyuan(raw: object) -> str:
    """An amount in 万元 as exact decimal yuan ('' when missing).

    Thousands separators, a trailing 万元/万 and full-width digits are accepted;
    negative, non-numeric and absurd amounts are rejected rather than rounded.
    """
    if isinstance(raw, float):
        raw = repr(raw)  # shortest exact-looking text; Decimal(float) would show binary noise
    text = clean_text(raw)
    if not text:
        return ""
    text = text.replace(",", "").replace(" ", "")
    for unit in ("万元", "万"):
        if text.endswith(unit):
            text = text[: -len(unit)]
            break
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueRejected(Reason.AMOUNT_FORMAT, f"{raw!r} is not an amount in 万元") from None
    if not amount.is_finite():
        raise ValueRejected(Reason.AMOUNT_FORMAT, f"{raw!r} is not a finite amount")
    if amount < 0:
        raise ValueRejected(Reason.AMOUNT_NEGATIVE, f"{raw!r} is negative")
    if amount > MAX_WANYUAN:
        raise ValueRejected(Reason.AMOUNT_ABSURD, f"{raw!r} 万元 exceeds {MAX_WANYUAN} 万元")
    return decimal_text(amount * 10000)


def decimal_text(value: Decimal) -> str:
    """Canonical decimal text: no exponent, no trailing zeros after the point."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
