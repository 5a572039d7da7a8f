"""Alarms: evidence that an origin's log cannot be trusted as it stands.

Raised on equivocation — two validly signed checkpoints of one origin that
cannot both be true, or validly signed events that contradict each other or the
origin's own checkpoint. Both pieces of evidence are kept; the origin is frozen
(nothing more of it is applied) until an operator clears the alarm with
``credex alarm clear``. The raise is logged, counted in a metric and shown in
the node's status.

Some alarms call for an operator without being evidence against the log:
``checkpoint.unreachable`` (an origin signed a checkpoint that no member can
serve the events of, for longer than ``sync.unreachable_alarm_seconds``) and
``sync.not_a_peer`` (a member refuses this node FetchEvents: it does not
recognise it as a peer) do not freeze the origin, are raised once while open,
and are resolved by the node itself once their cause is gone.

``entry.oversize`` says an origin signed an event longer than a C2SP tlog-tiles entry
bundle can carry (65,535 bytes), which a credex origin refuses to sign: the origin broke
the protocol, yet its event is validly signed and its log goes on from it, so the event is
applied and the alarm, naming the seq, asks an operator to take it up with that origin.
It does not freeze (the log is not false, only unservable as a bundle there) and stays
open until an operator clears it.

``case.late`` says a case at this origin passed a deadline on the official calendar
(acceptance, decision, provider review or propagation); it is raised once per case and deadline and
resolved by the node when the case moves on (a decision, an extension, its close).

``revocation.root`` is evidence against this node's own copy: a key revocation
in the trust bundle gives the origin's Merkle root at the revocation position,
and the log held here has another root there, so it holds history forged with
the revoked key. It freezes the origin like equivocation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from prometheus_client import Gauge

from credex.node.store import Connection

log = logging.getLogger(__name__)

OPEN_ALARMS = Gauge("credex_open_alarms", "Open equivocation alarms, by node and origin", ["origin", "peer"])


class AlarmKind(StrEnum):
    """What an alarm says; its value is the text stored in ``alarms.kind`` and shown to operators."""

    EQUIVOCATION_EVENT = "equivocation.event"  # two validly signed events of one origin at one seq
    EQUIVOCATION_CHECKPOINT = "equivocation.checkpoint"  # two validly signed checkpoints, one size, two roots
    EQUIVOCATION_LOG = "equivocation.log"  # a signed checkpoint disagrees with the origin's own signed events
    SELF_INCONSISTENT = "self.inconsistent"  # this node's own log lost the root it signed
    REVOCATION_ROOT = "revocation.root"  # the copy held disagrees with a revocation's root
    CHECKPOINT_UNREACHABLE = "checkpoint.unreachable"  # a checkpoint no member serves the events of
    SYNC_NOT_A_PEER = "sync.not_a_peer"  # a member refuses this node FetchEvents
    REPAIR_UNCONFIRMED = "repair.unconfirmed"  # a peer has not confirmed an approved repair in time
    CASE_LATE = "case.late"  # a case at this origin passed one of its deadlines
    ENTRY_OVERSIZE = "entry.oversize"  # a peer signed an event too long for a tlog-tiles entry bundle

    @property
    def freezes(self) -> bool:
        """Evidence that the origin's log (or our copy of it) is false: nothing more of it is applied."""
        return self not in NOT_FREEZING


# Kinds that warn without freezing the origin: they are not evidence that its log is false.
NOT_FREEZING = frozenset(
    {
        AlarmKind.CHECKPOINT_UNREACHABLE,
        AlarmKind.SYNC_NOT_A_PEER,
        AlarmKind.REPAIR_UNCONFIRMED,
        AlarmKind.CASE_LATE,
        AlarmKind.ENTRY_OVERSIZE,
    }
)


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    origin: str
    kind: str
    message: str
    evidence: dict[str, Any]
    raised_at: str


