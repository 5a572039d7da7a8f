"""Verifying a report: genuine or not, when issued, and what changed since (credit-use.md, Report rule 4).

Offline, with the trust bundle alone: the issuer's signature, every included record
against its origin's signed envelope and an inclusion proof, and the PDF or HTML being
exactly the rendering of the signed report inside it. Online, the issuing node's
register: whether it issued this report, and which included records its origin has
since repaired, corrected or revoked.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fpdf import FPDF
from typer.testing import CliRunner

from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node.cli import app
from credex.node.ledger.appender import Change
from credex.node.reports import ReportInvalid, check_report
from credex.node.reports.document import NO_RECORD, report_sha256, sign_document
from credex.node.reports.rendering import check_file, render_html, render_pdf
from credex.v1 import event_pb2, lookup_pb2, record_pb2, report_pb2

from .callers import client_channel
from .conftest import TestFederation, eventually
from .report_setup import (
    COMPANY,
    DISPUTED,
    LISTED,
    PORTAL,
    SERIOUS,
    WARNING,
    Pair,
    issue,
    issue_request,
    start_pair,
    taken_in,
    verify,
)


@pytest.fixture
async def pair(federation: TestFederation) -> AsyncIterator[Pair]:
    yield await start_pair(federation)


async def issued_report(federation: TestFederation, pair: Pair) -> report_pb2.IssuedReport:
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        return await issue(channel, issue_request(kind=report_pb2.REPORT_KIND_FULL))


def verify_request(issued: report_pb2.IssuedReport, signed: bytes | None = None) -> report_pb2.VerifyReportRequest:
    return report_pb2.VerifyReportRequest(
        report_number=issued.report_number,
        verification_code=issued.verification_code,
        report_sha256=report_sha256(issued.signed_report if signed is None else signed),
    )


async def test_a_report_verifies_offline_as_pdf_html_and_json_and_online(
    federation: TestFederation, pair: Pair
) -> None:
    issued = await issued_report(federation, pair)
    bundle = federation.bundle_now()
    checked = check_report(issued.signed_report, bundle)
    assert checked.issuer == "310000" and checked.report_number == issued.report_number
    assert len(checked.document["evidence"]) == len(checked.document["items"]) == 5
    for data in (render_pdf(checked), render_html(checked), issued.signed_report):
        again = check_file(data, bundle)
        assert again.report_number == issued.report_number
        assert again.issued_at.isoformat() == issued.issued_at
    async with client_channel(federation, pair.shanghai, "bidding-office") as channel:
        verdict = await verify(channel, verify_request(issued))
    assert verdict.genuine and verdict.issuer == "310000" and verdict.issued_at == issued.issued_at
    assert list(verdict.changes) == []


async def test_one_changed_byte_of_the_pdf_or_html_fails_verification(federation: TestFederation, pair: Pair) -> None:
    issued = await issued_report(federation, pair)
    bundle = federation.bundle_now()
    checked = check_report(issued.signed_report, bundle)
    pdf = render_pdf(checked)
    # Positions across the file: header, page content, font, the embedded report, the trailer.
    for position in (10, len(pdf) // 5, len(pdf) // 2, len(pdf) * 4 // 5, len(pdf) - 40):
        changed = bytearray(pdf)
        changed[position] ^= 0x01
        with pytest.raises(ReportInvalid):
            check_file(bytes(changed), bundle)
    page = render_html(checked)
    name_at = page.index("苏州".encode())
    changed = bytearray(page)
    changed[name_at + 2] ^= 0x01
    with pytest.raises(ReportInvalid, match="content was changed"):
        check_file(bytes(changed), bundle)


async def test_a_changed_record_in_the_report_fails_verification(federation: TestFederation, pair: Pair) -> None:
    issued = await issued_report(federation, pair)
    bundle = federation.bundle_now()
    envelope = json.loads(issued.signed_report)
    document = json.loads(base64.b64decode(envelope["payload"]))

    # Anyone who edits an included record breaks the issuer's signature.
    edited = json.loads(json.dumps(document))
    edited["items"][0]["summary"] = "无违法违规记录"
    envelope["payload"] = base64.b64encode(json.dumps(edited, ensure_ascii=False).encode()).decode()
    with pytest.raises(ReportInvalid, match="signature does not match"):
        check_report(json.dumps(envelope).encode(), bundle)
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        verdict = await verify(channel, verify_request(issued, json.dumps(envelope).encode()))
    assert not verdict.genuine and "differs" in verdict.reason

    # Even the issuer cannot show a record other than the one its origin signed, nor leave out its proof.
    issuer_key = SigningKey.load(federation.layout.member_dir("310000") / "keys")
    forged = json.loads(json.dumps(document))
    forged["items"][0]["record_sha256"] = "00" * 32
    with pytest.raises(ReportInvalid, match="not the one its origin signed"):
        check_report(sign_document(forged, issuer_key), bundle)
    unproven = json.loads(json.dumps(document))
    unproven["evidence"] = unproven["evidence"][1:]
    with pytest.raises(ReportInvalid, match="no inclusion proof"):
        check_report(sign_document(unproven, issuer_key), bundle)
    undisputed = json.loads(json.dumps(document))
    for item in undisputed["items"]:
        item["disputed"] = False
    with pytest.raises(ReportInvalid, match="dispute mark"):
        check_report(sign_document(undisputed, issuer_key), bundle)
    dangling = json.loads(json.dumps(document))
    dangling["sections"][0]["records"].append("320000-T-999")
    with pytest.raises(ReportInvalid, match="does not show"):
        check_report(sign_document(dangling, issuer_key), bundle)
    # Through JSON: model_copy in with_member carries the original's cached keys_by_id over.
    revoked = TrustBundle.model_validate_json(
        bundle.with_key_revoked("310000", issuer_key.key_id, 0, "stolen").to_json()
    )
    with pytest.raises(ReportInvalid, match="cannot be confirmed offline"):  # a thief could backdate
        check_report(issued.signed_report, revoked)
    outsider = SigningKey.generate()
    with pytest.raises(ReportInvalid, match="does not list"):
        check_report(sign_document(document, outsider), bundle)


async def test_a_report_issued_before_a_repair_revocation_or_correction_says_so_when_verified_after(
    federation: TestFederation, pair: Pair
) -> None:
    issued = await issued_report(federation, pair)
    jiangsu = pair.jiangsu
    assert jiangsu.pool is not None
    corrected = record_pb2.Record()
    corrected.CopyFrom(LISTED)
    corrected.black_list.rule = "拒不履行法定义务（更正）"
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.revoke(conn, SERIOUS.record_id, "撤销行政处罚决定")
        await jiangsu.ledger.amend(
            conn, WARNING.record_id, event_pb2.EVENT_TYPE_REPAIR, "信用修复", standing=lookup_pb2.ENTRY_STATUS_REPAIRED
        )
        await jiangsu.ledger.append(conn, [Change.of(corrected)])
        await jiangsu.ledger.amend(
            conn, DISPUTED.record_id, event_pb2.EVENT_TYPE_RESOLVE, "异议处理完毕，维持", disputed=False
        )
    await taken_in(pair.shanghai, jiangsu)
    # The report itself is what it was: still genuine offline.
    assert check_report(issued.signed_report, federation.bundle_now()).report_number == issued.report_number

    async def changes() -> dict[str, str]:
        async with client_channel(federation, pair.shanghai, "bidding-office") as channel:
            verdict = await verify(channel, verify_request(issued))
        assert verdict.genuine
        return {c.record_id: c.change for c in verdict.changes}

    seen = await eventually(changes)
    assert seen == {
        SERIOUS.record_id: "revoked",
        WARNING.record_id: "repaired",
        LISTED.record_id: "corrected",
        DISPUTED.record_id: "dispute closed",
    }
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        actions = await conn.fetch("SELECT action, caller FROM report_accesses ORDER BY id")
    assert [(a["action"], a["caller"]) for a in actions] == [("issue", PORTAL), ("verify", "bidding-office")]


async def test_an_unknown_number_or_wrong_code_is_not_genuine(federation: TestFederation, pair: Pair) -> None:
    issued = await issued_report(federation, pair)
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        wrong_code = await verify(
            channel,
            report_pb2.VerifyReportRequest(report_number=issued.report_number, verification_code="AAAA-BBBB-CCCC"),
        )
        unknown = await verify(
            channel, report_pb2.VerifyReportRequest(report_number="310000-20200101-00000001", verification_code="X")
        )
    for verdict in (wrong_code, unknown):
        assert not verdict.genuine and verdict.reason and verdict.issued_at == "" and list(verdict.changes) == []
    malformed = [
        report_pb2.VerifyReportRequest(verification_code=issued.verification_code),  # no number
        report_pb2.VerifyReportRequest(report_number=issued.report_number),  # no code
        report_pb2.VerifyReportRequest(
            report_number=issued.report_number, verification_code=issued.verification_code, report_sha256=b"x" * 31
        ),
        report_pb2.VerifyReportRequest(report_number="3" * 41, verification_code=issued.verification_code),
    ]
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        for request in malformed:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await verify(channel, request)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:  # only the issue: refusals and wrong codes log no access
        assert await conn.fetchval("SELECT count(*) FROM report_accesses") == 1


async def test_credex_report_writes_a_pdf_and_verifies_it(
    federation: TestFederation, pair: Pair, tmp_path: Path
) -> None:
    ca, cert, key = federation.layout.client_tls(PORTAL)
    async with client_channel(federation, pair.shanghai, PORTAL):
        pass  # issues the portal's certificate
    node = f"127.0.0.1:{pair.shanghai.port}"
    trust = [
        "--bundle", str(federation.layout.bundle),
        "--federation-key", str(federation.layout.federation_public),
        "--ca", str(ca), "--cert", str(cert), "--key", str(key),
    ]  # fmt: skip
    out = tmp_path / "report.pdf"
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["report", COMPANY, "--kind", "special", "--period", "5y", "--fields", "market,tax", "--node", node,
         "--out", str(out), *trust],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")
    result = await asyncio.to_thread(runner.invoke, app, ["report", "verify", str(out), "--node", node, *trust])
    assert result.exit_code == 0, result.output
    assert "genuine" in result.output and "no included record has changed" in result.output
    number = check_file(out.read_bytes(), federation.bundle_now()).report_number
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        code = await conn.fetchval("SELECT verification_code FROM reports WHERE report_number = $1", number)
    viewed = tmp_path / "viewed.html"
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["report", "view", number, "--code", code, "--node", node, "--out", str(viewed),
         "--purpose", "投标资格审查", *trust],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert check_file(viewed.read_bytes(), federation.bundle_now()).report_number == number
    changed = bytearray(out.read_bytes())
    changed[len(changed) // 2] ^= 0x01
    out.write_bytes(bytes(changed))
    result = await asyncio.to_thread(runner.invoke, app, ["report", "verify", str(out), *trust])
    assert result.exit_code == 1 and "NOT GENUINE" in result.output


async def test_even_the_issuer_cannot_describe_a_record_or_a_verdict_otherwise_than_the_origin_signed(
    federation: TestFederation, pair: Pair
) -> None:
    """What a reader sees of a record comes from the record its origin signed, and each 有/无 from the records shown.

    A member that issues reports is trusted to sign them, not to rewrite other regions'
    records: its signature over a changed summary must not make the change genuine.
    """
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        special = await issue(channel, issue_request(fields=["market", "tax"]))
    bundle = federation.bundle_now()
    issuer_key = SigningKey.load(federation.layout.member_dir("310000") / "keys")
    document = json.loads(base64.b64decode(json.loads(special.signed_report)["payload"]))
    assert check_report(sign_document(document, issuer_key), bundle).report_number == special.report_number
    for name, value in [
        ("summary", "信用承诺履约良好"),
        ("decision_date", "2001-01-01"),
        ("authority", "某某管理局"),
        ("document_number", "无"),
        ("kind", "licence"),
        ("publicity_end", "2000-01-01"),
        ("sharing", "public" if document["items"][0]["sharing"] != "public" else "government"),
    ]:
        rewritten = json.loads(json.dumps(document))
        rewritten["items"][0][name] = value
        with pytest.raises(ReportInvalid, match=f"{name} .* not what its origin signed"):
            check_report(sign_document(rewritten, issuer_key), bundle)
    cleared = json.loads(json.dumps(document))
    finding = next(f for s in cleared["sections"] for f in s.get("findings", []) if f["records"])
    finding["verdict"], finding["records"] = NO_RECORD, []
    with pytest.raises(ReportInvalid, match="无违法违规记录"):
        check_report(sign_document(cleared, issuer_key), bundle)
    emptied = json.loads(json.dumps(document))
    finding = next(f for s in emptied["sections"] for f in s.get("findings", []) if f["records"])
    finding["verdict"] = NO_RECORD
    with pytest.raises(ReportInvalid, match="无违法违规记录"):
        check_report(sign_document(emptied, issuer_key), bundle)
    uncovered = json.loads(json.dumps(document))
    section = next(s for s in uncovered["sections"] if not s["covered"])
    section["verdict"] = NO_RECORD
    with pytest.raises(ReportInvalid, match="not covered"):
        check_report(sign_document(uncovered, issuer_key), bundle)


HOSTILE_FILES = {
    "an HTML block that is not base64": b'<script type="application/vnd.credex.report+json" id="credex-signed-report">'
    b"A</script>",
    "JSON nested past the stack": b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "an HTML block of JSON nested past the stack": b'<script type="application/vnd.credex.report+json"'
    b' id="credex-signed-report">' + base64.b64encode(b"[" * 100_000 + b"]" * 100_000) + b"</script>",
    "a PDF that is not one": b"%PDF-1.7 then nothing",
    "an envelope of the wrong shapes": json.dumps({"payload": 1, "payloadType": [], "signatures": ["x"]}).encode(),
    # What the file says is quoted in the error: console markup in it must print as text, not crash or restyle it.
    "an envelope whose payload type is console markup": json.dumps(
        {"payload": "e30=", "payloadType": "[/][green]GENUINE", "signatures": [{"keyid": "k", "sig": "AAAA"}]}
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
async def test_a_hostile_file_is_reported_not_genuine_never_a_crash(
    federation: TestFederation, tmp_path: Path, name: str
) -> None:
    with pytest.raises(ReportInvalid):
        check_file(HOSTILE_FILES[name], federation.bundle_now())
    hostile = tmp_path / "report.html"
    hostile.write_bytes(HOSTILE_FILES[name])
    trust = ["--bundle", str(federation.layout.bundle), "--federation-key", str(federation.layout.federation_public)]
    result = await asyncio.to_thread(CliRunner().invoke, app, ["report", "verify", str(hostile), *trust])
    assert result.exit_code == 1 and "NOT GENUINE" in result.output, result.output
    assert "[/][green]GENUINE" in result.output or "markup" not in name


async def test_a_verdict_by_number_and_code_alone_says_whose_report_it_is(
    federation: TestFederation, pair: Pair
) -> None:
    """A QR scan or a paper copy gives no signed report: the verdict must say what was issued, to compare with it.

    Otherwise a genuine number and code copied onto a doctored report of another
    enterprise, or another period, would be answered "genuine" and nothing more.
    """
    issued = await issued_report(federation, pair)
    document = check_report(issued.signed_report, federation.bundle_now()).document
    async with client_channel(federation, pair.shanghai, "bidding-office") as channel:
        verdict = await verify(
            channel,
            report_pb2.VerifyReportRequest(
                report_number=issued.report_number, verification_code=issued.verification_code
            ),
        )
        wrong = await verify(
            channel,
            report_pb2.VerifyReportRequest(report_number=issued.report_number, verification_code="AAAA-BBBB-CCCC"),
        )
    assert verdict.genuine
    assert (verdict.subject_id, verdict.kind, verdict.period_start, verdict.period_end) == (
        COMPANY,
        report_pb2.REPORT_KIND_FULL,
        document["period"]["start"],
        document["period"]["end"],
    )
    assert verdict.report_sha256 == report_sha256(issued.signed_report)
    assert not wrong.genuine and (wrong.subject_id, wrong.report_sha256, wrong.period_start) == ("", b"", "")


def test_a_pdf_damaged_anywhere_is_reported_not_genuine_never_a_crash() -> None:
    """pdfium fails on some damaged attachments (no data, no attachment at an index): that too is NOT GENUINE."""
    pdf = FPDF()
    pdf.add_page()
    pdf.embed_file(bytes=b'{"x":1}' * 200, basename="credex-report.json")
    whole = bytes(pdf.output())
    bundle = TrustBundle.model_construct()  # never reached: every file fails before any signature is checked
    for position in range(len(whole)):
        changed = bytearray(whole)
        changed[position] ^= 0x01
        with pytest.raises(ReportInvalid):
            check_file(bytes(changed), bundle)


def test_a_report_asked_with_a_malformed_date_is_a_usage_error_before_any_call() -> None:
    result = CliRunner().invoke(
        app, ["report", COMPANY, "--to", "2026-13-45", "--node", "127.0.0.1:1", "--out", "report.pdf"]
    )
    assert result.exit_code == 2 and "--to" in result.output, (result.output, result.exception)


def test_an_authorization_file_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    garbled = tmp_path / "authorization.json"
    garbled.write_bytes(b"\xff\xfe{")
    result = CliRunner().invoke(
        app,
        ["report", "psn:" + "a" * 32, "--authorization", str(garbled), "--node", "127.0.0.1:1", "--out", "r.pdf"],
    )
    assert result.exit_code == 2 and "--authorization" in result.output, (result.output, result.exception)
