"""An RFC 6962 tree cut into C2SP tlog-tiles, and roots and proofs from a handful of tiles.

A tile at level L, index N, holds up to 256 consecutive hashes of level 8·L of
the tree (the roots of complete subtrees of 256**L leaves), those of positions
[N·256, N·256 + W): level 0 tiles hold leaf hashes, a level L+1 entry is the
root of a full level L tile. A tile with fewer than 256 hashes (the right edge)
is partial; the hashes a tile holds never change, it only grows until full, so
a partial tile is a prefix of the tile it becomes. The hash of any complete
aligned subtree is one tile entry, or the root of at most 128 consecutive
entries of one tile, so a root or a proof costs O(log n) tiles, whatever the
size of the log.

A full tile also has inner hashes (its subtrees of heights 1..7), which the
node stores beside it so that a proof reads them rather than hashing; they are
not part of the spec and never served.

Paths follow the spec: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``,
N written in 3-digit groups, all but the last prefixed with ``x``
(1234067 is ``x001/x234/067``). An entry bundle is the entries of one level 0
tile, each as a big-endian uint16 length and the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from credex.crypto.merkle import HASH_SIZE, SubtreeHashes, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
FULL_TILE = TILE_WIDTH * HASH_SIZE
MAX_LEVEL = 63  # the spec's bound; 256**8 already exceeds any seq a bigint holds
MAX_ENTRY = 0xFFFF  # an entry bundle's length prefix is a uint16

T = TypeVar("T")


class TileMismatch(ValueError):
    """The tiles held do not fit the size they are said to cover: the store is broken."""


class TileId(NamedTuple):
    """A tile's place: a tuple, so that hashing and comparing it (a proof does it a few dozen times) run in C."""

    level: int
    index: int  # type: ignore[assignment]  # the spec's word; shadows tuple.index, which nothing here calls


def index_path(index: int) -> str:
    """``N`` of a tile path: 3-digit groups, all but the last prefixed with ``x``."""
    if index < 0:
        raise ValueError(f"a tile index is not negative, got {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"a tile holds 1 to {TILE_WIDTH} entries, not {width}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"a tile level is 0 to {MAX_LEVEL}, not {level}")
    return f"tile/{level}/{index_path(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    return f"tile/entries/{index_path(index)}{_suffix(width)}"


@dataclass(frozen=True, slots=True)
class TileRequest:
    """A parsed tile path: ``level`` is None for an entry bundle."""

    level: int | None
    index: int
    width: int


MAX_INDEX = (1 << 63) // TILE_WIDTH - 1  # a seq is a bigint: no tile lies beyond this one
_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def parse_tile_path(path: str) -> TileRequest | None:
    """The tile a path names, or None when it is not a path the spec allows (no leading zeros, width < 256)."""
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    kind, groups, width_text = match.groups()
    level = None if kind == "entries" else int(kind)
    parts = groups.split("/")
    if len(parts) > 1 and parts[0] == "x000":  # one encoding per index: no leading zero groups
        return None
    index = int("".join(p.removeprefix("x") for p in parts))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if (width_text is not None and width >= TILE_WIDTH) or (level is not None and level > MAX_LEVEL):
        return None
    if index > MAX_INDEX:
        return None
    return TileRequest(level, index, width)


def tile_width(size: int, level: int, index: int) -> int:
    """How many entries tile (level, index) holds in a tree of ``size`` leaves; 0 when it does not exist yet."""
    held = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, held - index * TILE_WIDTH))


def _levels(entries: bytes) -> list[list[bytes]]:
    """Every level of the complete subtree over a power-of-two run of hashes, from the run up to its root."""
    level = [entries[i : i + HASH_SIZE] for i in range(0, len(entries), HASH_SIZE)]
    if not level or len(level) & (len(level) - 1):
        raise ValueError(f"a complete subtree has a power-of-two number of hashes, not {len(level)}")
    levels = [level]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def subtree_hash(entries: bytes) -> bytes:
    """The root over a power-of-two run of hashes (32 bytes each)."""
    return _levels(entries)[-1][0]


def inner_offset(height: int) -> int:
    """Where the hashes of ``height`` (1..7) start in a full tile's inner hashes, in hashes."""
    return TILE_WIDTH - 2 * (TILE_WIDTH >> height)


INNER_SIZE = inner_offset(TILE_HEIGHT) * HASH_SIZE  # 254 hashes: 128 of height 1, 64 of height 2, ... 2 of 7


@dataclass(frozen=True, slots=True)
class Growth:
    """What appending leaves changes: each tile's whole content, and the inner hashes of tiles now full.

    A full tile's inner hashes (the subtrees of heights 1..7 inside it) are not part
    of the spec's tiles; the store keeps them beside the tile so that a proof reads
    hashes instead of recomputing up to 254 of them per level.
    """

    tiles: dict[TileId, bytes]
    inner: dict[TileId, bytes]


