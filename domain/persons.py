"""Natural persons' resident ID numbers (GB 11643), checked with ``stdnum.cn.ric``'s parts.

Only the origin ever sees a raw ID number: profiles validate it here and
replace it with a keyed pseudonym (``credex.crypto.pseudonym``) straight away.

``stdnum.cn.ric.validate`` also requires that the birth-place code existed in
the birth year. Real numbers break that rule (浦东新区 310115 dates from 1993,
yet people born earlier carry it after re-registration), so this module checks
the length, the birth date and the check character with stdnum's own functions
and only asks that the region code sits under a real province.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from credex.domain.reasons import Reason
from credex.domain.regions import is_plausible_division
from credex.domain.uscc import InvalidSubjectCode, validate

# 17 digits and a digit or X: an ID number's shape, valid or not, in any text after folding.
_RIC_SHAPED = re.compile(r"\d{17}[\dX]")
_NO_DIGITS = str.maketrans("", "", "0123456789")
# The whole run of digits holding an ID number's shape: withheld as one, so no part of the number is left.
_RIC_RUN = re.compile(r"\d{17,}X?")
WITHHELD = "[证件号码已隐去 ID number withheld]"


def fold(raw: str) -> str:
    """An ID number as platforms send it (full-width, spaced, lower-case x) in its one written form."""
    return "".join(unicodedata.normalize("NFKC", raw).split()).upper()


def cannot_hold_ric(text: str) -> bool:
    """Whether ``text`` is plain ASCII with fewer than 17 digits: no folding can make an ID number's shape of it.

    :func:`fold` is NFKC, which leaves ASCII as it is, then drops spaces and upper-cases: it
    makes no digit, and an ID number's shape needs 17. The common text is settled by this one
    C-speed count, without a fold or a search.
    """
    return text.isascii() and len(text) - len(text.translate(_NO_DIGITS)) < 17


def looks_like_ric(raw: str) -> bool:
    """Whether ``raw`` holds an ID number's shape: one mistyped is still a person's number, never to echo."""
    return not cannot_hold_ric(raw) and _RIC_SHAPED.search(fold(raw)) is not None


def withhold(text: str) -> str:
    """``text`` with every ID number in it, however spaced or wide, replaced by :data:`WITHHELD`.

    Withheld whatever its check character (one mistyped is still a person's number): any
    run of digits with 18 characters that begin with a division code and a birth date.

    For free text a caller writes (a purpose, a legal basis, a reason) before it is kept
    in an audit row or a table: someone will type a person's number there. A run that is
    a valid USCC and no valid ID number is kept, since an enterprise's code is no secret.
    Text without an ID number's shape is returned as it is, at the cost of one fold.
    """
    if not looks_like_ric(text):
        return text
    folded, at = _folded(text)
    kept: list[str] = []
    end = 0
    for run in _RIC_RUN.finditer(folded):
        # The cheap test first: an all-digit USCC mostly begins 9 (工商), as no division code does.
        if not _holds_a_plausible_number(run.group()) or _is_uscc_only(run.group()):
            continue
        start, stop = (run.start(), run.end()) if at is None else (at[run.start()], at[run.end() - 1] + 1)
        kept += [text[end:start], WITHHELD]
        end = stop
    return "".join([*kept, text[end:]])


def _folded(text: str) -> tuple[str, list[int] | None]:
    """:func:`fold` of ``text``, and the position in ``text`` each folded character came from (None: its own).

    ASCII without spaces only changes case when folded, so no position moves, and the
    common case (an enterprise's all-digit code asked about) costs one ``upper``
    instead of a normalization per character.
    """
    if text.isascii() and text.split() == [text]:
        return text.upper(), None
    folded: list[str] = []
    at: list[int] = []
    for index, char in enumerate(text):
        for part in fold(char):
            folded.append(part)
            at.append(index)
    return "".join(folded), at


def _holds_a_plausible_number(run: str) -> bool:
    """Whether 18 characters of ``run`` start with a division code and a birth date: an ID number, maybe mistyped.

    Folding drops spaces (platforms space ID numbers out), so unrelated numbers a space
    apart form one run; a hex digest beside a sequence number is no one's ID number.
    """
    for start in range(len(run) - 17):
        if is_plausible_division(run[start : start + 6]) and _born(run[start + 6 : start + 14]):
            return True
    return False


def _born(text: str) -> bool:
    try:
        return dt.date(1900, 1, 1) <= dt.datetime.strptime(text, "%Y%m%d").date() <= dt.date.today()
    except ValueError:
        return False


def _is_uscc_only(code: str) -> bool:
    try:
        validate_ric(code)
    except InvalidSubjectCode:
        pass
    else:
        return False
    try:
        validate(code)
    except InvalidSubjectCode:
        return False
    return True


def validate_ric(raw: str) -> str:
    """The normalized 18-character ID number, or :class:`InvalidSubjectCode`.

    Messages never echo the number itself, since they end up in quarantine
    reports and logs.
    """
    code = fold(raw)
    if not code:
        raise InvalidSubjectCode(Reason.RIC_MISSING, "证件号码 is empty")
    if len(code) != 18:
        raise InvalidSubjectCode(Reason.RIC_LENGTH, f"证件号码 must have 18 characters, got {len(code)}")
    if not code[:17].isdigit() or not (code[17].isdigit() or code[17] == "X"):
        raise InvalidSubjectCode(Reason.RIC_FORMAT, "证件号码 must be 17 digits and a digit or X")
    if not is_plausible_division(code[:6]):
        raise InvalidSubjectCode(Reason.RIC_COMPONENT, "证件号码 does not start with a division code")
    try:
        born = ric.get_birth_date(code)
    except ValidationError:
        raise InvalidSubjectCode(Reason.RIC_COMPONENT, "证件号码 has an impossible birth date") from None
    if not dt.date(1900, 1, 1) <= born <= dt.date.today():
        raise InvalidSubjectCode(Reason.RIC_COMPONENT, "证件号码 has a birth date outside 1900 to today")
    if ric.calc_check_digit(code) != code[17]:  # stdnum expects the number with its check digit
        raise InvalidSubjectCode(Reason.RIC_CHECK, "证件号码 check character does not match")
    return code
