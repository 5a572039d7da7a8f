"""A node killed in the middle of a file, a page sequence and a poll takes in every row exactly once.

The node runs as a real ``credex node run`` process with three feeds — a file
inbox, an HTTP API (a real server in this process) and 前置库 tables (a real
PostgreSQL database) — and is SIGKILLed again and again while they work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import signal
import sys
import uuid
from pathlib import Path

import asyncpg

from credex.adapters.samples import platform_samples, synth
from credex.adapters.samples.sample_api import PagedApi, serve
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.store.database import ensure_database

from .conftest import TestFederation

CREDEX = [sys.executable, "-m", "credex.node.cli"]


async def source_tables(postgres: EmbeddedPostgres, rows: int) -> str:
    url = postgres.uri(f"qzk_{uuid.uuid4().hex[:8]}")
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await platform_samples.fill_penalty_table(conn, "sh_xzcf", rows, seed=9, first_row=50_000)
    finally:
        await conn.close()
    return url


def write_config(federation: TestFederation, inbox: Path, api: str, source: str) -> Path:
    base = federation.layout.config_path("310000").read_text()
    feeds = f"""
[[feeds]]
name = "drop"
transport = "file_drop"
profile = "national"
inbox = "{inbox}"
settle_seconds = 0.2
poll_seconds = 0.2

[[feeds]]
name = "api"
transport = "http"
profile = "zhejiang"
url = "{api}"
page_size = 40
poll_seconds = 0.2

[[feeds]]
name = "qzk"
transport = "table_poll"
profile = "national"
dsn = "{source}"
tables = ["sh_xzcf"]
batch_size = 60
poll_seconds = 0.2
"""
    path = federation.layout.member_dir("310000") / "feeds.toml"
    path.write_text(base + feeds, encoding="utf-8")
    return path


async def test_killing_the_node_mid_file_mid_pages_and_mid_poll_takes_every_row_in_exactly_once(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> None:
    federation = TestFederation(tmp_path / "fed", ["310000", "320000"], postgres, broker)
    federation.prepare()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    big = tmp_path / "big.csv"
    # As of today: the node process judges decision dates by the real clock.
    spec = synth.SynthSpec(region="310000", rows=15000, bad_share=0.02, seed=5, anchor=dt.date.today())
    drop = synth.write(big, spec)
    records = platform_samples.zhejiang_penalties(1200)
    source = await source_tables(postgres, 1500)
    env = federation.node_env("310000", ingest={"parallel_from_bytes": 0})
    rng = random.Random(7)
    landed: list[set[str]] = []
    url = federation.database_url("310000")
    with serve(PagedApi(records)) as api:
        config = write_config(federation, inbox, api, source)
        big.rename(inbox / big.name)
        for run in range(8):
            log_path = tmp_path / f"node-{run}.log"
            with log_path.open("wb") as log:
                node = await asyncio.create_subprocess_exec(
                    *CREDEX, "node", "run", "--config", str(config), env=env, stdout=asyncio.subprocess.PIPE, stderr=log
                )
                assert node.stdout is not None
                assert b"ready" in await asyncio.wait_for(node.stdout.readline(), timeout=60)
                await asyncio.sleep(rng.uniform(0.5, 2.5))
                node.send_signal(signal.SIGKILL)
                await node.wait()
            landed.append(await where_the_kill_landed(url, log_path, len(records), 1500))
        node = await asyncio.create_subprocess_exec(
            *CREDEX,
            "node",
            "run",
            "--config",
            str(config),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=(tmp_path / "node-final.log").open("wb"),
        )
        try:
            done = await wait_until_done(url, inbox, len(records), 1500, timeout=180)
        finally:
            node.send_signal(signal.SIGTERM)
            await node.wait()
    # The kills really interrupted work in progress: each transport was cut off in the middle at least once.
    assert {"mid-file", "mid-pages", "mid-poll"} <= set().union(*landed), landed
    file_rows, api_rows, poll_rows, records_held = done
    assert file_rows == (drop.rows, drop.rows - drop.bad, drop.bad)
    assert api_rows[0] == len(records) and api_rows[0] == api_rows[1] + api_rows[2]
    assert poll_rows[0] == 1500 and poll_rows[0] == poll_rows[1] + poll_rows[2]
    # No row twice: every accepted row made exactly one new record, and nothing else did.
    assert records_held == file_rows[1] + api_rows[1] + poll_rows[1] == api_rows[3] + poll_rows[3] + file_rows[1]


async def where_the_kill_landed(url: str, node_log: Path, api_total: int, poll_total: int) -> set[str]:
    """What the kill cut off: a file begun but not committed, pages or polls partly taken in."""
    conn = await asyncpg.connect(url)
    try:
        files_done = int(await conn.fetchval("SELECT count(*) FROM ingest_files"))
        taken = {
            r["feed"]: int(r["rows_in"])
            for r in await conn.fetch("SELECT feed, sum(rows_in) AS rows_in FROM feed_batches GROUP BY feed")
        }
    finally:
        await conn.close()
    began_file = b"taking in big.csv" in await asyncio.to_thread(node_log.read_bytes)
    where = set()
    if began_file and not files_done:
        where.add("mid-file")
    if 0 < taken.get("api", 0) < api_total:
        where.add("mid-pages")
    if 0 < taken.get("qzk", 0) < poll_total:
        where.add("mid-poll")
    return where


async def wait_until_done(
    url: str, inbox: Path, api_total: int, poll_total: int, timeout: float
) -> tuple[tuple[int, int, int], tuple[int, int, int, int], tuple[int, int, int, int], int]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        conn = await asyncpg.connect(url)
        try:
            file_rows = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(rows_in), 0) AS rows_in,"
                " coalesce(sum(accepted), 0) AS accepted,"
                " coalesce(sum(quarantined), 0) AS quarantined FROM ingest_files"
            )
            assert file_rows is not None
            feeds = {
                r["feed"]: r
                for r in await conn.fetch(
                    "SELECT feed, sum(rows_in) AS rows_in, sum(accepted) AS accepted, sum(quarantined) AS quarantined,"
                    " sum(new_records) AS new FROM feed_batches GROUP BY feed"
                )
            }
            held = int(await conn.fetchval("SELECT count(*) FROM records"))
        finally:
            await conn.close()
        api = feeds.get("api")
        poll = feeds.get("qzk")
        finished = (
            file_rows["n"] == 1
            and await asyncio.to_thread((inbox / "done" / "big.csv").exists)
            and api is not None
            and api["rows_in"] >= api_total
            and poll is not None
            and poll["rows_in"] >= poll_total
        )
        if finished and api is not None and poll is not None:
            assert file_rows["n"] == 1, "the file was taken in more than once"
            return (
                (int(file_rows["rows_in"]), int(file_rows["accepted"]), int(file_rows["quarantined"])),
                (int(api["rows_in"]), int(api["accepted"]), int(api["quarantined"]), int(api["new"])),
                (int(poll["rows_in"]), int(poll["accepted"]), int(poll["quarantined"]), int(poll["new"])),
                held,
            )
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"feeds did not finish: file {dict(file_rows)}, feeds {[dict(f) for f in feeds.values()]}"
            )
        await asyncio.sleep(1)
