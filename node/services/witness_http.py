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

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from credex.crypto.trust import TrustBundle
from credex.node.chain import LogBook
from credex.node.config import NodeConfig
from credex.node.services.access import Caller
from credex.node.services.audit_trail import AuditEntry, AuditLog, AuditUnavailable
from credex.node.services.witness_service import asked_of, submitter_refusal
from credex.node.witness import WitnessRefused, node_witness, wire

log = logging.getLogger(__name__)

METHOD = "AddCheckpoint"  # the audit trail's name for it, over either wire
TEXT = "text/plain; charset=utf-8"
REQUESTS = Counter(
    "credex_witness_http_requests",
    "add-checkpoint requests over HTTP by the status answered (dropped: the body never came whole)",
    ["origin", "status"],
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = TEXT


class WitnessEndpoint:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        bundle: Callable[[], TrustBundle],
        logbook: LogBook,
        audit: AuditLog,
    ) -> None:
        self.origin = config.origin
        self.witness = node_witness(config, pool, bundle, logbook)
        self.audit = audit

    def admit(self, caller: Caller, method: bytes, length: int | None) -> Reply | None:
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

    async def answer(self, caller: Caller, body: bytes | None) -> Reply:
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
            reply = Reply(409, wire.size_body(outcome.witness_size), wire.SIZE_TYPE)
            detail = f"conflict {asked}: witness holds {outcome.witness_size}"
        else:
            reply = Reply(200, wire.cosignature_body(outcome.lines))
            detail = f"cosigned {asked}"
        try:
            await self.audit.record(self._entry(caller, reply, detail, answered=True))  # no trail, no answer
        except AuditUnavailable as exc:
            return self._counted(Reply(503, f"not answered: {exc}\n".encode()))
        return self._counted(reply)

    def dropped(self, caller: Caller, why: str) -> None:
        """A request whose body never came whole (the connection closed, or the time ran out): counted, noted."""
        REQUESTS.labels(self.origin, "dropped").inc()
        self.audit.note(self._entry(caller, Reply(400, b""), f"dropped: {why}"))

    def _refused(self, caller: Caller, status: int, message: str, detail: str) -> Reply:
        reply = Reply(status, (message + "\n").encode())
        self.audit.note(self._entry(caller, reply, f"{detail}: {message}" if detail else message))
        return self._counted(reply)

    def _counted(self, reply: Reply) -> Reply:
        REQUESTS.labels(self.origin, str(reply.status)).inc()
        return reply

    def _entry(self, caller: Caller, reply: Reply, detail: str, *, answered: bool = False) -> AuditEntry:
        return AuditEntry(
            caller=caller.identity,
            role=caller.role,
            method=METHOD,
            subject_id="",
            purpose="",
            answered=len(reply.body) if answered else 0,
            status=str(reply.status),
            at=dt.datetime.now(dt.UTC),
            detail=f"http {detail}",
        )
