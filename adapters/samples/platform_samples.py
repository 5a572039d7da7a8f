"""Deterministic sample data for every regional platform profile, in each platform's own shape.

The national 双公示 rows come from :mod:`credex.adapters.samples.synth`; this module adds
the regional shapes: Jiangsu's multi-sheet workbook, Anhui's JSON Lines,
Shanghai's 前置库 tables, and the JSON records Zhejiang's and Hunan's APIs page
through. Each sample carries a couple of deliberately bad records, so the
quarantine shows up too. ``write_platform_samples`` regenerates the files
shipped in ``samples/platforms``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credex.adapters.samples import synth
from credex.domain import uscc as uscc_codes

ANCHOR = synth.DEFAULT_ANCHOR
SEED = 2026

# The deliberately bad rows of each sample, as (record kind, reason code the profile must give):
# planted by the generators below at the lines marked with the platform's name.
PLANTED: dict[str, tuple[tuple[str, str], ...]] = {
    "jiangsu": (("KIND_BLACK_LIST", "uscc.check"),),  # a wrong USCC check character
    "anhui": (("KIND_CONTRACT", "code.unknown"),),  # a contract stage not in the code list
    "shanghai": (),
    "zhejiang": (("KIND_EVALUATION", "code.unknown"),),  # a grade that is no grade
    "hunan": (("KIND_PERSONAL_POINTS", "ric.check"),),  # a wrong ID-number check character
}


@dataclass(frozen=True)
class SampleSummary:
    """What a platform's sample holds, as its generator made it: tests take their expectations from here."""

    generated: Counter[str]  # rows per record kind (a record_pb2.Kind name)
    planted: tuple[tuple[str, str], ...]  # the deliberately bad rows: (kind, reason code)

    @property
    def rows(self) -> int:
        return sum(self.generated.values())

    @property
    def quarantined(self) -> int:
        return len(self.planted)

    @property
    def reasons(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.planted))

    def accepted(self, kind: str) -> int:
        """Rows of ``kind`` the profile must accept: all generated but the planted ones."""
        return self.generated[kind] - sum(1 for planted, _ in self.planted if planted == kind)


def summary(platform: str) -> SampleSummary:
    """The summary of ``platform``'s sample (jiangsu, anhui, shanghai, zhejiang, hunan), counted from the data."""
    kinds: Counter[str]
    if platform == "jiangsu":
        kinds = Counter({_SHEET_KINDS[sheet]: len(rows) - 1 for sheet, rows in jiangsu_sheets().items()})
    elif platform == "anhui":
        kinds = Counter(_ANHUI_KINDS[r["record_type"]] for r in anhui_records())
    elif platform == "shanghai":
        kinds = Counter({_TABLE_KINDS[table]: len(rows) for table, rows in shanghai_tables().items()})
    elif platform == "zhejiang":
        kinds = Counter(f"KIND_{r['type'].upper()}" for r in zhejiang_records())
    elif platform == "hunan":
        kinds = Counter(_HUNAN_KINDS[r["kind"]] for r in hunan_records())
    else:
        raise ValueError(f"no platform sample {platform!r}")
    return SampleSummary(kinds, PLANTED[platform])


_SHEET_KINDS = {
    "行政许可": "KIND_LICENCE",
    "行政处罚": "KIND_PENALTY",
    "黑名单": "KIND_BLACK_LIST",
    "红名单": "KIND_RED_LIST",
}
_ANHUI_KINDS = {
    "行政许可": "KIND_LICENCE",
    "行政处罚": "KIND_PENALTY",
    "信用承诺": "KIND_COMMITMENT",
    "合同履约": "KIND_CONTRACT",
}
_TABLE_KINDS = {
    "sh_xzxk": "KIND_LICENCE",
    "sh_xzcf": "KIND_PENALTY",
    "sh_sxmd": "KIND_BLACK_LIST",
    "sh_xycn": "KIND_COMMITMENT",
}
_HUNAN_KINDS = {
    "enterprise_penalty": "KIND_PENALTY",
    "personal_points": "KIND_PERSONAL_POINTS",
    "household_worker": "KIND_HOUSEHOLD_WORKER",
}


def _rng(name: str) -> random.Random:
    return random.Random(f"credex-platform-{name}-{SEED}")


def _authority(region: str, index: int) -> tuple[str, str]:
    """A department of ``region`` (a district reporting through its province, or the province)."""
    name, code, _ = synth.authority_of(region[:2], region, index)
    return name, code


def _day(rng: random.Random, back: int = 300) -> dt.date:
    return ANCHOR - dt.timedelta(days=rng.randrange(1, back))


