"""A signed report as a PDF or an HTML page, and reading one back to check it offline.

The signed report travels inside the file (a PDF embedded file, an HTML data block).
A PDF is rendered and signed by the issuing node itself: its signature covers every
byte of the file (:mod:`credex.node.reports.pdf_signature`), so a verifier checks the
bytes it has against the trust bundle and never renders anything; any fpdf2 or font
version verifies any PDF. A verifier does not parse the PDF at all: the signature
names the span of the file that holds the attached report (stored uncompressed), at
most :data:`MAX_ATTACHMENT_BYTES`, so a hostile file cannot make it inflate anything
or hold more than the file it was given, itself capped. An HTML page is still
confirmed by rendering its embedded report again and comparing byte for byte (it
depends on this module and segno only, no font or PDF library).

Chinese text must render on a machine without system fonts: the font is Noto Sans
CJK SC from the ``manimgx-fonts-cjk`` wheel (SIL Open Font License 1.1), subset and
embedded by fpdf2, so the PDF needs no font on the reader's machine either.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import io
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import segno

from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node.reports.document import CheckedReport, ReportInvalid, check_report
from credex.node.reports.pdf_signature import pdf_signer, sign_pdf

ATTACHMENT = "credex-report.json"
MAX_FILE_BYTES = 64 * 1024 * 1024  # a report file larger than this is refused before it is read
MAX_ATTACHMENT_BYTES = 16 * 1024 * 1024  # the signed report inside a PDF; reports are hundreds of kB
MAX_ATTACHMENTS = 16
_FONT = "cjk"
FONT_INDEX = 2  # Simplified Chinese in the Noto Sans CJK collection (JP, KR, SC, TC, HK)
_HTML_BLOCK = re.compile(
    rb'<script type="application/vnd\.credex\.report\+json" id="credex-signed-report">([A-Za-z0-9+/=]*)</script>'
)
_KIND_NAMES = {
    "penalty": "行政处罚",
    "black_list": "严重失信主体名单",
    "licence": "行政许可",
    "red_list": "守信激励",
    "dishonest_debtor": "失信被执行人",
    "commitment": "信用承诺",
    "contract": "合同履约",
    "household_worker": "家政从业",
}


@cache
def font_path() -> Path:
    """The CJK font file the project's dependencies install."""
    return Path(str(resources.files("manimgx_fonts_cjk").joinpath("NotoSansCJK-VF.otf.ttc")))


