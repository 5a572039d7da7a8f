"""``credex audit``: check a node's copy of an origin's log end to end, trusting only the bundle.

The auditor fetches the newest checkpoint the node serves for the origin and
verifies the origin's signature on it; fetches every event up to that size and
verifies each envelope's signature and place; rebuilds the Merkle tree and
compares its root with the checkpoint; checks a consistency proof from the
previous audit's checkpoint (if a state file is kept) and a sample of the
node's inclusion proofs. The first thing that does not hold is reported with
its evidence; where the log itself differs, the origin's own node is asked for
the same events to find the first differing one.

Keys are judged by the node's own rules (:class:`EventVerifier`,
:meth:`TrustBundle.verify_checkpoint`): a key revoked after seq N vouches for
nothing beyond N, whatever time its signer wrote.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import grpc

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected
from credex.crypto.envelope import canonical_bytes
from credex.crypto.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from credex.crypto.trust import EventRejected, EventVerifier, TrustBundle
from credex.errors import CredexError
from credex.node.channels import PeerChannels
from credex.v1 import exchange_pb2, log_pb2

_PAGE = 2000


@dataclass
class AuditReport:
    origin: str
    ok: bool = False
    size: int = 0
    root: bytes = b""
    divergence: str = ""
    evidence: dict[str, object] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def diverged(self, message: str, evidence: dict[str, object]) -> AuditReport:
        """This report, failed: the first thing that does not hold, with its evidence."""
        self.ok = False
        self.divergence = message
        self.evidence = evidence
        return self


class AuditError(CredexError):
    """The audit could not be carried out (node unreachable, nothing to audit)."""


async def audit_origin(
    channels: PeerChannels,
    endpoint: str,
    origin: str,
    bundle: TrustBundle,
    last_audit: dict[str, object] | None = None,
) -> AuditReport:
    """Audit; ``last_audit`` ({"size", "root"}) is what a previous audit saw, to be extended."""
    report = AuditReport(origin)
    member = bundle.member(origin)
    if member is None:
        raise AuditError(f"{origin} is not a member of the federation")
    log = channels.log(endpoint)
    try:
        signed = await log.GetCheckpoint(log_pb2.GetCheckpointRequest(origin=origin), timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise AuditError(str(channels.failure(exc, endpoint, "GetCheckpoint"))) from None
    try:
        checkpoint = bundle.verify_checkpoint(origin, signed.note)
    except CheckpointRejected as exc:
        return report.diverged(f"the checkpoint served is not {origin}'s: {exc.message}", {"note": signed.note})
    report.size, report.root = checkpoint.size, checkpoint.root
    report.checks.append(f"checkpoint signed by {origin}: size {checkpoint.size}")
    try:
        cosigned = bundle.check_witnessed(origin, signed.note)  # the bundle's witness policy, if any
    except CheckpointRejected as exc:
        return report.diverged(f"the checkpoint served is not witnessed as the bundle requires: {exc.message}", {})
    if cosigned:
        report.checks.append(f"cosigned by its witnesses {', '.join(cosigned)}")

    tree, problem = await _fetch_log(channels, endpoint, origin, checkpoint.size, EventVerifier(bundle))
    if problem is not None:
        return report.diverged(*problem)
    report.checks.append(f"{checkpoint.size} events, each signed by {origin}, in sequence")
    if tree.root() != checkpoint.root:
        return report.diverged(*await _locate(channels, bundle, origin, tree, checkpoint))
    report.checks.append("the events' Merkle root equals the checkpoint's")

    problem = await _check_served_proofs(channels, endpoint, origin, tree, checkpoint)
    if problem is not None:
        return report.diverged(*problem)
    if last_audit:
        problem = await _check_against_last_audit(channels, endpoint, origin, checkpoint, last_audit)
        if problem is not None:
            return report.diverged(*problem)
        report.checks.append(f"the log extends the one audited before (size {last_audit['size']})")
    report.ok = True
    return report


async def _fetch_log(
    channels: PeerChannels, endpoint: str, origin: str, size: int, verifier: EventVerifier
) -> tuple[MerkleTree, tuple[str, dict[str, object]] | None]:
    tree = MerkleTree()
    exchange = channels.exchange(endpoint)
    while tree.size < size:
        want = tree.size + 1
        try:
            page = await exchange.FetchEvents(
                exchange_pb2.FetchEventsRequest(origin=origin, from_seq=want, limit=min(_PAGE, size - tree.size)),
                timeout=60,
            )
        except grpc.aio.AioRpcError as exc:
            raise AuditError(str(channels.failure(exc, endpoint, "FetchEvents"))) from None
        if not page.envelopes:
            return tree, (f"the node serves no event {want} although its checkpoint covers {size}", {"seq": want})
        for envelope in page.envelopes:
            try:
                verified = verifier.verify(envelope, origin)
            except EventRejected as exc:
                return tree, (
                    f"event {want}: {exc.message}",
                    {"seq": want, "envelope": base64.b64encode(canonical_bytes(envelope)).decode()},
                )
            if verified.event.seq != want:
                return tree, (f"expected event {want}, the node served {verified.event.seq}", {"seq": want})
            tree.append(leaf_hash(verified.canonical))
            want += 1
            if tree.size == size:
                break
    return tree, None


async def _locate(
    channels: PeerChannels, bundle: TrustBundle, origin: str, tree: MerkleTree, checkpoint: Checkpoint
) -> tuple[str, dict[str, object]]:
    """Find the first event where the node's copy differs from the origin's own, if the origin answers."""
    evidence: dict[str, object] = {
        "size": checkpoint.size,
        "checkpoint_root": checkpoint.root.hex(),
        "root_of_served_events": tree.root().hex(),
    }
    member = bundle.member(origin)
    if member is not None and member.endpoint:
        try:
            reference, problem = await _fetch_log(
                channels, member.endpoint, origin, checkpoint.size, EventVerifier(bundle)
            )
        except AuditError:
            reference, problem = MerkleTree(), ("origin unreachable", {})
        if problem is None:
            for index in range(checkpoint.size):
                if reference.leaf(index) != tree.leaf(index):
                    evidence.update(
                        first_differing_seq=index + 1,
                        node_leaf=tree.leaf(index).hex(),
                        origin_leaf=reference.leaf(index).hex(),
                    )
                    return f"the node's event {index + 1} differs from the origin's", evidence
    return f"the node's events give another root than {origin} signed at size {checkpoint.size}", evidence


async def _check_served_proofs(
    channels: PeerChannels, endpoint: str, origin: str, tree: MerkleTree, checkpoint: Checkpoint
) -> tuple[str, dict[str, object]] | None:
    log = channels.log(endpoint)
    for seq in sorted({1, (checkpoint.size + 1) // 2, checkpoint.size}):
        try:
            proof = await log.GetInclusionProof(
                log_pb2.GetInclusionProofRequest(
                    origin=origin, seq=seq, tree_size=checkpoint.size, purpose="log audit: locating a divergence"
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            return f"inclusion proof of event {seq}: {exc.code().name}: {exc.details()}", {"seq": seq}
        leaf = leaf_hash(canonical_bytes(proof.envelope))
        if leaf != tree.leaf(seq - 1) or not verify_inclusion(
            leaf, seq - 1, checkpoint.size, list(proof.hashes), checkpoint.root
        ):
            return f"the node's inclusion proof of event {seq} does not verify", {"seq": seq}
    return None


async def _check_against_last_audit(
    channels: PeerChannels, endpoint: str, origin: str, checkpoint: Checkpoint, last: dict[str, object]
) -> tuple[str, dict[str, object]] | None:
    """Like a witness: the log must extend what the last audit saw."""
    if "size" in last:
        old_size, old_root = int(str(last["size"])), bytes.fromhex(str(last["root"]))
        if old_size > checkpoint.size:
            return f"the log shrank from {old_size} to {checkpoint.size} since the last audit", {"last": last}
        if 0 < old_size < checkpoint.size:
            try:
                proof = await channels.log(endpoint).GetConsistencyProof(
                    log_pb2.GetConsistencyProofRequest(origin=origin, old_size=old_size, new_size=checkpoint.size),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                failure = channels.failure(
                    exc, endpoint, f"GetConsistencyProof from size {old_size} to {checkpoint.size}"
                )
                raise AuditError(
                    f"{failure}; whether the log extends the one audited before is unknown: run the audit again"
                    " once the node serves the proof (the state kept is left as it was)"
                ) from None
            if not verify_consistency(old_size, checkpoint.size, old_root, checkpoint.root, list(proof.hashes)):
                return f"the log at {checkpoint.size} does not extend the log at {old_size} audited before", {
                    "last": last,
                    "now": {"size": checkpoint.size, "root": checkpoint.root.hex()},
                }
        elif old_size == checkpoint.size and old_root != checkpoint.root:
            return f"two different roots for size {old_size}", {"last": last, "now": checkpoint.root.hex()}
    return None