def _national_rows(region: str, kind: synth.Kind, rows: int) -> list[dict[str, str]]:
    spec = synth.SynthSpec(
        region=region, kind=kind, rows=rows, seed=SEED, bad_share=0.0, person_share=0.0, anchor=ANCHOR
    )
    return [row.values for row in synth.generate(spec)]


# -- Jiangsu: one workbook, a sheet per kind ---------------------------------------------

BLACK_LIST_HEADER = (
    "主体名称",
    "主体类别",
    "统一社会信用代码",
    "认定文书号",
    "名单名称",
    "认定单位",
    "认定单位统一社会信用代码",
    "列入事由",
    "法律依据",
    "列入日期",
    "移出条件",
    "移出日期",
    "数据来源单位",
    "数据来源单位统一社会信用代码",
    "备注",
)
RED_LIST_HEADER = (
    "主体名称",
    "主体类别",
    "统一社会信用代码",
    "认定文书号",
    "荣誉名称",
    "认定单位",
    "认定单位统一社会信用代码",
    "列入事由",
    "认定日期",
    "有效期自",
    "有效期至",
    "数据来源单位",
    "数据来源单位统一社会信用代码",
)


def jiangsu_sheets() -> dict[str, list[list[str]]]:
    rng = _rng("jiangsu")
    region = "320000"
    sheets: dict[str, list[list[str]]] = {}
    for kind, sheet, columns in (
        ("licence", "行政许可", synth.LICENCE_COLUMNS),
        ("penalty", "行政处罚", synth.PENALTY_COLUMNS),
    ):
        rows = _national_rows(region, kind, 20)  # type: ignore[arg-type]
        sheets[sheet] = [[name for _, name in columns]] + [[r.get(code, "") for code, _ in columns] for r in rows]
    black = [list(BLACK_LIST_HEADER)]
    for i in range(12):
        company = synth.draw_company(rng, "32")
        unit, unit_code = _authority(region, i)
        listed = _day(rng)
        black.append(
            [
                company.name,
                "法人及非法人组织",
                company.uscc,
                f"苏信黑〔{listed.year}〕{i + 1}号",
                "严重失信主体名单",
                unit,
                unit_code,
                rng.choice(["拒不履行法定义务", "严重破坏市场公平竞争秩序", "拒不执行行政处罚决定"]),
                "《江苏省社会信用条例》第三十二条",
                listed.isoformat(),
                "履行法定义务满一年且未再发生失信行为",
                (listed + dt.timedelta(days=365)).isoformat() if i % 4 == 0 else "",
                unit,
                unit_code,
                "",
            ]
        )
    black[3][2] = black[3][2][:17] + ("0" if black[3][2][17] != "0" else "1")  # PLANTED["jiangsu"]
    red = [list(RED_LIST_HEADER)]
    for i in range(10):
        company = synth.draw_company(rng, "32")
        unit, unit_code = _authority(region, i + 3)
        awarded = _day(rng)
        red.append(
            [
                company.name,
                "法人及非法人组织",
                company.uscc,
                f"苏信红〔{awarded.year}〕{i + 1}号",
                rng.choice(["守合同重信用企业", "纳税信用A级纳税人", "诚信示范企业"]),
                unit,
                unit_code,
                "连续三年无失信记录",
                awarded.isoformat(),
                awarded.isoformat(),
                (awarded + dt.timedelta(days=730)).isoformat(),
                unit,
                unit_code,
            ]
        )
    sheets["黑名单"] = black
    sheets["红名单"] = red
    return sheets


# -- Anhui: JSON Lines, a record_type per line ----------------------------------------------


