"""Checks (逢办必查 / 联合奖惩): which records of a subject are in force, the measures they trigger, and feedback.

A stage between the store and the services: it reads and writes the store, asks the
measures catalogue, lists feedback that is overdue and measures lifted since, and knows nothing of gRPC or
callers beyond what they may see.
"""

from credex.node.checks.checking import (
    ANSWER_COLUMNS,
    CHECK_COLUMNS,
    Check,
    CheckFailure,
    CheckRequest,
    Feedback,
    Responsible,
    SubjectAnswer,
    record_feedback,
    run_check,
)
from credex.node.checks.lifted import LiftedMeasure, acknowledge, lifted_measures, refresh_lifted_metric
from credex.node.checks.overdue import OverdueFeedback, overdue_feedback, refresh_overdue_metric, watch_overdue

__all__ = [
    "ANSWER_COLUMNS",
    "CHECK_COLUMNS",
    "Check",
    "CheckFailure",
    "CheckRequest",
    "Feedback",
    "LiftedMeasure",
    "OverdueFeedback",
    "Responsible",
    "SubjectAnswer",
    "acknowledge",
    "lifted_measures",
    "overdue_feedback",
    "record_feedback",
    "refresh_lifted_metric",
    "refresh_overdue_metric",
    "run_check",
    "watch_overdue",
]
