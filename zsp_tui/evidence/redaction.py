"""``--redact`` for every format: one call into :func:`replay.redact_recording`, bounded in time.

Python's ``re`` has no timeout, and a pattern with nested repetition (``(a+)+b``) can backtrack for
longer than anyone waits. The regex engine does check for signals, so on the main thread (the CLI,
and the ``zsp export`` child behind ``ssh zsp@BASTION export``) matching gets a budget of
:data:`BASE_SECONDS` plus :data:`SECONDS_PER_MIB` per MiB of recording, enforced with a real-time
timer: past it the export stops with a clear error (exit 2) and writes nothing. Elsewhere (the
review app's worker thread) no timer can interrupt it; the app's export runs beside the reviewer's
session and ends with it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import IO

import replay
from recorder import PublicKey

from ..exceptions import ExportRefused, UsageError

__all__ = ["BASE_SECONDS", "SECONDS_PER_MIB", "redact"]

BASE_SECONDS = 3.0
SECONDS_PER_MIB = 1.0


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def redact(
    source: IO[bytes],
    out: replay.Writable,
    patterns: Sequence[re.Pattern[bytes]],
    trusted: Sequence[PublicKey],
    *,
    size: int,
    session: str,
    tmpdir: str | None = None,
) -> replay.RedactionResult:
    """``replay.redact_recording`` within the time budget for a recording of ``size`` bytes."""
    seconds = BASE_SECONDS + SECONDS_PER_MIB * size / (1 << 20)
    try:
        with _budget(seconds):
            return replay.redact_recording(source, out, list(patterns), trusted, tmpdir=tmpdir)
    except _TooSlow:
        raise UsageError(
            f"--redact: matching the patterns over session {session} took longer than {seconds:.0f} s; a pattern "
            "with nested repetition such as (a+)+ backtracks without end: simplify it. Nothing was exported."
        ) from None
    except replay.ReplayError as exc:
        raise ExportRefused(session_id=session, reason=f"cannot redact: {getattr(exc, 'reason', exc)}") from None
