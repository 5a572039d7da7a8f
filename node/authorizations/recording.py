"""Recording and ending authorizations: signed into the node's own log, like any record of its origin.

``grant`` appends a ``KIND_AUTHORIZATION`` record through the ledger, ``end`` signs its
REVOKE; both run inside the caller's transaction under the ledger's head lock, so the
relay publishes them to every region and every node answers the same
(:mod:`credex.node.authorizations.held`). An authorization is a document the grantee
keeps: the same id granted again with the same terms changes nothing, with other
terms it is refused (end it and grant a new one), and an ended one stays ended.

Before migration 0025 a node kept operator grants in a table of its own that only it
consulted. :func:`adopt_unsigned` signs each of those rows as a record (and the REVOKE
of those already ended) when the node starts, and notes the record id on the row, so
none is lost and none is signed twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from credex.crypto.pseudonym import Pseudonymizer
from credex.domain.persons import withhold
from credex.node.authorizations import terms as authorization_terms
from credex.node.authorizations.terms import AuthorizationInvalid, Terms
from credex.node.ledger import Ledger
from credex.node.ledger.appender import Change
from credex.node.store import Connection
from credex.v1 import authorization_pb2, lookup_pb2, record_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Granted:
    authorization_id: str
    grantee: str
    subject_id: str
    active: bool
    record_id: str


async def grant(
    conn: Connection,
    ledger: Ledger,
    given: authorization_pb2.Authorization,
    granted_by: str,
    pseudonymizer: Pseudonymizer | None = None,
) -> Granted:
    """Sign ``given`` as a record of this node's origin; run inside a transaction."""
    terms = authorization_terms.of(given, pseudonymizer)
    return await _sign(conn, ledger, terms, granted_by)


async def _sign(conn: Connection, ledger: Ledger, terms: Terms, granted_by: str) -> Granted:
    record_id = terms.record_id(ledger.origin)
    row = await conn.fetchrow("SELECT status, record FROM records WHERE record_id = $1", record_id)
    if row is not None:
        held = authorization_terms.held(record_pb2.Record.FromString(bytes(row["record"])))
        if held != terms:
            raise AuthorizationInvalid(
                f"authorization {terms.authorization_id} of {terms.grantee} is already recorded with other terms;"
                " end it and grant a new one"
            )
        active = row["status"] == lookup_pb2.ENTRY_STATUS_ACTIVE
        return Granted(terms.authorization_id, terms.grantee, terms.subject_id, active, record_id)
    # Who granted is signed into the record every region holds: a certificate named by an ID number goes withheld.
    await ledger.append(conn, [Change.of(terms.record(ledger.origin, withhold(granted_by)))])
    return Granted(terms.authorization_id, terms.grantee, terms.subject_id, True, record_id)


async def end(conn: Connection, ledger: Ledger, grantee: str, authorization_id: str, reason: str) -> Granted | None:
    """Revoke the record of the authorization from now on; None if this node never recorded it.

    Ending it twice keeps the first end. An authorization recorded at another node is
    ended there: only the origin signs its records' changes.
    """
    unit = authorization_terms.unit_code(grantee)
    given_id = authorization_terms.authorization_id(authorization_id)
    record_id = authorization_terms.record_id(ledger.origin, unit, given_id)
    row = await conn.fetchrow("SELECT subject_id FROM records WHERE record_id = $1", record_id)
    if row is None:
        return None
    # The reason is signed into the REVOKE every region takes in: free text, so no ID number in it.
    await ledger.revoke(conn, record_id, withhold(reason) or "authorization ended")
    return Granted(authorization_id, unit, row["subject_id"], False, record_id)


async def adopt_unsigned(conn: Connection, ledger: Ledger) -> int:
    """Sign every authorization kept before 0025 that has no record yet; returns how many were signed."""
    rows = await conn.fetch(
        "SELECT grantee, authorization_id, subject_id, scope, valid_from, valid_until, document_sha256, granted_by,"
        " ended_at, end_reason FROM authorizations_before_records WHERE record_id IS NULL"
        " ORDER BY granted_at, grantee, authorization_id"
    )
    for row in rows:
        async with conn.transaction():
            kept: dt.date = row["valid_from"]
            terms = Terms(
                authorization_id=row["authorization_id"],
                subject_id=row["subject_id"],
                grantee=row["grantee"],
                scopes=frozenset(str(row["scope"]).split(",")),
                valid_from=kept,
                valid_until=row["valid_until"],
                document_sha256=bytes(row["document_sha256"]),
            )
            granted = await _sign(conn, ledger, terms, row["granted_by"])
            if row["ended_at"] is not None:
                await ledger.revoke(conn, granted.record_id, row["end_reason"] or "authorization ended")
            await conn.execute(
                "UPDATE authorizations_before_records SET record_id = $3 WHERE grantee = $1 AND authorization_id = $2",
                row["grantee"],
                row["authorization_id"],
                granted.record_id,
            )
    if rows:
        log.info("signed %d authorizations kept before they were records", len(rows))
    return len(rows)
