"""The witness over C2SP tlog-witness's own wire: ``POST /add-checkpoint`` on the node's HTTP server.

Any tlog client (a log, a monitor relaying a checkpoint) asks this node to cosign
with the body the spec defines, and gets the spec's answers: 200 with the
cosignature lines, 409 ``text/x.tlog.size`` with the size this witness last
cosigned when the old size is not it, 404 for a log it does not witness, 403 for
a checkpoint the log's key did not sign, 422 for a consistency proof that does not
verify, 409 for a split view, 400 for a malformed body. The judging is the gRPC
service's own (:meth:`~credex.node.witness.Witness.add_checkpoint`, state in the
store), and so is who may submit: federation peers only
(:func:`~credex.node.services.witness_service.submitter_refusal`).

What is refused on the request's head (method, caller, declared length) is
refused before the body is read (:meth:`WitnessEndpoint.admit`); the tile server
then reads at most :data:`~credex.node.witness.wire.MAX_BODY` bytes. Every
request is counted by the status answered; an answer that carries something (a
cosignature, the witness's size) is audited before it leaves, a refusal without
waiting, with the same detail as the gRPC call's row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
from prometheus_client import Counter

from credex.crypto.trust import TrustBundle
from credex.node.chain import LogBook
from credex.node.config import NodeConfig
from credex.node.services.access import Caller
from credex.node.services.audit_trail import AuditLog
from credex.node.services.http_answer import Answer, audit_entry, audited, text
from credex.node.services.refusals import Refusals
from credex.node.services.witness_service import asked_of, submitter_refusal
from credex.node.witness import WitnessRefused, node_witness, wire

log = logging.getLogger(__name__)

METHOD = "AddCheckpoint"  # the audit trail's name for it, over either wire
REQUESTS = Counter(
    "credex_witness_http_requests",
    "add-checkpoint requests over HTTP by the status answered (dropped: the body never came whole)",
    ["origin", "status"],
)


class WitnessEndpoint:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        bundle: Callable[[], TrustBundle],
        logbook: LogBook,
        audit: AuditLog,
        refusals: Refusals,
    ) -> None:
        self.origin = config.origin
        self.witness = node_witness(config, pool, bundle, logbook)
        self.audit = audit
        self.refusals = refusals

    def admit(self, caller: Caller, method: bytes, length: int | None) -> Answer | None:
        """The refusal the request's head earns, before its body is read; None: read the body.

        ``length`` is the declared Content-Length (None when the body is chunked).
        """
        if method != b"POST":
            return self._refused(caller, 405, f"{wire.PATH} takes a POST", "")
        if refusal := submitter_refusal(caller):
            return self._refused(caller, 403, refusal, "")
        if length is not None and length > wire.MAX_BODY:
            return self._refused(caller, 413, f"an add-checkpoint body is at most {wire.MAX_BODY} bytes", "")
        return None

    async def answer(self, caller: Caller, body: bytes | None) -> Answer:
        """Judge one request's body (None: it ran past :data:`~credex.node.witness.wire.MAX_BODY` unread)."""
        if body is None:
            return self._refused(caller, 413, f"an add-checkpoint body is at most {wire.MAX_BODY} bytes", "")
        try:
            request = wire.read_request(body)
        except wire.WireError as exc:
            return self._refused(caller, 400, str(exc), "")
        origin = wire.log_of(request.checkpoint)
        if origin is None:
            return self._refused(caller, 404, "the checkpoint's origin line names no log of this federation", "")
        asked = asked_of(origin, request.old_size, request.checkpoint)
        try:
            outcome = await self.witness.add_checkpoint(origin, request.old_size, request.proof, request.checkpoint)
        except WitnessRefused as exc:
            return self._refused(caller, exc.status, exc.message, f"refused {asked}")
        except Exception:
            log.exception("witness: add-checkpoint of %s failed", asked)
            return self._refused(caller, 500, "the witness could not answer; see its log", f"failed {asked}")
        if outcome.conflict:
            answer = Answer(409, wire.size_body(outcome.witness_size), wire.SIZE_TYPE)
            detail = f"conflict {asked}: witness holds {outcome.witness_size}"
        else:
            answer = Answer(200, wire.cosignature_body(outcome.lines))
            detail = f"cosigned {asked}"
        answered = await audited(self.audit, self.refusals, caller, METHOD, answer, f"http {detail}", carries=True)
        return self._counted(answered)

    def dropped(self, caller: Caller, why: str) -> None:
        """A request whose body never came whole (the connection closed, or the time ran out): counted, noted."""
        REQUESTS.labels(self.origin, "dropped").inc()
        self.refusals.note(audit_entry(caller, METHOD, Answer(400, b""), f"http dropped: {why}", carries=False))

    def _refused(self, caller: Caller, status: int, message: str, detail: str) -> Answer:
        answer = text(status, message)
        self.refusals.note(
            audit_entry(
                caller, METHOD, answer, f"http {detail}: {message}" if detail else f"http {message}", carries=False
            )
        )
        return self._counted(answer)

    def _counted(self, answer: Answer) -> Answer:
        REQUESTS.labels(self.origin, str(answer.status)).inc()
        return answer
