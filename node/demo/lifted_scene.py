"""The demo's lifted-measures scene: what an office applied because of a record is marked lifted once it is repaired.

The Shanghai procurement office reports the measures it applied after its check of the
Jiangsu company (应用情况反馈); when Jiangsu approves the penalty's repair, the Shanghai node
marks those measures lifted in the transaction that applies the REPAIR, and the office reads
them with ``ListLiftedMeasures`` (credit-use.md, Repair 4, 8 and 9): which measure, resting on
which record, lifted by which event of the origin's log, and on what day.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from credex.domain.publicity import publicity_today
from credex.v1 import check_pb2, check_pb2_grpc


def procurement_feedback(check_id: str, subject_id: str, applied: list[str]) -> check_pb2.FeedbackRequest:
    """The Shanghai procurement office's feedback (应用情况反馈): the measures it applied, as punished."""
    return check_pb2.FeedbackRequest(
        check_id=check_id,
        subject_id=subject_id,
        measures_applied=applied,
        outcome=check_pb2.FEEDBACK_OUTCOME_PUNISHED,
        amount_yuan="0.00",
        basis="政府采购法 第二十二条",
        district_code="310101",
        department="上海市黄浦区财政局",
        applied_on=publicity_today().isoformat(),
    )


async def report_applied(
    console: Console, checks: check_pb2_grpc.CheckServiceAsyncStub, answer: check_pb2.CheckResponse
) -> list[str]:
    """The office's feedback on its check: every measure the check returned, applied; their ids."""
    (subject,) = answer.subjects
    applied = sorted({measure.id for hit in subject.hits for measure in hit.measures})
    await checks.SubmitFeedback(procurement_feedback(answer.check_id, subject.subject_id, applied), timeout=30)
    console.print(f"  the procurement office reports applying {', '.join(applied)} (应用情况反馈, 已惩戒)")
    return applied


async def show_lifted(
    console: Console, checks: check_pb2_grpc.CheckServiceAsyncStub, unit: str, record_id: str
) -> None:
    """The measures the repair lifted, as the office that applied them reads them on its own node."""
    page = await checks.ListLiftedMeasures(
        check_pb2.ListLiftedMeasuresRequest(
            requesting_unit_uscc=unit, unacknowledged_only=True, purpose="demo: 已解除的惩戒措施"
        ),
        timeout=30,
    )
    lifted = [m for m in page.measures if m.record_id == record_id]
    if not lifted:
        raise RuntimeError(f"no measure applied because of {record_id} is listed as lifted after its repair")
    table = Table(title=f"ListLiftedMeasures at 310000: {unit}'s measures lifted by the repair", title_justify="left")
    for column in ("measure", "rested on", "reason", "lifted by", "on", "check"):
        table.add_column(column, overflow="fold")
    for m in lifted:
        table.add_row(m.measure_id, m.record_id, m.reason, f"{m.record_origin}#{m.event_seq}", m.lifted_on, m.check_id)
    console.print(table)
