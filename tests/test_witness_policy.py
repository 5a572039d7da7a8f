"""The witness policy: cosignatures in the exact C2SP tlog-cosignature format, the bundle saying who witnesses which
log and how many must cosign (old bundles unchanged: no policy), and ``credex verify`` refusing a proof whose
checkpoint lacks the quorum, naming the witnesses missing."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from credex.adapters.samples import synth
from credex.crypto.checkpoint import Checkpoint, CheckpointRejected
from credex.crypto.cosignature import cosign, cosignatures, signed_message, witness_name
from credex.crypto.keys import SigningKey
from credex.crypto.trust import Member, MemberKey, TrustBundle, WitnessPolicy
from credex.node.chain import proof_to_json
from credex.node.cli import app
from credex.node.runtime import Node
from credex.v1 import log_pb2, log_pb2_grpc

from .callers import NATIONAL, peer_channel
from .conftest import TestFederation, eventually
from .test_checkpoints import run_cli
from .witness_support import set_witnesses

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
# The spec's example cosignature line (its key is not published, so only its layout can be checked).
SPEC_LINE_BLOB = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)
SPEC_TIME = 1679315147


def test_the_signed_message_is_the_spec_s_example_byte_for_byte() -> None:
    expected = (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert signed_message(SPEC_BODY, SPEC_TIME) == expected
    spec_blob = base64.b64decode(SPEC_LINE_BLOB)
    assert len(spec_blob) == 4 + 8 + 64 and int.from_bytes(spec_blob[4:12], "big") == SPEC_TIME


def test_a_cosignature_line_is_key_id_timestamp_and_signature_over_the_message() -> None:
    key = SigningKey.generate()
    name = witness_name("320000")
    line = cosign(SPEC_BODY, name, key, SPEC_TIME)
    prefix = f"\u2014 {name} "
    assert line.startswith(prefix) and line.endswith("\n")
    blob = base64.b64decode(line[len(prefix) :].strip(), validate=True)
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x04" + key.public_raw).digest()[:4]
    assert blob[4:12] == SPEC_TIME.to_bytes(8, "big")
    key.private.public_key().verify(blob[12:], signed_message(SPEC_BODY, SPEC_TIME))  # raises if it does not hold
    note = SPEC_BODY + "\n\u2014 example.com/behind-the-sofa AAAA\n" + line
    assert cosignatures(note, {name: key.private.public_key()})[name].timestamp == SPEC_TIME
    # The same key under another name, or another body, is no cosignature.
    assert cosignatures(note, {witness_name("330000"): key.private.public_key()}) == {}
    other = SPEC_BODY.replace("20852163", "20852164") + "\n" + line
    assert cosignatures(other, {name: key.private.public_key()}) == {}


def _members(*origins: str) -> tuple[tuple[Member, ...], dict[str, SigningKey], dict[str, SigningKey]]:
    """Members with a log key and a witness key each: (members, log keys, witness keys) by origin."""
    keys = {o: SigningKey.generate() for o in origins}
    witness_keys = {o: SigningKey.generate() for o in origins}
    members = tuple(
        Member(
            origin=o,
            name=o,
            keys=(MemberKey(key_id=keys[o].key_id, public_key=keys[o].public_b64),),
            witness_key=witness_keys[o].public_b64,
        )
        for o in origins
    )
    return members, keys, witness_keys


def test_a_bundle_without_witnesses_reads_back_to_the_bytes_and_digest_it_had_before_witnesses_existed() -> None:
    old = (
        '{\n  "federation": "f",\n  "version": 3,\n  "issued_at": "2026-01-01T00:00:00Z",\n  "members": [\n'
        '    {\n      "origin": "310000",\n      "name": "Shanghai",\n      "endpoint": "",\n      "keys": [],\n'
        '      "tls_spki_sha256": ""\n    }\n  ],\n  "tls_ca": ""\n}'
    )
    bundle = TrustBundle.model_validate_json(old)
    assert bundle.to_json().decode() == old
    assert bundle.digest == hashlib.sha256(old.encode()).hexdigest()
    assert bundle.witness_policies == () and bundle.witness_policy("310000") is None
    assert bundle.check_witnessed("310000", "anything") == []  # no policy: nothing to meet


def test_a_policy_that_cannot_be_met_is_refused() -> None:
    with pytest.raises(ValueError, match="quorum of 3"):
        WitnessPolicy(log="310000", witnesses=("320000", "330000"), quorum=3)
    with pytest.raises(ValueError, match="own log"):
        WitnessPolicy(log="310000", witnesses=("310000", "320000"), quorum=1)
    with pytest.raises(ValueError, match="more than once"):
        WitnessPolicy(log="310000", witnesses=("320000", "320000"), quorum=1)
    with pytest.raises(ValueError):
        WitnessPolicy(log="310000", witnesses=("320000",), quorum=0)
    policy = WitnessPolicy(log="310000", witnesses=("320000",), quorum=1)
    with pytest.raises(ValueError, match="one witness policy"):
        TrustBundle(federation="f", witness_policies=(policy, policy))
    with pytest.raises(ValueError, match="32 bytes"):
        Member(origin="320000", name="x", witness_key=base64.b64encode(bytes(31)).decode())


def test_one_witness_key_counts_once_members_sharing_one_are_refused() -> None:
    """Two members listing one witness key would let one witness make two of a quorum's cosignatures."""
    members, _, _ = _members("310000", "320000", "330000")
    shared = members[2].model_copy(update={"witness_key": members[1].witness_key})
    policy = WitnessPolicy(log="310000", witnesses=("320000", "330000"), quorum=2)
    with pytest.raises(ValueError, match="320000 and 330000 list the same witness key"):
        TrustBundle(federation="f", members=(members[0], members[1], shared), witness_policies=(policy,))
    bundle = TrustBundle(federation="f", members=members, witness_policies=(policy,))
    with pytest.raises(ValueError, match="the same witness key"):
        bundle.with_member(shared)  # a bundle changed in memory is validated as a loaded one is
    raw = bundle.to_json().replace(members[2].witness_key.encode(), members[1].witness_key.encode())
    with pytest.raises(ValueError, match="the same witness key"):
        TrustBundle.model_validate_json(raw)  # how a draft or a signed bundle is read


