"""Deterministic sample data in the national 双公示 format, for any region.

The same seed gives the same rows, byte for byte, so the demo files shipped in
the package can be regenerated and checked. A chosen share of rows carries
exactly one deliberate defect (a wrong check character, a legacy code, an
impossible date, ...) and is expected to be quarantined; other rows are dirty in
harmless ways (full-width digits, spaces, every date form) and must be accepted.
Some subjects are drawn from a pool shared by every region, so that profiles
span regions as they do in the Yangtze River Delta.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from credex.adapters.profile.loader import load_spec
from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.domain.regions import region_name

Kind = Literal["penalty", "licence"]
HeaderStyle = Literal["codes", "names"]


def _national_columns(kind: str) -> tuple[tuple[str, str], ...]:
    """(field code, Chinese name) of each column of a national file, in order: the national profile's list.

    Read from the profile rather than restated, so the generator writes exactly the
    columns the profile reads, and a column added there appears in the samples.
    """
    spec = next(k for k in load_spec("national").kinds if k.kind == kind)
    return tuple((field.columns[0], field.columns[1]) for field in spec.fields.values())


PENALTY_COLUMNS = _national_columns("KIND_PENALTY")
LICENCE_COLUMNS = _national_columns("KIND_LICENCE")

_COMMON_DEFECTS = (
    "uscc.check",
    "uscc.charset",
    "uscc.legacy_registration_number",
    "field.missing",
    "date.invalid",
    "code.unknown",
    "date.future",
)
# Each defect is the reason code the national profile must give for it.
DEFECTS: dict[str, tuple[str, ...]] = {
    "penalty": (*_COMMON_DEFECTS, "amount.negative"),
    "licence": (*_COMMON_DEFECTS, "date.order"),
}
_DISTRICTS = {
    "31": ["310101", "310104", "310105", "310106", "310107", "310110", "310112", "310115", "310118"],
    "32": ["320102", "320105", "320205", "320506", "320509", "320583"],
    "33": ["330102", "330106", "330211", "330212", "330421", "330903"],
    "34": ["340102", "340104", "340202", "340302"],
    "43": ["430102", "430104", "430111", "430121"],
}
_SHORT = {"31": "沪", "32": "苏", "33": "浙", "34": "皖", "43": "湘"}
_CITY = {"31": "上海", "32": "南京", "33": "杭州", "34": "合肥", "43": "长沙"}
_DEPARTMENTS = (
    ("市场监督管理局", "市监"),
    ("生态环境局", "环"),
    ("应急管理局", "应急"),
    ("交通运输局", "交"),
    ("卫生健康委员会", "卫"),
    ("城市管理行政执法局", "城管"),
    ("住房和城乡建设管理委员会", "建"),
    ("文化和旅游局", "文旅"),
)
_WORDS = "锦程 恒信 瑞丰 华创 东方 新宇 佳美 德润 鸿运 星河 安泰 博远 中正 永盛 汇通 金桥 天成 润和 宏达 信诚".split()
_TRADES = "信息科技 贸易 餐饮管理 建筑工程 物流 医疗器械 食品 环保科技 文化传媒 机械制造 电子商务 物业管理".split()
_SUFFIXES = ("有限公司", "有限公司", "股份有限公司", "有限责任公司")
_SURNAMES = "王 李 张 刘 陈 杨 赵 黄 周 吴 徐 孙 胡 朱 高 林 何 郭 马 罗".split()
_GIVEN = "伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀英 华 平".split()
_VIOLATIONS = (
    ("经营超过保质期的食品", "《中华人民共和国食品安全法》第一百二十四条第一款第（二）项", "食品经营"),
    ("未按规定公示年度报告", "《企业信息公示暂行条例》第十八条", "信息公示"),
    ("超标排放大气污染物", "《中华人民共和国大气污染防治法》第九十九条第（二）项", "环境保护"),
    ("未落实安全生产主体责任", "《中华人民共和国安全生产法》第九十七条第（一）项", "安全生产"),
    ("无证从事道路运输经营", "《中华人民共和国道路运输条例》第六十三条", "道路运输"),
    ("发布虚假广告", "《中华人民共和国广告法》第五十五条第一款", "广告"),
    ("销售不合格产品", "《中华人民共和国产品质量法》第四十九条", "产品质量"),
)
_PENALTY_TYPES = (
    "警告",
    "罚款",
    "02",
    "01;02",
    "罚款;没收违法所得",
    "02；03",
    "没收违法所得、没收非法财物",
    "04",
    "通报批评",
    "暂扣或者吊销许可证、暂扣或者吊销执照",
    "12",
    "罚款;责令停产停业",
)
_LICENCES = (
    ("食品经营许可决定书", "食品经营许可证", "JY", "普通"),
    ("排污许可决定书", "排污许可证", "PW", "普通"),
    ("道路运输经营许可决定书", "道路运输经营许可证", "DY", "特许"),
    ("建筑业企业资质核准决定书", "建筑业企业资质证书", "JZ", "核准"),
    ("医疗器械经营备案凭证", "医疗器械经营许可证", "YL", "登记"),
)
_ORG_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
DEFAULT_ANCHOR = dt.date(2026, 11, 1)


@dataclass(frozen=True)
class Company:
    name: str
    uscc: str
    representative: str


@dataclass
class SynthSpec:
    region: str
    kind: Kind = "penalty"
    rows: int = 100
    seed: int = 1
    bad_share: float = 0.02
    shared_share: float = 0.15
    person_share: float = 0.02
    # Rows are decided in the year before this day: by default the day they are made, so that what they say
    # is in force stays in force for a node taking them in now (DEFAULT_ANCHOR: a fixed day, to reproduce a file).
    anchor: dt.date = field(default_factory=publicity_today)
    shared_pool: int = 40
    # Row ids start here, so two files of one region never reuse a document number.
    first_row: int = 0
    # Every row decided on this day instead of a day drawn before the anchor (timeliness is measured from it);
    # rows whose defect is their decision date keep the defect.
    decided_on: dt.date | None = None
    # Every row reported by this source unit (name, USCC) instead of its deciding authority.
    source_unit: tuple[str, str] | None = None


@dataclass
class SynthRow:
    values: dict[str, str]
    defect: str | None = None


@dataclass
class SynthSummary:
    rows: int = 0
    bad: int = 0
    defects: Counter[str] = field(default_factory=Counter)
    shared_subjects: set[str] = field(default_factory=set)


def _org8(rng: random.Random) -> str:
    return "".join(rng.choice(_ORG_ALPHABET) for _ in range(8))


def draw_company(rng: random.Random, province: str) -> Company:
    division = rng.choice(_DISTRICTS.get(province, [province + "0101"]))
    name = (
        f"{_CITY.get(province, '')}{rng.choice(_WORDS)}{rng.choice(_WORDS)}{rng.choice(_TRADES)}{rng.choice(_SUFFIXES)}"
    )
    return Company(name, uscc_codes.make("91", division, _org8(rng)), draw_person_name(rng))


def draw_person_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN)


def shared_pool(seed: int, size: int) -> list[Company]:
    """Companies every region's files may mention, the same for every region with one seed."""
    rng = random.Random(f"credex-shared-{seed}")
    provinces = sorted(_DISTRICTS)
    return [draw_company(rng, provinces[i % len(provinces)]) for i in range(size)]


