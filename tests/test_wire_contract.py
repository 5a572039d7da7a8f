"""The wire contract: generated code is current, and envelopes follow DSSE."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from credex.crypto.envelope import canonical_bytes, pae, seal, signature_valid
from credex.crypto.keys import SigningKey
from credex.v1 import event_pb2

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    generator = _generator()
    written = generator.generate(tmp_path)  # type: ignore[attr-defined]
    assert written, "protoc produced nothing"
    stale = [
        path.name
        for path in written
        if (ROOT / "proto" / "credex" / "v1" / path.name).read_bytes() != path.read_bytes()
    ]
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


@pytest.mark.parametrize("name", ["record", "event", "lookup", "exchange"])
def test_every_contract_file_is_in_package_credex_v1(name: str) -> None:
    text = (ROOT / "proto" / "credex" / "v1" / f"{name}.proto").read_text()
    assert "package credex.v1;" in text
