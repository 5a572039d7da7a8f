"""统一社会信用代码 (USCC, GB 32100-2015): normalization and validation.

``stdnum.cn.uscc`` checks the length, the alphabet and position 18, but its
``validate`` rejects valid codes whose first eight characters are not all digits
(A-, N- and Y-prefixed registering departments) and never checks position 17, the
GB 11714 organization-code check character. This module computes the same check
character itself (with precomputed tables: it runs for every subject a caller sends),
runs the format checks itself so those prefixes pass, adds position 17,
and turns every failure into a reason code plus a message that says
what is wrong, because the message goes back to the unit that reported the row.

:func:`validate` keeps nothing: it also checks what gRPC callers send, and a cache
keyed by caller input grows with every distinct string. Ingest, where the same
codes recur on most rows, uses :func:`validate_recurring`, a bounded cache of
short inputs.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from operator import mul

from credex.domain import memo
from credex.domain.reasons import Reason
from credex.domain.regions import is_plausible_division
from credex.errors import CredexError

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_FORBIDDEN = set("IOSVZ")

# Position 1: registering department; position 2: categories defined under it.
# Where the standard's category list is not pinned down here, any digit is accepted
# rather than quarantining codes that may well be valid.
DEPARTMENTS: dict[str, str] = {
    "1": "机构编制",
    "2": "外交",
    "3": "司法行政",
    "4": "文化",
    "5": "民政",
    "6": "旅游",
    "7": "宗教",
    "8": "工会",
    "9": "工商/市场监管",
    "A": "军队",
    "N": "农业",
    "Y": "其他",
}
CATEGORIES: dict[str, frozenset[str]] = {
    "1": frozenset("1239"),
    "5": frozenset("1239"),
    "9": frozenset("123"),
}

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The check characters are weighted sums over character values. The values are looked up for the
# whole code at once, as a bytes.translate of its ASCII (a table of 256 values, in C) and summed by
# map(mul): the same sum as a dict look-up a character, at about half the cost (it runs for every
# subject a caller sends). A character outside the table's alphabet is refused before the sum.
# GB 11714 values: digits as themselves, A-Z from 10; the check character by the sum's remainder mod 11.
_ORG_VALUES = bytes(int(chr(b), 36) if chr(b) in _ORG_CHARS else 0 for b in range(256))
_ORG_CHECK = "0X987654321"  # 11 - remainder, 10 written X, 11 written 0
# GB 32100 values: each character's place in the alphabet; weights 3^(i-1) mod 31.
_IN_ALPHABET = re.compile(f"[{ALPHABET}]+")
_VALUES = bytes(ALPHABET.index(chr(b)) if chr(b) in ALPHABET else 0 for b in range(256))
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_LEGACY_REGISTRATION = re.compile(r"^\d{15}$")
_LEGACY_ORG_CODE = re.compile(r"^[0-9A-Z]{8}-?[0-9X]$")
# Longest raw input normalized at all: 18 characters plus the spaces and full-width
# forms of a platform export. Checked before NFKC, which can expand a character 18-fold.
MAX_RAW = 64
_MEMO_SIZE = 16384  # distinct codes kept by validate_recurring (each at most MAX_RAW characters)


class InvalidSubjectCode(CredexError, ValueError):
    """A subject code failed validation; ``reason`` says why, from the catalogue of reason codes."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class USCC:
    code: str

    @property
    def department(self) -> str:
        return DEPARTMENTS[self.code[0]]

    @property
    def division(self) -> str:
        return self.code[2:8]


def normalize(raw: str) -> str:
    """Full-width to half-width, drop every kind of space, upper-case.

    These are the harmless corruptions seen in platform exports; anything else
    (the letter O for zero, a legacy code) is left for :func:`validate` to reject,
    because guessing would attach a penalty to the wrong company.
    """
    text = unicodedata.normalize("NFKC", raw)
    return "".join(text.split()).upper()


def _ascii(code: str, length: int, alphabet: str) -> bytes:
    """``code`` as ASCII bytes, if it is ``length`` characters of ``alphabet``; else ValueError."""
    if len(code) != length or not code.isascii() or code.strip(alphabet):
        raise ValueError(f"not {length} characters of {alphabet}: {code[:24]!r}")
    return code.encode("ascii")


def _org_check(org8: bytes) -> str:
    return _ORG_CHECK[sum(map(mul, org8.translate(_ORG_VALUES), _ORG_WEIGHTS)) % 11]


def _check(first17: bytes) -> str:
    """Over the first 17 bytes given (map stops with the weights): a whole code may be passed."""
    return ALPHABET[-sum(map(mul, first17.translate(_VALUES), _WEIGHTS)) % 31]


def org_check_char(org8: str) -> str:
    """GB 11714 check character over the 8-character organization code body."""
    return _org_check(_ascii(org8, 8, _ORG_CHARS))


def check_char(first17: str) -> str:
    """Position-18 check character (weights 3^(i-1) mod 31).

    ``stdnum.cn.uscc.calc_check_digit`` computes the same (tests/test_uscc_check_char.py
    compares them) but compacts its input and looks each character up by ``str.index``:
    two thirds of a validation, paid for every subject of a batch Check.
    """
    return _check(_ascii(first17, 17, ALPHABET))


def validate(raw: str) -> USCC:
    """Return the normalized code or raise :class:`InvalidSubjectCode` saying what is wrong.

    Messages quote at most a few characters of what was given; input longer than
    :data:`MAX_RAW` is refused by its length alone, before any normalization.
    """
    if len(raw) > MAX_RAW:
        raise InvalidSubjectCode(
            Reason.USCC_LENGTH, f"统一社会信用代码 must have 18 characters; the value given has {len(raw):,} characters"
        )
    code = normalize(raw)
    if not code:
        raise InvalidSubjectCode(Reason.USCC_MISSING, "统一社会信用代码 is empty")
    if len(code) != 18:
        if _LEGACY_REGISTRATION.match(code):
            raise InvalidSubjectCode(
                Reason.USCC_LEGACY_REGISTRATION_NUMBER,
                f"{code!r} is a 15-digit 工商注册号, not an 18-character 统一社会信用代码; "
                "put it in the 工商注册号 column and report the subject's USCC",
            )
        if _LEGACY_ORG_CODE.match(code):
            raise InvalidSubjectCode(
                Reason.USCC_LEGACY_ORGANIZATION_CODE,
                f"{code!r} is a 9-character 组织机构代码, not an 18-character 统一社会信用代码",
            )
        raise InvalidSubjectCode(
            Reason.USCC_LENGTH, f"统一社会信用代码 must have 18 characters, {_shown(code)} has {len(code)}"
        )
    if not _IN_ALPHABET.fullmatch(code):
        pos, char = next((i + 1, c) for i, c in enumerate(code) if c not in ALPHABET)
        hint = " (the letter O where a zero belongs?)" if char == "O" else ""
        if char in _FORBIDDEN or char.isalnum():
            detail = f"character {char!r} at position {pos} is not allowed{hint}"
        else:
            detail = f"character {char!r} at position {pos} is not a digit or capital letter"
        raise InvalidSubjectCode(Reason.USCC_CHARSET, f"{code!r}: {detail}")
    if code[0] not in DEPARTMENTS:
        raise InvalidSubjectCode(
            Reason.USCC_DEPARTMENT, f"{code!r}: {code[0]!r} at position 1 is not a registering department code"
        )
    allowed = CATEGORIES.get(code[0])
    if (allowed is not None and code[1] not in allowed) or not code[1].isdigit():
        raise InvalidSubjectCode(
            Reason.USCC_CATEGORY,
            f"{code!r}: {code[1]!r} at position 2 is not a category of department {DEPARTMENTS[code[0]]}",
        )
    if not is_plausible_division(code[2:8]):
        raise InvalidSubjectCode(
            Reason.USCC_DIVISION, f"{code!r}: positions 3-8 {code[2:8]!r} are not a GB/T 2260 division code"
        )
    ascii_code = code.encode("ascii")  # 18 characters of ALPHABET, as matched above
    org_check = _org_check(ascii_code[8:16])
    if code[16] != org_check:
        raise InvalidSubjectCode(
            Reason.USCC_ORGANIZATION_CHECK,
            f"{code!r}: position 17 should be {org_check!r} (GB 11714 check of positions 9-16), got {code[16]!r}",
        )
    expected = _check(ascii_code)
    if code[17] != expected:
        raise InvalidSubjectCode(
            Reason.USCC_CHECK, f"{code!r}: check character at position 18 should be {expected!r}, got {code[17]!r}"
        )
    return USCC(code)


# :func:`validate` for ingest, where the same codes recur on most rows of a file. Bounded twice
# over: at most ``_MEMO_SIZE`` entries, and only inputs of at most :data:`MAX_RAW` characters
# (failures are not kept). Never used on what a gRPC caller sends.
validate_recurring = memo.recurring(maxsize=_MEMO_SIZE, key_chars=MAX_RAW)(validate)


def memo_size() -> int:
    """Codes held by :func:`validate_recurring`'s cache (for tests and diagnostics)."""
    return memo.memo_size(validate_recurring)


def _shown(code: str) -> str:
    """A code as quoted in a message: whole if short, else its first characters and its length."""
    return repr(code) if len(code) <= 24 else f"{code[:20]!r}…"


def make(prefix2: str, division: str, org8: str) -> str:
    """Assemble a valid USCC from its parts (used by the sample-data generator)."""
    body = prefix2 + division + org8 + org_check_char(org8)
    return body + check_char(body)
