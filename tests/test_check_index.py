"""What a check remembers of the catalogue, and what it asks of the store, agree with the one definitions.

A check asks the catalogue once per record signature (node/checks/verdicts.py) and
asks the store only for records in force that the caller sees; these tests hold the
remembered verdicts to the catalogue's own answers for records that differ in every
field outside the signature, and the store's filter to :func:`in_force` and the
caller's visibility, on the real store. Standing is never remembered: a record revoked
stops being a hit on the very next check (tests/test_checks.py has the cross-region case).
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from credex.domain.measures import Catalogue
from credex.node import checks
from credex.node.checks import verdicts
from credex.node.store.events import RECORD_COLUMNS, in_force
from credex.v1 import lookup_pb2, record_pb2

from .conftest import TestFederation


def verdict_of(
    index: verdicts.CatalogueIndex, record: record_pb2.Record, scenario: str, region: str | None
) -> verdicts.Verdict:
    """The index's verdict on ``record`` for a unit in ``region`` checking in ``scenario``, as a check asks it."""
    return index.place(scenario, region).verdict(record, verdicts.signature(record))


def incentives_of(
    index: verdicts.CatalogueIndex,
    records: list[record_pb2.Record],
    scenario: str,
    today: dt.date,
    subject_type: int,
    region: str | None,
) -> tuple[object, ...]:
    """The incentives the index offers a subject with ``records`` in force, as a check asks for them."""
    place = index.place(scenario, region)
    judged = [(r, signed, place.verdict(r, signed)) for r in records for signed in (verdicts.signature(r),)]
    return place.incentives(judged, today, subject_type)


CATALOGUE = Catalogue.shipped()
TODAY = dt.date(2026, 6, 1)
UNIT = "11310000MB0000000X"  # shape only: run_check reads its division for provincial measures
# What the catalogue reads of a record: kept in both records of a pair, everything else differs.
_SIGNATURE_FIELDS = {
    ("credex.v1.Record", "kind"),
    ("credex.v1.Record", "decision_date"),  # the look-back reads it; incentives are remembered with it
    ("credex.v1.Subject", "type"),
    ("credex.v1.BlackListDetails", "list_name"),
    ("credex.v1.RedListDetails", "list_name"),
    ("credex.v1.PenaltyDetails", "severity"),
    ("credex.v1.EvaluationDetails", "grade"),
    ("credex.v1.CommitmentDetails", "fulfilment"),
    ("credex.v1.CommitmentDetails", "type"),
    ("credex.v1.ContractDetails", "stage"),
}
_DETAILS = {
    record_pb2.KIND_LICENCE: "licence",
    record_pb2.KIND_PENALTY: "penalty",
    record_pb2.KIND_BLACK_LIST: "black_list",
    record_pb2.KIND_RED_LIST: "red_list",
    record_pb2.KIND_DISHONEST_DEBTOR: "dishonest_debtor",
    record_pb2.KIND_COMMITMENT: "commitment",
    record_pb2.KIND_EVALUATION: "evaluation",
    record_pb2.KIND_CONTRACT: "contract",
}


def variants() -> list[record_pb2.Record]:
    """Records of every kind a trigger names (and a licence), over every value the triggers narrow by."""
    names = [f for lt in CATALOGUE.list_types.values() for f in lt.match] + ["某某名单"]
    made = []
    for kind, details in _DETAILS.items():
        for subject_type in record_pb2.SubjectType.values():
            base = record_pb2.Record(kind=kind, decision_date="2025-03-01")
            base.subject.type = subject_type
            getattr(base, details).SetInParent()
            choices: list[tuple[str, list[object]]] = []
            if kind in (record_pb2.KIND_BLACK_LIST, record_pb2.KIND_RED_LIST):
                choices.append(("list_name", list(names)))
            for fd in getattr(base, details).DESCRIPTOR.fields:
                if (fd.containing_type.full_name, fd.name) in _SIGNATURE_FIELDS and fd.enum_type is not None:
                    choices.append((fd.name, [v.number for v in fd.enum_type.values]))
            for values in itertools.product(*(c for _, c in choices)):
                record = record_pb2.Record()
                record.CopyFrom(base)
                for (name, _), value in zip(choices, values, strict=True):
                    setattr(getattr(record, details), name, value)
                made.append(record)
    return made


def scrambled(record: record_pb2.Record, rng: random.Random) -> record_pb2.Record:
    """``record`` with every field outside the signature set to something else."""
    other = record_pb2.Record()
    other.CopyFrom(record)
    _scramble(other, rng)
    return other


def _scramble(message: Message, rng: random.Random) -> None:
    descriptor = message.DESCRIPTOR
    for fd in descriptor.fields:
        if (descriptor.full_name, fd.name) in _SIGNATURE_FIELDS:
            continue
        if fd.containing_oneof is not None and message.WhichOneof(fd.containing_oneof.name) != fd.name:
            continue  # another kind's details: setting them would change the record's kind of details
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if not fd.is_repeated and (fd.containing_oneof is not None or fd.name in ("subject", "deciding_authority")):
                _scramble(getattr(message, fd.name), rng)
        elif fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated:
            setattr(message, fd.name, uuid.UUID(int=rng.getrandbits(128)).hex[: rng.randrange(1, 20)])
        elif fd.enum_type is not None:
            numbers = [v.number for v in fd.enum_type.values]
            if fd.is_repeated:
                getattr(message, fd.name).extend(rng.sample(numbers, rng.randrange(len(numbers) + 1)))
            else:
                setattr(message, fd.name, rng.choice(numbers))


