"""Checkpoints of every origin: signing our own, checking everyone else's against our copy.

This node signs a checkpoint of its own log every N events or T seconds, and
never two that disagree: before signing it checks that its tree still has the
root it signed last. A peer's checkpoint is verified against the peer's keys in
the trust bundle before it is parsed, stored, and compared with this node's
tree of that origin at the same size: equal, it is verified; not yet held, it is
pending (and its log is put in the wanted ranges, which sync fetches); different, or contradicted by
another validly signed checkpoint of the same size, it is evidence of
equivocation and raises an alarm. A key revocation that gives the log's root at
its position is compared the same way (see :meth:`CheckpointKeeper.check_revocations`).

A checkpoint is hostile input until proven otherwise, and even a validly signed
one may hold what the store cannot (a NUL, a size beyond a bigint): such a note
is rejected, and whatever its content does to the database, receiving it never
fails the caller, so it cannot stall the Kafka consumer that delivered it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected, log_name
from credex.crypto.cosignature import cosignatures, note_body, pruned, with_lines, witness_name
from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node.cancellation import pause
from credex.node.chain.alarms import AlarmKind, Alarms
from credex.node.chain.latest import Missing
from credex.node.chain.merkle_book import LogBook
from credex.node.chain.wanted import WantedRanges, Why
from credex.node.config import IntakeConfig
from credex.node.store import NOTIFY_CHANNEL, Connection
from credex.node.store import events as state
from credex.node.store import evidence as rejections

log = logging.getLogger(__name__)


class CheckpointState(StrEnum):
    """Where a checkpoint stands; the value is ``checkpoints.state`` (a CHECK constraint keeps it to these)."""

    OWN = "own"  # this node signed it
    PENDING = "pending"  # this node does not hold that many events of the origin yet
    VERIFIED = "verified"  # our tree has the same root at that size
    CONFLICT = "conflict"  # evidence of equivocation: an alarm was raised


# The states whose root this node's copy of the log agrees with: what it serves and shows.
AGREED = (CheckpointState.OWN, CheckpointState.VERIFIED)
# How many of a witnessed log's newest checkpoints are looked at for one that its witnesses cosigned; and,
# when none of those is and none is known from before, how many once (a node that just started).
WITNESSED_LOOKBACK = 8
WITNESSED_SCAN = 1024
WITNESSED_MEMORY = 4096  # notes whose policy check is remembered


class Received(StrEnum):
    """What became of one checkpoint received."""

    NEW = "new"
    KNOWN = "known"  # held already
    REJECTED = "rejected"  # refused; the receipt says why


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of receiving one checkpoint: a kind, and for a rejection its reason code."""

    kind: Received
    reason: str = ""

    @property
    def rejected(self) -> bool:
        return self.kind is Received.REJECTED

    def __str__(self) -> str:
        """The text form the intake counters use: ``new``, ``known``, ``rejected:<reason>``."""
        return f"{self.kind}:{self.reason}" if self.rejected else str(self.kind)


NEW = Receipt(Received.NEW)
KNOWN = Receipt(Received.KNOWN)


@dataclass(frozen=True, slots=True)
class HeldCheckpoint:
    origin: str
    size: int
    root: bytes
    note: str
    state: CheckpointState