def test_a_checkpoint_needs_the_quorum_of_valid_cosignatures_and_the_refusal_names_who_is_missing() -> None:
    members, keys, witness_keys = _members("310000", "320000", "330000", "340000")
    policy = WitnessPolicy(log="310000", witnesses=("320000", "330000", "340000"), quorum=2)
    bundle = TrustBundle(federation="f", members=members, witness_policies=(policy,))
    note = Checkpoint("credex/310000", 5, bytes(32)).sign(keys["310000"])
    body = note.partition("\n\n")[0] + "\n"
    by_320 = cosign(body, witness_name("320000"), witness_keys["320000"], 1_700_000_000)
    with pytest.raises(CheckpointRejected, match=r"1 valid cosignature.*missing: 330000, 340000"):
        bundle.check_witnessed("310000", note + by_320)
    # A line in 330000's name signed by another key counts for nothing.
    forged = cosign(body, witness_name("330000"), witness_keys["340000"], 1_700_000_000)
    with pytest.raises(CheckpointRejected, match="missing: 330000, 340000"):
        bundle.check_witnessed("310000", note + by_320 + forged)
    by_340 = cosign(body, witness_name("340000"), witness_keys["340000"], 1_700_000_001)
    assert bundle.check_witnessed("310000", note + by_320 + forged + by_340) == ["320000", "340000"]

    unkeyed = bundle.with_member(members[2].model_copy(update={"witness_key": ""}))
    with pytest.raises(CheckpointRejected, match=r"330000 \(no witness key in trust bundle"):
        unkeyed.check_witnessed("310000", note)


runner = CliRunner()


