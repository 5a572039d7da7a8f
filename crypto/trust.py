"""The trust bundle: who is in the federation, where they answer, which keys they sign with.

The bundle is JSON signed by the federation's governing key and stored as a DSSE
JSON envelope. A node pins the federation public key in its config and trusts a
member key only through a bundle whose signature checks out; the payload is
parsed only after that check. Event verification against the bundle lives here
too, so that every path that takes in events (Kafka intake, gRPC sync, offline
proofs) applies the same rules.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError
from pydantic import BaseModel, Field, ValidationError, field_validator

from credex.crypto.envelope import EVENT_PAYLOAD_TYPE, canonical_bytes, pae, signature_valid
from credex.crypto.keys import SigningKey, key_id, public_raw
from credex.domain.regions import is_origin_code
from credex.v1 import event_pb2

BUNDLE_PAYLOAD_TYPE = "application/vnd.credex.trust-bundle.v1+json"


class TrustBundleError(Exception):
    """The bundle is unreadable, malformed or not signed by the federation key."""


class MemberKey(BaseModel, frozen=True):
    key_id: str
    public_key: str  # base64 of the raw 32 bytes
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    @field_validator("public_key")
    @classmethod
    def _raw_ed25519(cls, value: str) -> str:
        raw = base64.b64decode(value, validate=True)
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        return value

    def valid_at(self, when: dt.datetime) -> bool:
        """Signatures are trusted only for times inside the key's window and before a revocation."""
        if self.not_before and when < self.not_before:
            return False
        if self.not_after and when >= self.not_after:
            return False
        return not (self.revoked_at and when >= self.revoked_at)


class Member(BaseModel, frozen=True):
    origin: str
    name: str
    endpoint: str = ""
    keys: tuple[MemberKey, ...] = ()

    @field_validator("origin")
    @classmethod
    def _origin_code(cls, value: str) -> str:
        if not is_origin_code(value):
            raise ValueError(f"{value!r} is not a GB/T 2260 division code")
        return value