class CheckpointKeeper:
    def __init__(
        self,
        origin: str,
        pool: asyncpg.Pool,
        bundle: Callable[[], TrustBundle],
        key: SigningKey,
        logbook: LogBook,
        alarms: Alarms,
        evidence: IntakeConfig | None = None,
        wanted: WantedRanges | None = None,
    ) -> None:
        self.me = origin
        self.pool = pool
        self.bundle = bundle
        self.key = key
        self.logbook = logbook
        self.alarms = alarms
        self.evidence = evidence or IntakeConfig()  # how much of a rejected checkpoint is kept
        self.wanted = wanted if wanted is not None else WantedRanges()  # what checkpoints show we lack
        self._sign_lock = asyncio.Lock()
        self._refusal = ""  # why our key may not sign, as last logged
        self._roots: set[tuple[str, str, str]] = set()  # (origin, key id, revoked root) compared already
        self._quorum: dict[tuple[int, str, str], bool] = {}  # (bundle version, origin, note) -> meets its policy
        self._newest_witnessed: dict[str, tuple[int, int]] = {}  # origin -> (bundle version, size; 0: none)

    # -- our own log ---------------------------------------------------------------------

    async def sign_own(self) -> HeldCheckpoint | None:
        """Sign a checkpoint of our log if it grew since the last one; never one that disagrees."""
        async with self._sign_lock:
            tree = await self.logbook.tree(self.me)
            async with self.pool.acquire() as conn:
                last = await conn.fetchrow(
                    "SELECT size, root FROM checkpoints WHERE origin = $1 AND state = $2 ORDER BY size DESC LIMIT 1",
                    self.me,
                    CheckpointState.OWN,
                )
                if last is not None and last["size"] >= tree.size:
                    return None
                if last is not None and await tree.root(last["size"], conn=conn) != bytes(last["root"]):
                    async with conn.transaction():
                        await self.alarms.raise_alarm(
                            conn,
                            self.me,
                            AlarmKind.SELF_INCONSISTENT,
                            f"our own log no longer has the root we signed at size {last['size']}; refusing to sign",
                            {
                                "size": last["size"],
                                "signed_root": bytes(last["root"]).hex(),
                                "current_root": (await tree.root(last["size"], conn=conn)).hex(),
                            },
                        )
                    return None
                checkpoint = Checkpoint(log_name(self.me), tree.size, await tree.root(conn=conn))
                note = checkpoint.sign(self.key)
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO checkpoints (origin, size, root, note, state, source)"
                        " VALUES ($1, $2, $3, $4, $5, 'self')",
                        self.me,
                        checkpoint.size,
                        checkpoint.root,
                        note,
                        CheckpointState.OWN,
                    )
                    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            self.logbook.latest.forget(self.me)
            return HeldCheckpoint(self.me, checkpoint.size, checkpoint.root, note, CheckpointState.OWN)

    # -- the peers' logs -----------------------------------------------------------------

    async def receive(self, origin: str, note: str, source: str) -> Receipt:
        """Take in one checkpoint of ``origin``: new, known, or rejected with a reason."""
        [outcome] = await self.receive_all([(origin, note, source)])
        return outcome

    async def receive_all(self, notes: Sequence[tuple[str, str, str]]) -> list[Receipt]:
        """Take in (origin, note, source) checkpoints; an outcome for each, as :meth:`receive` gives.

        What fails verification is recorded in one transaction for all of them, so a
        flood of forged notes costs one write, not one per note, before the Kafka
        consumer that delivered them can commit and go on.
        """
        bundle = self.bundle()
        outcomes: list[Receipt] = []
        opened: list[tuple[int, str, Checkpoint, str, str]] = []
        refused: defaultdict[tuple[str, str], list[rejections.Rejection]] = defaultdict(list)
        for index, (origin, note, source) in enumerate(notes):
            try:
                checkpoint = _open(bundle, origin, note)
            except CheckpointRejected as exc:
                raw = note.encode("utf-8", "surrogateescape")
                refused[(origin, source)].append(rejections.Rejection(exc.reason, exc.message, "", raw))
                outcomes.append(Receipt(Received.REJECTED, exc.reason))
                continue
            outcomes.append(KNOWN)  # replaced once stored
            opened.append((index, origin, checkpoint, note, source))
        if refused:
            await self._refuse(refused)
        for index, origin, checkpoint, note, source in opened:
            outcomes[index] = await self._store_opened(origin, checkpoint, note, source)
        return outcomes

    async def _refuse(self, refused: dict[tuple[str, str], list[rejections.Rejection]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for (origin, source), refusals in refused.items():
                await rejections.record(conn, self.me, origin, source, refusals, self.evidence)
        for (origin, source), refusals in refused.items():
            first = refusals[0]
            log.warning(
                "%s: rejected %s of %s: %s (%s)",
                source,
                "a checkpoint" if len(refusals) == 1 else f"{len(refusals)} checkpoints, the first",
                origin,
                rejections.storable_text(first.message, rejections.MAX_MESSAGE_CHARS),
                first.reason,
            )

    async def _store_opened(self, origin: str, checkpoint: Checkpoint, note: str, source: str) -> Receipt:
        try:
            return await self._store(origin, checkpoint, note, source)
        except rejections.POISON as exc:
            # The last resort: whatever in it the database refuses, count it and go on.
            log.error(
                "%s: checkpoint of %s size %d cannot be stored (%s); counted as rejected:unstorable",
                source,
                origin,
                checkpoint.size,
                type(exc).__name__,
            )
            unstorable = Receipt(Received.REJECTED, "unstorable")
            async with self.pool.acquire() as conn:
                await state.count(conn, origin, str(unstorable), 1)
            return unstorable
        finally:  # committed (or not): what is served of the origin is read again, at once
            self.logbook.latest.forget(origin)

    async def _store(self, origin: str, checkpoint: Checkpoint, note: str, source: str) -> Receipt:
        bundle = self.bundle()
        # Kept and served: the log's signature and the cosignatures its policy counts, not what a relay added.
        kept = pruned(
            note, log_name(origin), bundle.checkpoint_keys(origin, checkpoint.size), _witness_keys(bundle, origin)
        )
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO checkpoints (origin, size, root, note, state, source)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
                origin,
                checkpoint.size,
                checkpoint.root,
                kept,
                CheckpointState.PENDING,
                source,
            )
            if not inserted:
                await self._merge_cosignatures(conn, origin, checkpoint, note)
                return KNOWN
            rival = await conn.fetchrow(
                "SELECT note FROM checkpoints WHERE origin = $1 AND size = $2 AND root <> $3 LIMIT 1",
                origin,
                checkpoint.size,
                checkpoint.root,
            )
            if rival is not None:
                await conn.execute(
                    "UPDATE checkpoints SET state = $3 WHERE origin = $1 AND size = $2",
                    origin,
                    checkpoint.size,
                    CheckpointState.CONFLICT,
                )
                await self.alarms.raise_alarm(
                    conn,
                    origin,
                    AlarmKind.EQUIVOCATION_CHECKPOINT,
                    f"two checkpoints of size {checkpoint.size}, both validly signed, with different roots",
                    {"size": checkpoint.size, "checkpoints": [rival["note"], note], "sources": source},
                )
                return NEW
        await self.check(origin)
        return NEW

    async def _merge_cosignatures(self, conn: Connection, origin: str, checkpoint: Checkpoint, note: str) -> None:
        """A checkpoint held already may come back carrying more witnesses' cosignatures: keep the valid ones.

        Only cosignatures by witnesses of the log's policy count, each verified with its bundle key
        over the held note's own text, so what is served stays a note anyone can check.
        """
        bundle = self.bundle()
        keys = _witness_keys(bundle, origin)
        if not keys:
            return
        held = await conn.fetchval(
            "SELECT note FROM checkpoints WHERE origin = $1 AND size = $2 AND root = $3 FOR UPDATE",
            origin,
            checkpoint.size,
            checkpoint.root,
        )
        if held is None or note_body(held) != note_body(note):
            return
        have = cosignatures(held, keys)
        fresh = [c.line for name, c in cosignatures(note, keys).items() if name not in have]
        if not fresh:
            return
        try:  # a note stored before notes were pruned may hold a relay's padding: it goes now
            merged = with_lines(
                pruned(held, log_name(origin), bundle.checkpoint_keys(origin, checkpoint.size), keys), fresh
            )
        except ValueError:  # past the note size limit: keep what is held
            return
        await conn.execute(
            "UPDATE checkpoints SET note = $4 WHERE origin = $1 AND size = $2 AND root = $3",
            origin,
            checkpoint.size,
            checkpoint.root,
            merged,
        )

    async def check(self, origin: str) -> None:
        """Compare pending checkpoints with our tree; put what they show we lack in the wanted ranges."""
        await self.check_revocations(origin)
        async with self.pool.acquire() as conn:
            pending = await conn.fetch(
                "SELECT size, root, note FROM checkpoints WHERE origin = $1 AND state = $2 ORDER BY size",
                origin,
                CheckpointState.PENDING,
            )
        if not pending:
            return
        tree = await self.logbook.tree(origin)
        wanted = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for row in pending:
                size, root = row["size"], bytes(row["root"])
                if size > tree.size:
                    wanted = max(wanted, size)
                    continue
                ours = await tree.root(size, conn=conn)
                if ours == root:
                    await _set_state(conn, origin, size, root, CheckpointState.VERIFIED)
                    continue
                await _set_state(conn, origin, size, root, CheckpointState.CONFLICT)
                await self.alarms.raise_alarm(
                    conn,
                    origin,
                    AlarmKind.EQUIVOCATION_LOG,
                    f"{origin} signed root {root.hex()[:16]}… at size {size}, but its own signed events"
                    f" give {ours.hex()[:16]}…",
                    {"size": size, "checkpoint": row["note"], "root_of_signed_events": ours.hex()},
                )
        self.logbook.latest.forget(origin)  # checkpoints verified or in conflict now: served at once
        if wanted:
            self.wanted.put(origin, wanted, Why.CHECKPOINT)

    async def check_revocations(self, origin: str) -> None:
        """Compare our copy of ``origin``'s log with the roots its key revocations give.

        A revocation with ``revoked_root`` is a checkpoint of size ``revoked_after_seq``
        that the federation signed (in the bundle), not the revoked key: a copy with
        another root there holds history the key's thief forged, taken in before the
        genuine events (a node that was new or catching up). Each root is compared
        once, when this node holds that many events; until then they are wanted (sync fetches them).
        """
        keys = [k for k in self.bundle().revoked_roots(origin) if (origin, k.key_id, k.revoked_root) not in self._roots]
        if not keys:
            return
        tree = await self.logbook.tree(origin)
        wanted = 0
        for key in keys:
            size = key.revoked_after_seq or 0
            if size > tree.size:
                wanted = max(wanted, size)
                continue
            self._roots.add((origin, key.key_id, key.revoked_root))
            ours = (await tree.root(size)).hex()
            if ours == key.revoked_root:
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                await self.alarms.raise_once(
                    conn,
                    origin,
                    AlarmKind.REVOCATION_ROOT,
                    f"the trust bundle revokes key {key.key_id} of {origin} after seq {size} and gives its log's"
                    f" root there as {key.revoked_root[:16]}…, but the events 1..{size} held here give"
                    f" {ours[:16]}…: they are not the ones {origin} published (forged with the revoked key?)."
                    f" Compare with `credex audit` of {origin}'s own node; this node's copy needs rebuilding",
                    {"key_id": key.key_id, "size": size, "root": key.revoked_root, "root_held": ours},
                    same={"key_id": key.key_id, "root": key.revoked_root},
                )
        if wanted:
            self.wanted.put(origin, wanted, Why.REVOCATION)

    async def latest(self, origin: str, *, conn: Connection | None = None) -> HeldCheckpoint | None:
        """The newest checkpoint of ``origin`` that this node's copy of the log agrees with: what it serves.

        Where the bundle has a witness policy for ``origin``, the newest that carries its quorum
        of cosignatures, so that the checkpoint served, and every proof built on it, verifies
        for a client that applies the policy: a checkpoint just signed is served once its
        witnesses have cosigned it, and while a witness is away, however many are signed
        meanwhile, the last one they cosigned is. Until any has, the newest agreed.

        Answered from memory while the store's news of checkpoints is heard
        (:class:`~credex.node.chain.latest.LatestCheckpoints`), else from the store: on
        ``conn`` when the caller holds one, since a caller waiting for a second connection
        while holding its first can, with enough like it, empty the pool and wait for ever.
        """
        bundle = self.bundle()
        kept = self.logbook.latest
        held = kept.get(origin, bundle.version)
        if not isinstance(held, Missing):
            return held
        generation = kept.generation
        found = await self._latest_stored(bundle, origin, conn)
        kept.keep(origin, bundle.version, found, generation)
        return found

    async def _latest_stored(
        self, bundle: TrustBundle, origin: str, conn: Connection | None = None
    ) -> HeldCheckpoint | None:
        policy = bundle.witness_policy(origin)
        held = await self._agreed(origin, 1 if policy is None else WITNESSED_LOOKBACK, conn=conn)
        if policy is None or not held:
            return held[0] if held else None
        witnessed = next((c for c in held if self._witnessed(bundle, c)), None)
        if witnessed is not None:
            self._newest_witnessed[origin] = (bundle.version, witnessed.size)
            return witnessed
        return await self._older_witnessed(bundle, origin, conn) or held[0]

    async def _older_witnessed(
        self, bundle: TrustBundle, origin: str, conn: Connection | None = None
    ) -> HeldCheckpoint | None:
        """The newest witnessed checkpoint seen before, else the one a single deeper look finds (or none).

        What the deeper look found, even nothing, is remembered for the bundle version, so a log
        whose witnesses have not cosigned yet costs one look, not one per call.
        """
        known = self._newest_witnessed.get(origin)
        if known is None or known[0] != bundle.version:
            deeper = await self._agreed(origin, WITNESSED_SCAN, conn=conn)
            found = next((c for c in deeper if self._witnessed(bundle, c)), None)
            self._newest_witnessed[origin] = (bundle.version, found.size if found else 0)
            return found
        if not known[1]:
            return None
        again = await self._agreed(origin, 1, size=known[1], conn=conn)  # its note may carry more cosignatures by now
        return again[0] if again and self._witnessed(bundle, again[0]) else None

    async def _agreed(
        self, origin: str, limit: int, size: int | None = None, *, conn: Connection | None = None
    ) -> list[HeldCheckpoint]:
        """The newest ``limit`` checkpoints of ``origin`` this node agrees with (of ``size`` only, if given)."""
        if conn is None:
            async with self.pool.acquire() as own:
                return await self._agreed(origin, limit, size, conn=own)
        rows = await conn.fetch(
            "SELECT origin, size, root, note, state FROM checkpoints"
            " WHERE origin = $1 AND state = ANY($2::text[]) AND ($4::bigint IS NULL OR size = $4)"
            " ORDER BY size DESC LIMIT $3",
            origin,
            list(AGREED),
            limit,
            size,
        )
        return [
            HeldCheckpoint(row["origin"], row["size"], bytes(row["root"]), row["note"], CheckpointState(row["state"]))
            for row in rows
        ]

    def _witnessed(self, bundle: TrustBundle, checkpoint: HeldCheckpoint) -> bool:
        """Whether ``checkpoint`` meets its log's witness policy; remembered per bundle and note."""
        key = (bundle.version, checkpoint.origin, checkpoint.note)
        known = self._quorum.get(key)
        if known is None:
            try:
                bundle.check_witnessed(checkpoint.origin, checkpoint.note)
                known = True
            except CheckpointRejected:
                known = False
            if len(self._quorum) >= WITNESSED_MEMORY:
                self._quorum.clear()
            self._quorum[key] = known
        return known

    async def run_signer(self, every_events: int, every_seconds: float) -> None:
        """Sign every ``every_events`` new events, or every ``every_seconds`` if anything new came.

        Survives any failure of one round (logged, then retried after a growing pause):
        a signer that died would leave peers without checkpoints and nobody told.
        """
        failures = 0
        while True:
            await pause(min(every_seconds, 1.0) if not failures else min(60.0, 2.0**failures))
            try:
                await self._sign_if_due(every_events, every_seconds)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 6)
                log.exception("checkpoint signer: %s; trying again in %.0f s", exc, min(60.0, 2.0**failures))

    async def _sign_if_due(self, every_events: int, every_seconds: float) -> None:
        refusal = self.key.refusal()
        if refusal != self._refusal:
            self._refusal = refusal
            if refusal:
                log.error("checkpoint signer: signing nothing more: %s", refusal)
        if refusal:
            return
        async with self.pool.acquire() as conn:
            head = await state.own_head(conn, self.me)  # the signer looks often, also during a big file
            last = await conn.fetchrow(
                "SELECT size, first_seen FROM checkpoints WHERE origin = $1 AND state = $2 ORDER BY size DESC LIMIT 1",
                self.me,
                CheckpointState.OWN,
            )
        signed_size = int(last["size"]) if last else 0
        if head <= signed_size:
            return
        age = (dt.datetime.now(dt.UTC) - last["first_seen"]).total_seconds() if last else every_seconds
        if head - signed_size >= every_events or age >= every_seconds:
            await self.sign_own()


