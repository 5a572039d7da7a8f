"""A revoked key: judged by log position, not by the time its signer wrote; and a node whose key it is stops."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected, log_name
from credex.crypto.envelope import canonical_bytes, seal
from credex.crypto.keys import KeyFileError, SigningKey, SigningRefused, load_public
from credex.crypto.merkle import MerkleTree, leaf_hash
from credex.crypto.trust import EventRejected, EventVerifier, Member, MemberKey, TrustBundle
from credex.node.chain import audit_origin, inclusion_proof, proof_to_json
from credex.node.chain.alarms import Alarm, list_alarms
from credex.node.channels import PeerChannels
from credex.node.cli import app
from credex.node.config import events_topic
from credex.node.runtime import Node
from credex.v1 import exchange_pb2, exchange_pb2_grpc, lookup_pb2, lookup_pb2_grpc, record_pb2

from .conftest import TestFederation, eventually
from .forgery import event_payload
from .trust_support import channel_as, member_tls, own_checkpoint, quick_refresh, take_in

__all__ = ["quick_refresh"]  # a fixture, used by name

FORGED_USCC = "913100006000373412"
FORGED_SUBJECT = record_pb2.Subject(uscc=FORGED_USCC, name="被伪造处罚的公司")
runner = CliRunner()


def event(origin: str, seq: int, recorded_at: dt.datetime) -> bytes:
    """A government-shared penalty of a company that never had one, dated by its forger."""
    return event_payload(
        origin, seq, recorded_at=recorded_at, subject=FORGED_SUBJECT, sharing_level=record_pb2.SHARING_LEVEL_GOVERNMENT
    )


def bundle_with(key: MemberKey) -> TrustBundle:
    return TrustBundle(federation="yrd").with_member(Member(origin="310000", name="上海", keys=(key,)))


def test_a_key_revoked_after_seq_n_signs_nothing_beyond_n_whatever_time_it_claims() -> None:
    key = SigningKey.generate()
    revoked_at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    member_key = MemberKey(key_id=key.key_id, public_key=key.public_b64, revoked_at=revoked_at, revoked_after_seq=10)
    verifier = EventVerifier(bundle_with(member_key))
    long_before = revoked_at - dt.timedelta(days=365)

    assert verifier.verify(seal(key, event("310000", 10, long_before)), "310000").event.seq == 10
    with pytest.raises(EventRejected) as raised:
        verifier.verify(seal(key, event("310000", 11, long_before)), "310000")
    assert raised.value.reason == "key.revoked"
    assert "revoked after seq 10" in raised.value.message


def test_a_key_revoked_without_a_position_is_trusted_for_nothing() -> None:
    key = SigningKey.generate()
    revoked_at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    verifier = EventVerifier(
        bundle_with(MemberKey(key_id=key.key_id, public_key=key.public_b64, revoked_at=revoked_at))
    )
    with pytest.raises(EventRejected) as raised:
        verifier.verify(seal(key, event("310000", 1, revoked_at - dt.timedelta(days=365))), "310000")
    assert raised.value.reason == "key.revoked"
    assert "without a log position" in raised.value.message


def test_a_checkpoint_larger_than_the_revocation_position_is_rejected() -> None:
    key = SigningKey.generate()
    bundle = bundle_with(MemberKey(key_id=key.key_id, public_key=key.public_b64, revoked_after_seq=10))
    root = bytes(32)
    assert bundle.verify_checkpoint("310000", Checkpoint(log_name("310000"), 10, root).sign(key)).size == 10
    with pytest.raises(CheckpointRejected) as raised:
        bundle.verify_checkpoint("310000", Checkpoint(log_name("310000"), 11, root).sign(key))
    assert raised.value.reason == "key.revoked"
    with pytest.raises(CheckpointRejected):  # a size written any other way is not a way around it
        bundle.verify_checkpoint("310000", Checkpoint(log_name("310000"), 11, root).sign(key).replace("11", "١١", 1))


def own_key(federation: TestFederation, origin: str = "310000") -> SigningKey:
    """The member's signing key: its node's, or, once revoked, the thief's copy."""
    return SigningKey.load(federation.layout.member_dir(origin) / "keys")


def revoke_own_key(federation: TestFederation, origin: str, after_seq: int) -> TrustBundle:
    key_id = own_key(federation, origin).key_id
    revoked = federation.bundle_now().with_key_revoked(origin, key_id, after_seq, "stolen").next_version()
    federation.publish(revoked)
    return revoked


async def published_then_revoked(federation: TestFederation, tmp_path: Path, rows: int) -> tuple[Node, int]:
    """310000 takes in ``rows`` rows and signs a checkpoint of them; then its key is stolen, revoked after them."""
    publisher = await federation.start_node("310000")
    n = await take_in(publisher, tmp_path, rows)
    await eventually(lambda: own_checkpoint(publisher, n))
    revoke_own_key(federation, "310000", after_seq=n)
    return publisher, n


