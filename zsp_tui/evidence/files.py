"""Output files of an export: written beside their final place, hashed, then renamed by the command."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

__all__ = ["Digests", "HashingWriter", "copy_prefix", "digests_file", "digests_of", "sha256_file", "temp_beside"]


def temp_beside(final: Path | None, suffix: str) -> Path:
    """A new empty file in ``final``'s directory (the current one for stdout), mode 0600 (the
    rename keeps it: an export may hold secrets, the reader widens it on purpose)."""
    directory = final.parent if final is not None else Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=".zsp-export-", suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Digests:
    """What a manifest says of a file: its size and its sha256 and blake3 (hex)."""

    size: int
    sha256: str
    blake3: str


class HashingWriter:
    """A write-only file that hashes what passes through it (sha256 and blake3) on its way to
    ``raw``: a file is hashed while it is written, never read back."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._sha = hashlib.sha256()
        self._b3 = blake3()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        b = bytes(data)
        self._sha.update(b)
        self._b3.update(b)
        self.raw.write(b)
        self.size += len(b)
        return len(b)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def digests(self) -> Digests:
        return Digests(self.size, self._sha.hexdigest(), self._b3.hexdigest())


def digests_of(data: bytes) -> Digests:
    return Digests(len(data), hashlib.sha256(data).hexdigest(), blake3(data).hexdigest())


def digests_file(path: Path) -> Digests:
    w = HashingWriter(_Null())
    with open(path, "rb") as f:
        while chunk := f.read(256 * 1024):
            w.write(chunk)
    return w.digests()


def copy_prefix(source: BinaryIO, dest: Path, limit: int) -> Digests:
    """Copy the first ``limit`` bytes of ``source`` to a new file ``dest``, hashing them on the way."""
    with open(dest, "xb") as out:
        w = HashingWriter(out)
        left = limit
        while left > 0:
            chunk = source.read(min(left, 256 * 1024))
            if not chunk:
                break
            w.write(chunk)
            left -= len(chunk)
        return w.digests()


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass
