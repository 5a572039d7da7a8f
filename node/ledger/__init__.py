"""The ledger: this node's own log — sequence numbers, signed events, the outbox, in one transaction per batch."""

from credex.node.ledger.appender import (
    Appending,
    AppendResult,
    Change,
    EntryTooLarge,
    Held,
    Ledger,
    Prepared,
    Signed,
)

__all__ = ["AppendResult", "Appending", "Change", "EntryTooLarge", "Held", "Ledger", "Prepared", "Signed"]
