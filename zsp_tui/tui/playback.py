"""What the Replay screen knows about one recording, apart from drawing it: no Textual here.

* :class:`Overview`: the recording at a glance, filled by one verified pass (``read_overview``
  for a finished file, :class:`Feed` for a live one): output bytes per time bucket (the
  timeline's density), markers (events: grant warnings, expiry, revocation, masked input, the
  moments real-time rules fired (``rule.match``), other events), the keystrokes typed (runs up
  to each Enter; masked input only as its length), the kind of every frame (for stepping back),
  and the commands found by :class:`replay.Scanner`.
* :class:`Feed`: a thread reading the recording once, verified, with :func:`replay.located_frames`
  (following it while it grows, for a live session), that grows a :class:`replay.SeekIndex` (when
  none is cached) and the Overview, and finds commands. Modelled on ``zsp play``'s LiveFeed, which
  it cannot reuse because it also feeds the Overview and the Scanner in the same pass.
* :class:`Playback`: the playhead over a :class:`replay.Seeker` and the clock that moves it (speed,
  pause, idle gaps capped as ``zsp play`` does, stepping, seeking).

Only frames a verified signature covers are ever put on the emulated screen (the seek index holds
nothing else); the Overview counts every verified frame, so the timeline can show where the
unsigned or untrusted part of a recording lies, but never its content.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from recorder import Event, FormatViolation, Frame, FrameKind, Header, PublicKey, decode_body
from replay import (
    PROTOCOL_EVENTS,
    Command,
    FileOp,
    IndexBuilder,
    Located,
    Playhead,
    ReplayError,
    Scanner,
    Seeker,
    SeekIndex,
    Slicer,
    TransferredFile,
    VerificationReport,
    file_changes,
    files,
    iter_raw,
    located_frames,
    signed_located,
    verify_frames,
)

__all__ = [
    "BIN_US",
    "IDLE_CAP_US",
    "SPEEDS",
    "Feed",
    "KeyRun",
    "MarkKind",
    "Marker",
    "Overview",
    "Playback",
    "flag_label",
    "read_overview",
    "untrusted_tail_end",
]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
BIN_US = 100_000
"""Density is counted per 100 ms of session time (36,000 buckets for an hour), drawn re-binned."""
IDLE_CAP_US = 2_000_000
"""With skip idle on, a pause longer than this plays as this long (``zsp play --idle-limit``)."""
_KEYS_KEEP = 256
"""Bytes of one keystroke run kept for the keystrokes panel."""
_VISIBLE = frozenset({int(FrameKind.OUTPUT), int(FrameKind.RESIZE), int(FrameKind.INPUT)})
"""Frame kinds a step stops at: they change the screen or what was typed."""


class MarkKind(enum.Enum):
    """What a timeline marker stands for (drawn with its own character and colour)."""

    COMMAND = "command"
    HIT = "hit"
    WARNING = "warning"
    EXPIRY = "expiry"
    REVOCATION = "revocation"
    MASKED = "masked"
    FLAG = "flag"
    """A real-time rule fired (a ``rule.match`` event frame)."""
    EVENT = "event"
    BREAK = "break"


_EVENT_KINDS = {
    "grant.warning": MarkKind.WARNING,
    "grant.expired": MarkKind.EXPIRY,
    "grant.revoked": MarkKind.REVOCATION,
    "input.masked": MarkKind.MASKED,
    "input.masked.excessive": MarkKind.WARNING,
    "upstream.error": MarkKind.WARNING,
    "session.recording_limit": MarkKind.WARNING,
    "rule.match": MarkKind.FLAG,
    "rule.terminate": MarkKind.WARNING,
    "rule.hold.deny": MarkKind.WARNING,
}


def _flag_showing(fields: dict[str, object]) -> str:
    """The line a command or output rule matched (what the screen shows there), else ""."""
    text = fields.get("text")
    if fields.get("trigger") in ("command", "output") and isinstance(text, str):
        return text.strip()[:60]
    return ""


def flag_label(fields: dict[str, object]) -> str:
    """What a ``rule.match`` frame says, as one line: ``RULE (severity, trigger): text``. Raw: the
    fields come from the recording (hostile), so it is drawn only through ``text.plain``."""

    def field(name: str) -> str:
        value = fields.get(name)
        return value if isinstance(value, str) else "?"

    return f"{field('rule')} ({field('severity')}, {field('trigger')}): {field('text')}"


@dataclass(frozen=True, slots=True)
class Marker:
    t_us: int
    kind: MarkKind
    label: str
    """From the recording: drawn only through ``text.plain`` (which escapes controls, never markup)."""
    frame: int
    showing: str = ""
    """Text the screen shows at (or just after) this moment, if known: a rule match's command or
    output line, which a jump to it looks for (as a command's line), so that it is on screen."""


@dataclass(frozen=True, slots=True)
class KeyRun:
    """Keystrokes typed up to an Enter (or up to the next masked input), or one masked input."""

    t_us: int
    """When the run began."""
    frame: int
    keys: bytes
    """Raw keystrokes (at most the last 256 bytes); empty for masked input."""
    size: int
    """Bytes typed in the run (``keys`` may hold fewer)."""
    masked: int = 0
    """Bytes withheld from the record (input at a password prompt); the keys themselves are never shown."""


@dataclass
class Overview:
    """Filled from verified frames in order (one thread writes, the UI reads under ``lock``)."""

    bins: dict[int, int] = field(default_factory=dict)
    """``t_us // BIN_US`` -> output bytes."""
    markers: list[Marker] = field(default_factory=list)
    flags: list[Marker] = field(default_factory=list)
    """The ``rule.match`` markers alone, in recording order (also in ``markers``): n/p-like jumps."""
    keys: list[KeyRun] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    files: list[TransferredFile] = field(default_factory=list)
    """Files transferred (``sftp.file`` / ``sftp.file_incomplete`` events), in recording order."""
    changes: list[FileOp] = field(default_factory=list)
    """Other changes to files (remove, rename, mkdir...: ``replay.file_changes``), in recording
    order; each one's ``outcome`` is filled in when the target's reply is read."""
    kinds: bytearray = field(default_factory=bytearray)
    """Kind of each verified frame, by sequence number."""
    end_us: int = 0
    """Time of the last verified frame."""
    checkpoints: dict[int, int] = field(default_factory=dict)
    """Sequence number -> time of each checkpoint (signature) frame: how far a signature reaches."""
    header: Header | None = None
    version: int = 0
    """Bumped on every change the UI draws (density, markers, keys, commands)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _change_wait: dict[int, int] = field(default_factory=dict)
    """SFTP request id -> index in ``changes`` of the change awaiting its reply."""
    _change_frames: dict[int, tuple[Frame]] = field(default_factory=dict)
    """Index in ``changes`` -> the request's frame, until its reply comes."""
    _run: bytearray = field(default_factory=bytearray)
    _run_size: int = 0
    _run_start: tuple[int, int] | None = None

    def add(self, frame: Frame) -> None:
        """Count one verified frame."""
        kind = frame.kind
        data = frame.data
        with self.lock:
            if frame.seq == len(self.kinds):
                self.kinds.append(int(kind))
            self.end_us = max(self.end_us, frame.t_us)
            if kind is FrameKind.OUTPUT and isinstance(data, bytes):
                b = frame.t_us // BIN_US
                self.bins[b] = self.bins.get(b, 0) + len(data)
                self.version += 1
            elif kind is FrameKind.INPUT and isinstance(data, bytes):
                if self._run_start is None:
                    self._run_start = (frame.t_us, frame.seq)
                self._run += data
                del self._run[:-_KEYS_KEEP]
                self._run_size += len(data)
                if b"\r" in data or b"\n" in data:
                    self._close_run()
            elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type not in PROTOCOL_EVENTS:
                mark = _EVENT_KINDS.get(data.type, MarkKind.EVENT)
                if data.type == "input.masked":
                    self._close_run()
                    n = data.fields.get("bytes")
                    size = n if isinstance(n, int) and n > 0 else 0
                    self.keys.append(KeyRun(frame.t_us, frame.seq, b"", size, masked=max(size, 1)))
                    label = f"masked input, {size} bytes"
                elif mark is MarkKind.FLAG:
                    label = flag_label(data.fields)[:1200]
                elif data.type in ("sftp.file", "sftp.file_incomplete"):
                    (f,) = files((frame,))
                    self.files.append(replace(f, index=len(self.files)))
                    label = f"{data.type}: {data.message}"[:300]
                else:
                    label = f"{data.type}: {data.message}"[:300]
                marker = Marker(frame.t_us, mark, label, frame.seq, _flag_showing(data.fields))
                self.markers.append(marker)
                if mark is MarkKind.FLAG:
                    self.flags.append(marker)
                self.version += 1
            elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type in ("sftp.op", "sftp.reply"):
                self._file_change(frame, data)
            elif kind is FrameKind.CHECKPOINT:
                self.checkpoints[frame.seq] = frame.t_us
            elif kind is FrameKind.HEADER and isinstance(data, Header):
                self.header = data

    def _file_change(self, frame: Frame, data: Event) -> None:
        """A request that changes files becomes a change and a marker; its reply, its outcome."""
        rid = data.fields.get("id")
        if data.type == "sftp.reply":
            at = self._change_wait.pop(rid, None) if isinstance(rid, int) else None
            if at is not None:
                (done,) = file_changes((*self._change_frames.pop(at), frame))
                self.changes[at] = done
                self.version += 1
            return
        changed = file_changes((frame,))
        if not changed:
            return
        (change,) = changed
        if isinstance(rid, int):
            self._change_wait[rid] = len(self.changes)
            self._change_frames[len(self.changes)] = (frame,)
        self.changes.append(change)
        self.markers.append(Marker(frame.t_us, MarkKind.EVENT, f"sftp {change.op}: {change.text}"[:300], frame.seq))
        self.version += 1

    def add_commands(self, commands: list[Command]) -> None:
        if not commands:
            return
        with self.lock:
            self.commands.extend(commands)
            self.markers.extend(
                Marker(c.t_us, MarkKind.COMMAND, (c.text or "(blank)")[:300], c.frame) for c in commands
            )
            self.version += 1

    def finish(self) -> None:
        """The end of the pass: the keystrokes typed since the last Enter become a run too."""
        with self.lock:
            self._close_run()
            self.version += 1

    def _close_run(self) -> None:
        if self._run_start is not None:
            t, seq = self._run_start
            self.keys.append(KeyRun(t, seq, bytes(self._run), self._run_size))
            self.version += 1
        self._run = bytearray()
        self._run_size = 0
        self._run_start = None

    def density(self, width: int, end_us: int) -> list[int]:
        """Output bytes in each of ``width`` equal slices of ``[0, end_us]``."""
        out = [0] * max(width, 0)
        if width <= 0:
            return out
        span = max(end_us, 1)
        with self.lock:
            items = list(self.bins.items())
        for b, n in items:
            x = min(width - 1, (b * BIN_US) * width // span)
            out[x] += n
        return out

    def snapshot(self) -> tuple[list[Marker], list[KeyRun], list[Command]]:
        with self.lock:
            return list(self.markers), list(self.keys), list(self.commands)

    def files_snapshot(self) -> list[TransferredFile]:
        with self.lock:
            return list(self.files)

    def changes_snapshot(self) -> list[FileOp]:
        with self.lock:
            return list(self.changes)

    def flag_markers(self) -> list[Marker]:
        """The moments rules fired, in recording order."""
        with self.lock:
            return list(self.flags)

    def checkpoint_time(self, seq: int) -> int | None:
        """Time of checkpoint frame ``seq`` (None if it is not one, or not read yet)."""
        with self.lock:
            return self.checkpoints.get(seq)

    def visible_before(self, seq: int) -> int | None:
        """The last frame before ``seq`` that changes the screen or the typed input (a step back)."""
        with self.lock:
            for i in range(min(seq, len(self.kinds)) - 1, 0, -1):
                if self.kinds[i] in _VISIBLE:
                    return i
        return None


def _commands(scanner: Scanner | None, frame: Frame) -> tuple[Scanner | None, list[Command]]:
    """Feed one signed frame to the command scanner (made from the header); the commands it resolves."""
    if scanner is None:
        if frame.kind is FrameKind.HEADER and isinstance(frame.data, Header):
            scanner = Scanner.for_header(frame.data)
            if frame.data.command:  # an exec (ssh host CMD): its command line, as requested
                return scanner, [Command(frame.seq, frame.t_us, frame.data.command, b"", False, 0)]
        return scanner, []
    return scanner, [i for i in scanner.feed(frame) if isinstance(i, Command)]


def read_overview(
    path: Path,
    trusted: list[PublicKey],
    overview: Overview,
    *,
    progress: Callable[[float], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> VerificationReport | None:
    """Verify the whole recording (``zsp verify``'s pass) and fill ``overview`` on the way; None if stopped.

    Fast (no emulation): this is what puts the verdict on screen. Raises :class:`replay.SourceError`."""
    from replay import SourceError

    name = str(path)
    try:
        size = max(os.stat(path).st_size, 1)
        f: BinaryIO = open(path, "rb")
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    with f:
        gen = verify_frames(f, trusted, source=name)
        n = 0
        try:
            while True:
                frame = next(gen)
                overview.add(frame)
                n += 1
                if n % 512 == 0:
                    if stop():
                        return None
                    if progress is not None:
                        progress(min(f.tell() / size, 1.0))
        except StopIteration as end:
            report: VerificationReport = end.value
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    overview.finish()
    return report


def untrusted_tail_end(path: Path, report: VerificationReport, *, limit: int = 1 << 20) -> int | None:
    """For a CORRUPT recording: the latest time any frame after the break *claims* (read without the
    chain, so only where the untrusted part lies on the timeline, never what it holds); None if
    nothing after the break decodes. At most ``limit`` frames are read."""
    if report.bad_offset is None or report.bad_frame is None:
        return None
    end: int | None = None
    try:
        with open(path, "rb") as f:
            f.seek(report.bad_offset)
            for i, (_index, _offset, body, _stored) in enumerate(iter_raw(f, report.bad_offset)):
                if i >= limit:
                    break
                try:
                    t = decode_body(body)[2]
                except FormatViolation:
                    continue
                if isinstance(t, int) and report.duration_us <= t <= report.duration_us + 10**12:
                    end = t if end is None else max(end, t)
    except (OSError, ReplayError):
        return end
    return end


class Feed:
    """One verified pass over a recording in a thread: grows ``index`` (unless it came from the
    cache, ``build=False``), the Overview (``overview=True``: a live session, which has no separate
    verification pass) and the commands (``commands``; a second emulation of every frame, so a
    finished recording's index is built first and its commands found by a second Feed after it,
    which halves the time to reach a moment far into an uncached recording). ``follow``: read a
    live recording as it grows.

    ``lock`` guards the index (held while a frame is added and while the UI seeks)."""

    def __init__(
        self,
        path: Path,
        trusted: list[PublicKey],
        index: SeekIndex,
        overview: Overview,
        *,
        follow: bool,
        build: bool,
        with_overview: bool,
        commands: bool = True,
        session_id: str | None = None,
        poll: float = 0.2,
        on_complete: Callable[[Feed], None] | None = None,
    ) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.index = index
        self.overview = overview
        self.follow = follow
        self.build = build
        self.with_overview = with_overview
        self.commands = commands
        self.session_id = session_id
        """The session this recording must be (its header's id); None: not checked."""
        self.read = 0
        """Frames verified so far (signed or not)."""
        self.offset = 0
        """Bytes of the file read so far."""
        self.report: VerificationReport | None = None
        self.error: str | None = None
        self.done = False
        self._stop = threading.Event()
        self._on_complete = on_complete
        self._builder = IndexBuilder(index)
        self._gen = located_frames(path, trusted, follow=follow, poll=poll, stop=self._stop.is_set)
        self._thread = threading.Thread(target=self._run, name="zsp-review-feed", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Frames verified but not yet covered by a signature (not shown)."""
        return max(0, self.read - self.index.shown - 1)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        def counted() -> Iterator[Located]:
            try:
                while True:
                    item = next(self._gen)
                    data = item.frame.data
                    if isinstance(data, Header) and self.session_id is not None:
                        if str(data.session_id) != self.session_id:
                            # Another session's recording (copied over this one's file): nothing of it.
                            raise ReplayError(
                                f"CORRUPT wrong-session: the file holds session {data.session_id}, "
                                f"not {self.session_id}"
                            )
                    self.read = item.frame.seq + 1
                    self.offset = item.end
                    if self.with_overview:
                        self.overview.add(item.frame)
                    yield item
            except StopIteration as end:
                self.report = end.value

        scanner: Scanner | None = None
        try:
            for item in signed_located(counted()):
                if self._stop.is_set():
                    return
                if self.build:
                    with self.lock:
                        self._builder.add(item)
                if self.commands:
                    scanner, found = _commands(scanner, item.frame)
                    self.overview.add_commands(found)
            if scanner is not None:
                self.overview.add_commands([i for i in scanner.finish() if isinstance(i, Command)])
            if self.with_overview:
                self.overview.finish()
        except ReplayError as exc:  # the file changed under us, or cannot be read
            self.error = str(exc)
            return
        finally:
            self.done = True
        if self.report is not None and self._on_complete is not None:
            self._on_complete(self)


class Playback:
    """The playhead and its clock. Used from the UI thread only; a seek's playhead may be built in
    a worker with :meth:`playhead_at` and installed with :meth:`install`."""

    def __init__(self, seeker: Seeker, lock: threading.Lock | None = None, *, live: bool = False) -> None:
        self.seeker = seeker
        self._lock = lock
        self.live = live
        """Following a recording still being written: at its end the clock waits for more."""
        self.speed = 1.0
        self.paused = False
        self.skip_idle = True
        self.ph: Playhead = self.playhead_at(0)
        self.pos_us = self.ph.t_us
        self._frames: Iterator[tuple[Frame, int, bytes]] | None = None
        self._next: tuple[Frame, int, bytes] | None = None
        self._partial: tuple[Frame, int, bytes, bytes, int] | None = None
        self.slicer = Slicer()
        """Sizes the slices a large output frame is fed in: a frame may hold up to 1 MiB (the
        format's cap), fed between two looks at the keyboard, about 20 ms of emulator time each."""
        """A large output frame being fed in slices: (frame, end, head, data, bytes fed)."""
        self._edge = False
        self.version = 0
        """Bumped whenever the screen may have changed."""
        self.signed_end_us = 0
        """How far the last signature reaches (it may be after the last frame shown): the clock
        runs on to there at the end, so the reviewer sees where the signed part ends."""
        self.following = live
        """At the live edge of a live recording: each tick shows the latest signed moment (the
        clock and the speed do not apply); a seek leaves it, reaching the end again or
        :meth:`go_live` returns to it."""
        self.jumps = 0
        """Times the live edge was reached by a jump to the newest keyframe (frames skipped)."""

    # --- seeking (thread-safe: reads the index under its lock) ------------------------------

    def playhead_at(self, t_us: int) -> Playhead:
        if self._lock is None:
            return self.seeker.playhead_at(max(0, t_us))
        with self._lock:
            return self.seeker.playhead_at(max(0, t_us))

    def playhead_at_frame(self, seq: int) -> Playhead:
        if self._lock is None:
            return self.seeker.playhead_at_frame(max(0, seq))
        with self._lock:
            return self.seeker.playhead_at_frame(max(0, seq))

    def find_forward(
        self, t_us: int, needle: str, *, max_frames: int = 512, max_us: int = 60_000_000
    ) -> Playhead | None:
        """The first moment at or after ``t_us`` whose screen shows ``needle`` (case-insensitive),
        looking at most ``max_frames`` frames and ``max_us`` ahead; None if it does not show.

        A search hit's time is where the indexer saw its line written, as far as it could tell
        cheaply; the screen that shows it may come a few frames later."""
        want = needle.lower()
        ph = self.playhead_at(t_us)

        def shows() -> bool:
            return any(want in line.lower() for line in ph.terminal.screen().lines)

        if not want or shows():
            return ph
        for n, (frame, end, head) in enumerate(self.seeker.frames_after(ph)):
            if n >= max_frames or frame.t_us > t_us + max_us:
                return None
            ph.apply(frame)
            ph.offset, ph.head = end, head
            if frame.kind is FrameKind.OUTPUT and shows():
                return ph
        return None

    def install(self, ph: Playhead, pos_us: int) -> None:
        """Make ``ph`` the playhead, the clock at ``pos_us`` (at least the playhead's own time)."""
        self.ph = ph
        self.pos_us = max(pos_us, ph.t_us)
        self._frames = None
        self._next = None
        self._partial = None
        self._edge = False
        self.version += 1

    def seek(self, t_us: int) -> None:
        """Seek now, on this thread (small recordings, tests; the screen seeks in a worker)."""
        t = max(0, t_us)
        self.install(self.playhead_at(t), t)

    # --- moving forward ---------------------------------------------------------------------

    @property
    def duration_us(self) -> int:
        return self.seeker.duration_us

    def _peek(self) -> tuple[Frame, int, bytes] | None:
        if self._next is None:
            if self._frames is None:
                self._frames = self.seeker.frames_after(self.ph)
            try:
                self._next = next(self._frames)
            except StopIteration:
                self._frames = None  # read again later: a live recording grows
                return None
        return self._next

    def _advance(self) -> Frame | None:
        item = self._peek()
        if item is None:
            return None
        frame, end, head = item
        self._next = None
        self.ph.apply(frame)
        self.ph.offset, self.ph.head = end, head
        self.version += 1
        return frame

    @property
    def at_end(self) -> bool:
        return self._partial is None and self._peek() is None

    def _feed_slices(self, deadline: float, clock: Callable[[], float]) -> bool:
        """Go on feeding the large frame in slices until it is done (True) or the time is up."""
        while self._partial is not None:
            frame, end, head, data, done = self._partial
            n = self.slicer.size
            started = clock()
            self.ph.terminal.feed(data[done : done + n])
            self.ph.terminal.take_lines()
            self.slicer.took(clock() - started)
            done += n
            self.version += 1
            if done >= len(data):
                self._partial = None
                self.ph.typed.feed(frame)
                self.ph.frame, self.ph.t_us = frame.seq, frame.t_us
                self.ph.offset, self.ph.head = end, head
                return True
            self._partial = (frame, end, head, data, done)
            if clock() > deadline:
                return False
        return True

    def go_live(self) -> None:
        """Follow the live edge again (End): the next tick shows the latest signed moment."""
        if self.live:
            self.following = True
            self.paused = False

    def _follow_edge(self, deadline: float, clock: Callable[[], float]) -> None:
        """At the live edge: show the newest signed frame, coalescing what arrived since the last
        tick. Behind by more than a keyframe, the playhead jumps to the newest keyframe (the
        intermediate screens are skipped: the cost is one keyframe and at most one keyframe's
        worth of output, however fast the session writes); otherwise the new frames are applied
        for at most the tick's budget (a large frame in slices), the rest at the next tick."""
        if not self._feed_slices(deadline, clock):
            return
        index = self.seeker.index
        keyframes = index.keyframes
        last = index.shown - 1
        if keyframes and keyframes[-1].frame > self.ph.frame and last > self.ph.frame:
            self.install(self.playhead_at_frame(last), 0)
            self.jumps += 1
        while True:
            nxt = self._peek()
            if nxt is None:
                self.pos_us = max(self.ph.t_us, self.seeker.duration_us, self.signed_end_us)
                return
            if not self._apply(nxt, deadline, clock) or clock() > deadline:
                break
        self.pos_us = max(self.pos_us, self.ph.t_us)

    def _apply(self, nxt: tuple[Frame, int, bytes], deadline: float, clock: Callable[[], float]) -> bool:
        """Apply the peeked frame ``nxt``: an output frame over the current slice size is fed in
        slices until ``deadline`` (False if it is not through yet: the rest at the next tick)."""
        frame, end, head = nxt
        self.slicer.new_frame()
        if frame.kind is FrameKind.OUTPUT and isinstance(frame.data, bytes) and len(frame.data) > self.slicer.size:
            self._next = None
            data = frame.data.replace(b"\n", b"\r\n") if self.ph.onlcr else frame.data
            self._partial = (frame, end, head, data, 0)
            return self._feed_slices(deadline, clock)
        self._advance()
        return True

    def tick(self, dt_s: float, budget_s: float, clock: Callable[[], float]) -> None:
        """Move the clock by ``dt_s`` of real time (at the speed) and apply the frames due, for at
        most ``budget_s`` (what is left is applied at the next tick: playback lags, the UI does not).
        Following a live recording's edge, show its newest signed moment instead."""
        if self.live and self.following and not self.paused:
            deadline = clock() + budget_s
            self._follow_edge(deadline, clock)
            return
        if not self.paused:
            self.pos_us += int(dt_s * self.speed * 1e6)
        deadline = clock() + budget_s
        if not self._feed_slices(deadline, clock):
            return
        while True:
            nxt = self._peek()
            if nxt is None:
                # Caught up: the clock waits at the last frame shown (a live session's next frame
                # shows as soon as it is signed, not after the time since then).
                # Paused (the reviewer put the playhead past the end, into what is not shown): it stays.
                if not self.paused:
                    self.pos_us = min(self.pos_us, max(self.seeker.duration_us, self.ph.t_us, self.signed_end_us))
                    if self.live:
                        self.following = True  # played up to the live edge: follow it again
                self._edge = self.live
                return
            t = nxt[0].t_us
            if self._edge:
                self._edge = False
                self.pos_us = max(self.pos_us, t)
            if self.paused:
                return
            if self.skip_idle and t - self.pos_us > IDLE_CAP_US:
                self.pos_us = t - IDLE_CAP_US
            if t > self.pos_us:
                return
            if not self._apply(nxt, deadline, clock) or clock() > deadline:
                return

    def step(self) -> bool:
        """One frame forward (to the next that changes the screen or the typed input); pauses
        (and leaves the live edge)."""
        self.paused = True
        self.following = False
        if self._partial is not None:
            self._feed_slices(float("inf"), lambda: 0.0)
            return True
        while True:
            frame = self._advance()
            if frame is None:
                return False
            self.pos_us = max(self.pos_us, frame.t_us)
            if frame.kind in (FrameKind.OUTPUT, FrameKind.RESIZE, FrameKind.INPUT):
                return True

    def faster(self) -> None:
        self.speed = min((s for s in SPEEDS if s > self.speed), default=SPEEDS[-1])

    def slower(self) -> None:
        self.speed = max((s for s in SPEEDS if s < self.speed), default=SPEEDS[0])
