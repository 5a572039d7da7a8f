"""Natural persons in a check: the ID number becomes the pseudonym first, and a person is answered only with leave.

A check may name persons by resident ID number (GB 11643), as subjects or as the
responsible persons of a subject (legal representative, principal, actual
controller). The number is validated and turned into the federation's pseudonym
here, before any other work, and is kept nowhere: not in the check rows, not in the
audit trail, not in an error message, not in a log record. Records about persons
are stored under the pseudonym (adapters/profile), so the pseudonym is all a check
needs.

A person is answered only with leave (credit-use.md, Check rule 2): an
:class:`~credex.v1.authorization_pb2.Authorization` in the request whose subject is
that number, whose grantee is the requesting unit, whose scope is the check's
scenario and which is valid today; or a legal basis that the measures catalogue
allows for persons in that scenario. Without it the whole check is refused, so that
a refusal tells the caller nothing about which of its persons have records.

A presented authorization is the caller's word until it is matched: :func:`grounds`
checks its fields, :func:`confirm` honours it only when the node holds it as a signed
authorization record in force (same id and document digest, subject's pseudonym,
requesting unit, scenario, today: :mod:`credex.node.authorizations.held`). A forged or
unrecorded one refuses the whole check and says to have it recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from credex.crypto.pseudonym import Pseudonymizer
from credex.domain import uscc as uscc_codes
from credex.domain.measures import Catalogue, Scenario, UnknownScenario
from credex.domain.persons import validate_ric
from credex.node.authorizations import held
from credex.node.authorizations.terms import DOCUMENT_DIGEST_BYTES, Terms
from credex.node.checks.checking import CheckFailure
from credex.node.store import Connection
from credex.v1 import authorization_pb2


@dataclass(frozen=True, slots=True)
class Leave:
    """Why a person may be answered, as the audit trail shows it (never the number itself)."""

    pseudonym: str
    ground: str


@dataclass(frozen=True, slots=True)
class Presented:
    """A well-formed authorization of the request that would let the requesting unit check a person today."""

    field: str
    number: str
    authorization: authorization_pb2.Authorization
    valid_from: dt.date
    valid_until: dt.date


@dataclass(frozen=True, slots=True)
class Granted:
    """A presented authorization the node holds in force: leave to answer about the person ``number``."""

    number: str
    ground: str


def grounds(
    authorizations: Sequence[authorization_pb2.Authorization],
    catalogue: Catalogue,
    unit: str,
    scenario: Scenario,
    today: dt.date,
) -> list[Presented]:
    """Every authorization of the request checked field by field; those that would let ``unit`` check persons today.

    A malformed authorization is INVALID_ARGUMENT even if no person needs it: bad input is never passed over.
    Authorizations about a USCC (an enterprise's leave) are valid input but grant nothing about a person.
    What this returns grants nothing until :func:`confirm` has matched it with a held authorization.
    """
    granted = []
    for index, auth in enumerate(authorizations):
        name = f"authorizations[{index}]"
        if not auth.authorization_id.strip():
            raise CheckFailure("INVALID_ARGUMENT", f"{name}.authorization_id is required")
        if len(auth.document_sha256) != DOCUMENT_DIGEST_BYTES:
            raise CheckFailure(
                "INVALID_ARGUMENT", f"{name}.document_sha256 must be the 32-byte SHA-256 of the signed document"
            )
        start, end = _date(f"{name}.valid_from", auth.valid_from), _date(f"{name}.valid_until", auth.valid_until)
        if end < start:
            raise CheckFailure("INVALID_ARGUMENT", f"{name}: valid_until is before valid_from")
        grantee = _uscc(f"{name}.grantee", auth.grantee)
        try:
            scope = catalogue.scenario(auth.scope).code
        except UnknownScenario:
            raise CheckFailure("INVALID_ARGUMENT", f"{name}.scope must be the check's scenario code") from None
        number = _subject_number(name, auth.subject)
        if number and grantee == unit and scope == scenario.code and start <= today <= end:
            granted.append(Presented(name, number, auth, start, end))
    return granted


async def confirm(
    conn: Connection,
    presented: Sequence[Presented],
    unit: str,
    scenario: Scenario,
    today: dt.date,
    pseudonymizer: Pseudonymizer | None,
) -> list[Granted]:
    """The presented authorizations as leave, each matched with one the node holds; PERMISSION_DENIED otherwise."""
    if presented and pseudonymizer is None:
        raise CheckFailure(
            "FAILED_PRECONDITION", "this node has no pseudonym key (keys.pseudonym_key), so it cannot check persons"
        )
    granted = []
    for given in presented:
        assert pseudonymizer is not None
        terms = Terms(
            authorization_id=given.authorization.authorization_id,
            subject_id=pseudonymizer.pseudonym(given.number),
            grantee=unit,
            scopes=frozenset({scenario.code}),
            valid_from=given.valid_from,
            valid_until=given.valid_until,
            document_sha256=given.authorization.document_sha256,
        )
        if not await held.honoured(conn, terms, unit, scenario.code, today):
            raise CheckFailure("PERMISSION_DENIED", f"{given.field} is {held.NOT_HELD}; nothing was checked")
        digest = given.authorization.document_sha256.hex()[:16]
        granted.append(Granted(given.number, f"authorization held, document sha256:{digest}"))
    return granted


def admit(
    field: str,
    raw: str,
    granted: Sequence[Granted],
    scenario: Scenario,
    legal_basis: str,
    pseudonymizer: Pseudonymizer | None,
) -> Leave:
    """The pseudonym of the person ``raw`` names, with the ground that allows answering about them.

    INVALID_ARGUMENT for a number that is not one, FAILED_PRECONDITION on a node without the
    pseudonym key, PERMISSION_DENIED without leave. No message repeats the number.
    """
    if pseudonymizer is None:
        raise CheckFailure(
            "FAILED_PRECONDITION", "this node has no pseudonym key (keys.pseudonym_key), so it cannot check persons"
        )
    id_number = number(field, raw)
    ground = next((g.ground for g in granted if g.number == id_number), "")
    if not ground and scenario.allows_persons_by(legal_basis):
        ground = "legal basis allowed for persons in the scenario"
    if not ground:
        allowed = "; ".join(scenario.person_legal_bases) or "none in this scenario"
        raise CheckFailure(
            "PERMISSION_DENIED",
            f"{field}: a person is answered only with their authorization for the requesting unit in scenario"
            f" {scenario.code}, valid today, or a legal basis the catalogue allows for persons ({allowed});"
            " nothing was checked",
        )
    return Leave(pseudonymizer.pseudonym(id_number), ground)


def number(field: str, raw: str) -> str:
    """The normalized ID number ``raw`` is; INVALID_ARGUMENT, without repeating it, if it is none."""
    try:
        return validate_ric(raw)
    except uscc_codes.InvalidSubjectCode as exc:
        raise CheckFailure("INVALID_ARGUMENT", f"{field}: {exc.message}; nothing was checked") from None


def _subject_number(name: str, subject: str) -> str:
    """The normalized ID number an authorization is about; "" for an enterprise's (a USCC)."""
    try:
        return validate_ric(subject)
    except uscc_codes.InvalidSubjectCode:
        pass
    try:
        uscc_codes.validate(subject)
    except uscc_codes.InvalidSubjectCode:
        raise CheckFailure("INVALID_ARGUMENT", f"{name}.subject must be a resident ID number or a USCC") from None
    return ""


def _uscc(name: str, raw: str) -> str:
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise CheckFailure("INVALID_ARGUMENT", f"{name}: {exc.message}") from None


def _date(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CheckFailure("INVALID_ARGUMENT", f"{name} must be a date YYYY-MM-DD") from None
