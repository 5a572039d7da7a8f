"""Who a record is about and which record it is: the identity rules, in one place.

Every part of a node that files, finds or checks records by subject or by record
id asks this module, so the profile that maps a row, the store that indexes a
record and the lookup service that answers for a subject can never disagree on
what "the same subject" or "the same record" means.

- subject id: legal entities and individual businesses by their 统一社会信用代码
  (USCC), natural persons by the keyed pseudonym of their ID number (the raw
  number never leaves the origin);
- record id: ``<origin>-<kind tag>-<digest>``, the digest over the origin, the kind,
  the subject and the kind's natural key (for a penalty its document number), so
  the same fact sent again, in another file or encoding, is the same record and
  a correction replaces it instead of adding a second one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from credex.v1 import record_pb2

# Short tags in record ids, so an id says what it is at a glance.
KIND_TAGS: dict[int, str] = {
    record_pb2.KIND_LICENCE: "XK",
    record_pb2.KIND_PENALTY: "CF",
    record_pb2.KIND_BLACK_LIST: "HMD",
    record_pb2.KIND_RED_LIST: "HONG",
    record_pb2.KIND_DISHONEST_DEBTOR: "SX",
    record_pb2.KIND_COMMITMENT: "CN",
    record_pb2.KIND_EVALUATION: "PJ",
    record_pb2.KIND_CONTRACT: "HT",
    record_pb2.KIND_PERSONAL_POINTS: "JF",
    record_pb2.KIND_HOUSEHOLD_WORKER: "JZ",
    record_pb2.KIND_AUTHORIZATION: "SQ",
}
_DIGEST_CHARS = 20  # 80 bits: no two facts of one origin and kind collide in practice
_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a cleaned field


def kind_tag(kind: int) -> str:
    """The record id's tag for a kind; a kind added to the proto later still gets a stable tag."""
    return KIND_TAGS.get(kind, f"K{kind}")


def subject_id(record: record_pb2.Record) -> str:
    """Legal entities and individual businesses by USCC, natural persons by pseudonym; "" if neither is set."""
    return record.subject.uscc or record.subject.person_pseudonym


def record_id(origin: str, kind: int, subject: str, natural_key: Sequence[str]) -> str:
    """The id of the fact ``natural_key`` (e.g. a document number) about ``subject`` published by ``origin``."""
    tag = kind_tag(kind)
    digest = hashlib.sha256(_SEPARATOR.join([origin, tag, subject, *natural_key]).encode()).hexdigest()
    return f"{origin}-{tag}-{digest[:_DIGEST_CHARS]}"
