"""The trust bundle: signed by the federation key, checked before it is believed."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from credex.crypto.envelope import seal
from credex.crypto.keys import SigningKey
from credex.crypto.trust import EventRejected, EventVerifier, Member, MemberKey, TrustBundle, TrustBundleError


def member(origin: str, key: SigningKey, not_after: dt.datetime | None = None) -> Member:
    return Member(
        origin=origin,
        name=origin,
        endpoint="127.0.0.1:1",
        keys=(MemberKey(key_id=key.key_id, public_key=key.public_b64, not_after=not_after),),
    )


def test_a_signed_bundle_round_trips(tmp_path: Path) -> None:
    federation, shanghai = SigningKey.generate(), SigningKey.generate()
    bundle = TrustBundle(federation="yrd").with_member(member("310000", shanghai))
    path = tmp_path / "bundle.json"
    path.write_bytes(bundle.sign(federation))
    loaded = TrustBundle.load_signed(path, federation.private.public_key())
    assert loaded.origins == ["310000"]
    assert loaded.keys_by_id[shanghai.key_id][0] == "310000"


def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(TrustBundle(federation="yrd").sign(SigningKey.generate()))
    with pytest.raises(TrustBundleError, match="not signed by the federation key"):
        TrustBundle.load_signed(path, SigningKey.generate().private.public_key())


def test_an_edited_bundle_is_refused_before_its_content_is_read(tmp_path: Path) -> None:
    federation = SigningKey.generate()
    signed = json.loads(TrustBundle(federation="yrd").sign(federation))
    payload = json.loads(base64.b64decode(signed["payload"]))
    payload["members"] = [{"origin": "310000", "name": "intruder", "keys": []}]
    signed["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(signed))
    with pytest.raises(TrustBundleError, match="not signed"):
        TrustBundle.load_signed(path, federation.private.public_key())


@pytest.mark.parametrize("content", [b"", b"{}", b"not json", b'{"payloadType": "x", "payload": "", "signatures": []}'])
def test_malformed_bundle_files_give_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(content)
    with pytest.raises(TrustBundleError, match=r"bundle\.json"):
        TrustBundle.load_signed(path, SigningKey.generate().private.public_key())


def test_a_key_is_trusted_only_inside_its_planned_window() -> None:
    from credex.v1 import event_pb2, record_pb2

    key = SigningKey.generate()
    ends = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    verifier = EventVerifier(TrustBundle(federation="yrd").with_member(member("310000", key, not_after=ends)))

    def signed_at(when: dt.datetime) -> event_pb2.Envelope:
        event = event_pb2.Event(
            origin="310000",
            seq=1,
            event_id="00000000-0000-0000-0000-000000000001",
            type=event_pb2.EVENT_TYPE_UPSERT,
            record_id="310000-CF-1",
            record=record_pb2.Record(record_id="310000-CF-1", origin="310000"),
        )
        event.recorded_at.FromDatetime(when)
        return seal(key, event.SerializeToString())

    assert verifier.verify(signed_at(ends - dt.timedelta(days=1)), "310000").event.seq == 1
    with pytest.raises(EventRejected) as raised:
        verifier.verify(signed_at(ends + dt.timedelta(days=1)), "310000")
    assert raised.value.reason == "key.not_valid"


def test_a_bundle_with_a_version_below_one_or_a_malformed_tls_binding_is_invalid() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrustBundle(federation="yrd", version=0)
    with pytest.raises(ValueError, match="64 lower-case hex"):
        Member(origin="310000", name="上海", tls_spki_sha256="not-a-hash")


def test_member_origins_must_be_division_codes() -> None:
    with pytest.raises(ValueError, match="division code"):
        Member(origin="SH", name="上海")


def test_a_bundle_changed_in_memory_knows_its_new_keys_and_has_a_new_digest() -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    bundle = TrustBundle(federation="yrd").with_member(member("310000", first))
    assert set(bundle.keys_by_id) == {first.key_id} and bundle.digest  # both now cached
    grown = bundle.with_member(member("320000", second))
    assert set(grown.keys_by_id) == {first.key_id, second.key_id}
    assert grown.digest != bundle.digest
    shrunk = grown.without_member("310000")
    assert set(shrunk.keys_by_id) == {second.key_id}
    assert shrunk.next_version().digest != shrunk.digest
