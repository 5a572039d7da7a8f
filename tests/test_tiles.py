"""The log as tlog-tiles in PostgreSQL: roots and proofs from a few stored tiles equal the reference tree.

The reference is crypto/merkle.py's in-memory RFC 6962 tree. Tiles grow in the
transaction that moves an origin's watermark, so they always equal the events
they cover; a store older than tiles gets them from the backlog job.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credex.crypto.merkle import MerkleTree, leaf_hash, verify_inclusion
from credex.crypto.tiles import (
    INNER_SIZE,
    MAX_INDEX,
    Growth,
    TileId,
    TileMismatch,
    TileRequest,
    TileTree,
    entries_path,
    entry_bundle,
    grow,
    index_path,
    parse_tile_path,
    right_edge,
    tile_path,
    tiles_needed,
)
from credex.node.chain import LogBook
from credex.node.embedded import EmbeddedPostgres
from credex.node.store import database, tiles

from .conftest import TestFederation, eventually

EDGE_SIZES = [0, 1, 2, 255, 256, 257, 511, 512, 513, 65535, 65536, 65537]


def leaves(n: int, salt: str = "") -> list[bytes]:
    return [leaf_hash(f"{salt}{i}".encode()) for i in range(n)]


def grown(all_leaves: list[bytes], cuts: list[int]) -> Growth:
    """Tiles (and full tiles' inner hashes) grown batch by batch, cut where ``cuts`` say, as the store grows them."""
    held = Growth({}, {})
    size = 0
    for end in [*sorted(set(cuts)), len(all_leaves)]:
        if end <= size:
            continue
        growth = grow(size, {t: held.tiles[t] for t in right_edge(size) if t in held.tiles}, all_leaves[size:end])
        held.tiles.update(growth.tiles)
        held.inner.update(growth.inner)
        size = end
    return held


def tiles_of(all_leaves: list[bytes], cuts: list[int]) -> dict[TileId, bytes]:
    return grown(all_leaves, cuts).tiles


# -- paths and encodings (C2SP tlog-tiles) --------------------------------------------------


def test_tile_paths_are_those_of_the_spec() -> None:
    assert index_path(1234067) == "x001/x234/067"
    assert index_path(0) == "000"
    assert index_path(999) == "999"
    assert index_path(1000) == "x001/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(0, 1234067, 8) == "tile/0/x001/x234/067.p/8"
    assert tile_path(3, 5, 255) == "tile/3/005.p/255"
    assert entries_path(1234067) == "tile/entries/x001/x234/067"
    assert entries_path(2, 1) == "tile/entries/002.p/1"
    assert parse_tile_path(tile_path(0, MAX_INDEX)) == TileRequest(0, MAX_INDEX, 256)


@pytest.mark.parametrize(
    ("path", "request_"),
    [
        ("tile/0/x001/x234/067", TileRequest(0, 1234067, 256)),
        ("tile/0/x001/x234/067.p/8", TileRequest(0, 1234067, 8)),
        ("tile/12/000", TileRequest(12, 0, 256)),
        ("tile/entries/x002/000.p/255", TileRequest(None, 2000, 255)),
    ],
)
def test_a_spec_path_parses_to_its_tile(path: str, request_: TileRequest) -> None:
    assert parse_tile_path(path) == request_
    if request_.level is None:
        assert entries_path(request_.index, request_.width) == path
    else:
        assert tile_path(request_.level, request_.index, request_.width) == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/67",  # groups have three digits
        "tile/0/x000/067",  # one encoding per index: no leading zero group
        "tile/0/001/067",  # all but the last group carry an x
        "tile/00/000",  # no leading zero in a level
        "tile/64/000",  # levels stop at 63
        "tile/0/000.p/256",  # a full tile has no width
        "tile/0/000.p/0",
        "tile/0/000.p/08",
        "tile/entries/000.p/",
        "tile/0/000/",
        "tile/-1/000",
        "checkpoint/../tile/0/000",
        "tile/0/x036/x028/x797/x018/x963/x968/000",  # past any seq a bigint holds
        "tile/0/" + "x999/" * 2000 + "999",  # a huge number is not even parsed
    ],
)
def test_a_path_the_spec_does_not_allow_names_no_tile(path: str) -> None:
    assert parse_tile_path(path) is None


