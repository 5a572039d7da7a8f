"""The witness: this node cosigns a peer's checkpoint only if it extends the last one of that log it cosigned.

What C2SP tlog-witness's add-checkpoint asks of a witness, over either wire (the peer
gRPC channel, or the spec's own HTTP: :mod:`credex.node.services.witness_http`):
the checkpoint must be signed by the log's key as the trust bundle has it (the
bundle's witness policy also says which logs this node witnesses), the request's
old size must be the size this witness last cosigned for that log (else it answers
with its own size, so the log can retry with the right proof), and a consistency
proof must lead from that checkpoint's root to the new one. A checkpoint of a
smaller size (a rollback) or of the same size with another root is never cosigned,
whatever the proof.

The witness's memory of each log (size, root, the note it cosigned) is a row of
``witness_state`` in PostgreSQL, so it survives restarts, and it moves only by
compare-and-set on the (size, root) the request was checked against: of two
requests racing from one state, one advances it and the other finds a conflict,
so no interleaving makes the witness cosign a size and then a smaller one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected, log_name
from credex.crypto.cosignature import cosign, note_body, pruned, with_lines, witness_name
from credex.crypto.keys import SigningKey, public_raw
from credex.crypto.merkle import verify_consistency
from credex.crypto.trust import TrustBundle
from credex.errors import CredexError
from credex.node.chain import LogBook
from credex.node.config import NodeConfig
from credex.node.store import events as state
from credex.node.witness.wire import MAX_PROOF_LINES

EMPTY_ROOT = hashlib.sha256(b"").digest()


# The HTTP status C2SP tlog-witness answers each kind of refusal with, where the gRPC code alone says it.
_HTTP_STATUS = {"NOT_FOUND": 404, "PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400}


class WitnessRefused(CredexError):
    """A checkpoint this witness will not cosign, and why, in the status of either wire.

    ``code`` is the gRPC status name to answer with; ``status`` the HTTP status of C2SP
    tlog-witness (the gRPC FAILED_PRECONDITION covers what it tells apart: 409 for a
    split view, 422 for a proof that does not verify, 503 for a witness without its key).
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = _HTTP_STATUS[code] if status is None else status


@dataclass(frozen=True, slots=True)
class Outcome:
    """A cosignature (its signature lines), or a conflict: then ``lines`` is empty.

    ``witness_size`` is the size of the latest checkpoint of the log this witness cosigned, after the call.
    """

    lines: tuple[str, ...]
    witness_size: int

    @property
    def conflict(self) -> bool:
        return not self.lines


