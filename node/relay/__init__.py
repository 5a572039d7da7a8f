"""The relay: this node's own log out to Kafka, public records only, notices for the rest."""

from credex.node.relay.publisher import Relay

__all__ = ["Relay"]
