"""The Merkle tree of every origin's log this node holds, kept in memory and grown from the store.

A tree covers an origin's log from seq 1 up to its gap-free watermark
(origin_progress.contiguous_seq): the store is append-only for events, so a tree
only ever grows, by the leaf hashes stored beside the events. Trees are built
on first use and extended on every later use; several replicas of a node each
keep their own, all equal because they are built from the same rows.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from credex.crypto.merkle import MerkleTree

_CHUNK = 50000


class LogBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._trees: dict[str, MerkleTree] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def tree(self, origin: str) -> MerkleTree:
        """The origin's tree, up to date with what the store holds without a gap."""
        async with self._locks[origin]:
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
                    for row in rows:
                        if row["seq"] != tree.size + 1:
                            raise RuntimeError(f"{origin}: the store lacks seq {tree.size + 1} below its watermark")
                        tree.append(bytes(row["leaf_hash"]))
            return tree
