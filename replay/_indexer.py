"""Recording -> search index: verify, keep what a signature covers, scan, store. One pass.

The pipeline is the player's: ``verify_frames -> only_signed -> scan``, so the index holds only
text a verified signature covers (a forger can recompute chain heads; only signatures tell).
A corrupt recording is indexed up to its last good signature before the break and stored with
its outcome, problem and bad frame; the frames after it are never indexed.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from recorder import Event, Frame, FrameKind, Header, PublicKey

from ._exceptions import ReplayError, SourceError
from ._file_ops import file_changes
from ._files import files
from ._follow import Located, located_frames
from ._printable import printable
from ._scan import Command, Item, TextLine, keys_text, scan
from ._search import HitKind, IndexedSession, Row, SearchIndex
from ._seek import IndexBuilder, SeekIndex, signed_located
from ._signed import only_signed
from ._terminal import Terminal
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


def file_row(frame: Frame) -> Row | None:
    """The index row of a file transfer event (``sftp.file``, ``sftp.file_incomplete``), else None:
    an OUTPUT row reading ``[sftp upload] PATH (N bytes, sha256 HEX)``, so a transferred file's path
    is found like any line the session showed, at the moment the file was closed; and of a request
    that changes files (``[sftp rename] OLD -> NEW``, ``[sftp remove] PATH``), at the request. The path is stored
    escaped (``printable``): search hits are shown to people, and a path is the peer's bytes."""
    if frame.kind is not FrameKind.EVENT or not isinstance(frame.data, Event):
        return None
    if frame.data.type == "sftp.op":
        changed = file_changes((frame,))  # remove, rename, mkdir...: ``[sftp rename] A -> B``
        if not changed:
            return None
        return Row(frame.t_us, frame.seq, HitKind.OUTPUT, _clean(f"[sftp {changed[0].op}] {changed[0].shown}"))
    if frame.data.type not in ("sftp.file", "sftp.file_incomplete"):
        return None
    (f,) = files((frame,))
    how = f.direction if f.finished else f"{f.direction}, cut"
    digest = f", sha256 {f.sha256}" if f.sha256 else ""
    text = f"[sftp {how}] {printable(f.path_bytes if f.path_bytes is not None else f.path)} ({f.size} bytes{digest})"
    return Row(frame.t_us, frame.seq, HitKind.OUTPUT, _clean(text))


class _FileRows:
    """Taps the frames on their way to the scanner for file transfer events, and merges their rows
    into the scanner's in time order (the tap always runs ahead of the rows it is merged into)."""

    def __init__(self) -> None:
        self.pending: deque[Row] = deque()

    def tap(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.kind is FrameKind.EVENT:
                row = file_row(frame)
                if row is not None:
                    self.pending.append(row)
            yield frame

    def merged(self, rows: Iterable[Row]) -> Iterator[Row]:
        pending = self.pending
        for row in rows:
            while pending and pending[0].t_us <= row.t_us:
                yield pending.popleft()
            yield row
        while pending:
            yield pending.popleft()


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
    keyframes: Callable[[SeekIndex], None] | None = None,
) -> IndexedSession:
    """Verify and scan the recording at ``path`` and replace its rows in ``index`` (atomically).

    Raises :class:`SourceError` if the file cannot be read; :class:`SearchIndexError` if the index
    cannot be written. A recording that is not VALID is indexed as far as it is signed, and stored
    with its outcome; ``live``: it is still being written, and an unsealed one is stored as LIVE.

    ``keyframes``: also make the recording's seek index (:class:`replay.SeekIndex`) in the same
    pass, from the scanner's own terminal (one emulation, not two), and call ``keyframes`` with
    it once the rows are stored, if it covers every signed frame of the recording as verified
    here (it then :meth:`~replay.SeekIndex.matches` that verification and this file's size, as
    :func:`replay.build_index` would make it); otherwise it is not called. Nothing about the seek
    index ever fails the search indexing.
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
        signed: Iterator[Frame]
        seek: _Keyframes | None = None
        if keyframes is None:
            gen = verify_frames(f, trusted, source=name, legacy_order=legacy_order)

            def frames() -> Generator[Frame, None, None]:
                nonlocal report
                report = yield from gen

            signed = only_signed(frames())
        else:
            # The seek index needs each frame's place in the file: the verifier with the raw
            # reader beside it (located_frames), released by the same only_signed rule.
            located = located_frames(path, trusted, legacy_order=legacy_order)

            def items() -> Generator[Located, None, None]:
                nonlocal report
                report = yield from located

            seek = _Keyframes()
            signed = seek.frames(signed_located(items()))
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
            after = seek.after if seek is not None else None
            if header is not None:
                tap = _FileRows()
                rows = tap.merged(rows_of(scan(tap.tap(budget.count(rest())), after=after), budget))
            else:
                rows = _drain(rest())
            stored = index.replace(session, rows, update=finish)
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    if keyframes is not None and seek is not None and report is not None:
        made = seek.complete(report, st.st_size)
        if made is not None:
            keyframes(made)
    return stored


class _Keyframes:
    """The seek index made beside the search rows: an :class:`IndexBuilder` fed from the scanner's
    terminal (``scan(after=...)``) with the places of the frames the scan is given.

    A problem here (a frame out of step, the builder refusing one, a terminal that stopped showing
    what a player shows) only means no seek index: the search rows are never affected."""

    def __init__(self) -> None:
        self.builder = IndexBuilder(SeekIndex("", 0, b"", 0, 0, 0, 0))
        self.places: deque[Located] = deque()
        self.failed = False

    def frames(self, released: Iterable[Located]) -> Iterator[Frame]:
        """The frames of ``released``, their places kept until the scan has shown each."""
        for item in released:
            if not self.failed:
                self.places.append(item)
            yield item.frame

    def after(self, frame: Frame, term: Terminal) -> None:
        """``frame`` is on the scanner's terminal ``term``: keyframe it if one is due."""
        if self.failed:
            return
        while self.places and self.places[0].frame.seq < frame.seq:
            self.places.popleft()  # frames the scan skipped (none before the header is shown)
        if not self.places or self.places[0].frame is not frame:
            self._fail()
            return
        try:
            self.builder.add(self.places.popleft(), term)
        except ReplayError:
            self._fail()

    def _fail(self) -> None:
        self.failed = True
        self.places.clear()

    def complete(self, report: VerificationReport, size: int) -> SeekIndex | None:
        """The seek index, bound to the recording as ``report`` verified it, if it covers every
        signed frame of it; else None."""
        index = self.builder.index
        if self.failed or self.builder.diverged or report.header is None or report.head is None:
            return None
        if report.signed_frames == 0 or index.shown != report.signed_frames or not index.keyframes:
            return None
        index.session_id = str(report.header.session_id)
        index.size = size
        index.head = report.head
        index.frames = report.frames
        index.signed = report.signed_frames
        return index


def _drain(frames: Iterable[Frame]) -> Iterator[Row]:
    """Read a stream to its end (so its verification report exists) and index nothing of it."""
    deque(frames, maxlen=0)
    yield from ()
