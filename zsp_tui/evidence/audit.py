"""Who exports, and the ``recording.export`` events that must be written before any file lands."""

from __future__ import annotations

import socket

from ..access import Actor
from ..audit import NewEvent
from ..datadir import DataDir
from ..exceptions import NotFound, UsageError
from .job import EXPORT_EVENT, ExportJob, Prepared

__all__ = ["exporter", "identity", "record"]


def identity() -> str:
    """The principal of this host's key in allowed_signers (what ``ssh-keygen -I`` is given)."""
    return f"zsp@{socket.gethostname()}"


def exporter(d: DataDir, name: str, *, explicit: bool, via: str) -> str:
    """The zsp user exporting: a reviewer or an admin; ``console`` when the data dir has no users."""
    svc = d.service()
    try:
        return svc.exporter(Actor(name, via))
    except NotFound:
        if not svc.users():
            return "console"
        if explicit:
            raise
        raise UsageError(f"no zsp user {name!r}: name yourself with --as USER (a reviewer or admin)") from None


def record(job: ExportJob, prepared: list[Prepared]) -> None:
    """One ``recording.export`` event per exported session, in one transaction (all or none)."""
    events: list[NewEvent] = []
    for p in prepared:
        where = "stdout" if p.final is None else str(p.final)
        for sid in p.session_ids:
            events.append(
                NewEvent(
                    EXPORT_EVENT,
                    job.exporter,
                    job.via,
                    f"{job.exporter} exported session {sid} as {job.format} to {where}",
                    session_id=sid,
                    fields={
                        "export_id": job.export_id,
                        "format": job.format,
                        "file": where,
                        "sha256": p.sha256,
                        "sessions": len(p.session_ids),
                        "redacted": bool(job.patterns),
                        "include_input": job.include_input,
                        "files": job.include_files,
                    },
                )
            )
    name = None if job.exporter == "console" else job.exporter
    job.data.service().record_export(Actor(name, job.via), events)
