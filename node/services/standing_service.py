"""StandingService: the origin's operators revoke, hide and unhide a record of their origin on a running node.

The CLI's ``--config`` path opens the node's store itself, which the embedded
PostgreSQL allows only while the node is stopped; this service takes the same
decisions (:mod:`credex.node.ledger.standing`, one code path for both) through the
running node's own ledger, so its signing key and head lock are the only ones in play.
The edge has bounded every field and audits the call; this module admits operators
alone and names the record and the decision in the audit row.
"""

from __future__ import annotations

from typing import Any

import grpc

from credex.node.ledger import Ledger
from credex.node.ledger import standing as decisions
from credex.node.ledger.appender import LedgerError, UnknownRecord
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.node.store import events as state
from credex.v1 import standing_pb2, standing_pb2_grpc


class StandingService(Servicer, standing_pb2_grpc.StandingServiceServicer):
    # The node's own ledger, handed over by the server: one signing key and one head for every writer.
    ledger: Ledger

    async def Revoke(
        self, request: standing_pb2.StandingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> standing_pb2.StandingResponse:
        return await self._decide(request, decisions.revoke, "revoked")

    async def Hide(
        self, request: standing_pb2.StandingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> standing_pb2.StandingResponse:
        return await self._decide(request, decisions.hide, "hidden")

    async def Unhide(
        self, request: standing_pb2.StandingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> standing_pb2.StandingResponse:
        return await self._decide(request, decisions.unhide, "unhidden")

    async def _decide(
        self, request: standing_pb2.StandingRequest, decision: decisions.Decision, done: str
    ) -> standing_pb2.StandingResponse:
        call = edge.current()
        if call.caller.role != "operator":
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED, "only this origin's operators revoke, hide or unhide its records"
            )
        try:
            decisions.check_reason(request.reason)  # a bad reason is the caller's mistake, named before any work
        except LedgerError as exc:
            raise edge.invalid(f"reason: {exc}") from None
        try:
            event = await decision(self.pool, self.ledger, request.record_id, request.reason)
        except UnknownRecord as exc:
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except state.Unstorable as exc:
            raise edge.invalid(str(exc)) from None
        except LedgerError as exc:
            raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        if event is None:
            call.answer(0, [f"{request.record_id} already {done}; nothing signed"])
            return standing_pb2.StandingResponse(record_id=request.record_id, changed=False)
        call.answer(1, [f"{request.record_id} {done}: event {event.origin}#{event.seq}"])
        return standing_pb2.StandingResponse(
            record_id=request.record_id, changed=True, origin=event.origin, seq=event.seq
        )
