"""Shared by the witness tests: a witness policy put in the federation's bundle, and a log's checkpoints forged
with its own key over any leaves a test wants (an honest history, or a split view of it)."""

from __future__ import annotations

from collections.abc import Sequence

from credex.crypto.checkpoint import Checkpoint, log_name
from credex.crypto.keys import SigningKey
from credex.crypto.merkle import MerkleTree, leaf_hash
from credex.crypto.trust import TrustBundle, WitnessPolicy

from .conftest import TestFederation


def set_witnesses(federation: TestFederation, log: str, witnesses: Sequence[str], quorum: int) -> TrustBundle:
    """Publish the next bundle version with ``witnesses`` witnessing ``log``, ``quorum`` of them needed."""
    policy = WitnessPolicy(log=log, witnesses=tuple(witnesses), quorum=quorum)
    bundle = federation.bundle_now().with_witness_policy(policy).next_version()
    federation.publish(bundle)
    return bundle


class ForgedLog:
    """A log of made-up leaves whose checkpoints are signed with the origin's real key."""

    def __init__(self, federation: TestFederation, origin: str, tag: str = "honest") -> None:
        self.origin = origin
        self.key = SigningKey.load(federation.layout.member_dir(origin) / "keys")
        self.tree = MerkleTree(leaf_hash(f"{tag}-{i}".encode()) for i in range(64))

    def checkpoint(self, size: int, key: SigningKey | None = None) -> bytes:
        note = Checkpoint(log_name(self.origin), size, self.tree.root(size)).sign(key or self.key)
        return note.encode()

    def proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.tree.consistency_proof(old_size, new_size) if 0 < old_size < new_size else []
