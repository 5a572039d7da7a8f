"""Proofs of an origin's log: built by any node that holds it, checked by anyone with the trust bundle.

An inclusion proof ties one signed envelope to a checkpoint the origin signed:
the envelope's signature, the audit path from its leaf to the root, and the
checkpoint's signature are all checked with the origin's public key alone, so
neither the node that served the proof nor the channel needs to be trusted.
Keys are judged exactly as the node judges them (:class:`EventVerifier`,
:meth:`TrustBundle.verify_checkpoint`): a revoked key counts only up to the log
position the bundle gives.
The same checks serve the gRPC client, ``credex verify`` on a proof file, and
``credex audit``.

Envelopes leave credex as JSON in DSSE's own envelope form (``payloadType``,
``payload``, ``signatures: [{keyid, sig}]``, bytes in standard base64), so
standard DSSE tools read a proof file's envelope or ``credex lookup --json``
without a mapping step.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import DecodeError

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected
from credex.crypto.envelope import canonical_bytes
from credex.crypto.merkle import leaf_hash, verify_inclusion
from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle, VerifiedEvent
from credex.errors import CredexError
from credex.node.chain.checkpoints import AGREED, CheckpointKeeper, CheckpointState, HeldCheckpoint
from credex.node.chain.merkle_book import LogBook
from credex.node.store import Connection, tiles
from credex.v1 import event_pb2, log_pb2

PROOF_FORMAT = "credex-inclusion-proof-v2"
# v1 carried the envelope as base64 of its protobuf encoding; still read.
_PROOF_FORMAT_V1 = "credex-inclusion-proof-v1"


class ProofUnavailable(CredexError):
    """This node cannot build the proof asked for; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProofInvalid(CredexError):
    """A proof does not check out; the message says which part failed."""


def checkpoint_message(held: HeldCheckpoint) -> log_pb2.SignedCheckpoint:
    return log_pb2.SignedCheckpoint(origin=held.origin, note=held.note, size=held.size, root=held.root)


# In one statement: how far the origin's tiles reach, the event's envelope and its path inside its tile (unless the
# caller read them, or the tile cache holds the tile), and the checkpoint at an asked size (unless the latest is used).
_PROOF_QUERY = (
    "SELECT p.tiled_seq, e.envelope, c.size AS checkpoint_size, c.root, c.note, c.state,"
    f" CASE WHEN $4::boolean AND $7::boolean THEN {tiles.leaf_path_sql('o.origin', '$2::bigint')} END AS path"
    " FROM (SELECT $1::text AS origin) o"
    " LEFT JOIN origin_progress p ON p.origin = o.origin"
    " LEFT JOIN events e ON $4::boolean AND e.origin = o.origin AND e.seq = $2"
    " LEFT JOIN LATERAL (SELECT size, root, note, state FROM checkpoints"
    "  WHERE $5::boolean AND origin = o.origin AND size = $3 AND state = ANY($6::text[]) LIMIT 1) c ON true"
)


@dataclass(frozen=True, slots=True)
class HeldLeaf:
    """What a caller read of a leaf with its own query: the envelope, how far the origin's tiles reached, and
    the leaf's hashes inside its tile if it is full (:func:`~credex.node.store.tiles.leaf_path_sql`), which
    spare the proof reading the tile."""

    envelope: bytes
    tiled: int
    path: bytes | None = None


