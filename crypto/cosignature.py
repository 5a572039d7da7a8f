"""Cosignatures: a witness's signed statement that a checkpoint is consistent with all it saw of the log before.

The format is C2SP tlog-cosignature (Ed25519, ``cosignature/v1``): a signed-note
signature line ``— <witness name> base64(key id || timestamp || signature)``,
where the key id is the first four bytes of SHA-256(name || 0x0A || 0x04 ||
public key) (0x04 marks a cosignature key, so a cosigning key can never be taken
for a note-signing one), the timestamp is a big-endian u64 of POSIX seconds,
and the Ed25519 signature covers ``cosignature/v1\\n``, ``time <timestamp>\\n``
and then the checkpoint's note body with its final newline. Lines naming other
keys are none of a cosignature's business: verifiers judge only the witnesses
their policy names and ignore the rest, as signed notes require.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.checkpoint import MAX_NOTE, SIGNATURE_PREFIX, key_hash
from credex.crypto.keys import SigningKey, public_raw

_COSIGNATURE_V1 = b"\x04"
_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
_BLOB_BYTES = 4 + 8 + 64  # key id, timestamp, Ed25519 signature


def witness_name(origin: str) -> str:
    """The key name a member's witness cosigns under (a schema-less URL, as the spec recommends)."""
    return f"witness.credex/{origin}"


def cosigner_key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _COSIGNATURE_V1 + public).digest()[:4]


def note_body(note: str) -> str:
    """The note's text up to and including the newline before the blank line: what every signature covers."""
    body, separator, _ = note.partition("\n\n")
    if not separator:
        raise ValueError("a signed note has a blank line between its text and its signatures")
    return body + "\n"


def signed_message(body: str, timestamp: int) -> bytes:
    """The exact bytes an Ed25519 ``cosignature/v1`` signs for ``body`` at ``timestamp``."""
    return f"{_HEADER}time {timestamp}\n{body}".encode()


def cosign(body: str, name: str, key: SigningKey, timestamp: int) -> str:
    """The signature line (with its newline) by which witness ``name`` cosigns the note ``body``."""
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"a cosignature's timestamp is 1..2^63-1 seconds, not {timestamp}")
    signature = key.sign(signed_message(body, timestamp))
    blob = cosigner_key_id(name, key.public_raw) + timestamp.to_bytes(8, "big") + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def signature_lines(note: str) -> list[str]:
    """The note's signature lines, each with its newline, in order."""
    _, _, signatures = note.partition("\n\n")
    return [line + "\n" for line in signatures.split("\n") if line.startswith(SIGNATURE_PREFIX)]


def with_lines(note: str, lines: list[str]) -> str:
    """``note`` with ``lines`` appended, except those it carries already; refused past the note size limit."""
    held = set(signature_lines(note))
    merged = note + "".join(line for line in dict.fromkeys(lines) if line not in held)
    if len(merged) > MAX_NOTE:
        raise ValueError(f"the note with its cosignatures would exceed {MAX_NOTE} characters")
    return merged


def pruned(
    note: str, log_line: str, log_keys: Iterable[Ed25519PublicKey], witnesses: Mapping[str, Ed25519PublicKey]
) -> str:
    """``note`` with only the signature lines that count: the log's, by ``log_keys``, and valid cosignatures.

    Signed notes let anyone append lines of keys a verifier does not know, and a relay may
    pad a checkpoint with them up to the note size limit; stored and served as received,
    such a note could never take the cosignatures its policy needs. Each kept line is
    verified here; the note's order is kept, and a line given twice is kept once.
    """
    body = note_body(note)
    hashes = {key_hash(log_line, public_raw(key)): key for key in log_keys}
    counted = {c.line for c in cosignatures(note, witnesses).values()}
    kept: list[str] = []
    for line in dict.fromkeys(signature_lines(note)):
        name, _, text = line[len(SIGNATURE_PREFIX) :].rstrip("\n").rpartition(" ")
        if line in counted or (name == log_line and _signed_by_log(text, hashes, body)):
            kept.append(line)
    return body + "\n" + "".join(kept)


def _signed_by_log(text: str, keys: Mapping[bytes, Ed25519PublicKey], body: str) -> bool:
    try:
        blob = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return False
    key = keys.get(blob[:4])
    if key is None or len(blob) != 4 + 64:
        return False
    try:
        key.verify(blob[4:], body.encode())
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A valid cosignature found on a note: who made it, and when by the witness's clock."""

    name: str
    timestamp: int
    line: str


def cosignatures(note: str, witnesses: Mapping[str, Ed25519PublicKey]) -> dict[str, Cosignature]:
    """The valid cosignatures on ``note`` by ``witnesses`` (name -> key), by name.

    A line naming a listed witness with its key id but a bad signature is not a
    cosignature and is left out, like any line of an unknown key: the caller counts
    what is present, so a forged line cannot make up for a missing one.
    """
    try:
        body = note_body(note)
    except ValueError:
        return {}
    found: dict[str, Cosignature] = {}
    for line in signature_lines(note):
        name, _, text = line[len(SIGNATURE_PREFIX) :].rstrip("\n").rpartition(" ")
        key = witnesses.get(name)
        if key is None or name in found:
            continue
        checked = _check(line, name, text, key, body)
        if checked is not None:
            found[name] = checked
    return found


def _check(line: str, name: str, text: str, key: Ed25519PublicKey, body: str) -> Cosignature | None:
    try:
        blob = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
    if len(blob) != _BLOB_BYTES or blob[:4] != cosigner_key_id(name, public_raw(key)):
        return None
    timestamp = int.from_bytes(blob[4:12], "big")
    if timestamp > MAX_TIMESTAMP:
        return None
    try:
        key.verify(blob[12:], signed_message(body, timestamp))
    except InvalidSignature:
        return None
    return Cosignature(name, timestamp, line)
