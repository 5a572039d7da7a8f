"""LogService: checkpoints and proofs of any origin's log this node holds.

An inclusion proof carries the whole signed event, record included, so it is a
lookup like any other: the caller must be allowed to see the record, and the edge
audits it under the record's subject. Checkpoints and consistency proofs carry no
record, but are audited too, so the trail shows every call that was answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import grpc

from credex.node import edge
from credex.node.access import entry_status
from credex.node.checkpoints import CheckpointKeeper
from credex.node.config import NodeConfig
from credex.node.logbook import LogBook
from credex.node.proofs import ProofUnavailable, checkpoint_message, inclusion_proof
from credex.node.trust_provider import TrustProvider
from credex.v1 import log_pb2, log_pb2_grpc


class LogService(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        trust: TrustProvider,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        self.config = config
        self.pool = pool
        self.trust = trust
        self.logbook = logbook
        self.keeper = keeper

    def _member(self, origin: str) -> str:
        if self.trust.current.member(origin) is None:
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, f"origin {origin} is not a member of the federation")
        return origin

    async def GetCheckpoint(
        self,
        request: log_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.SignedCheckpoint:
        origin = self._member(request.origin)
        held = await self.keeper.latest(origin)
        if held is None:
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, f"no checkpoint of {origin} is held yet")
        edge.current().detail = f"checkpoint {origin} size {held.size}"
        return checkpoint_message(held)

    async def GetInclusionProof(
        self,
        request: log_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.InclusionProof:
        call = edge.current()
        origin = self._member(request.origin)
        by_record = request.WhichOneof("leaf") == "record_id"
        if not by_record and request.seq == 0:
            raise edge.invalid("give the leaf: seq (from 1) or record_id")
        async with self.pool.acquire() as conn:
            if by_record:
                row = await conn.fetchrow(
                    "SELECT seq, subject_id, sharing_level, status, publicity_end FROM records"
                    " WHERE record_id = $1 AND origin = $2",
                    request.record_id,
                    origin,
                )
            else:
                row = await conn.fetchrow(
                    "SELECT e.seq, r.subject_id, r.sharing_level, r.status, r.publicity_end FROM events e"
                    " JOIN records r ON r.record_id = e.record_id WHERE e.origin = $1 AND e.seq = $2",
                    origin,
                    request.seq,
                )
        status = entry_status(row["status"], row["publicity_end"], dt.date.today()) if row else 0
        if row is None or not call.caller.sees(row["sharing_level"], status):
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, "no such event or record visible to you")
        call.subject_id = row["subject_id"]
        try:
            proof = await inclusion_proof(self.pool, self.logbook, self.keeper, origin, row["seq"], request.tree_size)
        except ProofUnavailable as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        call.answer(1, [f"{origin}#{proof.seq} in tree {proof.tree_size}"])
        return proof

    async def GetConsistencyProof(
        self,
        request: log_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.ConsistencyProof:
        origin = self._member(request.origin)
        new_size = request.new_size
        held = None
        if new_size == 0:
            held = await self.keeper.latest(origin)
            if held is None:
                raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, f"no checkpoint of {origin} is held yet")
            new_size = held.size
        tree = await self.logbook.tree(origin)
        if not 0 < request.old_size <= new_size <= tree.size:
            raise edge.Refused(
                grpc.StatusCode.OUT_OF_RANGE,
                f"need 0 < old_size <= new_size <= {tree.size} (held of {origin}), got {request.old_size}, {new_size}",
            )
        proof = log_pb2.ConsistencyProof(
            origin=origin,
            old_size=request.old_size,
            new_size=new_size,
            hashes=tree.consistency_proof(request.old_size, new_size),
        )
        if held is not None:
            proof.checkpoint.CopyFrom(checkpoint_message(held))
        edge.current().detail = f"consistency {origin} {request.old_size}..{new_size}"
        return proof
