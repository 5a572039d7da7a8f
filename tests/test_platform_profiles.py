"""Every regional platform's profile takes its sample in through a running node, over its own transport.

Jiangsu and Anhui drop files into the node's inbox; Shanghai's 前置库 is real
PostgreSQL tables the node polls; Zhejiang's and Hunan's APIs are a real HTTP
server paging JSON. Each test reads the records back over gRPC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from credex.adapters.samples import platform_samples
from credex.adapters.samples.sample_api import PagedApi, serve
from credex.domain.uscc import USCC
from credex.node.channels import open_channel
from credex.node.embedded import EmbeddedPostgres
from credex.node.runtime import Node
from credex.node.store.database import ensure_database
from credex.v1 import event_pb2, lookup_pb2, lookup_pb2_grpc, record_pb2

from .conftest import TestFederation, eventually
from .test_bus_confidentiality import everything_on_the_bus

SAMPLES = Path(__file__).resolve().parent.parent / "adapters" / "samples" / "platforms"


def feed(name: str, transport: str, profile: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "transport": transport, "profile": profile, "poll_seconds": 0.3, **settings}


async def records_of(node: Node, kind: int) -> list[record_pb2.Record]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record FROM records WHERE origin = $1 AND kind = $2", node.origin, kind)
    return [record_pb2.Record.FromString(r["record"]) for r in rows]


async def assert_kinds_taken_in(node: Node, sample: platform_samples.SampleSummary) -> None:
    """Every record kind of the sample is held, as many as the generator made minus the planted bad rows."""
    for kind in sample.generated:
        held = await records_of(node, record_pb2.Kind.Value(kind))
        assert len(held) == sample.accepted(kind), f"{kind}: {len(held)} held, {sample.accepted(kind)} expected"


async def counted(node: Node, table: str) -> dict[str, int]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, coalesce(sum(rows_in), 0) AS rows_in, coalesce(sum(accepted), 0) AS accepted,"
            f" coalesce(sum(quarantined), 0) AS quarantined FROM {table}"
        )
    assert row is not None
    return dict(row)


async def profile_over_grpc(federation: TestFederation, node: Node, uscc: str) -> list[lookup_pb2.ProfileEntry]:
    ca, cert, key = federation.layout.client_tls()
    async with open_channel(f"127.0.0.1:{node.port}", ca=ca, cert=cert, key=key) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=uscc, purpose="profile round trip")
        )
    return list(profile.entries)


async def test_jiangsu_workbook_dropped_in_the_inbox_is_taken_in_sheet_by_sheet(
    federation: TestFederation, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    node = await federation.start_node(
        "320000", feeds=[feed("jiangsu-drop", "file_drop", "jiangsu", inbox=str(inbox), settle_seconds=0.2)]
    )
    shutil.copy(SAMPLES / "jiangsu.xlsx", inbox / "jiangsu.xlsx")
    report_file = inbox / "done" / "jiangsu.xlsx.report.json"
    await eventually(lambda: _exists(report_file), timeout=30)
    report = json.loads(report_file.read_text())
    sample = platform_samples.summary("jiangsu")
    assert report["rows_in"] == report["accepted"] + report["quarantined"] == sample.rows
    assert report["reasons"] == sample.reasons
    await assert_kinds_taken_in(node, sample)
    black = await records_of(node, record_pb2.KIND_BLACK_LIST)
    listed = black[0]
    entries = await profile_over_grpc(federation, node, listed.subject.uscc)
    assert any(e.record.kind == record_pb2.KIND_BLACK_LIST and e.record.black_list.exit_conditions for e in entries)


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def test_anhui_json_lines_carry_commitments_and_contract_performance(
    federation: TestFederation, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    node = await federation.start_node(
        "330000", feeds=[feed("anhui-drop", "file_drop", "anhui", inbox=str(inbox), settle_seconds=0.2)]
    )
    # Anhui's origin in this federation is played by 330000's node: profiles are not tied to a code.
    shutil.copy(SAMPLES / "anhui.jsonl", inbox / "anhui.jsonl")
    await eventually(lambda: _exists(inbox / "done" / "anhui.jsonl.report.json"), timeout=30)
    await assert_kinds_taken_in(node, platform_samples.summary("anhui"))
    commitments = await records_of(node, record_pb2.KIND_COMMITMENT)
    contracts = await records_of(node, record_pb2.KIND_CONTRACT)
    assert {c.commitment.fulfilment for c in commitments} <= {
        record_pb2.FULFILMENT_PENDING,
        record_pb2.FULFILMENT_KEPT,
        record_pb2.FULFILMENT_BROKEN,
    }
    breach = next(c for c in contracts if c.contract.stage == record_pb2.CONTRACT_STAGE_BREACH)
    entries = await profile_over_grpc(federation, node, breach.subject.uscc)
    assert any(e.record.contract.breach for e in entries)


async def source_database(postgres: EmbeddedPostgres) -> str:
    """Shanghai's 前置库: the sample tables in a database of their own."""
    url = postgres.uri(f"qzk_{uuid.uuid4().hex[:8]}")
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        for table, rows in json.loads((SAMPLES / "shanghai.json").read_text()).items():
            columns = [c for c in rows[0] if c not in ("id", "update_time")]
            await conn.execute(
                f"CREATE TABLE {table} (id bigint PRIMARY KEY, update_time timestamp NOT NULL, "
                + ", ".join(f"{c} text" for c in columns)
                + ")"
            )
            await conn.copy_records_to_table(
                table,
                records=[
                    (r["id"], dt.datetime.fromisoformat(r["update_time"]), *(r[c] for c in columns)) for r in rows
                ],
                columns=["id", "update_time", *columns],
            )
    finally:
        await conn.close()
    return url


