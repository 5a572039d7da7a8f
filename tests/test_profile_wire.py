"""GetProfile puts each entry's stored record and envelope on the wire as stored: the answer is the one
the protobuf messages would make, byte for byte, and a supervisor's regional kinds are still judged.

The profile is encoded by hand (node/services/lookup.py) so that the stored bytes are not parsed
and serialized again on every call; these tests hold it to what protobuf itself encodes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from credex.domain.publicity import publicity_today
from credex.node.services.access import Caller
from credex.node.services.lookup import _profile, _visible_entries
from credex.v1 import event_pb2, lookup_pb2, record_pb2

ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE


def row(record: record_pb2.Record, seq: int, envelope: bytes, status: int = ACTIVE, disputed: bool = False) -> Any:
    """A row as _ENTRY_QUERY returns it (asyncpg.Record is a mapping by column name)."""
    return {
        "kind": record.kind,
        "record": record.SerializeToString(),
        "origin": record.origin,
        "seq": seq,
        "status": status,
        "disputed": disputed,
        "sharing_level": record.sharing_level,
        "publicity_end": publicity_today() + dt.timedelta(days=1),  # in force, on the day the test runs
        "envelope": envelope,
    }


def by_messages(subject: str, rows: list[Any]) -> lookup_pb2.Profile:
    """The profile as protobuf builds it from parsed messages: what GetProfile answered before."""
    profile = lookup_pb2.Profile(subject_id=subject)
    for r in rows:
        entry = profile.entries.add(origin=r["origin"], seq=r["seq"], status=r["status"], disputed=r["disputed"])
        entry.record.ParseFromString(r["record"])
        entry.envelope.ParseFromString(r["envelope"])
    return profile


records = st.builds(
    lambda rid, origin, name, kind: record_pb2.Record(
        record_id=rid,
        origin=origin,
        kind=kind,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        subject=record_pb2.Subject(uscc="91310115MA1K4LXX1A", name=name),
    ),
    st.text(max_size=40),
    st.sampled_from(["310000", "320000", "330000"]),
    st.text(max_size=300),
    st.sampled_from([record_pb2.KIND_LICENCE, record_pb2.KIND_PENALTY, record_pb2.KIND_BLACK_LIST]),
)
envelopes = st.builds(
    lambda payload, key: event_pb2.Envelope(
        payload_type="credex.v1.Event", key_id=key, payload=payload
    ).SerializeToString(),
    st.binary(max_size=3000),
    st.text(max_size=40),
)


@given(
    st.lists(
        st.tuples(records, st.integers(0, 2**63 - 1), envelopes, st.booleans()),
        max_size=8,
    ),
    st.text(max_size=30),
)
def test_a_profile_is_byte_for_byte_what_protobuf_encodes_from_the_parsed_messages(
    entries: list[tuple[record_pb2.Record, int, bytes, bool]], subject: str
) -> None:
    rows = [row(record, seq, envelope, disputed=disputed) for record, seq, envelope, disputed in entries]
    profile, shown = _profile(subject, rows, Caller("anyone", "government"))
    expected = by_messages(subject, rows)
    assert profile == expected
    assert profile.SerializeToString() == expected.SerializeToString()
    assert shown == [f"{r['origin']}#{r['seq']}" for r in rows]
    assert _visible_entries(rows, Caller("anyone", "government")) == list(expected.entries)


def test_a_supervisor_is_shown_its_regions_risk_classes_only_and_other_callers_none() -> None:
    grade = record_pb2.Record(
        record_id="R-1",
        origin="310000",
        kind=record_pb2.KIND_RISK_CLASS,
        sharing_level=record_pb2.SHARING_LEVEL_GOVERNMENT,
    )
    grade.subject.uscc = "91310115MA1K4LXX1A"
    rows = [row(grade, 7, b"")]
    assert _profile("s", rows, Caller("shanghai-supervision", "supervision", "310000"))[1] == ["310000#7"]
    assert _profile("s", rows, Caller("zhejiang-supervision", "supervision", "330000"))[1] == []
    assert _profile("s", rows, Caller("government-office", "government"))[1] == []


def test_lengths_past_two_varint_bytes_are_encoded_as_protobuf_does() -> None:
    record = record_pb2.Record(
        record_id="R-2", origin="310000", kind=record_pb2.KIND_LICENCE, sharing_level=record_pb2.SHARING_LEVEL_PUBLIC
    )
    record.subject.name = "名" * 7000  # 21,000 bytes: a three-byte length
    envelope = event_pb2.Envelope(payload=bytes(40000), payload_type="credex.v1.Event").SerializeToString()
    rows = [row(record, 2**35, envelope, disputed=True)]
    profile, _ = _profile("91310115MA1K4LXX1A", rows, Caller("anyone", "government"))
    assert profile.SerializeToString() == by_messages("91310115MA1K4LXX1A", rows).SerializeToString()
