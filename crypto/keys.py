"""Ed25519 signing keys on disk, and key ids derived from public key bytes.

A private key file that group or others can read is refused when loaded: a key
anyone on the host can copy signs as the origin in every peer's eyes. Keys are
written with mode 0600.

A node's key carries a guard, set by the node from its trust bundle: once the
bundle revokes the key, every signature is refused with the reason, instead of
the node producing events each peer rejects.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from credex.errors import CredexError

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"


class KeyFileError(CredexError):
    """A key file is missing, unreadable, readable by others, or not an Ed25519 key."""


class SigningRefused(CredexError, PermissionError):
    """This node may not sign any more (its key is revoked); the message says why and what to do.

    A PermissionError, hence an OSError: the loops that retry on OS errors (feeds, the
    checkpoint signer) log it and keep running instead of dying.
    """


def require_private_file(path: Path, what: str = "private key") -> None:
    """Refuse a secret file that group or others may access; the message gives the fix."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if stat.S_ISREG(mode) and mode & 0o077:
        raise KeyFileError(
            f"{what} {path} is accessible to group or others (mode {stat.filemode(mode)}); anyone on this host"
            f" could copy it. Run `chmod 600 {path}` (owned by the user the node runs as) and start again"
        )


def key_id(public_raw: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, first 16 bytes in hex.

    Derived, never assigned, so two members can never claim the same id for
    different keys without a SHA-256 collision.
    """
    return hashlib.sha256(public_raw).hexdigest()[:32]


def public_raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SigningKey:
    """An Ed25519 private key with its public bytes and key id computed once (every envelope carries the id)."""

    __slots__ = ("guard", "key_id", "private", "public_raw")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public_raw: bytes = public_raw(private.public_key())
        self.key_id: str = key_id(self.public_raw)
        # Returns why this key may not sign (empty: it may); a node sets it from its trust bundle.
        self.guard: Callable[[str], str] | None = None

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def refusal(self) -> str:
        """Why this key may not sign now; empty if it may."""
        return self.guard(self.key_id) if self.guard is not None else ""

    def check_may_sign(self) -> None:
        """Raise :class:`SigningRefused` if the guard says this key may not sign."""
        reason = self.refusal()
        if reason:
            raise SigningRefused(reason)

    def sign(self, message: bytes) -> bytes:
        self.check_may_sign()
        return self.private.sign(message)

    def save(self, directory: Path) -> Path:
        """Write ``signing.key`` (PKCS#8 PEM, mode 0600) and ``signing.pub`` into ``directory``."""
        return self.save_as(directory / PRIVATE_NAME, directory / PUBLIC_NAME)

    def save_as(self, private_path: Path, public_path: Path) -> Path:
        """Write the private key (mode 0600) and the public key; refuse to overwrite a private key."""
        private_path.parent.mkdir(parents=True, exist_ok=True)
        if private_path.exists():
            raise KeyFileError(f"{private_path} already exists; remove it first if you mean to replace the key")
        pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public_path.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return private_path

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        if path.is_dir():
            path = path / PRIVATE_NAME
        require_private_file(path, "signing key")
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise KeyFileError(f"{path} is not a PEM private key: {exc}") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise KeyFileError(f"{path} holds a {type(loaded).__name__}, credex signs with Ed25519 only")
        return cls(loaded)


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key from a PEM file (``signing.pub``) or a file holding base64 raw bytes."""
    if path.is_dir():
        path = path / PUBLIC_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            loaded = serialization.load_pem_public_key(data)
            if not isinstance(loaded, Ed25519PublicKey):
                raise KeyFileError(f"{path} is not an Ed25519 public key")
            return loaded
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an Ed25519 public key: {exc}") from exc