async def test_shanghai_qianzhiku_is_polled_and_an_updated_row_becomes_a_correction(
    federation: TestFederation, postgres: EmbeddedPostgres
) -> None:
    source = await source_database(postgres)
    node = await federation.start_node(
        "310000",
        feeds=[
            feed(
                "shanghai-qzk",
                "table_poll",
                "shanghai",
                dsn=source,
                tables=list(platform_samples.SHANGHAI_TABLES),
                batch_size=7,
            )
        ],
    )
    sample = platform_samples.summary("shanghai")
    await eventually(lambda: _balanced(node, sample.rows), timeout=40)
    await assert_kinds_taken_in(node, sample)
    black = await records_of(node, record_pb2.KIND_BLACK_LIST)
    assert all(USCC(b.source_unit.uscc).division == "310105" for b in black)  # 长宁区 as source unit

    conn = await asyncpg.connect(source)
    try:
        await conn.execute(
            "UPDATE sh_sxmd SET hmd_ycrq = $1, update_time = now() + interval '1 day' WHERE id = 3",
            "2026-11-15",
        )
    finally:
        await conn.close()
    corrected = await eventually(lambda: _event_of_type(node, event_pb2.EVENT_TYPE_CORRECT), timeout=30)
    record = record_pb2.Record.FromString(corrected)
    assert record.black_list.removed_on == "2026-11-15" and record.publicity.end == "2026-11-15"


async def _balanced(node: Node, rows: int) -> bool:
    totals = await counted(node, "feed_batches")
    return bool(totals["rows_in"] >= rows and totals["rows_in"] == totals["accepted"] + totals["quarantined"])


async def _event_of_type(node: Node, event_type: int) -> bytes | None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT r.record FROM events e JOIN records r USING (record_id) WHERE e.event_type = $1 LIMIT 1", event_type
        )
    return bytes(row["record"]) if row else None


