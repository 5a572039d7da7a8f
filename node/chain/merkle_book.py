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

The same fact lets a :class:`LogBook` keep the tiles it has read in a small
bounded :class:`TileCache`: a committed tile's hashes never change, they only
gain entries at the end, so a cached tile holding at least the entries a view
needs answers that view exactly as the store would. Proofs then skip the
store's round trip for the upper levels and the hot leaves, which every proof of
a log shares.
The leaf's own tile is the one a bounded cache cannot hold for a large log (10M
leaves have 39,063 of them, 16 KiB each with their inner hashes), so a proof of a
random leaf would read one on nearly every call. The statement that reads a leaf
reads the eight hashes its proof needs from that tile too
(:func:`~credex.node.store.tiles.leaf_path_sql`), and the proof then reads the upper
levels only (a few hundred tiles even at 100M leaves), which the cache holds.
What the tiles do not hold, the hashes computed inside partial tiles and the folds of
the right edge, a LogBook remembers too (:class:`~credex.node.chain.folded.FoldedHashes`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from credex.crypto.merkle import HASH_SIZE, SubtreeHashes
from credex.crypto.tiles import TILE_WIDTH, TileId, leaf_path, tile_width, tiles_needed
from credex.node.chain.folded import FOLDED_HASHES, FoldedHashes, FoldingTree
from credex.node.chain.latest import LatestCheckpoints
from credex.node.store import Connection, tiles

if TYPE_CHECKING:
    from credex.node.chain.checkpoints import HeldCheckpoint

T = TypeVar("T")

CACHED_TILES = 4096  # about 64 MB at most: a full tile is 8 KiB of hashes and 8 KiB of inner hashes


class TileCache:
    """The tiles this node read last, per (origin, level, index), at the widest they were read.

    Only tiles read outside a transaction enter (those are committed, so they only
    ever grow); a tile is used for a tree when it holds at least the entries that
    tree needs, which are then the store's entries exactly.
    """

    def __init__(self, capacity: int = CACHED_TILES) -> None:
        self._capacity = capacity
        self._held: OrderedDict[tuple[str, TileId], tuple[bytes, bytes | None]] = OrderedDict()

    def lookup(self, origin: str, size: int, needed: set[TileId]) -> tuple[dict[TileId, bytes], dict[TileId, bytes]]:
        """The needed tiles held wide enough for a tree of ``size``, and the inner hashes of the full ones."""
        held: dict[TileId, bytes] = {}
        inner: dict[TileId, bytes] = {}
        for tile in needed:
            key = (origin, tile)
            found = self._held.get(key)
            if found is None or len(found[0]) < tile_width(size, tile.level, tile.index) * HASH_SIZE:
                continue
            self._held.move_to_end(key)
            held[tile] = found[0]
            if found[1] is not None:
                inner[tile] = found[1]
        return held, inner

    def tile(self, origin: str, tile: TileId, width: int) -> bytes | None:
        """The first ``width`` hashes of a tile held at least that wide: the store's tile of that width exactly."""
        found = self._held.get((origin, tile))
        if found is None or len(found[0]) < width * HASH_SIZE:
            return None
        self._held.move_to_end((origin, tile))
        return found[0][: width * HASH_SIZE]

    def keep(self, origin: str, tiles: dict[TileId, bytes], inner: dict[TileId, bytes]) -> None:
        """Remember committed tiles, each only if wider than the copy held."""
        for tile, hashes in tiles.items():
            key = (origin, tile)
            found = self._held.get(key)
            if found is not None and len(found[0]) >= len(hashes):
                continue
            self._held[key] = (hashes, inner.get(tile))
            self._held.move_to_end(key)
        while len(self._held) > self._capacity:
            self._held.popitem(last=False)


class TreeView:
    """An origin's Merkle tree at a fixed size: what :meth:`LogBook.tree` hands out."""

    __slots__ = ("_cache", "_folded", "_origin", "_pool", "size")

    def __init__(
        self,
        pool: asyncpg.Pool,
        origin: str,
        size: int,
        cache: TileCache | None = None,
        folded: FoldedHashes | None = None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self.size = size
        self._cache = cache if cache is not None else TileCache(0)
        self._folded = folded if folded is not None else FoldedHashes(0)

    def _within(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree holds {self.size} leaves, not {size}")
        return size

    async def _answer(
        self,
        size: int,
        question: Callable[[SubtreeHashes], T],
        conn: Connection | None = None,
        known: Mapping[tuple[int, int], bytes] | None = None,
    ) -> T:
        known = known or {}
        needed = tiles_needed(size, question, known)
        held, inner = self._cache.lookup(self._origin, size, needed)
        missing = needed - held.keys()
        if missing:
            if conn is None:
                async with self._pool.acquire() as own:
                    read, read_inner = await tiles.read_for_proofs(own, self._origin, missing)
            else:
                read, read_inner = await tiles.read_for_proofs(conn, self._origin, missing)
                if conn.is_in_transaction():  # may be uncommitted: used for this answer, not kept
                    return question(self._tree(size, held | read, inner | read_inner, known, keep=False))
            self._cache.keep(self._origin, read, read_inner)
            held |= read
            inner |= read_inner
        return question(self._tree(size, held, inner, known, keep=True))

    def _tree(
        self,
        size: int,
        held: dict[TileId, bytes],
        inner: dict[TileId, bytes],
        known: Mapping[tuple[int, int], bytes],
        *,
        keep: bool,
    ) -> FoldingTree:
        return FoldingTree(size, held, inner, self._origin, self._folded, keep=keep, known=known)

    async def root(self, size: int | None = None, *, conn: Connection | None = None) -> bytes:
        """The root at ``size``; ``conn`` when the caller holds one already (a second could starve the pool)."""
        return await self._answer(self._within(size), lambda tree: tree.root(), conn)

    async def inclusion_proof(
        self, index: int, size: int | None = None, *, conn: Connection | None = None, path: bytes | None = None
    ) -> list[bytes]:
        """``path``: the leaf's hashes inside its tile as the leaf's statement read them (:func:`tiles.leaf_path_sql`).

        With it, the leaf's tile is not read (unless it is partial in this tree): a proof then
        reads only the upper levels' tiles, which the cache holds (a few hundred at 100M leaves).
        """
        size = self._within(size)
        return await self._answer(size, lambda tree: tree.inclusion_proof(index), conn, leaf_path(index, size, path))

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
    def __init__(
        self, pool: asyncpg.Pool, cached_tiles: int = CACHED_TILES, folded_hashes: int = FOLDED_HASHES
    ) -> None:
        self.pool = pool
        self.cache = TileCache(cached_tiles)
        self.folded = FoldedHashes(folded_hashes)  # the right edges' hashes, computed once per range
        # The checkpoint served of each origin, shared by all of the node that reads or writes checkpoints.
        self.latest: LatestCheckpoints[HeldCheckpoint | None] = LatestCheckpoints()

    def holds_leaf_tile(self, origin: str, index: int) -> bool:
        """Whether the cache holds leaf ``index``'s tile full, so that its proof need not read the leaf's path.

        Reading the path costs the store a few slices of the tile's row; in a small log the
        tile is nearly always cached and that read would be wasted.
        """
        return self.cache.tile(origin, TileId(0, index // TILE_WIDTH), TILE_WIDTH) is not None

    def view(self, origin: str, size: int) -> TreeView:
        """The origin's tree at ``size``, which the caller knows its tiles cover (read in its own query)."""
        return TreeView(self.pool, origin, size, self.cache, self.folded)

    async def tree(self, origin: str, *, conn: Connection | None = None) -> TreeView:
        """The origin's tree as its tiles cover it now; ``conn`` when the caller holds one already."""
        if conn is not None:
            return TreeView(self.pool, origin, await tiles.tiled_size(conn, origin), self.cache, self.folded)
        async with self.pool.acquire() as own:
            return TreeView(self.pool, origin, await tiles.tiled_size(own, origin), self.cache, self.folded)
