"""The store: PostgreSQL pool and migrations, every origin's events and record state, evidence of what was refused.

Everything below this package is configuration; everything above reads and writes through it."""

from credex.node.store.database import ANALYZE_AFTER, NOTIFY_CHANNEL, Connection
from credex.node.store.events import STATUS_BY_TYPE, RecordState, record_bytes
from credex.node.store.evidence import POISON, Rejection, storable_text

__all__ = [
    "ANALYZE_AFTER",
    "NOTIFY_CHANNEL",
    "POISON",
    "STATUS_BY_TYPE",
    "Connection",
    "RecordState",
    "Rejection",
    "record_bytes",
    "storable_text",
]
