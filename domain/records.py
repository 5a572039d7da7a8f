"""A canonical record as a platform's row becomes one: the protobuf record and where it came from.

This is what the take-in side hands to the ledger. It carries no store columns
(digest, subject id, sharing level as a column): those are the ledger's and the
store's to derive, by the rules of :mod:`credex.domain.identity`.

Large files are mapped in worker processes, so a taken record must cross a
process boundary cheaply. It does so as its canonical encoding — the
deterministic serialization every signature covers — which the worker computes
anyway to pickle a message; the receiving side parses it back and keeps those
bytes, so the ledger never serializes the record a second time.
"""

from __future__ import annotations

from typing import NamedTuple

from credex.v1 import record_pb2


class Provenance(NamedTuple):
    """Where a record was taken in from: the file, page or poll; the row in it; the profile that mapped it."""

    source: str = ""
    locator: str = ""
    profile: str = ""


def canonical_bytes(record: record_pb2.Record) -> bytes:
    """The one encoding of a record that is stored, digested and signed."""
    return record.SerializeToString(deterministic=True)


class TakenRecord:
    """A record mapped from a platform row, before the ledger makes it an event."""

    __slots__ = ("_encoded", "provenance", "record", "withdrawal")

    def __init__(
        self,
        record: record_pb2.Record,
        provenance: Provenance,
        encoded: bytes | None = None,
        withdrawal: str = "",
    ) -> None:
        self.record = record
        self.provenance = provenance
        self._encoded = encoded
        # The platform's own withdrawal of the record (公示状态 撤销 / 删除), as a reason; empty if in publication.
        self.withdrawal = withdrawal

    @property
    def encoded(self) -> bytes:
        """The record's canonical bytes, computed once."""
        if self._encoded is None:
            self._encoded = canonical_bytes(self.record)
        return self._encoded

    def __reduce__(self) -> tuple[object, tuple[bytes, Provenance, str]]:
        return _from_canonical, (self.encoded, self.provenance, self.withdrawal)

    def __repr__(self) -> str:
        return f"TakenRecord({self.record.record_id!r}, {self.provenance!r})"


def _from_canonical(encoded: bytes, provenance: Provenance, withdrawal: str = "") -> TakenRecord:
    return TakenRecord(record_pb2.Record.FromString(encoded), provenance, encoded, withdrawal)
