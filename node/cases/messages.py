"""Case messages between nodes and the repair decision, signed as DSSE envelopes with payload types of their own.

A case message is signed by the node that sends it and verified against the trust
bundle before its payload is parsed: the key must be in the bundle, belong to the
member the caller's certificate proves it is, and the signature must cover the exact
bytes. The repair decision (修复决定书) is signed by the origin's key and needs only
the trust bundle to check, so a subject can verify it offline.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import DecodeError

from credex.crypto.envelope import canonical_bytes, seal, signature_valid
from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.errors import CredexError
from credex.v1 import case_pb2, event_pb2

CASE_PAYLOAD_TYPE = "application/vnd.credex.case.v1+protobuf"
DECISION_PAYLOAD_TYPE = "application/vnd.credex.repair-decision.v1+protobuf"


class MessageRejected(CredexError):
    """A signed case message or decision failed verification; nothing of it is used."""


def seal_message(key: SigningKey, message: case_pb2.CaseMessage) -> bytes:
    """The canonical envelope bytes of ``message`` signed by this node's key."""
    return canonical_bytes(seal(key, message.SerializeToString(deterministic=True), CASE_PAYLOAD_TYPE))


def open_message(envelope: event_pb2.Envelope, bundle: TrustBundle, caller: str) -> case_pb2.CaseMessage:
    """The verified message of ``envelope`` sent by member ``caller``; :class:`MessageRejected` otherwise."""
    if envelope.payload_type != CASE_PAYLOAD_TYPE:
        raise MessageRejected(f"payload type {envelope.payload_type[:60]!r} is not a case message")
    entry = bundle.keys_by_id.get(envelope.key_id)
    if entry is None:
        raise MessageRejected(f"key {envelope.key_id[:64]!r} is not in the trust bundle")
    origin, member_key, public = entry
    if origin != caller:
        raise MessageRejected(f"key {envelope.key_id} belongs to {origin}, but the caller is {caller}")
    if member_key.revoked:
        raise MessageRejected(f"key {envelope.key_id} is revoked: {member_key.revocation()}")
    if not signature_valid(envelope, public):
        raise MessageRejected(f"signature by {envelope.key_id} does not match the case message")
    message = case_pb2.CaseMessage()
    try:
        message.ParseFromString(envelope.payload)
    except DecodeError:
        raise MessageRejected("the signed payload is not a case message") from None
    if message.sender != origin:
        raise MessageRejected(f"the message says it is from {message.sender[:16]!r}, signed by {origin}")
    if message.WhichOneof("body") is None:
        raise MessageRejected("the case message carries no filing, receipt or status")
    return message


def message_at(
    sender: str,
    body: case_pb2.CaseFiling | case_pb2.RepairReceipt | case_pb2.CaseStatus | case_pb2.ApplicantRequest,
) -> case_pb2.CaseMessage:
    now = dt.datetime.now(dt.UTC).isoformat()
    if isinstance(body, case_pb2.ApplicantRequest):
        return case_pb2.CaseMessage(sender=sender, sent_at=now, request=body)
    if isinstance(body, case_pb2.CaseFiling):
        return case_pb2.CaseMessage(sender=sender, sent_at=now, filing=body)
    if isinstance(body, case_pb2.CaseStatus):
        return case_pb2.CaseMessage(sender=sender, sent_at=now, status=body)
    return case_pb2.CaseMessage(sender=sender, sent_at=now, receipt=body)


def seal_decision(key: SigningKey, decision: case_pb2.RepairDecision) -> bytes:
    return canonical_bytes(seal(key, decision.SerializeToString(deterministic=True), DECISION_PAYLOAD_TYPE))


def verify_decision(raw: bytes, bundle: TrustBundle) -> case_pb2.RepairDecision:
    """The decision in ``raw`` (an envelope) if the origin it names signed it with a key the bundle lists."""
    envelope = event_pb2.Envelope()
    try:
        envelope.ParseFromString(raw)
    except DecodeError:
        raise MessageRejected("the file is not a signed credex document") from None
    if envelope.payload_type != DECISION_PAYLOAD_TYPE:
        raise MessageRejected(f"payload type {envelope.payload_type[:60]!r} is not a repair decision")
    entry = bundle.keys_by_id.get(envelope.key_id)
    if entry is None:
        raise MessageRejected(f"key {envelope.key_id[:64]!r} is not in the trust bundle")
    origin, member_key, public = entry
    if not signature_valid(envelope, public):
        raise MessageRejected(f"signature by {envelope.key_id} does not match the decision")
    decision = case_pb2.RepairDecision()
    try:
        decision.ParseFromString(envelope.payload)
    except DecodeError:
        raise MessageRejected("the signed payload is not a repair decision") from None
    if decision.record_origin != origin:
        raise MessageRejected(f"the decision is about a record of {decision.record_origin}, but {origin} signed it")
    if not member_key.covers(decision.repair_seq):
        raise MessageRejected(f"key {envelope.key_id} is {member_key.revocation()}; the decision is past it")
    return decision