class Witness:
    def __init__(
        self,
        me: str,
        pool: asyncpg.Pool,
        bundle: Callable[[], TrustBundle],
        key: SigningKey | None,
        logbook: LogBook | None = None,
    ) -> None:
        self.me = me
        self.name = witness_name(me)
        self.pool = pool
        self.bundle = bundle
        self.key = key
        # This node's own copy of the logs it witnesses (every member holds every log): a checkpoint
        # whose root differs from it at a size it holds is another view of the log, refused whatever
        # the witness cosigned before (a log whose key was stolen after the witness's last cosignature).
        self.logbook = logbook
        self.clock: Callable[[], float] = time.time

    async def add_checkpoint(self, origin: str, old_size: int, proof: Sequence[bytes], note_bytes: bytes) -> Outcome:
        """Check and cosign one checkpoint of ``origin``'s log; raise :class:`WitnessRefused` saying why not."""
        checkpoint, note = self._open(origin, old_size, proof, note_bytes)
        await self._check_against_copy(origin, checkpoint)
        async with self.pool.acquire() as conn:
            held = await conn.fetchrow("SELECT size, root FROM witness_state WHERE log_origin = $1", origin)
            held_size, held_root = (int(held["size"]), bytes(held["root"])) if held else (0, EMPTY_ROOT)
            if old_size != held_size:
                return Outcome((), held_size)
            if old_size == checkpoint.size and checkpoint.root != held_root:
                raise WitnessRefused(
                    "FAILED_PRECONDITION",
                    f"this witness cosigned {origin}'s log at size {held_size} with another root:"
                    " refusing a split view",
                    409,
                )
            if old_size == 0 and proof:
                raise WitnessRefused("FAILED_PRECONDITION", "from size 0 the consistency proof is empty", 422)
            if 0 < old_size < checkpoint.size and not verify_consistency(
                old_size, checkpoint.size, held_root, checkpoint.root, list(proof)
            ):
                raise WitnessRefused(
                    "FAILED_PRECONDITION",
                    f"the consistency proof from size {old_size} (the checkpoint this witness cosigned) to"
                    f" {checkpoint.size} does not verify: the log is not append-only",
                    422,
                )
            line = cosign(note_body(note), self.name, self._key(), int(self.clock()))
            cosigned = with_lines(note, [line])
            if held is None:
                moved = await conn.fetchval(
                    "INSERT INTO witness_state (log_origin, size, root, note) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT DO NOTHING RETURNING 1",
                    origin,
                    checkpoint.size,
                    checkpoint.root,
                    cosigned,
                )
            else:
                moved = await conn.fetchval(
                    "UPDATE witness_state SET size = $4, root = $5, note = $6, cosigned_at = now()"
                    " WHERE log_origin = $1 AND size = $2 AND root = $3 RETURNING 1",
                    origin,
                    held_size,
                    held_root,
                    checkpoint.size,
                    checkpoint.root,
                    cosigned,
                )
            if not moved:  # another request advanced the state since we read it: the caller retries from there
                now = await conn.fetchval("SELECT size FROM witness_state WHERE log_origin = $1", origin)
                return Outcome((), int(now or 0))
        return Outcome((line,), checkpoint.size)

    async def _check_against_copy(self, origin: str, checkpoint: Checkpoint) -> None:
        if self.logbook is None:
            return
        tree = await self.logbook.tree(origin)
        if 0 < checkpoint.size <= tree.size and await tree.root(checkpoint.size) != checkpoint.root:
            raise WitnessRefused(
                "FAILED_PRECONDITION",
                f"{origin}'s signed events held here give another root at size {checkpoint.size}:"
                " refusing a split view",
                409,
            )

    def _key(self) -> SigningKey:
        if self.key is None:
            raise WitnessRefused(
                "FAILED_PRECONDITION", f"{self.me} has no witness key configured (keys.witness_key)", 503
            )
        return self.key

    def _open(self, origin: str, old_size: int, proof: Sequence[bytes], note_bytes: bytes) -> tuple[Checkpoint, str]:
        """Every check that needs no state: who witnesses what, the request's form, the log's signature.

        Returns the checkpoint and its note with only the log's signature lines.
        """
        bundle = self.bundle()
        listed = bundle.witness_key(self.me)
        if listed is None or public_raw(listed) != self._key().public_raw:
            raise WitnessRefused(
                "FAILED_PRECONDITION",
                f"{self.me}'s witness key is not the one trust bundle version {bundle.version} lists for it:"
                " its cosignatures would count for nothing",
                503,
            )
        policy = bundle.witness_policy(origin)
        if policy is None or self.me not in policy.witnesses:
            raise WitnessRefused(
                "NOT_FOUND", f"{self.me} does not witness {origin}'s log (trust bundle version {bundle.version})"
            )
        if len(proof) > MAX_PROOF_LINES or any(len(h) != 32 for h in proof):
            raise WitnessRefused(
                "INVALID_ARGUMENT", f"a consistency proof is at most {MAX_PROOF_LINES} hashes of 32 bytes"
            )
        try:
            note = note_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise WitnessRefused("INVALID_ARGUMENT", "the checkpoint is not UTF-8 text") from None
        if any((ch < " " and ch != "\n") or ch == "\x7f" for ch in note):
            raise WitnessRefused("INVALID_ARGUMENT", "the checkpoint contains control characters")
        try:
            checkpoint = bundle.verify_checkpoint(origin, note)
        except CheckpointRejected as exc:
            malformed = exc.reason in {"checkpoint.malformed", "checkpoint.origin"}
            code = "INVALID_ARGUMENT" if malformed else "PERMISSION_DENIED"
            raise WitnessRefused(code, f"checkpoint of {origin}: {exc.message}") from None
        if checkpoint.size > state.MAX_SEQ:
            raise WitnessRefused("INVALID_ARGUMENT", f"tree size {checkpoint.size} is beyond any log")
        if old_size > checkpoint.size:
            raise WitnessRefused(
                "INVALID_ARGUMENT",
                f"old size {old_size} is beyond the checkpoint's size {checkpoint.size}: a log never shrinks",
            )
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            raise WitnessRefused("FAILED_PRECONDITION", "a checkpoint of size 0 has the empty tree's root", 400)
        # What it stores and serves as cosigned: the log's signature and its own, not what a relay added.
        return checkpoint, pruned(note, log_name(origin), bundle.checkpoint_keys(origin, checkpoint.size), {})

    async def latest(self, origin: str) -> tuple[int, bytes, str] | None:
        """The latest checkpoint of ``origin`` this witness cosigned: size, root, note with the cosignature."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT size, root, note FROM witness_state WHERE log_origin = $1", origin)
        return (int(row["size"]), bytes(row["root"]), str(row["note"])) if row else None


def node_witness(
    config: NodeConfig, pool: asyncpg.Pool, bundle: Callable[[], TrustBundle], logbook: LogBook
) -> Witness:
    """The node's witness, with its witness key (none: every request is refused saying so); one for each wire.

    The key file was loaded once already when the node started (runtime.py), so a bad one
    stops the node there, not here. Witnesses built for the gRPC service and the HTTP
    endpoint share nothing but the store, whose compare-and-set keeps them in one order.
    """
    path = config.keys.witness_key
    return Witness(config.origin, pool, bundle, SigningKey.load(path) if path else None, logbook)
