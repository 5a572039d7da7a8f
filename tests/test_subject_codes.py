"""统一社会信用代码 and resident ID numbers: what passes, and what is said about what does not."""

from __future__ import annotations

import pytest

from credex.domain import uscc
from credex.domain.persons import validate_ric
from credex.domain.reasons import Reason
from credex.domain.uscc import InvalidSubjectCode


@pytest.mark.parametrize(
    "raw",
    [
        "91110000600037341L",
        "９１１１００００６０００３７３４１Ｌ",  # full-width
        "91110000 600037341L",  # embedded space
        "91110000600037341l",  # lower case
        "\u300091110000600037341L ",  # ideographic space around it
    ],
)
def test_harmless_corruptions_are_normalized(raw: str) -> None:
    assert uscc.validate(raw).code == "91110000600037341L"


@pytest.mark.parametrize("prefix", ["A1", "N1", "N3", "Y1"])
def test_codes_with_letter_departments_are_valid_although_stdnum_rejects_them(prefix: str) -> None:
    from stdnum.cn import uscc as stdnum_uscc

    code = uscc.make(prefix, "310105", "MA1FL8XQ")
    assert not stdnum_uscc.is_valid(code)
    assert uscc.validate(code).code == code


@pytest.mark.parametrize(
    ("raw", "reason", "says"),
    [
        ("91110000600037341X", Reason.USCC_CHECK, "position 18 should be 'L'"),
        ("91110000600037342L", Reason.USCC_ORGANIZATION_CHECK, "position 17 should be '1'"),
        ("91110000600O37341L", Reason.USCC_CHARSET, "the letter O where a zero belongs"),
        ("310000400000001", Reason.USCC_LEGACY_REGISTRATION_NUMBER, "工商注册号"),
        ("60003734-1", Reason.USCC_LEGACY_ORGANIZATION_CODE, "组织机构代码"),
        ("9111000060003734", Reason.USCC_LENGTH, "18 characters"),
        ("Z1110000600037341L", Reason.USCC_CHARSET, "position 1"),
        ("B1110000600037341L", Reason.USCC_DEPARTMENT, "registering department"),
        ("97110000600037341L", Reason.USCC_CATEGORY, "position 2"),
        ("91990000600037341L", Reason.USCC_DIVISION, "GB/T 2260"),
        ("", Reason.USCC_MISSING, "empty"),
    ],
)
def test_bad_codes_are_rejected_with_a_reason_and_a_useful_message(raw: str, reason: Reason, says: str) -> None:
    with pytest.raises(InvalidSubjectCode) as raised:
        uscc.validate(raw)
    assert raised.value.reason == reason
    assert says in raised.value.message


def test_organization_code_check_follows_gb_11714() -> None:
    assert uscc.org_check_char("60003734") == "1"


def test_resident_id_numbers_are_validated_without_echoing_them() -> None:
    valid = "11010519491231002X"
    assert validate_ric(valid) == valid
    with pytest.raises(InvalidSubjectCode) as raised:
        validate_ric("110105194912310021")
    assert raised.value.reason == Reason.RIC_CHECK
    assert "110105" not in raised.value.message


def test_resident_ids_with_district_codes_newer_than_the_birth_date_are_accepted() -> None:
    # 310115 (浦东新区) dates from 1993; people born before carry it after re-registration.
    body = "31011519700101123"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    assert validate_ric(body + check) == body + check
