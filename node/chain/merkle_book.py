"""The Merkle tree of every origin's log this node holds, kept in memory and grown from the store.

A tree covers an origin's log from seq 1 up to its gap-free watermark
(origin_progress.contiguous_seq): the store is append-only for events, so a tree
only ever grows, by the leaf hashes stored beside the events. Trees are built
on first use and extended on every later use; several replicas of a node each
keep their own, all equal because they are built from the same rows.

Hashing is CPU work (two SHA-256 per leaf, over 100 ms for a batch of 50,000
leaves), so it runs in a worker thread, not on the event loop; hashlib releases
the GIL. Callers get a :class:`TreeView`: the tree as it stood when they asked,
fixed at that size. A later growth, in its thread, only appends hashes past that
size and never changes a node the view reads, so a view stays valid while the
tree grows under it, and answers exactly what the tree of that size answers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from credex.crypto.merkle import MerkleTree

_CHUNK = 50000


class TreeView:
    """An origin's Merkle tree at a fixed size: what :meth:`LogBook.tree` hands out."""

    __slots__ = ("_tree", "size")

    def __init__(self, tree: MerkleTree, size: int) -> None:
        self._tree = tree
        self.size = size

    def _within(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree holds {self.size} leaves, not {size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        return self._tree.root(self._within(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self._tree.inclusion_proof(index, self._within(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return self._tree.consistency_proof(old_size, self._within(new_size))

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {self.size}")
        return self._tree.leaf(index)


class LogBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._trees: dict[str, MerkleTree] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def tree(self, origin: str) -> TreeView:
        """The origin's tree, up to date with what the store holds without a gap."""
        async with self._locks[origin]:  # one growth at a time per origin: appends stay in order
            tree = self._trees.setdefault(origin, MerkleTree())
            async with self.pool.acquire() as conn:
                contiguous = int(
                    await conn.fetchval("SELECT contiguous_seq FROM origin_progress WHERE origin = $1", origin) or 0
                )
                while tree.size < contiguous:
                    upto = min(contiguous, tree.size + _CHUNK)
                    rows = await conn.fetch(
                        "SELECT seq, leaf_hash FROM events WHERE origin = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                        origin,
                        tree.size,
                        upto,
                    )
                    leaves = [(row["seq"], bytes(row["leaf_hash"])) for row in rows]
                    await asyncio.to_thread(_grow, tree, origin, leaves)
            return TreeView(tree, tree.size)


def _grow(tree: MerkleTree, origin: str, leaves: list[tuple[int, bytes]]) -> None:
    """Append leaves (seq, leaf hash) in seq order; a hole below the watermark is a broken store."""
    for seq, leaf in leaves:
        if seq != tree.size + 1:
            raise RuntimeError(f"{origin}: the store lacks seq {tree.size + 1} below its watermark")
        tree.append(leaf)
    if not leaves:
        raise RuntimeError(f"{origin}: the store lacks seq {tree.size + 1} below its watermark")
