"""A check's answer on the wire: the CheckResponse's bytes, joined from parts most of which are encoded once.

A hit shows a few fields of its own record (origin, id, decision date, identifying
unit), its window and dispute, and what the catalogue says of every record of its
signature: the kind, the list or severity with its scale, and the measures with their
basis, which are most of its bytes. Those are encoded once per verdict, each measure
once, and each subject's answer is joined from them without a message object per hit;
the service parses the whole response once, in C. tests/test_check_wire.py holds these
bytes to what protobuf encodes from the messages built field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from credex.domain.measures import Measure
from credex.node.checks.verdicts import Verdict
from credex.protowire import nested, tag, text, varint
from credex.v1 import check_pb2, record_pb2

_SEVERITIES = {
    record_pb2.SEVERITY_MINOR: "轻微",
    record_pb2.SEVERITY_GENERAL: "一般",
    record_pb2.SEVERITY_SERIOUS: "严重",
}
# CheckedMeasure
_M_ID, _M_NAME, _M_CATEGORY, _M_CLASS, _M_BASIS, _M_BODY = (tag(n, 2) for n in range(1, 7))
# CheckHit
_ORIGIN, _RECORD_ID, _KIND, _SHOWN, _SCALE, _DECIDED, _WINDOW_END = (tag(n, 2) for n in range(1, 8))
_DISPUTED = tag(8, 0) + b"\x01"
_MEASURE, _IDENTIFYING_UNIT, _ROLE, _PERSON = tag(9, 2), tag(10, 2), tag(11, 0), tag(12, 2)
# SubjectAnswer
_SUBJECT, _HIT, _INCENTIVE, _EXCLUDED = tag(1, 2), tag(2, 2), tag(3, 2), tag(5, 2)
_NOTIFY_COMMIT = tag(4, 0) + b"\x01"
_HITS = tag(6, 0) + varint(check_pb2.ANSWER_STATUS_HITS)
_CLEAR = tag(6, 0) + varint(check_pb2.ANSWER_STATUS_CLEAR)
# CheckResponse
_CHECK_ID, _SCENARIO, _ANSWER = tag(1, 2), tag(2, 2), tag(3, 2)

_KEPT = 10_000  # encodings kept per kind (measures, lists of measures, verdicts); catalogues are immutable


def scale_of(record: record_pb2.Record) -> tuple[str, str]:
    """(list name or severity, the scale it was published in) as the hit shows them."""
    if record.kind == record_pb2.KIND_PENALTY:
        return _SEVERITIES.get(record.penalty.severity, "未分级"), "处罚严重程度(轻微/一般/严重)"
    if record.kind == record_pb2.KIND_BLACK_LIST:
        return record.black_list.list_name, "black_list"
    if record.kind == record_pb2.KIND_RED_LIST:
        return record.red_list.list_name, "red_list"
    return "", record.WhichOneof("details") or ""


def kind_name(kind: int) -> str:
    """A record kind as a hit names it: ``penalty``, ``black_list``."""
    return record_pb2.Kind.Name(kind).removeprefix("KIND_").lower()  # type: ignore[arg-type]


# Keyed by the object's id, the object held beside its bytes so that its id stays its own.
_MEASURES: dict[int, tuple[Measure, bytes]] = {}
_LISTS: dict[int, tuple[tuple[Measure, ...], bytes, bytes]] = {}
_VERDICTS: dict[int, tuple[Verdict, bytes, bytes]] = {}


def measure(m: Measure) -> bytes:
    """A CheckedMeasure's bytes: the measure, its class and its basis, as every hit and incentive shows it."""
    held = _MEASURES.get(id(m))
    if held is None or held[0] is not m:
        if len(_MEASURES) >= _KEPT:
            _MEASURES.clear()
        held = _MEASURES[id(m)] = (
            m,
            b"".join(
                (
                    text(_M_ID, m.id),
                    text(_M_NAME, m.name),
                    text(_M_CATEGORY, m.category),
                    text(_M_CLASS, m.measure_class or ""),
                    text(_M_BASIS, str(m.basis)),
                    text(_M_BODY, m.implementing_body),
                )
            ),
        )
    return held[1]


