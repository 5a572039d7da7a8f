"""Events as a forger would write them: a payload to seal with whichever key a test wants, genuine or not.

Shared by the tests of tampered, hostile and revoked-key messages, which differ in the key and the
claims, not in how an event is put together.
"""

from __future__ import annotations

import datetime as dt
import uuid

from credex.v1 import event_pb2, record_pb2

FORGED_SUBJECT = record_pb2.Subject(uscc="91310000600037341L", name="forged")


def event_payload(
    origin: str,
    seq: int,
    record_id: str = "",
    *,
    recorded_at: dt.datetime | None = None,
    subject: record_pb2.Subject = FORGED_SUBJECT,
    sharing_level: record_pb2.SharingLevel.ValueType = record_pb2.SHARING_LEVEL_UNSPECIFIED,
    event_type: int = event_pb2.EVENT_TYPE_UPSERT,
    standing: int = event_pb2.STANDING_UNSPECIFIED,
) -> bytes:
    """The payload bytes of an upsert of a penalty at ``seq`` of ``origin``'s log, recorded now unless given.

    ``event_type`` and ``standing`` may be numbers no credex knows: what a newer credex would send.
    """
    record_id = record_id or f"{origin}-CF-forged{seq}"
    event = event_pb2.Event(
        origin=origin,
        seq=seq,
        event_id=str(uuid.uuid4()),
        type=event_pb2.EventType.ValueType(event_type),
        standing=event_pb2.Standing.ValueType(standing),
        record_id=record_id,
        record=record_pb2.Record(
            record_id=record_id,
            origin=origin,
            kind=record_pb2.KIND_PENALTY,
            subject=subject,
            sharing_level=sharing_level,
        ),
    )
    event.recorded_at.FromDatetime(recorded_at or dt.datetime.now(dt.UTC))
    return event.SerializeToString(deterministic=True)


def event_in(envelope: bytes) -> event_pb2.Event:
    """The event an envelope (as stored or published) carries, unverified: for reading what was signed."""
    return event_pb2.Event.FromString(event_pb2.Envelope.FromString(envelope).payload)