async def test_a_back_dated_event_signed_with_a_revoked_key_is_rejected_and_never_served(
    federation: TestFederation, tmp_path: Path
) -> None:
    _, n = await published_then_revoked(federation, tmp_path, 20)
    receiver = await federation.start_node("320000")

    back_dated = event("310000", n + 1, dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    await _produce(federation, [seal(own_key(federation), back_dated).SerializeToString()])

    async def counted() -> dict[str, int] | None:
        status = await receiver.status()
        seen = status.intake_counters.get("310000", {})
        return seen if seen.get("rejected:key.revoked") and status.contiguous_by_origin.get("310000") == n else None

    seen = await eventually(counted)
    assert seen["rejected:key.revoked"] == 1

    async with channel_as(federation, receiver, member_tls(federation, "330000")) as channel:
        fetched = await exchange_pb2_grpc.ExchangeServiceStub(channel).FetchEvents(
            exchange_pb2.FetchEventsRequest(origin="310000", from_seq=n + 1, limit=10)
        )
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=FORGED_USCC, purpose="test")
        )
    assert list(fetched.envelopes) == []
    assert not [e for e in profile.entries if "forged" in e.record.record_id]


async def test_a_node_whose_key_is_revoked_stops_signing_and_says_why(
    federation: TestFederation, tmp_path: Path, quick_refresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credex.node.runtime")
    node, n = await published_then_revoked(federation, tmp_path, 10)

    status = await eventually(lambda: _refusing(node))
    assert f"revoked after seq {n} (stolen)" in status.signing_refused
    assert "credex keys init" in status.signing_refused
    assert "this node signs nothing more" in caplog.text
    with pytest.raises(SigningRefused, match=f"revoked after seq {n}"):
        await take_in(node, tmp_path, 5, first_row=1000)
    assert (await node.status()).own_events == n

    await federation.stop_node("310000")  # and after a restart it still refuses, rather than failing to start
    node = await federation.start_node("310000")
    assert (await node.status()).signing_refused


async def _refusing(node: Node) -> object:
    status = await node.status()
    return status if status.signing_refused else None


async def test_verify_and_audit_refuse_what_a_revoked_key_signed_beyond_its_position(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    n = await take_in(node, tmp_path, 20)
    size = await eventually(lambda: own_checkpoint(node, n))
    assert node.pool is not None
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proof_to_json(await inclusion_proof(node.pool, node.logbook, node.keeper, "310000", 15)))
    before = tmp_path / "before.json"
    before.write_bytes(federation.layout.bundle.read_bytes())
    revoked = tmp_path / "revoked.json"
    revoke_own_key(federation, "310000", after_seq=10)
    revoked.write_bytes(federation.layout.bundle.read_bytes())
    federation_key = str(federation.layout.federation_public)

    def verify(bundle: Path) -> tuple[int, str]:
        result = runner.invoke(
            app, ["verify", str(proof_file), "--bundle", str(bundle), "--federation-key", federation_key]
        )
        return result.exit_code, result.output

    assert verify(before)[0] == 0
    code, output = verify(revoked)
    assert code == 1 and "revoked after seq 10" in output

    cert, key = member_tls(federation, "320000")
    channels = PeerChannels(federation.layout.ca_dir / "ca.crt", cert, key)
    try:
        endpoint = f"127.0.0.1:{node.port}"
        assert (await audit_origin(channels, endpoint, "310000", federation.bundle_now())).ok is False
        federation_public = load_public(federation.layout.federation_public)
        report = await audit_origin(channels, endpoint, "310000", TrustBundle.load_signed(before, federation_public))
    finally:
        await channels.close()
    assert report.ok and report.size == size


async def test_a_node_refuses_key_files_others_can_read(federation: TestFederation) -> None:
    config = federation.config("310000")
    signing = config.keys.signing_key
    os.chmod(signing, 0o644)
    with pytest.raises(KeyFileError, match=f"chmod 600 {signing}"):
        Node(config)
    os.chmod(signing, 0o600)
    assert config.keys.pseudonym_key is not None
    os.chmod(config.keys.pseudonym_key, 0o640)
    with pytest.raises(KeyFileError, match=r"pseudonym key .* accessible to group or others"):
        Node(config)
    os.chmod(config.keys.pseudonym_key, 0o600)
    Node(config)


def test_revoke_key_command_revokes_by_position_and_the_listing_says_so(tmp_path: Path) -> None:
    for folder in ("federation", "sh"):
        assert runner.invoke(app, ["keys", "init", "--dir", str(tmp_path / folder)]).exit_code == 0
    draft = tmp_path / "draft.json"
    key = SigningKey.load(tmp_path / "sh")
    steps = [
        ["trust", "new", str(draft), "--federation", "yrd"],
        ["trust", "add-member", str(draft), "--origin", "310000", "--name", "上海市", "--endpoint", "h:1",
         "--public-key", str(tmp_path / "sh" / "signing.pub")],
        ["trust", "revoke-key", str(draft), "--origin", "310000", "--key-id", key.key_id, "--after-seq", "42",
         "--reason", "laptop stolen", "--root", "AB" * 32],
        ["trust", "sign", str(draft), "--key", str(tmp_path / "federation" / "signing.key"), "--out",
         str(tmp_path / "bundle.json")],
    ]  # fmt: skip
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    listing = runner.invoke(
        app,
        [
            "trust",
            "verify",
            str(tmp_path / "bundle.json"),
            "--federation-key",
            str(tmp_path / "federation" / "signing.pub"),
        ],
    )
    assert "version 3" in listing.output
    assert "revoked after seq 42 (log root there abababababababab…) (laptop stolen)" in listing.output
    assert TrustBundle.from_draft(draft).revoked_roots("310000")[0].revoked_root == "ab" * 32
    bad_root = runner.invoke(app, ["trust", "revoke-key", str(draft), "--origin", "310000", "--key-id", key.key_id,
                                   "--after-seq", "42", "--reason", "x", "--root", "not-hex"])  # fmt: skip
    assert bad_root.exit_code != 0 and "64 lower-case hex" in bad_root.output
    missing = runner.invoke(app, ["trust", "revoke-key", str(draft), "--origin", "310000", "--key-id", key.key_id,
                                  "--reason", "x"])  # fmt: skip
    assert missing.exit_code != 0 and "--after-seq" in missing.output


async def test_a_revoked_key_re_signing_a_seq_already_held_is_refused_and_freezes_nothing(
    federation: TestFederation, tmp_path: Path
) -> None:
    _, n = await published_then_revoked(federation, tmp_path, 10)  # the key still vouches for seqs 1..n
    receiver = await federation.start_node("320000")
    await eventually(lambda: _holds(receiver, "310000", n))

    stolen = own_key(federation)
    rewritten = [seal(stolen, event("310000", 3, dt.datetime.now(dt.UTC))) for _ in range(2)]  # again and again
    await _produce(federation, [e.SerializeToString() for e in rewritten])

    async def refused() -> dict[str, int] | None:
        seen = (await receiver.status()).intake_counters.get("310000", {})
        return seen if seen.get("rejected:key.revoked.conflict", 0) >= 2 else None

    seen = await eventually(refused)
    assert seen["rejected:key.revoked.conflict"] == 2
    assert "rejected:event.conflict" not in seen
    status = await receiver.status()
    assert status.open_alarms == [] and "310000" not in receiver.alarms.frozen  # no equivocation, no freeze
    assert receiver.pool is not None
    async with receiver.pool.acquire() as conn:
        [row] = await conn.fetch(
            "SELECT key_id, repeats, message, octet_length(evidence) AS kept FROM intake_rejections"
            " WHERE origin = '310000' AND reason = 'key.revoked.conflict'"
        )
    assert (row["key_id"], row["repeats"]) == (stolen.key_id, 2)
    assert f"revoked after seq {n}" in row["message"]
    assert row["kept"] <= receiver.config.intake.evidence_bytes


async def test_history_forged_with_a_revoked_key_is_found_by_the_root_its_revocation_gives(
    federation: TestFederation, quick_refresh: None
) -> None:
    # A node new to the federation, catching up on 310000 (not running) from whatever the bus holds:
    # the key's thief got there first with his own version of seqs 1..5.
    receiver = await federation.start_node("320000")
    stolen = own_key(federation)
    now = dt.datetime.now(dt.UTC)
    forged = [seal(stolen, event("310000", seq, now)) for seq in range(1, 6)]
    await _produce(federation, [e.SerializeToString() for e in forged])
    await eventually(lambda: _holds(receiver, "310000", 5))

    genuine = [seal(stolen, event("310000", seq, now - dt.timedelta(days=1))) for seq in range(1, 6)]
    genuine_root = MerkleTree(leaf_hash(canonical_bytes(e)) for e in genuine).root().hex()
    revoked = federation.bundle_now().with_key_revoked("310000", stolen.key_id, 5, "stolen", root=genuine_root)
    federation.publish(revoked.next_version())

    async def alarmed() -> list[Alarm]:
        assert receiver.pool is not None
        async with receiver.pool.acquire() as conn:
            return [a for a in await list_alarms(conn) if a.kind == "revocation.root"]

    [alarm] = await eventually(alarmed)
    assert alarm.origin == "310000"
    assert f"key {stolen.key_id}" in alarm.message and "after seq 5" in alarm.message
    assert alarm.evidence["root"] == genuine_root
    assert alarm.evidence["root_held"] == MerkleTree(leaf_hash(canonical_bytes(e)) for e in forged).root().hex()


async def _holds(node: Node, origin: str, size: int) -> bool:
    return (await node.status()).contiguous_by_origin.get(origin, 0) >= size


async def _produce(federation: TestFederation, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=federation.broker.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(events_topic("310000"), value=value, key=b"thief")
    finally:
        await producer.stop()
