"""An authorization's terms, checked field by field, and the record that carries them.

The terms come as an :class:`~credex.v1.authorization_pb2.Authorization` (the document
the grantee keeps: its id, subject, grantee, scope, dates and the SHA-256 of the signed
document) and become a ``KIND_AUTHORIZATION`` record of the recording node's origin.
The record id is derived from the grantee and the authorization id alone, so ending
one needs no more than what the grantee can name, and granting the same document twice
is the same record.

The subject is named as records name subjects: a USCC, or a person's federation
pseudonym. A raw resident ID number is turned into the pseudonym before anything else
(:func:`subject_code`) and kept nowhere.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from credex.crypto.pseudonym import PREFIX as PSEUDONYM_PREFIX
from credex.crypto.pseudonym import Pseudonymizer, is_pseudonym
from credex.domain import identity
from credex.domain import uscc as uscc_codes
from credex.domain.persons import validate_ric, withhold
from credex.errors import CredexError
from credex.v1 import authorization_pb2, record_pb2

STREAM_SCOPE = "stream"  # a financing platform's subscription stream
REPORT_SCOPE = "report"  # a natural person's credit report
MAX_ID_CHARS = 128
MAX_SCOPE_CHARS = 256
DOCUMENT_DIGEST_BYTES = 32  # SHA-256
_SCOPE = re.compile(r"[^\s,]{1,64}(,[^\s,]{1,64})*")


class AuthorizationInvalid(CredexError, ValueError):
    """An authorization that cannot be recorded or honoured as given; the message names the field."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What an authorization allows, validated: the same shape whether presented, granted or held."""

    authorization_id: str
    subject_id: str  # USCC or person pseudonym
    grantee: str  # USCC
    scopes: frozenset[str]
    valid_from: dt.date
    valid_until: dt.date
    document_sha256: bytes

    @property
    def person(self) -> bool:
        return is_pseudonym(self.subject_id)

    def record_id(self, origin: str) -> str:
        return record_id(origin, self.grantee, self.authorization_id)

    def record(self, origin: str, granted_by: str) -> record_pb2.Record:
        """The signed form of these terms: restricted (授权查询), its window the authorization's own dates."""
        if self.person:
            subject = record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_NATURAL_PERSON, person_pseudonym=self.subject_id)
        else:
            subject = record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=self.subject_id)
        return record_pb2.Record(
            record_id=self.record_id(origin),
            origin=origin,
            kind=record_pb2.KIND_AUTHORIZATION,
            subject=subject,
            decision_date=self.valid_from.isoformat(),
            publicity=record_pb2.PublicityWindow(start=self.valid_from.isoformat(), end=self.valid_until.isoformat()),
            sharing_level=record_pb2.SHARING_LEVEL_RESTRICTED,
            authorization=record_pb2.AuthorizationDetails(
                grantee=record_pb2.Authority(uscc=self.grantee),
                scope=",".join(sorted(self.scopes)),
                valid_from=self.valid_from.isoformat(),
                valid_to=self.valid_until.isoformat(),
                authorization_id=self.authorization_id,
                document_sha256=self.document_sha256,
                granted_by=granted_by,
            ),
        )


def record_id(origin: str, grantee: str, authorization_id: str) -> str:
    """The record of authorization ``authorization_id`` for ``grantee`` as ``origin`` signs it."""
    return identity.record_id(origin, record_pb2.KIND_AUTHORIZATION, grantee, [authorization_id])


def of(given: authorization_pb2.Authorization, pseudonymizer: Pseudonymizer | None) -> Terms:
    """``given`` checked field by field; a person named by ID number is turned into the pseudonym."""
    scope_text = given.scope or STREAM_SCOPE
    if len(scope_text) > MAX_SCOPE_CHARS or not _SCOPE.fullmatch(scope_text):
        raise AuthorizationInvalid(
            f"scope must be one or more comma-separated scopes (a scenario code, {REPORT_SCOPE!r},"
            f" {STREAM_SCOPE!r}), at most {MAX_SCOPE_CHARS} characters"
        )
    valid_from = _date("valid_from", given.valid_from)
    valid_until = _date("valid_until", given.valid_until)
    if valid_until < valid_from:
        raise AuthorizationInvalid("valid_until is before valid_from")
    if len(given.document_sha256) != DOCUMENT_DIGEST_BYTES:
        raise AuthorizationInvalid("document_sha256 must be the 32-byte SHA-256 of the signed authorization document")
    return Terms(
        authorization_id=authorization_id(given.authorization_id),
        subject_id=subject_code(given.subject, pseudonymizer, "subject"),
        grantee=unit_code(given.grantee),
        scopes=frozenset(scope_text.split(",")),
        valid_from=valid_from,
        valid_until=valid_until,
        document_sha256=given.document_sha256,
    )


def held(record: record_pb2.Record) -> Terms:
    """The terms a held ``KIND_AUTHORIZATION`` record states; a field it leaves empty allows nothing."""
    details = record.authorization
    return Terms(
        authorization_id=details.authorization_id or record.record_id,
        subject_id=identity.subject_id(record),
        grantee=details.grantee.uscc,
        scopes=frozenset(filter(None, details.scope.split(","))),
        valid_from=_held_date(details.valid_from, dt.date.min),
        valid_until=_held_date(details.valid_to, dt.date.max),
        document_sha256=details.document_sha256,
    )


def subject_code(raw: str, pseudonymizer: Pseudonymizer | None = None, field: str = "subject") -> str:
    """A subject as records name it: a USCC in its canonical form, or a person's pseudonym.

    A resident ID number becomes the pseudonym when the node has the key; the number
    itself is never kept and no message repeats it.
    """
    text = raw.strip()
    if is_pseudonym(text):
        return text
    try:
        number = validate_ric(text)
    except uscc_codes.InvalidSubjectCode:
        number = ""
    if number:
        if pseudonymizer is None:
            raise AuthorizationInvalid(
                f"{field}: this node has no pseudonym key (keys.pseudonym_key); name the person by the federation's"
                f" pseudonym ({PSEUDONYM_PREFIX}…)"
            )
        return pseudonymizer.pseudonym(number)
    try:
        return uscc_codes.validate(text).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise AuthorizationInvalid(
            f"{field}: {exc.message}; name an enterprise by its USCC or a person by the federation's pseudonym"
            f" ({PSEUDONYM_PREFIX}…)"
        ) from None


def unit_code(raw: str) -> str:
    """The grantee: a unit, always by USCC."""
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise AuthorizationInvalid(f"grantee: {exc.message}") from None


def authorization_id(raw: str) -> str:
    """The id as given; one holding a resident ID number is refused, since the record carries it to every region."""
    if not raw.strip() or len(raw) > MAX_ID_CHARS:
        raise AuthorizationInvalid(f"authorization_id is required, at most {MAX_ID_CHARS} characters")
    if withhold(raw) != raw:
        raise AuthorizationInvalid(
            "authorization_id holds a resident ID number, which would be signed into a record every region holds;"
            " use the document's own number"
        )
    return raw


def _date(name: str, raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise AuthorizationInvalid(f"{name} must be an ISO date such as 2026-01-31") from None


def _held_date(raw: str, default: dt.date) -> dt.date:
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:  # a platform's unreadable date: the record allows nothing rather than everything
        return dt.date.max if default == dt.date.min else dt.date.min
