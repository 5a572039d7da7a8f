"""The signed report document, and checking it with the trust bundle alone.

A report is one JSON document signed by the issuing node's key in DSSE's envelope
form (the same form, and the same pre-authentication encoding, as the events'), so
its bytes are checked as received and never re-encoded. For every record it shows
it carries the origin's signed envelope and an inclusion proof against a checkpoint
the origin signed: a reader holding only the trust bundle can check that the issuer
wrote the report, that every record is the one its origin published, and that each
is in the origin's log. What has happened to those records since is a question for
a node (:mod:`credex.node.reports.register`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from credex.crypto.envelope import seal, signature_valid
from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.errors import CredexError
from credex.node.chain.proofs import (
    ProofInvalid,
    check_inclusion,
    envelope_from_dsse,
    envelope_to_dsse,
    proof_from_json,
)
from credex.node.store.events import record_bytes, record_digest, standing_of
from credex.v1 import lookup_pb2

REPORT_FORMAT = "credex-report-v1"
REPORT_PAYLOAD_TYPE = "application/vnd.credex.report.v1+json"
# How an included record is shown: in force, or repaired where its origin's setting shows repaired records.
IN_FORCE = "在公示期"
REPAIRED = "已修复"
SHOWN_STANDING = {IN_FORCE: lookup_pb2.ENTRY_STATUS_ACTIVE, REPAIRED: lookup_pb2.ENTRY_STATUS_REPAIRED}
HAS_RECORD = "有违法违规记录"
NO_RECORD = "无违法违规记录"
NOT_COVERED = "not covered（未覆盖：本联盟尚未接入该类信息的数据来源）"  # never a word that reads as 无


class ReportInvalid(CredexError):
    """The report is not genuine, or not a credex report; the message says which check failed."""


def sign_document(document: dict[str, Any], key: SigningKey) -> bytes:
    """The signed report: the document's JSON as the payload of a DSSE envelope, itself as JSON."""
    payload = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    envelope = seal(key, payload, REPORT_PAYLOAD_TYPE)
    return json.dumps(envelope_to_dsse(envelope), sort_keys=True).encode()


def report_sha256(signed: bytes) -> bytes:
    """What the issuing node's register keeps to recognise a report's exact bytes."""
    return hashlib.sha256(signed).digest()


@dataclass(frozen=True)
class CheckedReport:
    """A report whose signature and every record's proof checked out."""

    document: dict[str, Any]
    signed: bytes
    issuer: str
    key_id: str
    issued_at: dt.datetime

    @property
    def report_number(self) -> str:
        return str(self.document["report_number"])

    @property
    def verification_code(self) -> str:
        return str(self.document["verification_code"])


def check_report(signed: bytes, bundle: TrustBundle) -> CheckedReport:
    """Check a signed report with the trust bundle only; :class:`ReportInvalid` says what failed."""
    try:
        envelope = envelope_from_dsse(json.loads(signed))
    except (ValueError, ProofInvalid) as exc:
        raise ReportInvalid(f"not a signed credex report: {exc}") from None
    if envelope.payload_type != REPORT_PAYLOAD_TYPE:
        raise ReportInvalid(f"payload type {envelope.payload_type[:60]!r} is not a credex report")
    entry = bundle.keys_by_id.get(envelope.key_id)
    if entry is None:
        raise ReportInvalid(
            f"the report is signed by key {envelope.key_id[:64]!r}, which the trust bundle does not list"
        )
    origin, member_key, public = entry
    if not signature_valid(envelope, public):
        raise ReportInvalid("the report's signature does not match its content: it was changed after signing")
    try:
        document = json.loads(envelope.payload)
        if not isinstance(document, dict) or document.get("format") != REPORT_FORMAT:
            raise ValueError(f"not a {REPORT_FORMAT} document")
        issued_at = dt.datetime.fromisoformat(document["issued_at"])
        if document["issuer"]["origin"] != origin:
            raise ReportInvalid(f"the report names issuer {document['issuer']['origin']!r} but is signed by {origin}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportInvalid(f"the signed document is malformed: {exc!r}") from None
    if not member_key.valid_at(issued_at):
        raise ReportInvalid(f"key {envelope.key_id} of {origin} was not valid at {issued_at.isoformat()}")
    if member_key.revoked:
        # Nothing anchors a report's issue time but the signer's word, and whoever holds a revoked key can
        # backdate: fail closed, as for a revoked key without a log position. The issuing node's register
        # (VerifyReport) still knows the reports it issued.
        raise ReportInvalid(
            f"key {envelope.key_id} of {origin} is {member_key.revocation()}: a report it signed cannot be"
            " confirmed offline; ask the issuing node with the report number and verification code"
        )
    _check_evidence(document, bundle)
    return CheckedReport(document, signed, origin, envelope.key_id, issued_at)


def _check_evidence(document: dict[str, Any], bundle: TrustBundle) -> None:
    """Every record the report shows is the origin's signed record, in the origin's log."""
    try:
        evidence = {(p["origin"], int(p["seq"])): p for p in document["evidence"]}
        items = document["items"]
        for item in items:
            where = f"record {item['record_id']} ({item['origin']} #{item['seq']})"
            proof_data = evidence.get((item["origin"], int(item["seq"])))
            if proof_data is None:
                raise ReportInvalid(f"{where} has no inclusion proof in the report")
            try:
                checked = check_inclusion(proof_from_json(json.dumps(proof_data)), bundle)
            except ProofInvalid as exc:
                raise ReportInvalid(f"{where}: {exc}") from None
            event = checked.event.event
            if event.record_id != item["record_id"]:
                raise ReportInvalid(f"{where}: the proof is of record {event.record_id}")
            if record_digest(record_bytes(event.record)).hex() != item["record_sha256"]:
                raise ReportInvalid(f"{where}: the record shown is not the one its origin signed")
            if event.disputed != bool(item["disputed"]):
                raise ReportInvalid(f"{where}: the dispute mark differs from the origin's")
            if standing_of(event.type, event.standing) != SHOWN_STANDING.get(item["shown_as"]):
                raise ReportInvalid(f"{where}: shown as {item['shown_as']!r}, which is not where its origin put it")
        if len(evidence) != len(items):
            raise ReportInvalid("the report carries proofs of records it does not show")
        shown = {item["record_id"] for item in items}
        for section in document["sections"]:
            named = list(section["records"]) + [r for f in section.get("findings", []) for r in f["records"]]
            if not set(named) <= shown:
                raise ReportInvalid(f"section {section['code']!r} names records the report does not show")
        for key in ("report_number", "verification_code", "verify_url", "title", "subject", "period", "fields"):
            if key not in document:
                raise ReportInvalid(f"the signed document has no {key}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportInvalid(f"the report's records or proofs are malformed: {exc!r}") from None
