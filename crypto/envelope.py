"""DSSE-style signed envelopes.

The signature covers the DSSE pre-authentication encoding (PAE) of the payload
type and the exact payload bytes, so a verifier checks the bytes it received and
never re-encodes anything before trusting it.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.keys import SigningKey
from credex.v1 import event_pb2

EVENT_PAYLOAD_TYPE = "application/vnd.credex.event.v1+protobuf"


def pae(payload_type: str, payload: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with decimal ASCII lengths."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


SIGNATURE_SIZE = 64  # an Ed25519 signature, the only kind a credex key makes


def sealed_size(payload_size: int, key_id: str, payload_type: str = EVENT_PAYLOAD_TYPE) -> int:
    """How long :func:`canonical_bytes` of :func:`seal` of a payload of ``payload_size`` bytes is, known before
    signing: each of the four fields is a one-byte tag, a varint length and the bytes (an empty one is left out)."""
    sizes = (payload_size, len(payload_type.encode()), len(key_id.encode()), SIGNATURE_SIZE)
    return sum(1 + _varint_size(size) + size for size in sizes if size)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def seal(key: SigningKey, payload: bytes, payload_type: str = EVENT_PAYLOAD_TYPE) -> event_pb2.Envelope:
    return event_pb2.Envelope(
        payload=payload,
        payload_type=payload_type,
        key_id=key.key_id,
        signature=key.sign(pae(payload_type, payload)),
    )


def sealed_bytes(key_id: str, payload: bytes, signature: bytes, payload_type: str = EVENT_PAYLOAD_TYPE) -> bytes:
    """The canonical bytes (:func:`canonical_bytes`) of the envelope ``seal`` makes, from a signature made elsewhere."""
    return event_pb2.Envelope(
        payload=payload, payload_type=payload_type, key_id=key_id, signature=signature
    ).SerializeToString(deterministic=True)


def signature_valid(envelope: event_pb2.Envelope, public: Ed25519PublicKey) -> bool:
    try:
        public.verify(envelope.signature, pae(envelope.payload_type, envelope.payload))
    except InvalidSignature:
        return False
    return True


def canonical_bytes(envelope: event_pb2.Envelope) -> bytes:
    """The envelope's known fields in deterministic order.

    This is what is stored, served and hashed into the origin's log, whatever
    extra bytes a relay may have added around the signed payload.
    """
    clean = event_pb2.Envelope(
        payload=envelope.payload,
        payload_type=envelope.payload_type,
        key_id=envelope.key_id,
        signature=envelope.signature,
    )
    return clean.SerializeToString(deterministic=True)
