"""An answer of the node's HTTP server, and the audit row it gets before it leaves.

The tile server's GETs and the witness's POSTs answer the same way: an answer that
carries something is audited before it leaves (no trail, no answer: 503), a refusal
is noted without waiting (the first few of a kind each second; the rest summed up, as
the gRPC edge does: node/services/refusals.py), and both rows name the caller, the
status and what was asked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from credex.node.services.access import Caller
from credex.node.services.audit_trail import AuditEntry, AuditLog, AuditUnavailable
from credex.node.services.refusals import Refusals

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = TEXT
    cache: str = "no-store"
    headers: tuple[tuple[str, str], ...] = ()  # beyond the ones every answer has


def text(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


def audit_entry(caller: Caller, method: str, answer: Answer, detail: str, *, carries: bool) -> AuditEntry:
    """The audit row of ``answer`` to ``caller``; ``carries``: it hands over its body (counted as answered)."""
    return AuditEntry(
        caller=caller.identity,
        role=caller.role,
        method=method,
        subject_id="",
        purpose="",
        answered=len(answer.body) if carries else 0,
        status=str(answer.status),
        at=dt.datetime.now(dt.UTC),
        detail=detail,
    )


async def audited(
    audit: AuditLog, refusals: Refusals, caller: Caller, method: str, answer: Answer, detail: str, *, carries: bool
) -> Answer:
    """``answer``, once its row is in the trail when it ``carries`` something (else a refusal, noted without
    waiting or summed up); 503 when the trail cannot take the row."""
    entry = audit_entry(caller, method, answer, detail, carries=carries)
    if not carries:
        refusals.note(entry)
        return answer
    try:
        await audit.record(entry)  # no trail, no answer
    except AuditUnavailable as exc:
        return text(503, f"not answered: {exc}")
    return answer
