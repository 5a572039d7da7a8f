"""Keyed pseudonyms for natural persons.

A raw resident ID number never leaves the origin: profiles replace it with
HMAC-SHA256 under a federation-wide pseudonym key, so the same person gets the
same pseudonym in every region while nobody without the key can test a guess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

from credex.errors import CredexError

PREFIX = "psn:"
KEY_BYTES = 32
_PSEUDONYM = re.compile(re.escape(PREFIX) + r"[a-z2-7]{32}")


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` is written as a pseudonym is: the prefix and 20 bytes in lower-case base32."""
    return _PSEUDONYM.fullmatch(text) is not None


class PseudonymKeyError(CredexError):
    """The pseudonym key file is missing or malformed."""


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise PseudonymKeyError(f"a pseudonym key needs at least {KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def __repr__(self) -> str:  # never print the key
        return "Pseudonymizer(<key>)"

    def pseudonym(self, id_number: str) -> str:
        digest = hmac.new(self._key, b"credex-person-v1\x00" + id_number.encode(), hashlib.sha256).digest()
        return PREFIX + base64.b32encode(digest[:20]).decode().lower()

    @classmethod
    def load(cls, path: Path) -> Pseudonymizer:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise PseudonymKeyError(f"cannot read pseudonym key {path}: {exc.strerror}") from exc
        try:
            return cls(base64.b64decode(text, validate=True))
        except ValueError as exc:
            raise PseudonymKeyError(f"{path} does not hold a base64 key: {exc}") from exc

    @staticmethod
    def create(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
