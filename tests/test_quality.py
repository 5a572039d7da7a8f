"""Data quality per source unit: the four dimensions, the 双公示 rates, 错码 and 重码, and reports back to units."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.domain import uscc as uscc_codes
from credex.domain.reasons import Reason
from credex.domain.workdays import is_workday, working_days_between
from credex.node.channels import open_channel
from credex.node.embedded import EmbeddedPostgres
from credex.node.quality import compute, is_wrong_code, problem_rows
from credex.node.runtime import Node
from credex.v1 import quality_pb2, quality_pb2_grpc

from .conftest import TestFederation

NATIONAL = Profile.load("national")
UNIT_A = ("上海市市场监督管理局", uscc_codes.make("11", "310000", "MA1AAAAA"))
UNIT_B = ("上海市长宁区生态环境局", uscc_codes.make("11", "310105", "MB2BBBBB"))


def test_working_days_follow_the_official_calendar_with_its_swapped_days() -> None:
    # National Day 2026: 1-7 October off; plain Monday-Friday counting would say 7.
    assert working_days_between(dt.date(2026, 9, 30), dt.date(2026, 10, 9)) == (2, True)
    # 2026-10-10 is a Saturday worked in exchange.
    assert working_days_between(dt.date(2026, 10, 9), dt.date(2026, 10, 10)) == (1, True)
    days, official = working_days_between(dt.date(2099, 1, 1), dt.date(2099, 1, 8))
    assert (days, official) == (5, False)


@settings(max_examples=300, deadline=None)
@given(
    start=st.dates(dt.date(2015, 1, 1), dt.date(2101, 12, 31)),
    span=st.integers(-5, 800),
)
def test_working_days_over_any_span_match_counting_day_by_day(start: dt.date, span: int) -> None:
    end = start + dt.timedelta(days=span)
    days = [start + dt.timedelta(days=i) for i in range(1, span + 1)]
    flags = [is_workday(day) for day in days]
    expected = (sum(working for working, _ in flags), all(known for _, known in flags))
    assert working_days_between(start, end) == expected


def unit_file(
    path: Path, rows: int, unit: tuple[str, str], decided: dt.date, seed: int, bad: float
) -> synth.SynthSummary:
    """Penalties reported by ``unit``, all decided on ``decided`` (but for rows whose defect is the date).

    Generated as of today: timeliness is measured against when the node takes them in.
    """
    spec = synth.SynthSpec(
        region="310000",
        rows=rows,
        seed=seed,
        bad_share=bad,
        person_share=0.0,
        first_row=seed * 1000,
        anchor=dt.date.today(),
        decided_on=decided,
        source_unit=unit,
    )
    return synth.write(path, spec)


@pytest.fixture
async def node(tmp_path: Path, postgres: EmbeddedPostgres) -> AsyncIterator[Node]:
    federation = TestFederation(tmp_path / "fed", ["310000"], postgres, broker=None)  # type: ignore[arg-type]
    federation.prepare()
    running = Node(federation.config("310000", database={"url": federation.database_url("310000")}))
    await running.start(serve=False, exchange=False)
    yield running
    await running.stop()


async def test_rates_per_source_unit_add_up_to_what_was_taken_in(node: Node, tmp_path: Path) -> None:
    today = dt.date.today()
    a = unit_file(tmp_path / "a.csv", 200, UNIT_A, today - dt.timedelta(days=1), seed=1, bad=0.1)
    b = unit_file(tmp_path / "b.csv", 100, UNIT_B, today - dt.timedelta(days=90), seed=2, bad=0.0)
    await node.ingest([tmp_path / "a.csv", tmp_path / "b.csv"], NATIONAL)
    assert node.pool is not None
    units = {u.unit_uscc: u for u in await compute(node.pool, "310000")}
    first, second = units[UNIT_A[1]], units[UNIT_B[1]]
    assert (first.reported, first.quarantined) == (200, a.bad)
    assert (second.reported, second.quarantined, second.compliance_rate) == (100, 0, 1.0)
    assert first.compliance_rate == pytest.approx((200 - a.bad) / 200)
    wrong = sum(n for d, n in a.defects.items() if is_wrong_code(d))
    assert first.wrong_code_rate == pytest.approx(wrong / 200)
    assert first.completeness == pytest.approx((200 - a.defects[Reason.FIELD_MISSING]) / 200)
    assert first.timeliness_rate == 1.0  # decided yesterday, taken in today
    assert second.timeliness_rate == 0.0  # ninety days late
    assert b.rows == 100


async def test_one_code_under_two_names_is_a_duplicate_but_a_traditional_spelling_is_not(
    node: Node, tmp_path: Path
) -> None:
    path = tmp_path / "dup.csv"
    unit_file(path, 6, UNIT_A, dt.date.today() - dt.timedelta(days=2), seed=3, bad=0.0)
    lines = list(csv.reader(path.open(encoding="utf-8")))
    header = lines[0]
    code, name = header.index("CF_XDR_SHXYM"), header.index("CF_XDR_MC")
    shared = uscc_codes.make("91", "310105", "DUPL1CAT")
    for line, subject_name in zip(
        lines[1:4], ["上海锦程信息科技有限公司", "上海錦程信息科技有限公司", "上海恒信贸易有限公司"], strict=True
    ):
        line[code], line[name] = shared, subject_name
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(lines)
    await node.ingest([path], NATIONAL)
    assert node.pool is not None
    [unit] = await compute(node.pool, "310000")
    assert unit.duplicate_codes == {shared}  # 锦程 and 錦程 are one name; 恒信 is another
    assert unit.duplicate_code_rate == pytest.approx(1 / len(unit.codes))


async def test_the_report_writes_each_unit_its_problem_rows_and_serves_dashboards(
    federation: TestFederation, tmp_path: Path
) -> None:
    import asyncio

    served = await federation.start_node("310000")
    unit_file(tmp_path / "a.csv", 80, UNIT_A, dt.date.today(), seed=4, bad=0.2)
    lines = list(csv.reader((tmp_path / "a.csv").open(encoding="utf-8")))
    lines[1][lines[0].index("CF_XDR_MC")] = '=HYPERLINK("http://evil")'
    lines[1][lines[0].index("CF_XDR_SHXYM")] = "bad-code"
    with (tmp_path / "a.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(lines)
    [report] = await served.ingest([tmp_path / "a.csv"], NATIONAL)
    out = tmp_path / "reports"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "credex.node.cli",
        "quality",
        "report",
        "--config",
        str(federation.layout.config_path("310000")),
        "--out",
        str(out),
        env={"CREDEX_DATABASE__URL": federation.database_url("310000"), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert UNIT_A[1] in output and "合规率" in output
    rows = list(csv.DictReader((out / f"{UNIT_A[1]}.csv").open(encoding="utf-8-sig")))
    assert len(rows) == report.quarantined
    assert all(r["reasons"] and r["locator"].startswith("line") for r in rows)
    assert any(v.startswith("'=HYPERLINK") for r in rows for v in r.values()), "formula cells are neutralized"

    ca, cert, key = federation.layout.client_tls()
    async with open_channel(f"127.0.0.1:{served.port}", ca=ca, cert=cert, key=key) as channel:
        dashboard = await quality_pb2_grpc.QualityServiceStub(channel).GetQualityReport(
            quality_pb2.GetQualityReportRequest(unit_uscc=UNIT_A[1])
        )
    [unit] = dashboard.units
    assert (unit.reported, unit.quarantined, dashboard.deadline_working_days) == (80, report.quarantined, 7)
    assert unit.HasField("compliance_rate") and not unit.HasField("reporting_rate")
    peer_tls = federation.layout.member_dir("320000") / "tls"
    async with open_channel(
        f"127.0.0.1:{served.port}", ca=ca, cert=peer_tls / "node.crt", key=peer_tls / "node.key"
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await quality_pb2_grpc.QualityServiceStub(channel).GetQualityReport(quality_pb2.GetQualityReportRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rows_a_unit_sends_twice_in_another_encoding_count_once(node: Node, tmp_path: Path) -> None:
    sent = unit_file(tmp_path / "a.csv", 120, UNIT_A, dt.date.today(), seed=4, bad=0.2)
    text = (tmp_path / "a.csv").read_text(encoding="utf-8")
    (tmp_path / "a-gb18030.csv").write_bytes(text.encode("gb18030"))
    (tmp_path / "a-bom.csv").write_bytes(text.encode("utf-8-sig"))
    await node.ingest([tmp_path / "a-gb18030.csv", tmp_path / "a-bom.csv"], NATIONAL)
    assert node.pool is not None
    [unit] = await compute(node.pool, "310000")
    assert (unit.reported, unit.quarantined) == (120, sent.bad)
    assert unit.compliance_rate == pytest.approx((120 - sent.bad) / 120)
    assert len(await problem_rows(node.pool, UNIT_A[1])) == sent.bad
