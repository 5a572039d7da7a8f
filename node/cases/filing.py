"""A filing: what a caller files, the case id that makes filing idempotent, and who reads it.

The node that takes a filing derives the case id from (itself, the filer, the filer's
request id), so filing twice finds the first case; the content digest tells a repeat
from a different filing under a reused request id. A filing delivered by another member
is held to the same shape here as a caller's is at the edge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from credex.node.cases.model import Kind, invalid
from credex.v1 import case_pb2

GROUNDS = frozenset({"error", "omission", "window", "listing", "repair_result"})
MAX_TEXT = 500  # the longest text a filing's field may hold (the edge holds callers to less)
CLOCK_SKEW = dt.timedelta(minutes=10)  # how far ahead of this node's clock a filing node's may be


def case_id_of(filed_on: str, filer: str, request_id: str) -> str:
    """The case id of a filing: one per (filing node, filer, request id), the idempotency key."""
    digest = hashlib.sha256("\x00".join((filed_on, filer, request_id)).encode()).hexdigest()
    return f"case-{filed_on}-{digest[:20]}"


def content_digest(filing: case_pb2.CaseFiling) -> bytes:
    """SHA-256 of what was filed, without the fields the filing node adds (id, time, digest)."""
    content = case_pb2.CaseFiling()
    content.CopyFrom(filing)
    content.ClearField("case_id")
    content.ClearField("filed_at")
    content.ClearField("content_digest")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).digest()


@dataclass(frozen=True, slots=True)
class Filing:
    """A case as a caller files it."""

    kind: Kind
    request_id: str
    record_id: str
    filer: str
    on_behalf_of: str
    grounds: str = ""
    statement: str = ""
    proof_of_duty: str = ""
    commitment: str = ""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads cases: operators see all of a node's cases, others the ones they filed on that node (and a
    providing unit's caller the cases passed to its unit).

    A certificate name is only the name of a caller of one node: the same name on another
    node may be another office. So a filer is known by (filing node, name), and at the
    origin a caller never sees the cases filed elsewhere under its name.
    """

    identity: str
    sees_all: bool
    provider_unit: str = ""  # a caller bound to a providing unit also sees the cases passed to it (部门审核)

    def may_see(self, row: Any, node: str) -> bool:
        if self.provider_unit and row["provider_unit"] == self.provider_unit:
            return True
        return self.sees_all or (row["filed_on"] == node and row["filer"] == self.identity)


def kind_of(pb: case_pb2.CaseFiling) -> Kind:
    return Kind.REPAIR if pb.kind == case_pb2.CASE_KIND_REPAIR else Kind.OBJECTION


def filing_time(text: str) -> dt.datetime:
    """When a delivered filing was made: deadlines count from it, so a time that is not one, or that has
    not come yet, is refused rather than replaced (a member could otherwise move the origin's deadlines)."""
    try:
        filed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise invalid(f"the filing's filed_at {text[:40]!r} is not an ISO 8601 time") from None
    if filed.tzinfo is None:
        raise invalid(f"the filing's filed_at {text[:40]!r} has no time zone")
    if filed > dt.datetime.now(dt.UTC) + CLOCK_SKEW:
        raise invalid(f"the filing's filed_at {text[:40]!r} is in the future; check the filing node's clock")
    return filed


def parse_time(text: str) -> dt.datetime:
    """A time written by this node or checked on arrival; now, for one that is not (a step's own clock)."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.now(dt.UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
