"""Who gets what from a stream: decided per event, from the caller's role and what it stands for.

- Public and government callers get what they may see in lookups (:meth:`Caller.sees`).
- A financing caller gets a subject's events only while the subject's authorization for
  its unit is in force (asked of the store for every batch, node/authorizations/held.py),
  and then restricted (授权查询) records too.
- A supervision caller gets its region's records only, grades (evaluations) included.
- Grades and risk classes (evaluation records) never reach public, government or financing
  streams (credit-use.md, Check rule 9): only supervision subscribers and the federation's peers.
- Authorization records reach only peers and operators: they are permissions, not credit facts.
- Peers and operators get everything, as over ExchangeService.

An event the caller could see while its record was in view, but whose record is now out of
that view (revoked, repaired, deleted, hidden, or past its window for a public caller), is
sent as a *change*: which record, where it stands, and the event's Merkle leaf; never the
record itself, which the caller may no longer see.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from credex.node.config import SubscriptionsConfig
from credex.node.services.access import Caller
from credex.node.store.events import entry_status
from credex.v1 import lookup_pb2, record_pb2

_SEES_GRADES = frozenset({"supervision", "peer", "operator"})
# Whom a subject authorized is a permission, not a credit fact (node/reports/catalogue.py NEVER_SHOWN):
# a financing platform the subject authorized must not learn which other platforms it authorized.
_SEES_AUTHORIZATIONS = frozenset({"peer", "operator"})


class Delivery(enum.Enum):
    NONE = "none"
    CHANGE = "change"  # identifiers and standing only
    FULL = "full"  # the signed envelope


class NotEntitled(Exception):
    """The caller's role has no stream, or the config does not say what it stands for."""


@dataclass(frozen=True, slots=True)
class Entitlement:
    caller: Caller
    grantee: str = ""  # financing: the unit its authorizations name
    region: str = ""  # supervision: the division it supervises

    @classmethod
    def of(cls, caller: Caller, config: SubscriptionsConfig) -> Entitlement:
        if caller.role == "financing":
            grantee = config.grantees.get(caller.identity, "")
            if not grantee:
                raise NotEntitled(
                    f"financing caller {caller.identity[:40]!r} has no unit in subscriptions.grantees;"
                    " an operator must name the USCC its authorizations are granted to"
                )
            return cls(caller, grantee=grantee)
        if caller.role == "supervision":
            region = config.regions.get(caller.identity, "")
            if not region:
                raise NotEntitled(
                    f"supervision caller {caller.identity[:40]!r} has no region in subscriptions.regions;"
                    " an operator must name the division it supervises"
                )
            return cls(caller, region=region)
        return cls(caller)

    @property
    def needs_authorization(self) -> bool:
        return bool(self.grantee)

    def covers_origin(self, origin: str) -> bool:
        """Whether the caller may have anything of ``origin`` at all: a supervision caller only its region's."""
        return not self.region or in_region(origin, self.region)

    def delivery(
        self,
        origin: str,
        record: record_pb2.Record,
        standing: int,
        today: dt.date,
        authorized: bool,
    ) -> Delivery:
        caller = self.caller
        if not self.covers_origin(origin):
            return Delivery.NONE
        if record.kind == record_pb2.KIND_EVALUATION and caller.role not in _SEES_GRADES:
            return Delivery.NONE
        if record.kind == record_pb2.KIND_AUTHORIZATION and caller.role not in _SEES_AUTHORIZATIONS:
            return Delivery.NONE
        level = record.sharing_level
        if self.grantee:
            if not authorized:
                return Delivery.NONE
            # The authorization opens restricted records of that subject: judged as public ones are.
            if level == record_pb2.SHARING_LEVEL_RESTRICTED:
                level = record_pb2.SHARING_LEVEL_PUBLIC
        end = record.publicity.end
        try:
            publicity_end = dt.date.fromisoformat(end) if end else None
        except ValueError:
            publicity_end = None
        status = entry_status(standing, publicity_end, today)
        if caller.sees(level, status):
            return Delivery.FULL
        if caller.sees(level, lookup_pb2.ENTRY_STATUS_ACTIVE):
            return Delivery.CHANGE
        return Delivery.NONE


def in_region(origin: str, region: str) -> bool:
    """``origin`` lies in ``region``: a province (xx0000) holds its cities and districts, a city its districts."""
    if region.endswith("0000"):
        return origin[:2] == region[:2]
    if region.endswith("00"):
        return origin[:4] == region[:4]
    return origin == region