def anhui_records() -> list[dict[str, Any]]:
    rng = _rng("anhui")
    region = "340000"
    records: list[dict[str, Any]] = []
    for kind, label in (("licence", "行政许可"), ("penalty", "行政处罚")):
        for row in _national_rows(region, kind, 15):  # type: ignore[arg-type]
            records.append({"record_type": label, **{k: v for k, v in row.items() if v}})
    for i in range(12):
        company = synth.draw_company(rng, "34")
        unit, unit_code = _authority(region, i)
        promised = _day(rng)
        kept = rng.choice(["履约中", "已履约", "已履约", "未履约"])
        records.append(
            {
                "record_type": "信用承诺",
                "CN_XDR_MC": company.name,
                "CN_XDR_SHXYM": company.uscc,
                "CN_BH": f"皖诺〔{promised.year}〕{i + 1}号",
                "CN_LX": rng.choice(["告知承诺", "容缺受理型", "信用修复型"]),
                "CN_SX": "食品经营许可",
                "CN_NR": "本单位承诺所提交材料真实有效，按期补齐容缺材料",
                "CN_SLDW": unit,
                "CN_SLDWDM": unit_code,
                "CN_RQ": promised.isoformat(),
                "CN_LYQK": kept,
                "CN_LYRQ": (promised + dt.timedelta(days=30)).isoformat() if kept != "履约中" else "",
                "SJLY": unit,
                "SJLYDM": unit_code,
            }
        )
    for i in range(10):
        company = synth.draw_company(rng, "34")
        unit, unit_code = _authority(region, i + 2)
        signed = _day(rng)
        stage = rng.choice(["签订", "履行", "违约"])
        records.append(
            {
                "record_type": "合同履约",
                "HT_XDR_MC": company.name,
                "HT_XDR_SHXYM": company.uscc,
                "HT_BH": f"WH-CG-{signed.year}-{i + 1:04d}",
                "HT_MC": "政府采购服务合同",
                "HT_ZFMC": unit,
                "HT_ZFDM": unit_code,
                "HT_JE": rng.choice(["12.5", "48", "120.75"]),
                "HT_QDRQ": signed.isoformat(),
                "HT_XXRQ": (signed + dt.timedelta(days=5)).isoformat(),
                "HT_JD": stage,
                "HT_WYQK": "未按期交付" if stage == "违约" else "",
                "SJLY": unit,
                "SJLYDM": unit_code,
            }
        )
    records[-1]["HT_JD"] = "终止"  # PLANTED["anhui"]
    return records


# -- Shanghai: 前置库 tables, rows with update_time and id ----------------------------------

SHANGHAI_TABLES = ("sh_xzxk", "sh_xzcf", "sh_sxmd", "sh_xycn")


def shanghai_tables() -> dict[str, list[dict[str, Any]]]:
    rng = _rng("shanghai")
    region = "310000"
    district = "310105"  # 长宁区 reports through the city platform
    base = dt.datetime(2026, 10, 1, 8, 0, 0)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, kind in (("sh_xzxk", "licence"), ("sh_xzcf", "penalty")):
        rows = []
        for i, row in enumerate(_national_rows(region, kind, 20)):  # type: ignore[arg-type]
            rows.append(
                {k.lower(): v for k, v in row.items()} | {"id": i + 1, "update_time": base + dt.timedelta(minutes=i)}
            )
        tables[table] = rows
    black = []
    for i in range(10):
        company = synth.draw_company(rng, "31")
        unit, unit_code = _authority(district, i)
        listed = _day(rng)
        black.append(
            {
                "id": i + 1,
                "update_time": base + dt.timedelta(minutes=i),
                "hmd_xdr_mc": company.name,
                "hmd_xdr_shxym": company.uscc,
                "hmd_wsh": f"长信黑〔{listed.year}〕{i + 1}号",
                "hmd_mdmc": "严重失信主体名单",
                "hmd_rddw": unit,
                "hmd_rddwdm": unit_code,
                "hmd_lrsy": "拒不履行法定义务",
                "hmd_flyj": "《上海市社会信用条例》第三十条",
                "hmd_lrrq": listed.isoformat(),
                "hmd_yctj": "失信行为纠正满一年",
                "hmd_ycrq": "",
                "hmd_sjly": unit,
                "hmd_sjlydm": unit_code,
            }
        )
    tables["sh_sxmd"] = black
    commitments = []
    for i in range(10):
        company = synth.draw_company(rng, "31")
        unit, unit_code = _authority(district, i + 1)
        promised = _day(rng)
        commitments.append(
            {
                "id": i + 1,
                "update_time": base + dt.timedelta(minutes=i),
                "cn_xdr_mc": company.name,
                "cn_xdr_shxym": company.uscc,
                "cn_bh": f"长诺〔{promised.year}〕{i + 1}号",
                "cn_lx": "告知承诺",
                "cn_sx": "营业执照变更登记",
                "cn_nr": "承诺申请材料真实，逾期未履约愿承担相应责任",
                "cn_sldw": unit,
                "cn_sldwdm": unit_code,
                "cn_rq": promised.isoformat(),
                "cn_lyqk": "履约中",
                "cn_lyrq": "",
                "cn_lysm": "",
                "cn_sjly": unit,
                "cn_sjlydm": unit_code,
            }
        )
    tables["sh_xycn"] = commitments
    return tables


# -- Zhejiang and Hunan: JSON records their APIs page through ---------------------------------


