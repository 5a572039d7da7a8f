"""Taking in platform files: every row counted, files idempotent, broken files leave nothing behind.

The sample rows are generated as of ``AS_OF`` and mapped as of the same day, so
what counts as a future decision never depends on when the suite runs.
``CREDEX_TEST_AS_OF=2041-06-01 pytest tests/test_ingest.py`` runs it as of
another day, to show that nothing on the way reads the real clock.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openpyxl import Workbook
from prometheus_client import REGISTRY

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.node.embedded import EmbeddedPostgres
from credex.node.feeds import FileReport, IngestError, ingest_file
from credex.node.runtime import Node
from credex.v1 import event_pb2

from .conftest import TestFederation

NATIONAL = Profile.load("national")
AS_OF = dt.date.fromisoformat(os.environ.get("CREDEX_TEST_AS_OF", synth.DEFAULT_ANCHOR.isoformat()))


def shanghai(**spec: object) -> synth.SynthSpec:
    """Shanghai penalties (by default) generated as of ``AS_OF``."""
    return synth.SynthSpec(region="310000", anchor=AS_OF, **spec)  # type: ignore[arg-type]


async def ingest(node: Node, *paths: Path) -> list[FileReport]:
    """The node takes the files in through the national profile, judging rows as of ``AS_OF``."""
    assert node.pool is not None
    context = dataclasses.replace(node.mapping_context(), today=AS_OF)
    return [await ingest_file(node.pool, node.ledger, NATIONAL, context, path) for path in paths]


@pytest.fixture
async def node(tmp_path: Path, postgres: EmbeddedPostgres) -> AsyncIterator[Node]:
    """A Shanghai node with its database and no bus: ingest only."""
    federation = TestFederation(tmp_path / "fed", ["310000"], postgres, broker=None)  # type: ignore[arg-type]
    federation.prepare()
    running = Node(federation.config("310000", database={"url": federation.database_url("310000")}))
    await running.start(serve=False, exchange=False)
    yield running
    await running.stop()


async def event_count(node: Node) -> int:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


@pytest.mark.parametrize(
    ("suffix", "encoding", "headers", "kind"),
    [
        (".csv", "utf-8", "codes", "penalty"),
        (".csv", "utf-8-sig", "names", "penalty"),
        (".csv", "gb18030", "names", "licence"),
        (".csv", "gb18030", "codes", "penalty"),
        (".xlsx", "utf-8", "names", "licence"),
        (".xlsx", "utf-8", "codes", "penalty"),
    ],
)
async def test_every_row_is_accepted_or_quarantined_with_the_reason_of_its_defect(
    node: Node, tmp_path: Path, suffix: str, encoding: str, headers: synth.HeaderStyle, kind: synth.Kind
) -> None:
    path = tmp_path / f"sample{suffix}"
    spec = shanghai(kind=kind, rows=400, bad_share=0.1, seed=7)
    summary = synth.write(path, spec, headers=headers, encoding=encoding)
    [report] = await ingest(node, path)
    assert report.rows_in == summary.rows == spec.rows
    assert report.rows_in == report.accepted + report.quarantined
    assert report.quarantined == summary.bad > 0
    assert dict(report.reasons) == dict(summary.defects)
    assert report.new == report.accepted == await event_count(node)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM quarantine") == summary.bad
        assert await conn.fetchval("SELECT count(*) FROM records") == report.accepted


async def test_taking_in_the_same_file_twice_changes_nothing(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "penalties.csv"
    synth.write(path, shanghai(rows=200, bad_share=0.05))
    [first] = await ingest(node, path)
    events = await event_count(node)
    [again] = await ingest(node, path)
    assert again.already_taken
    assert (again.rows_in, again.accepted, again.quarantined) == (first.rows_in, first.accepted, first.quarantined)
    assert await event_count(node) == events


async def test_the_same_rows_in_another_encoding_are_unchanged_records_not_duplicates(
    node: Node, tmp_path: Path
) -> None:
    spec = shanghai(rows=150, bad_share=0.0)
    utf8, gbk = tmp_path / "a.csv", tmp_path / "b.csv"
    synth.write(utf8, spec, headers="codes", encoding="utf-8")
    synth.write(gbk, spec, headers="names", encoding="gb18030")
    [first] = await ingest(node, utf8)
    [second] = await ingest(node, gbk)
    assert not second.already_taken
    assert (second.new, second.corrected, second.unchanged) == (0, 0, first.accepted)
    assert await event_count(node) == first.new


async def test_a_changed_row_becomes_one_correction_event(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    synth.write(path, shanghai(rows=30, bad_share=0.0))
    [first] = await ingest(node, path)
    rows = list(csv.reader(path.open(encoding="utf-8")))
    header = rows[0]
    rows[5][header.index("CF_NR")] = "更正后的处罚内容"
    corrected = tmp_path / "v2.csv"
    with corrected.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    [second] = await ingest(node, corrected)
    assert (second.new, second.corrected, second.unchanged) == (0, 1, first.accepted - 1)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT event_type, seq FROM events ORDER BY seq DESC LIMIT 1")
    assert row is not None
    assert (row["event_type"], row["seq"]) == (event_pb2.EVENT_TYPE_CORRECT, first.new + 1)


async def _nothing_applied(node: Node) -> None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        for table in ("events", "records", "quarantine", "ingest_files"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_a_damaged_workbook_gives_an_error_naming_the_file_and_applies_nothing(
    node: Node, tmp_path: Path
) -> None:
    good = tmp_path / "good.xlsx"
    synth.write(good, shanghai(rows=50))
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(IngestError, match=r"damaged\.xlsx"):
        await ingest(node, damaged)
    await _nothing_applied(node)


def two_sheets(tmp_path: Path) -> Path:
    """A workbook whose first sheet is good penalties and whose second fits no record kind."""
    source = tmp_path / "rows.csv"
    synth.write(source, shanghai(rows=40, bad_share=0.0))
    rows = list(csv.reader(source.open(encoding="utf-8")))
    workbook = Workbook()
    first = workbook.active
    assert first is not None
    for row in rows:
        first.append(row)
    second = workbook.create_sheet("其他")
    second.append(["列一", "列二"])
    second.append(["a", "b"])
    path = tmp_path / "two-sheets.xlsx"
    workbook.save(path)
    return path


async def test_a_file_whose_second_sheet_does_not_fit_is_rolled_back_whole(node: Node, tmp_path: Path) -> None:
    path = two_sheets(tmp_path)
    with pytest.raises(IngestError, match=r"two-sheets\.xlsx.*matches no record kind"):
        await ingest(node, path)
    await _nothing_applied(node)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("noise.csv", bytes(range(256)) * 50, "matches no record kind"),
        ("tiny-noise.csv", b"\xff\xfe\x00garbage\x81", "neither UTF-8 nor GB18030"),
        ("header-only.csv", b"CF_WSH,CF_XDR_MC\n", "required columns missing"),
        ("unrelated.csv", b"name,age\nzhang,3\n", "matches no record kind"),
        ("table.ods", b"whatever", "unsupported file type"),
        ("not-a-workbook.xlsx", b"PK\x03\x04 broken zip", "not a readable XLSX"),
    ],
)
async def test_unreadable_files_are_refused_with_a_clear_error(
    node: Node, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message) as raised:
        await ingest(node, path)
    assert name in str(raised.value)
    await _nothing_applied(node)


async def test_a_missing_file_is_named_in_the_error(node: Node, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"nowhere\.csv"):
        await ingest(node, tmp_path / "nowhere.csv")


async def test_rows_with_bytes_outside_the_encoding_are_quarantined_one_by_one(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    spec = shanghai(rows=30, bad_share=0.0)
    synth.write(path, spec, encoding="gb18030")
    lines = path.read_bytes().split(b"\r\n")
    lines[3] = lines[3].replace(b",", b",\x81\x20", 1)  # an incomplete GB18030 sequence
    path.write_bytes(b"\r\n".join(lines))
    [report] = await ingest(node, path)
    assert (report.rows_in, report.accepted, report.quarantined) == (spec.rows, spec.rows - 1, 1)
    assert report.reasons == {"row.encoding": 1}


def rows_counted(outcome: str) -> float:
    """The node's ``credex_ingest_rows`` counter, as a Prometheus scrape would read it."""
    return REGISTRY.get_sample_value("credex_ingest_rows_total", {"origin": "310000", "outcome": outcome}) or 0.0


