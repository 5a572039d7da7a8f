"""Sync: the repair path beside Kafka — fetching what a peer's log has and this node lacks, over gRPC."""

from credex.node.sync.catch_up import Sync

__all__ = ["Sync"]