async def test_credex_verify_fails_a_proof_without_enough_cosignatures_naming_who_is_missing(
    federation: TestFederation, tmp_path: Path
) -> None:
    set_witnesses(federation, "310000", ["320000", "330000"], quorum=2)
    origin = await federation.start_node("310000")
    await federation.start_node("320000")
    path = tmp_path / "rows.csv"
    synth.write(path, synth.SynthSpec(region="310000", rows=20, bad_share=0.0))
    await origin.ingest([path], NATIONAL)
    size = (await origin.status()).own_events
    federation_args = [
        "--bundle",
        str(federation.layout.bundle),
        "--federation-key",
        str(federation.layout.federation_public),
    ]

    async def proof_cosigned_by(*witnesses: str) -> log_pb2.InclusionProof | None:
        proof = await _proof(federation, origin)
        if proof is None or proof.tree_size < size:
            return None
        bundle = federation.bundle_now()
        keys = {witness_name(w): bundle.witness_key(w) for w in witnesses}
        found = cosignatures(proof.checkpoint.note, {n: k for n, k in keys.items() if k is not None})
        return proof if len(found) == len(witnesses) else None

    half = await eventually(lambda: proof_cosigned_by("320000"))
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proof_to_json(half))
    result = runner.invoke(app, ["verify", str(proof_file), *federation_args])
    assert result.exit_code == 1, result.output
    assert "INVALID" in result.output and "missing: 330000" in result.output
    assert "320000" not in result.output.split("missing:")[1]
    audit = ["audit", "--node", f"127.0.0.1:{origin.port}", "--origin", "310000"]
    audit += ["--config", str(federation.layout.config_path("320000"))]
    audited = await run_cli(*audit, expect=1)
    assert "not witnessed as the bundle requires" in audited and "missing: 330000" in audited

    await federation.start_node("330000")
    whole = await eventually(lambda: proof_cosigned_by("320000", "330000"), timeout=60)
    proof_file.write_text(proof_to_json(whole))
    result = runner.invoke(app, ["verify", str(proof_file), *federation_args])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK ") and "cosigned by the witnesses 320000, 330000" in result.output
    assert "OK 310000" in await run_cli(*audit)


async def _proof(federation: TestFederation, node: Node) -> log_pb2.InclusionProof | None:
    async with peer_channel(federation, node, "320000") as channel:
        try:
            return await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
                log_pb2.GetInclusionProofRequest(origin=node.origin, seq=1)
            )
        except grpc.aio.AioRpcError:
            return None


def test_an_operator_sets_witness_keys_and_policies_with_credex_trust(tmp_path: Path) -> None:
    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    for name in ("federation", "sh", "js", "js-witness", "zj"):
        invoke("keys", "init", "--dir", str(tmp_path / name))
    draft = str(tmp_path / "draft.json")
    invoke("trust", "new", draft, "--federation", "yrd")
    member = ["--endpoint", "127.0.0.1:1", "--name"]
    invoke(
        "trust",
        "add-member",
        draft,
        "--origin",
        "310000",
        *member,
        "sh",
        "--public-key",
        str(tmp_path / "sh/signing.pub"),
    )
    js = [
        "trust",
        "add-member",
        draft,
        "--origin",
        "320000",
        *member,
        "js",
        "--public-key",
        str(tmp_path / "js/signing.pub"),
    ]
    said = invoke(*js, "--witness-key", str(tmp_path / "sh/signing.pub"), code=1)
    assert "must not be a member's signing key" in said
    invoke(*js, "--witness-key", str(tmp_path / "js-witness/signing.pub"))
    invoke(*js)  # updating the member without --witness-key keeps its witness key
    zj = [
        "trust",
        "add-member",
        draft,
        "--origin",
        "330000",
        *member,
        "zj",
        "--public-key",
        str(tmp_path / "zj/signing.pub"),
    ]
    said = invoke(*zj, "--witness-key", str(tmp_path / "js-witness/signing.pub"), code=1)
    assert "320000's witness key" in said  # one witness may not count twice towards a quorum
    assert "at least that many" in invoke(
        "trust", "witnesses", draft, "--log", "310000", "--witness", "320000", "--quorum", "2", code=1
    )
    assert "not members" in invoke(
        "trust", "witnesses", draft, "--log", "310000", "--witness", "330000", "--quorum", "1", code=1
    )
    invoke("trust", "witnesses", draft, "--log", "310000", "--witness", "320000", "--quorum", "1")
    bundle = TrustBundle.from_draft(Path(draft))
    assert bundle.witness_policy("310000") == WitnessPolicy(log="310000", witnesses=("320000",), quorum=1)
    witness_public = SigningKey.load(tmp_path / "js-witness").public_b64
    assert bundle.member("320000").witness_key == witness_public  # type: ignore[union-attr]
    signed = str(tmp_path / "bundle.json")
    invoke("trust", "sign", draft, "--key", str(tmp_path / "federation/signing.key"), "--out", signed)
    listed = invoke("trust", "verify", signed, "--federation-key", str(tmp_path / "federation/signing.pub"))
    assert "310000 witnessed by 320000: 1 needed" in listed
