"""The case desk: filing, taking in, deciding and closing objections and repairs, in the store.

A case is filed on any node. The node that takes the filing derives the case id from
(itself, the filer, the filer's request id), so filing twice finds the first case,
and a filing for another origin's record goes into the durable outbox, signed, for
:mod:`credex.node.cases.courier` to deliver. At the origin (谁认定谁修复) the case is
taken in once whatever the number of deliveries, and every decision is made in one
transaction with the signed event that carries it out (``Ledger.amend``), so a case
never says "decided" without its event in the log, nor the reverse.

Deadlines are the origin region's (:mod:`credex.domain.case_rules`), counted on the
official calendar from the origin's own date (``clock``, China time), which tests
inject.

What a filing is and who reads it is :mod:`~credex.node.cases.filing`; the filing node's
copy of a case, kept up to date by the origin, is :mod:`~credex.node.cases.copies`; an
approved repair's confirmation by every region is :mod:`~credex.node.cases.propagation`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import grpc
from prometheus_client import Gauge

from credex.domain.case_rules import CaseRules, RegionRules, repair_eligibility
from credex.domain.publicity import CHINA, publicity_today
from credex.domain.workdays import add_working_days
from credex.node.cases import applicant, casefile, copies, listing, messages, propagation, provider, resolution
from credex.node.cases.filing import (
    GROUNDS,
    MAX_TEXT,
    Filing,
    Viewer,
    case_id_of,
    content_digest,
    filing_time,
    kind_of,
    parse_time,
)
from credex.node.cases.model import (
    ACCEPTABLE,
    CLOSED,
    DECIDABLE,
    EXTENDABLE,
    OBJECTION_OUTCOMES,
    REPAIR_OUTCOMES,
    CaseFailure,
    Kind,
    State,
    invalid,
    refuse_state,
)
from credex.node.ledger import Ledger
from credex.node.store import Connection
from credex.node.trust import TrustProvider
from credex.v1 import case_pb2, event_pb2, lookup_pb2, record_pb2

OVERDUE = Gauge("credex_cases_overdue", "Open cases past their deadline at their origin, by kind", ["origin", "kind"])
MAX_EXTENSION_DAYS = 20
MAX_UNDELIVERED_FILINGS = 1000


class CaseDesk:
    def __init__(
        self,
        origin: str,
        pool: asyncpg.Pool,
        ledger: Ledger,
        trust: TrustProvider,
        rules: CaseRules | None = None,
        clock: Callable[[], dt.date] = publicity_today,
    ) -> None:
        self.origin = origin
        self.pool = pool
        self.ledger = ledger
        self.trust = trust
        self.rules = rules or CaseRules.shipped()
        self.clock = clock
        # Filings one filer may have waiting for one origin: a dead origin must not grow the outbox without end.
        self.max_undelivered_filings = MAX_UNDELIVERED_FILINGS

    @property
    def mine(self) -> RegionRules:
        return self.rules.of(self.origin)

    def peers(self) -> list[str]:
        return [origin for origin in self.trust.current.origins if origin != self.origin]

    # -- filing -------------------------------------------------------------------------

    async def file(self, filing: Filing, sees: Callable[[int, int, int], bool]) -> tuple[case_pb2.Case, bool]:
        """File a case on this node; ``(case, False)`` when the same request was filed before.

        ``sees(sharing level, status, kind)`` is what the filer may see: a record it may not see is
        answered as missing, so filing cannot probe for restricted or withdrawn records. An
        objection to a repair result is the exception: the repaired record is its subject.
        """
        if filing.kind == Kind.OBJECTION and filing.grounds not in GROUNDS:
            raise invalid(f"grounds must be one of {', '.join(sorted(GROUNDS))}")
        case_id = case_id_of(self.origin, filing.filer, filing.request_id)
        pb = case_pb2.CaseFiling(
            case_id=case_id,
            kind=casefile.KINDS[filing.kind],
            record_id=filing.record_id,
            filed_on=self.origin,
            filer=filing.filer,
            on_behalf_of=filing.on_behalf_of,
            request_id=filing.request_id,
            grounds=filing.grounds,
            statement=filing.statement,
            proof_of_duty=filing.proof_of_duty,
            commitment=filing.commitment,
            filed_at=dt.datetime.now(dt.UTC).isoformat(),
        )
        pb.content_digest = content_digest(pb)
        async with self.pool.acquire() as conn, conn.transaction():
            existing = await self._same_filing(conn, pb)
            if existing is not None:
                return await self.view(conn, existing), False
            held = await self._record(conn, filing.record_id)
            visible = sees(held["sharing_level"], held["status"], held["kind"]) or (
                filing.grounds == "repair_result"
                and held["status"] == lookup_pb2.ENTRY_STATUS_REPAIRED
                and sees(held["sharing_level"], lookup_pb2.ENTRY_STATUS_ACTIVE, held["kind"])
            )
            if not visible:
                raise _missing(filing.record_id)
            await self._no_open_case(conn, filing.record_id, filing.kind, filing.filer, self.origin)
            record = record_pb2.Record.FromString(bytes(held["record"]))
            eligibility = self._check_filing(pb, held, record)
            at_origin = held["origin"] == self.origin
            inserted = await self._insert(conn, pb, held, at_origin, eligibility, "" if at_origin else "pending")
            if not inserted:  # a concurrent identical filing won the race
                row = await self._same_filing(conn, pb)
                assert row is not None
                return await self.view(conn, row), False
            await casefile.add_step(conn, case_id, filing.filer, "filing", State.SUBMITTED, filing.statement)
            if at_origin:
                await self._arrive(conn, case_id)
            else:
                await self._room_for(conn, filing.filer, held["origin"])
                envelope = messages.seal_message(self.ledger.key, messages.message_at(self.origin, pb))
                await conn.execute(
                    "INSERT INTO case_outbox (case_id, purpose, target, envelope) VALUES ($1, 'filing', $2, $3)",
                    case_id,
                    held["origin"],
                    envelope,
                )
            return await self.view(conn, await self.case_row(conn, case_id)), True

    async def take_in(self, envelope: event_pb2.Envelope, sender: str) -> case_pb2.DeliverCaseResponse:
        """A signed case message from peer ``sender``: a filing for this origin, or a repair receipt."""
        try:
            message = messages.open_message(envelope, self.trust.current, sender)
        except messages.MessageRejected as exc:
            raise CaseFailure(
                grpc.StatusCode.PERMISSION_DENIED, f"case message refused: {exc}; nothing changed"
            ) from None
        if message.HasField("receipt"):
            return await propagation.confirm(self, message.receipt, sender)
        if message.HasField("status"):
            return await copies.take_status(self, message.status, sender)
        if message.HasField("request"):
            return await applicant.take(self, message.request, sender)
        pb = message.filing
        if pb.filed_on != sender:
            raise invalid(f"the filing says it was filed on {pb.filed_on[:16]!r}, but {sender} sends it")
        if pb.case_id != case_id_of(pb.filed_on, pb.filer, pb.request_id) or pb.content_digest != content_digest(pb):
            raise invalid("the filing's case id or content digest is not the one its content gives")
        if pb.kind not in casefile.KINDS.values():
            raise invalid("the filing names no case kind")
        unnamed = [name for name in ("filer", "request_id", "record_id", "on_behalf_of") if not getattr(pb, name)]
        if unnamed:
            raise invalid(f"the filing has no {', '.join(unnamed)}: a case is filed by someone, for a record")
        # A member vouches for its filer, not for the size or shape of what it relays.
        too_long = [fd.name for fd, value in pb.ListFields() if isinstance(value, str) and len(value) > MAX_TEXT]
        if too_long or (pb.kind == case_pb2.CASE_KIND_OBJECTION and pb.grounds not in GROUNDS):
            raise invalid(f"the filing's {', '.join(too_long) or 'grounds'} is not what a filing may hold")
        filing_time(pb.filed_at)
        async with self.pool.acquire() as conn, conn.transaction():
            existing = await self._same_filing(conn, pb)
            if existing is not None:
                return case_pb2.DeliverCaseResponse(case_id=pb.case_id, state=existing["state"], created=False)
            held = await conn.fetchrow(
                "SELECT origin, subject_id, record, status FROM records WHERE record_id = $1 AND origin = $2",
                pb.record_id,
                self.origin,
            )
            if held is None:
                raise CaseFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"record {pb.record_id[:60]} is not a record of {self.origin}: a case goes to its record's"
                    " origin; nothing stored",
                )
            await self._no_open_case(conn, pb.record_id, kind_of(pb), pb.filer, pb.filed_on)
            record = record_pb2.Record.FromString(bytes(held["record"]))
            eligibility = self._check_filing(pb, held, record)
            if not await self._insert(conn, pb, held, True, eligibility, f"received from {sender}"):
                row = await self._same_filing(conn, pb)
                assert row is not None
                return case_pb2.DeliverCaseResponse(case_id=pb.case_id, state=row["state"], created=False)
            filer = f"{pb.filer}@{pb.filed_on}"
            await casefile.add_step(conn, pb.case_id, filer, "filing", State.SUBMITTED, pb.statement)
            state = await self._arrive(conn, pb.case_id)
            await copies.queue_status(self, conn, pb.case_id)
            return case_pb2.DeliverCaseResponse(case_id=pb.case_id, state=state, created=True)

    def _check_filing(self, pb: case_pb2.CaseFiling, held: Any, record: record_pb2.Record) -> str:
        if pb.on_behalf_of != held["subject_id"]:
            raise CaseFailure(
                grpc.StatusCode.PERMISSION_DENIED,
                f"on_behalf_of is not the subject of record {pb.record_id[:60]}: a case is filed for the record's"
                " own subject; nothing filed",
            )
        if pb.kind != case_pb2.CASE_KIND_REPAIR:
            return ""
        if held["status"] != lookup_pb2.ENTRY_STATUS_ACTIVE:
            standing = lookup_pb2.EntryStatus.Name(held["status"]).removeprefix("ENTRY_STATUS_").lower()
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"repair not filed: record {pb.record_id[:60]} is {standing}, not in force; there is nothing to repair",
            )
        verdict = repair_eligibility(
            record,
            self.rules.of(held["origin"]),
            self.clock(),
            proof_of_duty=pb.proof_of_duty,
            commitment=pb.commitment,
        )
        if not verdict.allowed:
            raise CaseFailure(grpc.StatusCode.FAILED_PRECONDITION, f"repair not filed: {verdict.reason}")
        return verdict.reason

    async def _same_filing(self, conn: Connection, pb: case_pb2.CaseFiling) -> Any:
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", pb.case_id)
        if row is not None and bytes(row["content_digest"]) != pb.content_digest:
            raise CaseFailure(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {pb.request_id[:40]!r} was already used for a different filing (case {pb.case_id});"
                " use a new request_id for a new case",
            )
        return row

    async def _record(self, conn: Connection, record_id: str) -> Any:
        held = await conn.fetchrow(
            "SELECT origin, subject_id, kind, record, sharing_level, status FROM records WHERE record_id = $1",
            record_id,
        )
        if held is None:
            raise _missing(record_id)
        return held

    async def _no_open_case(self, conn: Connection, record_id: str, kind: Kind, filer: str, filed_on: str) -> None:
        """One open case of a kind per filer and record: a flood of filings must not flood the origin's log.

        The filing node holds its callers to it, and the origin holds every member to it again,
        since a member's fresh request ids would otherwise each sign a DISPUTE in this log.
        """
        open_case = await conn.fetchval(
            "SELECT case_id FROM cases WHERE record_id = $1 AND kind = $2 AND filer = $3 AND filed_on = $4"
            " AND closed_at IS NULL LIMIT 1",
            record_id,
            kind,
            filer,
            filed_on,
        )
        if open_case is not None:
            raise CaseFailure(
                grpc.StatusCode.ALREADY_EXISTS,
                f"the {kind} {open_case} of {filer[:60]} on record {record_id[:60]} is still open; follow it with"
                " GetCase instead of filing again",
            )

    async def _room_for(self, conn: Connection, filer: str, target: str) -> None:
        """Refuse a filing for ``target`` while this filer already has as many waiting for it as allowed.

        Counted per filer, so that one caller filing in a loop against an origin that does not
        answer fills only its own share, and another caller's filing still goes out.
        """
        waiting = await conn.fetchval(
            "SELECT count(*) FROM case_outbox o JOIN cases c USING (case_id) WHERE o.purpose = 'filing'"
            " AND o.target = $1 AND o.delivered_at IS NULL AND o.refused = '' AND c.filer = $2 AND c.filed_on = $3",
            target,
            filer,
            self.origin,
        )
        if waiting >= self.max_undelivered_filings:
            raise CaseFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{waiting} of your filings for {target} are still waiting for it to answer; file again once they"
                " are delivered (GetCase shows their delivery); nothing filed",
            )

    async def _insert(
        self, conn: Connection, pb: case_pb2.CaseFiling, held: Any, at_origin: bool, eligibility: str, delivery: str
    ) -> bool:
        filed_at = parse_time(pb.filed_at)
        inserted = await conn.fetchval(
            "INSERT INTO cases (case_id, kind, record_id, record_origin, subject_id, filed_on, filer, on_behalf_of,"
            " request_id, content_digest, filing, at_origin, state, eligibility, filed_at, delivery)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'submitted', $13, $14, $15)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            pb.case_id,
            kind_of(pb),
            pb.record_id,
            held["origin"],
            held["subject_id"],
            pb.filed_on,
            pb.filer,
            pb.on_behalf_of,
            pb.request_id,
            pb.content_digest,
            pb.SerializeToString(deterministic=True),
            at_origin,
            eligibility,
            filed_at,
            delivery,
        )
        return inserted is not None

    async def _arrive(self, conn: Connection, case_id: str) -> str:
        """The origin takes a case in: its clock starts, and an objection marks the record disputed at once."""
        row = await self.case_row(conn, case_id)
        today = self.clock()
        rules = self.mine
        if row["kind"] == Kind.OBJECTION:
            due = add_working_days(today, rules.objection_accept_days)
            event = await self.ledger.amend(
                conn,
                row["record_id"],
                event_pb2.EVENT_TYPE_DISPUTE,
                "objection filed",
                disputed=True,
                case=event_pb2.CaseRef(case_id=case_id, kind=Kind.OBJECTION),
            )
            opinion = f"taken in; record marked disputed by event {event.seq if event else '?'}"
        else:
            due = add_working_days(today, rules.repair_accept_days)
            opinion = f"taken in by the identifying unit's region; {row['eligibility']}"
        await conn.execute("UPDATE cases SET received_on = $2, due_on = $3 WHERE case_id = $1", case_id, today, due)
        await casefile.add_step(conn, case_id, self.origin, "delivery", State.SUBMITTED, opinion)
        return str(State.SUBMITTED)

    # -- decisions at the origin ----------------------------------------------------------

    async def accept(self, case_id: str, accept: bool, opinion: str, to_provider: bool, actor: str) -> case_pb2.Case:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._decidable(conn, case_id)
            kind = Kind(row["kind"])
            if row["state"] not in ACCEPTABLE[kind]:
                raise refuse_state(case_id, row["state"], "accepted or refused")
            today = self.clock()
            rules = self.mine
            if not accept:
                if not opinion.strip():
                    raise invalid("a case not accepted needs the reason (opinion)")
                if kind == Kind.OBJECTION:
                    await resolution.resolve(conn, self.ledger, row, "not_accepted", opinion, actor, today)
                await self._close(conn, case_id, State.NOT_ACCEPTED, "not_accepted", today)
                await casefile.add_step(conn, case_id, actor, _stage(row), State.NOT_ACCEPTED, opinion)
            elif kind == Kind.OBJECTION:
                if to_provider:
                    held = await conn.fetchval("SELECT record FROM records WHERE record_id = $1", row["record_id"])
                    unit = provider.providing_unit(record_pb2.Record.FromString(bytes(held)))
                    if not unit:
                        raise provider.no_unit(row["record_id"])
                    await conn.execute("UPDATE cases SET provider_unit = $2 WHERE case_id = $1", case_id, unit)
                    state, due = State.PROVIDER_REVIEW, add_working_days(today, rules.objection_provider_days)
                    opinion = f"passed to providing unit {unit}: {opinion}".rstrip(": ")
                else:
                    state, due = State.PLATFORM_REVIEW, add_working_days(today, rules.objection_platform_days)
                due = min(due, self._cap(row, rules) or due)
                await self._move(conn, case_id, state, due)
                await casefile.add_step(conn, case_id, actor, _stage(row), state, opinion)
            else:
                filed = row["filed_at"].astimezone(CHINA).date()
                due = add_working_days(filed, rules.repair_result_days)
                await casefile.add_step(conn, case_id, actor, "acceptance", State.ACCEPTED, opinion)
                await self._move(conn, case_id, State.UNDER_REVIEW, due)
                await casefile.add_step(conn, case_id, actor, "review", State.UNDER_REVIEW, "")
            await copies.queue_status(self, conn, case_id)
            return await self.view(conn, await self.case_row(conn, case_id))

    async def decide(
        self,
        case_id: str,
        outcome: str,
        opinion: str,
        changes: Sequence[event_pb2.FieldChange],
        decided_by: str,
        actor: str,
        provider_unit: str = "",
    ) -> case_pb2.Case:
        """Decide a case: by the origin's operators, or at provider review by the providing unit ``provider_unit``."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._decidable(conn, case_id)
            provider.check_decider(row, provider_unit)
            kind = Kind(row["kind"])
            allowed = OBJECTION_OUTCOMES if kind == Kind.OBJECTION else REPAIR_OUTCOMES
            if outcome not in allowed:
                raise invalid(f"outcome of a {kind} must be one of {', '.join(sorted(allowed))}")
            if row["state"] not in DECIDABLE[kind]:
                raise refuse_state(case_id, row["state"], "decided")
            if changes and outcome not in {"corrected", "supplemented"}:
                raise invalid(f"field changes go with corrected or supplemented, not {outcome}")
            today = self.clock()
            if kind == Kind.OBJECTION:
                # A review's outcome is final: the case is done, and no second review follows.
                reviewed = row["state"] == State.REVIEW
                final, stage = (State.DONE, "review") if reviewed else (State.DECIDED, "decision")
                if provider_unit:
                    stage, decided_by = str(State.PROVIDER_REVIEW), provider_unit
                unit = decided_by or actor
                if await resolution.resolve(conn, self.ledger, row, outcome, opinion, unit, today, list(changes)):
                    await self._close(conn, case_id, final, outcome, today)
                    await casefile.add_step(conn, case_id, actor, stage, final, f"{outcome}: {opinion}".strip(": "))
                else:
                    status = (await resolution.record_now(conn, row["record_id"]))["status"]
                    await self._close(conn, case_id, State.DONE, resolution.MOOT, today)
                    moot = resolution.moot_reason(row["record_id"], status)
                    await casefile.add_step(conn, case_id, actor, stage, State.DONE, f"{moot} ({outcome} asked)")
            elif outcome == "denied":
                if not opinion.strip():
                    raise invalid("a denied repair needs the reason (opinion); the subject may object to it")
                await self._close(conn, case_id, State.DENIED, outcome, today)
                await casefile.add_step(conn, case_id, actor, "decision", State.DENIED, opinion)
            else:
                await self._approve(conn, row, opinion, decided_by or actor, actor, today)
            await copies.queue_status(self, conn, case_id)
            return await self.view(conn, await self.case_row(conn, case_id))

    async def _approve(self, conn: Connection, row: Any, opinion: str, unit: str, actor: str, today: dt.date) -> None:
        case_id = row["case_id"]
        status = await conn.fetchval("SELECT status FROM records WHERE record_id = $1", row["record_id"])
        if status != lookup_pb2.ENTRY_STATUS_ACTIVE:
            # Withdrawn or ended since filing (revoked, expired, deleted after an objection): deny instead.
            standing = lookup_pb2.EntryStatus.Name(status).removeprefix("ENTRY_STATUS_").lower()
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"record {row['record_id']} is {standing} now, not in force: deny the repair with that reason",
            )
        event = await self.ledger.amend(
            conn,
            row["record_id"],
            event_pb2.EVENT_TYPE_REPAIR,
            opinion or "credit repair approved",
            standing=lookup_pb2.ENTRY_STATUS_REPAIRED,
            case=event_pb2.CaseRef(case_id=case_id, kind=Kind.REPAIR, outcome="approved", decided_by=unit),
        )
        assert event is not None  # a case reference always signs
        number = f"{self.origin}-XF-{today:%Y%m%d}-{case_id[-8:]}"
        document = messages.seal_decision(
            self.ledger.key,
            case_pb2.RepairDecision(
                decision_number=number,
                case_id=case_id,
                record_id=row["record_id"],
                record_origin=self.origin,
                subject_id=row["subject_id"],
                decision="approved",
                decided_on=today.isoformat(),
                unit=unit,
                opinion=opinion,
                repair_seq=event.seq,
            ),
        )
        due = add_working_days(today, self.mine.repair_propagation_days)
        await conn.execute(
            "UPDATE cases SET state = 'propagating', outcome = 'approved', decided_on = $2, due_on = $3,"
            " repair_seq = $4, decision = $5 WHERE case_id = $1",
            case_id,
            today,
            due,
            event.seq,
            document,
        )
        await casefile.add_step(conn, case_id, actor, "decision", State.APPROVED, f"{number}: {opinion}".rstrip(": "))
        signed = f"REPAIR event {event.seq}"
        await casefile.add_step(conn, case_id, self.origin, "propagation", State.PROPAGATING, signed)
        await propagation.finish_if_confirmed(self, conn, case_id)

    async def extend(self, case_id: str, reason: str, days: int, actor: str) -> case_pb2.Case:
        if not reason.strip():
            raise invalid("an extension needs its reason; the applicant is told it")
        if not 1 <= days <= MAX_EXTENSION_DAYS:
            raise invalid(f"working_days must be 1 to {MAX_EXTENSION_DAYS}")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._decidable(conn, case_id)
            kind = Kind(row["kind"])
            if row["state"] not in EXTENDABLE[kind]:
                raise refuse_state(case_id, row["state"], "extended")
            due = add_working_days(row["due_on"], days)
            cap = self._cap(row, self.mine)
            if kind == Kind.OBJECTION and cap is not None and due > cap:
                raise CaseFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"an extension to {due} passes {cap}, {self.mine.objection_max_days} working days from"
                    " acceptance, the most the region allows; nothing changed",
                )
            state = State.EXTENDED if kind == Kind.REPAIR else State(row["state"])
            await conn.execute(
                "UPDATE cases SET state = $2, due_on = $3, extended_days = extended_days + $4 WHERE case_id = $1",
                case_id,
                state,
                due,
                days,
            )
            await casefile.add_step(conn, case_id, actor, "extension", state, f"extended to {due}: {reason}")
            await copies.queue_status(self, conn, case_id)
            return await self.view(conn, await self.case_row(conn, case_id))

    async def review(self, case_id: str, reason: str, actor: str) -> case_pb2.Case:
        """复核: reopen a decided objection for the review body, with its own clock; the record is marked again."""
        if not reason.strip():
            raise invalid("a review needs the objector's grounds (reason)")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._decidable(conn, case_id)
            if row["kind"] != Kind.OBJECTION or row["state"] != State.DECIDED:
                raise refuse_state(case_id, row["state"], "reviewed (only a decided objection is, once)")
            status = (await resolution.record_now(conn, row["record_id"]))["status"]
            if resolution.withdrawn_meanwhile({**dict(row), "state": State.REVIEW}, status):
                raise CaseFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"record {row['record_id']} is {resolution.standing_name(status)} since the outcome: there is"
                    " nothing left to review; nothing changed",
                )
            today = self.clock()
            rules = self.mine
            due = add_working_days(today, rules.objection_review_days)
            await self.ledger.amend(
                conn,
                row["record_id"],
                event_pb2.EVENT_TYPE_DISPUTE,
                "review of the outcome asked for",
                disputed=True,
                case=event_pb2.CaseRef(case_id=case_id, kind=Kind.OBJECTION, outcome="review_requested"),
            )
            # The review's clock: received_on restarts it, so extensions are capped from the review's start.
            await conn.execute(
                "UPDATE cases SET state = 'review', due_on = $2, received_on = $3, closed_at = NULL WHERE case_id = $1",
                case_id,
                due,
                today,
            )
            await casefile.add_step(conn, case_id, actor, "review", State.REVIEW, reason)
            await copies.queue_status(self, conn, case_id)
            return await self.view(conn, await self.case_row(conn, case_id))

    async def withdraw(self, case_id: str, reason: str, actor: str) -> case_pb2.Case:
        if not reason.strip():
            raise invalid("a withdrawal needs its reason")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._decidable(conn, case_id)
            if row["state"] in CLOSED or row["state"] == State.PROPAGATING:
                raise refuse_state(case_id, row["state"], "withdrawn")
            if row["kind"] == Kind.OBJECTION:
                await resolution.resolve(conn, self.ledger, row, "withdrawn", reason, actor, self.clock())
            await self._close(conn, case_id, State.WITHDRAWN, "withdrawn", self.clock())
            await casefile.add_step(conn, case_id, actor, "withdrawal", State.WITHDRAWN, reason)
            await copies.queue_status(self, conn, case_id)
            return await self.view(conn, await self.case_row(conn, case_id))

    async def _decidable(self, conn: Connection, case_id: str) -> Any:
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", case_id)
        if row is None:
            raise CaseFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id[:60]} on this node")
        if not row["at_origin"]:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"case {case_id} is decided by {row['record_origin']}, the record's origin, not here; nothing changed",
            )
        return row

    def _cap(self, row: Any, rules: RegionRules) -> dt.date | None:
        if row["kind"] != Kind.OBJECTION or not rules.objection_max_days or row["received_on"] is None:
            return None
        return add_working_days(row["received_on"], rules.objection_max_days)

    async def _move(self, conn: Connection, case_id: str, state: State, due: dt.date) -> None:
        await conn.execute("UPDATE cases SET state = $2, due_on = $3 WHERE case_id = $1", case_id, state, due)

    async def _close(self, conn: Connection, case_id: str, state: State, outcome: str, today: dt.date) -> None:
        await conn.execute(
            "UPDATE cases SET state = $2, outcome = $3, decided_on = $4, closed_at = now(), due_on = NULL"
            " WHERE case_id = $1",
            case_id,
            state,
            outcome,
            today,
        )

    async def note_overdue(self) -> int:
        """Put a step in the file of each open case past its deadline, once per deadline, and tell the filing node.

        The applicant is told that the case is late (credit-use.md, Repair 3); the reason is the
        operator's to give by extending with one.
        """
        today = self.clock()
        noted = 0
        async with self.pool.acquire() as conn:
            late = await conn.fetch(
                "SELECT c.case_id, c.state, c.due_on FROM cases c WHERE c.at_origin AND c.closed_at IS NULL"
                " AND c.state <> 'propagating' AND c.due_on < $1 AND NOT EXISTS (SELECT 1 FROM case_steps s"
                " WHERE s.case_id = c.case_id AND s.stage = 'deadline' AND s.opinion LIKE c.due_on::text || '%')",
                today,
            )
            counts = await conn.fetch(
                "SELECT kind, count(*) AS n FROM cases WHERE at_origin AND closed_at IS NULL"
                " AND state <> 'propagating' AND due_on < $1 GROUP BY kind",
                today,
            )
            by_kind = {r["kind"]: int(r["n"]) for r in counts}
            for kind in Kind:
                OVERDUE.labels(self.origin, kind).set(by_kind.get(kind, 0))
            for row in late:
                async with conn.transaction():
                    opinion = f"{row['due_on']} passed without a decision; the region is told and the case stays open"
                    await casefile.add_step(conn, row["case_id"], self.origin, "deadline", row["state"], opinion)
                    await copies.queue_status(self, conn, row["case_id"])
                noted += 1
        return noted

    # -- reading --------------------------------------------------------------------------

    async def get(self, case_id: str, viewer: Viewer) -> case_pb2.Case:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
            if row is None or not viewer.may_see(row, self.origin):
                raise CaseFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id[:60]} of yours on this node")
            return await self.view(conn, row)

    async def list(
        self, viewer: Viewer, state: str = "", overdue: bool = False, limit: int = 100, after: str = ""
    ) -> tuple[list[case_pb2.Case], str]:
        """One page of the cases ``viewer`` may see, and the cursor of the next (:mod:`~credex.node.cases.listing`)."""
        async with self.pool.acquire() as conn:
            rows, cursor = await listing.page(conn, self.origin, viewer, self.clock(), state, overdue, limit, after)
            return [await self.view(conn, row) for row in rows], cursor

    async def decision(self, case_id: str, viewer: Viewer) -> bytes:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
        if row is None or not viewer.may_see(row, self.origin):
            raise CaseFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id[:60]} of yours on this node")
        if row["decision"] is None:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"case {case_id} has no repair decision (it is {row['state']}"
                + ("" if row["at_origin"] else f"; the decision is issued by {row['record_origin']}")
                + ")",
            )
        return bytes(row["decision"])

    async def case_row(self, conn: Connection, case_id: str) -> Any:
        return await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)

    async def view(self, conn: Connection, row: Any) -> case_pb2.Case:
        unconfirmed = (
            await propagation.unconfirmed(self, conn, row["case_id"]) if row["state"] == State.PROPAGATING else []
        )
        return await casefile.view(conn, row, unconfirmed, self.trust.current, self.clock())


def _stage(row: Any) -> str:
    return "platform_review" if row["kind"] == Kind.OBJECTION else "acceptance"


def _missing(record_id: str) -> CaseFailure:
    return CaseFailure(grpc.StatusCode.NOT_FOUND, f"no record {record_id[:60]} on this node; nothing filed")
