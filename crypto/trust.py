"""The trust bundle: who is in the federation, where they answer, which keys they sign with.

The bundle is JSON signed by the federation's governing key and stored as a DSSE
JSON envelope. A node pins the federation public key in its config and trusts a
member key only through a bundle whose signature checks out; the payload is
parsed only after that check. Event and checkpoint verification against the
bundle live here too, so that every path that takes in events or checkpoints
(Kafka intake, gRPC sync, the checkpoint keeper, offline proofs, ``credex
verify``, ``credex audit``) applies the same rules.

Revocation is by log position, never by the signer's clock: a key revoked
"after seq N" of its origin's log is trusted for events with seq <= N and
checkpoints of size <= N only, whatever time the signer wrote into them, so a
thief who back-dates an event gains nothing. ``revoked_at`` alone (no position)
is the old, clock-based form; it now means "trusted for nothing": the key's
events and checkpoints are rejected whatever their seq. Nodes keep what they
already stored, but a node that does not yet hold that key's events (a new
member, one catching up) cannot fetch them, so that origin's log stops at the
key's first event for it until the bundle gives the position. Give it with
``credex trust revoke-key --after-seq N``.

The thief can still sign events with seq <= N. Where a node already holds that
seq, a different event there is refused as ``key.revoked.conflict`` (counted,
kept as evidence), not taken as equivocation, so the stolen key cannot freeze
its origin. Where a node does not (a new member, one catching up) it may take
in forged history, which a checkpoint signed with the same key would vouch
for; so the revocation may also carry ``revoked_root``, the log's Merkle root at
N as the federation verified it (``--root``). Every node treats it as a
checkpoint the federation signed and raises an alarm naming the key if its own
copy has another root at N.

``not_before``/``not_after`` are still compared with the event's own
``recorded_at``: they describe a planned key window, not a defence against a
key thief, who writes whatever time suits him.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError
from pydantic import AfterValidator, BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from credex.crypto.checkpoint import Checkpoint, CheckpointRejected, log_name, open_checkpoint
from credex.crypto.cosignature import cosignatures, witness_name
from credex.crypto.envelope import EVENT_PAYLOAD_TYPE, canonical_bytes, pae
from credex.crypto.keys import SigningKey, key_id, public_raw
from credex.domain.regions import is_origin_code
from credex.errors import CredexError
from credex.v1 import event_pb2

BUNDLE_PAYLOAD_TYPE = "application/vnd.credex.trust-bundle.v1+json"


class TrustBundleError(CredexError):
    """The bundle is unreadable, malformed or not signed by the federation key."""


_SEQ_LIMIT = 2**63  # seq and tree sizes are PostgreSQL bigints


def _sha256_hex(meaning: str) -> AfterValidator:
    """A string field that is empty or a SHA-256 digest in 64 lower-case hex digits, the one form compared.

    ``meaning`` says what digest it is, for the error an operator reads when a bundle gives another form.
    """

    def check(value: str, info: ValidationInfo) -> str:
        if value and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise ValueError(f"{info.field_name} is 64 lower-case hex digits ({meaning})")
        return value

    return AfterValidator(check)


class MemberKey(BaseModel, frozen=True):
    key_id: str
    public_key: str  # base64 of the raw 32 bytes
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked_at: dt.datetime | None = None  # when the operator revoked it; informational once a position is given
    # The key signs nothing of its origin's log beyond this seq (checkpoints: beyond this size).
    revoked_after_seq: int | None = Field(default=None, ge=0, lt=_SEQ_LIMIT)
    revocation_reason: str = ""
    # Hex SHA-256 Merkle root of the origin's log at size ``revoked_after_seq``, as the federation
    # verified it: a node whose copy has another root at that size holds history forged with this key.
    revoked_root: Annotated[str, _sha256_hex("the log's SHA-256 Merkle root")] = ""

    @model_validator(mode="after")
    def _root_needs_position(self) -> MemberKey:
        if self.revoked_root and self.revoked_after_seq is None:
            raise ValueError("revoked_root is the log's root at revoked_after_seq: give that seq too")
        return self

    @field_validator("public_key")
    @classmethod
    def _raw_ed25519(cls, value: str) -> str:
        raw = base64.b64decode(value, validate=True)
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        return value

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None or self.revoked_after_seq is not None

    def valid_at(self, when: dt.datetime) -> bool:
        """Inside the key's planned window, by the signer's own clock (see the module docstring)."""
        if self.not_before and when < self.not_before:
            return False
        return not (self.not_after and when >= self.not_after)

    def covers(self, position: int) -> bool:
        """Whether the key is trusted for event ``position`` (a seq) or a checkpoint of that size.

        Decided by the position in the origin's log alone, which the signer cannot move:
        a revoked key without a position is trusted for nothing (fail closed).
        """
        if self.revoked_after_seq is not None:
            return position <= self.revoked_after_seq
        return self.revoked_at is None

    def revocation(self) -> str:
        """How the key is revoked, for messages; empty if it is not."""
        if self.revoked_after_seq is not None:
            text = f"revoked after seq {self.revoked_after_seq}"
            if self.revoked_root:
                text += f" (log root there {self.revoked_root[:16]}…)"
        elif self.revoked_at is not None:
            text = f"revoked at {self.revoked_at.isoformat()} without a log position, so trusted for nothing"
        else:
            return ""
        return text + (f" ({self.revocation_reason})" if self.revocation_reason else "")


class Member(BaseModel, frozen=True):
    origin: str
    name: str
    endpoint: str = ""
    keys: tuple[MemberKey, ...] = ()
    # Hex SHA-256 of the SubjectPublicKeyInfo (DER) of the member's node certificate: a certificate
    # whose common name is the origin code gets peer rights only if its key is this one.
    tls_spki_sha256: Annotated[str, _sha256_hex("SHA-256 of the certificate's SPKI")] = ""
    # Base64 of the raw Ed25519 key the member's node cosigns its peers' checkpoints with, as a witness.
    # Its own key, not a log key: a log key revoked must not take the member's witness down with it.
    witness_key: str = ""
    # The member's witness's C2SP tlog-witness submission prefix (https://host:port, its node's tile
    # server): its log's peers ask it to cosign at <prefix>/add-checkpoint. Empty: asked over gRPC.
    witness_url: str = ""

    @field_validator("witness_url")
    @classmethod
    def _https_prefix(cls, value: str) -> str:
        if not value:
            return value
        url = urlsplit(value)
        url.port  # noqa: B018 (a port that is not a number raises ValueError here)
        if url.scheme != "https" or not url.hostname or url.username or url.query or url.fragment:
            raise ValueError("witness_url is an https:// URL prefix, without user, query or fragment")
        if url.path.endswith("/") or value != value.strip():
            raise ValueError("witness_url ends with neither a / nor a space: <prefix>/add-checkpoint is asked")
        return value

    @field_validator("witness_key")
    @classmethod
    def _witness_ed25519(cls, value: str) -> str:
        if value and len(base64.b64decode(value, validate=True)) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        return value

    @field_validator("origin")
    @classmethod
    def _origin_code(cls, value: str) -> str:
        if not is_origin_code(value):
            raise ValueError(f"{value!r} is not a GB/T 2260 division code")
        return value


class WitnessPolicy(BaseModel, frozen=True):
    """Who witnesses one origin's log, and how many of them must cosign a checkpoint before anyone trusts it.

    With a quorum of k, a split view needs the origin and k witnesses to collude.
    """

    log: str  # the origin whose log is witnessed
    witnesses: tuple[str, ...]  # members' origin codes
    quorum: int = Field(ge=1)

    @model_validator(mode="after")
    def _reachable(self) -> WitnessPolicy:
        if not is_origin_code(self.log):
            raise ValueError(f"{self.log!r} is not a GB/T 2260 division code")
        if len(set(self.witnesses)) != len(self.witnesses):
            raise ValueError(f"the witnesses of {self.log} are listed more than once")
        if self.log in self.witnesses:
            raise ValueError(f"{self.log} cannot witness its own log")
        if self.quorum > len(self.witnesses):
            raise ValueError(f"a quorum of {self.quorum} needs at least that many witnesses, not {len(self.witnesses)}")
        return self


class TrustBundle(BaseModel, frozen=True):
    federation: str
    version: int = Field(default=1, ge=1, lt=_SEQ_LIMIT)
    issued_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    members: tuple[Member, ...] = ()
    tls_ca: str = ""  # PEM of the federation CA that issues node certificates
    # Empty (and every bundle written before witnesses existed): no log needs cosignatures.
    witness_policies: tuple[WitnessPolicy, ...] = ()

    @model_validator(mode="after")
    def _one_policy_per_log(self) -> TrustBundle:
        logs = [p.log for p in self.witness_policies]
        if len(set(logs)) != len(logs):
            raise ValueError("a log has one witness policy; merge the ones given for the same origin")
        return self

    @model_validator(mode="after")
    def _one_witness_per_key(self) -> TrustBundle:
        """Cosignatures are counted per member: a key two members list would make one witness count twice."""
        if clash := self.witness_key_clash():
            raise ValueError(clash)
        return self

    def witness_key_clash(self, member: Member | None = None) -> str:
        """Why ``member`` (else the bundle as it is) lists a witness key another member lists; "" if none does."""
        holders: dict[str, str] = {}
        for listed in self.members if member is None else (*self.members, member):
            holder = holders.setdefault(listed.witness_key, listed.origin)
            if listed.witness_key and holder != listed.origin:
                return f"{holder} and {listed.origin} list the same witness key: {holder}'s witness key"
        return ""

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

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the bundle's content, remembered with its version to spot a different bundle of one version."""
        return hashlib.sha256(self.to_json()).hexdigest()

    # -- witnesses ---------------------------------------------------------------

    def witness_policy(self, origin: str) -> WitnessPolicy | None:
        return next((p for p in self.witness_policies if p.log == origin), None)

    def logs_witnessed_by(self, origin: str) -> list[str]:
        """The logs the policy has ``origin``'s node witness."""
        return [p.log for p in self.witness_policies if origin in p.witnesses]

    def witness_key(self, origin: str) -> Ed25519PublicKey | None:
        """``origin``'s cosigning key, if the bundle lists one."""
        member = self.member(origin)
        if member is None or not member.witness_key:
            return None
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(member.witness_key))

    def check_witnessed(self, origin: str, note: str) -> list[str]:
        """The witnesses whose valid cosignatures on ``note`` meet ``origin``'s policy; none without a policy.

        Raises :class:`CheckpointRejected` (``checkpoint.witnesses``) naming every witness
        whose cosignature is missing when fewer than the quorum cosigned.
        """
        policy = self.witness_policy(origin)
        if policy is None:
            return []
        keys: dict[str, Ed25519PublicKey] = {}
        missing: list[str] = []
        for witness in policy.witnesses:
            key = self.witness_key(witness)
            if key is None:
                missing.append(f"{witness} (no witness key in trust bundle version {self.version})")
            else:
                keys[witness_name(witness)] = key
        found = cosignatures(note, keys)
        cosigned = [w for w in policy.witnesses if witness_name(w) in found]
        missing += [w for w in policy.witnesses if w not in cosigned and self.witness_key(w) is not None]
        if len(cosigned) < policy.quorum:
            raise CheckpointRejected(
                "checkpoint.witnesses",
                f"the checkpoint of {origin} has {len(cosigned)} valid cosignature(s), its policy needs"
                f" {policy.quorum} of {', '.join(policy.witnesses)}; missing: {', '.join(missing)}",
            )
        return cosigned

    def with_witness_policy(self, policy: WitnessPolicy) -> TrustBundle:
        others = tuple(p for p in self.witness_policies if p.log != policy.log)
        return self._changed(witness_policies=(*others, policy))

    def unbound_members(self) -> list[str]:
        """Origins without a TLS binding: they get no peer rights (see ``credex trust add-member --tls-cert``)."""
        return [m.origin for m in self.members if not m.tls_spki_sha256]

    def checkpoint_keys(self, origin: str, size: int) -> list[Ed25519PublicKey]:
        """The keys of ``origin`` trusted to sign a checkpoint of ``size`` events."""
        member = self.member(origin)
        if member is None:
            return []
        return [self.keys_by_id[k.key_id][2] for k in member.keys if k.covers(size)]

    def verify_checkpoint(self, origin: str, note: str) -> Checkpoint:
        """Open a signed checkpoint of ``origin`` with the keys trusted for the size it claims.

        The claimed size is read before the signature is checked only to choose the keys;
        the signature then covers it, so a false claim fails like any other forgery.
        Raises :class:`~credex.crypto.checkpoint.CheckpointRejected`.
        """
        size = _claimed_size(note)
        try:
            return open_checkpoint(note, log_name(origin), self.checkpoint_keys(origin, size))
        except CheckpointRejected as exc:
            if exc.reason != "checkpoint.unsigned":
                raise
            revoked = self._revoked_signer(origin, note, size)
            if revoked is None:
                raise
            raise CheckpointRejected(
                "key.revoked", f"checkpoint of size {size} is signed by key {revoked.key_id}, {revoked.revocation()}"
            ) from None

    def _revoked_signer(self, origin: str, note: str, size: int) -> MemberKey | None:
        """Which of ``origin``'s keys not trusted at ``size`` signed ``note``, to say so instead of "unsigned"."""
        member = self.member(origin)
        for key in member.keys if member else ():
            if key.covers(size):
                continue
            try:
                open_checkpoint(note, log_name(origin), [self.keys_by_id[key.key_id][2]])
            except CheckpointRejected:
                continue
            return key
        return None

    def revoked_roots(self, origin: str) -> list[MemberKey]:
        """``origin``'s revoked keys that give the log's root at their position: each is a checkpoint
        the federation itself vouches for, which no key thief can sign."""
        member = self.member(origin)
        return [k for k in member.keys if k.revoked_root and k.revoked_after_seq] if member else []

    def signing_refusal(self, origin: str, key_id: str) -> str:
        """Why ``origin``'s node may not sign with ``key_id`` any more; empty if it may."""
        member = self.member(origin)
        entry = self.keys_by_id.get(key_id)
        if member is None:
            problem = f"{origin} is not a member of trust bundle version {self.version}"
        elif entry is None or entry[0] != origin:
            problem = f"key {key_id} is not listed for {origin} in trust bundle version {self.version}"
        elif entry[1].revoked:
            problem = f"key {key_id} of {origin} is {entry[1].revocation()} in trust bundle version {self.version}"
        else:
            return ""
        return (
            f"{problem}: every peer rejects what it signs, so this node signs nothing more. Create a new key"
            " (`credex keys init --dir <dir>`), have the federation operator add its signing.pub"
            " (`credex trust add-member ... --public-key <dir>/signing.pub`) and sign a newer bundle,"
            " then point keys.signing_key at the new key and restart"
        )

    def _changed(self, **update: object) -> TrustBundle:
        """A new bundle with ``update`` applied, validated as a loaded one is.

        Not ``model_copy``: that would carry over the cached key table and digest of this
        bundle (a changed bundle would verify with the old keys and report the old digest)
        and skip the validators.
        """
        return TrustBundle.model_validate({**dict(self), **update})

    def with_member(self, member: Member) -> TrustBundle:
        others = tuple(m for m in self.members if m.origin != member.origin)
        return self._changed(members=(*others, member))

    def without_member(self, origin: str) -> TrustBundle:
        return self._changed(members=tuple(m for m in self.members if m.origin != origin))

    def next_version(self) -> TrustBundle:
        """The same content as the next version: every change an operator signs must raise it."""
        return self._changed(version=self.version + 1, issued_at=dt.datetime.now(dt.UTC))

    def with_key_revoked(self, origin: str, key_id: str, after_seq: int, reason: str, root: str = "") -> TrustBundle:
        """Revoke ``origin``'s key ``key_id`` for everything after seq ``after_seq`` of its log.

        ``root`` (hex) is the origin's Merkle root at ``after_seq`` as the federation verified it;
        every node compares its own copy with it (see :meth:`revoked_roots`).
        """
        member = self.member(origin)
        if member is None:
            raise TrustBundleError(f"{origin} is not a member of the bundle")
        if key_id not in {k.key_id for k in member.keys}:
            listed = ", ".join(k.key_id for k in member.keys)
            raise TrustBundleError(f"{origin} has no key {key_id}; its keys: {listed}")

        def revoke(key: MemberKey) -> MemberKey:
            revoked_at = key.revoked_at or dt.datetime.now(dt.UTC)
            changes = {
                "revoked_after_seq": after_seq,
                "revoked_at": revoked_at,
                "revocation_reason": reason,
                "revoked_root": root,
            }
            return MemberKey.model_validate({**key.model_dump(), **changes})

        keys = tuple(revoke(k) if k.key_id == key_id else k for k in member.keys)
        return self.with_member(member.model_copy(update={"keys": keys}))

    # -- files -----------------------------------------------------------------

    def to_json(self) -> bytes:
        """The bundle's JSON; fields added since the first format are left out while unused.

        So a bundle that uses no witnesses reads back to exactly the bytes, and the
        digest, it had before they existed, and a node that remembers that digest
        still takes it after an upgrade.
        """
        exclude: dict[str, Any] = {}
        if not self.witness_policies:
            exclude["witness_policies"] = True
        unused = {
            index: {name for name in ("witness_key", "witness_url") if not getattr(member, name)}
            for index, member in enumerate(self.members)
        }
        if unused := {index: names for index, names in unused.items() if names}:
            exclude["members"] = unused
        return self.model_dump_json(indent=2, exclude=exclude).encode()

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


