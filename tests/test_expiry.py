"""Expiry signed by the origin (credit-use.md, Repair 7): a daily job, idempotent, crash-safe, seen in every region.

Shanghai's node (310000) signs an EXPIRE for each of its own active records whose
publicity window ended before today in China Standard Time; Jiangsu and Zhejiang apply
the event like any other, so every region stops publishing on the same day. A record of
another origin is never expired by this node: its origin decides, and until then the
window itself still keeps it out of public views (the safety net).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Mapping

import asyncpg
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import CHINA, publicity_today
from credex.node.cli import app
from credex.node.ledger.appender import Change, Ledger
from credex.node.ledger.expiry import expire_due, next_run
from credex.node.runtime import Node
from credex.v1 import event_pb2, lookup_pb2, record_pb2

from .conftest import TestFederation, eventually
from .forgery import event_in

CREDEX = [sys.executable, "-m", "credex.node.cli"]
ACTIVE, EXPIRED = lookup_pb2.ENTRY_STATUS_ACTIVE, lookup_pb2.ENTRY_STATUS_EXPIRED


def penalty(origin: str, n: int, end: str) -> record_pb2.Record:
    decided = "2025-01-06"
    return record_pb2.Record(
        record_id=f"{origin}-CF-ex{n}",
        origin=origin,
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY,
            uscc=uscc_codes.make("91", origin, f"EX{n:06d}"),
            name=f"到期测试{n}有限公司",
        ),
        decision_date=decided,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=decided, end=end),
        penalty=record_pb2.PenaltyDetails(content="罚款 5000 元", severity=record_pb2.SEVERITY_GENERAL),
    )


async def append(node: Node, records: list[record_pb2.Record]) -> None:
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(r) for r in records])


async def statuses(node: Node, origin: str) -> dict[str, int]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, status FROM records WHERE origin = $1", origin)
    return {r["record_id"]: int(r["status"]) for r in rows}


def expired_metric() -> float:
    return REGISTRY.get_sample_value("credex_records_expired_total", {"origin": "310000"}) or 0.0


async def test_the_origin_expires_its_lapsed_records_in_batches_once_and_every_region_follows(
    federation: TestFederation,
) -> None:
    nodes = {origin: await federation.start_node(origin) for origin in ("310000", "320000", "330000")}
    shanghai = nodes["310000"]
    lapsed = [penalty("310000", n, yesterday()) for n in range(5)]
    await append(
        shanghai, [*lapsed, penalty("310000", 5, "2099-12-31"), penalty("310000", 6, publicity_today().isoformat())]
    )
    await append(nodes["320000"], [penalty("320000", 1, yesterday())])
    await eventually(lambda: _holds(shanghai, "320000", 1))
    for peer in ("320000", "330000"):
        await eventually(lambda peer=peer: _holds(nodes[peer], "310000", 7))
    before = expired_metric()

    assert shanghai.pool is not None
    run = await expire_due(shanghai.pool, shanghai.ledger, batch_size=2)
    assert (run.today, run.expired, run.batches) == (publicity_today(), 5, 3)
    assert expired_metric() - before == 5
    again = await expire_due(shanghai.pool, shanghai.ledger, batch_size=2)
    assert (again.expired, again.batches) == (0, 0)

    expected = {r.record_id: EXPIRED for r in lapsed} | {"310000-CF-ex5": ACTIVE, "310000-CF-ex6": ACTIVE}
    assert await statuses(shanghai, "310000") == expected
    for peer in ("320000", "330000"):
        await eventually(lambda peer=peer: _statuses_are(nodes[peer], expected))
        pool = nodes[peer].pool
        assert pool is not None
        async with pool.acquire() as conn:
            envelopes = await conn.fetch(
                "SELECT envelope FROM events WHERE origin = '310000' AND event_type = $1", event_pb2.EVENT_TYPE_EXPIRE
            )
        events = [event_in(bytes(r["envelope"])) for r in envelopes]
        assert sorted(e.record_id for e in events) == sorted(expected.keys() - {"310000-CF-ex5", "310000-CF-ex6"})
        assert {e.standing for e in events} == {event_pb2.STANDING_EXPIRED}
    # Jiangsu's lapsed record is Jiangsu's to expire: Shanghai signed nothing for it.
    assert await statuses(shanghai, "320000") == {"320000-CF-ex1": ACTIVE}


async def _holds(node: Node, origin: str, n: int) -> bool:
    return len(await statuses(node, origin)) == n


async def _statuses_are(node: Node, expected: Mapping[str, int]) -> bool:
    return await statuses(node, "310000") == expected


def test_the_daily_run_is_at_the_configured_hour_china_time() -> None:
    # 2026-11-22 00:30 UTC is 08:30 in Shanghai: 01:00 has passed today, 09:00 has not.
    now = dt.datetime(2026, 11, 22, 0, 30, tzinfo=dt.UTC)
    assert next_run(now, 1) == dt.datetime(2026, 11, 23, 1, 0, tzinfo=CHINA)
    assert next_run(now, 9) == dt.datetime(2026, 11, 22, 9, 0, tzinfo=CHINA)
    # 16:30 UTC on the 21st is already the 22nd in Shanghai: the day windows are judged on.
    assert publicity_today(dt.datetime(2026, 11, 21, 16, 30, tzinfo=dt.UTC)) == dt.date(2026, 11, 22)


def expiry_task_running() -> bool:
    return any(task.get_name() == "310000:expiry" and not task.done() for task in asyncio.all_tasks())


async def test_the_supervised_job_expires_what_is_due_when_the_node_starts_and_can_be_turned_off(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")  # tests run with expiry off
    assert not expiry_task_running()
    await append(node, [penalty("310000", n, yesterday()) for n in range(3)])
    await federation.stop_node("310000")

    node = await federation.start_node("310000", expiry={"enabled": True})  # the default: at 01:00 and at start
    assert expiry_task_running()
    await eventually(lambda: _statuses_are(node, {f"310000-CF-ex{n}": EXPIRED for n in range(3)}))


def credex_expire(federation: TestFederation, *args: str) -> dict[str, object]:
    env = {"CREDEX_DATABASE__URL": federation.database_url("310000")}
    config = str(federation.layout.config_path("310000"))
    result = CliRunner().invoke(app, ["expire", "--config", config, "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


async def test_credex_expire_lists_what_is_due_on_a_dry_run_and_signs_it_when_asked(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")  # tests run with expiry off
    await append(node, [penalty("310000", 1, yesterday()), penalty("310000", 2, "2099-12-31")])

    dry = await asyncio.to_thread(credex_expire, federation, "--dry-run")
    assert (dry["expired"], dry["due"], dry["today"]) == (0, ["310000-CF-ex1"], publicity_today().isoformat())
    assert await statuses(node, "310000") == {"310000-CF-ex1": ACTIVE, "310000-CF-ex2": ACTIVE}

    done = await asyncio.to_thread(credex_expire, federation)
    assert (done["expired"], done["batches"]) == (1, 1)
    assert await statuses(node, "310000") == {"310000-CF-ex1": EXPIRED, "310000-CF-ex2": ACTIVE}
    assert (await asyncio.to_thread(credex_expire, federation))["expired"] == 0


async def log_is_whole(url: str) -> tuple[int, int]:
    """The origin's log has no half state: dense seqs up to the head, one EXPIRE per expired record,
    every record at its latest event. Returns (events, records expired)."""
    conn = await asyncpg.connect(url)
    try:
        head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = '310000'")
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM events WHERE origin = '310000' ORDER BY seq")]
        assert seqs == list(range(1, head + 1))
        per_record = await conn.fetch(
            "SELECT r.record_id, r.status, r.seq, count(e.*) FILTER (WHERE e.event_type = $1) AS expires,"
            " max(e.seq) AS latest FROM records r JOIN events e USING (record_id)"
            " GROUP BY r.record_id, r.status, r.seq",  # records is a view: no key to group its columns by
            event_pb2.EVENT_TYPE_EXPIRE,
        )
        for row in per_record:
            assert row["seq"] == row["latest"]
            assert row["expires"] == (1 if row["status"] == EXPIRED else 0), dict(row)
        return len(seqs), sum(1 for row in per_record if row["status"] == EXPIRED)
    finally:
        await conn.close()


async def test_an_expiry_run_killed_mid_way_leaves_no_half_state_and_the_next_run_finishes(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")  # tests run with expiry off
    total = 600
    await append(node, [penalty("310000", n, yesterday()) for n in range(total)])
    url = federation.database_url("310000")
    # Mid-way by construction, not by timing: a record half-way through the run's order is locked, so the
    # run commits the batches before it and then waits inside the batch that writes it, where it is killed.
    blocker = sorted(f"310000-CF-ex{n}" for n in range(total))[total // 2]
    holder = await asyncpg.connect(url)
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT 1 FROM records WHERE record_id = $1 FOR UPDATE", blocker)
    env = {**os.environ, "CREDEX_DATABASE__URL": url, "CREDEX_EXPIRY__BATCH_SIZE": "1"}
    process = await asyncio.create_subprocess_exec(
        *CREDEX,
        "expire",
        "--config",
        str(federation.layout.config_path("310000")),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: _run_waits_on_lock(url), timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()
        await held.rollback()
        await holder.close()
    events, expired = await log_is_whole(url)
    assert 0 < expired < total and (await statuses(node, "310000"))[blocker] == ACTIVE
    assert events == total + expired

    assert node.pool is not None
    finished = await expire_due(node.pool, node.ledger, batch_size=50)  # waits out the killed run's open batch
    assert finished.expired == total - expired
    assert await log_is_whole(url) == (2 * total, total)
    assert (await expire_due(node.pool, node.ledger, batch_size=50)).expired == 0


async def test_two_replicas_expiring_at_once_sign_one_expire_per_record(federation: TestFederation) -> None:
    """Two replicas of one origin (one database, one key) whose daily runs start together."""
    node = await federation.start_node("310000")  # tests run with expiry off
    assert node.pool is not None
    total = 120
    await append(node, [penalty("310000", n, yesterday()) for n in range(total)])
    replica = Ledger(node.ledger.origin, node.ledger.key)
    runs = await asyncio.gather(
        expire_due(node.pool, node.ledger, batch_size=7), expire_due(node.pool, replica, batch_size=7)
    )
    assert sum(run.expired for run in runs) == total
    assert await log_is_whole(federation.database_url("310000")) == (2 * total, total)


async def _run_waits_on_lock(url: str) -> bool:
    """Whether a session of this database waits for a lock: the run, at the locked record.

    Asked on a connection of its own: inside the holder's transaction the activity view would be a snapshot.
    """
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await conn.close()


def yesterday() -> str:
    """The day before the one expiry judges by, read when the test runs (a run may pass midnight in China)."""
    return (publicity_today() - dt.timedelta(days=1)).isoformat()
