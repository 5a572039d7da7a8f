"""The hashes a proof must compute rather than read, remembered per origin and leaf range.

The tiles hold every complete subtree at a level that is a multiple of eight, and a
full tile holds its inner subtrees too. What no row holds is computed on every root
and proof: the subtrees inside a partial (right-edge) tile, up to 127 hashes each,
and the folds of a size that is not a power of two (the right siblings that end at
the tree's size). At 10k leaves that was about 76 SHA-256 per inclusion proof, half
of the handler's time, and every proof of a tree of that size computed the same ones.

The hash of leaves [start, end) of an origin's log never changes once those leaves
are committed: the log only grows and a tile only gains entries at its end. So a hash
kept under (origin, start, end) stays right for every later size of the tree, and
needs no forgetting when the tree grows: growth only asks new ranges (its new right
edge), and the old ones age out of the bounded memory. As with the
:class:`~credex.node.chain.merkle_book.TileCache`, only hashes computed from committed
tiles (read outside a transaction) are kept; a transaction's uncommitted tiles are
used for its own answer alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Mapping

from credex.crypto.tiles import TILE_HEIGHT, TileId, TileTree

FOLDED_HASHES = 16384  # a few MB: a tree's right edge asks a few hundred ranges at most, per origin


class FoldedHashes:
    """Computed hashes of leaf ranges, per origin, the least recently used forgotten beyond ``capacity``."""

    def __init__(self, capacity: int = FOLDED_HASHES) -> None:
        self._capacity = capacity
        self._held: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, origin: str, start: int, end: int) -> bytes | None:
        key = (origin, start, end)
        found = self._held.get(key)
        if found is not None:
            self._held.move_to_end(key)
        return found

    def keep(self, origin: str, start: int, end: int, hashed: bytes) -> None:
        if self._capacity <= 0:
            return
        self._held[(origin, start, end)] = hashed
        self._held.move_to_end((origin, start, end))
        while len(self._held) > self._capacity:
            self._held.popitem(last=False)


def _computed(start: int, end: int, size: int, full: Container[TileId]) -> bool:
    """Whether the hash of leaves [start, end) is computed from tiles, and shared by the proofs of ``size``.

    A fold is kept only when it ends at the tree's size (the right edge every proof of
    that tree shares); the folds of a root or proof at some other size are asked once,
    and keeping them would only push the shared ones out.
    """
    width = end - start
    if width & (width - 1) or start % width:
        return end == size  # a fold of the right edge
    height = width.bit_length() - 1
    within = height % TILE_HEIGHT
    if not within:
        return False  # one entry of a tile
    level = height // TILE_HEIGHT
    return TileId(level, (start >> (TILE_HEIGHT * level)) >> TILE_HEIGHT) not in full  # a partial tile's subtree


class FoldingTree(TileTree):
    """A :class:`TileTree` that asks ``folded`` before computing a range's hash, and keeps what it computes.

    ``keep`` is False when the tiles may be uncommitted (read inside a transaction):
    the kept hashes are still used, since committed leaves are a prefix of what the
    transaction sees, but nothing computed is kept. ``known`` subtrees (a leaf's path in
    its full tile, :func:`~credex.crypto.tiles.leaf_path`) are read, not computed: never kept.
    """

    def __init__(
        self,
        size: int,
        tiles: Mapping[TileId, bytes],
        inner: Mapping[TileId, bytes],
        origin: str,
        folded: FoldedHashes,
        *,
        keep: bool,
        known: Mapping[tuple[int, int], bytes] | None = None,
    ) -> None:
        super().__init__(size, tiles, inner, known)
        self._origin = origin
        self._folded = folded
        self._keep = keep
        # Tiles whose inner subtrees are read, not computed: those with inner hashes, and the known path's tile.
        self._full: set[TileId] = set(inner)
        if known:
            self._full |= {
                TileId(height // TILE_HEIGHT, (index << (height % TILE_HEIGHT)) >> TILE_HEIGHT)
                for height, index in known
            }

    def _hash(self, start: int, end: int) -> bytes:
        width = end - start
        if width == 1:
            return super()._hash(start, end)
        computed = _computed(start, end, self.size, self._full)
        # A subtree read from a tile is never kept, so the memory is not asked for it; a fold may have been
        # kept as another size's right edge (a consistency proof from that size asks it).
        if computed or width & (width - 1):
            found = self._folded.get(self._origin, start, end)
            if found is not None:
                return found
        hashed = super()._hash(start, end)
        if self._keep and computed:
            self._folded.keep(self._origin, start, end, hashed)
        return hashed
