"""The catalogue of reason codes a rejected row carries (拒收原因代码表).

A row a profile cannot map becomes a rejection listing every problem found, each
under a reason code. The codes are stored with the quarantined row, counted in
ingest reports and written back to the unit that sent the row, so a code's text
never changes: :class:`Reason` is a :class:`~enum.StrEnum` whose value is the code
as stored, and a member compares and hashes equal to that text.

Each member also says how data quality counts it, so that the quality report
classifies by catalogue rather than by the spelling of a prefix:

- :attr:`Reason.dimension`: which of the plans' dimensions a problem counts against,
  completeness (全面性: something required is absent), accuracy (准确性: a value is
  present but wrong) or validity (有效性: a value or row is unusable as given);
- :attr:`Reason.wrong_code`: whether the problem makes the subject's 统一社会信用代码 a
  错码 (a code that fails its checks), counted in the 错码率;
- :attr:`Reason.meaning` (also the member's docstring): one line, in Chinese and
  English, of what it means.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class Dimension(StrEnum):
    """The quality dimensions a rejection counts against (the plans' fourth, 及时性, is measured, not rejected)."""

    COMPLETENESS = "completeness"  # 全面性
    ACCURACY = "accuracy"  # 准确性
    VALIDITY = "validity"  # 有效性


# How a reason counts: its dimension, and whether it makes a 错码.
_ABSENT = (Dimension.COMPLETENESS, False)
_WRONG = (Dimension.ACCURACY, False)
_WRONG_CODE = (Dimension.ACCURACY, True)
_UNUSABLE = (Dimension.VALIDITY, False)


class Reason(StrEnum):
    """A reason code of a rejected row: the stored code, its quality dimension, 错码 or not, and its meaning."""

    _value_: str
    dimension: Dimension
    wrong_code: bool
    meaning: str

    def __new__(cls, code: str, counts: tuple[Dimension, bool], meaning: str) -> Self:
        member = str.__new__(cls, code)
        member._value_ = code
        member.dimension, member.wrong_code = counts
        member.meaning = member.__doc__ = meaning
        return member

    @classmethod
    def known(cls, code: str) -> Reason | None:
        """The member stored as ``code``, or None for a code this version does not know (an older one, say)."""
        return _CATALOGUE.get(code)

    # 统一社会信用代码 (domain.uscc)
    USCC_MISSING = "uscc.missing", _ABSENT, "统一社会信用代码为空 — the subject's 统一社会信用代码 (USCC) is empty"
    USCC_LENGTH = "uscc.length", _WRONG_CODE, "统一社会信用代码不是18位 — the USCC does not have 18 characters"
    USCC_LEGACY_REGISTRATION_NUMBER = (
        "uscc.legacy_registration_number",
        _WRONG_CODE,
        "填写的是15位工商注册号 — a 15-digit business registration number given instead of the USCC",
    )
    USCC_LEGACY_ORGANIZATION_CODE = (
        "uscc.legacy_organization_code",
        _WRONG_CODE,
        "填写的是9位组织机构代码 — a 9-character organization code given instead of the USCC",
    )
    USCC_CHARSET = "uscc.charset", _WRONG_CODE, "统一社会信用代码含不允许的字符 — a character outside the USCC alphabet"
    USCC_DEPARTMENT = (
        "uscc.department",
        _WRONG_CODE,
        "第1位不是登记管理部门代码 — position 1 is not a registering department code",
    )
    USCC_CATEGORY = (
        "uscc.category",
        _WRONG_CODE,
        "第2位不是该部门的机构类别代码 — position 2 is not a category of the registering department",
    )
    USCC_DIVISION = (
        "uscc.division",
        _WRONG_CODE,
        "第3-8位不是行政区划代码 — positions 3-8 are not a GB/T 2260 division code",
    )
    USCC_ORGANIZATION_CHECK = (
        "uscc.organization_check",
        _WRONG_CODE,
        "第17位组织机构代码校验码错误 — position 17, the GB 11714 organization-code check, does not match",
    )
    USCC_CHECK = "uscc.check", _WRONG_CODE, "第18位校验码错误 — position 18, the check character, does not match"

    # 身份证号码 of natural persons (domain.persons)
    RIC_MISSING = "ric.missing", _ABSENT, "自然人缺少证件号码 — a natural person's ID number (证件号码) is empty"
    RIC_LENGTH = "ric.length", _WRONG, "证件号码不是18位 — the ID number does not have 18 characters"
    RIC_FORMAT = (
        "ric.format",
        _WRONG,
        "证件号码不是17位数字加一位数字或X — the ID number is not 17 digits and a digit or X",
    )
    RIC_COMPONENT = (
        "ric.component",
        _WRONG,
        "证件号码的地址码或出生日期不可能 — the ID number's division code or birth date is impossible",
    )
    RIC_CHECK = "ric.check", _WRONG, "证件号码校验码错误 — the ID number's check character does not match"
    PERSON_NO_PSEUDONYM_KEY = (
        "person.no_pseudonym_key",
        _UNUSABLE,
        "本节点无假名密钥，不能接收自然人 — this node has no pseudonym key, so it cannot take in natural persons",
    )

    # Any cell (domain.normalize, the mapper)
    FIELD_MISSING = "field.missing", _ABSENT, "必填项为空 — a required field is empty"
    FIELD_TOO_LONG = "field.too_long", _UNUSABLE, "内容超长 — a value longer than any field may be"
    FIELD_FORMULA = "field.formula", _UNUSABLE, "内容像电子表格公式 — a value that looks like a spreadsheet formula"
    FIELD_CONTROL = "field.control", _UNUSABLE, "内容含控制字符 — a value with control characters"

    # Dates (domain.normalize, the rules)
    DATE_INVALID = "date.invalid", _WRONG, "日期不存在 — not a calendar date, or not a valid Excel date serial"
    DATE_FORMAT = "date.format", _WRONG, "无法识别的日期格式 — not a date in any known form"
    DATE_OUT_OF_RANGE = "date.out_of_range", _WRONG, "日期超出1949年至2099年 — a date outside 1949-10-01..2099-12-31"
    DATE_FUTURE = "date.future", _WRONG, "决定日期晚于今天 — the decision date is after today"
    DATE_ORDER = "date.order", _WRONG, "截止日期早于起始日期 — an end date before the date it follows"

    # Amounts in 万元 and whole numbers (domain.normalize, the converters)
    AMOUNT_FORMAT = "amount.format", _WRONG, "金额不是数字 — not a finite amount in 万元"
    AMOUNT_NEGATIVE = "amount.negative", _WRONG, "金额为负数 — a negative amount"
    AMOUNT_ABSURD = "amount.absurd", _WRONG, "金额超过一亿万元 — an amount above 10^8 万元, a unit or typing error"
    NUMBER_FORMAT = "number.format", _WRONG, "不是整数 — not a whole number"
    NUMBER_ABSURD = "number.absurd", _WRONG, "数值超出范围 — a number beyond ±10^12"

    # Coded fields (the converters)
    CODE_UNKNOWN = (
        "code.unknown",
        _UNUSABLE,
        "代码不在代码表中 — a value not in the field's code list, or not yes or no",
    )

    # Market-supervision risk classes (domain.risk)
    RISK_SCHEME_UNKNOWN = (
        "risk.scheme_unknown",
        _UNUSABLE,
        "风险分类体系未知 — a risk class published under a scheme the node's list of schemes does not have",
    )
    RISK_CLASS_OUTSIDE_SCHEME = (
        "risk.class_outside_scheme",
        _WRONG,
        "风险等级不属于其分类体系 — a risk class that is not one of its scheme's classes (E under A–D)",
    )

    # Whole rows (adapters.tables, the mapper, the feeds)
    ROW_COLUMNS = "row.columns", _UNUSABLE, "该行列数与表头不符 — the row has more or fewer cells than the header"
    ROW_ENCODING = "row.encoding", _UNUSABLE, "该行含有不符合文件编码的字节 — bytes not valid in the file's encoding"
    ROW_CSV = "row.csv", _UNUSABLE, "该行不是合法的CSV — the row is not valid CSV"
    ROW_JSON = "row.json", _UNUSABLE, "该行不是JSON对象 — a line or item that is not a JSON object"
    ROW_KIND = "row.kind", _UNUSABLE, "无法确定记录类别 — the row fits none of the profile's record kinds"
    ROW_ENTRY_TOO_LARGE = (
        "row.entry_too_large",
        _UNUSABLE,
        "签名后的日志条目超过上限 — signed, the row's event would be longer than a log entry may be"
        " (65,535 bytes, less room for the record's later events), so no log could serve it",
    )


_CATALOGUE: dict[str, Reason] = {member.value: member for member in Reason}
