"""Authorizations subjects gave to financing platforms, and which are in force.

A financing platform (信易贷) may take an enterprise's records only with the
enterprise's authorization (credit-use.md, the notes on authorization; platforms.md:
"authorizations are records too"). Operators record each one as the granting
platform reports it and end it when it is withdrawn; the stream asks, for every batch
of events it is about to send, which of their subjects are authorized *now*, so an
ended authorization stops the stream at the next event, not at the next subscribe.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from credex.crypto.pseudonym import PREFIX as PSEUDONYM_PREFIX
from credex.domain import uscc as uscc_codes
from credex.errors import CredexError
from credex.node.store import Connection
from credex.v1 import authorization_pb2

# A stream is what these authorizations allow; a scenario-scoped one is for checks, not streams.
STREAM_SCOPE = "stream"
MAX_ID_CHARS = 128
_PSEUDONYM = re.compile(re.escape(PSEUDONYM_PREFIX) + r"[a-z2-7]{32}")


class AuthorizationInvalid(CredexError, ValueError):
    """An authorization that cannot be recorded as given; the message names the field."""


@dataclass(frozen=True, slots=True)
class Granted:
    authorization_id: str
    grantee: str
    subject_id: str
    active: bool


def subject_code(raw: str) -> str:
    """A subject as records name it: a USCC in its canonical form, or a person pseudonym.

    Raw resident ID numbers are refused: they never leave the origin, so no stream
    could match them, and keeping one here would be keeping what must not be kept.
    """
    if _PSEUDONYM.fullmatch(raw):
        return raw
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise AuthorizationInvalid(
            f"{exc.message}; name an enterprise by its USCC or a person by the federation's pseudonym"
            f" ({PSEUDONYM_PREFIX}…)"
        ) from None


def _date(name: str, raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise AuthorizationInvalid(f"{name} must be an ISO date such as 2026-01-31") from None


def _id(name: str, raw: str) -> str:
    if not raw or len(raw) > MAX_ID_CHARS:
        raise AuthorizationInvalid(f"{name} is required, at most {MAX_ID_CHARS} characters")
    return raw


async def grant(conn: Connection, given: authorization_pb2.Authorization, granted_by: str) -> Granted:
    """Record an authorization; the same id granted again with the same terms changes nothing.

    The same id with other terms is refused: an authorization is a document the grantee
    keeps, and its terms change only by ending it and granting a new one.
    """
    authorization_id = _id("authorization_id", given.authorization_id)
    grantee = subject_code_of_unit(given.grantee)
    try:
        subject = subject_code(given.subject)
    except AuthorizationInvalid as exc:
        raise AuthorizationInvalid(f"subject: {exc}") from None
    scope = given.scope or STREAM_SCOPE
    if len(scope) > 64:
        raise AuthorizationInvalid("scope has more than 64 characters")
    valid_from = _date("valid_from", given.valid_from)
    valid_until = _date("valid_until", given.valid_until)
    if valid_until < valid_from:
        raise AuthorizationInvalid("valid_until is before valid_from")
    if len(given.document_sha256) != 32:
        raise AuthorizationInvalid("document_sha256 must be the 32-byte SHA-256 of the signed authorization document")
    row = await conn.fetchrow(
        "INSERT INTO authorizations (grantee, authorization_id, subject_id, scope, valid_from, valid_until,"
        " document_sha256, granted_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (grantee, authorization_id) DO NOTHING RETURNING authorization_id",
        grantee,
        authorization_id,
        subject,
        scope,
        valid_from,
        valid_until,
        given.document_sha256,
        granted_by,
    )
    if row is None:
        held = await conn.fetchrow(
            "SELECT subject_id, scope, valid_from, valid_until, document_sha256, ended_at FROM authorizations"
            " WHERE grantee = $1 AND authorization_id = $2",
            grantee,
            authorization_id,
        )
        assert held is not None
        same = (held["subject_id"], held["scope"], held["valid_from"], held["valid_until"]) == (
            subject,
            scope,
            valid_from,
            valid_until,
        ) and bytes(held["document_sha256"]) == given.document_sha256
        if not same:
            raise AuthorizationInvalid(
                f"authorization {authorization_id} of {grantee} is already recorded with other terms;"
                " end it and grant a new one"
            )
        return Granted(authorization_id, grantee, subject, held["ended_at"] is None)
    return Granted(authorization_id, grantee, subject, True)


def subject_code_of_unit(raw: str) -> str:
    """The grantee: a unit, always by USCC."""
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise AuthorizationInvalid(f"grantee: {exc.message}") from None


async def end(conn: Connection, grantee: str, authorization_id: str, ended_by: str, reason: str) -> Granted | None:
    """End an authorization from now on; None if it is not recorded. Ending it twice keeps the first end."""
    unit = subject_code_of_unit(grantee)
    row = await conn.fetchrow(
        "UPDATE authorizations SET ended_at = coalesce(ended_at, now()), ended_by = coalesce(ended_by, $3),"
        " end_reason = coalesce(end_reason, $4) WHERE grantee = $1 AND authorization_id = $2"
        " RETURNING subject_id",
        unit,
        _id("authorization_id", authorization_id),
        ended_by,
        reason,
    )
    if row is None:
        return None
    return Granted(authorization_id, unit, row["subject_id"], False)


async def authorized(conn: Connection, grantee: str, subjects: Iterable[str], today: dt.date) -> set[str]:
    """Which of ``subjects`` ``grantee`` holds a stream authorization for, in force today."""
    wanted = sorted(set(subjects))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT subject_id FROM authorizations WHERE grantee = $1 AND subject_id = ANY($2::text[])"
        " AND ended_at IS NULL AND scope = $3 AND valid_from <= $4 AND valid_until >= $4",
        grantee,
        wanted,
        STREAM_SCOPE,
        today,
    )
    return {r["subject_id"] for r in rows}
