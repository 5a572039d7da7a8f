"""The latest checkpoint a node serves is kept in memory, and never served staler than the store says.

A checkpoint this node signs is served at once, by proofs and by GetCheckpoint; one
another replica of the node writes reaches it by the store's news of checkpoints; a
read that raced a change is not kept; with the news not heard, the store is asked, and a
lost listening connection is replaced.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from credex.node.chain import Alarms, CheckpointKeeper, LogBook, check_inclusion
from credex.node.chain.latest import MISSING
from credex.node.runtime import Node
from credex.v1 import log_pb2, log_pb2_grpc

from .callers import peer_channel
from .conftest import TestFederation, eventually
from .test_checkpoints import take_in

QUIET_SIGNER = {"checkpoint": {"every_seconds": 3600, "every_events": 10**9}}  # only the test signs


async def listening(node: Node) -> bool:
    return node.logbook.latest.listening


def hear_news_only(node: Node) -> None:
    """Keep answers far longer than any test runs: a change then reaches the node by the store's news alone."""
    node.logbook.latest.kept_seconds = 3600.0


async def another_replica(federation: TestFederation, node: Node) -> tuple[asyncpg.Pool, CheckpointKeeper]:
    """A second replica of ``node``: the same database and key, its own pool and memory."""
    pool = await asyncpg.create_pool(federation.database_url(node.origin), min_size=1, max_size=2)
    keeper = CheckpointKeeper(node.origin, pool, node.trust, node.key, LogBook(pool), Alarms(pool, node.origin))
    return pool, keeper


async def test_a_checkpoint_this_node_signs_is_served_at_once_by_proofs_and_get_checkpoint(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000", **QUIET_SIGNER)
    await eventually(lambda: listening(node))
    first = await take_in(node, tmp_path, 5)
    assert (await node.keeper.sign_own()) is not None
    bundle = federation.bundle_now()
    async with peer_channel(federation, node, "320000") as channel:
        log = log_pb2_grpc.LogServiceStub(channel)

        async def served_and_kept() -> bool:
            # The store's news of the signing may come after the read and undo its keeping: read again then.
            served = await log.GetCheckpoint(log_pb2.GetCheckpointRequest(origin="310000"))
            assert served.size == first
            return node.logbook.latest.get("310000", bundle.version) is not MISSING  # now answered from memory

        await eventually(served_and_kept)

        more = await take_in(node, tmp_path, 3, first_row=100)
        signed = await node.keeper.sign_own()
        assert signed is not None and signed.size == first + more
        # No waiting: the node's own checkpoint is served by the very next calls.
        served = await log.GetCheckpoint(log_pb2.GetCheckpointRequest(origin="310000"))
        assert served.size == first + more
        proof = await log.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", seq=2))
        assert proof.tree_size == first + more
        assert check_inclusion(proof, bundle).checkpoint.size == first + more

        # An older size asked for explicitly still comes with the checkpoint of that size.
        older = await log.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", seq=2, tree_size=first))
        assert older.tree_size == first
        assert check_inclusion(older, bundle).checkpoint.size == first


async def test_a_checkpoint_another_replica_writes_reaches_this_node_by_the_stores_news(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000", **QUIET_SIGNER)
    hear_news_only(node)
    await eventually(lambda: listening(node))
    first = await take_in(node, tmp_path, 4)
    await node.keeper.sign_own()
    version = federation.bundle_now().version

    async def read_and_kept() -> bool:
        # The store's news of this very signing may come after a read and undo its keeping (a read
        # that raced a change is not kept): on a busy host, read again once the news is in.
        held = await node.keeper.latest("310000")
        assert held is not None and held.size == first
        return node.logbook.latest.get("310000", version) == held

    await eventually(read_and_kept)

    pool, replica = await another_replica(federation, node)
    try:
        more = await take_in(node, tmp_path, 2, first_row=100)
        signed = await replica.sign_own()
        assert signed is not None and signed.size == first + more

        async def newest() -> bool:
            latest = await node.keeper.latest("310000")
            return latest is not None and latest.size == first + more

        await eventually(newest)

        # The replica hears no news (nothing listens for it): it asks the store, and so is never stale.
        again = await take_in(node, tmp_path, 2, first_row=200)
        assert (await node.keeper.sign_own()) is not None
        assert not replica.logbook.latest.listening
        latest = await replica.latest("310000")
        assert latest is not None and latest.size == first + more + again
    finally:
        await pool.close()


async def test_a_read_that_raced_a_change_or_an_answer_past_its_time_is_not_used(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000", **QUIET_SIGNER)
    await eventually(lambda: listening(node))
    await take_in(node, tmp_path, 3)
    await node.keeper.sign_own()
    kept = node.logbook.latest
    version = federation.bundle_now().version
    held = await node.keeper.latest("310000")
    kept.forget("310000")

    before = kept.generation
    kept.forget("320000")  # news of any origin comes while a read is under way
    kept.keep("310000", version, held, before)
    assert kept.get("310000", version) is MISSING
    kept.keep("310000", version, held, kept.generation)
    assert kept.get("310000", version) == held
    assert kept.get("310000", version + 1) is MISSING  # a new trust bundle may change what is served
    kept.kept_seconds = -1.0  # an answer kept past its time (a listener dead unnoticed) is read again
    kept.keep("310000", version, held, kept.generation)
    assert kept.get("310000", version) is MISSING


async def test_listening_resumes_with_memory_started_afresh_when_its_connection_is_lost(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000", **QUIET_SIGNER)
    hear_news_only(node)
    await eventually(lambda: listening(node))
    first = await take_in(node, tmp_path, 4)
    await node.keeper.sign_own()
    assert (await node.keeper.latest("310000")).size == first  # type: ignore[union-attr]
    kept = node.logbook.latest
    before = kept.generation
    pool, replica = await another_replica(federation, node)
    try:
        async with pool.acquire() as conn:  # the listener's connection dies (a database restart, a proxy)
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %credex_checkpoints%'"
            )
        assert ended == 1

        async def noticed() -> bool:
            return kept.generation > before

        await eventually(noticed)
        await eventually(lambda: listening(node))  # listening again, memory started afresh
        more = await take_in(node, tmp_path, 2, first_row=100)
        await replica.sign_own()

        async def newest() -> bool:
            latest = await node.keeper.latest("310000")
            return latest is not None and latest.size == first + more

        await eventually(newest)
    finally:
        await pool.close()


async def test_proofs_asked_at_once_with_nothing_in_memory_are_all_answered_by_a_small_pool(
    federation: TestFederation, tmp_path: Path
) -> None:
    """A proof reads the latest checkpoint on the connection it holds: many at once cannot empty the pool.

    When each held its first connection while waiting for a second, as many calls as the pool
    had free connections waited for ever (until their deadlines), and every call behind them too.
    """
    node = await federation.start_node("310000", database={"pool_max": 4}, **QUIET_SIGNER)
    await eventually(lambda: listening(node))
    size = await take_in(node, tmp_path, 5)
    assert (await node.keeper.sign_own()) is not None
    node.logbook.latest.forget()  # as after a start, or news of another replica's checkpoint
    async with peer_channel(federation, node, "320000") as channel:
        log = log_pb2_grpc.LogServiceStub(channel)
        calls = [
            log.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", seq=1 + n % size), timeout=120)
            for n in range(16)  # the most one caller may have in progress
        ]
        proofs = await asyncio.gather(*calls)
    assert {proof.tree_size for proof in proofs} == {size}
