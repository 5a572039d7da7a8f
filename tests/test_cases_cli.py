"""The case commands: file on one node, decide at the origin, download and verify the repair decision offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner, Result

from credex.node.cli.app import app
from credex.node.runtime import Node

from .callers import GOVERNMENT, client_channel
from .cases_support import OPERATOR, Regions, arrived, everywhere, penalty, publish, regions_fixture  # noqa: F401
from .conftest import eventually


def tls_options(regions: Regions, node: Node, name: str) -> list[str]:
    client_channel(regions.federation, node, name)  # issues the certificate on first use
    ca, cert, key = regions.federation.layout.client_tls(name)
    return ["--node", f"127.0.0.1:{node.port}", "--ca", str(ca), "--cert", str(cert), "--key", str(key)]


async def credex(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_a_repair_filed_decided_and_its_decision_verified_with_the_cli(regions: Regions, tmp_path: Path) -> None:
    record = penalty(60)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    government = tls_options(regions, regions.shanghai, GOVERNMENT)
    operator = tls_options(regions, regions.jiangsu, OPERATOR)
    filed = await credex(
        "repair", "file", record.record_id, *government, "--subject", record.subject.uscc, "--request-id", "cli-1",
        "--proof", "缴款凭证", "--commitment", "信用承诺书", "--json",
    )  # fmt: skip
    assert filed.exit_code == 0, filed.output
    case_id = json.loads(filed.output)["case_id"]
    await arrived(regions, case_id)

    listed = await credex("cases", "list", *operator, "--state", "submitted")
    assert listed.exit_code == 0 and case_id in listed.output, listed.output
    accepted = await credex("cases", "accept", case_id, *operator, "--opinion", "受理", "--actor", "张三")
    assert accepted.exit_code == 0 and "under_review" in accepted.output, accepted.output
    decided = await credex(
        "cases",
        "decide",
        case_id,
        "approved",
        *operator,
        "--opinion",
        "准予修复",
        "--decided-by",
        "苏州市市场监督管理局",
    )
    assert decided.exit_code == 0 and "propagating" in decided.output, decided.output
    await everywhere(regions, record.record_id, status=4)

    document = tmp_path / "decision.bin"
    downloaded = await credex("repair", "decision", case_id, *operator, "--out", str(document))
    assert downloaded.exit_code == 0, downloaded.output
    layout = regions.federation.layout
    verified = await credex(
        "repair",
        "verify",
        str(document),
        "--trust",
        str(layout.bundle),
        "--federation-key",
        str(layout.federation_public),
    )
    assert verified.exit_code == 0 and "valid: 修复决定书 320000-XF-" in verified.output, verified.output
    assert record.record_id in verified.output and "苏州市市场监督管理局" in verified.output
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(document.read_bytes().replace("准予修复".encode(), "不予修复".encode()))
    refused = await credex("repair", "verify", str(tampered), "--trust", str(layout.bundle))
    assert refused.exit_code == 1 and "NOT valid" in refused.output

    async def done() -> bool:
        shown = await credex("cases", "show", case_id, *operator, "--json")
        return shown.exit_code == 0 and json.loads(shown.output)["state"] == "done"

    await eventually(done, timeout=60)


async def test_an_objection_corrected_field_by_field_with_the_cli(regions: Regions) -> None:
    record = penalty(61)
    await publish(regions.jiangsu, [record], regions.shanghai)
    government = tls_options(regions, regions.shanghai, GOVERNMENT)
    operator = tls_options(regions, regions.jiangsu, OPERATOR)
    filed = await credex(
        "objection", "file", record.record_id, *government, "--subject", record.subject.uscc,
        "--request-id", "cli-obj", "--grounds", "error", "--json",
    )  # fmt: skip
    assert filed.exit_code == 0, filed.output
    case_id = json.loads(filed.output)["case_id"]
    await arrived(regions, case_id)
    malformed = await credex("cases", "decide", case_id, "corrected", *operator, "--change", "penalty.fine_yuan")
    assert malformed.exit_code == 1 and "FIELD=OLD=>NEW" in malformed.output
    decided = await credex(
        "cases", "decide", case_id, "corrected", *operator, "--change", "penalty.fine_yuan=20000=>2000", "--json"
    )
    assert decided.exit_code == 0 and json.loads(decided.output)["outcome"] == "corrected", decided.output
    again = await credex("cases", "decide", case_id, "deleted", *operator)
    assert again.exit_code == 1 and "FAILED_PRECONDITION" in again.output and "closed" in again.output
