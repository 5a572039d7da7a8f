"""The right edge's hashes, computed once per leaf range and remembered: answers stay the reference tree's.

A LogBook remembers the hashes it had to compute (partial tiles' subtrees, the folds of a
size that is no power of two) under (origin, start, end). Those never change once the
leaves are committed, so the remembered hashes must keep every view right, old and new,
however the log grows, at any capacity, and never remember an uncommitted tile's hashes.
"""

from __future__ import annotations

import random
import uuid

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credex.crypto.merkle import MerkleTree
from credex.node.chain import LogBook, TreeView
from credex.node.chain.folded import FoldedHashes
from credex.node.store import Connection, tiles

from .test_tiles import append_leaves, leaves, pool

__all__ = ["pool"]  # the store fixture, shared with the tiles' tests


async def answers_as_reference(view: TreeView, all_leaves: list[bytes], rng: random.Random) -> None:
    reference = MerkleTree(all_leaves[: view.size])
    assert await view.root() == reference.root()
    for index in {0, view.size - 1, *(rng.randrange(view.size) for _ in range(6))}:
        assert await view.inclusion_proof(index) == reference.inclusion_proof(index)
        assert await view.consistency_proof(index + 1) == reference.consistency_proof(index + 1)
    old = rng.randrange(1, view.size + 1)
    assert await view.root(old) == reference.root(old)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(growth=st.lists(st.integers(1, 900), min_size=1, max_size=5), seed=st.integers(0, 2**16))
async def test_remembered_hashes_answer_every_size_as_the_reference_tree_while_the_log_grows(
    pool: asyncpg.Pool, growth: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    origin = f"o{uuid.uuid4().hex[:8]}"
    all_leaves = leaves(sum(growth), origin)
    remembering, forgetful, tiny = LogBook(pool), LogBook(pool, folded_hashes=0), LogBook(pool, folded_hashes=5)
    views: list[TreeView] = []
    done = 0
    for step in growth:
        await append_leaves(pool, origin, done, all_leaves[done : done + step])
        done += step
        views += [await book.tree(origin) for book in (remembering, forgetful, tiny)]
        for view in views:  # views of earlier sizes too, asked after the log grew under them
            await answers_as_reference(view, all_leaves, rng)
    assert len(forgetful.folded) == 0
    assert len(tiny.folded) <= 5
    if any(view.size & (view.size - 1) for view in views):  # a size with a right edge to fold
        assert len(tiny.folded) > 0
        assert len(remembering.folded) > 0  # the right edge's hashes were remembered, and used above


async def test_two_origins_with_the_same_ranges_do_not_share_hashes(pool: asyncpg.Pool) -> None:
    book = LogBook(pool)
    first, second = leaves(700, "first"), leaves(700, "second")
    await append_leaves(pool, "310000", 0, first)
    await append_leaves(pool, "320000", 0, second)
    for origin, own in (("310000", first), ("320000", second), ("310000", first)):
        view = await book.tree(origin)
        reference = MerkleTree(own)
        assert await view.root() == reference.root()
        assert await view.inclusion_proof(3) == reference.inclusion_proof(3)


async def test_hashes_computed_from_uncommitted_tiles_are_not_remembered(pool: asyncpg.Pool) -> None:
    book = LogBook(pool)
    honest, forked = leaves(700, "honest"), leaves(700, "forked")
    await append_leaves(pool, "310000", 0, honest[:100])
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await append_leaves_on(conn, forked[100:])
        uncommitted = await book.tree("310000", conn=conn)
        forked_tree = MerkleTree(honest[:100] + forked[100:])
        assert await uncommitted.root(conn=conn) == forked_tree.root()
        assert await uncommitted.inclusion_proof(650, conn=conn) == forked_tree.inclusion_proof(650)
        await transaction.rollback()
    await append_leaves(pool, "310000", 100, honest[100:])
    view = await book.tree("310000")
    assert await view.root() == MerkleTree(honest).root()
    assert await view.inclusion_proof(650) == MerkleTree(honest).inclusion_proof(650)


async def append_leaves_on(conn: Connection, batch: list[bytes]) -> None:
    """Grow 310000's tiles from 100 in the caller's transaction, as a ledger mid-commit has."""
    await tiles.cover(conn, "310000", 100, 100 + len(batch), batch)
    await conn.execute("UPDATE origin_progress SET contiguous_seq = $1 WHERE origin = '310000'", 100 + len(batch))


def test_the_memory_keeps_the_most_recently_used_ranges_within_its_capacity() -> None:
    folded = FoldedHashes(2)
    folded.keep("310000", 0, 3, b"a" * 32)
    folded.keep("310000", 0, 5, b"b" * 32)
    assert folded.get("310000", 0, 3) == b"a" * 32  # now the most recently used
    folded.keep("320000", 0, 3, b"c" * 32)
    assert len(folded) == 2
    assert folded.get("310000", 0, 5) is None
    assert folded.get("310000", 0, 3) == b"a" * 32
    assert folded.get("320000", 0, 3) == b"c" * 32
    nothing = FoldedHashes(0)
    nothing.keep("310000", 0, 3, b"a" * 32)
    assert len(nothing) == 0