def draw_resident_id(rng: random.Random, province: str) -> str:
    division = rng.choice(_DISTRICTS.get(province, [province + "0101"]))
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=rng.randrange(0, 40 * 365))
    body = f"{division}{birth:%Y%m%d}{rng.randrange(0, 1000):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def authority_of(province: str, region: str, index: int) -> tuple[str, str, str]:
    """(name, USCC, document abbreviation) of a department of the region; stable per index."""
    dept, abbr = _DEPARTMENTS[index % len(_DEPARTMENTS)]
    rng = random.Random(f"credex-authority-{region}-{index}")
    code = uscc_codes.make("11", region, _org8(rng))
    return f"{region_name(region)}{dept}", code, abbr


def _date_text(rng: random.Random, day: dt.date) -> str:
    form = rng.randrange(10)
    if form < 6:
        return day.isoformat()
    if form == 6:
        return f"{day.year}/{day.month}/{day.day}"
    if form == 7:
        return f"{day:%Y%m%d}"
    if form == 8:
        return f"{day.year}年{day.month}月{day.day}日"
    return str((day - dt.date(1899, 12, 30)).days)  # Excel serial


def _dirty_code(rng: random.Random, code: str) -> str:
    """Harmless corruption that normalization must undo."""
    form = rng.randrange(12)
    if form == 0:
        return "".join(chr(ord(c) + 0xFEE0) for c in code)  # full-width
    if form == 1:
        return code[:8] + " " + code[8:]
    if form == 2:
        return code.lower()
    return code


