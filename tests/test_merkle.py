"""RFC 6962 Merkle trees: known answers, and proofs that verify exactly when they should."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credex.crypto.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency reference corpus and its published roots (sizes 1 to 8).
LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CONSISTENCY = {
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 §2.1, deliberately naive."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


def tree_of(leaves: list[bytes]) -> MerkleTree:
    return MerkleTree(leaf_hash(leaf) for leaf in leaves)


def test_roots_match_the_reference_corpus() -> None:
    tree = tree_of(LEAVES)
    assert tree.root(0) == EMPTY_ROOT
    for size, root in enumerate(ROOTS, start=1):
        assert tree.root(size).hex() == root


@pytest.mark.parametrize(("old", "new"), sorted(CONSISTENCY))
def test_consistency_proofs_match_the_reference_corpus(old: int, new: int) -> None:
    tree = tree_of(LEAVES)
    proof = tree.consistency_proof(old, new)
    assert [p.hex() for p in proof] == CONSISTENCY[(old, new)]
    assert verify_consistency(old, new, tree.root(old), tree.root(new), proof)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True), st.data())
def test_every_inclusion_proof_leads_to_the_root_and_nowhere_else(leaves: list[bytes], data: st.DataObject) -> None:
    tree = tree_of(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    assert tree.root(size) == reference_root(leaves[:size])
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index, size)
    root = tree.root(size)
    assert verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
    assert not verify_inclusion(leaf_hash(leaves[index] + b"x"), index, size, proof, root)
    if size > 1:
        assert not verify_inclusion(leaf_hash(leaves[index]), (index + 1) % size, size, proof, root)
        assert root_from_inclusion(leaf_hash(leaves[index]), index, size, proof[:-1]) != root


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=2, max_size=70, unique=True), st.data())
def test_consistency_proofs_hold_only_between_prefixes_of_one_log(leaves: list[bytes], data: st.DataObject) -> None:
    tree = tree_of(leaves)
    new = data.draw(st.integers(2, len(leaves)))
    old = data.draw(st.integers(1, new - 1))
    proof = tree.consistency_proof(old, new)
    assert verify_consistency(old, new, tree.root(old), tree.root(new), proof)
    forked = tree_of([*leaves[: old - 1], b"forked", *leaves[old:]])
    assert not verify_consistency(old, new, forked.root(old), tree.root(new), proof)
    assert not verify_consistency(old, new, tree.root(old), forked.root(new), proof)


def test_sizes_outside_the_tree_are_refused() -> None:
    tree = tree_of(LEAVES[:3])
    with pytest.raises(ValueError, match="holds 3 leaves"):
        tree.root(4)
    with pytest.raises(ValueError, match="not in a tree"):
        tree.inclusion_proof(3, 3)
    assert not verify_consistency(3, 2, tree.root(3), tree.root(2), [b"x" * 32])
