"""``credex check``, ``credex feedback`` and ``credex search`` against a running node, as an office uses them.

Each command runs its own event loop, as from a shell, against a real node of the test
federation; the office's client certificate is the one the federation CA issued it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner, Result

from credex.crypto.tls import CertificateAuthority
from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.cli import app
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import event_pb2, record_pb2

from .callers import GOVERNMENT
from .conftest import TestFederation

LAST_YEAR = (publicity_today() - dt.timedelta(days=200)).isoformat()
LISTED = uscc_codes.make("91", "320500", "JT000031")
CLEAN = uscc_codes.make("91", "320500", "JT000032")
UNIT = uscc_codes.make("11", "310000", "HCG00001")  # a Shanghai procurement office


@dataclass
class Office:
    """A node and the command-line options an office passes to reach it."""

    node: Node
    options: list[str]

    async def run(self, *args: str) -> Result:
        result = await asyncio.to_thread(CliRunner().invoke, app, [*args, *self.options])
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
async def office(federation: TestFederation) -> AsyncIterator[Office]:
    node = await federation.start_node("320000", access={"callers": {GOVERNMENT: "government"}})
    assert node.pool is not None
    listed = record_pb2.Record(
        record_id="320000-HMD-31",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=LISTED, name="苏州失信貿易有限公司"),
        decision_date=LAST_YEAR,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=LAST_YEAR, end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(list_name="严重失信主体名单"),
    )
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(listed)])
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.amend(conn, "320000-HMD-31", event_pb2.EVENT_TYPE_DISPUTE, "异议已受理", disputed=True)
    ca_dir = federation.layout.ca_dir
    if not (ca_dir / f"{GOVERNMENT}.crt").exists():
        CertificateAuthority.load(ca_dir).issue(GOVERNMENT, []).write(ca_dir, GOVERNMENT)
    ca, cert, key = federation.layout.client_tls(GOVERNMENT)
    yield Office(
        node,
        [
            "--node",
            f"127.0.0.1:{node.port}",
            "--config",
            str(federation.layout.config_path("320000")),
            "--ca",
            str(ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
    )


def check_args(*usccs: str) -> list[str]:
    return [
        "check",
        *usccs,
        "--scenario",
        "政府采购",
        "--unit",
        UNIT,
        "--purpose",
        "供应商资格审查",
        "--basis",
        "政府采购法",
    ]


async def test_credex_check_prints_hits_measures_and_bases_and_files_feedback_from_the_json(office: Office) -> None:
    answer = json.loads((await office.run(*check_args(LISTED, CLEAN), "--json")).output)
    listed, clean = answer["subjects"]
    (hit,) = listed["hits"]
    assert (hit["record_id"], hit["disputed"], answer["scenario"]) == ("320000-HMD-31", True, "政府采购")
    assert hit["measures"] and all(m["basis"] for m in hit["measures"])
    assert clean["subject_id"] == CLEAN and "hits" not in clean  # empty lists are left out of JSON
    measure = hit["measures"][0]["id"]

    receipt = await office.run(
        "feedback",
        answer["check_id"],
        "--subject",
        LISTED,
        "--outcome",
        "punished",
        "--measure",
        measure,
        "--amount",
        "12000.50",
        "--district",
        "320505",
        "--result",
        "罚款12000.50元",
        "--department-code",
        "11320505MB1234567X",
        "--applied-on",
        publicity_today().isoformat(),
        "--json",
    )
    filed = json.loads(receipt.output)
    assert (filed["check_id"], filed["subject_id"]) == (answer["check_id"], LISTED) and filed["recorded_at"]
    assert (filed["result"], filed["department_code"]) == ("罚款12000.50元", "11320505MB1234567X")
    assert office.node.pool is not None
    async with office.node.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT measures_applied, amount_yuan, result, department_code FROM check_feedback")
    assert row is not None and (row["measures_applied"], str(row["amount_yuan"])) == ([measure], "12000.50")
    assert (row["result"], row["department_code"]) == ("罚款12000.50元", "11320505MB1234567X")


async def test_credex_check_and_feedback_print_tables(office: Office) -> None:
    table = (await office.run(*check_args(LISTED, CLEAN))).output
    check_id = table.split()[1]
    assert table.startswith(f"check {check_id} · scenario 政府采购")
    assert "320000-HMD-31" in table and "异议中" in table
    assert "no record in force" in table and "告知承诺 not available" in table
    said = (
        await office.run(
            "feedback",
            check_id,
            "--subject",
            CLEAN,
            "--outcome",
            "not_adopted",
            "--reason",
            "无失信记录",
            "--result",
            "未采纳",
            "--department-code",
            "SH-HP-CZ",
            "--applied-on",
            publicity_today().isoformat(),
        )
    ).output
    assert said.startswith(f"feedback on check {check_id} for {CLEAN} recorded at ")
    assert "result: 未采纳 · department code: SH-HP-CZ" in said


async def test_credex_search_finds_a_subject_across_character_forms_as_json_and_as_a_table(office: Office) -> None:
    found = json.loads((await office.run("search", "苏州失信贸易", "--purpose", "核查", "--json")).output)
    assert [s["subject_id"] for s in found["subjects"]] == [LISTED]
    table = (await office.run("search", "蘇州失信", "--purpose", "核查")).output
    assert table.startswith("蘇州失信: 1 subjects") and LISTED in table and "苏州失信貿易有限公司" in table
