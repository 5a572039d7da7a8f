"""Every origin's Merkle tree as tlog-tiles in the store (table ``log_tiles``).

The tiles of an origin cover its log from seq 1 up to ``origin_progress.tiled_seq``.
They grow in the very transaction that moves the origin's gap-free watermark
(the ledger's for this node's own log, :func:`~credex.node.store.events.advance_progress`
for intake), which holds the origin's ``origin_progress`` row locked: growths of
one origin are serialized and commit with the events they cover, so a crash
leaves both or neither. A growth reads only the partial tiles at the right edge
(one per level) and writes those that change; nothing is kept in memory.

A store that held events before tiles existed has ``tiled_seq`` behind the
watermark; the watermark's transactions then leave tiling to :func:`tile_backlog`,
which the node runs as a supervised job in bounded batches until the tiles catch
up, and from then on every growth of the watermark grows the tiles with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import asyncpg

from credex.crypto.merkle import HASH_SIZE
from credex.crypto.tiles import TILE_HEIGHT, TILE_WIDTH, TileId, TileMismatch, grow, inner_offset, right_edge
from credex.node.store.database import Connection

BACKLOG_BATCH = 50_000  # leaves tiled per transaction when catching up an old store
_IN_THREAD = 2048  # from this many leaves, hashing runs in a worker thread (hashlib releases the GIL)


def leaf_path_sql(origin: str, seq: str) -> str:
    """A scalar subquery: the hashes beside event ``seq``'s leaf inside its level 0 tile, NULL unless the tile is full.

    ``origin`` and ``seq`` are SQL expressions of the statement that reads the leaf. The
    answer is :func:`~credex.crypto.tiles.leaf_path_nodes`' hashes in order (8 × 32 bytes),
    sliced out of the full tile's row: the sibling leaf from its hashes, heights 1..7 from
    its inner hashes. The leaf's own statement brings them, so a proof of a random leaf in
    a large log costs no statement and no 16 KiB tile read of its own.
    """
    within = f"((({seq}) - 1) % {TILE_WIDTH})::int"
    slices = [f"substring(t.hashes FROM (({within}) # 1) * {HASH_SIZE} + 1 FOR {HASH_SIZE})"] + [
        f"substring(t.interior FROM ({inner_offset(height)} + ((({within}) >> {height}) # 1)) * {HASH_SIZE} + 1"
        f" FOR {HASH_SIZE})"
        for height in range(1, TILE_HEIGHT)
    ]
    return (
        f"(SELECT {' || '.join(slices)} FROM log_tiles t"
        f" WHERE t.origin = {origin} AND t.level = 0 AND t.idx = (({seq}) - 1) / {TILE_WIDTH})"
    )


async def read(conn: Connection, origin: str, ids: Iterable[TileId]) -> dict[TileId, bytes]:
    """The tiles asked for that the store holds, at the size the store's tiles cover (one query)."""
    return (await read_for_proofs(conn, origin, ids))[0]


async def read_for_proofs(
    conn: Connection, origin: str, ids: Iterable[TileId]
) -> tuple[dict[TileId, bytes], dict[TileId, bytes]]:
    """The tiles asked for, and the inner hashes of those that are full (one query)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}, {}
    rows = await conn.fetch(
        "SELECT t.level, t.idx, t.hashes, t.interior FROM log_tiles t"
        " JOIN unnest($2::smallint[], $3::bigint[]) AS w(level, idx) ON t.level = w.level AND t.idx = w.idx"
        " WHERE t.origin = $1",
        origin,
        [t.level for t in wanted],
        [t.index for t in wanted],
    )
    hashes = {TileId(row["level"], row["idx"]): bytes(row["hashes"]) for row in rows}
    inner = {TileId(row["level"], row["idx"]): bytes(row["interior"]) for row in rows if row["interior"] is not None}
    return hashes, inner


async def tiled_size(conn: Connection, origin: str) -> int:
    """How many leaves of ``origin``'s log the tiles cover."""
    return int(await conn.fetchval("SELECT tiled_seq FROM origin_progress WHERE origin = $1", origin) or 0)