def right_edge(size: int) -> list[TileId]:
    """The partial tiles of a tree of ``size`` leaves: what growing it reads."""
    edge = []
    level = 0
    while held := size >> (TILE_HEIGHT * level):
        if held % TILE_WIDTH:
            edge.append(TileId(level, held // TILE_WIDTH))
        level += 1
    return edge


def grow(size: int, edge: Mapping[TileId, bytes], leaves: Sequence[bytes]) -> Growth:
    """The tiles that change when ``leaves`` (leaf hashes) are appended to a tree of ``size``.

    ``edge`` holds the tree's partial tiles (:func:`right_edge`); the answer maps each
    tile that changes to its whole content at the new size. Each full tile's root
    becomes the next entry of the level above.
    """
    for leaf in leaves:
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash has 32 bytes")
    changed: dict[TileId, bytes] = {}
    inner: dict[TileId, bytes] = {}
    entries = b"".join(leaves)
    level = 0
    while entries:
        held = size >> (TILE_HEIGHT * level)
        first = held // TILE_WIDTH
        partial = edge.get(TileId(level, first), b"") if held % TILE_WIDTH else b""
        if len(partial) != (held % TILE_WIDTH) * HASH_SIZE:
            raise TileMismatch(
                f"tile {level}/{first} holds {len(partial) // HASH_SIZE} hashes; a tree of {size} leaves"
                f" gives it {held % TILE_WIDTH}"
            )
        run = partial + entries
        above = []
        for offset in range(0, len(run), FULL_TILE):
            content = run[offset : offset + FULL_TILE]
            tile = TileId(level, first + offset // FULL_TILE)
            changed[tile] = content
            if len(content) == FULL_TILE:
                levels = _levels(content)
                inner[tile] = b"".join(b"".join(hashes) for hashes in levels[1:TILE_HEIGHT])
                above.append(levels[TILE_HEIGHT][0])
        entries = b"".join(above)
        level += 1
    return Growth(changed, inner)


def _locate(height: int, index: int) -> tuple[TileId, int, int]:
    """Where complete subtree (height, index) lies: its tile, first entry and entry count there."""
    level, within = divmod(height, TILE_HEIGHT)
    first = index << within
    return TileId(level, first // TILE_WIDTH), first % TILE_WIDTH, 1 << within


def leaf_path_nodes(index: int) -> list[tuple[int, int]]:
    """The subtrees (height, index) beside leaf ``index`` inside its level 0 tile: heights 0..7, lowest first.

    When that tile is full in a tree, an inclusion proof of the leaf holds exactly these
    hashes first, whatever the tree's size; the store reads them with the leaf
    (:func:`credex.node.store.tiles.leaf_path_sql`), so a proof of a leaf in a large log needs no read of its
    16 KiB tile, which a bounded tile cache would rarely hold.
    """
    return [(height, (index >> height) ^ 1) for height in range(TILE_HEIGHT)]


def leaf_path(index: int, size: int, path: bytes | None) -> dict[tuple[int, int], bytes]:
    """The nodes of :func:`leaf_path_nodes` from ``path`` (their hashes in that order), if they hold in ``size``.

    They hold when the leaf's tile is full in a tree of ``size``: a full tile never changes.
    Otherwise (or without a path) nothing is given and the proof reads the tile.
    """
    if path is None or len(path) != TILE_HEIGHT * HASH_SIZE or tile_width(size, 0, index // TILE_WIDTH) < TILE_WIDTH:
        return {}
    return {node: path[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i, node in enumerate(leaf_path_nodes(index))}


class TileTree(SubtreeHashes):
    """A tree of ``size`` leaves answered from the tiles given (TileId → hashes), and full tiles' inner hashes.

    ``known`` gives subtree hashes (height, index) read some other way (:func:`leaf_path`).
    """

    def __init__(
        self,
        size: int,
        tiles: Mapping[TileId, bytes],
        inner: Mapping[TileId, bytes] | None = None,
        known: Mapping[tuple[int, int], bytes] | None = None,
    ) -> None:
        self._size = size
        self._tiles = tiles
        self._inner = inner or {}
        self._known: dict[tuple[int, int], bytes] = dict(known or {})

    @property
    def size(self) -> int:
        return self._size

    def _node(self, level: int, index: int) -> bytes:
        known = self._known.get((level, index))
        if known is not None:
            return known
        tile, first, count = _locate(level, index)
        within = level % TILE_HEIGHT
        inner = self._inner.get(tile)
        if within and inner is not None:
            at = (inner_offset(within) + (first >> within)) * HASH_SIZE
            return inner[at : at + HASH_SIZE]
        content = self._tiles.get(tile)
        if content is None or len(content) < (first + count) * HASH_SIZE:
            raise TileMismatch(f"tile {tile.level}/{tile.index} lacks the hashes of subtree {level}/{index}")
        run = content[first * HASH_SIZE : (first + count) * HASH_SIZE]
        answer = run if count == 1 else subtree_hash(run)
        self._known[(level, index)] = answer
        return answer


class _Plan(SubtreeHashes):
    """Runs a question with placeholder hashes to learn which tiles its answer reads, beyond the ``known`` subtrees."""

    def __init__(self, size: int, known: Container[tuple[int, int]] = ()) -> None:
        self._size = size
        self._given = known
        self.tiles: set[TileId] = set()

    @property
    def size(self) -> int:
        return self._size

    def _node(self, level: int, index: int) -> bytes:
        if (level, index) not in self._given:
            self.tiles.add(_locate(level, index)[0])
        return bytes(HASH_SIZE)


def tiles_needed(
    size: int, question: Callable[[SubtreeHashes], object], known: Container[tuple[int, int]] = ()
) -> set[TileId]:
    """The tiles ``question`` (a root or a proof of the tree of ``size``) reads beyond ``known``: O(log size)."""
    plan = _Plan(size, known)
    question(plan)
    return plan.tiles


def entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries as the spec bundles them: each a big-endian uint16 length, then its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a bundle's uint16 length")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)
