"""Objections (异议) and credit repairs (信用修复) as cross-region cases: filed anywhere, decided at the origin."""

from credex.node.cases.courier import CaseCourier
from credex.node.cases.desk import CaseDesk
from credex.node.cases.filing import Filing, Viewer, case_id_of
from credex.node.cases.messages import MessageRejected, verify_decision
from credex.node.cases.model import CaseFailure, Kind, State

__all__ = [
    "CaseCourier",
    "CaseDesk",
    "CaseFailure",
    "Filing",
    "Kind",
    "MessageRejected",
    "State",
    "Viewer",
    "case_id_of",
    "verify_decision",
]
