"""Revocation at the source and temporary hiding, across regions (credit-use.md, Repair 8 and 9).

Shanghai's node (310000) is the origin; Jiangsu (320000) and Zhejiang (330000) hold
copies. A decision taken at the origin — by an operator's ``credex revoke`` / ``hide`` /
``unhide``, or by the platform's own 公示状态 in a file — is one signed event that every
region applies: public callers and checks stop seeing the record everywhere, peers keep
it with its standing and the reason.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner, Result

from credex.adapters.profile import Profile
from credex.adapters.samples import platform_samples, synth
from credex.domain import uscc as uscc_codes
from credex.node.cli import app
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import check_pb2, check_pb2_grpc, event_pb2, lookup_pb2, lookup_pb2_grpc, record_pb2

from .callers import NATIONAL, PUBLIC, client_channel, government_channel, peer_channel
from .conftest import TestFederation, eventually
from .forgery import event_in

ORIGINS = ("310000", "320000", "330000")
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
ACTIVE, REVOKED, HIDDEN, EXPIRED = (
    lookup_pb2.ENTRY_STATUS_ACTIVE,
    lookup_pb2.ENTRY_STATUS_REVOKED,
    lookup_pb2.ENTRY_STATUS_HIDDEN,
    lookup_pb2.ENTRY_STATUS_EXPIRED,
)
DECIDED = (dt.date.today() - dt.timedelta(days=100)).isoformat()
UNIT = uscc_codes.make("11", "310000", "HCG00001")  # a procurement office


def subject(n: int) -> str:
    return uscc_codes.make("91", "310105", f"RK{n:06d}")


def black_list(n: int) -> record_pb2.Record:
    """A Shanghai serious-dishonesty entry, public, in force until 2099: a hit in every procurement check."""
    return record_pb2.Record(
        record_id=f"310000-HMD-rv{n}",
        origin="310000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject(n), name=f"上海撤销测试{n}有限公司"),
        decision_date=DECIDED,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=DECIDED, end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(
            list_name="严重失信主体名单", identifying_unit=record_pb2.Authority(name="上海市发展和改革委员会")
        ),
    )


@dataclass
class Regions:
    federation: TestFederation
    nodes: dict[str, Node]

    @property
    def origin(self) -> Node:
        return self.nodes["310000"]


@pytest.fixture
async def regions(federation: TestFederation) -> AsyncIterator[Regions]:
    nodes = {origin: await federation.start_node(origin) for origin in ORIGINS}
    shanghai = nodes["310000"]
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn, conn.transaction():
        await shanghai.ledger.append(conn, [Change.of(black_list(n)) for n in (1, 2, 3)])
    for origin in ("320000", "330000"):
        await eventually(lambda origin=origin: standings(nodes[origin], [f"310000-HMD-rv{n}" for n in (1, 2, 3)]))
    yield Regions(federation, nodes)


async def standings(node: Node, record_ids: list[str]) -> dict[str, int] | None:
    """Where each record stands in ``node``'s store; None until it holds them all."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, status FROM records WHERE record_id = ANY($1::text[])", record_ids)
    held = {r["record_id"]: int(r["status"]) for r in rows}
    return held if len(held) == len(record_ids) else None


async def standing_everywhere(regions: Regions, record_id: str, standing: int) -> bool:
    for node in regions.nodes.values():
        held = await standings(node, [record_id])
        if held is None or held[record_id] != standing:
            return False
    return True


