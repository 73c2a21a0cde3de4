"""The evidence bundle (docs/EXPORT.md): recordings, grants, audit excerpt, signed manifest."""

from __future__ import annotations

from .job import ExportJob, Prepared

__all__ = ["prepare"]


def prepare(job: ExportJob) -> list[Prepared]:
    """Write the bundle to a temp file beside ``job.output`` (one :class:`Prepared`)."""
    raise NotImplementedError("bundle export: built by the bundle helper")
