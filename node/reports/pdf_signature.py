"""The issuing node's signature over a report PDF's own bytes, checked without rendering anything.

The way PDF signatures work (ISO 32000-1, 12.8): an incremental update appends a
signature dictionary whose ``/ByteRange [0 b c d]`` names every byte of the file but
the ``/Contents <…>`` hex string, and ``/Contents`` holds the signature over those
bytes. Here ``/Contents`` holds a DSSE envelope (the node's Ed25519 key, as for every
other thing it signs) whose payload is the SHA-256 of the byte ranges. A verifier
needs the trust bundle and nothing of the renderer: one changed byte anywhere but in
the signature, or one byte added after it, fails.

Why not pyHanko: it signs CMS with an X.509 certificate, and the node's keys are raw
Ed25519 keys named by the trust bundle, not certificates; a CMS wrapper around them
would add a certificate nobody checks. The dictionary uses its own ``/Filter``
(``/Credex.Ed25519``), so a PDF reader shows the document and ignores the signature,
which is not attached to a form field.

The dictionary also names where the signed report lies in the file
(``/Credex.Report [offset length]``, inside the signed bytes): the report is attached
uncompressed, so the verifier takes those bytes as they are and never parses the PDF
or inflates a stream. Hostile input is bounded before any work: the signature is
looked for in the file's last :data:`TAIL_BYTES` only, its hex string is at most
:data:`CONTENTS_HEX_DIGITS` long, and the report span must lie inside the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from credex.crypto.envelope import seal, signature_valid
from credex.crypto.keys import SigningKey
from credex.crypto.trust import TrustBundle
from credex.node.chain.proofs import ProofInvalid, envelope_from_dsse, envelope_to_dsse
from credex.node.reports.document import ReportInvalid

PAYLOAD_TYPE = "application/vnd.credex.report-pdf.byte-range-sha256"
CONTENTS_HEX_DIGITS = 4096  # room for the DSSE envelope (about 400 bytes) many times over
TAIL_BYTES = 64 * 1024  # the signature is in the last incremental update, within this of the end
_DIGITS = 10
_SIGNATURE = re.compile(
    rb"/Credex.Report \[(\d{10}) (\d{10})\] /ByteRange \[(\d{10}) (\d{10}) (\d{10}) (\d{10})\]"
    rb" /Contents <([0-9A-Fa-f]{1,%d})>" % CONTENTS_HEX_DIGITS
)
_TRAILER = re.compile(rb"trailer\s*<<(.{1,4096}?)>>\s*startxref\s+(\d{1,12})\s+%%EOF\s*$", re.DOTALL)
_SIZE = re.compile(rb"/Size\s+(\d{1,10})")
_ROOT = re.compile(rb"/Root\s+(\d{1,10}\s+\d{1,5}\s+R)")
_INFO = re.compile(rb"/Info\s+(\d{1,10}\s+\d{1,5}\s+R)")
_ID = re.compile(rb"/ID\s*(\[\s*<[0-9A-Fa-f]{0,128}>\s*<[0-9A-Fa-f]{0,128}>\s*\])")


def sign_pdf(pdf: bytes, key: SigningKey, attached: bytes) -> bytes:
    """``pdf`` with an incremental update holding ``key``'s signature over every byte but the signature's own.

    ``attached`` is the signed report, which ``pdf`` must hold once, uncompressed, as an attachment.
    """
    report_at = pdf.find(attached)
    if not attached or report_at < 0 or pdf.find(attached, report_at + 1) >= 0:
        raise ValueError("the PDF must hold the signed report exactly once, uncompressed")
    found = _TRAILER.search(pdf, max(0, len(pdf) - TAIL_BYTES))
    if found is None:
        raise ValueError("the PDF has no classic trailer to append a signature after")
    trailer, previous_xref = found.group(1), int(found.group(2))
    size, root = _SIZE.search(trailer), _ROOT.search(trailer)
    if size is None or root is None:
        raise ValueError("the PDF's trailer names no /Size or /Root")
    number = int(size.group(1))
    kept = b" ".join(m.group(0) for m in (_INFO.search(trailer), _ID.search(trailer)) if m is not None)
    head = pdf if pdf.endswith(b"\n") else pdf + b"\n"
    opening = (
        f"{number} 0 obj\n<< /Type /Sig /Filter /Credex.Ed25519 /SubFilter /credex.dsse.sha256"
        f" /Credex.Report [{report_at:010d} {len(attached):010d}] /ByteRange ["
    ).encode()
    ranges_at = len(head) + len(opening)
    hole_start = ranges_at + 4 * _DIGITS + 3 + len(b"] /Contents ")
    hole_end = hole_start + 1 + CONTENTS_HEX_DIGITS + 1
    closing = b"\n>>\nendobj\n"
    xref_at = hole_end + len(closing)
    tail = (
        f"xref\n{number} 1\n{len(head):010d} 00000 n \ntrailer\n<< /Size {number + 1} /Root {root.group(1).decode()}"
        f" {kept.decode()} /Prev {previous_xref} >>\nstartxref\n{xref_at}\n%%EOF\n"
    ).encode()
    total = xref_at + len(tail)
    ranges = f"{0:010d} {hole_start:010d} {hole_end:010d} {total - hole_end:010d}".encode()
    before = head + opening + ranges + b"] /Contents <"
    after = b">" + closing + tail
    assert len(before) == hole_start + 1 and len(before) + CONTENTS_HEX_DIGITS + len(after) == total
    digest = hashlib.sha256(before[:hole_start] + after[1:]).digest()
    envelope = json.dumps(envelope_to_dsse(seal(key, digest, PAYLOAD_TYPE)), sort_keys=True).encode().hex()
    if len(envelope) > CONTENTS_HEX_DIGITS:
        raise ValueError(
            f"the signature needs {len(envelope)} hex digits, more than the {CONTENTS_HEX_DIGITS} reserved"
        )
    return before + envelope.encode() + b"0" * (CONTENTS_HEX_DIGITS - len(envelope)) + after


@dataclass(frozen=True, slots=True)
class SignedPdf:
    origin: str
    key_id: str
    report: bytes  # the attached signed report, as the signed bytes hold it


def pdf_signer(data: bytes, bundle: TrustBundle, max_report_bytes: int) -> SignedPdf:
    """Who signed all of ``data`` but the signature, and the report it holds; else :class:`ReportInvalid`."""
    found = None
    for found in _SIGNATURE.finditer(data, max(0, len(data) - TAIL_BYTES)):  # noqa: B007
        pass  # the last one: any earlier is inside the bytes it signs
    if found is None:
        raise ReportInvalid(
            "the PDF carries no issuer's signature over its bytes: not a credex report PDF, or its end was cut off"
        )
    report_at, report_size, start, hole_start, hole_end, rest = (int(n) for n in found.groups()[:6])
    opening, closing = found.start(7) - 1, found.end(7) + 1
    if (start, hole_start, hole_end, hole_end + rest) != (0, opening, closing, len(data)):
        raise ReportInvalid(
            "the PDF's signature does not cover the whole file: bytes were added, cut or moved after it was signed"
        )
    hexed = found.group(7)
    try:
        raw = bytes.fromhex(hexed.decode() + ("0" if len(hexed) % 2 else "")).rstrip(b"\0")
        envelope = envelope_from_dsse(json.loads(raw))
    except (ValueError, ProofInvalid, RecursionError) as exc:
        raise ReportInvalid(f"the PDF's signature cannot be read: {exc}") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ReportInvalid(f"the PDF's signature is of {envelope.payload_type[:60]!r}, not of a credex report PDF")
    entry = bundle.keys_by_id.get(envelope.key_id)
    if entry is None:
        raise ReportInvalid(f"the PDF is signed by key {envelope.key_id[:64]!r}, which the trust bundle does not list")
    origin, member_key, public = entry
    if member_key.revoked:  # nothing in a PDF anchors when it was signed: a revoked key's word counts for nothing
        raise ReportInvalid(
            f"the PDF is signed by key {envelope.key_id} of {origin}, which is {member_key.revocation()}"
        )
    if not signature_valid(envelope, public):
        raise ReportInvalid("the PDF's signature is not valid: it was not made by that key")
    if envelope.payload != hashlib.sha256(data[:hole_start] + data[hole_end:]).digest():
        raise ReportInvalid("the PDF was changed after it was signed: its bytes are not those the issuer signed")
    if report_size > max_report_bytes:
        raise ReportInvalid(f"the PDF's signed report has {report_size:,} bytes; one has at most {max_report_bytes:,}")
    if report_at + report_size > hole_start:  # the report lies before the signature, as signed
        raise ReportInvalid("the PDF names a signed report outside its signed bytes")
    return SignedPdf(origin, envelope.key_id, data[report_at : report_at + report_size])
