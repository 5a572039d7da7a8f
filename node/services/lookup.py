"""LookupService: profiles and records across every region this node holds.

Answers come from the local store; each entry carries the envelope of the event
that produced the record's current state, so the caller can check the origin's
signature itself instead of trusting this node. The edge (node/edge.py) has
checked the request, admitted the caller and will audit the answer; this module
only decides what the caller may see and records it on the call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import asyncpg
import grpc

from credex.domain import identity
from credex.domain import uscc as uscc_codes
from credex.node.chain import ProofUnavailable, inclusion_proof
from credex.node.services import edge
from credex.node.services.access import Caller, entry_status
from credex.node.services.servicer import Servicer
from credex.v1 import lookup_pb2, lookup_pb2_grpc

_ENTRY_QUERY = (
    "SELECT r.record, r.origin, r.seq, r.status, r.sharing_level, r.publicity_end, e.envelope"
    " FROM records r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
)


class LookupService(Servicer, lookup_pb2_grpc.LookupServiceServicer):
    async def GetProfile(
        self,
        request: lookup_pb2.GetProfileRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lookup_pb2.Profile:
        call = edge.current()
        try:
            code = uscc_codes.validate(request.uscc).code
        except uscc_codes.InvalidSubjectCode as exc:
            raise edge.invalid(f"uscc: {exc.message}") from None
        call.subject_id = code
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ENTRY_QUERY + " WHERE r.subject_id = $1 ORDER BY r.origin, r.record_id", code)
        entries = _visible_entries(rows, call.caller)
        call.answer(len(entries), (f"{e.origin}#{e.seq}" for e in entries))
        return lookup_pb2.Profile(subject_id=code, entries=entries)

    async def GetRecord(
        self,
        request: lookup_pb2.GetRecordRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lookup_pb2.RecordAnswer:
        call = edge.current()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ENTRY_QUERY + " WHERE r.record_id = $1", request.record_id)
        entries = _visible_entries(rows, call.caller)
        if not entries:
            missing = edge.quote(request.record_id, 40)
            raise edge.Refused(grpc.StatusCode.NOT_FOUND, f"no record {missing} visible to you")
        entry = entries[0]
        call.subject_id = identity.subject_id(entry.record) or request.record_id
        call.answer(1, [f"{entry.origin}#{entry.seq}"])
        answer = lookup_pb2.RecordAnswer(entry=entry)
        # While no checkpoint covers the event yet there is no proof; the envelope still verifies on its own.
        with contextlib.suppress(ProofUnavailable):
            answer.proof.CopyFrom(await inclusion_proof(self.pool, self.logbook, self.keeper, entry.origin, entry.seq))
        return answer


def _visible_entries(rows: list[asyncpg.Record], caller: Caller) -> list[lookup_pb2.ProfileEntry]:
    today = dt.date.today()
    entries = []
    for row in rows:
        status = entry_status(row["status"], row["publicity_end"], today)
        if not caller.sees(row["sharing_level"], status):
            continue
        entry = lookup_pb2.ProfileEntry(origin=row["origin"], seq=row["seq"], status=status)  # type: ignore[arg-type]
        entry.record.ParseFromString(row["record"])
        entry.envelope.ParseFromString(row["envelope"])
        entries.append(entry)
    return entries
