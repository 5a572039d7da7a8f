"""C2SP tlog-witness's HTTP wire: the add-checkpoint request and answer bodies, both directions.

The witness reads a request (:func:`read_request`) and writes an answer
(:func:`cosignature_body`, :func:`size_body`); the log writes a request
(:func:`request_body`) and reads the answer (:func:`read_cosignatures`,
:func:`read_size`). Every reader is strict, as the spec writes the form: one
``old N`` line (decimal, no leading zero), at most 63 lines of one base64
SHA-256 hash each, an empty line, then the checkpoint note; each line ends in
U+000A. A body is bounded (:data:`MAX_BODY`) and its proof lines are counted
before any of them is decoded, so a hostile body costs a bounded scan.

The checkpoint's first line names the log; a credex log is ``credex/<origin>``
(:func:`~credex.crypto.checkpoint.log_name`), and :func:`log_of` gives its origin
back, or None for a log this federation does not have (the spec's 404).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from credex.crypto.checkpoint import MAX_NOTE, SIGNATURE_PREFIX, log_name
from credex.crypto.merkle import HASH_SIZE
from credex.domain.regions import is_origin_code
from credex.errors import CredexError

PATH = "/add-checkpoint"  # under the witness's submission prefix
SIZE_TYPE = "text/x.tlog.size"  # a 409's body: the size this witness last cosigned
MAX_PROOF_LINES = 63  # hashes in a consistency proof: tlog-witness's bound
_MAX_SIZE_DIGITS = 19  # tree sizes are PostgreSQL bigints
_PROOF_LINE = 4 * ((HASH_SIZE + 2) // 3) + 1  # base64 of 32 bytes and its newline
# The old size line, the proof, the empty line, and a note: at most MAX_NOTE characters, of which a
# signature line's em dash takes 3 bytes in UTF-8 (a longer one is refused once decoded anyway).
MAX_BODY = len(f"old {'9' * _MAX_SIZE_DIGITS}\n") + MAX_PROOF_LINES * _PROOF_LINE + 1 + 3 * MAX_NOTE
MAX_ANSWER = MAX_NOTE  # a 200's cosignature lines: more could not be merged into a note anyway


class WireError(CredexError):
    """A body that is not what C2SP tlog-witness says it is; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """One add-checkpoint request: the size the log believes the witness holds, the proof from it, the note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes


def request_body(old_size: int, proof: Sequence[bytes], checkpoint: bytes) -> bytes:
    """The body of an add-checkpoint request, as a log sends it."""
    lines = [f"old {old_size}\n".encode(), *(base64.b64encode(h) + b"\n" for h in proof), b"\n"]
    return b"".join(lines) + checkpoint


def read_request(body: bytes) -> AddCheckpoint:
    """Parse a request body; raise :class:`WireError` for anything the spec does not allow."""
    if len(body) > MAX_BODY:
        raise WireError(f"a request body is at most {MAX_BODY} bytes")
    # Header lines end at the first empty line: count them before reading any (a checkpoint has none empty
    # before its signatures, and the header's lines are never empty).
    header, blank, checkpoint = body.partition(b"\n\n")
    if not blank:
        raise WireError("no empty line between the old size and proof lines and the checkpoint")
    lines = header.split(b"\n", MAX_PROOF_LINES + 1)
    if len(lines) > MAX_PROOF_LINES + 1:
        raise WireError(f"a consistency proof is at most {MAX_PROOF_LINES} lines")
    old_line, *proof_lines = lines
    return AddCheckpoint(
        _old_size(old_line), tuple(_hash(n, line) for n, line in enumerate(proof_lines, 1)), checkpoint
    )


def _decimal(digits: bytes) -> int | None:
    """A tree size in ASCII decimal with no leading zero (``0`` itself aside), as the spec writes sizes."""
    if not (digits.isdigit() and digits.isascii()) or len(digits) > _MAX_SIZE_DIGITS:
        return None
    return None if digits != b"0" and digits.startswith(b"0") else int(digits)


def _old_size(line: bytes) -> int:
    size = _decimal(line.removeprefix(b"old ")) if line.startswith(b"old ") else None
    if size is None:
        raise WireError("the first line is 'old ' and the tree size in decimal, with no leading zero")
    return size


def _hash(n: int, line: bytes) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != HASH_SIZE or base64.b64encode(raw) != line:  # one spelling per hash: the canonical one
        raise WireError(f"proof line {n} is not one base64 SHA-256 hash")
    return raw


def log_of(checkpoint: bytes) -> str | None:
    """The origin whose log ``checkpoint`` says it is of (its first line), None if no credex log has that name."""
    first = checkpoint.split(b"\n", 1)[0]
    prefix = log_name("").encode()
    code = first.removeprefix(prefix)
    if code == first or not code.isascii():
        return None
    origin = code.decode()
    return origin if is_origin_code(origin) and log_name(origin).encode() == first else None


def cosignature_body(lines: Sequence[str]) -> bytes:
    """A 200's body: the witness's signature lines, each ending in a newline."""
    return "".join(lines).encode()


def read_cosignatures(body: bytes) -> list[str]:
    """The signature lines of a 200's body (each with its newline); :class:`WireError` if anything else is there."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise WireError("the cosignatures are not UTF-8 text") from None
    if not text or not text.endswith("\n"):
        raise WireError("the answer is one or more signature lines, each ending in a newline")
    lines = [line + "\n" for line in text[:-1].split("\n")]
    if any(not line.startswith(SIGNATURE_PREFIX) for line in lines):
        raise WireError("every line of the answer starts with an em dash and a space (a note signature line)")
    return lines


def size_body(size: int) -> bytes:
    """A 409's body (content type :data:`SIZE_TYPE`): the size of the latest checkpoint this witness cosigned."""
    return f"{size}\n".encode()


def read_size(body: bytes) -> int:
    size = _decimal(body.removesuffix(b"\n")) if body.endswith(b"\n") else None
    if size is None:
        raise WireError("a text/x.tlog.size body is a tree size in decimal and a newline")
    return size
