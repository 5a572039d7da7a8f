"""Checkpoints: an origin's signed statement "my log has N events and this Merkle root".

The text follows C2SP tlog-checkpoint inside a C2SP signed note: the origin
line, the tree size, the base64 root, optional extension lines, a blank line,
then signature lines ``— <key name> <base64(key hash || signature)>``. The key
hash is the first four bytes of SHA-256(name || 0x0A || 0x01 || public key), as
signed notes define it for Ed25519. Signatures are checked on the exact bytes
before the body is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credex.crypto.keys import SigningKey, public_raw
from credex.errors import CredexError

SIGNATURE_PREFIX = "\u2014 "  # em dash, space: every signed-note signature line starts so
_ED25519 = b"\x01"
MAX_NOTE = 16 * 1024


class CheckpointRejected(CredexError):
    """A checkpoint is malformed or not signed by the log's key; ``reason`` labels the counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def log_name(origin: str) -> str:
    """The origin line (and signing key name) of an origin's log."""
    return f"credex/{origin}"


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin_line: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin_line, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    def sign(self, key: SigningKey) -> str:
        """The signed note text, ready to store, publish and serve."""
        body = self.body()
        signature = key.sign(body.encode())
        blob = base64.b64encode(key_hash(self.origin_line, key.public_raw) + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.origin_line} {blob}\n"


def open_checkpoint(note: str, origin_line: str, keys: Iterable[Ed25519PublicKey]) -> Checkpoint:
    """Verify a signed checkpoint for the log ``origin_line`` against any of ``keys``, then parse it."""
    if len(note) > MAX_NOTE or not note.endswith("\n"):
        raise CheckpointRejected("checkpoint.malformed", "a signed note ends with a newline and is at most 16 KiB")
    body, separator, signatures = note.partition("\n\n")
    if not separator or not signatures:
        raise CheckpointRejected("checkpoint.malformed", "no blank line between the checkpoint and its signatures")
    body += "\n"
    by_hash = {key_hash(origin_line, public_raw(key)): key for key in keys}
    signed = False
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointRejected("checkpoint.malformed", f"not a signature line: {line[:60]!r}")
        name, _, blob = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        if name != origin_line:
            continue  # a cosignature by someone else; not ours to judge
        try:
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointRejected("checkpoint.malformed", "signature is not base64") from None
        key = by_hash.get(raw[:4])
        if key is None or len(raw) != 68:
            continue
        try:
            key.verify(raw[4:], body.encode())
        except InvalidSignature:
            raise CheckpointRejected(
                "checkpoint.signature", f"signature by {origin_line} does not match the checkpoint"
            ) from None
        signed = True
    if not signed:
        raise CheckpointRejected("checkpoint.unsigned", f"no valid signature by a key of {origin_line}")
    return _parse(body, origin_line)


def _parse(body: str, origin_line: str) -> Checkpoint:
    lines = body.rstrip("\n").split("\n")
    if len(lines) < 3:
        raise CheckpointRejected("checkpoint.malformed", "a checkpoint has an origin, a size and a root")
    origin, size_text, root_text, *extensions = lines
    if origin != origin_line:
        raise CheckpointRejected("checkpoint.origin", f"checkpoint of {origin!r}, expected {origin_line!r}")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointRejected("checkpoint.malformed", f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise CheckpointRejected("checkpoint.malformed", "the root is not a base64 SHA-256 hash")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))