class TrustBundle(BaseModel, frozen=True):
    federation: str
    version: int = 1
    issued_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    members: tuple[Member, ...] = ()
    tls_ca: str = ""  # PEM of the federation CA that issues node certificates

    def member(self, origin: str) -> Member | None:
        return next((m for m in self.members if m.origin == origin), None)

    @property
    def origins(self) -> list[str]:
        return [m.origin for m in self.members]

    @cached_property
    def keys_by_id(self) -> dict[str, tuple[str, MemberKey, Ed25519PublicKey]]:
        table: dict[str, tuple[str, MemberKey, Ed25519PublicKey]] = {}
        for member in self.members:
            for key in member.keys:
                table[key.key_id] = (
                    member.origin,
                    key,
                    Ed25519PublicKey.from_public_bytes(base64.b64decode(key.public_key)),
                )
        return table

    def with_member(self, member: Member) -> TrustBundle:
        others = tuple(m for m in self.members if m.origin != member.origin)
        return self.model_copy(update={"members": (*others, member)})

    # -- files -----------------------------------------------------------------

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    def sign(self, federation_key: SigningKey) -> bytes:
        """A DSSE JSON envelope over this bundle, ready to write to disk."""
        payload = self.to_json()
        envelope = {
            "payloadType": BUNDLE_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [
                {
                    "keyid": federation_key.key_id,
                    "sig": base64.b64encode(federation_key.sign(pae(BUNDLE_PAYLOAD_TYPE, payload))).decode(),
                }
            ],
        }
        return json.dumps(envelope, indent=2).encode()

    @classmethod
    def from_draft(cls, path: Path) -> TrustBundle:
        """An unsigned bundle being edited with ``credex trust`` commands."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise TrustBundleError(f"cannot read {path}: {exc.strerror}") from exc
        except ValidationError as exc:
            raise TrustBundleError(f"{path} is not a valid trust bundle draft:\n{exc}") from exc

    @classmethod
    def load_signed(cls, path: Path, federation_public: Ed25519PublicKey) -> TrustBundle:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TrustBundleError(f"cannot read trust bundle {path}: {exc.strerror}") from exc
        return cls.verify_signed(data, federation_public, source=str(path))

    @classmethod
    def verify_signed(cls, data: bytes, federation_public: Ed25519PublicKey, source: str) -> TrustBundle:
        try:
            envelope = json.loads(data)
            payload_type = envelope["payloadType"]
            payload = base64.b64decode(envelope["payload"], validate=True)
            signatures = envelope["signatures"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrustBundleError(f"{source} is not a signed trust bundle (DSSE JSON envelope): {exc}") from exc
        if payload_type != BUNDLE_PAYLOAD_TYPE:
            raise TrustBundleError(f"{source} has payload type {payload_type!r}, expected {BUNDLE_PAYLOAD_TYPE!r}")
        federation_id = key_id(public_raw(federation_public))
        message = pae(payload_type, payload)
        for signature in signatures if isinstance(signatures, list) else []:
            if not isinstance(signature, dict) or signature.get("keyid") != federation_id:
                continue
            try:
                federation_public.verify(base64.b64decode(signature.get("sig", ""), validate=True), message)
            except (InvalidSignature, ValueError):
                continue
            try:
                return cls.model_validate_json(payload)
            except ValidationError as exc:
                raise TrustBundleError(f"{source} is signed but its content is invalid:\n{exc}") from exc
        raise TrustBundleError(
            f"{source} is not signed by the federation key {federation_id}; "
            "check the node's federation_public_key setting or re-sign the bundle with `credex trust sign`"
        )


class EventRejected(Exception):
    """An envelope failed verification. ``reason`` is the counter label; nothing of it is stored as data."""

    def __init__(self, reason: str, message: str, key_id: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.key_id = key_id


@dataclass(frozen=True)
class VerifiedEvent:
    envelope: event_pb2.Envelope
    event: event_pb2.Event
    canonical: bytes  # see credex.crypto.envelope.canonical_bytes


class EventVerifier:
    """Checks envelopes against a trust bundle for an expected origin, signature first."""

    def __init__(self, bundle: TrustBundle) -> None:
        self.bundle = bundle

    def verify_bytes(self, raw: bytes, expected_origin: str) -> VerifiedEvent:
        envelope = event_pb2.Envelope()
        try:
            envelope.ParseFromString(raw)
        except DecodeError:
            raise EventRejected("envelope.malformed", "message is not a credex envelope") from None
        return self.verify(envelope, expected_origin)

    def verify(self, envelope: event_pb2.Envelope, expected_origin: str) -> VerifiedEvent:
        try:
            return self._verify(envelope, expected_origin)
        except EventRejected as exc:
            exc.key_id = envelope.key_id[:64]
            raise

    def _verify(self, envelope: event_pb2.Envelope, expected_origin: str) -> VerifiedEvent:
        if envelope.payload_type != EVENT_PAYLOAD_TYPE:
            raise EventRejected("envelope.payload_type", f"payload type {envelope.payload_type!r} is not an event")
        entry = self.bundle.keys_by_id.get(envelope.key_id)
        if entry is None:
            raise EventRejected("key.unknown", f"key {envelope.key_id!r} is not in the trust bundle")
        key_origin, member_key, public = entry
        if key_origin != expected_origin:
            raise EventRejected(
                "key.other_origin",
                f"key {envelope.key_id} belongs to {key_origin}, not to {expected_origin} whose log this is",
            )
        if not signature_valid(envelope, public):
            raise EventRejected("signature.invalid", f"signature by {envelope.key_id} does not match the payload")
        event = event_pb2.Event()
        try:
            event.ParseFromString(envelope.payload)
        except DecodeError:
            raise EventRejected("payload.malformed", "signed payload is not an event") from None
        if event.origin != expected_origin:
            raise EventRejected("origin.mismatch", f"event claims origin {event.origin!r} on {expected_origin}'s log")
        if event.seq < 1:
            raise EventRejected("event.seq", "event has no sequence number")
        signed_at = event.recorded_at.ToDatetime(tzinfo=dt.UTC)
        if not member_key.valid_at(signed_at):
            raise EventRejected("key.not_valid", f"key {envelope.key_id} was not valid at {signed_at.isoformat()}")
        if (
            not event.HasField("record")
            or event.record.record_id != event.record_id
            or event.record.origin != event.origin
            or not event.record_id.startswith(event.origin + "-")
        ):
            raise EventRejected(
                "event.inconsistent", "the event's record is missing, or its id or origin is not the event's"
            )
        return VerifiedEvent(envelope, event, canonical_bytes(envelope))
