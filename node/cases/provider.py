"""Provider review (部门审核): the stage where the unit that provided a record decides an objection to it.

The platform (中心审核, the origin's operators) passes an objection it cannot settle itself to
the providing unit (credit-use.md, Objection 3 and 6). The unit is read from the record when
the case is passed on, and kept on the case: the record's 数据来源单位 if it names one, else
the unit that identified it (the deciding authority, or the list's identifying unit). From
then on the decision is the unit's, with its own deadline (``objection_provider_days`` of the
origin region) and its own step in the case file. A caller acts for a unit only where the
node's configuration binds it (``access.provider_units``, each name bound to its key), and it
decides only the cases passed to that unit: least privilege, since the unit is the one that
knows the facts of its own records and no others.
"""

from __future__ import annotations

from typing import Any

import grpc

from credex.node.cases.model import CaseFailure, State, refuse_state
from credex.v1 import record_pb2

# Where each kind of record names the unit that identified it, after the deciding authority.
_IDENTIFYING = ("identifying_unit", "awarding_unit", "accepting_unit", "evaluator")


def providing_unit(record: record_pb2.Record) -> str:
    """The USCC of the unit an objection to ``record`` is passed to; "" when the record names none."""
    units = [record.source_unit, record.deciding_authority]
    details = record.WhichOneof("details")
    if details is not None:
        held = getattr(record, details)
        units += [getattr(held, name) for name in _IDENTIFYING if name in held.DESCRIPTOR.fields_by_name]
    return next((unit.uscc for unit in units if unit.uscc), "")


def no_unit(record_id: str) -> CaseFailure:
    return CaseFailure(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"record {record_id} names no providing or identifying unit by its USCC, so no unit can be bound to decide"
        " it: the platform decides the objection itself; nothing changed",
    )


def check_decider(case: Any, unit: str) -> None:
    """Refuse a decision at provider review by anyone but the case's providing unit, and by the unit elsewhere."""
    state = case["state"]
    if not unit:
        if state == State.PROVIDER_REVIEW:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"case {case['case_id']} is with its providing unit {case['provider_unit']} (部门审核): the unit"
                " decides it; the platform may extend its deadline; nothing changed",
            )
        return
    if case["provider_unit"] != unit:
        raise CaseFailure(
            grpc.StatusCode.PERMISSION_DENIED,
            f"case {case['case_id']} was not passed to unit {unit}: a providing unit decides only the objections"
            " to records it provided that the platform passed to it; nothing changed",
        )
    if state != State.PROVIDER_REVIEW:
        raise refuse_state(case["case_id"], state, "decided by the providing unit (only at provider review)")
