"""``credex demo``: four regions, one embedded PostgreSQL, one embedded broker, end to end.

Each node takes in its region's sample files, publishes its signed log, takes in
the others'; then a government office asks one region's node about companies
that have records in other regions, and checks every origin's signature itself.
Last, a Shanghai procurement office checks (逢办必查) a Jiangsu company on Jiangsu's
serious-dishonesty list, learns the catalogue's measures with their legal basis, and
files its usage feedback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from credex.adapters.profile import Profile
from credex.adapters.samples.synth import shipped_samples
from credex.crypto.trust import TrustBundle
from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.domain.regions import region_name
from credex.domain.uscc import USCC
from credex.node.channels import open_channel
from credex.node.demo.federation import LocalFederation
from credex.node.demo.lifted_scene import procurement_feedback
from credex.node.demo.repair_scene import repair_scene
from credex.node.demo.report_scene import special_report
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.node.services import get_profile
from credex.v1 import check_pb2, check_pb2_grpc, lookup_pb2, record_pb2

log = logging.getLogger(__name__)

DEMO_ORIGINS = ("310000", "320000", "330000", "340000")
_KIND_NAMES = {record_pb2.KIND_LICENCE: "行政许可", record_pb2.KIND_PENALTY: "行政处罚"}
_STATUS_NAMES = {
    lookup_pb2.ENTRY_STATUS_ACTIVE: "公示中",
    lookup_pb2.ENTRY_STATUS_EXPIRED: "公示期满",
    lookup_pb2.ENTRY_STATUS_REVOKED: "已撤销",
}


async def wait_until_complete(nodes: dict[str, Node], timeout: float) -> float:
    """Until every node holds every origin's log up to that origin's head; returns seconds waited."""
    started = time.monotonic()
    while True:
        statuses = {origin: await node.status() for origin, node in nodes.items()}
        complete = all(
            status.contiguous_by_origin.get(origin, 0) >= statuses[origin].own_events
            for holder, status in statuses.items()
            for origin in statuses
            if origin != holder
        )
        if complete:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"nodes did not converge within {timeout:.0f}s")
        await asyncio.sleep(0.3)


async def shared_subjects(node: Node, limit: int) -> list[tuple[str, list[str]]]:
    """Subjects with records from more than one region, with those regions."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject_id, array_agg(DISTINCT origin ORDER BY origin) AS origins FROM records"
            " WHERE subject_id NOT LIKE 'psn:%' GROUP BY subject_id HAVING count(DISTINCT origin) > 1"
            " ORDER BY count(DISTINCT origin) DESC, subject_id LIMIT $1",
            limit,
        )
    return [(r["subject_id"], list(r["origins"])) for r in rows]


async def run_demo(console: Console, workdir: Path | None = None, keep: bool = False) -> None:
    root = workdir or Path(tempfile.mkdtemp(prefix="credex-demo-"))
    started = time.monotonic()
    console.rule("[bold]credex demo: a Yangtze River Delta credit federation")
    console.print(f"working folder {root}")
    federation = LocalFederation(root, DEMO_ORIGINS, tls=True)
    bundle = federation.prepare()
    console.print(f"trust bundle signed for {len(bundle.members)} members; gRPC between nodes uses mutual TLS")
    postgres = EmbeddedPostgres(root / "postgres")
    broker = EmbeddedBroker(root / "broker")
    try:
        await asyncio.to_thread(postgres.start)
        bootstrap = await asyncio.to_thread(broker.start)
        console.print(f"embedded PostgreSQL in {postgres.directory}, embedded broker at {bootstrap}")
        nodes: dict[str, Node] = {}
        for origin in DEMO_ORIGINS:
            nodes[origin] = await federation.start_node(
                origin,
                database={"url": postgres.uri(f"credex_{origin}")},
                bus={"bootstrap_servers": bootstrap},
                sync={"probe_seconds": 2.0},
            )
            console.print(f"  node {origin} {region_name(origin)} serving gRPC on 127.0.0.1:{nodes[origin].port}")
        profile = Profile.load("national")
        with console.status("taking in each region's sample files"):
            for origin, node in nodes.items():
                for report in await node.ingest(shipped_samples(origin), profile):
                    note = " (already taken in)" if report.already_taken else ""
                    console.print(
                        f"  {origin} {Path(report.path).name}: {report.rows_in} rows = {report.accepted} accepted"
                        f" + {report.quarantined} quarantined{note}"
                    )
        with console.status("waiting until every node holds every region's log"):
            waited = await wait_until_complete(nodes, timeout=60)
        console.print(f"all {len(nodes)} nodes hold all {len(nodes)} logs ({waited:.1f}s after the last file)")
        await _show_profiles(console, federation, nodes, bundle)
        await _summary(console, nodes)
        await _credit_chain(console, nodes)
        await _procurement_check(console, federation, nodes)
        await special_report(console, federation, nodes["310000"], bundle, LISTED_COMPANY, root)
        await repair_scene(console, federation, nodes, root)
    finally:
        await federation.stop()
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(postgres.stop)
        if workdir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
    console.print(f"demo finished in {time.monotonic() - started:.1f}s; everything shut down")


