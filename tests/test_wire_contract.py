"""The wire contract: generated code is current for every proto file, and envelopes follow DSSE."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

from credex.crypto.envelope import canonical_bytes, pae, seal, signature_valid
from credex.crypto.keys import SigningKey
from credex.node.chain import ProofInvalid, proof_from_json, proof_to_json
from credex.node.chain.proofs import envelope_from_dsse, envelope_to_dsse
from credex.v1 import event_pb2, log_pb2

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "proto" / "credex" / "v1"
PROTO_FILES = sorted(p.stem for p in CONTRACT.glob("*.proto"))


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_contract_file_is_ever_removed() -> None:
    """Nodes of different versions share the wire: files are added, never taken away."""
    released = {
        "authorization",
        "case",
        "check",
        "event",
        "exchange",
        "log",
        "lookup",
        "quality",
        "record",
        "report",
        "standing",
        "subscription",
        "witness",
    }
    assert released <= set(PROTO_FILES)


def test_committed_generated_code_matches_every_proto_file(tmp_path: Path) -> None:
    generator = _generator()
    written = {path.name: path for path in generator.generate(tmp_path)}  # type: ignore[attr-defined]
    suffixes = generator.GENERATED_SUFFIXES  # type: ignore[attr-defined]
    expected = {f"{name}{suffix}" for name in PROTO_FILES for suffix in suffixes}
    assert set(written) == expected, "protoc did not generate every module of every proto file"
    committed = {p.name for p in CONTRACT.iterdir() if p.name.endswith(suffixes)}
    assert committed == expected, f"committed generated files without a proto, or missing: {committed ^ expected}"
    stale = sorted(name for name, path in written.items() if (CONTRACT / name).read_bytes() != path.read_bytes())
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_pae_matches_the_dsse_specification_test_vector() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("类型", "中文".encode()) == b"DSSEv1 6 " + "类型".encode() + b" 6 " + "中文".encode()


def test_a_sealed_envelope_verifies_and_any_changed_byte_breaks_it() -> None:
    key = SigningKey.generate()
    envelope = seal(key, b"payload bytes")
    public = key.private.public_key()
    assert signature_valid(envelope, public)
    for field in ("payload", "payload_type"):
        damaged = event_pb2.Envelope()
        damaged.CopyFrom(envelope)
        value = getattr(damaged, field)
        setattr(damaged, field, value[:-1] + (b"X" if isinstance(value, bytes) else "X"))
        assert not signature_valid(damaged, public), field


def test_canonical_bytes_drop_what_a_relay_may_add_around_the_signed_payload() -> None:
    envelope = seal(SigningKey.generate(), b"x")
    padded = envelope.SerializeToString() + b"\x92\x06\x03abc"  # an unknown field 98
    reparsed = event_pb2.Envelope.FromString(padded)
    assert canonical_bytes(reparsed) == canonical_bytes(envelope)


@pytest.mark.parametrize("name", PROTO_FILES)
def test_every_contract_file_is_in_package_credex_v1(name: str) -> None:
    text = (CONTRACT / f"{name}.proto").read_text()
    assert "package credex.v1;" in text


def test_an_envelope_leaves_in_dsse_json_form_and_comes_back_byte_for_byte() -> None:
    key = SigningKey.generate()
    envelope = seal(key, b"\x00signed payload")
    dsse = envelope_to_dsse(envelope)
    assert dsse == {
        "payloadType": envelope.payload_type,
        "payload": base64.b64encode(b"\x00signed payload").decode(),
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(envelope.signature).decode()}],
    }
    # A DSSE verifier checks the signature over PAE(payloadType, payload) as decoded from the JSON.
    key.private.public_key().verify(
        base64.b64decode(dsse["signatures"][0]["sig"]),
        pae(dsse["payloadType"], base64.b64decode(dsse["payload"])),
    )
    assert canonical_bytes(envelope_from_dsse(json.loads(json.dumps(dsse)))) == canonical_bytes(envelope)


@pytest.mark.parametrize(
    "broken",
    [
        {"payloadType": "t", "payload": "AA==", "signatures": []},
        {"payloadType": "t", "payload": "AA==", "signatures": [{"sig": "AA=="}, {"sig": "AA=="}]},
        {"payloadType": "t", "payload": "not base64!", "signatures": [{"sig": "AA=="}]},
        {"payload": "AA==", "signatures": [{"sig": "AA=="}]},
        "a string",
    ],
)
def test_what_is_not_a_one_signature_dsse_envelope_is_refused(broken: object) -> None:
    with pytest.raises(ProofInvalid, match="not a DSSE envelope"):
        envelope_from_dsse(broken)


def _proof() -> log_pb2.InclusionProof:
    proof = log_pb2.InclusionProof(origin="310000", seq=3, leaf_index=2, tree_size=4, hashes=[bytes(32), b"\x01" * 32])
    proof.envelope.CopyFrom(seal(SigningKey.generate(), b"event bytes"))
    proof.checkpoint.note = "credex.log/310000\n4\nroot\n"
    return proof


def test_a_proof_file_carries_its_envelope_in_dsse_form_and_reads_back_whole() -> None:
    proof = _proof()
    text = proof_to_json(proof)
    assert json.loads(text)["envelope"] == envelope_to_dsse(proof.envelope)
    assert proof_from_json(text) == proof


def test_a_proof_file_of_the_first_format_is_still_read() -> None:
    proof = _proof()
    data = json.loads(proof_to_json(proof))
    data["format"] = "credex-inclusion-proof-v1"
    data["envelope"] = base64.b64encode(canonical_bytes(proof.envelope)).decode()
    assert proof_from_json(json.dumps(data)) == proof
