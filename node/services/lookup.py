"""LookupService: profiles and records across every region this node holds.

Answers come from the local store; each entry carries the envelope of the event
that produced the record's current state, so the caller can check the origin's
signature itself instead of trusting this node. The edge (node/edge.py) has
checked the request, admitted the caller and will audit the answer; this module
only decides what the caller may see and records it on the call.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from credex.domain import identity
from credex.domain import uscc as uscc_codes
from credex.domain.persons import withhold
from credex.domain.publicity import publicity_today
from credex.node.chain import ProofUnavailable, inclusion_proof
from credex.node.checks import persons
from credex.node.checks.checking import CheckFailure
from credex.node.services import access, edge
from credex.node.services.access import Caller
from credex.node.services.servicer import Servicer
from credex.node.store.database import Connection
from credex.node.store.events import code_key, entry_status, record_sql, search_key
from credex.protowire import varint
from credex.v1 import lookup_pb2, lookup_pb2_grpc, record_pb2

# The state rows and their events, the record's bytes cut from the envelope in hand (not through the
# view records, which would read that envelope a second time).
_ENTRY_QUERY = (
    "SELECT r.kind, " + record_sql("r", "e") + " AS record, r.origin, r.seq, r.status, r.disputed, r.sharing_level,"
    " r.publicity_end, e.envelope"
    " FROM record_states r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
)
# Every subject of a batch in one round trip, as GetProfile orders one subject's entries.
_BATCH_QUERY = (
    "SELECT r.subject_id, r.kind, " + record_sql("r", "e") + " AS record, r.origin, r.seq, r.status, r.disputed,"
    " r.sharing_level, r.publicity_end, e.envelope"
    " FROM record_states r JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
    " WHERE r.subject_id = ANY($1::text[]) ORDER BY r.subject_id, r.origin, r.record_id"
)
PAGE_SIZE = 20  # a search page when the caller names none
MAX_PAGE_SIZE = 100
MIN_CODE_FRAGMENT = 4  # shorter runs of letters and digits are searched as names only
# Natural persons are found by name only by the federation's own nodes and its operators: to anyone
# else a hit would say that records about a person exist. Public and government callers ask by ID number.
_FINDS_PERSONS = frozenset({"peer", "operator"})
_CODE = re.compile(r"[0-9A-Z]+")
# A record is visible to a caller when (sharing level, status as of today) is one of the pairs
# Caller.sees admits: the rule is asked of access.py, never restated here (see _visible_pairs).
_ACTIVE, _EXPIRED = lookup_pb2.ENTRY_STATUS_ACTIVE, lookup_pb2.ENTRY_STATUS_EXPIRED


def _visible(hidden: str) -> str:
    """Caller.sees as SQL: today in $1, the visible (level, status) pairs in $2 and $3, hidden kinds in ``hidden``."""
    return (
        f"(r.sharing_level, CASE WHEN r.status = {_ACTIVE} AND r.publicity_end < $1 THEN {_EXPIRED}"
        " ELSE r.status END)"
        f" IN (SELECT * FROM unnest($2::smallint[], $3::smallint[])) AND r.kind <> ALL({hidden}::smallint[])"
    )


_VISIBLE = _visible("$13")
# Candidates from the trigram indexes, best first, after the page token's position; then each one's
# records the caller may see, one subject at a time in that order, until the page is full (the
# lateral join runs as a nested loop over the ordered candidates, so LIMIT stops it early).
# Tier 0: the code itself; 1: the name itself (in any form); 2: similar names and code fragments.
_SEARCH_QUERY = (
    "SELECT c.subject_id, c.subject_type, c.name, c.tier, c.score, v.origins, v.n FROM ("
    "  SELECT s.subject_id, s.subject_type, s.name,"
    "   CASE WHEN s.subject_id = $5 THEN 0 WHEN s.name_key = $4 THEN 1 ELSE 2 END AS tier,"
    "   greatest(similarity(s.name_key, $4), word_similarity($4, s.name_key),"
    "    CASE WHEN $7 <> '' AND s.subject_id LIKE $7 THEN length($5)::real / length(s.subject_id) ELSE 0 END"
    "   )::real AS score"
    "  FROM subjects s"
    "  WHERE (s.name_key LIKE $6 OR $4 <% s.name_key OR ($7 <> '' AND s.subject_id LIKE $7))"
    "   AND ($8 OR s.subject_type <> " + str(record_pb2.SUBJECT_TYPE_NATURAL_PERSON) + ")"
    ") c"
    " CROSS JOIN LATERAL ("
    "  SELECT array_agg(DISTINCT r.origin ORDER BY r.origin) AS origins, count(*) AS n"
    "  FROM records r WHERE r.subject_id = c.subject_id AND " + _VISIBLE + ") v"
    " WHERE v.n > 0 AND ($9::smallint IS NULL OR (c.tier, -c.score, c.subject_id) > ($9, -$10::real, $11::text))"
    " ORDER BY c.tier, c.score DESC, c.subject_id"
    " LIMIT $12"
)
# The records a search counted of some subjects, each kind judged record by record (Caller.sees_record)
# read whole: a supervisor's search counts the risk classes of its region only, as its lookups show them.
_COUNTED_QUERY = (
    "SELECT r.subject_id, r.origin, r.kind, CASE WHEN r.kind = ANY($6::smallint[]) THEN r.record END AS record"
    " FROM records r WHERE r.subject_id = ANY($5::text[]) AND " + _visible("$4")
)


class LookupService(Servicer, lookup_pb2_grpc.LookupServiceServicer):
    async def GetProfile(
        self,
        request: lookup_pb2.GetProfileRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lookup_pb2.Profile:
        if request.person_id or request.HasField("leave"):
            return await self._person_profile(request)
        call = edge.current()
        try:
            code = call.uscc(request.uscc)
        except uscc_codes.InvalidSubjectCode as exc:
            raise edge.invalid(f"uscc: {exc.message}") from None
        call.subject_id = code
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ENTRY_QUERY + " WHERE r.subject_id = $1 ORDER BY r.origin, r.record_id", code)
        profile, shown = _profile(code, rows, call.caller)
        call.answer(len(shown), shown)
        return profile

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

    async def SearchSubjects(
        self,
        request: lookup_pb2.SearchSubjectsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lookup_pb2.SearchSubjectsResponse:
        call = edge.current()
        caller = call.caller
        key = search_key(request.query)
        if not key:
            raise edge.invalid("query has no characters to search by; send a name or part of a code")
        if request.page_size > MAX_PAGE_SIZE:
            raise edge.invalid(f"page_size is {request.page_size}; at most {MAX_PAGE_SIZE} subjects a page")
        size = request.page_size or PAGE_SIZE
        code = code_key(request.query)
        fragment = _like(code) if len(code) >= MIN_CODE_FRAGMENT and _CODE.fullmatch(code) else ""
        fingerprint = _fingerprint(key, caller)
        after = _read_token(request.page_token, fingerprint) if request.page_token else (None, None, None)
        levels, statuses = _visible_pairs(caller)
        today = publicity_today()
        judged = caller.regional_kinds()
        rows: list[_Match] = []
        async with self.pool.acquire() as conn:
            while len(rows) <= size:  # one round for most callers; more while a supervisor's are judged away
                found = await conn.fetch(
                    _SEARCH_QUERY,
                    today,
                    levels,
                    statuses,
                    key,
                    code,
                    _like(key),
                    fragment,
                    caller.role in _FINDS_PERSONS,
                    *after,
                    size + 1,
                    caller.hidden_kinds(),
                )
                matched = [_Match(**row) for row in found]
                if judged and matched:
                    matched = await _recounted(conn, matched, caller, judged, (today, levels, statuses))
                rows += matched
                if len(found) <= size:
                    break
                after = (found[-1]["tier"], found[-1]["score"], found[-1]["subject_id"])
        page = rows[:size]
        matches = [
            lookup_pb2.SubjectMatch(
                subject_id=row.subject_id,
                name=row.name,
                type=row.subject_type,  # type: ignore[arg-type]
                origins=row.origins,
                record_count=row.n,
                score=row.score,
            )
            for row in page
        ]
        call.answer(len(matches), (m.subject_id for m in matches))
        call.detail = f"query {edge.quote(withhold(request.query), 100)}: {call.detail}"  # no ID number kept
        response = lookup_pb2.SearchSubjectsResponse(subjects=matches)
        if len(rows) > size:
            response.next_page_token = _token(fingerprint, page[-1].tier, page[-1].score, page[-1].subject_id)
        return response

    async def BatchGetProfiles(
        self,
        request: lookup_pb2.BatchGetProfilesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lookup_pb2.BatchGetProfilesResponse:
        """GetProfile for many codes in one round trip to the store; every code must be valid, or none is answered."""
        if request.person_ids or request.HasField("leave"):
            return await self._batch_with_persons(request)
        call = edge.current()
        if not request.usccs:
            raise edge.invalid("usccs is required: send the codes of the subjects to look up")
        codes = _batch_codes(request.usccs)
        entries = await self._batch_entries(list(dict.fromkeys(codes)), call.caller)
        call.answer_each((code, len(found), (f"{e.origin}#{e.seq}" for e in found)) for code, found in entries.items())
        return lookup_pb2.BatchGetProfilesResponse(
            profiles=[lookup_pb2.Profile(subject_id=code, entries=entries[code]) for code in codes]
        )

    async def _batch_entries(self, distinct: list[str], caller: Caller) -> dict[str, list[lookup_pb2.ProfileEntry]]:
        """What ``caller`` may see of each subject, in one round trip to the store."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_BATCH_QUERY, distinct)
        by_subject: defaultdict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            by_subject[row["subject_id"]].append(row)
        return {code: _visible_entries(by_subject[code], caller) for code in distinct}

    # -- natural persons: by ID number, with leave, under their pseudonym ------------------

    async def _person_profile(self, request: lookup_pb2.GetProfileRequest) -> lookup_pb2.Profile:
        """One person's profile, named by pseudonym; the ID number is turned into it first and kept nowhere."""
        call = edge.current()
        if not request.person_id:
            raise edge.invalid("leave is for looking up a person: send person_id with it")
        if request.uscc:
            raise edge.invalid("send uscc or person_id, not both")
        own = None if request.HasField("leave") else self._own(call, request.person_id)
        (leave,) = [own] if own else await self._admit(call, [("person_id", request.person_id)], request.leave)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _ENTRY_QUERY + " WHERE r.subject_id = $1 ORDER BY r.origin, r.record_id", leave.pseudonym
            )
        entries = _visible_entries(rows, call.caller, every_level=own is not None)
        call.answer_each([(leave.pseudonym, len(entries), [leave.ground, *(f"{e.origin}#{e.seq}" for e in entries)])])
        return lookup_pb2.Profile(subject_id=leave.pseudonym, entries=entries)

    def _own(self, call: edge.Call, raw: str) -> persons.Leave | None:
        """The person's own caller asking about themself (bound to their pseudonym in access.speaks_for).

        A subject may see its own credit information (the rule of a person's own report):
        every record about them that is in publication, whatever its sharing level, without
        leave. Anyone else, and this caller about anyone else, needs leave as before.
        """
        try:
            pseudonym = persons.pseudonym_of("person_id", raw, self.pseudonymizer)
        except CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        if pseudonym not in access.speaks_for(self.config.access, call.caller):
            return None
        return persons.Leave(pseudonym, "the person themself (access.speaks_for)")

    async def _batch_with_persons(
        self, request: lookup_pb2.BatchGetProfilesRequest
    ) -> lookup_pb2.BatchGetProfilesResponse:
        """USCCs and persons in one batch: the usccs' profiles first, then the persons', in request order.

        Every code and every person's leave is settled before the store is asked: one person
        without leave refuses the whole batch, so the refusal says nothing about anyone's records.
        """
        call = edge.current()
        if not request.person_ids:
            raise edge.invalid("leave is for looking up persons: send person_ids with it")
        if len(request.usccs) + len(request.person_ids) > edge.MAX_BATCH:
            raise edge.invalid(f"usccs and person_ids together name at most {edge.MAX_BATCH:,} subjects a call")
        codes = _batch_codes(request.usccs)
        leaves = await self._admit(
            call, [(f"person_ids[{i}]", raw) for i, raw in enumerate(request.person_ids)], request.leave
        )
        subjects = [*codes, *(leave.pseudonym for leave in leaves)]
        grounds = {leave.pseudonym: leave.ground for leave in leaves}
        entries = await self._batch_entries(list(dict.fromkeys(subjects)), call.caller)
        call.answer_each(
            (
                subject,
                len(found),
                [*([grounds[subject]] if subject in grounds else []), *(f"{e.origin}#{e.seq}" for e in found)],
            )
            for subject, found in entries.items()
        )
        return lookup_pb2.BatchGetProfilesResponse(
            profiles=[lookup_pb2.Profile(subject_id=subject, entries=entries[subject]) for subject in subjects]
        )

    async def _admit(
        self, call: edge.Call, named: list[tuple[str, str]], leave: lookup_pb2.PersonLeave
    ) -> list[persons.Leave]:
        """The persons' pseudonyms with their leave, by a check's rule and code; refused before the store is asked."""
        if not call.caller.may_check:
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "natural persons are looked up only by government offices and operators, with leave;"
                " nothing was answered",
            )
        try:
            return await persons.admit_by_leave(
                self.pool,
                named,
                leave.scenario,
                leave.requesting_unit_uscc,
                leave.legal_basis,
                leave.authorizations,
                self.pseudonymizer,
                prefix="leave.",
            )
        except CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None


