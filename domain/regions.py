"""GB/T 2260 administrative division codes the federation deals with."""

from __future__ import annotations

# Province-level prefixes of GB/T 2260, plus "10", which central registrations use.
_PROVINCE_PREFIXES = frozenset(
    "10 11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)

REGIONS: dict[str, str] = {
    "310000": "上海市",
    "320000": "江苏省",
    "330000": "浙江省",
    "340000": "安徽省",
    "430000": "湖南省",
    "310105": "上海市长宁区",
    "310118": "上海市青浦区",
    "330903": "舟山市普陀区",
    "330211": "宁波市镇海区",
    "430111": "长沙市雨花区",
    "320509": "苏州市吴江区",
    "330421": "嘉兴市嘉善县",
}


def is_plausible_division(code: str) -> bool:
    """Six digits under a real province-level prefix; finer levels are not enumerated here."""
    return len(code) == 6 and code.isdigit() and code[:2] in _PROVINCE_PREFIXES


def is_origin_code(code: str) -> bool:
    """An origin is a division code; a province node ends in 0000, a district node need not."""
    return is_plausible_division(code) and code != "000000"


def region_name(code: str) -> str:
    return REGIONS.get(code, code)


def within(code: str, region: str) -> bool:
    """``code`` lies in ``region``: a province (xx0000) holds its cities and districts, a city its districts."""
    if region.endswith("0000"):
        return code[:2] == region[:2]
    if region.endswith("00"):
        return code[:4] == region[:4]
    return code == region