# The procurement scene: a Suzhou company on Jiangsu's list, checked by a Shanghai procurement office.
LISTED_COMPANY = uscc_codes.make("91", "320500", "DM000001")
PROCUREMENT_OFFICE = uscc_codes.make("11", "310000", "HCG00001")


def _listed_record(today: dt.date) -> record_pb2.Record:
    decided = (today - dt.timedelta(days=200)).isoformat()
    return record_pb2.Record(
        record_id="320000-HMD-DEMO-1",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=LISTED_COMPANY, name="苏州示例失信贸易有限公司"
        ),
        decision_date=decided,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=decided, end=(today + dt.timedelta(days=3 * 365)).isoformat()),
        black_list=record_pb2.BlackListDetails(
            list_name="严重失信主体名单", identifying_unit=record_pb2.Authority(name="江苏省发展和改革委员会")
        ),
    )


async def _procurement_check(
    console: Console, federation: LocalFederation, nodes: dict[str, Node], timeout: float = 20
) -> None:
    """Jiangsu lists a company; Shanghai's procurement office checks it over mTLS, sees why, files feedback."""
    jiangsu, shanghai = nodes["320000"], nodes["310000"]
    record = _listed_record(publicity_today())
    assert jiangsu.pool is not None and shanghai.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(record)])
    started = time.monotonic()
    while True:
        async with shanghai.pool.acquire() as conn:
            if await conn.fetchval("SELECT count(*) FROM records WHERE record_id = $1", record.record_id):
                break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"Shanghai did not take in {record.record_id} within {timeout:.0f}s")
        await asyncio.sleep(0.2)
    console.print(
        f"Jiangsu put {LISTED_COMPANY} on its 严重失信主体名单; Shanghai holds it"
        f" {time.monotonic() - started:.1f}s later"
    )
    ca, cert, key = federation.layout.client_tls()
    async with open_channel(f"127.0.0.1:{shanghai.port}", ca=ca, cert=cert, key=key) as channel:
        stub = check_pb2_grpc.CheckServiceStub(channel)
        answer = await stub.Check(
            check_pb2.CheckRequest(
                usccs=[LISTED_COMPANY],
                scenario="政府采购",
                requesting_unit_uscc=PROCUREMENT_OFFICE,
                purpose="demo: 供应商资格审查",
                legal_basis="政府采购法 第二十二条",
            ),
            timeout=30,
        )
        (subject,) = answer.subjects
        table = Table(
            title=f"逢办必查: {PROCUREMENT_OFFICE} (上海市 procurement office) checks {LISTED_COMPANY}"
            f" for {answer.scenario} at 310000 over gRPC (mTLS), check {answer.check_id}",
            title_justify="left",
        )
        for column in ("hit", "list", "measure", "category", "legal basis"):
            table.add_column(column, overflow="fold")
        applied: list[str] = []
        for hit in subject.hits:
            for measure in hit.measures:
                applied.append(measure.id)
                table.add_row(
                    f"{hit.origin} {hit.record_id}",
                    hit.list_or_severity,
                    f"{measure.id} {measure.name}",
                    f"{measure.category} {measure.measure_class}".strip(),
                    measure.basis,
                )
        console.print(table)
        if not subject.notify_commit_available:
            console.print(f"  告知承诺 not available (excluded by {', '.join(subject.excluded_by)})")
        receipt = await stub.SubmitFeedback(procurement_feedback(answer.check_id, LISTED_COMPANY, applied), timeout=30)
    console.print(
        f"  usage feedback (应用情况反馈, 已惩戒) on check {receipt.check_id}: {len(applied)} measures applied,"
        f" recorded at {receipt.recorded_at}"
    )