def test_an_entry_bundle_is_uint16_length_prefixed_entries() -> None:
    assert entry_bundle([b"ab", b"", b"x" * 300]) == b"\x00\x02ab\x00\x00\x01\x2c" + b"x" * 300
    with pytest.raises(ValueError, match="uint16"):
        entry_bundle([b"x" * 65536])


def test_a_level_one_entry_is_the_root_of_a_full_level_zero_tile() -> None:
    all_leaves = leaves(256 * 3 + 5)
    held = tiles_of(all_leaves, [])
    reference = MerkleTree(all_leaves)
    assert held[TileId(0, 3)] == b"".join(all_leaves[768:])  # partial: 5 leaf hashes
    assert held[TileId(1, 0)] == b"".join(reference.subtree(8, i) for i in range(3))
    assert set(held) == {TileId(0, 0), TileId(0, 1), TileId(0, 2), TileId(0, 3), TileId(1, 0)}
    inner = grown(all_leaves, []).inner
    assert set(inner) == {TileId(0, 0), TileId(0, 1), TileId(0, 2)}  # only full tiles
    assert {len(hashes) for hashes in inner.values()} == {INNER_SIZE} == {8128}  # as the store's CHECK says
    assert inner[TileId(0, 1)][:32] == reference.subtree(1, 128)  # height 1 first
    assert inner[TileId(0, 1)][-32:] == reference.subtree(7, 3)  # height 7 last


# -- roots and proofs from tiles equal the reference tree -----------------------------------


