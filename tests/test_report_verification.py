"""Verifying a report: genuine or not, when issued, and what changed since (credit-use.md, Report rule 4).

Offline, with the trust bundle alone: the issuer's signature, every included record
against its origin's signed envelope and an inclusion proof, the issuing node's
signature over every byte of the PDF (no renderer needed), and the HTML being exactly
the rendering of the signed report inside it. Online, the issuing node's
register: whether it issued this report, and which included records its origin has
since repaired, corrected or revoked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fpdf import FPDF
from stdnum.cn import ric
from typer.testing import CliRunner

from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node.cli import app
from credex.node.ledger.appender import Change
from credex.node.reports import ReportInvalid, check_report
from credex.node.reports.document import NO_RECORD, report_sha256, sign_document
from credex.node.reports.pdf_signature import sign_pdf
from credex.node.reports.rendering import MAX_ATTACHMENT_BYTES, MAX_FILE_BYTES, check_file, render_html, render_pdf
from credex.v1 import event_pb2, lookup_pb2, record_pb2, report_pb2

from .callers import audit_rows, client_channel
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
        request = issue_request(kind=report_pb2.REPORT_KIND_FULL)
        request.pdf = True  # the node renders the PDF and signs its bytes
        return await issue(channel, request)


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
    assert issued.pdf.startswith(b"%PDF")
    for data in (issued.pdf, render_html(checked), issued.signed_report):
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
    pdf = issued.pdf
    contents = pdf.rindex(b"/Contents <") + len(b"/Contents <")
    # Positions across the file: header, page content, font, the embedded report, the signature, the trailer.
    for position in (10, len(pdf) // 5, len(pdf) // 2, len(pdf) * 4 // 5, contents + 5, contents + 3000, len(pdf) - 40):
        changed = bytearray(pdf)
        changed[position] ^= 0x01
        with pytest.raises(ReportInvalid):
            check_file(bytes(changed), bundle)
    for added in (b"\n", b"% a later incremental update\n"):  # bytes after the signed ones
        with pytest.raises(ReportInvalid, match="does not cover the whole file"):
            check_file(pdf + added, bundle)
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
    viewed_pdf = tmp_path / "viewed.pdf"  # rendered and signed again by the issuing node, for this view
    result = await asyncio.to_thread(
        runner.invoke, app, ["report", "view", number, "--code", code, "--node", node, "--out", str(viewed_pdf), *trust]
    )
    assert result.exit_code == 0, result.output
    assert check_file(viewed_pdf.read_bytes(), federation.bundle_now()).report_number == number
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


def test_a_missing_or_malformed_authorization_file_is_a_usage_error_that_never_quotes_the_file(tmp_path: Path) -> None:
    """The file is a person's authorization: its ID number stays out of the message, as for ``credex check``."""
    number = "11010519491231002" + ric.calc_check_digit("11010519491231002" + "0")
    malformed = tmp_path / "authorization.json"
    malformed.write_text(json.dumps({number: "张某"}), encoding="utf-8")
    for path in (malformed, tmp_path / "missing.json"):
        result = CliRunner().invoke(
            app, ["report", "psn:" + "a" * 32, "--authorization", str(path), "--node", "127.0.0.1:1", "--out", "r.pdf"]
        )
        assert result.exit_code == 2 and "--authorization" in result.output, (result.output, result.exception)
        assert number not in result.output


def trust_options(federation: TestFederation) -> list[str]:
    return ["--bundle", str(federation.layout.bundle), "--federation-key", str(federation.layout.federation_public)]


