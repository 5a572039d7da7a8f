"""Intake: the peers' logs in, verified against the trust bundle and applied idempotently."""

from credex.node.intake.peer_events import Intake

__all__ = ["Intake"]