async def latest_event(node: Node, record_id: str) -> event_pb2.Event:
    """The signed event a node's copy of the record comes from, decoded from the envelope it holds."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        envelope = await conn.fetchval(
            "SELECT e.envelope FROM records r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
            " WHERE r.record_id = $1",
            record_id,
        )
    return event_in(bytes(envelope))


async def public_entries(regions: Regions, node: Node, n: int) -> list[str]:
    async with client_channel(regions.federation, node, PUBLIC) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=subject(n), purpose="公示查询"), timeout=30
        )
    return [entry.record.record_id for entry in profile.entries]


async def peer_entries(regions: Regions, node: Node, n: int) -> list[tuple[str, int]]:
    asking = "320000" if node.origin != "320000" else "330000"
    async with peer_channel(regions.federation, node, asking) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=subject(n), purpose="同步核对"), timeout=30
        )
    return [(entry.record.record_id, entry.status) for entry in profile.entries]


async def check_hits(regions: Regions, node: Node, n: int) -> list[str]:
    request = check_pb2.CheckRequest(
        usccs=[subject(n)],
        scenario="政府采购",
        requesting_unit_uscc=UNIT,
        purpose="供应商资格审查",
        legal_basis="政府采购法",
    )
    async with government_channel(regions.federation, node) as channel:
        answer = await check_pb2_grpc.CheckServiceStub(channel).Check(request, timeout=30)
    return [hit.record_id for answer_ in answer.subjects for hit in answer_.hits]


def credex(regions: Regions, origin: str, *args: str) -> Result:
    """``credex …`` against ``origin``'s node config and database, as an operator's shell runs it."""
    env = {"CREDEX_DATABASE__URL": regions.federation.database_url(origin)}
    config = str(regions.federation.layout.config_path(origin))
    return CliRunner().invoke(app, [*args, "--config", config], env=env)


async def run_credex(regions: Regions, origin: str, *args: str) -> Result:
    return await asyncio.to_thread(credex, regions, origin, *args)


async def test_a_revocation_at_the_origin_leaves_public_views_and_checks_in_every_region(regions: Regions) -> None:
    for node in regions.nodes.values():
        assert await public_entries(regions, node, 1) == ["310000-HMD-rv1"]
        assert await check_hits(regions, node, 1) == ["310000-HMD-rv1"]

    done = await run_credex(regions, "310000", "revoke", "310000-HMD-rv1", "--reason", "行政复议决定撤销原认定")
    assert done.exit_code == 0, done.output
    assert "310000-HMD-rv1 revoked" in done.output

    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv1", REVOKED))
    for origin, node in regions.nodes.items():
        assert await public_entries(regions, node, 1) == [], origin
        assert await check_hits(regions, node, 1) == [], origin
        assert await peer_entries(regions, node, 1) == [("310000-HMD-rv1", REVOKED)], origin
        event = await latest_event(node, "310000-HMD-rv1")
        assert (event.type, event.standing, event.reason) == (
            event_pb2.EVENT_TYPE_REVOKE,
            event_pb2.STANDING_REVOKED,
            "行政复议决定撤销原认定",
        )
    # On the bus, as every event of the origin: what subscribers and regions not yet in sync read.
    await eventually(lambda: _relayed(regions.origin, 4))  # three upserts, then the revocation
    on_the_bus = await published(regions, "credex.310000.events", "cn.credex.record.revoke.v1")
    assert [(e.record_id, e.reason) for e in on_the_bus] == [("310000-HMD-rv1", "行政复议决定撤销原认定")]
    # The other records of the origin are untouched.
    assert await check_hits(regions, regions.nodes["330000"], 2) == ["310000-HMD-rv2"]
    again = await run_credex(regions, "310000", "revoke", "310000-HMD-rv1", "--reason", "重复")
    assert again.exit_code == 0 and "already revoked; nothing changed" in again.output


async def _relayed(node: Node, seq: int) -> bool:
    return (await node.status()).published >= seq


async def published(regions: Regions, topic: str, ce_type: str) -> list[event_pb2.Event]:
    """The events of type ``ce_type`` on ``topic`` so far, read from the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=regions.federation.broker.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        found: list[event_pb2.Event] = []
        read = dict.fromkeys(partitions, 0)
        async with asyncio.timeout(60):  # a fetch that comes back empty on a busy broker is read again
            while any(read[tp] < end for tp, end in ends.items()):
                batch = await consumer.getmany(timeout_ms=2000)
                for tp, messages in batch.items():
                    read[tp] = messages[-1].offset + 1
                    found += [event_in(m.value) for m in messages if ("ce_type", ce_type.encode()) in m.headers]
        return found
    finally:
        await consumer.stop()


async def log_state(node: Node) -> tuple[object, ...]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return (
            await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events WHERE origin = $1", node.origin),
            await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1", node.origin),
            tuple(await conn.fetch("SELECT record_id, seq, status, digest FROM records ORDER BY record_id")),
        )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("revoke", "310000-HMD-rv2", "--reason", "越权撤销"), "belongs to 310000; only its origin can change it"),
        (("hide", "310000-HMD-rv2", "--reason", "越权屏蔽"), "belongs to 310000; only its origin can change it"),
        (("revoke", "320000-HMD-nosuch", "--reason", "撤销"), "no record 320000-HMD-nosuch"),
        (("revoke", "320000-HMD-nosuch", "--reason", "  "), "a reason is required"),
        (("revoke", "320000-HMD-x", "--reason", "撤销\x00"), "control characters"),
        (("revoke", "320000-HMD-x", "--reason", "撤" * 501), "at most 500"),
        (("revoke", "320000-HMD-\x00", "--reason", "撤销"), "NUL or control characters"),
    ],
)
async def test_a_region_cannot_revoke_or_hide_another_regions_record_and_nothing_changes(
    regions: Regions, args: tuple[str, ...], says: str
) -> None:
    jiangsu = regions.nodes["320000"]
    before = await log_state(jiangsu)
    refused = await run_credex(regions, "320000", *args)
    assert refused.exit_code == 1
    assert says in refused.output
    assert "Traceback" not in refused.output
    assert await log_state(jiangsu) == before
    assert await standing_everywhere(regions, "310000-HMD-rv2", ACTIVE)