async def test_zhejiang_api_is_paged_through_despite_failures_and_grades_come_back(
    federation: TestFederation,
) -> None:
    records = platform_samples.zhejiang_records()
    api = PagedApi(records, fail_every=3)
    with serve(api) as url:
        node = await federation.start_node(
            "330000", feeds=[feed("zhejiang-api", "http", "zhejiang", url=url, page_size=10, attempts=6)]
        )
        await eventually(lambda: _balanced(node, len(records)), timeout=40)
    assert api.failures > 0, "the server never failed: retries were not exercised"
    totals = await counted(node, "feed_batches")
    sample = platform_samples.summary("zhejiang")
    assert (totals["rows_in"], totals["quarantined"]) == (sample.rows, sample.quarantined)
    await assert_kinds_taken_in(node, sample)
    grades = await records_of(node, record_pb2.KIND_EVALUATION)
    assert {g.evaluation.grade_as_published for g in grades} <= {"优秀", "良好", "中等", "较差"}
    entries = await profile_over_grpc(federation, node, grades[0].subject.uscc)
    assert any(e.record.evaluation.grade != record_pb2.GRADE_UNSPECIFIED for e in entries)
    debtors = await records_of(node, record_pb2.KIND_DISHONEST_DEBTOR)
    assert debtors and all(d.dishonest_debtor.court and d.category == record_pb2.CATEGORY_ENFORCEMENT for d in debtors)
    authorizations = await records_of(node, record_pb2.KIND_AUTHORIZATION)
    assert authorizations and all(a.sharing_level == record_pb2.SHARING_LEVEL_RESTRICTED for a in authorizations)
    # A government office does not see authorizations (restricted to the financing platforms' channel).
    hidden = await profile_over_grpc(federation, node, authorizations[0].subject.uscc)
    assert all(e.record.kind != record_pb2.KIND_AUTHORIZATION for e in hidden)


async def test_hunan_natural_persons_come_in_under_pseudonyms_only(federation: TestFederation, caplog: Any) -> None:
    records = platform_samples.hunan_records()
    numbers = {r["person"]["id_number"] for r in records if "person" in r}
    with serve(PagedApi(records)) as url:
        node = await federation.start_node("320000", feeds=[feed("hunan-api", "http", "hunan", url=url, page_size=8)])
        peer = await federation.start_node("310000")
        await eventually(lambda: _balanced(node, len(records)), timeout=40)
    sample = platform_samples.summary("hunan")  # one person's ID number fails its check
    await assert_kinds_taken_in(node, sample)
    points = await records_of(node, record_pb2.KIND_PERSONAL_POINTS)
    assert all(p.subject.person_pseudonym.startswith("psn:") and not p.subject.uscc for p in points)
    await eventually(lambda: _holds(peer, "320000", sample.rows - sample.quarantined), timeout=30)
    ca, cert, key = federation.layout.client_tls()
    async with open_channel(f"127.0.0.1:{peer.port}", ca=ca, cert=cert, key=key) as channel:
        answer = await lookup_pb2_grpc.LookupServiceStub(channel).GetRecord(
            lookup_pb2.GetRecordRequest(record_id=points[0].record_id, purpose="profile round trip")
        )
    assert answer.entry.record.personal_points.points == points[0].personal_points.points
    await assert_nowhere(numbers, [node, peer], federation, caplog)


async def _holds(node: Node, origin: str, count: int) -> bool:
    return (await node.status()).records_by_origin.get(origin, 0) >= count


async def assert_nowhere(secrets: set[str], nodes: list[Node], federation: TestFederation, caplog: Any) -> None:
    """No ID number in any table of any node, in the logs, or on the broker."""

    for node in nodes:
        assert node.pool is not None
        async with node.pool.acquire() as conn:
            tables = [
                r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
            for table in tables:
                dumps = [await conn.fetchval(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t")]
                for column in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND data_type = 'bytea'",
                    table,
                ):  # bytea prints as hex in a row's text; read it as bytes too (protobuf strings are plain UTF-8)
                    name = column["column_name"]
                    dumps.append(
                        await conn.fetchval(
                            f"SELECT coalesce(string_agg(encode({name}, 'escape'), ''), '') FROM {table}"
                        )
                    )
                for number in secrets:
                    assert all(number not in dump for dump in dumps), f"an ID number is in table {table}"
    for number in secrets:
        assert number not in caplog.text
    seen = await everything_on_the_bus(federation.broker.bootstrap_servers)  # to each partition's end
    for _, _, value, headers in seen:
        blob = (value or b"") + b"".join(headers.values())
        for number in secrets:
            assert number.encode() not in blob, "an ID number went out on Kafka"
    assert seen