@dataclass
class _Match:
    """A subject a search found, with the origins and number of its records the caller may see."""

    subject_id: str
    subject_type: int
    name: str
    tier: int
    score: float
    origins: list[str]
    n: int


async def _recounted(
    conn: Connection,
    matched: list[_Match],
    caller: Caller,
    judged: list[int],
    visible: tuple[object, list[int], list[int]],
) -> list[_Match]:
    """The matches counted again with the ``judged`` kinds' records judged one by one; a subject left with none is
    dropped, so no hit and no count says that another region's risk class exists."""
    today, levels, statuses = visible
    rows = await conn.fetch(
        _COUNTED_QUERY, today, levels, statuses, caller.hidden_kinds(), [m.subject_id for m in matched], judged
    )
    origins: defaultdict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for row in rows:
        if row["record"] is not None and not caller.sees_record(
            row["origin"], record_pb2.Record.FromString(row["record"])
        ):
            continue
        origins[row["subject_id"]].add(row["origin"])
        counts[row["subject_id"]] += 1
    return [
        dataclasses.replace(m, origins=sorted(origins[m.subject_id]), n=counts[m.subject_id])
        for m in matched
        if counts[m.subject_id]
    ]


def _batch_codes(usccs: Sequence[str]) -> list[str]:
    """Every code of a batch as its canonical USCC; one invalid code refuses the batch."""
    codes = []
    for index, raw in enumerate(usccs):
        try:
            codes.append(uscc_codes.validate(raw).code)
        except uscc_codes.InvalidSubjectCode as exc:
            raise edge.invalid(f"usccs[{index}]: {exc.message}; nothing was looked up") from None
    return codes