def synth_unit_code(name: str) -> str:
    """A stable, valid USCC for a named body (courts are 11-coded 机关 here)."""
    rng = random.Random(f"credex-unit-{name}")
    return uscc_codes.make("11", "330903", "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8)))


def _unit(region: str, index: int) -> dict[str, str]:
    name, code = _authority(region, index)
    return {"name": name, "uscc": code}


def zhejiang_records() -> list[dict[str, Any]]:
    rng = _rng("zhejiang")
    region = "330903"  # 舟山市普陀区, reporting through the province
    records: list[dict[str, Any]] = []
    grades = ("优秀", "良好", "中等", "较差")
    for i in range(48):
        company = synth.draw_company(rng, "33")
        unit = _unit(region, i)
        decided = _day(rng)
        kind = (
            "penalty",
            "licence",
            "black_list",
            "red_list",
            "commitment",
            "evaluation",
            "authorization",
            "dishonest_debtor",
        )[i % 8]
        record: dict[str, Any] = {
            "id": f"zj-{i + 1:05d}",
            "type": kind,
            "subject": {"name": company.name, "uscc": company.uscc},
            "document_number": f"浙普{kind[:2].upper()}〔{decided.year}〕{i + 1}号",
            "decision_date": decided.isoformat(),
            "authority": unit,
            "source_unit": unit,
        }
        if kind == "penalty":
            record["penalty"] = {
                "types": ["警告", "罚款"],
                "content": "警告并处罚款",
                "basis": "《浙江省安全生产条例》第五十一条",
                "facts": "未按规定开展安全生产教育培训",
                "fine_wanyuan": "1.5",
            }
        elif kind == "licence":
            record["licence"] = {
                "document_name": "食品经营许可决定书",
                "category": "普通",
                "number": f"JY33{i:08d}",
                "content": "准予食品经营",
                "valid_from": decided.isoformat(),
                "valid_to": (decided + dt.timedelta(days=1825)).isoformat(),
            }
        elif kind in ("black_list", "red_list"):
            record["list"] = {
                "name": "严重失信主体名单" if kind == "black_list" else "诚信示范企业",
                "rule": "拒不履行法定义务" if kind == "black_list" else "诚信经营",
                "legal_basis": "《浙江省公共信用信息管理条例》第二十六条",
                "exit_conditions": "纠正失信行为满一年",
                "valid_to": (decided + dt.timedelta(days=730)).isoformat(),
            }
        elif kind == "commitment":
            record["commitment"] = {
                "type": "告知承诺",
                "matter": "建设工程施工许可",
                "content": "承诺按期补正材料",
                "fulfilment": rng.choice(["履约中", "已履约", "未履约"]),
            }
        elif kind == "dishonest_debtor":
            court = "舟山市普陀区人民法院"
            record["authority"] = {"name": court, "uscc": synth_unit_code(court)}
            record["case"] = {
                "number": f"（{decided.year}）浙0903执{i + 100}号",
                "court": court,
                "obligation": "支付货款及利息",
                "performance": "全部未履行",
                "circumstances": "有履行能力而拒不履行生效法律文书确定义务",
            }
        elif kind == "evaluation":
            record["evaluation"] = {
                "grade": rng.choice(grades),
                "period": str(decided.year),
                "score": f"{rng.uniform(55, 98):.1f}",
            }
        else:
            record["authorization"] = {
                "grantee": {"name": "浙江省金融综合服务平台", "uscc": uscc_codes.make("12", "330000", "MB1C7X9Q")},
                "scope": "行政许可;行政处罚;公共信用综合评价",
                "valid_from": decided.isoformat(),
                "valid_to": (decided + dt.timedelta(days=365)).isoformat(),
                "withdrawn": False,
            }
        records.append(record)
    records[5]["evaluation"]["grade"] = "优良"  # PLANTED["zhejiang"]
    return records


def zhejiang_penalties(count: int) -> list[dict[str, Any]]:
    """Any number of Zhejiang-shaped penalties, each a record of its own (for load and recovery tests)."""
    templates = [r for r in zhejiang_records() if r["type"] == "penalty"]
    records = []
    for i in range(count):
        record = copy.deepcopy(templates[i % len(templates)])
        record["id"] = f"zj-{i}"
        record["document_number"] = f"浙普罚〔2026〕{100000 + i}号"
        records.append(record)
    return records


def hunan_records() -> list[dict[str, Any]]:
    rng = _rng("hunan")
    region = "430111"  # 长沙市雨花区, 信用雨花
    records: list[dict[str, Any]] = []
    for i in range(36):
        unit = _unit(region, i)
        day = _day(rng)
        kind = ("enterprise_penalty", "personal_points", "household_worker")[i % 3]
        if kind == "enterprise_penalty":
            company = synth.draw_company(rng, "43")
            records.append(
                {
                    "serial": f"hn-{i + 1:05d}",
                    "kind": kind,
                    "enterprise": {"name": company.name, "uscc": company.uscc},
                    "document_number": f"雨市监罚〔{day.year}〕{i + 1}号",
                    "decision_date": day.isoformat(),
                    "authority": unit,
                    "source_unit": unit,
                    "penalty": {"types": ["警告"], "content": "警告", "basis": "《湖南省消费者权益保护条例》"},
                }
            )
            continue
        person = {"name": synth.draw_person_name(rng), "id_number": synth.draw_resident_id(rng, "43")}
        if kind == "personal_points":
            records.append(
                {
                    "serial": f"hn-{i + 1:05d}",
                    "kind": kind,
                    "person": person,
                    "assessed_on": day.isoformat(),
                    "authority": unit,
                    "source_unit": unit,
                    "points": {
                        "value": rng.randrange(600, 1000),
                        "level": rng.choice(["AAA", "AA", "A"]),
                        "period": f"{day.year}Q{(day.month - 1) // 3 + 1}",
                        "scheme": "信用雨花",
                    },
                }
            )
        else:
            records.append(
                {
                    "serial": f"hn-{i + 1:05d}",
                    "kind": kind,
                    "person": person,
                    "registration_number": f"YHJZ{day.year}{i:05d}",
                    "registered_on": day.isoformat(),
                    "authority": unit,
                    "source_unit": unit,
                    "work": {
                        "service_type": rng.choice(["育婴员", "养老护理员", "保洁员"]),
                        "agency": {
                            "name": "长沙雨花家政服务有限公司",
                            "uscc": uscc_codes.make("91", "430111", "MA4L8K2Q"),
                        },
                        "health_certificate": "有效",
                        "training": "已完成岗前培训",
                        "evaluation": "良好",
                    },
                }
            )
    records[4]["person"]["id_number"] = records[4]["person"]["id_number"][:17] + (
        "0" if records[4]["person"]["id_number"][17] != "0" else "1"
    )  # PLANTED["hunan"]: and the number is never stored
    return records


async def fill_penalty_table(conn: Any, table: str, rows: int, seed: int, first_row: int = 0) -> None:
    """A 前置库 staging table of national-format penalties (columns as lower-case field codes).

    For trying a table_poll feed locally, and for the tests and benchmarks that poll one.
    """
    spec = synth.SynthSpec(region="310000", rows=rows, seed=seed, bad_share=0.02, person_share=0.0, first_row=first_row)
    values = [r.values for r in synth.generate(spec)]
    columns = [code.lower() for code, _ in synth.PENALTY_COLUMNS]
    await conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, update_time timestamp NOT NULL, "
        + ", ".join(f"{c} text" for c in columns)
        + ")"
    )
    start = dt.datetime(2026, 11, 1)
    await conn.copy_records_to_table(
        table,
        records=[
            (i + 1, start + dt.timedelta(seconds=i), *(v.get(c.upper(), "") for c in columns))
            for i, v in enumerate(values)
        ],
        columns=["id", "update_time", *columns],
    )
    await conn.execute(f"CREATE INDEX ON {table} (update_time, id)")


def write_platform_samples(folder: Path) -> list[Path]:
    from openpyxl import Workbook

    folder.mkdir(parents=True, exist_ok=True)
    workbook = Workbook(write_only=True)
    for sheet, rows in jiangsu_sheets().items():
        worksheet = workbook.create_sheet(sheet)
        for row in rows:
            worksheet.append(row)
    jiangsu = folder / "jiangsu.xlsx"
    workbook.save(jiangsu)
    synth.pin_zip_timestamps(jiangsu)
    anhui = folder / "anhui.jsonl"
    anhui.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in anhui_records()), encoding="utf-8")
    shanghai = folder / "shanghai.json"
    shanghai.write_text(json.dumps(shanghai_tables(), ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    zhejiang = folder / "zhejiang.json"
    zhejiang.write_text(json.dumps(zhejiang_records(), ensure_ascii=False, indent=1), encoding="utf-8")
    hunan = folder / "hunan.json"
    hunan.write_text(json.dumps(hunan_records(), ensure_ascii=False, indent=1), encoding="utf-8")
    return [jiangsu, anhui, shanghai, zhejiang, hunan]