def _claimed_size(note: str) -> int:
    """The tree size a checkpoint note claims (its second line); unreadable counts as huge (fail closed)."""
    lines = note.split("\n", 2)
    text = lines[1] if len(lines) > 1 else ""
    if text.isascii() and text.isdigit() and len(text) < 20:
        return int(text)
    return _SEQ_LIMIT


class EventRejected(CredexError):
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


@dataclass(frozen=True)
class Signed:
    """An envelope whose signer the bundle knows, with the exact bytes its signature must cover (DSSE PAE)."""

    envelope: event_pb2.Envelope
    member_key: MemberKey
    public: Ed25519PublicKey
    public_raw: bytes
    message: bytes


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
            signed = self._signed(envelope, expected_origin)
            try:
                signed.public.verify(envelope.signature, signed.message)
            except InvalidSignature:
                raise EventRejected(
                    "signature.invalid", f"signature by {envelope.key_id} does not match the payload"
                ) from None
            return self._open(signed, expected_origin)
        except EventRejected as exc:
            exc.key_id = envelope.key_id[:64]
            raise

    def signed_bytes(self, raw: bytes, expected_origin: str) -> Signed:
        """The first half of :meth:`verify_bytes`: who must have signed ``raw`` and over what.

        For a caller that checks the signatures of a batch elsewhere (worker processes), then
        passes each answer to :meth:`open_signed`; nothing of the payload is parsed yet.
        """
        envelope = event_pb2.Envelope()
        try:
            envelope.ParseFromString(raw)
        except DecodeError:
            raise EventRejected("envelope.malformed", "message is not a credex envelope") from None
        try:
            return self._signed(envelope, expected_origin)
        except EventRejected as exc:
            exc.key_id = envelope.key_id[:64]
            raise

    def open_signed(self, signed: Signed, valid: bool, expected_origin: str) -> VerifiedEvent:
        """The second half: given whether ``signed.message`` carries a valid signature by ``signed.public_raw``."""
        try:
            if not valid:
                raise EventRejected(
                    "signature.invalid", f"signature by {signed.envelope.key_id} does not match the payload"
                )
            return self._open(signed, expected_origin)
        except EventRejected as exc:
            exc.key_id = signed.envelope.key_id[:64]
            raise

    def _signed(self, envelope: event_pb2.Envelope, expected_origin: str) -> Signed:
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
        return Signed(envelope, member_key, public, public_raw(public), pae(envelope.payload_type, envelope.payload))

    def _open(self, signed: Signed, expected_origin: str) -> VerifiedEvent:
        """Parse and check a payload whose signature was found valid."""
        envelope, member_key = signed.envelope, signed.member_key
        event = event_pb2.Event()
        try:
            event.ParseFromString(envelope.payload)
        except DecodeError:
            raise EventRejected("payload.malformed", "signed payload is not an event") from None
        if event.origin != expected_origin:
            raise EventRejected("origin.mismatch", f"event claims origin {event.origin!r} on {expected_origin}'s log")
        if event.seq < 1:
            raise EventRejected("event.seq", "event has no sequence number")
        if not member_key.covers(event.seq):
            raise EventRejected(
                "key.revoked",
                f"key {envelope.key_id} is {member_key.revocation()}; this is event {event.seq} of {expected_origin}",
            )
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
        if event.type not in _KNOWN_TYPES or event.standing not in _KNOWN_STANDINGS:
            # A newer credex's event: refused, not guessed at. The gap it leaves is fetched
            # again by catch-up once this node is upgraded.
            raise EventRejected(
                "event.type_unknown",
                f"event type {event.type} or standing {event.standing} is unknown to this credex; upgrade it",
            )
        return VerifiedEvent(envelope, event, canonical_bytes(envelope))


_KNOWN_TYPES = frozenset(event_pb2.EventType.values()) - {event_pb2.EVENT_TYPE_UNSPECIFIED}
_KNOWN_STANDINGS = frozenset(event_pb2.Standing.values())
