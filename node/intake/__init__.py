"""Intake: the peers' logs in, verified against the trust bundle and applied idempotently."""

from credex.node.intake.peer_events import AcceptResult, Intake, Outcome, rejected

__all__ = ["AcceptResult", "Intake", "Outcome", "rejected"]
