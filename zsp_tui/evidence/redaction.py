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
import mmap
import re
import signal
import tarfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import replay
from recorder import PublicKey

from ..exceptions import ExportRefused, UsageError

__all__ = ["BASE_SECONDS", "SECONDS_PER_MIB", "redact", "refuse_leftovers"]

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


def refuse_leftovers(path: Path, patterns: Sequence[re.Pattern[bytes]], *, bundle: bool) -> None:
    """Refuse an export whose finished file still holds a match of a ``--redact`` pattern anywhere.

    Redaction changes terminal bytes only; what is signed or quoted as it is cannot change: a
    recording's header (an exec session's command line), events, the audit excerpt and the session
    and grant records of a bundle. A transcript or cast quotes the header's command. Rather than
    hand out a file said to be redacted that still holds the secret, nothing is exported, and the
    message names where the match is (never the pattern or the match: they may be the secret)."""
    if not patterns or path.stat().st_size == 0:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            with _budget(BASE_SECONDS + SECONDS_PER_MIB * len(mm) / (1 << 20)):
                hits = [(n, m.start()) for n, p in enumerate(patterns, 1) if (m := p.search(mm)) is not None]
        except _TooSlow:
            raise UsageError(
                "--redact: checking the finished export for what the patterns still match took too long; "
                "simplify the patterns. Nothing was exported."
            ) from None
        if not hits:
            return
        n, at = hits[0]
        newline = b"\n"
        where = _member_at(path, at) if bundle else f"line {mm[:at].count(newline) + 1} of the {path.suffix} file"
    raise UsageError(
        f"--redact pattern {n} still matches {where} after redaction: only what the terminal showed and what was "
        "typed can be redacted; recording headers (an exec session's command line), events, audit events and "
        "session and grant records are kept as signed. Leave that session out or use a pattern that does not "
        "match them. Nothing was exported."
    )


def _member_at(path: Path, offset: int) -> str:
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            if info.offset <= offset < info.offset_data + info.size:
                name = info.name.split("/", 1)[-1]
                return f"{name} in the bundle"
    return "the bundle's tar headers"
