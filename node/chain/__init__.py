"""The credit chain: Merkle trees of every log, signed checkpoints, proofs, equivocation alarms, log audits."""

from credex.node.chain.alarms import CHECKPOINT_UNREACHABLE, SYNC_NOT_A_PEER, Alarms, clear_alarm, list_alarms
from credex.node.chain.checkpoints import CheckpointKeeper
from credex.node.chain.log_audit import AuditError, AuditReport, audit_origin
from credex.node.chain.merkle_book import LogBook
from credex.node.chain.proofs import (
    ProofInvalid,
    ProofUnavailable,
    check_inclusion,
    checkpoint_message,
    inclusion_proof,
    proof_from_json,
    proof_to_json,
)

__all__ = [
    "CHECKPOINT_UNREACHABLE",
    "SYNC_NOT_A_PEER",
    "Alarms",
    "AuditError",
    "AuditReport",
    "CheckpointKeeper",
    "LogBook",
    "ProofInvalid",
    "ProofUnavailable",
    "audit_origin",
    "check_inclusion",
    "checkpoint_message",
    "clear_alarm",
    "inclusion_proof",
    "list_alarms",
    "proof_from_json",
    "proof_to_json",
]
