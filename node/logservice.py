"""LogService: checkpoints and proofs of any origin's log this node holds."""

from __future__ import annotations

import datetime as dt

import asyncpg
import grpc

from credex.crypto.trust import TrustBundle
from credex.node.access import entry_status, identify
from credex.node.checkpoints import CheckpointKeeper
from credex.node.config import NodeConfig
from credex.node.logbook import LogBook
from credex.node.proofs import ProofUnavailable, checkpoint_message, inclusion_proof
from credex.v1 import log_pb2, log_pb2_grpc


class LogService(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        bundle: TrustBundle,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        self.config = config
        self.pool = pool
        self.bundle = bundle
        self.logbook = logbook
        self.keeper = keeper

    async def _origin(self, origin: str, context: grpc.aio.ServicerContext) -> str:  # type: ignore[type-arg]
        if self.bundle.member(origin) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"origin {origin!r} is not a member of the federation")
        return origin

    async def GetCheckpoint(
        self,
        request: log_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.SignedCheckpoint:
        origin = await self._origin(request.origin, context)
        held = await self.keeper.latest(origin)
        if held is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no checkpoint of {origin} is held yet")
        return checkpoint_message(held)

    async def GetInclusionProof(
        self,
        request: log_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.InclusionProof:
        origin = await self._origin(request.origin, context)
        caller = identify(context, self.config.access, self.bundle)
        async with self.pool.acquire() as conn:
            if request.WhichOneof("leaf") == "record_id":
                row = await conn.fetchrow(
                    "SELECT seq, sharing_level, status, publicity_end FROM records"
                    " WHERE record_id = $1 AND origin = $2",
                    request.record_id,
                    origin,
                )
            else:
                row = await conn.fetchrow(
                    "SELECT e.seq, r.sharing_level, r.status, r.publicity_end FROM events e"
                    " JOIN records r ON r.record_id = e.record_id WHERE e.origin = $1 AND e.seq = $2",
                    origin,
                    request.seq,
                )
        status = entry_status(row["status"], row["publicity_end"], dt.date.today()) if row else 0
        if row is None or not caller.sees(row["sharing_level"], status):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such event or record visible to you")
        try:
            return await inclusion_proof(self.pool, self.logbook, self.keeper, origin, row["seq"], request.tree_size)
        except ProofUnavailable as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)
        raise AssertionError("unreachable")

    async def GetConsistencyProof(
        self,
        request: log_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> log_pb2.ConsistencyProof:
        origin = await self._origin(request.origin, context)
        new_size = request.new_size
        held = None
        if new_size == 0:
            held = await self.keeper.latest(origin)
            if held is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no checkpoint of {origin} is held yet")
            new_size = held.size
        tree = await self.logbook.tree(origin)
        if not 0 < request.old_size <= new_size <= tree.size:
            await context.abort(
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
        return proof
