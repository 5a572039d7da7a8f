"""Signed checkpoints and proofs: every region can prove what another published, and notices tampering."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.checkpoint import Checkpoint, log_name, open_checkpoint
from credex.crypto.keys import SigningKey
from credex.crypto.merkle import verify_consistency
from credex.node.chain import ProofInvalid, Receipt, Received, check_inclusion
from credex.node.channels import open_channel
from credex.node.config import checkpoints_topic
from credex.node.runtime import Node
from credex.v1 import log_pb2, log_pb2_grpc, lookup_pb2, lookup_pb2_grpc

from .conftest import TestFederation, eventually

NATIONAL = Profile.load("national")
CREDEX = [sys.executable, "-m", "credex.node.cli"]


async def take_in(node: Node, tmp_path: Path, rows: int, first_row: int = 0) -> int:
    path = tmp_path / f"{node.origin}-{first_row}.csv"
    synth.write(path, synth.SynthSpec(region=node.origin, rows=rows, bad_share=0.0, first_row=first_row))
    [report] = await node.ingest([path], NATIONAL)
    return report.new


async def checkpoint_of(node: Node, origin: str, size: int) -> tuple[int, str] | None:
    held = (await node.status()).checkpoints.get(origin)
    return held if held is not None and held[0] >= size else None


def peer_channel(federation: TestFederation, node: Node, as_origin: str) -> grpc.aio.Channel:
    tls = federation.layout.member_dir(as_origin) / "tls"
    return open_channel(
        f"127.0.0.1:{node.port}", ca=federation.layout.ca_dir / "ca.crt", cert=tls / "node.crt", key=tls / "node.key"
    )


async def test_every_node_verifies_the_origin_checkpoint_and_serves_proofs_anyone_can_check(
    federation: TestFederation, tmp_path: Path
) -> None:
    nodes = {o: await federation.start_node(o) for o in federation.origins}
    n = await take_in(nodes["310000"], tmp_path, 120)
    for node in nodes.values():
        await eventually(lambda node=node: checkpoint_of(node, "310000", n))
    roots = {origin: (await node.status()).checkpoints["310000"] for origin, node in nodes.items()}
    assert len(set(roots.values())) == 1, roots

    bundle = federation.bundle_now()
    origin_key = bundle.keys_by_id[next(iter(bundle.member("310000").keys)).key_id][2]  # type: ignore[union-attr]
    async with peer_channel(federation, nodes["330000"], "320000") as channel:
        log = log_pb2_grpc.LogServiceStub(channel)
        signed = await log.GetCheckpoint(log_pb2.GetCheckpointRequest(origin="310000"))
        checkpoint = open_checkpoint(signed.note, log_name("310000"), [origin_key])
        assert (checkpoint.size, checkpoint.root) == (n, signed.root)
        for seq in (1, n // 2, n):
            proof = await log.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", seq=seq))
            assert check_inclusion(proof, bundle).event.event.seq == seq
        proof.hashes[0] = bytes(32)
        with pytest.raises(ProofInvalid, match="audit path"):
            check_inclusion(proof, bundle)

        later = await take_in(nodes["310000"], tmp_path, 40, first_row=1000)
        await eventually(lambda: checkpoint_of(nodes["330000"], "310000", n + later))
        consistency = await log.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(origin="310000", old_size=n))
        newer = open_checkpoint(consistency.checkpoint.note, log_name("310000"), [origin_key])
        assert verify_consistency(n, newer.size, checkpoint.root, newer.root, list(consistency.hashes))

    gov_ca, gov_cert, gov_key = federation.layout.client_tls()
    async with open_channel(f"127.0.0.1:{nodes['320000'].port}", ca=gov_ca, cert=gov_cert, key=gov_key) as channel:
        first = await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
            log_pb2.GetInclusionProofRequest(origin="310000", seq=1, purpose="proof check")
        )
        record_id = check_inclusion(first, bundle).event.event.record_id
        answer = await lookup_pb2_grpc.LookupServiceStub(channel).GetRecord(
            lookup_pb2.GetRecordRequest(record_id=record_id, purpose="proof check")
        )
    assert check_inclusion(answer.proof, bundle).event.event.record_id == record_id


async def test_proof_files_verify_offline_and_audit_reports_ok(federation: TestFederation, tmp_path: Path) -> None:
    origin = await federation.start_node("310000")
    peer = await federation.start_node("320000")
    n = await take_in(origin, tmp_path, 50)
    await eventually(lambda: checkpoint_of(peer, "310000", n))
    assert peer.pool is not None
    async with peer.pool.acquire() as conn:
        record_id = await conn.fetchval("SELECT record_id FROM records WHERE origin = '310000' LIMIT 1")
    config = str(federation.layout.config_path("320000"))
    proof_file = tmp_path / "proof.json"
    await run_cli("proof", record_id, "--node", f"127.0.0.1:{peer.port}", "--config", config, "--out", str(proof_file))
    verified = await run_cli(
        "verify",
        str(proof_file),
        "--bundle",
        str(federation.layout.bundle),
        "--federation-key",
        str(federation.layout.federation_public),
    )
    assert f"OK {record_id}" in verified
    text = proof_file.read_text().replace('"seq": ', '"seq": 1').replace('"leaf_index": ', '"leaf_index": 1')
    tampered = tmp_path / "tampered.json"
    tampered.write_text(text)
    assert "INVALID" in await run_cli("verify", str(tampered), "--config", config, expect=1)

    state = tmp_path / "audit-state.json"
    audited = await run_cli(
        "audit", "--node", f"127.0.0.1:{peer.port}", "--origin", "310000", "--config", config, "--state", str(state)
    )
    assert f"OK 310000 size {n}" in audited
    more = await take_in(origin, tmp_path, 20, first_row=500)
    await eventually(lambda: checkpoint_of(peer, "310000", n + more))
    again = await run_cli(
        "audit", "--node", f"127.0.0.1:{peer.port}", "--origin", "310000", "--config", config, "--state", str(state)
    )
    assert f"extends the one audited before (size {n})" in again


async def run_cli(*args: str, expect: int = 0) -> str:
    process = await asyncio.create_subprocess_exec(
        *CREDEX, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == expect, (out + err).decode()
    return out.decode()


async def test_two_checkpoints_of_one_size_raise_an_alarm_and_freeze_the_origin_until_cleared(
    federation: TestFederation, tmp_path: Path
) -> None:
    from credex.node.chain import clear_alarm

    origin = await federation.start_node("310000")
    peer = await federation.start_node("320000")
    n = await take_in(origin, tmp_path, 30)
    await eventually(lambda: checkpoint_of(peer, "310000", n))
    key = SigningKey.load(federation.layout.member_dir("310000") / "keys")
    rival = Checkpoint(log_name("310000"), n, bytes(range(32))).sign(key)
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(checkpoints_topic("310000"), value=rival.encode(), key=b"310000")
    finally:
        await producer.stop()
    status = await eventually(lambda: _with_alarm(peer))
    assert "equivocation.checkpoint on 310000" in status.open_alarms[0]
    assert peer.pool is not None
    async with peer.pool.acquire() as conn:
        alarm = await conn.fetchrow("SELECT id, evidence FROM alarms")
    assert alarm is not None
    alarm_id, evidence = alarm["id"], json.loads(alarm["evidence"])
    assert rival in evidence["checkpoints"] and len(evidence["checkpoints"]) == 2

    frozen_at = (await peer.status()).contiguous_by_origin["310000"]
    more = await take_in(origin, tmp_path, 25, first_row=700)
    await asyncio.sleep(3)  # Kafka and sync both had their chance
    assert (await peer.status()).contiguous_by_origin["310000"] == frozen_at

    async with peer.pool.acquire() as conn:
        assert await clear_alarm(conn, alarm_id, "operator@test", "the rival checkpoint was injected by the test")
    await eventually(lambda: _holds(peer, "310000", n + more))


async def _with_alarm(node: Node) -> object:
    status = await node.status()
    return status if status.open_alarms else None


async def _holds(node: Node, origin: str, size: int) -> bool:
    return (await node.status()).contiguous_by_origin.get(origin, 0) >= size


async def test_a_checkpoint_not_signed_by_the_origin_is_rejected_and_kept_as_evidence(
    federation: TestFederation, tmp_path: Path
) -> None:
    origin = await federation.start_node("310000")
    peer = await federation.start_node("320000")
    n = await take_in(origin, tmp_path, 10)
    await eventually(lambda: checkpoint_of(peer, "310000", n))
    impostor = SigningKey.load(federation.layout.member_dir("330000") / "keys")
    forged = Checkpoint(log_name("310000"), n + 100, bytes(32)).sign(impostor)
    receipt = await peer.keeper.receive("310000", forged, "test:forged")
    assert receipt == Receipt(Received.REJECTED, "checkpoint.unsigned")
    assert str(receipt) == "rejected:checkpoint.unsigned"  # as the intake counters name it
    assert not (await peer.status()).open_alarms
    assert peer.pool is not None
    async with peer.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT reason, channel, evidence FROM intake_rejections")
    assert row is not None and (row["reason"], row["channel"]) == ("checkpoint.unsigned", "test:forged")
    assert bytes(row["evidence"]).decode() == forged
