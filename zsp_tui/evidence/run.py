"""One export from start to finish: prepare the files, audit them, then put them in place.

The order is the guarantee: the ``recording.export`` events naming each file's sha256 are written
before any file is renamed into place (or copied to stdout), so an export that cannot be audited
leaves nothing behind. ``zsp export``, ``ssh zsp@BASTION export`` and the review app all come here.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from typing import BinaryIO

from ..exceptions import ExportRefused
from . import audit
from .job import ExportJob, Prepared

__all__ = ["run_export"]


def run_export(job: ExportJob, stdout: BinaryIO | None = None) -> list[Prepared]:
    """Write ``job``'s files; ``stdout`` receives the one file of an export to ``-o -``."""
    if job.format == "bundle":
        from . import bundle as writer
    else:
        from . import formats as writer  # type: ignore[no-redef]
    prepared = writer.prepare(job)
    try:
        audit.record(job, prepared)
    except (sqlite3.Error, OSError) as exc:
        _discard(prepared)
        reason = f"the recording.export audit event could not be written ({exc})"
        raise ExportRefused(session_id=None, reason=reason) from None
    except BaseException:
        _discard(prepared)
        raise
    _install(prepared, stdout)
    return prepared


def _install(prepared: list[Prepared], stdout: BinaryIO | None) -> None:
    for p in prepared:
        if p.final is None:
            try:
                if stdout is None:
                    raise ValueError("an export to stdout needs a stream")
                with open(p.temp, "rb") as f:
                    shutil.copyfileobj(f, stdout)
                stdout.flush()
            finally:
                p.temp.unlink(missing_ok=True)
                if p.signature is not None:
                    p.signature.unlink(missing_ok=True)
            continue
        os.replace(p.temp, p.final)
        if p.signature is not None:
            os.replace(p.signature, p.final.with_name(p.final.name + ".sig"))


def _discard(prepared: list[Prepared]) -> None:
    for p in prepared:
        p.discard()
