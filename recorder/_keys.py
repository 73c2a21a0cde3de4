"""Ed25519 signing keys for recordings, stored as OpenSSH key files.

Keys live in the formats stock OpenSSH reads (``ssh-keygen -l -f``, ``ssh-keygen -Y``), so a
responder can inspect or pin a signer without zsp. Only Ed25519 is used in format v1: it is
deterministic, small, and fast enough to sign a checkpoint every few hundred frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._exceptions import KeyFileError

__all__ = ["PublicKey", "SigningKey", "read_small"]

_KEY_TYPE = "ssh-ed25519"
_MAX_KEY_FILE = 1 << 20


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key, with the validity window an allowed_signers line may give it.

    Verifiers match signers by ``raw`` (the 32 key bytes); comments do not matter.
    """

    raw: bytes
    comment: str = ""
    valid_after: int | None = None
    """allowed_signers ``valid-after``: Unix seconds; checkpoints signed before it are not trusted."""
    valid_before: int | None = None
    """allowed_signers ``valid-before``: Unix seconds; checkpoints signed after it are not trusted."""

    @property
    def bounded(self) -> bool:
        """True if the key is trusted only within a time window."""
        return self.valid_after is not None or self.valid_before is not None

    def valid_at(self, wall_us: int) -> bool:
        """Whether a signature dated ``wall_us`` (signed wall time, microseconds since the epoch)
        falls in the key's window; both ends inclusive, to the second, as ``ssh-keygen -Y verify``."""
        t = wall_us // 1_000_000
        if self.valid_after is not None and t < self.valid_after:
            return False
        return self.valid_before is None or t <= self.valid_before

    @classmethod
    def from_openssh(cls, line: str) -> PublicKey:
        """Parse ``ssh-ed25519 AAAA... [comment]``; raise ValueError for anything else."""
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0] != _KEY_TYPE:
            raise ValueError("not an ssh-ed25519 public key line")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("public key is not valid base64") from None
        # SSH wire encoding: string "ssh-ed25519" || string(32-byte key)
        expected_prefix = len(_KEY_TYPE).to_bytes(4, "big") + _KEY_TYPE.encode() + b"\x00\x00\x00\x20"
        if len(blob) != len(expected_prefix) + 32 or not blob.startswith(expected_prefix):
            raise ValueError("malformed ssh-ed25519 key blob")
        return cls(raw=blob[-32:], comment=parts[2] if len(parts) > 2 else "")

    @property
    def wire(self) -> bytes:
        """The SSH wire encoding of the key (what fingerprints hash)."""
        name = _KEY_TYPE.encode()
        return len(name).to_bytes(4, "big") + name + len(self.raw).to_bytes(4, "big") + self.raw

    @property
    def openssh(self) -> str:
        """``ssh-ed25519 AAAA...`` without a comment."""
        return f"{_KEY_TYPE} {base64.b64encode(self.wire).decode()}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(self.wire).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """A private Ed25519 key that signs checkpoints. Not a value: it holds a secret."""

    __slots__ = ("_key", "path", "public")

    def __init__(self, key: Ed25519PrivateKey, *, path: Path | None = None, comment: str = "") -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw=raw, comment=comment)
        self.path = path

    @classmethod
    def generate(cls, comment: str = "") -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), comment=comment)

    @classmethod
    def from_seed(cls, seed: bytes, comment: str = "") -> SigningKey:
        """Deterministic key from a 32-byte seed (golden test files only)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed), comment=comment)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read an unencrypted OpenSSH private key file holding an Ed25519 key."""
        try:
            data = read_small(path)
            key = serialization.load_ssh_private_key(data, password=None)
        except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
            raise KeyFileError(path=path, reason=f"not an unencrypted OpenSSH private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(path=path, reason="recording keys must be Ed25519")
        comment = ""
        pub_path = path.with_name(path.name + ".pub")
        if pub_path.exists():
            parts = pub_path.read_text(errors="replace").split(None, 2)
            comment = parts[2].strip() if len(parts) > 2 else ""
        return cls(key, path=path, comment=comment)

    def save(self, path: Path) -> None:
        """Write the key (mode 0600) and ``path.pub``; refuse to overwrite either file."""
        private = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        pub_line = self.public.openssh + (f" {self.public.comment}" if self.public.comment else "") + "\n"
        pub_path = path.with_name(path.name + ".pub")
        for p in (path, pub_path):
            if p.exists():
                raise KeyFileError(path=p, reason="refusing to overwrite an existing key file")
        _write_new(path, private, 0o600)
        _write_new(pub_path, pub_line.encode(), 0o644)
        self.path = path

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def read_small(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(path=path, reason=exc.strerror or str(exc)) from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(path=path, reason="file too large to be a key")
    return data


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
