"""asciicast v2/v3 and text transcripts of exported sessions, each with an SSHSIG ``.sig``."""

from __future__ import annotations

from .job import ExportJob, Prepared

__all__ = ["prepare"]


def prepare(job: ExportJob) -> list[Prepared]:
    """One file per session (temp files beside their final names), each with its ``.sig``."""
    raise NotImplementedError("asciicast/text export: built by the formats helper")