async def inclusion_proof(
    pool: asyncpg.Pool,
    logbook: LogBook,
    keeper: CheckpointKeeper,
    origin: str,
    seq: int,
    tree_size: int = 0,
    *,
    conn: Connection | None = None,
    leaf: HeldLeaf | None = None,
) -> log_pb2.InclusionProof:
    """The proof of ``origin``'s event ``seq`` in its tree of ``tree_size`` (0: the latest checkpoint's).

    One pool connection (``conn`` when the caller holds one) and at most two statements: the
    tiles' reach, the envelope, its path inside its tile and the checkpoint together, unless
    ``leaf`` brings the first three and the latest checkpoint (kept in memory,
    :class:`~credex.node.chain.latest.LatestCheckpoints`) is used; then the tiles the proof needs
    that the tile cache lacks, which once the leaf's path is read are the upper levels' only.
    """
    checkpoint: HeldCheckpoint | None = None
    if tree_size == 0:
        checkpoint = await keeper.latest(origin, conn=conn)
        if checkpoint is None:
            raise ProofUnavailable("FAILED_PRECONDITION", f"no checkpoint of {origin} is held yet")
        tree_size = checkpoint.size
    if conn is None:
        async with pool.acquire() as own:
            return await _inclusion_proof(own, logbook, origin, seq, tree_size, checkpoint, leaf)
    return await _inclusion_proof(conn, logbook, origin, seq, tree_size, checkpoint, leaf)


async def _inclusion_proof(
    conn: Connection,
    logbook: LogBook,
    origin: str,
    seq: int,
    tree_size: int,
    checkpoint: HeldCheckpoint | None,
    leaf: HeldLeaf | None,
) -> log_pb2.InclusionProof:
    if leaf is None or checkpoint is None:
        row = await conn.fetchrow(
            _PROOF_QUERY,
            origin,
            seq,
            tree_size,
            leaf is None,
            checkpoint is None,
            list(AGREED),
            not logbook.holds_leaf_tile(origin, seq - 1),
        )
        assert row is not None  # one row, whatever the store holds
        if leaf is None:
            envelope = row["envelope"]
            path = row["path"]
            leaf = HeldLeaf(
                bytes(envelope) if envelope is not None else b"",
                int(row["tiled_seq"] or 0),
                bytes(path) if path is not None else None,
            )
        if checkpoint is None and row["checkpoint_size"] is not None:
            checkpoint = HeldCheckpoint(
                origin, row["checkpoint_size"], bytes(row["root"]), row["note"], CheckpointState(row["state"])
            )
    if tree_size > leaf.tiled:
        raise ProofUnavailable("OUT_OF_RANGE", f"this node holds {origin}'s log up to {leaf.tiled}, not {tree_size}")
    if not 1 <= seq <= tree_size:
        raise ProofUnavailable("OUT_OF_RANGE", f"seq {seq} is not in {origin}'s log of size {tree_size}")
    if not leaf.envelope:
        raise ProofUnavailable("NOT_FOUND", f"this node does not hold {origin}'s event {seq}")
    hashes = await logbook.view(origin, leaf.tiled).inclusion_proof(seq - 1, tree_size, conn=conn, path=leaf.path)
    proof = log_pb2.InclusionProof(
        origin=origin,
        seq=seq,
        leaf_index=seq - 1,
        tree_size=tree_size,
        hashes=hashes,
        envelope=event_pb2.Envelope.FromString(leaf.envelope),
    )
    if checkpoint is not None:
        proof.checkpoint.CopyFrom(checkpoint_message(checkpoint))
    return proof


@dataclass(frozen=True)
class CheckedProof:
    event: VerifiedEvent
    checkpoint: Checkpoint
    witnesses: tuple[str, ...] = ()  # whose cosignatures met the log's witness policy; none without one


