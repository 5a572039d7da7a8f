"""Reports: generation time for a subject with 50 records, beside the raw limits of the same run.

    python -m bench.reports [--records 50] [--runs 10]

One node holds the subject's records under a signed checkpoint. Timed: issuing the
special and the full report (read the records, build an inclusion proof per record,
sign, register), rendering it to PDF, and checking the PDF offline (the issuer's
signature over the PDF's bytes, then the signed report and every proof; nothing is
rendered again). Raw limits, measured here: Ed25519 signatures and verifications
on one core, and fpdf2 writing a PDF of the same page count and text with the same
font but none of credex's work (no QR code, no embedded report).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable

import pypdfium2  # type: ignore[import-untyped]
from fpdf import FPDF

from bench.common import federation, line, raw_ed25519, run, services, start_node
from credex.domain import uscc as uscc_codes
from credex.node.ledger.appender import Change
from credex.node.reports import FieldsList, Issuer, ReportRequest, check_report
from credex.node.reports.pdf_signature import sign_pdf
from credex.node.reports.rendering import FONT_INDEX, check_file, font_path, render_pdf
from credex.v1 import record_pb2

SUBJECT = uscc_codes.make("91", "310115", "BENCH001")
AUTHORITIES = [
    "上海市市场监督管理局",
    "国家税务总局上海市税务局",
    "上海市生态环境局",
    "上海市应急管理局",
    "上海市交通委员会",
]


def records(n: int) -> list[record_pb2.Record]:
    made = []
    for i in range(n):
        kind = record_pb2.KIND_BLACK_LIST if i % 10 == 0 else record_pb2.KIND_PENALTY
        record = record_pb2.Record(
            record_id=f"310000-B-{i}",
            origin="310000",
            kind=kind,
            subject=record_pb2.Subject(
                type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=SUBJECT, name="上海基准测试有限公司"
            ),
            decision_date=f"{2023 + i % 3}-0{1 + i % 9}-1{i % 10}",
            sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
            publicity=record_pb2.PublicityWindow(start="2023-01-01", end="2099-12-31"),
            deciding_authority=record_pb2.Authority(name=AUTHORITIES[i % len(AUTHORITIES)]),
            document_number=f"沪罚字〔2024〕第{i:05d}号",
        )
        if kind == record_pb2.KIND_PENALTY:
            record.penalty.content = f"违反《某某条例》第{i}条，罚款 {1000 * (i + 1)} 元，责令改正"
            record.penalty.fine_yuan = str(1000 * (i + 1))
        else:
            record.black_list.list_name = "严重失信主体名单"
        made.append(record)
    return made


async def timed(runs: int, work: Callable[[], Awaitable[object]]) -> float:
    """Median seconds of ``runs`` runs."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def raw_pdf(pages: int, lines: list[str]) -> bytes:
    """fpdf2 alone: the same font, the same text, the same page count; nothing else."""
    pdf = FPDF(format="A4")
    pdf.add_font("cjk", fname=str(font_path()), collection_font_number=FONT_INDEX)
    pdf.set_font("cjk", size=9)
    for page in range(pages):
        pdf.add_page()
        for text in lines[page::pages]:
            pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


async def main(n: int, runs: int) -> None:
    async with services() as running:
        built = federation(running)
        node = await start_node(built, running, "310000", checkpoint={"every_seconds": 0.2})
        try:
            assert node.pool is not None
            async with node.pool.acquire() as conn, conn.transaction():
                await node.ledger.append(conn, [Change.of(r) for r in records(n)])
            while (held := await node.keeper.latest("310000")) is None or held.size < n:
                await asyncio.sleep(0.1)
            bundle = node.bundle
            fields = FieldsList.shipped()
            issuer = Issuer("310000", node.pool, node.logbook, node.keeper, node.key, node.config.reports, fields)

            def request(kind: str) -> ReportRequest:
                return ReportRequest(
                    subject_id=SUBJECT,
                    kind=kind,
                    period_start=dt.date(2022, 1, 1),
                    period_end=dt.date.today(),
                    fields=list(fields.fields),
                    caller="bench",
                    role="public",
                    sharing_levels=frozenset({record_pb2.SHARING_LEVEL_PUBLIC}),
                )

            print(f"reports of a subject with {n} records, median of {runs} runs")
            signing, verifying = raw_ed25519()
            line("raw Ed25519 sign (1 KiB)", signing, "/s")
            line("raw Ed25519 verify (1 KiB)", verifying, "/s")
            for kind in ("special", "full"):
                issued = await issuer.issue(request(kind), bundle)
                seconds = await timed(runs, lambda kind=kind: issuer.issue(request(kind), bundle))  # type: ignore[misc]
                line(f"issue {kind} report (proofs, sign, register)", seconds * 1000, "ms")
            checked = check_report(issued.signed, bundle)
            items = len(checked.document["items"])
            pdf = sign_pdf(render_pdf(checked), node.key, issued.signed)  # as the service signs it
            pages = len(pypdfium2.PdfDocument(pdf))
            text = [
                f"{i['decision_date']} {i['authority']} {i['document_number']} {i['summary']}"
                for i in checked.document["items"]
            ]
            # Interleaved, so that a busy machine slows both alike.
            render_runs, raw_runs, verify_runs = [], [], []
            for _ in range(runs):
                render_runs.append(await timed(1, lambda: asyncio.to_thread(render_pdf, checked)))
                raw_runs.append(await timed(1, lambda: asyncio.to_thread(raw_pdf, pages, text * 2)))
                verify_runs.append(await timed(1, lambda: asyncio.to_thread(check_file, pdf, bundle)))
            render_s, raw_s = statistics.median(render_runs), statistics.median(raw_runs)
            print(f"  the full report: {items} records, {pages} pages, {len(pdf):,} bytes of PDF")
            line("render the report to PDF", render_s * 1000, "ms", raw_s * 1000, "raw fpdf2 same pages")
            check_s = await timed(runs, lambda: asyncio.to_thread(check_report, issued.signed, bundle))
            floor = (2 * items + 1) / verifying * 1000  # an envelope and a checkpoint per record, and the report
            line("check the signed report offline", check_s * 1000, "ms", floor, "raw Ed25519 verifies")
            verify_s = statistics.median(verify_runs)
            line(
                "verify the PDF offline (its signature, then the report)", verify_s * 1000, "ms", check_s * 1000,
                "check the signed report alone",
            )  # fmt: skip
        finally:
            await built.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    run(main(args.records, args.runs))
