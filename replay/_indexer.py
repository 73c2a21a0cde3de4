"""Recording -> search index: verify, keep what a signature covers, scan, store. One pass.

The pipeline is the player's: ``verify_frames -> only_signed -> scan``, so the index holds only
text a verified signature covers (a forger can recompute chain heads; only signatures tell).
A corrupt recording is indexed up to its last good signature before the break and stored with
its outcome, problem and bad frame; the frames after it are never indexed.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from recorder import Frame, Header, PublicKey

from ._exceptions import SourceError
from ._scan import Command, Item, TextLine, keys_text, scan
from ._search import HitKind, IndexedSession, Row, SearchIndex
from ._signed import only_signed
from ._verify import Outcome, Problem, VerificationReport, verify_frames

__all__ = ["index_recording", "rows_of"]


def _clean(text: str) -> str:
    """Text SQLite can store: the emulator never yields lone surrogates, but nothing here trusts that."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


TEXT_PER_BYTE = 8
"""Output text indexed per byte of recording read: plain output gives about one character per byte,
a tab at most eight."""
TEXT_ALLOWANCE = 1 << 20
"""Characters of output text a recording may index beyond TEXT_PER_BYTE, banked at most."""


class TextBudget:
    """Bounds the output text a recording puts in the index to what its size can account for.

    A few bytes of output can make megabytes of lines: ``x ESC[10000b`` (REP) is 10,000
    characters, ``ESC#8 ESC[500S`` (DECALN, scroll up) 500 lines of 1,000 on a 1000x500 screen.
    Unbounded, a 1 MB recording wrote more than 1 GB to ``search.db`` beside the recordings, and
    the bastion indexes every session by itself: one operator could fill the data dir's disk,
    and recordings fail closed. Credit accrues at TEXT_PER_BYTE characters per byte read (at most
    TEXT_ALLOWANCE banked, which is also the start); output lines beyond it are not indexed and
    counted in ``dropped``. Commands are not limited (each takes an Enter typed)."""

    def __init__(self) -> None:
        self.read = 0
        self.dropped = 0
        self._credit = TEXT_ALLOWANCE
        self._seen = 0

    def count(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for f in frames:
            data = f.data
            if isinstance(data, (bytes, bytearray, memoryview)):
                self.read += len(data)
            yield f

    def allow(self, n: int) -> bool:
        if self.read != self._seen:
            self._credit = min(TEXT_ALLOWANCE, self._credit + TEXT_PER_BYTE * (self.read - self._seen))
            self._seen = self.read
        if n > self._credit:
            self.dropped += 1
            return False
        self._credit -= n
        return True


def rows_of(items: Iterable[Item], budget: TextBudget | None = None) -> Iterator[Row]:
    """Index rows of scanned lines and commands. A command with nothing shown and nothing typed
    (an empty Enter, a masked password line) has nothing to search for and is left out; a blind
    command is stored as what its keys spell, flagged. With ``budget``, output lines it does not
    allow are left out."""
    output = HitKind.OUTPUT
    for item in items:
        if type(item) is TextLine:
            text = item.text
            if budget is not None and not budget.allow(len(text)):
                continue
            yield Row(item.t_us, item.frame, output, text if text.isascii() else _clean(text))
        elif isinstance(item, Command):
            typed = keys_text(item.keys)
            text = typed if item.blind else item.text
            if text.strip():
                yield Row(item.t_us, item.frame, HitKind.COMMAND, _clean(text), item.blind)
            if not item.blind and _not_shown(typed, item.text):
                # Keys the line never showed (a decoy echo printed something else while the keys
                # went unechoed): what they spell is searchable too, flagged as not shown.
                yield Row(item.t_us, item.frame, HitKind.COMMAND, _clean(typed), True)


def _not_shown(typed: str, text: str) -> bool:
    """Whether some character the keys spell is missing from the line the screen showed (counted:
    editing, completion and history only ever add to what was typed, or leave it as it was)."""
    missing = Counter(c for c in typed if not c.isspace())
    missing.subtract(text)
    return any(n > 0 for n in missing.values())


def _stub(path: Path, size: int, mtime_ns: int) -> IndexedSession:
    """A recording whose header could not be read: named by its file, dated by its mtime."""
    name = path.name.removesuffix(".zsprec")
    return IndexedSession(
        path=str(path),
        session_id=name,
        user="",
        target="",
        login="",
        grant_id=None,
        started_us=mtime_ns // 1000,
        outcome="CORRUPT",
        size=size,
        mtime_ns=mtime_ns,
    )


def _from_header(path: Path, header: Header, size: int, mtime_ns: int) -> IndexedSession:
    return IndexedSession(
        path=str(path),
        session_id=str(header.session_id),
        user=header.user,
        target=header.target,
        login=header.login,
        grant_id=header.grant_id,
        started_us=header.started_at_us,
        outcome="INCOMPLETE",
        size=size,
        mtime_ns=mtime_ns,
    )


def index_recording(
    index: SearchIndex,
    path: Path | str,
    trusted: Sequence[PublicKey],
    *,
    legacy_order: bool = False,
    live: bool = False,
) -> IndexedSession:
    """Verify and scan the recording at ``path`` and replace its rows in ``index`` (atomically).

    Raises :class:`SourceError` if the file cannot be read; :class:`SearchIndexError` if the index
    cannot be written. A recording that is not VALID is indexed as far as it is signed, and stored
    with its outcome; ``live``: it is still being written, and an unsealed one is stored as LIVE.
    """
    path = Path(path)
    name = str(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    with f:
        try:
            st = os.fstat(f.fileno())
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
        report: VerificationReport | None = None
        gen = verify_frames(f, trusted, source=name, legacy_order=legacy_order)

        def frames() -> Generator[Frame, None, None]:
            nonlocal report
            report = yield from gen

        signed = only_signed(frames())
        budget = TextBudget()
        first: Frame | None = next(signed, None)
        header = first.data if first is not None and isinstance(first.data, Header) else None

        def rest() -> Iterator[Frame]:
            if first is not None:
                yield first
            yield from signed

        def finish(session: IndexedSession) -> IndexedSession:
            if report is None:  # rows were not drained: nothing more is known
                return session
            r = report
            h = r.header
            if header is None and h is not None:  # the header itself was never signed
                session = replace(_from_header(path, h, session.size, session.mtime_ns), path=session.path)
            unsealed = r.outcome is Outcome.INCOMPLETE and r.problem in (Problem.NO_SEAL, Problem.TORN)
            return replace(
                session,
                outcome="LIVE" if live and unsealed else r.outcome.value,
                problem=r.problem.value if r.problem else None,
                bad_frame=r.bad_frame,
                head=r.head.hex() if r.head else None,
                indexed_bytes=r.bad_offset if r.bad_offset is not None else session.size,
            )

        try:
            if header is not None:
                session = _from_header(path, header, st.st_size, st.st_mtime_ns)
            else:
                session = _stub(path, st.st_size, st.st_mtime_ns)
            rows = rows_of(scan(budget.count(rest())), budget) if header is not None else _drain(rest())
            return index.replace(session, rows, update=finish)
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None


def _drain(frames: Iterable[Frame]) -> Iterator[Row]:
    """Read a stream to its end (so its verification report exists) and index nothing of it."""
    deque(frames, maxlen=0)
    yield from ()
