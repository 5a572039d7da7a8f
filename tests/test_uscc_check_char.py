"""The USCC check characters credex computes itself agree with python-stdnum's and with GB 11714's."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import uscc as stdnum_uscc

from credex.domain import uscc as uscc_codes


def test_position_18_agrees_with_stdnum_for_every_character_at_every_position() -> None:
    rng = random.Random(18)
    bodies = ["".join(rng.choice(uscc_codes.ALPHABET) for _ in range(17)) for _ in range(5000)]
    bodies += [uscc_codes.ALPHABET[k] * 17 for k in range(len(uscc_codes.ALPHABET))]
    for body in bodies:
        assert uscc_codes.check_char(body) == stdnum_uscc.calc_check_digit(body), body


def test_position_17_is_the_gb_11714_check_of_the_organization_code() -> None:
    assert uscc_codes.org_check_char("00000000") == "0"
    assert uscc_codes.org_check_char("D2143569") == "X"  # the standard's example, D2143569-X
    assert uscc_codes.org_check_char("60003734") == "1"


def test_a_code_with_a_wrong_check_character_is_still_refused() -> None:
    code = uscc_codes.make("91", "310115", "00001234")
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    assert uscc_codes.validate(code).code == code
    try:
        uscc_codes.validate(wrong)
    except uscc_codes.InvalidSubjectCode as exc:
        assert exc.reason.name == "USCC_CHECK"
    else:
        raise AssertionError("a wrong check character was accepted")


# The check characters as the standards write them, a character at a time: what the table-driven
# ones in credex.domain.uscc must agree with on every input.
def _reference_org_check_char(org8: str) -> str:
    total = sum(int(char, 36) * weight for char, weight in zip(org8, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


_ORG_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=_ORG_CHARS, min_size=8, max_size=8))
def test_position_17_agrees_with_the_standards_sum_for_every_body(org8: str) -> None:
    assert uscc_codes.org_check_char(org8) == _reference_org_check_char(org8)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=uscc_codes.ALPHABET, min_size=17, max_size=17))
def test_position_18_agrees_with_stdnum_for_every_body(body: str) -> None:
    assert uscc_codes.check_char(body) == stdnum_uscc.calc_check_digit(body)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["11", "12", "13", "19", "51", "52", "59", "91", "92", "93", "A1", "N1", "Y1", "31"]),
    st.sampled_from(["310000", "310115", "320000", "330106", "110000", "440300"]),
    st.text(alphabet=uscc_codes.ALPHABET, min_size=8, max_size=8),
    st.sampled_from(uscc_codes.ALPHABET),
    st.sampled_from(uscc_codes.ALPHABET),
)
def test_a_well_formed_code_is_accepted_exactly_when_both_check_characters_are_the_standards(
    prefix: str, division: str, org8: str, position17: str, position18: str
) -> None:
    code = prefix + division + org8 + position17 + position18
    if position17 != _reference_org_check_char(org8):
        expected = "USCC_ORGANIZATION_CHECK"
    elif position18 != stdnum_uscc.calc_check_digit(code[:17]):
        expected = "USCC_CHECK"
    else:
        expected = "OK"
    try:
        verdict = uscc_codes.validate(code).code and "OK"
    except uscc_codes.InvalidSubjectCode as exc:
        verdict = exc.reason.name
    assert verdict == expected


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=70))
def test_any_text_is_a_code_or_refused_with_a_reason_never_another_error(raw: str) -> None:
    try:
        uscc_codes.validate(raw)
    except uscc_codes.InvalidSubjectCode as exc:
        assert exc.reason.name.startswith("USCC_")


@pytest.mark.parametrize("bad", ["", "1234567", "123456789", "0000000a", "0000000!", "００００００００"])
def test_the_check_characters_refuse_what_is_not_a_body_of_their_alphabet(bad: str) -> None:
    with pytest.raises(ValueError):
        uscc_codes.org_check_char(bad)
    with pytest.raises(ValueError):
        uscc_codes.check_char(bad.ljust(17, "0") if len(bad) == 8 else bad)
