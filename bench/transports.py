"""Transports: rows/s read, parsed and mapped to records, per transport and format, without signing.

    python -m bench.transports [--rows 100000]

CSV, XLSX and JSON Lines files go through the same reader as ``credex ingest``;
the HTTP API is a real server paging JSON records; the 前置库 is a real
PostgreSQL table polled by (update_time, id). Beside each figure: the bare
parser's rate on the same input (csv module, calamine, json), measured in the
same run. Mapping includes building each record and serializing it once.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.common import line, run, services
from credex.adapters.http_pull import HttpSource
from credex.adapters.profile import MappingContext, Profile
from credex.adapters.samples import platform_samples, synth
from credex.adapters.samples.sample_api import PagedApi, serve
from credex.adapters.table_poll import TableSource, Watermark
from credex.adapters.tables import object_row
from credex.crypto.pseudonym import Pseudonymizer
from credex.node.feeds.mapping import Reader, RowMapper, map_rows, open_mapping
from credex.node.store.database import ensure_database

CONTEXT = MappingContext(origin="310000", pseudonymizer=Pseudonymizer(b"k" * 32))


def read_file(path: Path, profile: str) -> tuple[int, float]:
    """One core: the reader in this process."""
    started = time.perf_counter()
    reader = Reader(path, Profile.load(profile), CONTEXT, batch_size=2000)
    rows = 0
    while (batch := reader.next_batch()) is not None:
        rows += batch.rows
    return rows, time.perf_counter() - started


async def read_file_parallel(path: Path, profile: str) -> tuple[int, float]:
    """All cores: the worker processes ``credex ingest`` uses for large files (their start-up included)."""
    started = time.perf_counter()
    mapping = open_mapping(path, Profile.load(profile), CONTEXT, 2000, parallel_from_bytes=1)
    rows = 0
    try:
        while (batch := await mapping.next_batch()) is not None:
            rows += batch.rows
    finally:
        mapping.close()
    return rows, time.perf_counter() - started


def raw_csv(path: Path) -> float:
    started = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    return rows / (time.perf_counter() - started)


def raw_json_lines(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as handle:
        rows = sum(1 for raw in handle if json.loads(raw))
    return rows / (time.perf_counter() - started)


def raw_xlsx(path: Path) -> float:
    import python_calamine

    started = time.perf_counter()
    workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    rows = sum(sum(1 for _ in workbook.get_sheet_by_name(n).iter_rows()) - 1 for n in workbook.sheet_names)
    return rows / (time.perf_counter() - started)


def json_lines(path: Path, rows: int) -> None:
    spec = synth.SynthSpec(region="310000", rows=rows, seed=3, bad_share=0.02, person_share=0.0)
    with path.open("w", encoding="utf-8") as handle:
        for row in synth.generate(spec):
            handle.write(json.dumps({"record_type": "行政处罚", **row.values}, ensure_ascii=False) + "\n")


async def http_pull(records: list[dict[str, object]], page_size: int) -> tuple[int, float, float]:
    mapper = RowMapper(Profile.load("zhejiang"), CONTEXT)
    with serve(PagedApi(records)) as url:
        source = HttpSource(url, page_size=page_size)
        async with httpx.AsyncClient() as client:
            started = time.perf_counter()
            cursor, fetched = None, 0
            while True:
                page = await source.page(client, cursor)
                if not page.items:
                    break
                fetched += len(page.items)
                cursor = page.next_cursor
            raw = fetched / (time.perf_counter() - started)
            started = time.perf_counter()
            cursor, rows = None, 0
            while True:
                page = await source.page(client, cursor)
                if not page.items:
                    break
                batch = map_rows([object_row(item, str(i)) for i, item in enumerate(page.items)], "api", mapper)
                rows += batch.rows
                cursor = page.next_cursor
    return rows, time.perf_counter() - started, raw


async def table_poll(url: str, rows: int, batch: int) -> tuple[int, float, float]:
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await platform_samples.fill_penalty_table(conn, "sh_xzcf", rows, seed=4)
        source = TableSource("sh_xzcf")
        mapper = RowMapper(Profile.load("national"), CONTEXT)
        for mapping in (False, True):
            started = time.perf_counter()
            after, taken = Watermark.from_json(None), 0
            while found := await source.poll(conn, after, batch):
                if mapping:
                    map_rows([object_row(item, str(item["id"])) for item in found], "qzk", mapper)
                taken += len(found)
                after = source.watermark(found[-1])
            elapsed = time.perf_counter() - started
            if not mapping:
                raw = taken / elapsed
        return taken, elapsed, raw
    finally:
        await conn.close()


async def main(rows: int) -> None:
    async with services() as running:
        folder = running.root
        csv_file, xlsx_file, jsonl_file = folder / "p.csv", folder / "p.xlsx", folder / "p.jsonl"
        synth.write(csv_file, synth.SynthSpec(region="310000", rows=rows, seed=1, bad_share=0.02))
        synth.write(xlsx_file, synth.SynthSpec(region="310000", rows=rows // 4, seed=2, bad_share=0.02))
        json_lines(jsonl_file, rows)
        print(f"inputs: {rows:,} CSV rows, {rows // 4:,} XLSX rows, {rows:,} JSON Lines\n", flush=True)
        cores = os.cpu_count() or 1
        for name, path, profile, bare, bare_name in (
            ("CSV", csv_file, "national", raw_csv, "bare csv module"),
            ("XLSX", xlsx_file, "national", raw_xlsx, "bare calamine"),
            ("JSON Lines", jsonl_file, "anhui", raw_json_lines, "bare json.loads"),
        ):
            n, seconds = read_file(path, profile)
            line(f"{name} read + mapped, one core", n / seconds, "rows/s", bare(path), bare_name)
            n, seconds = await read_file_parallel(path, profile)
            line(f"{name} read + mapped, {cores} worker processes", n / seconds, "rows/s")
        records = platform_samples.zhejiang_penalties(rows // 5)
        n, seconds, raw = await http_pull(records, page_size=500)
        line("HTTP pages fetched + mapped", n / seconds, "rows/s", raw, "pages fetched only")
        n, seconds, raw = await table_poll(running.postgres.uri(f"qzk_{uuid.uuid4().hex[:6]}"), rows // 2, 1000)
        line("前置库 polled + mapped", n / seconds, "rows/s", raw, "polled only")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100000)
    run(main(parser.parse_args().rows))