def _visible_pairs(caller: Caller) -> tuple[list[int], list[int]]:
    """The (sharing level, status) pairs ``caller`` may see, as two arrays for SQL: asked of Caller.sees_level itself.

    With :meth:`Caller.hidden_kinds` (the kinds kept from it) this is :meth:`Caller.sees` as SQL.
    """
    levels = record_pb2.SharingLevel.values()
    statuses = lookup_pb2.EntryStatus.values()
    pairs = [(level, status) for level in levels for status in statuses if caller.sees_level(level, status)]
    return [level for level, _ in pairs], [status for _, status in pairs]


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fingerprint(key: str, caller: Caller) -> str:
    """What a page token is bound to: the folded query, the caller's role and a supervisor's region (which decide
    what matches)."""
    return hashlib.sha256(f"{caller.role}\x1f{caller.region}\x1f{key}".encode()).hexdigest()[:16]


def _token(fingerprint: str, tier: int, score: float, subject_id: str) -> str:
    """The position after the last subject of a page: pages never repeat or skip a subject of an unchanged store."""
    text = json.dumps([fingerprint, tier, score, subject_id], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_token(token: str, fingerprint: str) -> tuple[int, float, str]:
    try:
        held = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        mark, tier, score, subject = held
        if mark == fingerprint and tier in (0, 1, 2) and isinstance(score, float | int) and isinstance(subject, str):
            return int(tier), float(score), subject
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise edge.invalid("page_token is not one this search gave for this query; start again without it")


def _visible_entries(
    rows: list[asyncpg.Record], caller: Caller, *, every_level: bool = False
) -> list[lookup_pb2.ProfileEntry]:
    """The entries ``caller`` may see; ``every_level`` for a subject reading about itself (any sharing level)."""
    return [lookup_pb2.ProfileEntry.FromString(wire) for _, _, wire in _visible_wire(rows, caller, every_level)]


def _profile(subject_id: str, rows: list[asyncpg.Record], caller: Caller) -> tuple[lookup_pb2.Profile, list[str]]:
    """The profile of ``rows`` as ``caller`` may see it, and the events it shows (origin#seq), in one parse.

    The record and envelope are stored serialized: they are put on the wire as stored, inside
    entries encoded here, and the profile is parsed once in C, not record by record in Python.
    """
    shown = _visible_wire(rows, caller)
    subject = subject_id.encode()
    wire = [b"\x0a", varint(len(subject)), subject]
    for _, _, entry in shown:
        wire += (b"\x12", varint(len(entry)), entry)
    return lookup_pb2.Profile.FromString(b"".join(wire)), [f"{origin}#{seq}" for origin, seq, _ in shown]


def _visible_wire(
    rows: list[asyncpg.Record], caller: Caller, every_level: bool = False
) -> list[tuple[str, int, bytes]]:
    """(origin, seq, ProfileEntry's wire bytes) of each row ``caller`` may see, fields in number order as protobuf's.

    A record is parsed only when :meth:`Caller.sees_record` must judge it (a supervisor's
    regional kinds); for every other caller it answers yes without reading it.
    """
    today = publicity_today()
    judged = caller.regional_kinds()
    shown = []
    for row in rows:
        kind, record, origin, seq = row["kind"], row["record"], row["origin"], row["seq"]
        status = entry_status(row["status"], row["publicity_end"], today)
        level = record_pb2.SHARING_LEVEL_PUBLIC if every_level else row["sharing_level"]
        if not caller.sees(level, status, kind):
            continue
        if judged and kind in judged and not caller.sees_record(origin, record_pb2.Record.FromString(record)):
            continue
        named, envelope = origin.encode(), row["envelope"]
        wire = b"".join(
            (
                b"\x0a",
                varint(len(record)),
                record,
                b"\x12",
                varint(len(named)),
                named,
                b"\x18",
                varint(seq),
                b"\x22",
                varint(len(envelope)),
                envelope,
                b"\x28",
                varint(status),
                b"\x30\x01" if row["disputed"] else b"",
            )
        )
        shown.append((origin, seq, wire))
    return shown