def _province(uscc: str) -> str:
    """The province a company is registered in: the first two digits of its USCC's division code."""
    return USCC(uscc).division[:2]


async def _show_profiles(
    console: Console, federation: LocalFederation, nodes: dict[str, Node], bundle: TrustBundle
) -> None:
    tls = federation.layout.client_tls()
    candidates = await shared_subjects(nodes[DEMO_ORIGINS[0]], limit=40)
    chosen: list[tuple[str, list[str]]] = []
    for subject, origins in candidates:  # companies registered in different provinces
        if len(chosen) < 3 and all(_province(subject) != _province(c[0]) for c in chosen):
            chosen.append((subject, origins))
    for subject, origins in chosen:
        # Asked at a node of another region than where the company is registered,
        # preferably one that published nothing about it.
        code = USCC(subject)
        registered = region_name(_province(subject) + "0000")
        others = [o for o in DEMO_ORIGINS if o[:2] != _province(subject)]
        asker = next((o for o in others if o not in origins), others[-1])
        endpoint = f"127.0.0.1:{nodes[asker].port}"
        subject_id, entries = await get_profile(
            endpoint, subject, bundle, purpose="demo: 政府采购 supplier check", tls=tls
        )
        name = entries[0].entry.record.subject.name if entries else ""
        table = Table(
            title=f"{subject_id} {name} (registered with {code.department}, {registered}):"
            f" answered by {asker} {region_name(asker)} over gRPC (mTLS)",
            title_justify="left",
        )
        for column in (
            "origin",
            "kind",
            "decided",
            "document",
            "authority",
            "publicity",
            "status",
            "signature",
        ):
            table.add_column(column, no_wrap=column != "authority")
        for checked in entries:
            record = checked.entry.record
            table.add_row(
                f"{checked.entry.origin} {region_name(checked.entry.origin)}",
                _KIND_NAMES.get(record.kind, str(record.kind)),
                record.decision_date,
                record.document_number,
                record.deciding_authority.name,
                f"{record.publicity.start} → {record.publicity.end or '—'}",
                _STATUS_NAMES.get(checked.entry.status, "?"),
                f"[green]✓ signature verified[/] (key {checked.key_id[:8]})"
                if checked.verified
                else f"[red]✗ {checked.problem}[/]",
            )
        console.print(table)


async def _credit_chain(console: Console, nodes: dict[str, Node], timeout: float = 20) -> None:
    """Each origin's signed checkpoint, and whether every node's copy has the same Merkle root."""
    started = time.monotonic()
    while True:
        statuses = {o: await n.status() for o, n in nodes.items()}
        heads = {o: s.own_events for o, s in statuses.items()}
        views = {origin: {o: s.checkpoints.get(origin) for o, s in statuses.items()} for origin in nodes}
        settled = all(v and v[0] >= heads[origin] for origin, seen in views.items() for v in seen.values())
        if settled or time.monotonic() - started > timeout:
            break
        await asyncio.sleep(0.3)
    console.print("credit chain: each origin's signed checkpoint as every node verified it")
    for origin, seen in views.items():
        values = {v for v in seen.values() if v}
        if len(values) == 1 and len([v for v in seen.values() if v]) == len(nodes):
            size, root = next(iter(values))
            console.print(
                f"  {origin} {region_name(origin)}: size {size}, root {root[:16]}… [green]same on all"
                f" {len(nodes)} nodes[/]"
            )
        else:
            console.print(f"  {origin} {region_name(origin)}: [yellow]not settled[/] {seen}")


async def _summary(console: Console, nodes: dict[str, Node]) -> None:
    table = Table(title="per-node summary", title_justify="left")
    for column in (
        "node",
        "rows in",
        "taken in",
        "rejected rows",
        "published",
        "received per origin",
        "rejected events",
    ):
        table.add_column(column)
    for origin, node in nodes.items():
        status = await node.status()
        received = ", ".join(f"{o}: {n}" for o, n in sorted(status.records_by_origin.items()) if o != origin)
        rejected_events = sum(
            n for counters in status.intake_counters.values() for k, n in counters.items() if k.startswith("rejected:")
        )
        table.add_row(
            f"{origin} {region_name(origin)}",
            str(status.rows_in),
            f"{status.accepted} ({status.own_events} events)",
            str(status.quarantined),
            str(status.published),
            received,
            str(rejected_events),
        )
    console.print(table)
