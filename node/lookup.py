"""LookupService: profiles and records across every region this node holds.

Answers come from the local store; each entry carries the envelope of the event
that produced the record's current state, so the caller can check the origin's
signature itself instead of trusting this node.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import asyncpg
import grpc

from credex.crypto.trust import TrustBundle
from credex.domain import uscc as uscc_codes
from credex.node.access import Caller, entry_status, identify
from credex.node.audit import AuditEntry, AuditLog, AuditUnavailable
from credex.node.checkpoints import CheckpointKeeper
from credex.node.config import NodeConfig
from credex.node.logbook import LogBook
from credex.node.metrics import METRICS
from credex.node.proofs import ProofUnavailable, inclusion_proof
from credex.v1 import lookup_pb2, lookup_pb2_grpc

MAX_PURPOSE = 500
_ENTRY_QUERY = (
    "SELECT r.record, r.origin, r.seq, r.status, r.sharing_level, r.publicity_end, e.envelope"
    " FROM records r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
)


class LookupService(lookup_pb2_grpc.LookupServiceServicer):
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        bundle: TrustBundle,
        audit: AuditLog,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        self.config = config
        self.pool = pool
        self.bundle = bundle
        self.audit = audit
        self.logbook = logbook
        self.keeper = keeper
        # Bound once: looking up labelled children costs more than counting.
        self._profile_ok = METRICS.lookups.labels(config.origin, "GetProfile", "OK")
        self._profile_seconds = METRICS.lookup_seconds.labels(config.origin, "GetProfile")

    async def GetProfile(
        self,
        request: lookup_pb2.GetProfileRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> lookup_pb2.Profile:
        started = time.perf_counter()
        caller = identify(context, self.config.access, self.bundle)
        purpose = await _purpose(request.purpose, context)
        try:
            code = uscc_codes.validate(request.uscc).code
        except uscc_codes.InvalidSubjectCode as exc:
            METRICS.lookups.labels(self.config.origin, "GetProfile", "INVALID_ARGUMENT").inc()
            await self._audit(context, caller, "GetProfile", request.uscc[:64], purpose, 0, "INVALID_ARGUMENT")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"uscc: {exc.message}")
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ENTRY_QUERY + " WHERE r.subject_id = $1 ORDER BY r.origin, r.record_id", code)
        entries = _visible_entries(rows, caller)
        await self._audit(context, caller, "GetProfile", code, purpose, len(entries))
        self._profile_ok.inc()
        self._profile_seconds.observe(time.perf_counter() - started)
        return lookup_pb2.Profile(subject_id=code, entries=entries)

    async def GetRecord(
        self,
        request: lookup_pb2.GetRecordRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> lookup_pb2.RecordAnswer:
        caller = identify(context, self.config.access, self.bundle)
        purpose = await _purpose(request.purpose, context)
        if not request.record_id or len(request.record_id) > 100:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "record_id must be 1 to 100 characters")
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ENTRY_QUERY + " WHERE r.record_id = $1", request.record_id)
        entries = _visible_entries(rows, caller)
        subject = entries[0].record.subject if entries else None
        subject_id = (subject.uscc or subject.person_pseudonym) if subject is not None else ""
        status = "OK" if entries else "NOT_FOUND"
        await self._audit(context, caller, "GetRecord", subject_id or request.record_id, purpose, len(entries), status)
        if not entries:
            METRICS.lookups.labels(self.config.origin, "GetRecord", "NOT_FOUND").inc()
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no record {request.record_id} visible to you")
        METRICS.lookups.labels(self.config.origin, "GetRecord", "OK").inc()
        answer = lookup_pb2.RecordAnswer(entry=entries[0])
        entry = entries[0]
        # While no checkpoint covers the event yet there is no proof; the envelope still verifies on its own.
        with contextlib.suppress(ProofUnavailable):
            answer.proof.CopyFrom(await inclusion_proof(self.pool, self.logbook, self.keeper, entry.origin, entry.seq))
        return answer

    async def _audit(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        caller: Caller,
        method: str,
        subject_id: str,
        purpose: str,
        answered: int,
        status: str = "OK",
    ) -> None:
        """Write the entry before answering; failed requests are audited too (probing is worth seeing)."""
        entry = AuditEntry(
            caller=caller.identity,
            role=caller.role,
            method=method,
            subject_id=subject_id,
            purpose=purpose,
            answered=answered,
            status=status,
            at=dt.datetime.now(dt.UTC),
        )
        try:
            await self.audit.record(entry)
        except AuditUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; lookups are not answered without an audit trail")


async def _purpose(purpose: str, context: grpc.aio.ServicerContext) -> str:  # type: ignore[type-arg]
    if len(purpose) > MAX_PURPOSE:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"purpose is longer than {MAX_PURPOSE} characters")
    return purpose


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
