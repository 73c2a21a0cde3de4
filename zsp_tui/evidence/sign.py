"""SSHSIG ``.sig`` files beside exported evidence (``ssh-keygen -Y verify -n evidence@zsp``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from recorder import EVIDENCE_NAMESPACE, SigningKey, sign_sshsig

from .job import ExportJob

__all__ = ["sign_beside", "sign_file"]


def sign_file(key: SigningKey, path: Path) -> str:
    """The armored SSHSIG of the file's bytes (namespace evidence@zsp), hashed while streamed."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return sign_sshsig(key, h.digest(), EVIDENCE_NAMESPACE, prehashed=True)


def sign_beside(job: ExportJob, temp: Path) -> Path:
    """Sign ``temp`` with the data dir's recording key and write the signature to ``temp`` +
    ``.sig`` (mode 0600, fsynced); return that path. ``zsp export`` renames it to the final
    name + ``.sig`` with the file (:class:`Prepared` ``signature``)."""
    sig = temp.with_name(temp.name + ".sig")
    text = sign_file(job.key, temp).encode("ascii")
    fd = os.open(sig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    return sig
