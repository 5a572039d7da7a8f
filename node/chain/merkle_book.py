"""The Merkle tree of every origin's log this node holds, answered from the tiles in the store.

A tree covers an origin's log from seq 1 up to what its tiles cover
(``origin_progress.tiled_seq``, the gap-free watermark once an old store's
backlog is tiled). Nothing is held in memory and nothing is read at start: a
root or a proof first learns which tiles it needs (O(log n) of them), reads them
in one query, and hashes at most a few hundred hashes. Several replicas of a
node answer alike because they read the same rows.

Callers get a :class:`TreeView`: the tree as it stood when they asked, fixed at
that size. Tiles only grow (a partial tile is a prefix of what it becomes), so a
view keeps answering exactly what the tree of that size answers while the log
grows under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import asyncpg

from credex.crypto.merkle import SubtreeHashes
from credex.crypto.tiles import TileTree, tiles_needed
from credex.node.store import Connection, tiles

T = TypeVar("T")


class TreeView:
    """An origin's Merkle tree at a fixed size: what :meth:`LogBook.tree` hands out."""

    __slots__ = ("_origin", "_pool", "size")

    def __init__(self, pool: asyncpg.Pool, origin: str, size: int) -> None:
        self._pool = pool
        self._origin = origin
        self.size = size

    def _within(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree holds {self.size} leaves, not {size}")
        return size

    async def _answer(self, size: int, question: Callable[[SubtreeHashes], T], conn: Connection | None = None) -> T:
        needed = tiles_needed(size, question)
        if conn is None:
            async with self._pool.acquire() as own:
                held, inner = await tiles.read_for_proofs(own, self._origin, needed)
        else:
            held, inner = await tiles.read_for_proofs(conn, self._origin, needed)
        return question(TileTree(size, held, inner))

    async def root(self, size: int | None = None, *, conn: Connection | None = None) -> bytes:
        """The root at ``size``; ``conn`` when the caller holds one already (a second could starve the pool)."""
        return await self._answer(self._within(size), lambda tree: tree.root(), conn)

    async def inclusion_proof(
        self, index: int, size: int | None = None, *, conn: Connection | None = None
    ) -> list[bytes]:
        return await self._answer(self._within(size), lambda tree: tree.inclusion_proof(index), conn)

    async def inclusion_proofs(
        self, indexes: Sequence[int], size: int | None = None, *, conn: Connection | None = None
    ) -> list[list[bytes]]:
        """Proofs of many leaves at one size, from one read of the tiles they need (a stream's batch)."""
        return await self._answer(self._within(size), lambda tree: [tree.inclusion_proof(i) for i in indexes], conn)

    async def consistency_proof(
        self, old_size: int, new_size: int | None = None, *, conn: Connection | None = None
    ) -> list[bytes]:
        return await self._answer(self._within(new_size), lambda tree: tree.consistency_proof(old_size), conn)

    async def leaf(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {self.size}")
        return await self._answer(self.size, lambda tree: tree.leaf(index))


class LogBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def tree(self, origin: str, *, conn: Connection | None = None) -> TreeView:
        """The origin's tree as its tiles cover it now; ``conn`` when the caller holds one already."""
        if conn is not None:
            return TreeView(self.pool, origin, await tiles.tiled_size(conn, origin))
        async with self.pool.acquire() as own:
            return TreeView(self.pool, origin, await tiles.tiled_size(own, origin))
