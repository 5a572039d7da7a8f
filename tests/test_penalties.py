"""The 简易程序 rule of the Administrative Penalty Law (Art. 51), as reports apply it."""

from __future__ import annotations

from credex.domain.penalties import simple_procedure
from credex.v1 import record_pb2

from .report_setup import SERIOUS, WARNING, penalty


def test_simple_procedure_follows_the_administrative_penalty_law() -> None:
    def fine(amount: str, person: bool = False) -> record_pb2.Record:
        record = penalty(
            "x",
            penalty=record_pb2.PenaltyDetails(types=[record_pb2.PENALTY_TYPE_FINE], fine_yuan=amount),
        )
        if person:
            record.subject.type = record_pb2.SUBJECT_TYPE_NATURAL_PERSON
        return record

    assert simple_procedure(WARNING)
    assert simple_procedure(fine("3000")) and not simple_procedure(fine("3000.01"))
    assert simple_procedure(fine("200", person=True)) and not simple_procedure(fine("201", person=True))
    assert not simple_procedure(SERIOUS) and not simple_procedure(fine(""))


def test_a_fine_that_is_no_amount_keeps_the_penalty_in_every_report() -> None:
    """Not a number, negative or infinite: the law's amounts cannot apply, so it is no 简易程序."""
    for published in ("NaN", "sNaN", "-5000", "-0.01", "Infinity", "-Infinity"):
        record = penalty(
            "x", penalty=record_pb2.PenaltyDetails(types=[record_pb2.PENALTY_TYPE_FINE], fine_yuan=published)
        )
        assert not simple_procedure(record), published