class Alarms:
    def __init__(self, pool: asyncpg.Pool, me: str) -> None:
        self.pool = pool
        self.me = me
        self.frozen: set[str] = set()

    async def load(self) -> set[str]:
        """Re-read which origins are frozen (an operator may have cleared an alarm)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT origin FROM alarms WHERE cleared_at IS NULL AND NOT kind = ANY($1::text[])",
                list(NOT_FREEZING),
            )
        frozen = {r["origin"] for r in rows}
        for origin in self.frozen - frozen:
            log.warning("alarm on %s cleared by an operator; applying its log again", origin)
            OPEN_ALARMS.labels(self.me, origin).set(0)
        self.frozen = frozen
        return frozen

    async def raise_alarm(
        self, conn: Connection, origin: str, kind: AlarmKind, message: str, evidence: dict[str, Any]
    ) -> None:
        await conn.execute(
            "INSERT INTO alarms (origin, kind, message, evidence) VALUES ($1, $2, $3, $4)",
            origin,
            kind,
            message,
            json.dumps(evidence, ensure_ascii=False),
        )
        if not kind.freezes:
            log.error("ALARM %s on %s: %s", kind, origin, message)
            return
        self.frozen.add(origin)
        OPEN_ALARMS.labels(self.me, origin).set(1)
        log.error(
            "ALARM %s on %s: %s; nothing more of %s is applied until an operator clears it",
            kind,
            origin,
            message,
            origin,
        )

    async def raise_once(
        self,
        conn: Connection,
        origin: str,
        kind: AlarmKind,
        message: str,
        evidence: dict[str, Any],
        same: dict[str, Any] | None = None,
    ) -> bool:
        """Raise an alarm unless one of this kind is open on ``origin`` or, with ``same``, one whose
        evidence holds ``same`` was ever raised (an operator who cleared it has seen it); True if raised."""
        raised = await conn.fetchval(
            "SELECT 1 FROM alarms WHERE origin = $1 AND kind = $2"
            " AND (cleared_at IS NULL OR ($3::jsonb IS NOT NULL AND evidence @> $3::jsonb)) LIMIT 1",
            origin,
            kind,
            None if same is None else json.dumps(same, ensure_ascii=False),
        )
        if raised:
            return False
        await self.raise_alarm(conn, origin, kind, message, evidence)
        return True

    async def raise_once_per(
        self,
        conn: Connection,
        origin: str,
        kind: AlarmKind,
        message: str,
        evidence: dict[str, Any],
        key: dict[str, Any],
    ) -> bool:
        """Raise an alarm unless one of this kind whose evidence holds ``key`` was ever raised on ``origin``.

        Unlike :meth:`raise_once`, other open alarms of the kind do not hold this one back: one
        alarm per key (a case and its deadline), however many are open. True if raised.
        """
        raised = await conn.fetchval(
            "SELECT 1 FROM alarms WHERE origin = $1 AND kind = $2 AND evidence @> $3::jsonb LIMIT 1",
            origin,
            kind,
            json.dumps(key, ensure_ascii=False),
        )
        if raised:
            return False
        await self.raise_alarm(conn, origin, kind, message, evidence)
        return True

    async def resolve_ids(self, conn: Connection, kind: AlarmKind, ids: list[int], note: str) -> int:
        """Close the open alarms ``ids`` of a non-freezing ``kind`` whose cause has gone; return how many."""
        if kind.freezes:
            raise ValueError(f"only an operator clears a {kind} alarm")
        status = await conn.execute(
            "UPDATE alarms SET cleared_at = now(), cleared_by = 'credex', clear_note = $3"
            " WHERE id = ANY($1::bigint[]) AND kind = $2 AND cleared_at IS NULL",
            ids,
            kind,
            note,
        )
        return int(status.rsplit(" ", 1)[1])

    async def resolve_all_but(
        self,
        conn: Connection,
        kind: AlarmKind,
        current: set[tuple[object, ...]],
        key: tuple[str, ...],
        note: str,
        origin: str | None = None,
    ) -> int:
        """Close the open alarms of a non-freezing ``kind`` (on ``origin``, or any) whose cause has gone: those
        whose evidence, read at the fields ``key``, is not in ``current``, the causes found still there.
        The other half of :meth:`raise_once_per`, whose ``key`` the same fields are; return how many."""
        gone = [
            int(alarm["id"])
            for alarm in await conn.fetch(
                "SELECT id, evidence FROM alarms WHERE kind = $1 AND cleared_at IS NULL"
                " AND ($2::text IS NULL OR origin = $2)",
                kind,
                origin,
            )
            if tuple(json.loads(alarm["evidence"]).get(field) for field in key) not in current
        ]
        return await self.resolve_ids(conn, kind, gone, note) if gone else 0

    async def resolve(self, conn: Connection, origin: str, kind: AlarmKind, note: str) -> int:
        """Close open alarms of a non-freezing ``kind`` on ``origin`` whose cause has gone; return how many."""
        if kind.freezes:
            raise ValueError(f"only an operator clears a {kind} alarm: it is evidence against {origin}'s log")
        status = await conn.execute(
            "UPDATE alarms SET cleared_at = now(), cleared_by = 'credex', clear_note = $3"
            " WHERE origin = $1 AND kind = $2 AND cleared_at IS NULL",
            origin,
            kind,
            note,
        )
        resolved = int(status.rsplit(" ", 1)[1])
        if resolved:
            log.warning("alarm %s on %s resolved: %s", kind, origin, note)
        return resolved


async def list_alarms(conn: Connection, include_cleared: bool = False) -> list[Alarm]:
    rows = await conn.fetch(
        "SELECT id, origin, kind, message, evidence, raised_at FROM alarms"
        + ("" if include_cleared else " WHERE cleared_at IS NULL")
        + " ORDER BY id"
    )
    return [
        Alarm(r["id"], r["origin"], r["kind"], r["message"], json.loads(r["evidence"]), r["raised_at"].isoformat())
        for r in rows
    ]


async def clear_alarm(conn: Connection, alarm_id: int, operator: str, note: str) -> bool:
    status = await conn.execute(
        "UPDATE alarms SET cleared_at = now(), cleared_by = $2, clear_note = $3 WHERE id = $1 AND cleared_at IS NULL",
        alarm_id,
        operator,
        note,
    )
    return bool(status.endswith(" 1"))