async def test_hiding_for_restructuring_is_reversible_everywhere_and_keeps_each_reason(regions: Regions) -> None:
    restructuring = "重整计划执行期间（(2026)沪03破12号）"
    hidden = await run_credex(regions, "310000", "hide", "310000-HMD-rv3", "--reason", restructuring)
    assert hidden.exit_code == 0, hidden.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv3", HIDDEN))
    for origin, node in regions.nodes.items():
        assert await public_entries(regions, node, 3) == [], origin
        assert await check_hits(regions, node, 3) == [], origin
        assert await peer_entries(regions, node, 3) == [("310000-HMD-rv3", HIDDEN)], origin
        event = await latest_event(node, "310000-HMD-rv3")
        assert (event.type, event.reason) == (event_pb2.EVENT_TYPE_HIDE, restructuring)

    lifted = await run_credex(regions, "310000", "unhide", "310000-HMD-rv3", "--reason", "重整计划执行完毕")
    assert lifted.exit_code == 0, lifted.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv3", ACTIVE))
    for origin, node in regions.nodes.items():
        assert await public_entries(regions, node, 3) == ["310000-HMD-rv3"], origin
        assert await check_hits(regions, node, 3) == ["310000-HMD-rv3"], origin
        event = await latest_event(node, "310000-HMD-rv3")
        assert (event.type, event.standing, event.reason) == (
            event_pb2.EVENT_TYPE_UNHIDE,
            event_pb2.STANDING_ACTIVE,
            "重整计划执行完毕",
        )
    # Both decisions stay in the origin's log with their reasons.
    shanghai = regions.origin
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn:
        types = await conn.fetch(
            "SELECT event_type FROM events WHERE record_id = '310000-HMD-rv3' ORDER BY seq", timeout=30
        )
    assert [r["event_type"] for r in types] == [
        event_pb2.EVENT_TYPE_UPSERT,
        event_pb2.EVENT_TYPE_HIDE,
        event_pb2.EVENT_TYPE_UNHIDE,
    ]


async def test_a_record_whose_window_ended_while_hidden_comes_back_expired_not_active(regions: Regions) -> None:
    shanghai = regions.origin
    assert shanghai.pool is not None
    lapsed = black_list(4)
    lapsed.publicity.end = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    async with shanghai.pool.acquire() as conn, conn.transaction():
        await shanghai.ledger.append(conn, [Change.of(lapsed)])
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv4", ACTIVE))
    hidden = await run_credex(regions, "310000", "hide", "310000-HMD-rv4", "--reason", "重整计划执行期间")
    assert hidden.exit_code == 0, hidden.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv4", HIDDEN))

    lifted = await run_credex(regions, "310000", "unhide", "310000-HMD-rv4", "--reason", "重整计划执行完毕")
    assert lifted.exit_code == 0, lifted.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv4", EXPIRED))
    for origin, node in regions.nodes.items():
        event = await latest_event(node, "310000-HMD-rv4")
        assert (event.type, event.standing) == (event_pb2.EVENT_TYPE_UNHIDE, event_pb2.STANDING_EXPIRED), origin
        assert await check_hits(regions, node, 4) == [], origin


async def test_only_a_hidden_record_can_be_unhidden_and_a_revoked_one_cannot_be_hidden(regions: Regions) -> None:
    not_hidden = await run_credex(regions, "310000", "unhide", "310000-HMD-rv2", "--reason", "解除")
    assert not_hidden.exit_code == 0 and "already in publication; nothing changed" in not_hidden.output
    assert (await run_credex(regions, "310000", "revoke", "310000-HMD-rv2", "--reason", "撤销")).exit_code == 0
    before = await log_state(regions.origin)
    refused = await run_credex(regions, "310000", "hide", "310000-HMD-rv2", "--reason", "重整")
    assert refused.exit_code == 1
    assert "record 310000-HMD-rv2 is revoked; this change applies only to a record that is active or expired" in (
        refused.output
    )
    assert await log_state(regions.origin) == before


