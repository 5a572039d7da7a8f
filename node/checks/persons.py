"""Natural persons in a check or a lookup: the ID number becomes the pseudonym first; answers only with leave.

A check (and a profile lookup, by the same rule: :func:`admit_all`) may name persons
by resident ID number (GB 11643), as subjects or as the
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

import asyncpg

from credex.crypto.pseudonym import Pseudonymizer
from credex.domain import uscc as uscc_codes
from credex.domain.measures import Catalogue, Scenario, UnknownScenario
from credex.domain.persons import validate_ric
from credex.node.authorizations import held
from credex.node.authorizations.terms import DOCUMENT_DIGEST_BYTES, Terms
from credex.node.checks.checking import CheckFailure
from credex.node.checks.overdue import CHINA
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
    prefix: str = "",
) -> list[Presented]:
    """Every authorization of the request checked field by field; those that would let ``unit`` check persons today.

    A malformed authorization is INVALID_ARGUMENT even if no person needs it: bad input is never passed over.
    Authorizations about a USCC (an enterprise's leave) are valid input but grant nothing about a person.
    What this returns grants nothing until :func:`confirm` has matched it with a held authorization.
    """
    granted = []
    for index, auth in enumerate(authorizations):
        name = f"{prefix}authorizations[{index}]"
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
            raise CheckFailure("PERMISSION_DENIED", f"{given.field} is {held.NOT_HELD}; nothing was answered")
        digest = given.authorization.document_sha256.hex()[:16]
        granted.append(Granted(given.number, f"authorization held, document sha256:{digest}"))
    return granted


async def admit_all(
    pool: asyncpg.Pool,
    named: Sequence[tuple[str, str]],
    catalogue: Catalogue,
    scenario: Scenario,
    unit: str,
    legal_basis: str,
    authorizations: Sequence[authorization_pb2.Authorization],
    pseudonymizer: Pseudonymizer | None,
    prefix: str = "",
) -> list[Leave]:
    """The pseudonyms of the persons ``named`` (field, raw number) with their leave; one without it refuses all.

    The one path of a check and of a profile lookup: every authorization and every number is
    checked before the store is asked anything, then the presented authorizations are matched
    with held ones (:func:`confirm`), then every person goes through :func:`admit`.
    """
    today = dt.datetime.now(CHINA).date()
    presented = grounds(authorizations, catalogue, unit, scenario, today, prefix)
    for field, raw in named:
        number(field, raw)
    async with pool.acquire() as conn:
        granted = await confirm(conn, presented, unit, scenario, today, pseudonymizer)
    return [admit(field, raw, granted, scenario, legal_basis, pseudonymizer) for field, raw in named]


async def admit_by_leave(
    pool: asyncpg.Pool,
    named: Sequence[tuple[str, str]],
    scenario_code: str,
    unit_code: str,
    legal_basis: str,
    authorizations: Sequence[authorization_pb2.Authorization],
    pseudonymizer: Pseudonymizer | None,
    prefix: str = "",
) -> list[Leave]:
    """:func:`admit_all` for requests that name persons outside a check (a profile lookup).

    The scenario and the requesting unit they give are checked as a check's are (``prefix``
    names where they sit in the request).
    """
    catalogue = Catalogue.shipped()
    try:
        scenario = catalogue.scenario(scenario_code)
    except UnknownScenario as exc:
        raise CheckFailure("INVALID_ARGUMENT", f"{prefix}scenario: {exc}") from None
    unit = _uscc(f"{prefix}requesting_unit_uscc", unit_code)
    return await admit_all(pool, named, catalogue, scenario, unit, legal_basis, authorizations, pseudonymizer, prefix)


def pseudonym_of(field: str, raw: str, pseudonymizer: Pseudonymizer | None) -> str:
    """The pseudonym of the person ``raw`` names, asked without leave: for asking about oneself (who checked me).

    INVALID_ARGUMENT for a number that is not one, FAILED_PRECONDITION on a node without the
    pseudonym key. No message repeats the number.
    """
    return _number(field, raw, pseudonymizer)[1]


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
    id_number, pseudonym = _number(field, raw, pseudonymizer)
    ground = next((g.ground for g in granted if g.number == id_number), "")
    if not ground and scenario.allows_persons_by(legal_basis):
        ground = "legal basis allowed for persons in the scenario"
    if not ground:
        allowed = "; ".join(scenario.person_legal_bases) or "none in this scenario"
        raise CheckFailure(
            "PERMISSION_DENIED",
            f"{field}: a person is answered only with their authorization for the requesting unit in scenario"
            f" {scenario.code}, valid today, or a legal basis the catalogue allows for persons ({allowed});"
            " nothing was answered",
        )
    return Leave(pseudonym, ground)


def number(field: str, raw: str) -> str:
    """The normalized ID number ``raw`` is; INVALID_ARGUMENT, without repeating it, if it is none."""
    try:
        return validate_ric(raw)
    except uscc_codes.InvalidSubjectCode as exc:
        raise CheckFailure("INVALID_ARGUMENT", f"{field}: {exc.message}; nothing was answered") from None


def _number(field: str, raw: str, pseudonymizer: Pseudonymizer | None) -> tuple[str, str]:
    """The normalized number and its pseudonym; the number is for comparing with authorizations, never to keep."""
    if pseudonymizer is None:
        raise CheckFailure(
            "FAILED_PRECONDITION",
            "this node has no pseudonym key (keys.pseudonym_key), so it cannot answer about persons",
        )
    id_number = number(field, raw)
    return id_number, pseudonymizer.pseudonym(id_number)


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
