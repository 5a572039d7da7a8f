"""What a case is: its kinds, states, the status codes platforms show, and what may follow what.

Objections follow the two review stages of the platforms' own case tables (中心审核 then
部门审核) and their status codes 0 待审核, 1 待核实, 2 已通过, 3 未通过, 4 已完成; repairs
follow ``submitted → accepted | not_accepted → under_review → approved | denied →
propagating → done`` with ``extended`` and ``withdrawn`` (credit-use.md, Repair 3 and
Objection 6). A decision for a case in a state that does not allow it is refused here,
before anything is written.
"""

from __future__ import annotations

from enum import StrEnum

import grpc

from credex.errors import CredexError


class CaseFailure(CredexError):
    """A case operation refused; ``code`` is the gRPC status it is answered with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Kind(StrEnum):
    OBJECTION = "objection"
    REPAIR = "repair"


class State(StrEnum):
    SUBMITTED = "submitted"  # filed; at the origin: taken in, record marked (objection)
    PLATFORM_REVIEW = "platform_review"  # objection: the platform checks it (中心审核)
    PROVIDER_REVIEW = "provider_review"  # objection: passed to the source unit (部门审核)
    DECIDED = "decided"  # objection: an outcome signed
    REVIEW = "review"  # objection: 复核 of the outcome asked for; the record is marked again
    ACCEPTED = "accepted"  # repair: the identifying unit took it (a step; the case goes under review)
    UNDER_REVIEW = "under_review"
    EXTENDED = "extended"  # repair: more time taken, with a reason
    APPROVED = "approved"  # repair: a step; the case goes propagating
    PROPAGATING = "propagating"  # repair: REPAIR signed, waiting for every region to confirm
    DONE = "done"
    DENIED = "denied"
    NOT_ACCEPTED = "not_accepted"
    WITHDRAWN = "withdrawn"


CLOSED = frozenset({State.DECIDED, State.DONE, State.DENIED, State.NOT_ACCEPTED, State.WITHDRAWN})

OBJECTION_OUTCOMES = frozenset(
    {"deleted", "corrected", "supplemented", "publication_ended", "delisted", "upheld", "unconfirmable"}
)
REPAIR_OUTCOMES = frozenset({"approved", "denied"})
# Outcomes that change the record in every region (everything but upheld and unconfirmable).
CHANGING = frozenset({"deleted", "corrected", "supplemented", "publication_ended", "delisted"})

# What each decision may follow, per kind.
ACCEPTABLE = {
    Kind.OBJECTION: frozenset({State.SUBMITTED, State.PLATFORM_REVIEW}),
    Kind.REPAIR: frozenset({State.SUBMITTED}),
}
DECIDABLE = {
    Kind.OBJECTION: frozenset({State.SUBMITTED, State.PLATFORM_REVIEW, State.PROVIDER_REVIEW, State.REVIEW}),
    Kind.REPAIR: frozenset({State.UNDER_REVIEW, State.EXTENDED}),
}
EXTENDABLE = {
    Kind.OBJECTION: frozenset({State.PLATFORM_REVIEW, State.PROVIDER_REVIEW, State.REVIEW}),
    Kind.REPAIR: frozenset({State.UNDER_REVIEW, State.EXTENDED}),
}

_LABELS = {0: "待审核", 1: "待核实", 2: "已通过", 3: "未通过", 4: "已完成"}


def status_code(state: str, outcome: str) -> int:
    """The platforms' status code of a case in ``state`` with ``outcome``."""
    if state in {State.SUBMITTED, State.PLATFORM_REVIEW}:
        return 0
    if state in {State.PROVIDER_REVIEW, State.UNDER_REVIEW, State.EXTENDED, State.ACCEPTED, State.REVIEW}:
        return 1
    if state == State.PROPAGATING or (state == State.DECIDED and outcome in CHANGING):
        return 2
    if state in {State.DECIDED, State.DENIED, State.NOT_ACCEPTED}:
        return 3
    return 4  # done, withdrawn


def status_label(code: int) -> str:
    return _LABELS[code]


def refuse_state(case_id: str, state: str, action: str) -> CaseFailure:
    closed = " (the case is closed)" if state in CLOSED else ""
    return CaseFailure(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"case {case_id} is {state}{closed}: it cannot be {action}; nothing changed",
    )


def invalid(message: str) -> CaseFailure:
    """A request or message refused for what it holds."""
    return CaseFailure(grpc.StatusCode.INVALID_ARGUMENT, message)