# -- the platform's own withdrawal, mapped by the profile --------------------------------------------


def national_file(path: Path, rows: list[dict[str, str]], states: list[str]) -> Path:
    """A national 双公示 penalty file with the platform's 公示状态 column (GSZT)."""
    header = [*rows[0].keys(), "GSZT"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, state in zip(rows, states, strict=True):
            writer.writerow([*row.values(), state])
    return path


async def test_the_platforms_withdrawal_in_a_file_revokes_in_the_same_batch_and_only_new_content_restores(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    rows = [r.values for r in synth.generate(synth.SynthSpec(region="310000", rows=5, bad_share=0.0, person_share=0))]
    first = await node.ingest([national_file(tmp_path / "day1.csv", rows[:3], ["0", "0", "正常"])], NATIONAL)
    assert (first[0].new, first[0].revoked) == (3, 0)
    ids = await record_ids(node)
    assert len(ids) == 3

    # Row 0 撤销 (1), row 1 删除 (2), row 2 unchanged, row 3 new, row 4 withdrawn but never published here.
    second = national_file(tmp_path / "day2.csv", rows, ["1", "2", "0", "0", "撤销"])
    [report] = await node.ingest([second], NATIONAL)
    assert (report.rows_in, report.accepted, report.quarantined) == (5, 5, 0)
    assert (report.new, report.revoked, report.unchanged, report.withdrawn_unknown) == (1, 2, 1, 1)
    by_document = await record_ids(node)
    assert len(by_document) == 4  # the withdrawn row of an unknown record made no record
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        taken = await conn.fetchrow("SELECT revoked, withdrawn_unknown FROM ingest_files WHERE file_name = 'day2.csv'")
        revocations = await conn.fetch(
            "SELECT e.record_id, e.envelope, r.status FROM events e JOIN records r USING (record_id)"
            " WHERE e.event_type = $1 ORDER BY e.seq",
            event_pb2.EVENT_TYPE_REVOKE,
        )
    assert taken is not None and (taken["revoked"], taken["withdrawn_unknown"]) == (2, 1)
    reasons = [event_in(bytes(r["envelope"])).reason for r in revocations]
    assert reasons == ["GSZT 1 撤销", "GSZT 2 删除"]
    assert [r["status"] for r in revocations] == [REVOKED, REVOKED]
    assert [r["record_id"] for r in revocations] == [ids[rows[0]["CF_WSH"]], ids[rows[1]["CF_WSH"]]]

    # The platform exports row 0 again, unchanged and in publication: a re-export of an annulled
    # act is not new information, the revocation stands.
    [third] = await node.ingest([national_file(tmp_path / "day3.csv", rows[:1], ["0"])], NATIONAL)
    assert (third.corrected, third.unchanged, third.revoked) == (0, 1, 0)
    assert await standing(node, ids[rows[0]["CF_WSH"]]) == (REVOKED, event_pb2.EVENT_TYPE_REVOKE)

    # Published again with new content (the decision re-issued): a correction brings it back.
    reissued = [{**rows[0], "CF_SY": rows[0]["CF_SY"] + "（重新作出）"}]
    [fourth] = await node.ingest([national_file(tmp_path / "day4.csv", reissued, ["0"])], NATIONAL)
    assert (fourth.corrected, fourth.revoked) == (1, 0)
    assert await standing(node, ids[rows[0]["CF_WSH"]]) == (ACTIVE, event_pb2.EVENT_TYPE_CORRECT)


async def standing(node: Node, record_id: str) -> tuple[int, int]:
    """The record's status and the type of the event that gave it."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT r.status, e.event_type FROM records r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
            " WHERE r.record_id = $1",
            record_id,
        )
    assert row is not None
    return int(row["status"]), int(row["event_type"])


async def test_zhejiangs_api_publicity_state_revokes_too(federation: TestFederation, tmp_path: Path) -> None:
    node = await federation.start_node("330000")
    zhejiang = Profile.load("zhejiang")
    item = next(r for r in platform_samples.zhejiang_records() if r["type"] == "penalty")
    published = tmp_path / "page1.json"
    published.write_text(json.dumps([item], ensure_ascii=False), encoding="utf-8")
    withdrawn = tmp_path / "page2.json"
    withdrawn.write_text(json.dumps([{**item, "publicity_state": "revoked"}], ensure_ascii=False), encoding="utf-8")

    [first] = await node.ingest([published], zhejiang)
    [second] = await node.ingest([withdrawn], zhejiang)
    assert (first.new, second.revoked, second.new) == (1, 1, 0)
    [record_id] = (await record_ids(node)).values()
    event = await latest_event(node, record_id)
    assert (event.type, event.reason) == (event_pb2.EVENT_TYPE_REVOKE, "publicity_state revoked 撤销")


async def record_ids(node: Node) -> dict[str, str]:
    """The node's records by document number."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch("SELECT record_id, record FROM records")
    return {record_pb2.Record.FromString(bytes(r["record"])).document_number: r["record_id"] for r in rows}


async def test_an_unknown_publication_state_is_quarantined_never_guessed(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    rows = [r.values for r in synth.generate(synth.SynthSpec(region="310000", rows=2, bad_share=0.0, person_share=0))]
    [report] = await node.ingest([national_file(tmp_path / "odd.csv", rows, ["0", "9"])], NATIONAL)
    assert (report.accepted, report.quarantined, report.revoked) == (1, 1, 0)
    assert report.reasons == {"code.unknown": 1}


# -- decisions a re-report must not undo -------------------------------------------------------------


DECISIONS = {
    1: (event_pb2.EVENT_TYPE_REPAIR, lookup_pb2.ENTRY_STATUS_REPAIRED),
    2: (event_pb2.EVENT_TYPE_RESOLVE, lookup_pb2.ENTRY_STATUS_DELETED),
    3: (event_pb2.EVENT_TYPE_HIDE, lookup_pb2.ENTRY_STATUS_HIDDEN),
    4: (event_pb2.EVENT_TYPE_REVOKE, lookup_pb2.ENTRY_STATUS_REVOKED),
}


async def decided_records(node: Node) -> list[record_pb2.Record]:
    """Black-list entries 1-4 of ``node``'s origin, taken in, then repaired, deleted, hidden and revoked."""
    assert node.pool is not None
    records = [black_list(n) for n in DECISIONS]
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(r) for r in records])
        for n, (event_type, standing) in DECISIONS.items():
            await node.ledger.amend(conn, f"310000-HMD-rv{n}", event_type, "决定", standing=standing)
    return records


async def test_a_rereport_of_unchanged_content_undoes_no_repair_deletion_hiding_or_revocation(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    records = await decided_records(node)
    async with node.pool.acquire() as conn, conn.transaction():
        result = await node.ledger.append(conn, [Change.of(r) for r in records])
    # Repair, deletion, hiding and revocation are decisions; the same content again undoes none.
    assert (result.unchanged, result.corrected) == (4, 0)
    assert await standings(node, [r.record_id for r in records]) == {
        "310000-HMD-rv1": lookup_pb2.ENTRY_STATUS_REPAIRED,
        "310000-HMD-rv2": lookup_pb2.ENTRY_STATUS_DELETED,
        "310000-HMD-rv3": lookup_pb2.ENTRY_STATUS_HIDDEN,
        "310000-HMD-rv4": lookup_pb2.ENTRY_STATUS_REVOKED,
    }


async def test_a_platforms_correction_updates_content_but_undoes_no_repair_deletion_or_hiding(
    federation: TestFederation,
) -> None:
    """Repair, deletion after an objection and hiding end only by the origin's decision (Repair 6 and 9): the
    platform correcting a detail of the act (or a profile that maps one more field, changing every record) is
    signed as a correction that keeps the standing. Only a revoked act published anew comes back."""
    node = await federation.start_node("310000")
    assert node.pool is not None
    records = await decided_records(node)
    for record in records:
        record.black_list.list_name += "（更正）"
    async with node.pool.acquire() as conn, conn.transaction():
        result = await node.ledger.append(conn, [Change.of(r) for r in records])
    assert (result.corrected, result.unchanged) == (4, 0)
    for record in records:
        held = await latest_event(node, record.record_id)
        assert (held.type, held.record.black_list.list_name) == (
            event_pb2.EVENT_TYPE_CORRECT,
            "严重失信主体名单（更正）",
        )
    assert await standings(node, [r.record_id for r in records]) == {
        "310000-HMD-rv1": lookup_pb2.ENTRY_STATUS_REPAIRED,
        "310000-HMD-rv2": lookup_pb2.ENTRY_STATUS_DELETED,
        "310000-HMD-rv3": lookup_pb2.ENTRY_STATUS_HIDDEN,
        "310000-HMD-rv4": lookup_pb2.ENTRY_STATUS_ACTIVE,
    }


def test_the_cli_explains_a_missing_reason() -> None:
    result = CliRunner().invoke(app, ["revoke", "310000-HMD-rv1", "--config", "/nonexistent/node.toml"])
    assert result.exit_code != 0 and "--reason" in result.output