def test_a_remembered_verdict_is_the_catalogues_own_answer_for_every_record_of_the_signature() -> None:
    index = verdicts.CatalogueIndex(CATALOGUE)
    rng = random.Random(9)
    records = variants()
    assert len(records) > 100
    for scenario, region in itertools.product(CATALOGUE.scenarios, (None, "310000", "320115", "330000", "110000")):
        for record in records:
            verdict_of(index, record, scenario, region)  # remembered from this record ...
            other = scrambled(record, rng)  # ... and answered for this one
            verdict = verdict_of(index, other, scenario, region)
            assert verdict.measures == tuple(CATALOGUE.measures_for(other, scenario, region=region))
            assert verdict.negative == CATALOGUE.is_negative(other)
            assert verdict.excludes_notify_commit == (not CATALOGUE.notify_commit([other]).available)


def test_remembered_incentives_are_the_catalogues_for_subjects_alike_in_signatures_and_dates() -> None:
    index = verdicts.CatalogueIndex(CATALOGUE)
    rng = random.Random(4)
    records = [r for r in variants() if r.subject.type == record_pb2.SUBJECT_TYPE_LEGAL_ENTITY]
    for scenario in CATALOGUE.scenarios:
        for _ in range(40):
            held = rng.sample(records, rng.randrange(0, 4))
            for record in held:
                record.decision_date = (TODAY - dt.timedelta(days=rng.choice((10, 400, 1200, 2000)))).isoformat()
            incentives_of(index, held, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000")
            alike = [scrambled(r, rng) for r in held]
            assert incentives_of(
                index, alike, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000"
            ) == tuple(CATALOGUE.incentives_for(alike, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000"))


async def test_a_check_reads_exactly_the_records_in_force_that_the_caller_sees(federation: TestFederation) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    statuses = lookup_pb2.EntryStatus.values()
    ends = [None, TODAY - dt.timedelta(days=1), TODAY, TODAY + dt.timedelta(days=1)]
    levels = record_pb2.SharingLevel.values()
    rows, expected = [], set()
    for n, (status, end, level) in enumerate(itertools.product(statuses, ends, levels)):
        subject = f"91310000{n:09d}X"[:18]
        record = record_pb2.Record(
            record_id=f"310000-T-{n}", origin="310000", kind=record_pb2.KIND_BLACK_LIST, decision_date="2025-01-02"
        )
        record.subject.uscc, record.subject.type = subject, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
        record.black_list.list_name = "严重失信主体名单"
        encoded = record.SerializeToString()
        rows.append(
            (record.record_id, "310000", subject, record.kind, n + 1, status, level, end, bytes(32), encoded, False)
        )
        if in_force(status, end, TODAY) and sees(level, lookup_pb2.ENTRY_STATUS_ACTIVE):
            expected.add(subject)
    async with node.pool.acquire() as conn:
        await conn.copy_records_to_table("records", records=rows, columns=RECORD_COLUMNS)
    request = checks.CheckRequest(
        subjects=[row[2] for row in rows],
        scenario="政府采购",
        requesting_unit=UNIT,
        purpose="供应商资格审查",
        legal_basis="政府采购法 第二十二条",
        caller="test",
        role="government",
    )
    answers = (await checks.run_check(node.pool, CATALOGUE, request, sees, TODAY)).answers
    assert expected and len(expected) < len(rows)
    assert {a.subject_id for a in answers if a.hits} == expected
    assert {a.subject_id for a in answers if not a.notify_commit_available} == expected


def sees(level: int, status: int, kind: int = record_pb2.KIND_BLACK_LIST) -> bool:
    """A visibility rule that hides one sharing level and one kind, so the store's filter is seen to ask it."""
    return (
        level != record_pb2.SHARING_LEVEL_RESTRICTED
        and kind != record_pb2.KIND_RISK_CLASS
        and status == lookup_pb2.ENTRY_STATUS_ACTIVE
    )


def test_incentives_are_remembered_by_the_newest_negative_decision_and_answered_as_the_catalogue_would() -> None:
    """Subjects alike in signatures and in their newest negative decision (older ones and the dates of
    records that are not negative differ) get the catalogue's own answer from what was remembered."""
    index = verdicts.CatalogueIndex(CATALOGUE)
    rng = random.Random(11)
    records = [r for r in variants() if r.subject.type == record_pb2.SUBJECT_TYPE_LEGAL_ENTITY]
    days = (10, 200, 400, 800, 1200, 2000, 4000)
    for scenario in CATALOGUE.scenarios:
        for _ in range(60):
            held = rng.sample(records, rng.randrange(1, 5))
            for record in held:
                record.decision_date = (TODAY - dt.timedelta(days=rng.choice(days))).isoformat()
            if rng.random() < 0.2:
                held[0].decision_date = "not a date"  # counts as recent
            incentives_of(index, held, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000")
            negative = [r for r in held if CATALOGUE.is_negative(r)]
            newest = max((r.decision_date for r in negative), default=None, key=lambda d: (d == "not a date", d))
            alike = [scrambled(r, rng) for r in held]
            for record in alike:  # every date moved further back, but the newest negative one kept
                if record.decision_date != newest:
                    record.decision_date = "2001-01-01" if newest != "not a date" else record.decision_date
            assert incentives_of(
                index, alike, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000"
            ) == tuple(CATALOGUE.incentives_for(alike, scenario, TODAY, record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, "310000"))
