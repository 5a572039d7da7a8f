"""Refused calls in the audit trail: a few rows a second of each kind, the rest summed up.

Probing is worth seeing, so a refusal is audited too, with what was sent. But a caller
that sends junk in a loop, over gRPC or to the HTTP tile and witness endpoints, must not
cost the trail a row a call: the first :data:`REFUSAL_ROWS` refusals of one caller,
method and status in a period of :data:`SUMMARY_SECONDS` get a row each, and the rest
are counted and written as one row per kind when the period ends (``calls`` says how
many it stands for, ``detail`` the first reason given). Every call is still counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TypeAlias

from credex.node.services.audit_trail import AuditEntry, AuditLog

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 1.0  # refused calls beyond their own rows are summed up this often
REFUSAL_ROWS = 5  # refusals of one caller, method and status per summary period with a row each

Kind: TypeAlias = tuple[str, str, str, str]  # caller identity, role, method, status


@dataclass
class _Tally:
    """Calls of one kind summed up since the last summary, with the first reason given."""

    calls: int = 0
    reason: str = ""


class Refusals:
    """The refusals of one server (the gRPC edge, or the HTTP server) on their way to the audit trail.

    ``unaudited`` statuses are summed up and logged but get no row (a call the caller
    cancelled answered nothing).
    """

    def __init__(self, audit: AuditLog, origin: str, unaudited: frozenset[str] = frozenset()) -> None:
        self.audit = audit
        self.origin = origin
        self.unaudited = unaudited
        # Since the last summary: refusals with a row of their own, and calls summed up instead.
        self._rows: Counter[Kind] = Counter()
        self._tally: dict[Kind, _Tally] = {}
        self._summary: asyncio.TimerHandle | None = None
        audit.before_stop(self.close)

    def own_row(self, entry: AuditEntry) -> bool:
        """Whether this refusal gets a row of its own; if not, it has been summed up."""
        kind = (entry.caller, entry.role, entry.method, entry.status)
        self._arm()
        seen = self._rows[kind]
        if seen >= REFUSAL_ROWS:
            self.sum_up(kind, entry.detail)
            return False
        self._rows[kind] = seen + 1
        return True

    def note(self, entry: AuditEntry) -> None:
        """A refusal's row handed to the trail without waiting, or summed up."""
        if self.own_row(entry):
            self.audit.note(entry)

    def sum_up(self, kind: Kind, reason: str) -> None:
        """Count a refused call of ``kind`` in the period's summary; the first reason given is kept."""
        tally = self._tally.get(kind)
        if tally is None:
            tally = self._tally[kind] = _Tally(reason=reason)
        tally.calls += 1
        self._arm()

    def _arm(self) -> None:
        """Make sure a summary is due at the end of the current period."""
        if self._summary is None:
            self._summary = asyncio.get_running_loop().call_later(SUMMARY_SECONDS, self._summarize)

    def _summarize(self) -> None:
        """Write one row per kind summed up, and start a new period."""
        self._summary = None
        tally, self._tally = self._tally, {}
        self._rows.clear()
        for (identity, role, method, status), summed in tally.items():
            log.warning(
                "%s: %d %s calls of %s (%s) %s: %s",
                self.origin,
                summed.calls,
                method,
                identity,
                role,
                status,
                summed.reason,
            )
            if status in self.unaudited:
                continue
            self.audit.note(
                AuditEntry(
                    caller=identity,
                    role=role,
                    method=method,
                    subject_id="",
                    purpose="",
                    answered=0,
                    status=status,
                    at=dt.datetime.now(dt.UTC),
                    detail=f"{summed.calls} calls refused in {SUMMARY_SECONDS:g} s, the first: {summed.reason}",
                    calls=summed.calls,
                )
            )

    def close(self) -> None:
        """Hand in what is summed up so far, without waiting for the period's end: the trail is stopping."""
        if self._summary is not None:
            self._summary.cancel()
            self._summarize()
