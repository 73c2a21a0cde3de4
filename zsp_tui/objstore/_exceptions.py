"""Errors of recording storage in a bucket. Both are :class:`~zsp_tui.exceptions.ZspError`: the CLI
prints one line and exits non-zero.

::

    ZspError
     └── ObjectStoreError        the bucket could not do what was asked (unreachable, denied,
          │                      missing, no Object Lock for retention_days, read back different)
          └── RecordingUnavailable   an uploaded recording cannot be read as uploaded: its object is
                                     missing or does not match the sha256 the store recorded
"""

from __future__ import annotations

from ..exceptions import ZspError

__all__ = ["ObjectStoreError", "RecordingUnavailable"]


class ObjectStoreError(ZspError):
    """``where``: the bucket or object URL (never a credential); ``reason``: what went wrong, stable
    enough to audit a failure once per distinct reason."""

    exit_code = 2

    def __init__(self, *, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"object storage {where}: {reason}")


class RecordingUnavailable(ObjectStoreError):
    """An uploaded session's recording cannot be used: never read silently in its place."""

    exit_code = 1

    def __init__(self, *, session_id: str, where: str, reason: str) -> None:
        self.session_id = session_id
        super().__init__(where=where, reason=reason)
        self.args = (f"recording of session {session_id} ({where}): {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])
