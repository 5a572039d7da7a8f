"""A case whose nodes are SIGKILLed mid-delivery: it is still delivered, and taken in exactly once.

Nodes run as real ``credex node run`` processes (as in test_crash_recovery.py), so a kill
is a kill: the filing waits in the filing node's outbox in PostgreSQL, nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from credex.adapters.samples import synth
from credex.node.channels import open_channel
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2

from .callers import GOVERNMENT
from .conftest import TestFederation, eventually
from .test_crash_recovery import ORIGINS, NodeProcess, ingest


async def fetch(federation: TestFederation, origin: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(federation.database_url(origin))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_a_case_survives_sigkill_of_the_filing_node_and_the_origin_and_is_taken_in_once(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> None:
    federation = TestFederation(tmp_path / "federation", ORIGINS, postgres, broker)
    federation.prepare()
    logs = tmp_path / "logs"
    logs.mkdir()
    nodes = {origin: NodeProcess(federation, origin, logs) for origin in ORIGINS}
    for node in nodes.values():
        await node.start()
    try:
        path = tmp_path / "jiangsu.csv"
        synth.write(path, synth.SynthSpec(region="320000", rows=20, bad_share=0.0))
        await ingest(nodes["320000"], path)
        rows = await fetch(
            federation, "320000", "SELECT record_id, subject_id FROM records WHERE sharing_level = 1 LIMIT 1"
        )
        record_id, subject = rows[0]["record_id"], rows[0]["subject_id"]

        async def replicated() -> bool:
            held = await fetch(federation, "310000", "SELECT 1 FROM records WHERE record_id = $1", record_id)
            return bool(held)

        await eventually(replicated, timeout=60)
        await nodes["320000"].kill()

        ca, cert, key = federation.layout.client_tls(GOVERNMENT)
        listen = federation.config("310000").grpc.listen
        async with open_channel(listen, ca=ca, cert=cert, key=key) as channel:
            stub: case_pb2_grpc.CaseServiceAsyncStub = case_pb2_grpc.CaseServiceStub(channel)
            filed = await stub.FileObjection(
                case_pb2.FileObjectionRequest(
                    request_id="killed",
                    record_id=record_id,
                    on_behalf_of=subject,
                    grounds="error",
                    purpose="异议申请",
                ),
                timeout=30,
            )
        case_id = filed.case.case_id

        async def retried() -> bool:
            outbox = await fetch(federation, "310000", "SELECT attempts FROM case_outbox WHERE case_id = $1", case_id)
            return bool(outbox) and outbox[0]["attempts"] >= 1

        await eventually(retried, timeout=60)
        await nodes["310000"].kill()  # the filing node dies between attempts, the origin still down
        await nodes["320000"].start()
        await nodes["310000"].start()

        async def delivered() -> bool:
            outbox = await fetch(
                federation, "310000", "SELECT delivered_at FROM case_outbox WHERE case_id = $1 AND purpose = 'filing'",
                case_id,
            )  # fmt: skip
            return outbox[0]["delivered_at"] is not None

        await eventually(delivered, timeout=90)
        assert len(await fetch(federation, "320000", "SELECT 1 FROM cases WHERE case_id = $1", case_id)) == 1
        disputes = await fetch(
            federation,
            "320000",
            "SELECT seq FROM events WHERE record_id = $1 AND event_type = $2",
            record_id,
            event_pb2.EVENT_TYPE_DISPUTE,
        )
        assert len(disputes) == 1

        async def marked_in_zhejiang() -> bool:
            held = await fetch(federation, "330000", "SELECT disputed FROM records WHERE record_id = $1", record_id)
            return bool(held) and held[0]["disputed"]

        await eventually(marked_in_zhejiang, timeout=90)
    finally:
        for node in nodes.values():
            await node.stop()
