"""The demo's report scene: the company Jiangsu listed asks Shanghai for its special report.

Shanghai issues the 专项信用报告 over mutual TLS, the demo writes it as a PDF into the
working folder and checks it offline with the trust bundle alone, as a bidding office
would on receiving it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from rich.console import Console

from credex.crypto.trust import TrustBundle
from credex.node.channels import open_channel
from credex.node.demo.federation import LocalFederation
from credex.node.reports import check_report
from credex.node.reports.rendering import check_file
from credex.node.runtime import Node
from credex.v1 import report_pb2, report_pb2_grpc


async def special_report(
    console: Console,
    federation: LocalFederation,
    shanghai: Node,
    bundle: TrustBundle,
    subject: str,
    folder: Path,
    timeout: float = 30,
) -> None:
    ca, cert, key = federation.layout.client_tls()
    request = report_pb2.IssueReportRequest(
        subject=subject, kind=report_pb2.REPORT_KIND_SPECIAL, purpose="demo: 投标 (信用代证)", pdf=True
    )
    started = time.monotonic()
    async with open_channel(f"127.0.0.1:{shanghai.port}", ca=ca, cert=cert, key=key) as channel:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        while True:
            try:
                issued = await stub.IssueReport(request, timeout=60)
                break
            except grpc.aio.AioRpcError as exc:  # until Jiangsu's checkpoint covers the listing
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - started > timeout:
                    raise
                await asyncio.sleep(0.5)
    checked = check_report(issued.signed_report, bundle)
    path = folder / f"{issued.report_number}.pdf"
    data = issued.pdf  # rendered and signed by the issuing node: its bytes verify with the trust bundle alone
    path.write_bytes(data)
    verdicts = [
        f"{s['name']}: "
        + ("、".join(f"{f['field_name']} {f['verdict']}" for f in s["findings"] if f["records"]) or "无违法违规记录")
        if s["covered"]
        else f"{s['name']}: not covered"
        for s in checked.document["sections"]
    ]
    console.print(
        f"专项信用报告 {issued.report_number} for {subject} issued by 310000 (verification code"
        f" {issued.verification_code}), written to {path}"
    )
    for verdict in verdicts:
        console.print(f"  {verdict}")
    again = await asyncio.to_thread(check_file, data, bundle)
    console.print(
        f"  verified offline with the trust bundle alone: issuer {again.issuer}, issued {again.issued_at.isoformat()},"
        f" {len(again.document['items'])} records each signed by its origin and proven in its log"
    )
