"""A check's answer is written to the wire by hand (node/checks/wire.py), hit by hit, without a message object
per hit: these tests hold its bytes to what protobuf encodes from the messages built field by field, as the
service built them before.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from credex.domain.measures import Catalogue, Measure
from credex.node.checks import wire
from credex.node.checks.verdicts import Verdict
from credex.protowire import varint
from credex.v1 import check_pb2, record_pb2

MEASURES = Catalogue.shipped().measures
texts = st.text(max_size=30)
# (record, its measures, window end, disputed, responsible role, responsible person)
Found = tuple[record_pb2.Record, tuple[Measure, ...], dt.date | None, bool, int, str]
# (subject id, hits, incentives, 告知承诺 available, excluded by)
Answer = tuple[str, list[Found], tuple[Measure, ...], bool, list[str]]


def checked(m: Measure) -> check_pb2.CheckedMeasure:
    return check_pb2.CheckedMeasure(
        id=m.id,
        name=m.name,
        category=m.category,
        measure_class=m.measure_class or "",
        basis=str(m.basis),
        implementing_body=m.implementing_body,
    )


@st.composite
def records(draw: st.DrawFn) -> record_pb2.Record:
    """Records of the kinds a hit shows differently, with the fields a hit reads (some left empty)."""
    record = record_pb2.Record(
        origin=draw(st.sampled_from(["", "310000", "320000"])),
        record_id=draw(texts),
        decision_date=draw(st.sampled_from(["", "2025-03-01", "2024-12-31"])),
        kind=draw(st.sampled_from(record_pb2.Kind.values())),
    )
    record.subject.type = draw(st.sampled_from(record_pb2.SubjectType.values()))
    details = draw(st.sampled_from(["black_list", "red_list", "penalty", "licence", "commitment", None]))
    if details == "black_list":
        record.black_list.list_name = draw(texts)
        record.black_list.identifying_unit.name = draw(texts)
    elif details == "red_list":
        record.red_list.list_name = draw(texts)
    elif details == "penalty":
        record.penalty.severity = draw(st.sampled_from(record_pb2.Severity.values()))
    elif details is not None:
        getattr(record, details).SetInParent()
    record.deciding_authority.name = draw(texts)
    return record


hits = st.tuples(
    records(),
    st.lists(st.sampled_from(MEASURES), max_size=3).map(tuple),
    st.one_of(st.none(), st.dates(dt.date(2020, 1, 1), dt.date(2040, 1, 1))),
    st.booleans(),
    st.sampled_from([0, 1, 2, 3]),
    texts,
)
answers = st.tuples(
    texts,
    st.lists(hits, max_size=4),
    st.lists(st.sampled_from(MEASURES), max_size=3).map(tuple),
    st.booleans(),
    st.lists(texts, max_size=3),
)


def by_messages(check_id: str, scenario: str, subjects: list[Answer]) -> check_pb2.CheckResponse:
    """The response as the service built it from messages, field by field."""
    response = check_pb2.CheckResponse(check_id=check_id, scenario=scenario)
    for subject_id, found, incentives, notify, excluded in subjects:
        made = []
        for record, measures, window_end, disputed, role, person in found:
            shown, scale = wire.scale_of(record)
            made.append(
                check_pb2.CheckHit(
                    origin=record.origin,
                    record_id=record.record_id,
                    kind=record_pb2.Kind.Name(record.kind).removeprefix("KIND_").lower(),
                    list_or_severity=shown,
                    scale=scale,
                    decision_date=record.decision_date,
                    window_end=window_end.isoformat() if window_end else "",
                    disputed=disputed,
                    measures=[checked(m) for m in measures],
                    identifying_unit=record.black_list.identifying_unit.name or record.deciding_authority.name,
                    responsible_role=role,  # type: ignore[arg-type]
                    responsible_person=person if role else "",
                )
            )
        response.subjects.append(
            check_pb2.SubjectAnswer(
                subject_id=subject_id,
                hits=made,
                incentives=[checked(m) for m in incentives],
                notify_commit_available=notify,
                excluded_by=excluded,
                status=check_pb2.ANSWER_STATUS_HITS if made else check_pb2.ANSWER_STATUS_CLEAR,
            )
        )
    return response


def by_hand(check_id: str, scenario: str, subjects: list[Answer]) -> bytes:
    encoded = []
    for subject_id, found, incentives, notify, excluded in subjects:
        made = [
            wire.hit(
                record.origin,
                record.record_id,
                wire.judged(Verdict(measures, negative=True, excludes_notify_commit=False), record),
                record.decision_date,
                window_end.isoformat() if window_end else "",
                disputed,
                record.black_list.identifying_unit.name or record.deciding_authority.name,
                role,
                person if role else "",
            )
            for record, measures, window_end, disputed, role, person in found
        ]
        if not made and notify and not excluded:  # the short way of most subjects
            encoded.append(wire.clean(subject_id, incentives))
        else:
            encoded.append(wire.answer(subject_id, made, wire.incentives(incentives), notify, excluded))
    return wire.response(check_id, scenario, encoded)


@settings(max_examples=300)
@given(texts, texts, st.lists(answers, max_size=5))
def test_a_check_answer_is_byte_for_byte_what_protobuf_encodes_from_the_messages(
    check_id: str, scenario: str, subjects: list[Answer]
) -> None:
    expected = by_messages(check_id, scenario, subjects)
    encoded = by_hand(check_id, scenario, subjects)
    assert encoded == expected.SerializeToString()
    assert check_pb2.CheckResponse.FromString(encoded) == expected


def test_long_fields_take_lengths_past_two_varint_bytes_as_protobuf_does() -> None:
    record = record_pb2.Record(record_id="R-1", origin="310000", kind=record_pb2.KIND_BLACK_LIST)
    record.black_list.list_name = "严重失信主体名单" * 3000  # 72,000 bytes: a three-byte length
    found: Found = (record, tuple(MEASURES[:40]), None, True, 0, "")
    subjects: list[Answer] = [("91310115MA1K4LXX1A", [found], (), False, ["R-1"])]
    assert by_hand("c", "政府采购", subjects) == by_messages("c", "政府采购", subjects).SerializeToString()
    assert varint(2**35) == b"\x80\x80\x80\x80\x80\x01"