def verify_in_a_fresh_process(federation: TestFederation, path: Path, prelude: str) -> subprocess.CompletedProcess[str]:
    """``credex report verify PATH`` in a new interpreter that first runs ``prelude``."""
    code = f"{prelude}\nfrom credex.node.cli import app\napp()"
    return subprocess.run(
        [sys.executable, "-c", code, "report", "verify", str(path), *trust_options(federation)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_a_pdf_verifies_on_a_machine_without_the_renderer_or_the_font(
    federation: TestFederation, pair: Pair, tmp_path: Path
) -> None:
    """The PDF's bytes are what the issuer signed: no fpdf2, no font wheel, and nothing is rendered again."""
    issued = await issued_report(federation, pair)
    path = tmp_path / "report.pdf"
    path.write_bytes(issued.pdf)
    no_renderer = "import sys\nsys.modules['fpdf'] = None\nsys.modules['manimgx_fonts_cjk'] = None"
    result = await asyncio.to_thread(verify_in_a_fresh_process, federation, path, no_renderer)
    assert result.returncode == 0 and "genuine" in result.stdout, (result.stdout, result.stderr)
    assert issued.report_number in result.stdout
    changed = bytearray(issued.pdf)
    changed[len(changed) // 3] ^= 0x01
    path.write_bytes(bytes(changed))
    result = await asyncio.to_thread(verify_in_a_fresh_process, federation, path, no_renderer)
    assert result.returncode == 1 and "NOT GENUINE" in result.stdout + result.stderr, (result.stdout, result.stderr)


async def test_a_pdf_not_signed_by_the_issuer_of_the_report_inside_it_is_not_genuine(
    federation: TestFederation, pair: Pair
) -> None:
    issued = await issued_report(federation, pair)
    bundle = federation.bundle_now()
    rendered = render_pdf(check_report(issued.signed_report, bundle))  # the same report, as anyone may render it
    with pytest.raises(ReportInvalid, match="no issuer's signature"):
        check_file(rendered, bundle)
    with pytest.raises(ReportInvalid, match="issued by 310000"):  # a member's genuine key, but not the issuer's
        check_file(sign_pdf(rendered, pair.jiangsu.key, issued.signed_report), bundle)
    with pytest.raises(ReportInvalid, match="trust bundle does not list"):
        check_file(sign_pdf(rendered, SigningKey.generate(), issued.signed_report), bundle)
    again = check_file(sign_pdf(rendered, pair.shanghai.key, issued.signed_report), bundle)
    assert again.report_number == issued.report_number


def bomb_pdf(inflated: int) -> bytes:
    """A PDF whose attached ``credex-report.json`` inflates to ``inflated`` zero bytes: a decompression bomb."""
    squeeze = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    stream = b"".join(squeeze.compress(chunk) for _ in range(inflated >> 20)) + squeeze.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(credex-report.json) 4 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Type /Filespec /F (credex-report.json) /UF (credex-report.json) /EF << /F 5 0 R >> >>",
        b"<< /Type /EmbeddedFile /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_pdf_whose_attachment_inflates_to_gigabytes_is_refused_without_inflating_it(tmp_path: Path) -> None:
    """The signature is checked first, over the file's bytes as they are: a hostile PDF is never parsed.

    In a fresh process, so that its peak resident memory is this check's alone.
    """
    path = tmp_path / "bomb.pdf"
    path.write_bytes(bomb_pdf(1 << 30))
    code = (
        "import resource, sys\n"
        "from credex.crypto.trust import TrustBundle\n"
        "from credex.node.reports import ReportInvalid\n"
        "from credex.node.reports.rendering import check_file\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    check_file(data, TrustBundle.model_construct())\n"
        "except ReportInvalid as exc:\n"
        "    print('refused:', exc)\n"
        "print('grew_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "refused: the PDF carries no issuer's signature" in result.stdout, result.stdout
    grew_kib = int(result.stdout.split("grew_kib")[1])
    assert grew_kib < 64 * 1024, result.stdout  # a gigabyte inflated would show here


async def test_an_attachment_over_the_cap_is_refused_even_in_a_pdf_the_issuer_signed(
    federation: TestFederation, pair: Pair
) -> None:
    pdf = FPDF()
    pdf.add_page()
    oversized = b"x" * (MAX_ATTACHMENT_BYTES + 1)
    pdf.embed_file(bytes=oversized, basename="credex-report.json", compress=False)
    signed = sign_pdf(bytes(pdf.output()), pair.shanghai.key, oversized)
    with pytest.raises(ReportInvalid, match="one has at most"):
        check_file(signed, federation.bundle_now())


async def test_a_report_file_over_the_size_cap_is_refused_before_it_is_read(
    federation: TestFederation, tmp_path: Path
) -> None:
    huge = tmp_path / "report.pdf"
    with huge.open("wb") as sparse:  # no disk or memory spent: a hole of MAX_FILE_BYTES
        sparse.truncate(MAX_FILE_BYTES + 1)
    verify_it = ["report", "verify", str(huge), *trust_options(federation)]
    result = await asyncio.to_thread(CliRunner().invoke, app, verify_it)
    assert result.exit_code == 1 and "NOT GENUINE" in result.output and "at most" in result.output, result.output


async def test_a_report_number_that_is_an_id_number_is_answered_not_genuine_and_audited_without_it(
    federation: TestFederation,
) -> None:
    """VerifyReport answers any number (OK, not genuine), so the number a caller typed must not reach the trail."""
    shanghai = await federation.start_node("310000")
    number = "11010519491231002" + ric.calc_check_digit("11010519491231002" + "0")
    async with client_channel(federation, shanghai, PORTAL) as channel:
        verdict = await verify(channel, report_pb2.VerifyReportRequest(report_number=number, verification_code="X"))
    assert not verdict.genuine
    rows = await audit_rows(shanghai, "VerifyReport")
    assert rows and all(row["status"] == "OK" for row in rows)
    assert all(number not in " ".join(str(value) for value in row.values()) for row in rows), rows


async def test_a_pdf_signature_moved_to_another_pdf_or_repeated_after_the_signed_bytes_is_not_genuine(
    federation: TestFederation, pair: Pair
) -> None:
    """The signature holds the digest of the very bytes around it: it proves nothing about any other file."""
    issued = await issued_report(federation, pair)
    bundle = federation.bundle_now()
    assert check_file(issued.pdf, bundle).report_number == issued.report_number
    signature = re.compile(rb"/Credex.Report \[(\d{10}) (\d{10})\] /ByteRange \[[\d ]{43}\] /Contents <([0-9A-Fa-f]+)>")
    honest = signature.search(issued.pdf)
    assert honest is not None
    # Moved: another PDF of the same length and layout (one byte of its drawing changed), given the same /Contents.
    other = bytearray(issued.pdf)
    other[len(other) // 3] ^= 0x01
    other[honest.start(3) : honest.end(3)] = honest.group(3)
    with pytest.raises(ReportInvalid, match="changed after it was signed"):
        check_file(bytes(other), bundle)
    # Repeated: the same signature dictionary again after the file, its /ByteRange made to cover the longer file.
    head = issued.pdf + b"9999 0 obj\n<< /Type /Sig "
    opening = b"/Credex.Report [%s %s] /ByteRange [" % (honest.group(1), honest.group(2))
    hole_start = len(head) + len(opening) + 43 + len(b"] /Contents ")
    hole_end = hole_start + len(honest.group(3)) + 2
    closing = b" >>\nendobj\n%%EOF\n"
    ranges = b"%010d %010d %010d %010d" % (0, hole_start, hole_end, len(closing))
    repeated = head + opening + ranges + b"] /Contents <" + honest.group(3) + b">" + closing
    with pytest.raises(ReportInvalid, match="changed after it was signed"):
        check_file(repeated, bundle)
    # Two signatures: a second one over the signed PDF, by a key the bundle does not list, is the one that counts.
    with pytest.raises(ReportInvalid, match="trust bundle does not list"):
        check_file(sign_pdf(issued.pdf, SigningKey.generate(), issued.signed_report), bundle)
    # A /ByteRange that leaves bytes out: bytes added after the signed end.
    with pytest.raises(ReportInvalid, match="does not cover the whole file"):
        check_file(issued.pdf + b"% appended\n", bundle)
