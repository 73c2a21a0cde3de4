"""Escrow of masked input: sealed boxes that only the holder of an X25519 private key can open.

Input typed at a password prompt is withheld from everyday reviewers but never dropped: each
withheld chunk is sealed to the installation's escrow public key and stored in the recording's
``input.masked`` event. The private half lives off the bastion, so the bastion (and whoever
reads recordings on it) sees only "masked, N bytes"; an auditor holding the key can prove what
was typed. ``docs/FORMAT.md`` section 3.5 specifies the construction for other implementations:

    eph     = fresh X25519 key pair (one per box)
    shared  = X25519(eph.private, escrow public)
    key     = HKDF-SHA256(ikm=shared, salt=eph.public || escrow public, info="zsp-escrow-v1 key", 32)
    ad      = "zsp-escrow-v1 input" || 0x00 || sid16 || u64be(run) || u64be(part)
    box     = 0x01 || eph.public || ChaCha20-Poly1305(key, nonce=12 zero bytes, plaintext, ad)

The nonce can be constant because every key is used once (a fresh ephemeral key per box). The
associated data binds the box to its session and its place (run, part), so a box copied into
another recording or another event does not open there.

Key files are one line of text: ``zsp-escrow-x25519 <base64 of the 32 raw bytes> [comment]`` for
the public key, ``zsp-escrow-x25519-private <base64>`` for the private key (mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._exceptions import EscrowError, KeyFileError
from ._keys import _write_new, read_small

__all__ = ["BOX_OVERHEAD", "EscrowPrivateKey", "EscrowPublicKey", "open_sealed", "seal"]

PUBLIC_TYPE = "zsp-escrow-x25519"
PRIVATE_TYPE = "zsp-escrow-x25519-private"
BOX_VERSION = 1
KEY_INFO = b"zsp-escrow-v1 key"
AD_DOMAIN = b"zsp-escrow-v1 input\x00"
BOX_OVERHEAD = 1 + 32 + 16
"""Bytes a box adds to its plaintext: version, ephemeral public key, Poly1305 tag."""

_NONCE = bytes(12)
_PLACE = struct.Struct(">QQ")
_U64 = (1 << 64) - 1


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _b64_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} is not 32 bytes")
    return raw


@dataclass(frozen=True, slots=True)
class EscrowPublicKey:
    """The key masked input is sealed to; compared by its 32 raw bytes."""

    raw: bytes
    comment: str = ""

    @classmethod
    def from_line(cls, line: str) -> EscrowPublicKey:
        """Parse ``zsp-escrow-x25519 <base64> [comment]``; raise ValueError for anything else."""
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0] != PUBLIC_TYPE:
            raise ValueError(f"not a {PUBLIC_TYPE} public key line")
        return cls(raw=_b64_key(parts[1], "escrow public key"), comment=parts[2] if len(parts) > 2 else "")

    @classmethod
    def load(cls, path: Path) -> EscrowPublicKey:
        try:
            return cls.from_line(read_small(path).decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyFileError(path=path, reason=str(exc)) from None

    @property
    def line(self) -> str:
        """The key file's line, without a comment."""
        return f"{PUBLIC_TYPE} {base64.b64encode(self.raw).decode()}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:`` and the unpadded base64 of SHA-256 over the 32 raw key bytes."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.raw).digest()).decode().rstrip("=")


class EscrowPrivateKey:
    """The private half, for ``zsp unseal``. Not a value: it holds a secret."""

    __slots__ = ("_key", "public")

    def __init__(self, key: X25519PrivateKey, comment: str = "") -> None:
        self._key = key
        self.public = EscrowPublicKey(raw=_raw_public(key.public_key()), comment=comment)

    @classmethod
    def generate(cls, comment: str = "") -> EscrowPrivateKey:
        return cls(X25519PrivateKey.generate(), comment)

    @classmethod
    def from_text(cls, text: str) -> EscrowPrivateKey:
        """Parse a private key file's text; raise ValueError for anything else."""
        parts = text.split()
        if len(parts) != 2 or parts[0] != PRIVATE_TYPE:
            raise ValueError(f"not a {PRIVATE_TYPE} key file")
        return cls(X25519PrivateKey.from_private_bytes(_b64_key(parts[1], "escrow private key")))

    @classmethod
    def load(cls, path: Path) -> EscrowPrivateKey:
        try:
            return cls.from_text(read_small(path).decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyFileError(path=path, reason=str(exc)) from None

    def save(self, private_path: Path, public_path: Path) -> None:
        """Write the private key (mode 0600) and the public key line; refuse to overwrite either."""
        raw = self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        for p in (private_path, public_path):
            if p.exists():
                raise KeyFileError(path=p, reason="refusing to overwrite an existing key file")
        pub = self.public.line + (f" {self.public.comment}" if self.public.comment else "") + "\n"
        _write_new(private_path, f"{PRIVATE_TYPE} {base64.b64encode(raw).decode()}\n".encode(), 0o600)
        _write_new(public_path, pub.encode(), 0o644)

    def exchange(self, peer: bytes) -> bytes:
        return self._key.exchange(X25519PublicKey.from_public_bytes(peer))


def _place(session_id: uuid.UUID, run: int, part: int) -> bytes:
    if not (0 <= run <= _U64 and 0 <= part <= _U64):
        raise ValueError("run and part must be unsigned 64-bit integers")
    return AD_DOMAIN + session_id.bytes + _PLACE.pack(run, part)


def _aead(shared: bytes, eph: bytes, recipient: bytes) -> ChaCha20Poly1305:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient, info=KEY_INFO).derive(shared)
    return ChaCha20Poly1305(key)


def seal(pub: EscrowPublicKey, plaintext: bytes, *, session_id: uuid.UUID, run: int, part: int) -> bytes:
    """A box only ``pub``'s private key opens, and only for this session, run and part."""
    eph = X25519PrivateKey.generate()
    eph_pub = _raw_public(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(pub.raw))
    ct = _aead(shared, eph_pub, pub.raw).encrypt(_NONCE, plaintext, _place(session_id, run, part))
    return bytes([BOX_VERSION]) + eph_pub + ct


def open_sealed(key: EscrowPrivateKey, box: bytes, *, session_id: uuid.UUID, run: int, part: int) -> bytes:
    """The plaintext of ``box``; :class:`EscrowError` if it is malformed, for another key or place, or altered."""
    if len(box) < BOX_OVERHEAD:
        raise EscrowError(reason="sealed box is too short")
    if box[0] != BOX_VERSION:
        raise EscrowError(reason=f"unknown sealed box version {box[0]}")
    eph_pub = box[1:33]
    try:
        shared = key.exchange(eph_pub)
    except ValueError:  # a low-order point gives an all-zero secret, which cryptography refuses
        raise EscrowError(reason="sealed box has an invalid ephemeral key") from None
    try:
        return _aead(shared, eph_pub, key.public.raw).decrypt(_NONCE, box[33:], _place(session_id, run, part))
    except InvalidTag:
        raise EscrowError(
            reason="sealed box does not open: wrong escrow key, altered, or moved from another session or event"
        ) from None


