"""The courier: delivers signed case messages from the durable outbox, confirms repairs, watches their spread.

Three duties, one supervised loop (``case-courier`` in :mod:`credex.node.runtime`):

- **Delivery.** Each message in ``case_outbox`` is sent to its target's DeliverCase
  over the mTLS peer channel until the target acknowledges it. A target that is down
  or busy is tried again with a growing pause (0.5 s doubling up to a minute), and each
  round takes the targets in turn, so one that does not answer holds up no other; the
  message and its attempts are in the database, so a restart of either side loses
  nothing, and the origin's idempotent take-in makes a second delivery change nothing.
  A definitive refusal (the origin says the filing is invalid, ineligible or not its
  record) is kept with its reason and the filing node's copy of the case is closed
  ``not_accepted``, so the filer learns why.
- **Receipts.** Once this node's verified checkpoint of another origin covers a REPAIR
  event of that origin, the node queues a signed receipt for the origin: "my copy of
  your log holds the repair". The checkpoint, not mere arrival, is the proof, because
  it means this node's tree agrees with the origin's signed root up to the event.
- **Watch.** At the origin, a case past a deadline raises a ``case.late`` alarm
  (:mod:`.lateness`), and a repair still propagating past its deadline (3 working days
  by default) raises a ``repair.unconfirmed`` alarm per peer that has not confirmed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg
import grpc

from credex.node.cancellation import pause
from credex.node.cases import casefile, lateness, messages, propagation
from credex.node.cases.desk import CaseDesk
from credex.node.cases.model import State
from credex.node.chain import AGREED, Alarms
from credex.node.chain.alarms import AlarmKind
from credex.node.channels import PeerChannels
from credex.node.store.database import CONNECTION_LOST
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
CALL_TIMEOUT_SECONDS = 10.0
BATCH = 50
PER_TARGET = 10
# The target's answer that retrying cannot change: the message itself is refused.
_DEFINITIVE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
    }
)
# Messages the filer sent (its filing, withdrawal or review): the filing node's copy says how each went.
_FILERS_OWN = frozenset({"filing", "withdrawal", "review"})
# A peer's REPAIR events in a stretch of its log, read through their own index (migration 0030).
REPAIRS_SINCE = (
    "SELECT seq, envelope FROM events WHERE origin = $1 AND seq > $2 AND seq <= $3"
    f" AND event_type = {event_pb2.EVENT_TYPE_REPAIR} ORDER BY seq"
)


class CaseCourier:
    def __init__(self, desk: CaseDesk, channels: PeerChannels, alarms: Alarms, poll_seconds: float = POLL_SECONDS):
        self.desk = desk
        self.pool: asyncpg.Pool = desk.pool
        self.channels = channels
        self.alarms = alarms
        self.poll_seconds = poll_seconds

    async def run(self) -> None:
        while True:
            await self.round()
            await pause(self.poll_seconds)

    async def round(self) -> None:
        """One pass of all three duties; a failure of one target never stops the others."""
        await self.queue_receipts()
        await self.deliver_due()
        await self.watch()

    async def deliver_due(self) -> int:
        """Send every message that is due; return how many were acknowledged."""
        async with self.pool.acquire() as conn:
            # Round robin over targets, each at most PER_TARGET: an origin that does not answer, however
            # long its backlog, takes its turn and never the whole round (the oldest due go first within one).
            due = await conn.fetch(
                "SELECT id, case_id, purpose, target, envelope, attempts FROM (SELECT *, row_number() OVER"
                " (PARTITION BY target ORDER BY next_attempt_at, id) AS turn FROM case_outbox"
                " WHERE delivered_at IS NULL AND refused = '' AND next_attempt_at <= now()) due"
                " WHERE turn <= $2 ORDER BY turn, id LIMIT $1",
                BATCH,
                PER_TARGET,
            )
        acknowledged = await asyncio.gather(*(self._deliver(row) for row in due))
        return sum(acknowledged)

    async def _deliver(self, row: asyncpg.Record) -> bool:
        """Send one message; whatever goes wrong with it is its own, and never stops the round's others."""
        try:
            return await self._deliver_one(row)
        except asyncio.CancelledError:
            raise
        except CONNECTION_LOST:
            raise  # the database is gone for every message: the round fails and the task retries
        except Exception as exc:
            log.exception(
                "case %s: delivering %s to %s failed unexpectedly", row["case_id"], row["purpose"], row["target"]
            )
            await self._retry(row, f"{type(exc).__name__}: {exc}"[:500])
            return False

    async def _deliver_one(self, row: asyncpg.Record) -> bool:
        member = self.desk.trust.current.member(row["target"])
        if member is None or not member.endpoint:
            await self._retry(row, f"{row['target']} has no endpoint in the trust bundle")
            return False
        envelope = event_pb2.Envelope.FromString(bytes(row["envelope"]))
        stub = case_pb2_grpc.CaseServiceStub(self.channels.channel(member.endpoint))
        try:
            answer: case_pb2.DeliverCaseResponse = await stub.DeliverCase(
                case_pb2.DeliverCaseRequest(envelope=envelope), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details() or ''}"[:500]
            if exc.code() in _DEFINITIVE:
                await self._refused(row, reason)
            else:
                await self._retry(row, reason)
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            # A status replaced while this one was on its way stays due: the newer one is sent next.
            await conn.execute(
                "UPDATE case_outbox SET delivered_at = now(), last_error = '' WHERE id = $1 AND envelope = $2",
                row["id"],
                row["envelope"],
            )
            if row["purpose"] in _FILERS_OWN:
                done = "delivered" if row["purpose"] == "filing" else f"{row['purpose']} delivered"
                await conn.execute(
                    "UPDATE cases SET delivery = $2 WHERE case_id = $1",
                    row["case_id"],
                    f"{done} to {row['target']} ({answer.state} there)",
                )
        log.info("case %s: %s delivered to %s", row["case_id"], row["purpose"], row["target"])
        return True

    async def _retry(self, row: asyncpg.Record, reason: str) -> None:
        pause = min(MAX_BACKOFF_SECONDS, POLL_SECONDS * 2 ** min(row["attempts"], 10))
        async with self.pool.acquire() as conn:
            # Only the message that failed is put off: a status that replaced it meanwhile stays due.
            await conn.execute(
                "UPDATE case_outbox SET attempts = attempts + 1, last_error = $2,"
                " next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1 AND envelope = $4",
                row["id"],
                reason,
                pause,
                row["envelope"],
            )
        log.warning(
            "case %s: %s to %s not delivered (%s); again in %.1f s",
            row["case_id"],
            row["purpose"],
            row["target"],
            reason,
            pause,
        )

    async def _refused(self, row: asyncpg.Record, reason: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Only the message refused is marked: a status that replaced it meanwhile is still sent.
            marked = await conn.fetchval(
                "UPDATE case_outbox SET attempts = attempts + 1, refused = $2 WHERE id = $1 AND envelope = $3"
                " RETURNING 1",
                row["id"],
                reason,
                row["envelope"],
            )
            if marked and row["purpose"] == "filing":
                closed = await conn.fetchval(
                    "UPDATE cases SET state = 'not_accepted', delivery = $2, closed_at = now(), due_on = NULL"
                    " WHERE case_id = $1 AND closed_at IS NULL RETURNING 1",
                    row["case_id"],
                    f"refused by {row['target']}: {reason}",
                )
                if closed:
                    await casefile.add_step(conn, row["case_id"], row["target"], "delivery", State.NOT_ACCEPTED, reason)
            elif marked and row["purpose"] in _FILERS_OWN:  # a withdrawal or review refused: the case goes on
                await conn.execute(
                    "UPDATE cases SET delivery = $2 WHERE case_id = $1",
                    row["case_id"],
                    f"{row['purpose']} refused by {row['target']}: {reason}",
                )
        log.warning("case %s: %s refused by %s: %s", row["case_id"], row["purpose"], row["target"], reason)

    async def queue_receipts(self) -> int:
        """Queue a signed receipt for each REPAIR of another origin that this node's verified checkpoint covers.

        Each origin's log is looked through once, from where the last look stopped up to the
        newest verified checkpoint, in the same transaction that queues the receipts.
        """
        me = self.desk.origin
        queued = 0  # receipts queued
        async with self.pool.acquire() as conn:
            # Per member, the newest agreed checkpoint by the (origin, size DESC) index: one row each.
            heads = await conn.fetch(
                "SELECT p.origin, c.size, coalesce(m.scanned_seq, 0) AS scanned"
                " FROM unnest($1::text[]) AS p (origin)"
                " CROSS JOIN LATERAL (SELECT size FROM checkpoints WHERE origin = p.origin"
                "   AND state = ANY($2::text[]) ORDER BY size DESC LIMIT 1) c"
                " LEFT JOIN repair_receipt_marks m ON m.origin = p.origin",
                self.desk.peers(),
                list(AGREED),
            )
            for head in heads:
                if head["size"] <= head["scanned"]:
                    continue
                async with conn.transaction():
                    repairs = await conn.fetch(REPAIRS_SINCE, head["origin"], head["scanned"], head["size"])
                    for row in repairs:
                        envelope = event_pb2.Envelope.FromString(bytes(row["envelope"]))
                        event = event_pb2.Event.FromString(envelope.payload)
                        if not event.case.case_id:  # a REPAIR signed without a case has no one to tell
                            continue
                        receipt = case_pb2.RepairReceipt(
                            case_id=event.case.case_id,
                            record_origin=head["origin"],
                            seq=row["seq"],
                            checkpoint_size=head["size"],
                        )
                        await conn.execute(
                            "INSERT INTO case_outbox (case_id, purpose, target, envelope)"
                            " VALUES ($1, 'receipt', $2, $3) ON CONFLICT DO NOTHING",
                            event.case.case_id,
                            head["origin"],
                            messages.seal_message(self.desk.ledger.key, messages.message_at(me, receipt)),
                        )
                        queued += 1
                    await conn.execute(
                        "INSERT INTO repair_receipt_marks (origin, scanned_seq) VALUES ($1, $2)"
                        " ON CONFLICT (origin) DO UPDATE SET scanned_seq = excluded.scanned_seq",
                        head["origin"],
                        head["size"],
                    )
        return queued

    async def watch(self) -> int:
        """Note open cases past their deadline and raise a ``case.late`` alarm for each (resolved once the case
        moves on); raise an alarm, once per case and peer, for each repair a peer has not confirmed in time,
        and resolve it once the peer confirms (or the case closes), so the list shows what still needs a hand."""
        await self.desk.note_overdue()
        raised, _ = await lateness.alarm_late_cases(self.desk, self.alarms)
        late = await propagation.late_repairs(self.desk)
        still_late: set[tuple[object, ...]] = {(case_id, peer) for case_id, peers, _ in late for peer in peers}
        async with self.pool.acquire() as conn:
            for case_id, peers, due in late:
                for peer in peers:
                    # One per repair and peer: an open alarm for another repair must not hide this one.
                    raised += await self.alarms.raise_once_per(
                        conn,
                        peer,
                        AlarmKind.REPAIR_UNCONFIRMED,
                        f"{peer} has not confirmed repair case {case_id} (due {due}): its verified copy of"
                        f" {self.desk.origin}'s log does not yet hold the REPAIR",
                        {"case_id": case_id, "peer": peer, "due_on": due.isoformat(), "seen": _now()},
                        key={"case_id": case_id, "peer": peer},
                    )
            await self.alarms.resolve_all_but(
                conn,
                AlarmKind.REPAIR_UNCONFIRMED,
                still_late,
                ("case_id", "peer"),
                "the peer confirmed the repair (or the case closed)",
            )
        return raised


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
