"""Witnesses (C2SP tlog-witness, tlog-cosignature): this node cosigning its peers' checkpoints, and
collecting the cosignatures of its own from the witnesses the trust bundle names."""

from credex.node.witness.collector import CosignatureCollector, CosignatureInvalid
from credex.node.witness.cosigner import Outcome, Witness, WitnessRefused, node_witness

__all__ = ["CosignatureCollector", "CosignatureInvalid", "Outcome", "Witness", "WitnessRefused", "node_witness"]