def generate(spec: SynthSpec) -> Iterator[SynthRow]:
    province = spec.region[:2]
    rng = random.Random(f"credex-synth-{spec.seed}-{spec.region}-{spec.kind}-{spec.first_row}")
    pool = shared_pool(spec.seed, spec.shared_pool)
    local = [draw_company(rng, province) for _ in range(max(10, spec.rows // 3))]
    short = _SHORT.get(province, "")
    for i in range(spec.first_row, spec.first_row + spec.rows):
        is_person = rng.random() < spec.person_share
        company = rng.choice(pool) if rng.random() < spec.shared_share else rng.choice(local)
        authority, authority_code, abbr = authority_of(province, spec.region, rng.randrange(len(_DEPARTMENTS)))
        decided = spec.anchor - dt.timedelta(days=rng.randrange(1, 330))
        decided = spec.decided_on or decided  # drawn either way, so the rest of the row stays the same
        unit = spec.source_unit or (authority, authority_code)
        draw = _Draw(rng, i, company, is_person, province, short, abbr, decided, authority, authority_code, unit)
        values = _penalty(draw) if spec.kind == "penalty" else _licence(draw)
        defects = DEFECTS[spec.kind]
        defect = defects[rng.randrange(len(defects))] if rng.random() < spec.bad_share else None
        if defect is not None:
            defect = _inject(defect, values, spec.kind, spec.anchor, is_person)
        yield SynthRow(values, defect)


@dataclass(frozen=True)
class _Draw:
    """What one row is about: drawn once, shared by the kind-specific column builders."""

    rng: random.Random
    index: int
    company: Company
    is_person: bool
    province: str
    short: str
    abbr: str
    decided: dt.date
    authority: str
    authority_code: str
    source_unit: tuple[str, str]


def _subject_columns(
    prefix: str, company: Company, is_person: bool, rng: random.Random, province: str
) -> dict[str, str]:
    if is_person:
        name = draw_person_name(rng)
        return {
            f"{prefix}_XDR_MC": name,
            f"{prefix}_XDR_LB": "自然人",
            f"{prefix}_XDR_ZJLX": "身份证",
            f"{prefix}_XDR_ZJHM": draw_resident_id(rng, province),
        }
    return {
        f"{prefix}_XDR_MC": company.name,
        f"{prefix}_XDR_LB": "法人及非法人组织",
        f"{prefix}_XDR_SHXYM": _dirty_code(rng, company.uscc),
        f"{prefix}_FRDB": company.representative,
    }


def _penalty(d: _Draw) -> dict[str, str]:
    violation, basis, area = d.rng.choice(_VIOLATIONS)
    types = d.rng.choice(_PENALTY_TYPES)
    fine = (
        d.rng.choice(["0.5", "1", "2.35", "5", "10", "1,250", "0.08", "30"]) if "罚款" in types or "02" in types else ""
    )
    values = _subject_columns("CF", d.company, d.is_person, d.rng, d.province)
    values.update(
        {
            "CF_WSH": f"{d.short}{d.abbr}罚〔{d.decided.year}〕{d.index + 1}号",
            "CF_WFXW": area,
            "CF_SY": f"当事人{violation}，经查证属实。",
            "CF_YJ": basis,
            "CF_CFLB": types,
            "CF_NR": f"{types.replace(';', '、').replace('；', '、')}" + (f"，罚款人民币{fine}万元" if fine else ""),
            "CF_NR_FK": fine,
            "CF_JDRQ": _date_text(d.rng, d.decided),
            "CF_GSJZQ": (d.decided + dt.timedelta(days=365)).isoformat() if d.rng.random() < 0.5 else "",
            "CF_CFJG": d.authority,
            "CF_CFJGDM": d.authority_code,
            "CF_SJLY": d.source_unit[0],
            "CF_SJLYDM": d.source_unit[1],
            "BZ": d.rng.choice(["", "", "无", "/"]),
        }
    )
    return values


def _licence(d: _Draw) -> dict[str, str]:
    document, certificate, prefix, category = d.rng.choice(_LICENCES)
    values = _subject_columns("XK", d.company, d.is_person, d.rng, d.province)
    values.update(
        {
            "XK_XKWS": document,
            "XK_WSH": f"{d.short}{d.abbr}许〔{d.decided.year}〕{d.index + 1}号",
            "XK_XKLB": category,
            "XK_XKZS": certificate,
            "XK_XKBH": f"{prefix}{d.province}{d.index + 1:08d}",
            "XK_NR": f"准予{certificate.removesuffix('证书').removesuffix('证')}",
            "XK_JDRQ": _date_text(d.rng, d.decided),
            "XK_YXQZ": d.decided.isoformat(),
            "XK_YXQZI": (d.decided + dt.timedelta(days=5 * 365)).isoformat(),
            "XK_XKJG": d.authority,
            "XK_XKJGDM": d.authority_code,
            "XK_ZT": "1",
            "XK_LYDW": d.source_unit[0],
            "XK_LYDWDM": d.source_unit[1],
        }
    )
    return values


def _inject(defect: str, values: dict[str, str], kind: Kind, anchor: dt.date, is_person: bool) -> str:
    """Spoil one thing in the row; return the reason code the profile must give."""
    p = "CF" if kind == "penalty" else "XK"
    code_column = f"{p}_XDR_SHXYM"
    if is_person and defect.startswith("uscc."):
        defect = "field.missing"  # a person has no USCC to spoil
    if defect == "uscc.check":
        code = uscc_codes.normalize(values[code_column])
        wrong = next(c for c in "0123456789" if c != code[17])
        values[code_column] = code[:17] + wrong
    elif defect == "uscc.charset":
        code = uscc_codes.normalize(values[code_column])
        values[code_column] = code[:10] + "O" + code[11:]
    elif defect == "uscc.legacy_registration_number":
        values[code_column] = "310000" + "".join(str((len(values[code_column]) * k) % 10) for k in range(9))
    elif defect == "field.missing":
        values[f"{p}_XDR_MC"] = ""
    elif defect == "date.invalid":
        values[f"{p}_JDRQ"] = f"{anchor.year}-13-45"
    elif defect == "amount.negative":
        values["CF_NR_FK"] = "-3"
    elif defect == "date.order":
        values["XK_YXQZI"] = "1999-01-01"
    elif defect == "code.unknown":
        values[f"{p}_XDR_LB" if kind == "licence" else "CF_CFLB"] = "罚没" if kind == "penalty" else "法人单位"
    elif defect == "date.future":
        values[f"{p}_JDRQ"] = (anchor + dt.timedelta(days=3650)).isoformat()
    return defect


def columns(kind: Kind) -> tuple[tuple[str, str], ...]:
    return PENALTY_COLUMNS if kind == "penalty" else LICENCE_COLUMNS


def write(
    path: Path,
    spec: SynthSpec,
    *,
    headers: HeaderStyle = "codes",
    encoding: str = "utf-8",
) -> SynthSummary:
    """Write a CSV (``encoding`` utf-8, utf-8-sig or gb18030) or an XLSX file by suffix."""
    cols = columns(spec.kind)
    header = [code if headers == "codes" else name for code, name in cols]
    summary = SynthSummary()
    pool_codes = {c.uscc for c in shared_pool(spec.seed, spec.shared_pool)}

    def rows() -> Iterator[list[str]]:
        for row in generate(spec):
            summary.rows += 1
            if row.defect:
                summary.bad += 1
                summary.defects[row.defect] += 1
            code = uscc_codes.normalize(row.values.get(columns(spec.kind)[2][0], ""))
            if code in pool_codes and not row.defect:
                summary.shared_subjects.add(code)
            yield [row.values.get(c, "") for c, _ in cols]

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".xlsx":
        _write_xlsx(path, header, rows(), "行政处罚" if spec.kind == "penalty" else "行政许可")
    else:
        with path.open("w", encoding=encoding, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows())
    return summary


def _write_xlsx(path: Path, header: list[str], rows: Iterator[list[str]], sheet: str) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(header)
    for row in rows:
        worksheet.append(row)
    workbook.save(path)
    pin_zip_timestamps(path)


def pin_zip_timestamps(path: Path) -> None:
    """openpyxl stamps the current time into the zip and docProps; pin both so output is reproducible."""
    import re
    import zipfile

    entries = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", b"2026-01-01T00:00:00Z", data)
            entries.append((info.filename, data))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


@dataclass(frozen=True)
class SampleFile:
    origin: str
    name: str
    spec: SynthSpec
    headers: HeaderStyle
    encoding: str


def _sample(origin: str, kind: Kind, rows: int, suffix: str, headers: HeaderStyle, encoding: str) -> SampleFile:
    plural = "penalties" if kind == "penalty" else "licences"
    return SampleFile(
        origin,
        f"{origin}-{plural}{suffix}",
        SynthSpec(region=origin, kind=kind, rows=rows, seed=2026, anchor=DEFAULT_ANCHOR),  # shipped: reproducible
        headers,
        encoding,
    )


# The demo's files: every encoding and header style the national profile accepts.
DEMO_SAMPLES: tuple[SampleFile, ...] = (
    _sample("310000", "penalty", 300, ".csv", "codes", "utf-8"),
    _sample("310000", "licence", 200, ".xlsx", "names", "utf-8"),
    _sample("320000", "penalty", 300, ".csv", "names", "gb18030"),
    _sample("320000", "licence", 200, ".csv", "codes", "utf-8-sig"),
    _sample("330000", "penalty", 300, ".csv", "names", "utf-8-sig"),
    _sample("330000", "licence", 200, ".xlsx", "codes", "utf-8"),
    _sample("340000", "penalty", 300, ".xlsx", "names", "utf-8"),
    _sample("340000", "licence", 200, ".csv", "names", "gb18030"),
)


def write_demo_samples(folder: Path) -> dict[str, SynthSummary]:
    """Regenerate the sample files shipped beside this module (``credex.adapters.samples``)."""
    return {
        sample.name: write(folder / sample.name, sample.spec, headers=sample.headers, encoding=sample.encoding)
        for sample in DEMO_SAMPLES
    }


def shipped_samples(origin: str) -> list[Path]:
    from importlib import resources

    folder = resources.files(__package__)
    return [Path(str(folder.joinpath(s.name))) for s in DEMO_SAMPLES if s.origin == origin]