def _listed(measures: tuple[Measure, ...]) -> tuple[bytes, bytes]:
    """(as a hit's measures, as an answer's incentives) of a tuple of measures the index keeps."""
    held = _LISTS.get(id(measures))
    if held is None or held[0] is not measures:
        if len(_LISTS) >= _KEPT:
            _LISTS.clear()
        encoded = [measure(m) for m in measures]
        held = _LISTS[id(measures)] = (
            measures,
            b"".join(nested(_MEASURE, e) for e in encoded),
            b"".join(nested(_INCENTIVE, e) for e in encoded),
        )
    return held[1], held[2]


def incentives(measures: tuple[Measure, ...]) -> bytes:
    """An answer's incentives field, every item of it."""
    return _listed(measures)[1]


def judged(verdict: Verdict, record: record_pb2.Record) -> tuple[bytes, bytes]:
    """What a hit shows of every record of ``record``'s signature: (kind, list or severity and scale; measures).

    Kept per verdict: the index makes one per signature, scenario and province, and the
    kind, the list name or severity and the scale are read from the signature's fields.
    """
    held = _VERDICTS.get(id(verdict))
    if held is None or held[0] is not verdict:
        if len(_VERDICTS) >= _KEPT:
            _VERDICTS.clear()
        shown, scale = scale_of(record)
        held = _VERDICTS[id(verdict)] = (
            verdict,
            text(_KIND, kind_name(record.kind)) + text(_SHOWN, shown) + text(_SCALE, scale),
            _listed(verdict.measures)[0],
        )
    return held[1], held[2]


def hit(
    origin: str,
    record_id: str,
    shown: tuple[bytes, bytes],
    decision_date: str,
    window_end: str,
    disputed: bool,
    identifying_unit: str,
    role: int = 0,
    person: str = "",
) -> bytes:
    """One CheckHit, as an item of its subject's answer; ``shown`` is :func:`judged`'s."""
    data = b"".join(
        (
            text(_ORIGIN, origin),
            text(_RECORD_ID, record_id),
            shown[0],
            text(_DECIDED, decision_date),
            text(_WINDOW_END, window_end),
            _DISPUTED if disputed else b"",
            shown[1],
            text(_IDENTIFYING_UNIT, identifying_unit),
            _ROLE + varint(role) if role else b"",
            text(_PERSON, person),
        )
    )
    return _HIT + varint(len(data)) + data


def answer(
    subject_id: str, hits: Sequence[bytes], incentives_field: bytes, notify_commit: bool, excluded_by: Iterable[str]
) -> bytes:
    """One SubjectAnswer: ``hits`` from :func:`hit`, ``incentives_field`` from :func:`incentives`."""
    return b"".join(
        (
            text(_SUBJECT, subject_id),
            *hits,
            incentives_field,
            _NOTIFY_COMMIT if notify_commit else b"",
            *(text(_EXCLUDED, record_id) if record_id else _EXCLUDED + b"\x00" for record_id in excluded_by),
            _HITS if hits else _CLEAR,
        )
    )


_CLEAN: dict[int, tuple[tuple[Measure, ...], bytes]] = {}


def clean(subject_id: str, offered: tuple[Measure, ...]) -> bytes:
    """:func:`answer` of a subject without a hit or a record excluding 告知承诺 (most subjects), ``offered`` the
    incentives: all but the subject's id encoded once per tuple of incentives."""
    held = _CLEAN.get(id(offered))
    if held is None or held[0] is not offered:
        if len(_CLEAN) >= _KEPT:
            _CLEAN.clear()
        held = _CLEAN[id(offered)] = (offered, incentives(offered) + _NOTIFY_COMMIT + _CLEAR)
    return text(_SUBJECT, subject_id) + held[1]


def response(check_id: str, scenario: str, answers: Iterable[bytes]) -> bytes:
    """The CheckResponse: the check's id, its scenario's code and every subject's answer from :func:`answer`."""
    return b"".join((text(_CHECK_ID, check_id), text(_SCENARIO, scenario), *(nested(_ANSWER, a) for a in answers)))
