"""The USCC check characters credex computes itself agree with python-stdnum's and with GB 11714's."""

from __future__ import annotations

import random

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
