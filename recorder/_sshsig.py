"""Detached signatures in OpenSSH's SSHSIG format (``ssh-keygen -Y sign`` / ``-Y verify``).

Evidence zsp exports (a bundle's ``manifest.json``, a ``.cast`` or ``.txt`` file) is signed in
the format stock OpenSSH checks, so a responder needs nothing but ``ssh-keygen`` to trust it
(OpenSSH ``PROTOCOL.sshsig``)::

    signed data = "SSHSIG" || string namespace || string reserved("") || string "sha512" || string SHA512(message)
    blob        = "SSHSIG" || uint32 1 || string publickey || string namespace || string reserved("")
                  || string "sha512" || string signature("ssh-ed25519", ed25519(signed data))

armored as ``-----BEGIN SSH SIGNATURE-----``, the blob in base64 wrapped at 70 columns, and
``-----END SSH SIGNATURE-----``: byte for byte what ``ssh-keygen -Y sign`` writes. Ed25519 only,
as every zsp key. The namespace is always checked (asyncssh's ``validate_sshsig`` does not):
a signature made for another purpose never passes for evidence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ._exceptions import SignatureError
from ._keys import PublicKey, SigningKey

__all__ = ["EVIDENCE_NAMESPACE", "sign_sshsig", "verify_sshsig"]

EVIDENCE_NAMESPACE = "evidence@zsp"
"""The SSHSIG namespace of every signature over exported evidence (``ssh-keygen -n``)."""

_MAGIC = b"SSHSIG"
_VERSION = 1
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_KEY_TYPE = b"ssh-ed25519"
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
_MAX_ARMORED = 64 * 1024


def _string(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def _signed_data(namespace: bytes, hash_name: bytes, digest: bytes) -> bytes:
    return _MAGIC + _string(namespace) + _string(b"") + _string(hash_name) + _string(digest)


def sign_sshsig(
    key: SigningKey, message: bytes, namespace: str = EVIDENCE_NAMESPACE, *, prehashed: bool = False
) -> str:
    """The armored SSHSIG (hash sha512) of ``message`` by ``key`` for ``namespace``, exactly as
    ``ssh-keygen -Y sign -n NAMESPACE`` writes it (Ed25519 signatures are deterministic).

    ``prehashed``: ``message`` is already the SHA-512 digest of the data (large files are hashed
    while they are streamed, never held in memory)."""
    if not namespace:
        raise ValueError("an SSHSIG namespace must not be empty")
    ns = namespace.encode("utf-8")
    if prehashed and len(message) != 64:
        raise ValueError("a prehashed message must be a SHA-512 digest (64 bytes)")
    digest = message if prehashed else hashlib.sha512(message).digest()
    sig = key.sign(_signed_data(ns, b"sha512", digest))
    blob = (
        _MAGIC
        + _VERSION.to_bytes(4, "big")
        + _string(key.public.wire)
        + _string(ns)
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(_KEY_TYPE) + _string(sig))
    )
    b64 = base64.b64encode(blob).decode("ascii")
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SignatureError(reason="signature blob is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.uint32())


def _dearmor(armored: str | bytes) -> bytes:
    if isinstance(armored, bytes):
        if len(armored) > _MAX_ARMORED:
            raise SignatureError(reason="signature file is too large")
        try:
            armored = armored.decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError(reason="signature is not ASCII text") from None
    if len(armored) > _MAX_ARMORED:
        raise SignatureError(reason="signature file is too large")
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise SignatureError(reason=f"not an armored SSH signature ({_BEGIN} ... {_END})")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(reason="signature is not valid base64") from None


def verify_sshsig(armored: str | bytes, message: bytes, namespace: str = EVIDENCE_NAMESPACE) -> PublicKey:
    """Check an armored SSHSIG over ``message`` for ``namespace``; return the key that made it.

    The caller decides whether that key is trusted (compare it with an allowed_signers file).
    Raises :class:`SignatureError` naming the problem: armor, magic, version, namespace,
    unsupported key or hash type, trailing data, or a signature that does not verify.
    """
    r = _Reader(_dearmor(armored))
    if r.take(6) != _MAGIC:
        raise SignatureError(reason="not an SSHSIG signature (bad magic)")
    version = r.uint32()
    if version != _VERSION:
        raise SignatureError(reason=f"unsupported SSHSIG version {version}")
    key_blob = r.string()
    ns = r.string()
    r.string()  # reserved: ignored, as ssh-keygen does
    hash_name = r.string()
    sig_blob = r.string()
    if r.pos != len(r.data):
        raise SignatureError(reason="trailing data after the signature")
    if ns != namespace.encode("utf-8"):
        shown = ns.decode("utf-8", "replace")
        raise SignatureError(reason=f"signature is for namespace {shown!r}, not {namespace!r}")
    hasher = _HASHES.get(hash_name.decode("ascii", "replace"))
    if hasher is None:
        raise SignatureError(reason=f"unsupported hash {hash_name.decode('ascii', 'replace')!r}")
    kr = _Reader(key_blob)
    key_type = kr.string()
    if key_type != _KEY_TYPE:
        raise SignatureError(reason=f"unsupported key type {key_type.decode('ascii', 'replace')!r} (only ssh-ed25519)")
    raw = kr.string()
    if len(raw) != 32 or kr.pos != len(key_blob):
        raise SignatureError(reason="malformed ssh-ed25519 public key")
    key = PublicKey(raw=raw)
    sr = _Reader(sig_blob)
    sig_type = sr.string()
    sig = sr.string()
    if sig_type != _KEY_TYPE or len(sig) != 64 or sr.pos != len(sig_blob):
        raise SignatureError(reason="malformed ssh-ed25519 signature")
    if not key.verify(sig, _signed_data(ns, hash_name, hasher(message).digest())):
        raise SignatureError(reason="signature does not verify (the message or the signature was changed)")
    return key