def _witness_keys(bundle: TrustBundle, origin: str) -> dict[str, Ed25519PublicKey]:
    """The cosigning keys, by key name, of the witnesses ``origin``'s policy names (none without a policy)."""
    policy = bundle.witness_policy(origin)
    if policy is None:
        return {}
    return {witness_name(w): k for w in policy.witnesses if (k := bundle.witness_key(w)) is not None}


async def _set_state(conn: Connection, origin: str, size: int, root: bytes, to: CheckpointState) -> None:
    await conn.execute(
        "UPDATE checkpoints SET state = $4 WHERE origin = $1 AND size = $2 AND root = $3", origin, size, root, to
    )


def _open(bundle: TrustBundle, origin: str, note: str) -> Checkpoint:
    """Verify and parse a checkpoint; whatever goes wrong with it is a :class:`CheckpointRejected`."""
    try:
        checkpoint = bundle.verify_checkpoint(origin, note)  # a revoked key: only up to its position
    except CheckpointRejected:
        raise
    except Exception as exc:  # a note must never take its caller (the Kafka consumer) down
        log.exception("checking a checkpoint of %s failed unexpectedly", origin)
        raise CheckpointRejected("checkpoint.unverifiable", f"verification failed: {type(exc).__name__}") from None
    _check_storable(checkpoint, note)
    return checkpoint


def _check_storable(checkpoint: Checkpoint, note: str) -> None:
    """Refuse a validly signed note the store cannot hold: it would fail every retry of its batch."""
    if checkpoint.size > state.MAX_SEQ:
        raise CheckpointRejected(
            "checkpoint.malformed", f"tree size {checkpoint.size} is beyond any log ({state.MAX_SEQ})"
        )
    if any((ch < " " and ch != "\n") or ch == "\x7f" for ch in note):
        raise CheckpointRejected("checkpoint.malformed", "the note contains NUL or control characters")
