"""WitnessService: this node, as a witness, cosigns its peers' checkpoints (C2SP tlog-witness add-checkpoint).

Only federation peers may submit: the log its own checkpoints, and any peer may
relay one (the log's signature is what is judged, not who brings it). Anyone may
read the latest checkpoint the witness cosigned, to hold it against what the log
serves. Each call is audited by the edge with the log, the sizes and the outcome,
so a witness's trail shows every checkpoint it cosigned or refused (a refused one
may be evidence of a log's misbehaviour). The same witness, and the same rule on
who may submit, answer C2SP tlog-witness's own HTTP wire
(:mod:`~credex.node.services.witness_http`).
"""

from __future__ import annotations

import functools
from typing import Any

import grpc

from credex.node.services import edge
from credex.node.services.access import Caller
from credex.node.services.servicer import Servicer
from credex.node.witness import Witness, WitnessRefused, node_witness
from credex.v1 import log_pb2, witness_pb2, witness_pb2_grpc


class WitnessService(Servicer, witness_pb2_grpc.WitnessServiceServicer):
    @functools.cached_property
    def witness(self) -> Witness:
        return node_witness(self.config, self.pool, self.trust, self.logbook)

    async def AddCheckpoint(
        self,
        request: witness_pb2.AddCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> witness_pb2.AddCheckpointResponse:
        call = edge.current()
        if refusal := submitter_refusal(call.caller):
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, refusal)
        origin = self.member(request.origin)
        asked = asked_of(origin, request.old_size, request.checkpoint)
        try:
            outcome = await self.witness.add_checkpoint(
                origin, request.old_size, list(request.consistency), request.checkpoint
            )
        except WitnessRefused as exc:
            call.detail = f"refused {asked}"
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        if outcome.conflict:
            call.detail = f"conflict {asked}: witness holds {outcome.witness_size}"
        else:
            call.detail = f"cosigned {asked}"
        return witness_pb2.AddCheckpointResponse(
            cosignatures=outcome.lines, conflict=outcome.conflict, witness_size=outcome.witness_size
        )

    async def GetWitnessedCheckpoint(
        self,
        request: log_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.SignedCheckpoint:
        """Open to every caller, like the log's own checkpoints: a note carries no record, and monitors need it."""
        origin = self.member(request.origin)
        held = await self.witness.latest(origin)
        if held is None:
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, f"this node has cosigned no checkpoint of {origin}")
        size, root, note = held
        edge.current().detail = f"witnessed checkpoint {origin} size {size}"
        return log_pb2.SignedCheckpoint(origin=origin, note=note, size=size, root=root)


def submitter_refusal(caller: Caller) -> str:
    """Why ``caller`` may not submit checkpoints to this witness; empty if it may (over gRPC and HTTP alike)."""
    if caller.role == "peer":
        return ""
    return f"{caller.identity} ({caller.role}) may not submit checkpoints; only federation peers may"


def asked_of(origin: str, old_size: int, note: bytes) -> str:
    """What a request asked, for its audit row: the log, the old size and the size the note claims."""
    lines = note.split(b"\n", 2)
    size = lines[1] if len(lines) > 1 else b""
    claimed = size.decode() if size.isdigit() and len(size) < 20 else "?"  # bounded, never trusted
    return f"{origin} {old_size}->{claimed}"
