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
from credex.v1 import lookup_pb2, record_pb2

REPORT_FORMAT = "credex-report-v1"
REPORT_PAYLOAD_TYPE = "application/vnd.credex.report.v1+json"
# How an included record is shown: in force, or repaired where its origin's setting shows repaired records.
IN_FORCE = "在公示期"
REPAIRED = "已修复"
SHOWN_STANDING = {IN_FORCE: lookup_pb2.ENTRY_STATUS_ACTIVE, REPAIRED: lookup_pb2.ENTRY_STATUS_REPAIRED}
HAS_RECORD = "有违法违规记录"
NO_RECORD = "无违法违规记录"
NOT_COVERED = "not covered（未覆盖：本联盟尚未接入该类信息的数据来源）"  # never a word that reads as 无


SHARING: dict[int, str] = {
    record_pb2.SHARING_LEVEL_PUBLIC: "public",
    record_pb2.SHARING_LEVEL_GOVERNMENT: "government",
}


class ReportInvalid(CredexError):
    """The report is not genuine, or not a credex report; the message says which check failed."""


def describe(record: record_pb2.Record) -> dict[str, str]:
    """What a report says of a record, all of it from the record its origin signed.

    The issuer writes these words, but a reader checks them against the origin's
    record (:func:`check_report`): the issuer vouches for the report, never for a
    rewording of another region's decision.
    """
    return {
        "kind": record_pb2.Kind.Name(record.kind).removeprefix("KIND_").lower(),
        "decision_date": record.decision_date,
        "document_number": record.document_number,
        "authority": " / ".join(authorities(record)),
        "summary": summary(record),
        "publicity_end": record.publicity.end,
        "sharing": SHARING.get(record.sharing_level, "restricted"),
    }


def authorities(record: record_pb2.Record) -> list[str]:
    """The units named in a record: what the fields list places it by."""
    names = [record.deciding_authority.name, record.source_unit.name]
    if record.HasField("black_list"):
        names.append(record.black_list.identifying_unit.name)
    return [n for n in names if n]


def summary(record: record_pb2.Record) -> str:
    """One line saying what the record is, from the fields its kind has."""
    which = record.WhichOneof("details")
    parts: list[str] = []
    if which == "penalty":
        p = record.penalty
        parts = [p.violation_type, p.content or p.types_as_published]
        if p.fine_yuan:
            parts.append(f"罚款 {p.fine_yuan} 元")
    elif which == "black_list":
        parts = [record.black_list.list_name, record.black_list.rule]
    elif which == "licence":
        parts = [record.licence.document_name or record.licence.certificate_name, record.licence.content]
    elif which == "red_list":
        parts = [record.red_list.list_name, record.red_list.reason]
    elif which == "dishonest_debtor":
        d = record.dishonest_debtor
        parts = [d.case_number, d.court, d.obligation]
    elif which == "commitment":
        parts = [record.commitment.matter, record.commitment.content]
    elif which == "contract":
        parts = [record.contract.contract_name, record.contract.breach]
    elif which == "household_worker":
        parts = [record.household_worker.service_type, record.household_worker.agency.name]
    return "；".join(p for p in parts if p) or record.note


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
    except (ValueError, ProofInvalid, RecursionError) as exc:  # RecursionError: arrays nested past Python's stack
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
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
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
            for name, value in describe(event.record).items():
                if item[name] != value:
                    raise ReportInvalid(f"{where}: its {name} {item[name]!r:.80} is not what its origin signed")
            if event.disputed != bool(item["disputed"]):
                raise ReportInvalid(f"{where}: the dispute mark differs from the origin's")
            if standing_of(event.type, event.standing) != SHOWN_STANDING.get(item["shown_as"]):
                raise ReportInvalid(f"{where}: shown as {item['shown_as']!r}, which is not where its origin put it")
        if len(evidence) != len(items):
            raise ReportInvalid("the report carries proofs of records it does not show")
        _check_sections(document)
        for key in ("report_number", "verification_code", "verify_url", "title", "subject", "period", "fields"):
            if key not in document:
                raise ReportInvalid(f"the signed document has no {key}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportInvalid(f"the report's records or proofs are malformed: {exc!r}") from None


def _check_sections(document: dict[str, Any]) -> None:
    """Each heading's verdicts follow from the records it shows: never 无 beside a record, never 无 uncovered.

    Which field a record belongs to is the issuing node's fields list, which a reader
    does not hold; that it is one of the fields chosen, and that each 有/无 agrees
    with the records placed under it, the reader checks.
    """
    items = {item["record_id"]: item for item in document["items"]}
    chosen = {f["code"] for f in document["fields"]}
    for section in document["sections"]:
        where = f"section {section['code']!r}"
        findings = section.get("findings", [])
        named = list(section["records"]) + [r for f in findings for r in f["records"]]
        if not set(named) <= set(items):
            raise ReportInvalid(f"{where} names records the report does not show")
        if not section["covered"]:
            if section.get("verdict") != NOT_COVERED or named:
                raise ReportInvalid(f"{where} has no source, so it must say not covered and show no record")
            continue
        if document["kind"] != "special":
            continue
        if {f["field"] for f in findings} != chosen or len(findings) != len(chosen):
            raise ReportInvalid(f"{where} does not give one verdict for each field chosen")
        for finding in findings:
            behind = [
                r
                for r in section["records"]
                if items[r]["field"] == finding["field"] and items[r]["shown_as"] == IN_FORCE
            ]
            verdict = HAS_RECORD if behind else NO_RECORD
            if finding["records"] != behind or finding["verdict"] != verdict:
                raise ReportInvalid(
                    f"{where}, field {finding['field']!r}: says {finding['verdict']} beside records"
                    f" {finding['records']}, but the records it shows make it {verdict} with {behind}"
                )
        if any(items[r]["field"] not in chosen for r in section["records"]):
            raise ReportInvalid(f"{where} shows a record of a field that was not chosen")
