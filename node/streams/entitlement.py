"""Who gets what from a stream: decided per event, from the caller's role and what it stands for.

- Public and government callers get what they may see in lookups (:meth:`Caller.sees`).
- A financing caller gets a subject's events only while the subject's authorization for
  its unit is in force (asked of the store for every batch, node/authorizations/held.py),
  and then restricted (授权查询) records too.
- A supervision caller gets its region's records only, grades and risk classes included, each
  risk class with its scheme's default 双随机 sampling rate (domain/risk_schemes.toml). Its region
  is the division it supervises (access.regions, :attr:`Caller.region`, the one fact lookups ask
  too): an origin inside it whole; an origin wider than it (a city's supervisor and its province's
  platform) only in the records that concern the region, by the subject's or the identifying unit's
  division (:func:`credex.domain.jurisdiction.in_region`), never those of another city.
- Which kinds a role may see at all is the lookups' rule (:meth:`Caller.sees`): risk classes only
  supervision callers (and peers and operators), grades never public or financing callers
  (credit-use.md, Check rule 9).
- Authorization records reach only peers and operators (the same table, domain/audience.py).
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

from credex.domain.jurisdiction import in_region
from credex.domain.regions import within
from credex.domain.risk import RiskSchemes
from credex.node.config import SubscriptionsConfig
from credex.node.services.access import Caller
from credex.node.store.events import entry_status
from credex.v1 import lookup_pb2, record_pb2, subscription_pb2


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
            if caller.lacks_region:
                raise NotEntitled(
                    f"supervision caller {caller.identity[:40]!r} has no region in access.regions;"
                    " an operator must name the division it supervises"
                )
            return cls(caller, region=caller.region)
        return cls(caller)

    @property
    def needs_authorization(self) -> bool:
        return bool(self.grantee)

    def covers_origin(self, origin: str) -> bool:
        """Whether the caller may have anything of ``origin`` at all: a supervision caller its region's origins
        and the origins its region lies in (whose records are then judged one by one, :meth:`concerns_region`)."""
        return not self.region or within(origin, self.region) or within(self.region, origin)

    def concerns_region(self, origin: str, record: record_pb2.Record) -> bool:
        """A supervision caller's part of ``origin``: all of an origin in its region, else what concerns the region."""
        return not self.region or in_region(self.region, origin, record)

    def sampling(self, record: record_pb2.Record) -> subscription_pb2.SamplingRate | None:
        """The default 双随机 rate sent beside a risk class (only supervision callers are sent one at all)."""
        if record.kind != record_pb2.KIND_RISK_CLASS:
            return None
        details = record.risk_class
        rate = RiskSchemes.shipped().sampling(details.scheme, details.risk_class)
        if rate is None:
            return None
        return subscription_pb2.SamplingRate(
            scheme=details.scheme,
            risk_class=details.risk_class,
            low_percent=rate.low_percent,
            high_percent=rate.high_percent,
        )

    def delivery(
        self,
        origin: str,
        record: record_pb2.Record,
        standing: int,
        today: dt.date,
        authorized: bool,
    ) -> Delivery:
        caller = self.caller
        if not self.concerns_region(origin, record):
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
        if caller.sees(level, status, record.kind):
            return Delivery.FULL
        if caller.sees(level, lookup_pb2.ENTRY_STATUS_ACTIVE, record.kind):
            return Delivery.CHANGE
        return Delivery.NONE
