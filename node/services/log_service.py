"""LogService: checkpoints and proofs of any origin's log this node holds.

An inclusion proof carries the whole signed event, record included, so it is a
lookup like any other, and the edge audits it under the record's subject. A proof
by seq may return an older version of a record than the current one, so the
caller must be allowed to see both: the version in the event (its own sharing
level, whether the event revoked or expired it, its publicity window, its subject)
and the record as it stands now. Otherwise a record corrected from
government-shared to public would let a public caller read the government-shared
version by walking the seqs. A supervisor's proofs of risk classes are its region's only, as
its lookups are (Caller.sees_record). Checkpoints and consistency proofs carry no record,
but are audited too, so the trail shows every call that was answered.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError

from credex.domain.publicity import publicity_today
from credex.node.chain import HeldLeaf, ProofUnavailable, checkpoint_message, inclusion_proof
from credex.node.services import edge
from credex.node.services.access import Caller
from credex.node.services.servicer import Servicer
from credex.node.store import RecordState, tiles
from credex.node.store.events import entry_status, standing_of
from credex.v1 import event_pb2, log_pb2, log_pb2_grpc, record_pb2

# The event at the leaf asked for, the current row of its record, how far its origin's tiles reach, and (when
# $3: the tile cache lacks the leaf's tile, or the seq is not known yet) the leaf's hashes inside its tile, so
# that the proof needs one more statement at most, and at any size of the log only for the upper levels'
# tiles the tile cache lacks, not for the leaf's own tile.
_LEAF_QUERY = (
    "SELECT e.seq, e.event_type, e.envelope, r.origin, r.record, r.subject_id, r.kind, r.sharing_level, r.status,"
    " r.publicity_end,"
    " (SELECT tiled_seq FROM origin_progress p WHERE p.origin = e.origin) AS tiled,"
    f" CASE WHEN $3::boolean THEN {tiles.leaf_path_sql('e.origin', 'e.seq')} END AS path"
    " FROM records r JOIN events e"
)


def _visible_leaf(row: asyncpg.Record, caller: Caller) -> str | None:
    """The subject of the event in ``row`` if ``caller`` may see both that version and the current record."""
    today = publicity_today()
    if not caller.sees(row["sharing_level"], entry_status(row["status"], row["publicity_end"], today), row["kind"]):
        return None
    try:
        event = event_pb2.Event.FromString(event_pb2.Envelope.FromString(row["envelope"]).payload)
        version = RecordState.of(event.record)
    except (DecodeError, ValueError):  # stored events verified at intake; unreadable means show nothing
        return None
    status = entry_status(standing_of(event.type, event.standing), version.publicity_end, today)
    if not caller.sees(version.sharing_level, status, event.record.kind):
        return None
    # A supervisor's risk classes are its region's only, in both versions (a correction may move the subject).
    if caller.regional_kinds():
        try:
            current = record_pb2.Record.FromString(row["record"])
        except DecodeError:
            return None
        if not (caller.sees_record(row["origin"], current) and caller.sees_record(row["origin"], event.record)):
            return None
    # A correction may have changed whom the record is about (a person's pseudonym to a company's USCC):
    # the older version names someone the current record does not; only peers and operators see it.
    if version.subject_id != row["subject_id"] and not caller.may_exchange:
        return None
    return version.subject_id


class LogService(Servicer, log_pb2_grpc.LogServiceServicer):
    async def GetCheckpoint(
        self,
        request: log_pb2.GetCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.SignedCheckpoint:
        origin = self.member(request.origin)
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
        origin = self.member(request.origin)
        by_record = request.WhichOneof("leaf") == "record_id"
        if not by_record and request.seq == 0:
            raise edge.invalid("give the leaf: seq (from 1) or record_id")
        async with self.pool.acquire() as conn:  # one connection, two statements: the leaf, then tiles
            if by_record:
                row = await conn.fetchrow(
                    _LEAF_QUERY + " ON e.origin = r.origin AND e.seq = r.seq WHERE r.record_id = $1 AND r.origin = $2",
                    request.record_id,
                    origin,
                    True,  # the seq, and so the tile, is known only once the record is read
                )
            else:
                row = await conn.fetchrow(
                    _LEAF_QUERY + " ON e.origin = r.origin AND e.record_id = r.record_id"
                    " WHERE e.origin = $1 AND e.seq = $2",
                    origin,
                    request.seq,
                    not self.logbook.holds_leaf_tile(origin, request.seq - 1),
                )
            subject = _visible_leaf(row, call.caller) if row is not None else None
            if row is None or subject is None:
                raise edge.Refused(grpc.StatusCode.NOT_FOUND, "no such event or record visible to you")
            call.subject_id = subject
            path = row["path"]
            leaf = HeldLeaf(bytes(row["envelope"]), int(row["tiled"] or 0), bytes(path) if path is not None else None)
            try:
                proof = await inclusion_proof(
                    self.pool, self.logbook, self.keeper, origin, row["seq"], request.tree_size, conn=conn, leaf=leaf
                )
            except ProofUnavailable as exc:
                raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        call.answer(1, [f"{origin}#{proof.seq} in tree {proof.tree_size}"])
        return proof

    async def GetConsistencyProof(
        self,
        request: log_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> log_pb2.ConsistencyProof:
        origin = self.member(request.origin)
        new_size = request.new_size
        held = None
        if new_size == 0:
            held = await self.keeper.latest(origin)
            if held is None:
                raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, f"no checkpoint of {origin} is held yet")
            new_size = held.size
        async with self.pool.acquire() as conn:  # one connection for the tree's size and its tiles
            tree = await self.logbook.tree(origin, conn=conn)
            if not 0 < request.old_size <= new_size <= tree.size:
                raise edge.Refused(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"need 0 < old_size <= new_size <= {tree.size} (held of {origin}),"
                    f" got {request.old_size}, {new_size}",
                )
            hashes = await tree.consistency_proof(request.old_size, new_size, conn=conn)
        proof = log_pb2.ConsistencyProof(origin=origin, old_size=request.old_size, new_size=new_size, hashes=hashes)
        if held is not None:
            proof.checkpoint.CopyFrom(checkpoint_message(held))
        edge.current().detail = f"consistency {origin} {request.old_size}..{new_size}"
        return proof