def _lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (style, text) lines, in reading order: one layout for PDF and HTML alike."""
    subject = document["subject"]
    period = document["period"]
    lines: list[tuple[str, str]] = [
        ("title", document["title"]),
        ("meta", f"报告编号：{document['report_number']}"),
        ("meta", f"验证码：{document['verification_code']}"),
        ("meta", f"生成时间：{document['issued_at']}"),
        ("meta", f"数据截止：{document['data_cutoff']['at']}"),
        ("meta", f"出具节点：{document['issuer']['name']}（{document['issuer']['origin']}）"),
        ("meta", f"信息主体：{subject['name'] or '（名称未在本联盟登记）'}"),
        ("meta", f"统一社会信用代码 / 主体标识：{subject['id']}"),
        ("meta", f"报告期：{period['start']} 至 {period['end']}"),
        ("meta", "领域：" + "、".join(f["name"] for f in document["fields"])),
        ("meta", "覆盖地区：" + "、".join(f"{r['name']}（{r['origin']}）" for r in document["regions"])),
    ]
    items = {i["record_id"]: i for i in document["items"]}
    for section in document["sections"]:
        lines.append(("heading", section["name"]))
        if not section["covered"]:
            lines.append(("verdict", section["verdict"]))
            continue
        lines.append(("small", "数据来源：" + "、".join(f"{s['name']}（{s['origin']}）" for s in section["sources"])))
        for finding in section.get("findings", []):
            lines.append(("verdict", f"{finding['field_name']}：{finding['verdict']}"))
            lines.extend(("item", _item_line(items[r])) for r in finding["records"])
        if "findings" not in section:
            if not section["records"]:
                lines.append(("verdict", "报告期内无记录"))
            lines.extend(("item", _item_line(items[r])) for r in section["records"])
        else:
            repaired = [r for r in section["records"] if items[r]["shown_as"] != "在公示期"]
            lines.extend(("item", _item_line(items[r])) for r in repaired)
    lines.append(("heading", "说明"))
    lines.extend(("small", note) for note in document["notes"])
    lines.append(("small", f"核验：{document['verify_url']}"))
    return lines


def _item_line(item: dict[str, Any]) -> str:
    marks = [item["shown_as"]] + (["异议中"] if item["disputed"] else [])
    return (
        f"· [{'，'.join(marks)}] {_KIND_NAMES.get(item['kind'], item['kind'])} {item['decision_date']}"
        f" {item['authority']} {item['document_number']} {item['summary']}"
        f"（来源 {item['origin']}，记录 {item['record_id']}，日志序号 {item['seq']}）"
    )


def render_pdf(checked: CheckedReport) -> bytes:
    """The report as the issuing node renders it; imports fpdf2 here, so that verifying needs no renderer."""
    from fpdf import FPDF

    document = checked.document
    issued = dt.datetime.fromisoformat(document["issued_at"])
    pdf = FPDF(format="A4")
    pdf.set_creation_date(issued)
    pdf.set_title(f"{document['title']} {document['report_number']}")
    pdf.set_author(document["issuer"]["name"] or document["issuer"]["origin"])
    pdf.set_subject(document["subject"]["id"])
    pdf.add_font(_FONT, fname=str(font_path()), collection_font_number=FONT_INDEX)
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    qr = io.BytesIO()
    segno.make(document["verify_url"], error="m").save(qr, kind="png", scale=4, border=2)
    qr.seek(0)
    pdf.image(qr, x=pdf.w - pdf.r_margin - 32, y=pdf.t_margin, w=32, h=32)
    sizes = {"title": 18, "heading": 13, "meta": 10, "verdict": 11, "item": 9, "small": 8.5}
    for style, text in _lines(document):
        pdf.set_font(_FONT, size=sizes[style])
        width = pdf.w - pdf.l_margin - pdf.r_margin - (36 if pdf.get_y() < pdf.t_margin + 34 else 0)
        if style == "heading":
            pdf.ln(3)
        pdf.multi_cell(width, sizes[style] * 0.55, text, new_x="LMARGIN", new_y="NEXT")
    pdf.embed_file(
        bytes=checked.signed,
        basename=ATTACHMENT,
        modification_date=issued,
        creation_date=issued,
        desc="the signed report: check with `credex report verify` and the federation's trust bundle",
        mime_type="application/json",
        compress=False,  # read back as stored: nothing for a verifier to inflate
    )
    return bytes(pdf.output())


def issued_pdf(signed: bytes, bundle: TrustBundle, key: SigningKey) -> bytes:
    """The issuing node's PDF of its signed report: checked as any verifier would, rendered, its bytes signed.

    CPU work of a second or so: the service runs it in a worker thread, off the event loop.
    """
    return sign_pdf(render_pdf(check_report(signed, bundle)), key, signed)


def render_html(checked: CheckedReport) -> bytes:
    document = checked.document
    tags = {"title": "h1", "heading": "h2", "meta": "p", "verdict": "p", "item": "p", "small": "p"}
    body = "\n".join(
        f'<{tags[style]} class="{style}">{html.escape(text)}</{tags[style]}>' for style, text in _lines(document)
    )
    qr = segno.make(document["verify_url"], error="m").svg_inline(scale=4)
    block = base64.b64encode(checked.signed).decode()
    page = (
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(document['title'])} {html.escape(document['report_number'])}</title>\n"
        "<style>body{font-family:'Noto Sans CJK SC','Noto Sans SC',sans-serif;max-width:50em;margin:2em auto}"
        ".qr{float:right}.verdict{font-weight:bold}.item{margin-left:1em}.small{font-size:85%;color:#444}</style>\n"
        f'</head>\n<body>\n<div class="qr">{qr}</div>\n{body}\n'
        f'<script type="application/vnd.credex.report+json" id="credex-signed-report">{block}</script>\n'
        "</body>\n</html>\n"
    )
    return page.encode()


def render(checked: CheckedReport, suffix: str) -> bytes:
    """The report as ``suffix`` says (``.pdf`` or ``.html``; ``.json``: the signed report itself)."""
    if suffix == ".pdf":
        return render_pdf(checked)
    if suffix in {".html", ".htm"}:
        return render_html(checked)
    if suffix == ".json":
        return checked.signed
    raise ValueError(f"cannot write a report as {suffix!r}: use .pdf, .html or .json")


def embedded_report(data: bytes) -> tuple[bytes, str]:
    """The signed report inside an HTML page or a signed .json, and the file's form: ``html`` or ``json``."""
    _within_cap(len(data))
    found = _HTML_BLOCK.search(data)
    if found is not None:
        try:
            return base64.b64decode(found.group(1), validate=True), "html"
        except binascii.Error as exc:
            raise ReportInvalid(f"the HTML page's signed report is not base64: {exc}") from None
    if data.lstrip().startswith(b"{"):
        return data, "json"
    raise ReportInvalid("not a credex report: neither a PDF nor an HTML page with a signed report, nor one itself")


def _within_cap(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise ReportInvalid(f"the file has {size:,} bytes; a credex report file has at most {MAX_FILE_BYTES:,}")


def check_file(data: bytes, bundle: TrustBundle) -> CheckedReport:
    """Check a report file offline: the PDF's signature over its bytes, the signed report, every proof in it."""
    _within_cap(len(data))
    if data.startswith(b"%PDF"):
        signed_pdf = pdf_signer(data, bundle, MAX_ATTACHMENT_BYTES)  # the PDF itself is never parsed
        checked = check_report(signed_pdf.report, bundle)
        # The same node, perhaps with a newer key when a report is viewed again later.
        if signed_pdf.origin != checked.issuer:
            raise ReportInvalid(
                f"the PDF is signed by {signed_pdf.origin}; the report inside it was issued by {checked.issuer}"
            )
        return checked
    signed, form = embedded_report(data)
    checked = check_report(signed, bundle)
    if form == "html" and render_html(checked) != data:
        raise ReportInvalid("the HTML is not the rendering of the report signed inside it: its content was changed")
    return checked
