"""Normalization of raw platform values: dates, amounts, text and missing values."""

from __future__ import annotations

import datetime as dt

import pytest

from credex.domain.normalize import ValueRejected, clean_text, name_key, parse_date, parse_wanyuan
from credex.domain.publicity import PublicityRules, add_months, penalty_window
from credex.domain.reasons import Reason
from credex.v1 import record_pb2


@pytest.mark.parametrize(
    "raw",
    [
        "2021-03-19",
        "2021/3/19",
        "20210319",
        "2021年3月19日",
        "2021.03.19",
        "44274",
        44274,
        44274.0,
        "２０２１－０３－１９",
        "2021-03-19 00:00:00",
        dt.date(2021, 3, 19),
        dt.datetime(2021, 3, 19, 8, 30),
    ],
)
def test_every_date_form_seen_in_exports_is_read(raw: object) -> None:
    assert parse_date(raw) == dt.date(2021, 3, 19)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2021-13-45", Reason.DATE_INVALID),
        ("三月", Reason.DATE_FORMAT),
        ("1800-01-01", Reason.DATE_OUT_OF_RANGE),
        ("0", Reason.DATE_INVALID),
    ],
)
def test_impossible_dates_are_rejected(raw: str, reason: Reason) -> None:
    with pytest.raises(ValueRejected) as raised:
        parse_date(raw)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "yuan"),
    [
        ("1", "10000"),
        ("2.35", "23500"),
        ("1,250", "12500000"),
        ("0.000001", "0.01"),
        ("３万元", "30000"),
        ("0.5万", "5000"),
        (0.1, "1000"),
        ("", ""),
        ("无", ""),
    ],
)
def test_amounts_in_wanyuan_become_exact_yuan(raw: object, yuan: str) -> None:
    assert parse_wanyuan(raw) == yuan


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("-3", Reason.AMOUNT_NEGATIVE),
        ("abc", Reason.AMOUNT_FORMAT),
        ("1e20", Reason.AMOUNT_ABSURD),
        ("NaN", Reason.AMOUNT_FORMAT),
    ],
)
def test_bad_amounts_are_rejected_not_rounded(raw: str, reason: Reason) -> None:
    with pytest.raises(ValueRejected) as raised:
        parse_wanyuan(raw)
    assert raised.value.reason == reason


@pytest.mark.parametrize("missing", ["", "无", "/", "-", "  ", "／", "－", None])
def test_spellings_of_missing_are_empty(missing: object) -> None:
    assert clean_text(missing) == ""


def test_text_is_trimmed_collapsed_and_half_width() -> None:
    assert clean_text("  上海\u3000 锦程　ＡＢＣ１２３  ") == "上海 锦程 ABC123"


def test_control_characters_and_huge_fields_are_rejected() -> None:
    with pytest.raises(ValueRejected, match="control"):
        clean_text("a\x00b")
    with pytest.raises(ValueRejected, match="exceeds"):
        clean_text("x" * 5000)


def test_traditional_and_simplified_names_match() -> None:
    assert name_key("上海錦程資訊科技有限公司") == name_key("上海锦程资讯科技有限公司")


def test_month_arithmetic_clamps_to_the_month_end() -> None:
    assert add_months(dt.date(2024, 1, 31), 1) == dt.date(2024, 2, 29)
    assert add_months(dt.date(2024, 11, 30), 3) == dt.date(2025, 2, 28)


def test_publicity_windows_follow_the_national_bounds() -> None:
    rules = PublicityRules()
    decided = dt.date(2026, 5, 1)
    general = penalty_window(rules, decided, record_pb2.SEVERITY_GENERAL, None)
    assert (general.end, general.earliest_repair) == (dt.date(2027, 5, 1), dt.date(2026, 8, 1))
    serious = penalty_window(rules, decided, record_pb2.SEVERITY_SERIOUS, None)
    assert (serious.end, serious.earliest_repair) == (dt.date(2029, 5, 1), dt.date(2027, 5, 1))
    minor = penalty_window(rules, decided, record_pb2.SEVERITY_MINOR, None)
    assert minor.end == decided  # not published by default
    too_long = penalty_window(rules, decided, record_pb2.SEVERITY_GENERAL, dt.date(2030, 1, 1))
    assert (too_long.end, too_long.clamped) == (dt.date(2027, 5, 1), True)
    too_short = penalty_window(rules, decided, record_pb2.SEVERITY_GENERAL, dt.date(2026, 5, 2))
    assert (too_short.end, too_short.clamped) == (dt.date(2026, 8, 1), True)
    inside = penalty_window(rules, decided, record_pb2.SEVERITY_GENERAL, dt.date(2026, 12, 1))
    assert (inside.end, inside.clamped) == (dt.date(2026, 12, 1), False)
