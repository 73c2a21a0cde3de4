"""Output files of an export: written beside their final place, hashed, then renamed by the command."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["sha256_file", "temp_beside"]


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
