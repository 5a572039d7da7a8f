"""A node witnessing a peer's log (C2SP tlog-witness): it cosigns a checkpoint only if it extends the last one it
cosigned, keeps that memory in its database across restarts, never lets two racing requests both advance it, and on
the federation every checkpoint of a witnessed log ends up cosigned by its witnesses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from pathlib import Path

import grpc
import pytest

from credex.adapters.samples import synth
from credex.crypto.checkpoint import MAX_NOTE, Checkpoint, log_name
from credex.crypto.cosignature import cosign, cosignatures, note_body, witness_name
from credex.crypto.keys import SigningKey
from credex.node.chain import check_inclusion
from credex.node.chain.checkpoints import CheckpointKeeper
from credex.node.demo.federation import WITNESS_KEY
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.node.witness import Witness, WitnessRefused
from credex.v1 import log_pb2, log_pb2_grpc, witness_pb2, witness_pb2_grpc

from .callers import NATIONAL, client_channel, peer_channel
from .conftest import TestFederation, eventually
from .test_expiry import penalty
from .witness_support import ForgedLog, set_witnesses

LOG, WITNESS = "310000", "320000"


async def add(
    node: Node, federation: TestFederation, old_size: int, proof: list[bytes], note: bytes, origin: str = LOG
) -> witness_pb2.AddCheckpointResponse:
    """AddCheckpoint to ``node`` as the log's own node would send it."""
    async with peer_channel(federation, node, LOG) as channel:
        return await witness_pb2_grpc.WitnessServiceStub(channel).AddCheckpoint(
            witness_pb2.AddCheckpointRequest(origin=origin, old_size=old_size, consistency=proof, checkpoint=note)
        )


async def refused(node: Node, federation: TestFederation, old_size: int, proof: list[bytes], note: bytes) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(node, federation, old_size, proof, note)
    return f"{caught.value.code().name}: {caught.value.details()}"


async def witnessed_size(node: Node, log: str = LOG) -> int | None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        size = await conn.fetchval("SELECT size FROM witness_state WHERE log_origin = $1", log)
    return None if size is None else int(size)


def cosigned_by(federation: TestFederation, note: str, witness: str) -> bool:
    key = federation.bundle_now().witness_key(witness)
    assert key is not None
    return witness_name(witness) in cosignatures(note, {witness_name(witness): key})


async def test_a_witness_cosigns_only_checkpoints_that_extend_the_last_one_it_cosigned(
    federation: TestFederation,
) -> None:
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    witness = await federation.start_node(WITNESS)
    honest = ForgedLog(federation, LOG)

    first = await add(witness, federation, 0, [], honest.checkpoint(4))
    assert not first.conflict and first.witness_size == 4
    assert cosigned_by(federation, honest.checkpoint(4).decode() + "".join(first.cosignatures), WITNESS)

    # A log that does not know what the witness holds asks from 0 and is told the size to prove from.
    stale = await add(witness, federation, 0, [], honest.checkpoint(6))
    assert (stale.conflict, stale.witness_size, list(stale.cosignatures)) == (True, 4, [])
    grown = await add(witness, federation, 4, honest.proof(4, 6), honest.checkpoint(6))
    assert not grown.conflict and grown.witness_size == 6

    # A split view: another history, validly signed by the origin's key, with a proof of its own.
    split = ForgedLog(federation, LOG, tag="split")
    assert "FAILED_PRECONDITION" in await refused(witness, federation, 6, split.proof(6, 9), split.checkpoint(9))
    assert "another root" in await refused(witness, federation, 6, [], split.checkpoint(6))
    # A proof that belongs to the honest log does not carry a forged root either.
    assert "does not verify" in await refused(witness, federation, 6, honest.proof(6, 9), split.checkpoint(9))

    # A rollback: a smaller checkpoint is never cosigned, whichever old size is claimed.
    assert "never shrinks" in await refused(witness, federation, 6, [], honest.checkpoint(5))
    behind = await add(witness, federation, 5, [], honest.checkpoint(5))
    assert (behind.conflict, behind.witness_size) == (True, 6)

    assert await witnessed_size(witness) == 6  # nothing refused moved it
    async with client_channel(federation, witness) as channel:  # a monitor reads what the witness cosigned
        held = await witness_pb2_grpc.WitnessServiceStub(channel).GetWitnessedCheckpoint(
            log_pb2.GetCheckpointRequest(origin=LOG)
        )
    assert (held.size, held.root) == (6, honest.tree.root(6))
    assert held.note.startswith(honest.checkpoint(6).decode()) and cosigned_by(federation, held.note, WITNESS)
    assert (await add(witness, federation, 6, honest.proof(6, 9), honest.checkpoint(9))).witness_size == 9


async def test_a_witness_refuses_what_is_not_the_log_s_nor_its_business(federation: TestFederation) -> None:
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    witness = await federation.start_node(WITNESS)
    honest = ForgedLog(federation, LOG)

    stranger = SigningKey.generate()
    assert "PERMISSION_DENIED" in await refused(witness, federation, 0, [], honest.checkpoint(3, key=stranger))
    not_witnessed = ForgedLog(federation, "330000")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(witness, federation, 0, [], not_witnessed.checkpoint(3), origin="330000")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "INVALID_ARGUMENT" in await refused(witness, federation, 0, [bytes(32)] * 64, honest.checkpoint(3))
    assert "32 bytes" in await refused(witness, federation, 2, [bytes(31)], honest.checkpoint(3))
    assert "INVALID_ARGUMENT" in await refused(witness, federation, 0, [], b"\xff\xfe not utf-8")
    assert "from size 0" in await refused(witness, federation, 0, [bytes(32)], honest.checkpoint(3))
    async with client_channel(federation, witness) as channel:  # the government office: not a peer
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await witness_pb2_grpc.WitnessServiceStub(channel).AddCheckpoint(
                witness_pb2.AddCheckpointRequest(origin=LOG, checkpoint=honest.checkpoint(3))
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert witness.pool is not None
    other_key = Witness(WITNESS, witness.pool, federation.bundle_now, SigningKey.generate())
    with pytest.raises(WitnessRefused, match="not the one trust bundle version 2 lists"):
        await other_key.add_checkpoint(LOG, 0, [], honest.checkpoint(3))
    assert await witnessed_size(witness) is None  # nothing was cosigned
    async with client_channel(federation, witness) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await witness_pb2_grpc.WitnessServiceStub(channel).GetWitnessedCheckpoint(
                log_pb2.GetCheckpointRequest(origin=LOG)
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    assert witness.pool is not None
    async with witness.pool.acquire() as conn:
        rows = await conn.fetch("SELECT status FROM audit_log WHERE method = 'AddCheckpoint'")
    # Every refusal is audited (a caller's repeats of one status within a second are summed up later).
    assert {r["status"] for r in rows} == {"PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"}


async def test_a_witness_keeps_what_it_cosigned_across_a_restart(federation: TestFederation) -> None:
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    honest = ForgedLog(federation, LOG)
    witness = await federation.start_node(WITNESS)
    await add(witness, federation, 0, [], honest.checkpoint(7))
    await federation.stop_node(WITNESS)

    witness = await federation.start_node(WITNESS)
    again = await add(witness, federation, 0, [], honest.checkpoint(7))
    assert (again.conflict, again.witness_size) == (True, 7)
    assert "never shrinks" in await refused(witness, federation, 7, [], honest.checkpoint(3))
    assert (await add(witness, federation, 7, honest.proof(7, 12), honest.checkpoint(12))).witness_size == 12


async def test_of_requests_racing_from_one_state_exactly_one_advances_it(federation: TestFederation) -> None:
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    node = await federation.start_node(WITNESS)
    honest = ForgedLog(federation, LOG)
    assert node.pool is not None
    key_file = node.config.keys.witness_key
    assert key_file is not None
    witness = Witness(WITNESS, node.pool, federation.bundle_now, SigningKey.load(key_file))
    await witness.add_checkpoint(LOG, 0, [], honest.checkpoint(4))

    sizes = list(range(5, 25))
    outcomes = await asyncio.gather(
        *(witness.add_checkpoint(LOG, 4, honest.proof(4, size), honest.checkpoint(size)) for size in sizes)
    )
    winners = [size for size, outcome in zip(sizes, outcomes, strict=True) if not outcome.conflict]
    assert len(winners) == 1, winners
    assert await witnessed_size(node) == winners[0]
    assert all(o.witness_size == winners[0] for o in outcomes)  # the losers are told where the winner left it


async def test_on_the_federation_each_checkpoint_is_cosigned_by_the_configured_witnesses(
    federation: TestFederation, tmp_path: Path
) -> None:
    set_witnesses(federation, LOG, ["320000", "330000"], quorum=2)
    nodes = {o: await federation.start_node(o) for o in federation.origins}
    origin = nodes[LOG]

    async def latest_cosigned(node: Node, at_least: int) -> log_pb2.SignedCheckpoint | None:
        async with peer_channel(federation, node, "330000" if node is origin else LOG) as channel:
            try:
                stub = log_pb2_grpc.LogServiceStub(channel)
                held = await stub.GetCheckpoint(log_pb2.GetCheckpointRequest(origin=LOG))
            except grpc.aio.AioRpcError:
                return None
        if held.size < at_least or not all(cosigned_by(federation, held.note, w) for w in ("320000", "330000")):
            return None
        return held

    for batch, rows in enumerate((40, 25)):
        path = tmp_path / f"rows{batch}.csv"
        synth.write(path, synth.SynthSpec(region=LOG, rows=rows, bad_share=0.0, first_row=1000 * batch))
        await origin.ingest([path], NATIONAL)
        size = (await origin.status()).own_events
        if batch:  # once one is cosigned, what is served meets the policy even before the newest is cosigned
            assert await latest_cosigned(origin, 0)
        served = await eventually(lambda size=size: latest_cosigned(origin, size))
        assert federation.bundle_now().check_witnessed(LOG, served.note) == ["320000", "330000"]
        for witness in ("320000", "330000"):
            assert await witnessed_size(nodes[witness]) == served.size  # each witness's state moved to what it cosigned

    # Proofs embed the cosigned checkpoint, from the origin and, once it has fetched them, from any peer.
    bundle = federation.bundle_now()
    for node in (origin, nodes["330000"]):
        await eventually(lambda node=node: latest_cosigned(node, size))
        async with peer_channel(federation, node, "320000") as channel:
            proof = await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
                log_pb2.GetInclusionProofRequest(origin=LOG, seq=1)
            )
        assert check_inclusion(proof, bundle).checkpoint.size == proof.tree_size


async def test_a_node_named_witness_without_its_key_says_so_and_cosigns_nothing(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    witness = await federation.start_node(WITNESS, keys={"witness_key": None})
    assert f"has it witness {LOG}, but keys.witness_key is not set" in caplog.text
    assert "no witness key configured" in await refused(
        witness, federation, 0, [], ForgedLog(federation, LOG).checkpoint(2)
    )


async def test_whatever_it_is_sent_a_witness_cosigns_one_history_and_never_a_smaller_tree(
    federation: TestFederation,
) -> None:
    """Random requests, in concurrent bursts, mixing two histories the origin's key signed (a split view),
    right and wrong old sizes and proofs: what gets cosigned is one history, in non-decreasing sizes."""
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    node = await federation.start_node(WITNESS)
    assert node.pool is not None and node.config.keys.witness_key is not None
    witness = Witness(WITNESS, node.pool, federation.bundle_now, SigningKey.load(node.config.keys.witness_key))
    histories = [ForgedLog(federation, LOG), ForgedLog(federation, LOG, tag="split")]
    chance = random.Random(12)
    cosigned: list[tuple[int, bytes]] = []
    held = 0
    for _ in range(40):
        burst = []
        for _ in range(chance.randint(1, 4)):
            log = chance.choice(histories)
            size = max(0, min(63, held + chance.randint(-3, 5)))
            old = chance.choice([held, held, chance.randint(0, 63)])
            proof = log.proof(old, size) if chance.random() < 0.8 else chance.choice(histories).proof(old, size)
            burst.append((log, old, size, proof))
        outcomes = await asyncio.gather(
            *(witness.add_checkpoint(LOG, old, proof, log.checkpoint(size)) for log, old, size, proof in burst),
            return_exceptions=True,
        )
        # Requests of one burst race: their cosignatures chain by compare-and-set in commit order, which
        # is the order of their sizes, not of the burst's list.
        this_burst: list[tuple[int, bytes]] = []
        for (log, _, size, _), outcome in zip(burst, outcomes, strict=True):
            if isinstance(outcome, WitnessRefused):
                continue
            assert not isinstance(outcome, BaseException), outcome
            if not outcome.conflict:
                this_burst.append((size, log.tree.root(size)))
        cosigned.extend(sorted(this_burst, key=lambda cosignature: cosignature[0]))
        held = await witnessed_size(node) or 0
    assert len({s for s, _ in cosigned}) > 5  # the run did exercise cosigning
    # One history only: some history has every cosigned root. (Not "the first root's": the empty tree's root is
    # both histories', and from a cosigned empty tree either history is a consistent next step.)
    assert any(all(h.tree.root(size) == root for size, root in cosigned) for h in histories), cosigned
    assert [s for s, _ in cosigned] == sorted(s for s, _ in cosigned)  # never a rollback


def stuffed(note: bytes, up_to: int = MAX_NOTE - 40) -> bytes:
    """``note`` padded near the note size limit with signature lines of keys nobody trusts (a relay's junk)."""
    text = note.decode()
    n = 0
    while len(text) < up_to - 120:
        junk = base64.b64encode(hashlib.sha256(str(n).encode()).digest() * 2 + b"\0" * 4).decode()
        text += f"\u2014 junk.example/{n} {junk}\n"
        n += 1
    return text.encode()


async def test_junk_lines_a_relay_adds_to_a_checkpoint_never_crowd_out_the_cosignatures_that_count(
    federation: TestFederation,
) -> None:
    """Any member may hand a peer (or a witness) the origin's checkpoint first, padded to the size limit with lines
    of unknown keys: what is stored keeps only the log's signature and the policy's cosignatures, so the witness's
    cosignature that comes later is still merged, and the witness itself cosigns the padded note."""
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    peer = await federation.start_node("330000")
    witness = await federation.start_node(WITNESS)
    honest = ForgedLog(federation, LOG)
    note = honest.checkpoint(5)

    answer = await add(witness, federation, 0, [], stuffed(note, up_to=3800))  # under the edge's cap on a request
    assert not answer.conflict and answer.witness_size == 5
    held = await witness.pool.fetchval("SELECT note FROM witness_state WHERE log_origin = $1", LOG)  # type: ignore[union-attr]
    assert held == note.decode() + "".join(answer.cosignatures)  # the log's signature and the witness's only

    assert peer.keeper is not None and peer.pool is not None
    assert str(await peer.keeper.receive(LOG, stuffed(note).decode(), "sync:a-relay")) == "new"
    cosigned = note.decode() + "".join(answer.cosignatures)
    assert str(await peer.keeper.receive(LOG, cosigned, f"sync:{WITNESS}")) == "known"
    stored = await peer.pool.fetchval("SELECT note FROM checkpoints WHERE origin = $1 AND size = 5", LOG)
    assert stored == cosigned
    assert federation.bundle_now().check_witnessed(LOG, stored) == [WITNESS]


async def test_a_log_serves_its_newest_witnessed_checkpoint_however_many_unwitnessed_ones_came_since(
    federation: TestFederation,
) -> None:
    """While a witness is away the log goes on signing; what it serves (and embeds in proofs) stays the newest
    checkpoint that meets the policy, not the newest one, which clients applying the policy would refuse."""
    set_witnesses(federation, LOG, [WITNESS], quorum=1)  # the witness is not running
    origin = await federation.start_node(LOG, checkpoint={"every_seconds": 3600, "every_events": 10**6})
    assert origin.pool is not None and origin.keeper is not None
    witness_key = SigningKey.load(federation.layout.member_dir(WITNESS) / "keys" / WITNESS_KEY)
    records = [penalty(LOG, n, "2099-12-31") for n in range(12)]
    for n, record in enumerate(records, start=1):
        async with origin.pool.acquire() as conn, conn.transaction():
            await origin.ledger.append(conn, [Change.of(record)])
        await origin.keeper.sign_own()  # or the signer's own loop was first: either way, a checkpoint of size n
        note = await origin.pool.fetchval("SELECT note FROM checkpoints WHERE origin = $1 AND size = $2", LOG, n)
        assert note is not None
        if n == 2:  # the witness's last cosignature before it went away
            line = cosign(note_body(note), witness_name(WITNESS), witness_key, 1_800_000_000)
            await origin.pool.execute(
                "UPDATE checkpoints SET note = note || $2 WHERE origin = $1 AND size = $3", LOG, line, n
            )
        if n in (2, 7):  # served in between: remembered from then on, and found again by a node just started
            assert (served := await origin.keeper.latest(LOG)) is not None and served.size == 2
    assert (served := await origin.keeper.latest(LOG)) is not None and served.size == 2
    assert federation.bundle_now().check_witnessed(LOG, served.note) == [WITNESS]
    restarted = CheckpointKeeper(LOG, origin.pool, federation.bundle_now, origin.key, origin.logbook, origin.alarms)
    assert (served := await restarted.latest(LOG)) is not None and served.size == 2

    newest = await origin.pool.fetchval("SELECT note FROM checkpoints WHERE origin = $1 AND size = 12", LOG)
    line = cosign(note_body(newest), witness_name(WITNESS), witness_key, 1_800_000_100)  # the witness is back
    await origin.pool.execute("UPDATE checkpoints SET note = note || $2 WHERE origin = $1 AND size = 12", LOG, line)

    async def newest_served() -> bool:
        # A change made outside the node's own tasks is seen when the store's notification of it arrives.
        served = await origin.keeper.latest(LOG)
        return served is not None and served.size == 12

    await eventually(newest_served)


async def test_a_witness_refuses_a_view_of_the_log_that_its_own_copy_contradicts(federation: TestFederation) -> None:
    """Every member holds every log: a checkpoint validly signed with the log's key (stolen, say) whose root
    differs from the witness's own copy at that size is refused, even where the witness never cosigned before."""
    origin = await federation.start_node(LOG, checkpoint={"every_seconds": 3600, "every_events": 10**6})
    node = await federation.start_node(WITNESS)
    assert origin.pool is not None and node.pool is not None and node.logbook is not None
    async with origin.pool.acquire() as conn, conn.transaction():
        await origin.ledger.append(conn, [Change.of(penalty(LOG, n, "2099-12-31")) for n in range(5)])

    async def held_by_witness() -> bool:
        assert node.logbook is not None
        return (await node.logbook.tree(LOG)).size == 5

    await eventually(held_by_witness)
    await federation.stop_node(LOG)
    set_witnesses(federation, LOG, [WITNESS], quorum=1)
    assert node.config.keys.witness_key is not None
    witness = Witness(
        WITNESS, node.pool, federation.bundle_now, SigningKey.load(node.config.keys.witness_key), node.logbook
    )

    forged = ForgedLog(federation, LOG, tag="stolen-key")
    with pytest.raises(WitnessRefused, match="another root at size 3"):
        await witness.add_checkpoint(LOG, 0, [], forged.checkpoint(3))
    assert await witnessed_size(node) is None
    genuine = Checkpoint(log_name(LOG), 3, await (await node.logbook.tree(LOG)).root(3)).sign(forged.key)
    assert (await witness.add_checkpoint(LOG, 0, [], genuine.encode())).witness_size == 3