def check_inclusion(proof: log_pb2.InclusionProof, bundle: TrustBundle) -> CheckedProof:
    """Check a proof end to end with the trust bundle only; raise :class:`ProofInvalid` saying what failed."""
    origin = proof.origin
    try:
        event = EventVerifier(bundle).verify(proof.envelope, origin)
    except EventRejected as exc:
        raise ProofInvalid(f"the envelope does not verify: {exc.message}") from None
    if event.event.seq != proof.seq or proof.leaf_index != proof.seq - 1:
        raise ProofInvalid(f"the envelope is event {event.event.seq}, the proof is for seq {proof.seq}")
    if not proof.HasField("checkpoint"):
        raise ProofInvalid("the proof carries no checkpoint to check against")
    try:
        checkpoint = bundle.verify_checkpoint(origin, proof.checkpoint.note)  # revoked keys: by log position
    except CheckpointRejected as exc:
        raise ProofInvalid(f"the checkpoint does not verify: {exc.message}") from None
    if checkpoint.size != proof.tree_size:
        raise ProofInvalid(f"the checkpoint is of size {checkpoint.size}, the proof of {proof.tree_size}")
    try:
        witnesses = bundle.check_witnessed(origin, proof.checkpoint.note)  # the bundle's witness policy, if any
    except CheckpointRejected as exc:
        raise ProofInvalid(f"the checkpoint is not witnessed enough: {exc.message}") from None
    leaf = leaf_hash(canonical_bytes(proof.envelope))
    if not verify_inclusion(leaf, proof.leaf_index, proof.tree_size, list(proof.hashes), checkpoint.root):
        raise ProofInvalid("the audit path does not lead to the checkpoint's root")
    return CheckedProof(event, checkpoint, tuple(witnesses))


def envelope_to_dsse(envelope: event_pb2.Envelope) -> dict[str, Any]:
    """The envelope in DSSE's JSON form; the signature covers PAE(payloadType, payload) as DSSE says."""
    return {
        "payloadType": envelope.payload_type,
        "payload": base64.b64encode(envelope.payload).decode(),
        "signatures": [{"keyid": envelope.key_id, "sig": base64.b64encode(envelope.signature).decode()}],
    }


def envelope_from_dsse(data: object) -> event_pb2.Envelope:
    """Read DSSE's JSON form back; credex envelopes carry exactly one signature. Raises :class:`ProofInvalid`."""
    try:
        if not isinstance(data, dict):
            raise TypeError("a DSSE envelope is a JSON object")
        signatures = data["signatures"]
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise ValueError("a credex envelope carries exactly one signature")
        [signature] = signatures
        return event_pb2.Envelope(
            payload=base64.b64decode(data["payload"], validate=True),
            payload_type=str(data["payloadType"]),
            key_id=str(signature.get("keyid", "")),
            signature=base64.b64decode(signature["sig"], validate=True),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProofInvalid(f"not a DSSE envelope: {exc!r}") from None


def proof_to_json(proof: log_pb2.InclusionProof) -> str:
    """A self-contained proof file: everything ``credex verify`` needs except the trust bundle."""
    return json.dumps(
        {
            "format": PROOF_FORMAT,
            "origin": proof.origin,
            "seq": proof.seq,
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "hashes": [base64.b64encode(h).decode() for h in proof.hashes],
            "envelope": envelope_to_dsse(proof.envelope),
            "checkpoint": proof.checkpoint.note,
        },
        indent=2,
    )


def proof_from_json(text: str) -> log_pb2.InclusionProof:
    """Read a proof file of this format, or of v1 (envelope as base64 protobuf)."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") not in (PROOF_FORMAT, _PROOF_FORMAT_V1):
            raise ProofInvalid(f"not a {PROOF_FORMAT} file")
        if data["format"] == _PROOF_FORMAT_V1:
            envelope = event_pb2.Envelope.FromString(base64.b64decode(data["envelope"], validate=True))
        else:
            envelope = envelope_from_dsse(data["envelope"])
        proof = log_pb2.InclusionProof(
            origin=str(data["origin"]),
            seq=int(data["seq"]),
            leaf_index=int(data["leaf_index"]),
            tree_size=int(data["tree_size"]),
            hashes=[base64.b64decode(h, validate=True) for h in data["hashes"]],
            envelope=envelope,
        )
        proof.checkpoint.note = str(data["checkpoint"])
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        raise ProofInvalid(f"the proof file is malformed: {exc}") from None
    return proof
