"""The credit chain: Merkle trees of every log, signed checkpoints, proofs, equivocation alarms, log audits,
and the wanted ranges of the peers' logs that intake and the keeper put in and sync takes out."""

from credex.node.chain.alarms import AlarmKind, Alarms, clear_alarm, list_alarms
from credex.node.chain.checkpoints import AGREED, CheckpointKeeper, CheckpointState, Receipt, Received
from credex.node.chain.log_audit import AuditError, AuditReport, audit_origin
from credex.node.chain.merkle_book import LogBook, TreeView
from credex.node.chain.proofs import (
    HeldLeaf,
    ProofInvalid,
    ProofUnavailable,
    check_inclusion,
    checkpoint_message,
    inclusion_proof,
    proof_from_json,
    proof_to_json,
)
from credex.node.chain.tile_audit import audit_origin_over_tiles
from credex.node.chain.wanted import Wanted, WantedRanges, Why

__all__ = [
    "AGREED",
    "AlarmKind",
    "Alarms",
    "AuditError",
    "AuditReport",
    "CheckpointKeeper",
    "CheckpointState",
    "HeldLeaf",
    "LogBook",
    "ProofInvalid",
    "ProofUnavailable",
    "Receipt",
    "Received",
    "TreeView",
    "Wanted",
    "WantedRanges",
    "Why",
    "audit_origin",
    "audit_origin_over_tiles",
    "check_inclusion",
    "checkpoint_message",
    "clear_alarm",
    "inclusion_proof",
    "list_alarms",
    "proof_from_json",
    "proof_to_json",
]
