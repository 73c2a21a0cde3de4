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
import json
import re
import signal
import tarfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import msgpack

import replay
from recorder import PREAMBLE, FrameKind, PublicKey

from ..exceptions import ExportRefused, UsageError

__all__ = ["BASE_SECONDS", "SECONDS_PER_MIB", "recording_texts", "redact", "refuse_leftovers", "refuse_values"]

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
    """Refuse an export whose finished file still holds a match of a ``--redact`` pattern.

    Redaction changes terminal bytes only; what is signed or quoted as it is cannot change: a
    recording's header (an exec session's command line), events, the audit excerpt and the session
    and grant records of a bundle. A transcript or cast quotes the header's command. Rather than
    hand out a file said to be redacted that still holds the secret, nothing is exported, and the
    message names where the match is (never the pattern or the match: they may be the secret).

    Each text value is searched on its own (a JSON or msgpack string, a header or event field, a
    line of a transcript), never the file's bytes as a whole: a pattern such as ``token=\\S+`` would
    otherwise run from the end of one value into the framing after it."""
    if not patterns or path.stat().st_size == 0:
        return
    try:
        with _budget(BASE_SECONDS + SECONDS_PER_MIB * path.stat().st_size / (1 << 20)):
            found = _in_bundle(path, patterns) if bundle else _in_text(path, patterns)
    except _TooSlow:
        raise UsageError(
            "--redact: checking the finished export for what the patterns still match took too long; "
            "simplify the patterns. Nothing was exported."
        ) from None
    if found is None:
        return
    n, where = found
    raise UsageError(
        f"--redact pattern {n} still matches {where} after redaction: only what the terminal showed and what was "
        "typed can be redacted; recording headers (an exec session's command line), events, audit events and "
        "session and grant records are kept as signed. Leave that session out or use a pattern that does not "
        "match them. Nothing was exported."
    )


_NOT_TEXT = frozenset(
    {"signer", "signer_fingerprint", "fingerprint", "head", "final_head", "sealed", "escrow", "sig", "signature"}
)
"""Fields that hold keys, hashes and sealed boxes (base64 and hex), never what anyone typed or saw:
a short pattern would match them by chance."""


def _strings(value: object) -> Iterator[str]:
    """The text values in ``value`` (not map keys: they are zsp's schema, not session data)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _NOT_TEXT:
                yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _hit(patterns: Sequence[re.Pattern[bytes]], texts: Iterable[str]) -> int | None:
    for text in texts:
        b = text.encode("utf-8", "surrogateescape")
        for n, p in enumerate(patterns, 1):
            if p.search(b):
                return n
    return None


def _in_text(path: Path, patterns: Sequence[re.Pattern[bytes]]) -> tuple[int, str] | None:
    """A transcript line by line; a cast's JSON lines by their string values."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            texts: Iterable[str] = [line.rstrip("\n")]
            if path.suffix == ".cast":
                with contextlib.suppress(ValueError):
                    texts = list(_strings(json.loads(line)))
            n = _hit(patterns, texts)
            if n is not None:
                return n, f"line {lineno} of the {path.suffix} file"
    return None


def _frame_bodies(f: IO[bytes]) -> Iterator[bytes]:
    """The frame bodies of a recording read as a plain stream (the bundle was verified as built)."""
    f.read(len(PREAMBLE))
    while len(prefix := f.read(4)) == 4:
        body = f.read(int.from_bytes(prefix, "big"))
        f.read(32)
        yield body


def _unpacked(body: bytes) -> object:
    try:
        return msgpack.unpackb(body, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return None


_FROM_SESSIONS = ("recordings/", "sessions/", "grants/", "audit/", "files/")
"""Members holding what sessions did (``files/``: transferred files' content, ``--files``), searched
line by line; the bundle's own text is not."""


def recording_texts(f: IO[bytes]) -> Iterator[str]:
    """The text redaction cannot reach in a recording: its header's and events' fields."""
    kept = (FrameKind.HEADER, FrameKind.EVENT)
    for body in _frame_bodies(f):
        fr = _unpacked(body)
        if isinstance(fr, list) and len(fr) == 4 and fr[0] in kept:
            yield from _strings(fr[3])


def refuse_values(patterns: Sequence[re.Pattern[bytes]], texts: Iterable[str], where: str) -> None:
    """Refuse (as :func:`refuse_leftovers`) when a pattern matches one of ``texts``."""
    if not patterns:
        return
    try:
        with _budget(BASE_SECONDS):
            n = _hit(patterns, texts)
    except _TooSlow:
        raise UsageError("--redact: checking what the patterns still match took too long; simplify them") from None
    if n is not None:
        raise UsageError(
            f"--redact pattern {n} still matches {where} after redaction: only what the terminal showed and what "
            "was typed can be redacted; recording headers (an exec session's command line), events, audit events "
            "and session and grant records are kept as signed. Leave that session out or use a pattern that does "
            "not match them. Nothing was exported."
        )


def _in_bundle(path: Path, patterns: Sequence[re.Pattern[bytes]]) -> tuple[int, str] | None:
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            name = info.name.split("/", 1)[-1]
            f = tar.extractfile(info)
            if f is None or not name.startswith(_FROM_SESSIONS):
                continue  # the bundle's own text (README.txt, the manifest, verify.py) is not a session's
            texts: Iterable[str]
            if name.startswith("recordings/"):
                texts = recording_texts(f)
            elif name.endswith(".zsplog"):
                excerpt = _unpacked(f.read())
                bodies: list[bytes] = []
                if isinstance(excerpt, dict):
                    header = excerpt.get("header")
                    if isinstance(header, list) and header:
                        bodies.append(header[0])
                    for seg in excerpt.get("segments") or []:
                        bodies += [fr[0] for fr in seg.get("frames", []) if isinstance(fr, list) and fr]
                texts = (t for b in bodies for t in _strings(_unpacked(b)))
            elif name.endswith((".json", ".jsonl")):
                raw = f.read().decode("utf-8", "replace")
                docs = [raw] if name.endswith(".json") else [ln for ln in raw.splitlines() if ln]
                try:
                    texts = [t for doc in docs for t in _strings(json.loads(doc))]
                except ValueError:
                    texts = raw.splitlines()
            else:
                texts = f.read().decode("utf-8", "replace").splitlines()
            n = _hit(patterns, texts)
            if n is not None:
                return n, f"{name} in the bundle"
    return None