async def test_rows_taken_in_are_counted_in_the_metrics_and_a_rolled_back_file_counts_nothing(
    node: Node, tmp_path: Path
) -> None:
    path = tmp_path / "counted.csv"
    summary = synth.write(path, shanghai(rows=60, bad_share=0.1, seed=3))
    before = rows_counted("accepted"), rows_counted("quarantined")
    [report] = await ingest(node, path)
    assert (rows_counted("accepted") - before[0], rows_counted("quarantined") - before[1]) == (
        summary.rows - summary.bad,
        summary.bad,
    )
    assert report.quarantined == summary.bad
    counted = rows_counted("accepted"), rows_counted("quarantined")
    with pytest.raises(IngestError):  # its first sheet was mapped and appended before the second failed
        await ingest(node, two_sheets(tmp_path))
    assert (rows_counted("accepted"), rows_counted("quarantined")) == counted


async def test_a_record_changed_in_consecutive_batches_is_judged_against_its_newest_content(
    node: Node, tmp_path: Path
) -> None:
    """Batch N+1 is decided while batch N is still being stored: it must still see batch N's content."""
    path = tmp_path / "v1.csv"
    synth.write(path, shanghai(rows=12, bad_share=0.0))
    rows = list(csv.reader(path.open(encoding="utf-8")))
    header, original = rows[0], rows[5]
    changed = list(original)
    changed[header.index("CF_NR")] = "更正后的处罚内容"
    # One row a batch: the changed row, the same again, the original back, the same again.
    again = tmp_path / "again.csv"
    with again.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([*rows, changed, changed, original, original])
    assert node.pool is not None
    context = dataclasses.replace(node.mapping_context(), today=AS_OF)
    report = await ingest_file(node.pool, node.ledger, NATIONAL, context, again, batch_size=1)
    assert (report.new, report.corrected, report.unchanged) == (12, 2, 2)
    async with node.pool.acquire() as conn:
        events = await conn.fetch("SELECT seq, event_type, record_id FROM events ORDER BY seq")
        record = await conn.fetchrow("SELECT record_id, seq FROM records WHERE seq = 14")
    assert [e["seq"] for e in events] == list(range(1, 15))
    assert [e["event_type"] for e in events[12:]] == [event_pb2.EVENT_TYPE_CORRECT] * 2
    assert record is not None and record["record_id"] == events[13]["record_id"] == events[12]["record_id"]
