"""Intake: taking in the peers' logs, from Kafka or from gRPC sync, through one door.

Every envelope is verified against the trust bundle for the origin whose log it
claims to belong to (the topic, or the origin asked for over gRPC) before its
payload is parsed. What fails is counted, logged and kept as evidence, never
stored as data. What passes is applied idempotently in one transaction per
batch; Kafka offsets are committed only after that transaction commits, and a
commit the broker does not confirm within ``intake.commit_timeout_seconds``
restarts the consumer (:class:`CommitTimedOut`) instead of hanging intake.

No single message can stall a topic. A message the store cannot hold even as
evidence is counted and skipped (see :mod:`credex.node.store.evidence`); if a batch
still fails on what one of its messages contains, it is stored in halves until
that message is found, counted as ``rejected:unstorable`` and skipped. Every
message that comes in ends up counted under one :class:`Outcome` — applied,
replay, rejected (with its reason) or held — or as ``withheld_notice``: the
announcement of an event that does not cross the bus (see :mod:`credex.node.kafka`).

What intake learns is missing — a gap in an origin's seqs, an event announced by
a withheld notice — it only puts in the wanted ranges
(:class:`~credex.node.chain.WantedRanges`); sync takes them from there and
fetches over gRPC. Intake neither knows nor calls sync. Sync asks intake only
which seqs it is applying (:meth:`Intake.applying`: verified, their transaction not
yet committed), so as not to fetch them too.

A validly signed event longer than a tlog-tiles entry may be (65,535 bytes) is
applied, counted as ``oversize`` and alarmed (``entry.oversize``); see :meth:`Intake._oversize`.

Two validly signed events of one origin at one seq are equivocation (an alarm
freezes the origin), unless the new one is signed with a key the bundle revokes:
then it is refused as ``key.revoked.conflict``, so whoever holds a revoked key
cannot freeze its origin by re-signing old seqs.

The topics read follow the trust bundle in force: when a refresh adds or removes
a member, the consumer restarts with the new topic set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from credex.crypto.parallel import SignatureWorkers
from credex.crypto.tiles import MAX_ENTRY
from credex.crypto.trust import EventRejected, EventVerifier, Signed, TrustBundle, VerifiedEvent
from credex.errors import CredexError
from credex.node import kafka as bus
from credex.node.cancellation import cancel_and_wait, raise_if_cancelling
from credex.node.chain import AlarmKind, Alarms, CheckpointKeeper, WantedRanges, Why
from credex.node.config import NodeConfig, checkpoints_topic, events_topic
from credex.node.metrics import METRICS
from credex.node.store import NOTIFY_CHANNEL, POISON, Connection, Rejection, storable_text
from credex.node.store import events as state
from credex.node.store import evidence as rejections
from credex.node.store.database import RETRYABLE
from credex.node.trust import TrustProvider
from credex.v1 import event_pb2

log = logging.getLogger(__name__)

_NAMED_SEQS = 100  # seqs an oversize alarm names; the count says how many more
_PARALLEL_FROM = 64  # below this, a batch is verified right here: a thread costs more than it saves


class CommitTimedOut(CredexError, TimeoutError):
    """Kafka did not confirm an offset commit in ``intake.commit_timeout_seconds``: the consumer restarts."""


# What intake outlives by restarting its consumer after a pause, with a warning rather than a traceback.
_RESTART: tuple[type[BaseException], ...] = (*bus.RETRYABLE, CommitTimedOut)


class Outcome(StrEnum):
    """What became of a peer's message; the value is its name in ``intake_counters`` and the metric.

    A rejection is counted under ``rejected:<reason>`` (:func:`rejected`), one counter per reason code.
    ``oversize`` is the one counter beside the outcome: those events are counted as applied as well.
    """

    APPLIED = "applied"
    REPLAY = "replay"  # held already: a redelivery or a replay
    HELD = "held"  # not applied: an alarm on the origin is open
    OVERSIZE = "oversize"  # applied, and counted here too: too long for a tlog-tiles entry bundle
    WITHHELD_NOTICE = "withheld_notice"  # announces an event that does not cross the bus
    REJECTED = "rejected"


def rejected(reason: str) -> str:
    """The counter name of a rejection for ``reason``: ``rejected:<reason>``, bounded for the store."""
    return rejections.counter_label(reason)


@dataclass
class AcceptResult:
    origin: str
    applied: int = 0
    replays: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    held: int = 0  # not applied: an alarm on the origin is open
    oversize: list[int] = field(default_factory=list)  # seqs applied that no entry bundle can carry
    contiguous_seq: int = 0
    max_seq: int = 0
    rejections: list[Rejection] = field(default_factory=list)  # for the log

    @property
    def has_gap(self) -> bool:
        return self.max_seq > self.contiguous_seq

    def merge(self, other: AcceptResult) -> AcceptResult:
        """The outcome of two parts of one batch stored one after the other."""
        return AcceptResult(
            self.origin,
            self.applied + other.applied,
            self.replays + other.replays,
            self.rejected + other.rejected,
            self.held + other.held,
            self.oversize + other.oversize,
            max(self.contiguous_seq, other.contiguous_seq),
            max(self.max_seq, other.max_seq),
            self.rejections + other.rejections,
        )


@dataclass
class Checked:
    """A batch after verification: events ready to store, and what was rejected."""

    origin: str
    events: list[state.StoredEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejections)

    def halves(self) -> tuple[Checked, Checked]:
        """Split in two, to find the one message a batch fails on."""
        items: list[state.StoredEvent | Rejection] = [*self.events, *self.rejections]
        middle = len(items) // 2
        return self._of(items[:middle]), self._of(items[middle:])

    def _of(self, items: Sequence[state.StoredEvent | Rejection]) -> Checked:
        return Checked(
            self.origin,
            [i for i in items if isinstance(i, state.StoredEvent)],
            [i for i in items if isinstance(i, Rejection)],
        )


class Intake:
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        verifier: EventVerifier,
        alarms: Alarms,
        keeper: CheckpointKeeper,
        trust: TrustProvider,
        wanted: WantedRanges,
        signatures: SignatureWorkers | None = None,
    ) -> None:
        self.config = config
        # Worker processes for the signatures of large batches (the node's, which it closes on stop);
        # without them every batch is verified in this process.
        self.signatures = signatures or SignatureWorkers(workers=1)
        self.pool = pool
        self.verifier = verifier
        self.alarms = alarms
        self.keeper = keeper
        self.trust = trust
        self.me = config.origin
        self.wanted = wanted  # where gaps and withheld notices go; sync takes them
        self._statistics = state.Statistics()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # origin -> how many batches being applied hold each seq: verified, their transaction not yet committed
        self._applying: defaultdict[str, Counter[int]] = defaultdict(Counter)
        # Set when a trust bundle changes the topics to read; the consumer restarts with the new set.
        self._members_changed = asyncio.Event()
        self._reading: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        trust.subscribe(self._on_bundle)

    def verify(self, origin: str, messages: Sequence[bytes]) -> Checked:
        """Verify a batch in this process: signatures first, then what the payloads say."""
        checked = Checked(origin)
        for raw in messages:
            self._take(checked, raw, partial(self.verifier.verify_bytes, raw, origin))
        return checked

    def _take(self, checked: Checked, raw: bytes, verify: Callable[[], VerifiedEvent]) -> None:
        """Add ``raw`` to ``checked`` as an event ready to store or as a rejection."""
        verified: VerifiedEvent | None = None
        try:
            verified = verify()
            checked.events.append(state.StoredEvent.from_event(verified.event, verified.canonical))
        except EventRejected as exc:
            checked.rejections.append(Rejection(exc.reason, exc.message, exc.key_id, raw))
        except state.Unstorable as exc:
            key = verified.envelope.key_id if verified is not None else ""
            checked.rejections.append(Rejection(exc.reason, exc.message, key, raw))
        except Exception as exc:
            # A message must never take the consumer down with it: what verification did
            # not foresee is a rejection too, and the rest of the batch goes on.
            log.exception("intake: verifying a message of %s failed unexpectedly", checked.origin)
            checked.rejections.append(
                Rejection("envelope.unverifiable", f"verification failed: {type(exc).__name__}", "", raw)
            )

    async def check(self, origin: str, messages: Sequence[bytes]) -> Checked:
        """Verify a batch; a large one has its signatures checked in the node's signature workers.

        ``cryptography``'s Ed25519 holds the GIL, so threads do not spread it over the cores:
        the workers get only (key, signature, signed bytes) and answer valid or not, and no
        payload is parsed here before its answer says valid.
        """
        if origin == self.me:
            # Our own log comes from the ledger only; a copy from outside is never applied.
            checked = Checked(origin)
            checked.rejections = [Rejection("origin.self", "an event of this node's own log")] * len(messages)
            return checked
        if len(messages) < _PARALLEL_FROM:
            return self.verify(origin, messages)
        if len(messages) < self.signatures.min_batch:
            return await asyncio.to_thread(self.verify, origin, messages)
        signers = await asyncio.to_thread(self._signers, origin, messages)
        answers = iter(
            await self.signatures.verify(
                [(s.public_raw, s.envelope.signature, s.message) for s in signers if isinstance(s, Signed)]
            )
        )
        valid = [next(answers) if isinstance(s, Signed) else False for s in signers]
        return await asyncio.to_thread(self._open, origin, messages, signers, valid)

    def _signers(self, origin: str, messages: Sequence[bytes]) -> list[Signed | EventRejected]:
        """Who must have signed each message and over what, or why it is refused before any signature."""
        found: list[Signed | EventRejected] = []
        for raw in messages:
            try:
                found.append(self.verifier.signed_bytes(raw, origin))
            except EventRejected as exc:
                found.append(exc)
            except Exception as exc:  # as in :meth:`_take`: one message never fails the batch
                log.exception("intake: reading a message of %s failed unexpectedly", origin)
                found.append(EventRejected("envelope.unverifiable", f"verification failed: {type(exc).__name__}"))
        return found

    def _open(
        self, origin: str, messages: Sequence[bytes], signers: Sequence[Signed | EventRejected], valid: Sequence[bool]
    ) -> Checked:
        """The batch after its signatures were checked: what each valid payload holds, or why it is refused."""
        checked = Checked(origin)
        for raw, signer, ok in zip(messages, signers, valid, strict=True):
            if isinstance(signer, EventRejected):
                checked.rejections.append(Rejection(signer.reason, signer.message, signer.key_id, raw))
                continue
            self._take(checked, raw, partial(self.verifier.open_signed, signer, ok, origin))
        return checked

    async def accept(self, origin: str, messages: Sequence[bytes], channel: str) -> AcceptResult:
        """Verify and apply a batch of envelopes that claim to be ``origin``'s."""
        return await self.apply(await self.check(origin, messages), channel)

    async def apply(self, checked: Checked, channel: str) -> AcceptResult:
        """Store what verified, keep evidence of what did not, in one transaction."""
        origin = checked.origin
        if origin in self.alarms.frozen:
            # Evidence of equivocation is open: hold everything until an operator clears it;
            # sync brings these events back afterwards.
            result = AcceptResult(origin, held=len(checked))
            async with self.pool.acquire() as conn:
                await state.count(conn, origin, Outcome.HELD, result.held)
            METRICS.intake.labels(self.me, origin, Outcome.HELD).inc(result.held)
            log.warning("%s: %d events of %s held: an alarm on %s is open", channel, result.held, origin, origin)
            return result
        with self._taking([checked]):
            result = await self._store(checked, channel)
        self._report(channel, result)
        if result.has_gap:
            self.wanted.put(origin, result.max_seq, Why.GAP, held=result.contiguous_seq)
        if result.applied:
            await self.keeper.check(origin)
            if self._statistics.due(result.applied):
                # Bulk intake outruns autovacuum's statistics; stale ones make lookups scan. The batch is
                # committed: a refresh that fails is logged (autovacuum's own will come), not the batch's error.
                try:
                    async with self.pool.acquire() as conn:
                        await self._statistics.refresh(conn)
                except RETRYABLE as exc:
                    log.warning("intake: refreshing the planner's statistics failed: %s", exc)
        return result

    def _count_applying(self, batches: Sequence[Checked]) -> list[tuple[str, Counter[int]]]:
        """Count the seqs of ``batches`` as being applied, until :meth:`_release` is given what this returns."""
        seqs = [(b.origin, Counter(e.seq for e in b.events)) for b in batches]
        for origin, counted in seqs:
            self._applying[origin].update(counted)
        return seqs

    def _release(self, seqs: list[tuple[str, Counter[int]]]) -> None:
        for origin, counted in seqs:
            self._applying[origin].subtract(counted)
            self._applying[origin] = +self._applying[origin]

    @contextlib.contextmanager
    def _taking(self, batches: Sequence[Checked]) -> Iterator[None]:
        """Count the seqs of ``batches`` as being applied while the block runs."""
        seqs = self._count_applying(batches)
        try:
            yield
        finally:
            self._release(seqs)

    def _released(self, seqs: list[tuple[str, Counter[int]]], _done: asyncio.Task[None]) -> None:
        self._release(seqs)

    def applying(self, origin: str) -> frozenset[int]:
        """The seqs of ``origin`` verified and being stored now: held once their transaction commits.

        With the events table this is the one answer to "what does this node have or is it taking
        in": sync asks it so that it never fetches what Kafka is delivering at the same moment.
        """
        return frozenset(self._applying.get(origin, ()))

    async def _store(self, checked: Checked, channel: str) -> AcceptResult:
        """Store a batch; if what one of its messages holds fails it, find that message and skip it."""
        try:
            return await self._store_once(checked, channel)
        except POISON as exc:
            if len(checked) <= 1:
                return await self._skip_unstorable(checked, channel, exc)
            log.warning(
                "%s: a batch of %d messages of %s could not be stored (%s); storing it in halves to find the cause",
                channel,
                len(checked),
                checked.origin,
                type(exc).__name__,
            )
            first, second = checked.halves()
            return (await self._store(first, channel)).merge(await self._store(second, channel))

    async def _skip_unstorable(self, checked: Checked, channel: str, exc: Exception) -> AcceptResult:
        """The last resort for one message: count it, with no text of its own, and move on."""
        origin = checked.origin
        seqs = [e.seq for e in checked.events]
        log.error(
            "%s: a message of %s%s cannot be stored (%s: %s); counted as %s and skipped",
            channel,
            origin,
            f" (seq {seqs[0]})" if seqs else "",
            type(exc).__name__,
            storable_text(str(exc), 200),
            rejected("unstorable"),
        )
        async with self._locks[origin], self.pool.acquire() as conn, conn.transaction():
            await state.count(conn, origin, rejected("unstorable"), len(checked))
            contiguous, max_seq = await state.advance_progress(conn, origin)
        return AcceptResult(
            origin, rejected=Counter({"unstorable": len(checked)}), contiguous_seq=contiguous, max_seq=max_seq
        )

    async def _store_once(self, checked: Checked, channel: str) -> AcceptResult:
        origin = checked.origin
        result = AcceptResult(origin)
        refused = list(checked.rejections)
        async with self._locks[origin], self.pool.acquire() as conn, conn.transaction():
            outcome = await state.insert_events(conn, checked.events)
            await state.upsert_records(conn, outcome.new)
            equivocations = []
            for conflict in outcome.conflicts:
                revoked = self._revoked_signer(conflict)
                if revoked is not None:
                    refused.append(revoked)
                    continue
                equivocations.append(conflict)
                refused.append(
                    Rejection(
                        "event.conflict",
                        f"{origin} seq {conflict.seq}: a different event is already held under this seq or id",
                        "",
                        conflict.envelope,
                    )
                )
            if equivocations:
                # Both versions carry the origin's valid signature, by a key nobody revoked: equivocation.
                held = await conn.fetchval(
                    "SELECT envelope FROM events WHERE origin = $1 AND seq = $2", origin, equivocations[0].seq
                )
                await self.alarms.raise_alarm(
                    conn,
                    origin,
                    AlarmKind.EQUIVOCATION_EVENT,
                    f"two validly signed events of {origin} claim seq {equivocations[0].seq}",
                    {
                        "seq": equivocations[0].seq,
                        "held": bytes(held or b"").hex(),
                        "received": equivocations[0].envelope.hex(),
                        "channel": channel,
                    },
                )
            await rejections.record(conn, self.me, origin, channel, refused, self.config.intake)
            result.applied = len(outcome.new)
            result.oversize = await self._oversize(conn, origin, outcome.new, channel)
            result.replays = len(outcome.replays)
            result.rejected.update(r.reason for r in refused)
            result.rejections = refused
            await state.count(conn, origin, Outcome.APPLIED, result.applied)
            await state.count(conn, origin, Outcome.REPLAY, result.replays)
            result.contiguous_seq, result.max_seq = await state.advance_progress(conn, origin)
            if result.applied:
                await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # subscription streams wait on it
        return result

    async def _oversize(
        self, conn: Connection, origin: str, new: Sequence[state.StoredEvent], channel: str
    ) -> list[int]:
        """Count the new events too long for a tlog-tiles entry bundle and raise an alarm naming them.

        A credex origin refuses such an event before signing it (``EntryTooLarge``), so one that
        arrives validly signed means its origin broke the protocol. It is applied all the same:
        refusing it would stall the origin's log at that seq for good, while the event is as
        authentic as any. Its hash stays in the tiles and checkpoints; only its entry bundle cannot
        be served (the tile server answers 501 for it, naming the seq), which the alarm tells an
        operator to take up with the origin. One alarm per first seq of a batch, naming them all.
        """
        seqs = sorted(e.seq for e in new if len(e.envelope) > MAX_ENTRY)
        if not seqs:
            return seqs
        await state.count(conn, origin, Outcome.OVERSIZE, len(seqs))
        size = max(len(e.envelope) for e in new if e.seq == seqs[0])
        named = ", ".join(map(str, seqs[:_NAMED_SEQS])) + (
            f" and {len(seqs) - _NAMED_SEQS} more" if len(seqs) > _NAMED_SEQS else ""
        )
        await self.alarms.raise_once_per(
            conn,
            origin,
            AlarmKind.ENTRY_OVERSIZE,
            f"{origin} signed an event longer than a tlog-tiles entry may be ({MAX_ENTRY:,} bytes) at seq {named}"
            f" ({size:,} bytes at seq {seqs[0]}): a credex origin never signs one, so {origin} broke the protocol."
            f" The event is applied and its hash served; its entry bundle is not (HTTP 501). Take it up with"
            f" {origin}'s operator",
            {"seq": seqs[0], "seqs": seqs[:_NAMED_SEQS], "count": len(seqs), "size": size, "channel": channel},
            key={"seq": seqs[0]},
        )
        return seqs

    def _revoked_signer(self, conflict: state.StoredEvent) -> Rejection | None:
        """A conflicting event signed with a key the bundle revokes: refused, not taken as equivocation.

        The key still covers this seq (else verification had refused it), but its
        revocation says someone else may hold it: a thief re-signing old seqs must not
        be able to freeze the origin, again and again, by "equivocating" in its name.
        """
        key_id = event_pb2.Envelope.FromString(conflict.envelope).key_id
        entry = self.trust.current.keys_by_id.get(key_id)
        if entry is None or not entry[1].revoked:
            return None
        return Rejection(
            "key.revoked.conflict",
            f"{conflict.origin} seq {conflict.seq}: a different event is already held there; this one is signed"
            f" by key {key_id}, {entry[1].revocation()}: refused as the work of whoever holds the revoked key",
            key_id,
            conflict.envelope,
        )

    def _report(self, channel: str, result: AcceptResult) -> None:
        metric = METRICS.intake
        metric.labels(self.me, result.origin, Outcome.APPLIED).inc(result.applied)
        metric.labels(self.me, result.origin, Outcome.REPLAY).inc(result.replays)
        metric.labels(self.me, result.origin, Outcome.OVERSIZE).inc(len(result.oversize))
        for reason, n in result.rejected.items():
            metric.labels(self.me, result.origin, rejected(reason)).inc(n)
        METRICS.peer_contiguous.labels(self.me, result.origin).set(result.contiguous_seq)
        for rejection in result.rejections[:20]:
            log.warning(
                "%s: rejected event of %s: %s (%s)",
                channel,
                result.origin,
                storable_text(rejection.message, rejections.MAX_MESSAGE_CHARS),
                storable_text(rejection.reason, rejections.MAX_REASON_CHARS),
            )
        if len(result.rejections) > 20:
            log.warning(
                "%s: ... and %d more rejected events of %s", channel, len(result.rejections) - 20, result.origin
            )
        if result.replays:
            log.info(
                "%s: %d events of %s already held (replay or redelivery), ignored",
                channel,
                result.replays,
                result.origin,
            )

    # -- Kafka --------------------------------------------------------------------

    @property
    def reading(self) -> dict[str, str]:
        """Topic -> origin of what the running consumer reads (it follows :meth:`topics` on a change)."""
        return dict(self._reading)

    def topics(self) -> dict[str, str]:
        """Topic -> origin of what to read now: every member's topics but this node's own."""
        peers = [o for o in self.trust.current.origins if o != self.me]
        return {events_topic(p): p for p in peers} | {checkpoints_topic(p): p for p in peers}

    def _on_bundle(self, bundle: TrustBundle) -> None:
        """A new bundle in force: restart the consumer if it changes which topics to read."""
        if self.topics() != self._reading and self._loop is not None:
            self._loop.call_soon_threadsafe(self._members_changed.set)

    async def consume(self, bootstrap_servers: str) -> None:
        """Consume the members' event and checkpoint topics until cancelled, restarting after failures
        and whenever the trust bundle changes the members."""
        self._loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            self._members_changed.clear()
            self._reading = self.topics()
            try:
                await self._consume(bootstrap_servers, self._reading)
                raise_if_cancelling()
                attempt = 0
                log.info(
                    "intake: trust bundle version %d in force; now reading the logs of %s",
                    self.trust.current.version,
                    ", ".join(sorted(set(self.topics().values()))) or "no one",
                )
                continue
            except asyncio.CancelledError:
                raise
            except _RESTART as exc:
                METRICS.intake_errors.labels(self.me).inc()
                log.warning("intake: %s; restarting the consumer", exc)
            except Exception:
                # Whatever it was, intake must go on: a stopped intake silently stops the federation.
                METRICS.intake_errors.labels(self.me).inc()
                log.exception("intake: unexpected failure; restarting the consumer")
            await bus.backoff(attempt)
            attempt += 1

    async def _store_and_commit(
        self,
        consumer: AIOKafkaConsumer,
        checked: list[Checked],
        notes: list[tuple[str, bytes]],
        notices: dict[str, list[int]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        for batch in checked:  # counted as applying since they were verified (the consumer took them)
            await self.apply(batch, f"kafka:{events_topic(batch.origin)}")
        if notices:
            await self._take_notices(notices)
        if notes:  # after the events they may cover; refused ones recorded together
            await self.keeper.receive_all(
                [
                    (origin, note.decode("utf-8", "replace"), f"kafka:{checkpoints_topic(origin)}")
                    for origin, note in notes
                ]
            )
        await self._commit(consumer, offsets)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets``, or raise :class:`CommitTimedOut` when the broker does not confirm in time.

        aiokafka retries a commit for as long as the group coordinator is unknown or busy, so
        without a bound a stuck broker would hang intake here for good. Giving up is safe: the
        events are stored already, and what the next consumer reads again counts as replays.
        """
        seconds = self.config.intake.commit_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                await consumer.commit(offsets)
        except TimeoutError:
            raise CommitTimedOut(f"the offset commit did not finish within {seconds:g} s") from None

    async def _take_notices(self, notices: dict[str, list[int]]) -> None:
        """Count withheld notices and want what they announce: those events come only over gRPC.

        A notice is unsigned, so it is a hint and nothing more: it can make sync fetch
        sooner, never make it fetch beyond what a member serves (see :mod:`credex.node.sync.catch_up`).
        """
        async with self.pool.acquire() as conn:
            for origin, seqs in notices.items():
                await state.count(conn, origin, Outcome.WITHHELD_NOTICE, len(seqs))
        for origin, seqs in notices.items():
            METRICS.intake.labels(self.me, origin, Outcome.WITHHELD_NOTICE).inc(len(seqs))
            self.wanted.put(origin, max(seqs), Why.WITHHELD, seqs=seqs)

    async def _consume(self, bootstrap_servers: str, topics: dict[str, str]) -> None:
        if not topics:
            await self._members_changed.wait()
            return
        await bus.ensure_topics(self.config, bootstrap_servers, topics)
        consumer = AIOKafkaConsumer(
            **bus.client_kwargs(self.config, bootstrap_servers),
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            # aiokafka can absorb a cancellation that arrives while it bootstraps; the loop
            # below checks for one on every turn so that stopping a node always stops intake.
            raise_if_cancelling()
            if self.config.bus.membership == "group":
                consumer.subscribe(list(topics))
            else:
                await consumer.topics()  # fetch metadata
                partitions = [
                    TopicPartition(topic, p)
                    for topic in topics
                    for p in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                consumer.assign(partitions)
            # Verifying batch N+1 overlaps with storing batch N; offsets of a batch are
            # committed only after its transaction committed.
            storing: asyncio.Task[None] | None = None
            try:
                while not self._members_changed.is_set():
                    raise_if_cancelling()
                    batch = await consumer.getmany(
                        timeout_ms=self.config.intake.fetch_wait_ms, max_records=self.config.intake.batch_size
                    )
                    if not batch:
                        if storing is not None:
                            await storing
                            storing = None
                        continue
                    by_origin: defaultdict[str, list[bytes]] = defaultdict(list)
                    notes: list[tuple[str, bytes]] = []
                    notices: defaultdict[str, list[int]] = defaultdict(list)
                    offsets: dict[TopicPartition, int] = {}
                    for tp, messages in batch.items():
                        origin = topics[tp.topic]
                        if tp.topic == events_topic(origin):
                            for m in messages:
                                if bus.is_withheld_notice(m):
                                    notices[origin].append(bus.notice_seq(m))
                                else:
                                    by_origin[origin].append(m.value or b"")
                        else:
                            notes.extend((origin, m.value or b"") for m in messages)
                        offsets[tp] = messages[-1].offset + 1
                    # Each batch counts as applying from the moment it is verified until the task that
                    # stores it is done, however it ends (even cancelled before its first step), so sync
                    # never fetches what this loop holds verified and waiting.
                    checked: list[Checked] = []
                    taken: list[tuple[str, Counter[int]]] = []
                    try:
                        for origin, values in by_origin.items():
                            checked.append(await self.check(origin, values))
                            taken += self._count_applying(checked[-1:])
                        if storing is not None:
                            await storing
                    except BaseException:
                        self._release(taken)
                        raise
                    storing = asyncio.create_task(
                        self._store_and_commit(consumer, checked, notes, dict(notices), offsets)
                    )
                    storing.add_done_callback(partial(self._released, taken))
                if storing is not None:  # members changed: finish and commit what was read
                    await storing
                    storing = None
            finally:
                try:
                    await cancel_and_wait(storing)
                except Exception:
                    # Its offsets were not committed, so the batch comes again; say why it failed.
                    log.exception("intake: storing the last batch failed; it will be read again")
                    raise_if_cancelling()  # a stop of intake itself still stops it
        finally:
            await consumer.stop()
