"""Which authorizations are in force: asked of the authorization records the node holds, from every origin.

An authorization is in force for GRANTEE, SUBJECT, SCOPE on DAY when the node holds a
``KIND_AUTHORIZATION`` record about SUBJECT that is in force as any record is (active,
not revoked, repaired or expired: :func:`~credex.node.store.events.in_force`), is not
marked withdrawn by its platform, names GRANTEE, lists SCOPE, and whose dates include
DAY. The records table, indexed by subject, is the index: a record's revocation (the
origin's ``credex authorization end``) reaches every region by the normal path, and
every node then answers the same.

A *presented* authorization (the document a caller shows in a check or a report
request) is honoured only when it is one of those: same authorization id and same
document digest, about the same subject, for the caller, the scope and the day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from credex.node.authorizations.terms import Terms, held
from credex.node.store import Connection
from credex.node.store.events import in_force
from credex.v1 import record_pb2


async def in_force_terms(conn: Connection, subjects: Iterable[str], day: dt.date) -> list[Terms]:
    """Every authorization held about ``subjects`` whose record is in force on ``day``."""
    wanted = sorted(set(subjects))
    if not wanted:
        return []
    rows = await conn.fetch(
        "SELECT status, publicity_end, record FROM records WHERE subject_id = ANY($1::text[]) AND kind = $2",
        wanted,
        record_pb2.KIND_AUTHORIZATION,
    )
    found = []
    for row in rows:
        if not in_force(row["status"], row["publicity_end"], day):
            continue
        record = record_pb2.Record.FromString(bytes(row["record"]))
        if record.authorization.withdrawn:
            continue
        found.append(held(record))
    return found


def allows(terms: Terms, grantee: str, scope: str, day: dt.date) -> bool:
    return terms.grantee == grantee and scope in terms.scopes and terms.valid_from <= day <= terms.valid_until


async def authorized(conn: Connection, grantee: str, subjects: Iterable[str], scope: str, day: dt.date) -> set[str]:
    """Which of ``subjects`` ``grantee`` holds an authorization in force for, for ``scope`` on ``day``."""
    return {
        terms.subject_id for terms in await in_force_terms(conn, subjects, day) if allows(terms, grantee, scope, day)
    }


async def honoured(conn: Connection, presented: Terms, grantee: str, scope: str, day: dt.date) -> bool:
    """Whether ``presented`` is a held authorization in force that lets ``grantee`` see its subject for ``scope``."""
    if not allows(presented, grantee, scope, day):
        return False
    return any(
        terms.authorization_id == presented.authorization_id
        and terms.document_sha256 == presented.document_sha256
        and allows(terms, grantee, scope, day)
        for terms in await in_force_terms(conn, [presented.subject_id], day)
    )


# Why a presented authorization is refused, and what to do: short, for the edge caps error details.
NOT_HELD = (
    "not an authorization held in force here (same id and document digest, for you, this scope, today);"
    " have it recorded with `credex authorization grant`, which signs it for every region"
)