async def cover(
    conn: Connection,
    origin: str,
    old: int,
    new: int,
    leaves: Sequence[bytes] | None = None,
    *,
    tiled: int | None = None,
) -> None:
    """Grow ``origin``'s tiles from ``old`` to ``new`` leaves, in the transaction that moved its watermark so.

    The caller holds the origin's ``origin_progress`` row locked. ``leaves`` are the leaf
    hashes of seqs old+1..new when the caller has them, else they are read from the
    events; ``tiled``, the row's ``tiled_seq`` when the caller read it while locking the
    row, else it is read here. Tiles still behind ``old`` (a store older than tiles) are
    left to :func:`tile_backlog`.
    """
    if new <= old:
        return
    if tiled is None:
        tiled = await tiled_size(conn, origin)
    if tiled != old:
        if tiled > old:
            raise TileMismatch(f"{origin}: tiles cover {tiled} leaves, past the watermark {old}")
        return  # the backlog job tiles up to the watermark first
    if leaves is None:
        leaves = await _leaf_hashes(conn, origin, old, new)
    if len(leaves) != new - old:
        raise TileMismatch(f"{origin}: {len(leaves)} leaf hashes for seqs {old + 1}..{new}")
    await _extend(conn, origin, old, leaves)


async def _leaf_hashes(conn: Connection, origin: str, old: int, new: int) -> list[bytes]:
    rows = await conn.fetch(
        "SELECT seq, leaf_hash FROM events WHERE origin = $1 AND seq > $2 AND seq <= $3 ORDER BY seq", origin, old, new
    )
    if len(rows) != new - old:
        raise TileMismatch(f"{origin}: the store lacks events below its watermark {new}")
    return [bytes(row["leaf_hash"]) for row in rows]


async def _extend(conn: Connection, origin: str, old: int, leaves: Sequence[bytes]) -> None:
    edge = await read(conn, origin, right_edge(old))
    if len(leaves) >= _IN_THREAD:
        growth = await asyncio.to_thread(grow, old, edge, leaves)
    else:
        growth = grow(old, edge, leaves)
    ids = sorted(growth.tiles)
    await conn.execute(
        "INSERT INTO log_tiles (origin, level, idx, hashes, interior)"
        " SELECT $1, level, idx, hashes, interior"
        " FROM unnest($2::smallint[], $3::bigint[], $4::bytea[], $5::bytea[]) AS t(level, idx, hashes, interior)"
        " ON CONFLICT (origin, level, idx) DO UPDATE SET hashes = EXCLUDED.hashes, interior = EXCLUDED.interior",
        origin,
        [t.level for t in ids],
        [t.index for t in ids],
        [growth.tiles[t] for t in ids],
        [growth.inner.get(t) for t in ids],
    )
    await conn.execute("UPDATE origin_progress SET tiled_seq = $2 WHERE origin = $1", origin, old + len(leaves))


async def tile_backlog(pool: asyncpg.Pool, batch: int = BACKLOG_BATCH) -> int:
    """Tile what every origin's watermark covers and its tiles do not yet; return how many leaves.

    Each batch is one transaction holding the origin's progress row, so it never races
    the watermark's own growths, and a crash loses at most the batch under way.
    """
    tiled = 0
    async with pool.acquire() as conn:
        behind = [
            r["origin"] for r in await conn.fetch("SELECT origin FROM origin_progress WHERE tiled_seq < contiguous_seq")
        ]
    for origin in behind:
        while True:
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT tiled_seq, contiguous_seq FROM origin_progress WHERE origin = $1 FOR UPDATE", origin
                )
                assert row is not None
                old, upto = int(row["tiled_seq"]), min(int(row["contiguous_seq"]), int(row["tiled_seq"]) + batch)
                if old >= upto:
                    break
                await _extend(conn, origin, old, await _leaf_hashes(conn, origin, old, upto))
                tiled += upto - old
    return tiled


async def entries(conn: Connection, origin: str, index: int, width: int) -> list[bytes] | None:
    """The stored envelopes of level 0 tile ``index``'s first ``width`` leaves, or None beyond the tiles."""
    first = index * 256
    if first + width > await tiled_size(conn, origin):
        return None
    rows = await conn.fetch(
        "SELECT envelope FROM events WHERE origin = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        origin,
        first,
        first + width,
    )
    if len(rows) != width:
        raise TileMismatch(f"{origin}: the store lacks events its tiles cover")
    return [bytes(row["envelope"]) for row in rows]