def check_against_reference(size: int, held: Growth, reference: MerkleTree, probes: list[int]) -> None:
    """With the full tiles' inner hashes and without them (hashing the tile's entries instead), alike."""
    for tree in (TileTree(size, held.tiles, held.inner), TileTree(size, held.tiles)):
        assert tree.root() == reference.root(size)
        for probe in probes:
            if size:
                index = probe % size
                assert tree.inclusion_proof(index) == reference.inclusion_proof(index, size)
                old = probe % size + 1
                assert tree.consistency_proof(old) == reference.consistency_proof(old, size)
                assert tree.root(old) == reference.root(old)


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_roots_and_proofs_from_tiles_equal_the_reference_at_the_tile_edges(size: int) -> None:
    all_leaves = leaves(size)
    reference = MerkleTree(all_leaves)
    held = grown(all_leaves, [size // 3, size // 2, size - 1])
    assert held == grown(all_leaves, [])  # how the log grew does not change its tiles
    check_against_reference(size, held, reference, [0, 1, 254, 255, 256, 257, size // 2, size - 1, 65535])


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
    probes=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
)
def test_roots_and_proofs_from_tiles_equal_the_reference_on_random_sizes(
    size: int, cuts: list[int], probes: list[int]
) -> None:
    all_leaves = leaves(size, "r")
    reference = MerkleTree(all_leaves)
    check_against_reference(size, grown(all_leaves, cuts), reference, probes)


@pytest.mark.parametrize("size", [1, 255, 256, 257, 65536 + 1, 10**6])
def test_a_proof_reads_a_number_of_tiles_logarithmic_in_the_size(size: int) -> None:
    for index in (0, size // 2, size - 1):
        needed = tiles_needed(size, lambda tree, i=index: tree.inclusion_proof(i))  # type: ignore[misc]
        assert len(needed) <= 2 * (size.bit_length() // 8 + 2)


def test_growing_tiles_from_a_partial_tile_of_the_wrong_width_is_refused() -> None:
    held = tiles_of(leaves(300), [])
    held[TileId(0, 1)] = held[TileId(0, 1)][:32]
    with pytest.raises(TileMismatch, match="tile 0/1 holds 1 hashes"):
        grow(300, {t: held[t] for t in right_edge(300)}, leaves(1))


def test_a_tree_lacking_a_tile_says_so_instead_of_answering() -> None:
    held = tiles_of(leaves(600), [])
    del held[TileId(0, 1)]
    with pytest.raises(TileMismatch):
        TileTree(600, held).inclusion_proof(300)


# -- in the store ----------------------------------------------------------------------------


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    opened = await database.open_pool(
        postgres.uri(f"tiles_{uuid.uuid4().hex[:10]}"), create=True, min_size=1, max_size=4
    )
    yield opened
    await opened.close()


async def append_leaves(pool: asyncpg.Pool, origin: str, old: int, batch: list[bytes]) -> None:
    """Move the origin's watermark over ``batch`` as the ledger does, tiles in the same transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO origin_progress (origin, contiguous_seq, max_seq) VALUES ($1, $2, $2)"
            " ON CONFLICT (origin) DO UPDATE SET contiguous_seq = $2, max_seq = $2",
            origin,
            old + len(batch),
        )
        await tiles.cover(conn, origin, old, old + len(batch), batch)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([1, 255, 256, 257, 1000, 4097]), cuts=st.lists(st.integers(1, 4097), max_size=4))
async def test_the_stored_tiles_answer_as_the_reference_tree(pool: asyncpg.Pool, size: int, cuts: list[int]) -> None:
    origin = f"o{uuid.uuid4().hex[:8]}"
    all_leaves = leaves(size, origin)
    reference = MerkleTree(all_leaves)
    done = 0
    for end in [*sorted(c for c in set(cuts) if c < size), size]:
        await append_leaves(pool, origin, done, all_leaves[done:end])
        done = end
    tree = await LogBook(pool).tree(origin)
    assert tree.size == size
    assert await tree.root() == reference.root()
    for index in {0, size // 2, size - 1}:
        assert await tree.inclusion_proof(index) == reference.inclusion_proof(index)
        assert await tree.consistency_proof(index + 1) == reference.consistency_proof(index + 1)
        assert await tree.leaf(index) == all_leaves[index]


async def test_a_view_answers_as_the_tree_of_its_size_while_the_log_grows(pool: asyncpg.Pool) -> None:
    all_leaves = leaves(1000)
    await append_leaves(pool, "310000", 0, all_leaves[:300])
    view = await LogBook(pool).tree("310000")
    await append_leaves(pool, "310000", 300, all_leaves[300:])
    alone = MerkleTree(all_leaves[:300])
    assert view.size == 300
    assert await view.root() == alone.root()
    assert await view.inclusion_proof(17) == alone.inclusion_proof(17)
    assert await view.consistency_proof(100) == alone.consistency_proof(100)
    with pytest.raises(ValueError, match="holds 300 leaves"):
        await view.root(301)
    assert (await LogBook(pool).tree("310000")).size == 1000


async def test_a_book_that_keeps_the_tiles_it_read_answers_every_size_as_the_reference_tree(
    pool: asyncpg.Pool,
) -> None:
    all_leaves = leaves(70_000)
    book, small = LogBook(pool), LogBook(pool, cached_tiles=3)  # the second evicts all the time
    views = []
    done = 0
    for end in [1, 255, 256, 300, 65_536, 65_537, 70_000]:
        await append_leaves(pool, "310000", done, all_leaves[done:end])
        done = end
        views += [await book.tree("310000"), await small.tree("310000")]
        for view in views:  # views taken earlier are answered from tiles read wider since
            reference = MerkleTree(all_leaves[: view.size])
            assert await view.root() == reference.root()
            for index in {0, view.size // 2, view.size - 1}:
                assert await view.inclusion_proof(index) == reference.inclusion_proof(index)
                assert await view.consistency_proof(index + 1) == reference.consistency_proof(index + 1)


async def test_tiles_read_inside_a_transaction_that_rolls_back_are_not_kept(pool: asyncpg.Pool) -> None:
    book = LogBook(pool)
    honest, forked = leaves(300, "honest"), leaves(300, "forked")
    await append_leaves(pool, "310000", 0, honest[:100])
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await tiles.cover(conn, "310000", 100, 300, forked[100:])
        await conn.execute("UPDATE origin_progress SET contiguous_seq = 300 WHERE origin = '310000'")
        uncommitted = await book.tree("310000", conn=conn)
        assert await uncommitted.root(conn=conn) == MerkleTree(honest[:100] + forked[100:]).root()
        await transaction.rollback()
    await append_leaves(pool, "310000", 100, honest[100:])
    assert await (await book.tree("310000")).root() == MerkleTree(honest).root()


async def test_an_empty_log_has_the_empty_root(pool: asyncpg.Pool) -> None:
    tree = await LogBook(pool).tree("310000")
    assert tree.size == 0
    assert await tree.root() == MerkleTree().root()


async def read_leaf_path(pool: asyncpg.Pool, origin: str, seq: int) -> bytes | None:
    """What the statement that reads a leaf brings of its path inside its tile."""
    async with pool.acquire() as conn:
        path = await conn.fetchval(f"SELECT {tiles.leaf_path_sql('$1::text', '$2::bigint')}", origin, seq)
    return bytes(path) if path is not None else None


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.sampled_from([1, 255, 256, 257, 600, 65_537]), data=st.data())
async def test_a_proof_from_the_leaf_path_read_with_the_leaf_equals_the_reference_at_every_older_size(
    pool: asyncpg.Pool, size: int, data: st.DataObject
) -> None:
    origin = f"o{uuid.uuid4().hex[:8]}"
    all_leaves = leaves(size, origin)
    await append_leaves(pool, origin, 0, all_leaves)
    book = LogBook(pool)
    for index in {0, size // 2, size - 1, data.draw(st.integers(0, size - 1))}:
        path = await read_leaf_path(pool, origin, index + 1)
        assert (path is None) == (index // 256 == size // 256), "only a leaf of a full tile has a path"
        # A tree older than the store's tiles, in which the leaf's tile may still be partial.
        older = data.draw(st.integers(index + 1, size))
        reference = MerkleTree(all_leaves[:older])
        view = book.view(origin, size)
        assert await view.inclusion_proof(index, older, path=path) == reference.inclusion_proof(index)


async def test_a_proof_given_its_leaf_path_reads_no_tile_of_the_leaf(pool: asyncpg.Pool) -> None:
    all_leaves = leaves(70_000)
    await append_leaves(pool, "310000", 0, all_leaves)
    book = LogBook(pool)
    path = await read_leaf_path(pool, "310000", 1000 + 1)
    proof = await book.view("310000", 70_000).inclusion_proof(1000, path=path)
    assert proof == MerkleTree(all_leaves).inclusion_proof(1000)
    held, _ = book.cache.lookup("310000", 70_000, {TileId(0, 1000 // 256), TileId(1, 0), TileId(1, 1)})
    assert set(held) == {TileId(1, 0), TileId(1, 1)}, "only the level above was read, and kept"


async def test_the_leaf_path_is_wanted_only_while_the_cache_lacks_the_leaf_tile_full(pool: asyncpg.Pool) -> None:
    all_leaves = leaves(600)
    await append_leaves(pool, "310000", 0, all_leaves)
    book = LogBook(pool)
    assert not book.holds_leaf_tile("310000", 3) and not book.holds_leaf_tile("310000", 599)
    await book.view("310000", 600).inclusion_proof(3)  # no path: the tile is read, and kept
    await book.view("310000", 600).inclusion_proof(599)  # the partial tile at the right edge
    assert book.holds_leaf_tile("310000", 3) and book.holds_leaf_tile("310000", 255)
    assert not book.holds_leaf_tile("310000", 599), "a partial tile is not the full tile a path would spare"


async def test_a_leaf_path_of_the_wrong_length_is_not_used(pool: asyncpg.Pool) -> None:
    all_leaves = leaves(600)
    await append_leaves(pool, "310000", 0, all_leaves)
    proof = await LogBook(pool).view("310000", 600).inclusion_proof(3, path=bytes(31))
    assert proof == MerkleTree(all_leaves).inclusion_proof(3)


# -- on a node ---------------------------------------------------------------------------


async def stored_tiles_match_events(pool: asyncpg.Pool, origin: str) -> int:
    """Every stored tile equals the reference tree over the events up to the tiles' size; return that size."""
    async with pool.acquire() as conn:
        size = await tiles.tiled_size(conn, origin)
        rows = await conn.fetch(
            "SELECT leaf_hash FROM events WHERE origin = $1 AND seq <= $2 ORDER BY seq", origin, size
        )
        stored = await conn.fetch("SELECT level, idx, hashes, interior FROM log_tiles WHERE origin = $1", origin)
    held = {TileId(r["level"], r["idx"]): bytes(r["hashes"]) for r in stored}
    inner = {TileId(r["level"], r["idx"]): bytes(r["interior"]) for r in stored if r["interior"] is not None}
    assert len(rows) == size
    reference = MerkleTree(bytes(r["leaf_hash"]) for r in rows)
    assert Growth(held, inner) == grown([bytes(r["leaf_hash"]) for r in rows], [])
    assert TileTree(size, held).root() == reference.root()
    return size


async def test_a_node_tiles_its_own_log_and_its_peers_as_their_events_are_stored(
    federation: TestFederation, tmp_path: object
) -> None:
    from .callers import serve_sample

    node, _ = await serve_sample(federation, tmp_path, rows=300)  # type: ignore[arg-type]
    peer = await federation.start_node("320000")
    assert node.pool is not None and peer.pool is not None
    own = await stored_tiles_match_events(node.pool, "310000")
    assert own >= 300

    async def peer_has_all() -> bool:
        assert peer.pool is not None
        async with peer.pool.acquire() as conn:
            return await tiles.tiled_size(conn, "310000") == own

    await eventually(peer_has_all)
    assert await stored_tiles_match_events(peer.pool, "310000") == own
    mine = await (await node.logbook.tree("310000")).root(own)
    theirs = await (await peer.logbook.tree("310000")).root(own)
    assert mine == theirs


async def test_a_store_older_than_tiles_gets_them_from_the_backlog_job_in_batches(
    federation: TestFederation, tmp_path: object
) -> None:
    from .callers import serve_sample

    node, _ = await serve_sample(federation, tmp_path, rows=700)  # type: ignore[arg-type]
    assert node.pool is not None
    size = await stored_tiles_match_events(node.pool, "310000")
    root = await (await node.logbook.tree("310000")).root()
    async with node.pool.acquire() as conn:  # the store as it was before migration 0018
        await conn.execute("DELETE FROM log_tiles")
        await conn.execute("UPDATE origin_progress SET tiled_seq = 0")
    assert (await node.logbook.tree("310000")).size == 0
    assert await tiles.tile_backlog(node.pool, batch=256) == size
    assert await stored_tiles_match_events(node.pool, "310000") == size
    assert await (await node.logbook.tree("310000")).root() == root
    assert await tiles.tile_backlog(node.pool, batch=256) == 0


async def test_a_node_started_on_a_store_older_than_tiles_tiles_it_and_proves_from_the_tiles_without_alarm(
    federation: TestFederation, tmp_path: object
) -> None:
    from .callers import serve_sample

    node, _ = await serve_sample(federation, tmp_path, rows=300)  # type: ignore[arg-type]
    assert node.pool is not None
    size = await stored_tiles_match_events(node.pool, "310000")
    root = await (await node.logbook.tree("310000")).root()
    async with node.pool.acquire() as conn:  # the store as it was before migration 0018
        await conn.execute("DELETE FROM log_tiles")
        await conn.execute("UPDATE origin_progress SET tiled_seq = 0")
    await federation.stop_node("310000")
    node = await federation.start_node("310000")
    assert node.pool is not None
    pool = node.pool

    async def tiled() -> bool:
        async with pool.acquire() as conn:
            return await tiles.tiled_size(conn, "310000") == size

    await eventually(tiled)  # the supervised backlog job did it
    assert await stored_tiles_match_events(pool, "310000") == size
    tree = await node.logbook.tree("310000")
    assert await tree.root() == root
    async with pool.acquire() as conn:
        leaf = bytes(await conn.fetchval("SELECT leaf_hash FROM events WHERE origin = '310000' AND seq = 7"))
        assert await conn.fetchval("SELECT count(*) FROM alarms") == 0  # its own checkpoints still hold
    assert verify_inclusion(leaf, 6, size, await tree.inclusion_proof(6), root)
