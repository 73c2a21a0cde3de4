"""The interactive player behind ``zsp play``: the emulated screen drawn on the reviewer's terminal.

Nothing recorded is written to the terminal: frames go into the emulator (:class:`replay.Terminal`)
and :class:`replay.Renderer` draws the resulting screen with cursor moves, colours and checked
text only. The terminal is put in raw mode (no ISIG: Ctrl-C arrives as a key) on the alternate
screen with the cursor hidden, and put back exactly as it was (termios attributes, main screen,
cursor shown, attributes reset) on every way out: ``q``, Ctrl-C, an error, SIGTERM, SIGHUP,
SIGINT, SIGQUIT, SIGUSR1/2, SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU from outside (not SIGKILL, which
nothing can catch). Suspended from outside (SIGTSTP), it gives the terminal back the same way
while stopped and takes it again, redrawn, on SIGCONT. At the end of the recording the last
screen stays until ``q`` (or Enter).

Keys: space pause/resume; ``+``/``-`` speed (0.25x to 16x); left/right seek 5 s back/forward,
up/down 60 s; ``.`` one frame forward (pauses); ``q`` or Ctrl-C quit.

Live recordings (still being written) are followed by a thread that verifies new frames as they
are written and adds them to the seek index; a finished recording whose seek index is not cached
yet is indexed by the same thread while it plays (and cached when complete), so playback starts at
once even for a 100 MB session. Only frames a verified signature covers are shown:
the newest frames of a live session wait for the writer's next checkpoint (at most a few seconds),
and the status line says how many are waiting. This is the same rule as for a finished recording.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import signal
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from recorder import Frame, FrameKind, PublicKey
from replay import (
    IndexBuilder,
    Located,
    Outcome,
    Playhead,
    Renderer,
    ReplayError,
    Seeker,
    SeekIndex,
    Slicer,
    VerificationReport,
    load_index,
    located_frames,
    safe_text,
    save_index,
    signed_located,
)

__all__ = [
    "LiveFeed",
    "PlayOptions",
    "background_seeker",
    "follow_seeker",
    "format_time",
    "parse_time",
    "play_interactive",
    "screen_text",
]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SEEK_SHORT_US = 5_000_000
SEEK_LONG_US = 60_000_000
_WORK_S = 0.03
"""Longest run of emulation between two looks at the keyboard."""
_FRAME_S = 1 / 50
_ENTER_SCREEN = b"\x1b[?1049h\x1b[?7l\x1b[?25l\x1b[0m\x1b[2J"
"""Alternate screen, autowrap off, cursor hidden. Autowrap off: a row the reviewer's terminal
measures wider than the emulator did (East Asian ambiguous-width characters on a terminal set to
draw them wide, emoji sequences, a newer Unicode table) is cut at the right margin instead of
wrapping over the rows below and the status line, or scrolling the whole view."""
RESTORE = b"\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l"
"""What the player writes last, whatever happened: attributes reset, autowrap back on, cursor
shown, main screen."""


@dataclass(frozen=True, slots=True)
class PlayOptions:
    speed: float = 1.0
    """Playback speed factor at the start (``+``/``-`` change it)."""
    idle_limit: float | None = 2.0
    """Pauses longer than this many seconds are shortened to it (None: kept)."""
    start_us: int = 0
    """Where playback starts, microseconds from the session's start."""
    end_us: int | None = None
    """The verified duration: how far a seek may go while the index is still being built."""


def parse_time(text: str) -> int:
    """``SECONDS``, ``MM:SS`` or ``HH:MM:SS`` (seconds may have a fraction) as microseconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(not p.strip() for p in parts):
        raise ValueError(f"bad time {text!r}: give seconds, MM:SS or HH:MM:SS")
    try:
        nums = [float(p) if i == len(parts) - 1 else int(p) for i, p in enumerate(parts)]
    except ValueError:
        raise ValueError(f"bad time {text!r}: give seconds, MM:SS or HH:MM:SS") from None
    if not all(math.isfinite(n) for n in nums):
        raise ValueError(f"bad time {text!r}: give seconds, MM:SS or HH:MM:SS")
    if any(n < 0 for n in nums):
        raise ValueError(f"bad time {text!r}: must not be negative")
    if (len(parts) > 1 and nums[-1] >= 60) or (len(parts) == 3 and nums[1] >= 60):
        raise ValueError(f"bad time {text!r}: minutes and seconds must be below 60")
    total = 0.0
    for n in nums:
        total = total * 60 + n
    if total > 10**9:
        raise ValueError(f"bad time {text!r}: too large")
    return round(total * 1e6)


def format_time(us: int) -> str:
    s = max(0, us) // 1_000_000
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def screen_text(seeker: Seeker, t_us: int) -> list[str]:
    """The screen at ``t_us`` as lines of checked text (trailing blank lines dropped)."""
    screen, _ = seeker.screen_at(t_us)
    # The emulator keeps controls out of cells; safe_text checks again and also takes out bidi
    # overrides. Unlike printable() it leaves backslashes alone: the screen shows what it showed.
    lines = [safe_text(line) for line in screen.lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class LiveFeed:
    """Grows the seek index in a thread while the player plays: follows a recording still being
    written (``follow=True``), or indexes a finished one whose index is not cached yet, so that
    playback starts at once instead of after a pass through the whole file.

    :meth:`stop` ends it within one poll interval. ``lock`` guards the index (held while a frame
    is added and while the player seeks). ``on_complete`` is called with the index and the
    verification report when the whole recording was read (to cache the index).
    """

    def __init__(
        self,
        path: Path,
        trusted: Iterable[PublicKey],
        index: SeekIndex,
        *,
        follow: bool = True,
        poll: float = 0.2,
        on_complete: Callable[[SeekIndex, VerificationReport], None] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.index = index
        self.follow = follow
        self.read = 0
        """Frames verified so far (signed or not)."""
        self.report: VerificationReport | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._on_complete = on_complete
        self._builder = IndexBuilder(index)
        self._gen = located_frames(path, trusted, follow=follow, poll=poll, stop=self._stop.is_set)
        self._thread = threading.Thread(target=self._run, name="zsp-play-index", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Frames verified but not yet covered by a signature."""
        return max(0, self.read - self.index.shown - 1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        def counted() -> Iterator[Located]:
            try:
                while True:
                    item = next(self._gen)
                    self.read = item.frame.seq + 1
                    yield item
            except StopIteration as end:
                self.report = end.value

        try:
            for item in signed_located(counted()):
                if self._stop.is_set():
                    return
                with self.lock:
                    self._builder.add(item)
        except ReplayError as exc:  # the file changed under us, or cannot be read
            self.error = str(exc)
            return
        if self.report is not None and self._on_complete is not None:
            self._on_complete(self.index, self.report)


def _wait_for_start(feed: LiveFeed, what: str) -> None:
    """Wait until the index has its first keyframe (the header, once signed)."""
    deadline = time.monotonic() + 30
    while not feed.index.keyframes and feed.running and time.monotonic() < deadline:
        time.sleep(0.02)
    if not feed.index.keyframes:
        feed.stop()
        raise ReplayError(feed.error or f"nothing of the {what} is signed yet")


def follow_seeker(path: Path, trusted: Iterable[PublicKey], report: VerificationReport) -> tuple[Seeker, LiveFeed]:
    """A Seeker over a recording still being written, and the (started) feed that grows its index."""
    if report.header is None:
        raise ReplayError("not a recording")
    index = SeekIndex(str(report.header.session_id), 0, b"", 0, 0, 0, 0)
    feed = LiveFeed(path, trusted, index, follow=True)
    feed.start()
    _wait_for_start(feed, "live recording")
    return Seeker(path, index), feed


def background_seeker(
    path: Path, trusted: Iterable[PublicKey], report: VerificationReport, cache: Path | None
) -> tuple[Seeker, LiveFeed | None]:
    """A Seeker for a finished recording: from the cache if it matches, else with its index built in
    a thread while playback starts (and cached when complete)."""
    if report.header is None:
        raise ReplayError("not a recording")
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ReplayError(exc.strerror or str(exc)) from None
    cached = load_index(cache) if cache is not None else None
    if cached is not None and cached.matches(report, size):
        return Seeker(path, cached), None
    sid = str(report.header.session_id)
    index = SeekIndex(sid, size, report.head or b"", report.frames, report.signed_frames, 0, 0)

    def complete(built: SeekIndex, final: VerificationReport) -> None:
        same = final.head == report.head and final.frames == report.frames
        if cache is not None and same and built.shown == report.signed_frames:
            save_index(built, cache)

    feed = LiveFeed(path, trusted, index, follow=False, on_complete=complete)
    feed.start()
    _wait_for_start(feed, "recording")
    return Seeker(path, index), feed


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


class _Player:
    def __init__(
        self,
        seeker: Seeker,
        verdict: Callable[[], str],
        opts: PlayOptions,
        in_fd: int,
        out_fd: int,
        live: LiveFeed | None,
    ) -> None:
        self.seeker = seeker
        self.verdict = verdict
        self.idle_us = None if opts.idle_limit is None else int(opts.idle_limit * 1e6)
        self.speed = opts.speed
        self.end_us = opts.end_us
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.live = live
        self.paused = False
        cols, rows = self._size()
        self.renderer = Renderer(cols, rows)
        self.ph: Playhead = self._seek_to(opts.start_us)
        self.pos_us = max(opts.start_us, self.ph.t_us)
        self._frames: Iterator[tuple[Frame, int, bytes]] | None = None
        self._next: tuple[Frame, int, bytes] | None = None
        self._fed = 0
        """How much of the next frame's output is on the terminal already (fed in slices)."""
        self._slicer = Slicer()
        self._winch = False
        self._edge = False
        self._dirty = True
        self._last_draw = 0.0

    def _size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out_fd)
            return size.columns or 80, size.lines or 24
        except OSError:
            return 80, 24

    def _lock(self) -> contextlib.AbstractContextManager[object]:
        return self.live.lock if self.live is not None else contextlib.nullcontext()

    def _seek_to(self, t_us: int) -> Playhead:
        with self._lock():
            ph = self.seeker.playhead_at(max(0, t_us))
        self._frames = None
        self._next = None
        self._fed = 0
        self._edge = False
        self._dirty = True
        return ph

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
        """Apply the next frame, or, for output, the next slice of it.

        Hostile output can cost the emulator a millisecond per byte (a screen filled and erased
        over and over), so keys are read between slices, not after a whole frame. A frame fed in
        part is returned too, and stays next (``_peek``) until its last slice."""
        item = self._peek()
        if item is None:
            return None
        frame, end, head = item
        data = frame.data
        slicer = self._slicer
        if self._fed == 0:
            slicer.new_frame()
        if frame.kind is FrameKind.OUTPUT and isinstance(data, bytes) and len(data) - self._fed > slicer.size:
            start, stop = self._fed, self._fed + slicer.size
            t0 = time.monotonic()
            self.ph.feed(data[start:stop])
            slicer.took(time.monotonic() - t0)
            self._fed = stop
            self._dirty = True
            return frame
        if self._fed:
            if isinstance(data, bytes):
                self.ph.feed(data[self._fed :])
            self.ph.passed(frame)
            self._fed = 0
        else:
            self.ph.apply(frame)
        self._next = None
        self.ph.offset, self.ph.head = end, head
        self._dirty = True
        return frame

    @property
    def at_end(self) -> bool:
        live_running = self.live is not None and self.live.running
        return self._peek() is None and not live_running

    # --- keys --------------------------------------------------------------------------------

    def _keys(self, data: bytes) -> bool:
        """Act on typed keys; False to quit."""
        i = 0
        while i < len(data):
            c = data[i : i + 1]
            i += 1
            if c in (b"q", b"Q", b"\x03", b"\x04") or (c in (b"\r", b"\n") and self.at_end):
                return False
            if c == b" ":
                self.paused = not self.paused
            elif c in (b"+", b"="):
                self.speed = min((s for s in SPEEDS if s > self.speed), default=SPEEDS[-1])
            elif c in (b"-", b"_"):
                self.speed = max((s for s in SPEEDS if s < self.speed), default=SPEEDS[0])
            elif c == b".":
                self.paused = True
                self._step()
            elif c == b"\x1b" and data[i : i + 1] in (b"[", b"O") and i + 1 < len(data):
                arrow = data[i + 1 : i + 2]
                i += 2
                delta = {b"C": SEEK_SHORT_US, b"D": -SEEK_SHORT_US, b"A": -SEEK_LONG_US, b"B": SEEK_LONG_US}.get(arrow)
                if delta is not None:
                    target = max(0, min(self.pos_us + delta, self._end_us()))
                    self.ph = self._seek_to(target)
                    self.pos_us = target
            self._dirty = True
        return True

    def _end_us(self) -> int:
        """Where a seek may go: the end of what is indexed, or, while a finished recording is still
        being indexed, its verified end (the frames appear as the index reaches them)."""
        indexing = self.live is not None and self.live.running and not self.live.follow
        if indexing and self.end_us is not None:
            return max(self.end_us, self.seeker.duration_us)
        return self.seeker.duration_us

    def _step(self) -> None:
        while True:
            frame = self._advance()
            if frame is None:
                return
            self.pos_us = max(self.pos_us, frame.t_us)
            if frame.kind in (FrameKind.OUTPUT, FrameKind.RESIZE, FrameKind.INPUT):
                return

    # --- drawing -----------------------------------------------------------------------------

    def _status(self) -> str:
        dur = self.seeker.duration_us
        state = "paused" if self.paused else ("end" if self.at_end else "playing")
        parts = [f"{state} {format_time(self.pos_us)}/{format_time(dur)} {self.speed:g}x frame {self.ph.frame}/"
                 f"{max(self.seeker.index.shown - 1, 0)}"]
        if self.renderer.cropped:
            screen = self.ph.terminal
            ox, oy = self.renderer.origin
            parts.append(f"CROPPED {screen.cols}x{screen.rows} at +{ox}+{oy}")
        if self.at_end:  # early: the line is cut at the terminal's width, the keys must show
            parts.append("end: q quit, arrows seek")
        if self.live is not None:
            if self.live.error:
                parts.append(f"STOPPED: {self.live.error}")
            elif self.live.running and self.live.follow:
                parts.append(f"LIVE, {self.live.pending} frame(s) awaiting signature (not shown)")
            elif self.live.running:
                parts.append(f"{self.verdict()} (indexing: {self.live.read} frames read)")
            else:
                parts.append(self.verdict())
        else:
            parts.append(self.verdict())
        typed = self.ph.typed.describe(self.pos_us)
        if typed:  # last: the longest part, and the one to lose when the line is cut
            parts.append(f"typed: {typed}")
        return " | ".join(parts)

    def _draw(self) -> None:
        data = self.renderer.draw(self.ph.terminal.screen(), self._status())
        _write_all(self.out_fd, data)
        self._dirty = False
        self._last_draw = time.monotonic()

    # --- the loop ----------------------------------------------------------------------------

    def run(self, wake_fd: int) -> None:
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if not self.paused:
                self.pos_us += int((now - last) * self.speed * 1e6)
            last = now
            budget = now + _WORK_S
            wait: float | None = 0.5
            while True:
                nxt = self._peek()
                if nxt is None:
                    indexing = self.live is not None and self.live.running and not self.live.follow
                    if not indexing:
                        # Caught up: the clock waits at the last frame (a live session's next
                        # frame is shown as soon as it is signed, not after the time since then).
                        self.pos_us = min(self.pos_us, self.seeker.duration_us)
                        self._edge = self.live is not None
                    wait = 0.2 if self.live is not None and self.live.running else None
                    break
                t = nxt[0].t_us
                if self._edge:
                    self._edge = False
                    self.pos_us = max(self.pos_us, t)
                if self.paused:
                    wait = None
                    break
                if self.idle_us is not None and t - self.pos_us > self.idle_us:
                    self.pos_us = t - self.idle_us  # a long pause is shortened to the idle limit
                if t > self.pos_us:
                    wait = (t - self.pos_us) / self.speed / 1e6
                    break
                self._advance()
                if time.monotonic() > budget:
                    wait = 0
                    break
            if self._winch:
                self._winch = False
                cols, rows = self._size()
                self.renderer.resize(cols, rows)
                self._dirty = True
            if self._dirty and (wait is None or wait > 0 or time.monotonic() - self._last_draw >= _FRAME_S):
                self._draw()
            if not self.paused and wait is not None:
                wait = min(wait, 0.25)  # the clock in the status line moves
            elif wait is None:
                wait = 0.5 if self.live is not None else None
            try:
                ready, _, _ = select.select([self.in_fd, wake_fd], [], [], wait)
            except InterruptedError:
                ready = []
            if wake_fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_fd, 512)
            if self.in_fd in ready:
                try:
                    keys = os.read(self.in_fd, 1024)
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.EBADF):
                        return  # the terminal is gone (hang-up)
                    raise
                if not keys or not self._keys(keys):
                    return
            if not self.paused:
                self._dirty = True  # the clock moved


def play_interactive(
    seeker: Seeker,
    verdict: Callable[[], str],
    opts: PlayOptions,
    *,
    live: LiveFeed | None = None,
    in_fd: int = 0,
    out_fd: int = 1,
) -> int:
    """Play on the terminal ``in_fd``/``out_fd``; returns 0, or 128+N when stopped by signal N.

    The terminal is restored on every way out (see the module docstring)."""
    saved = termios.tcgetattr(in_fd)
    rpipe, wpipe = os.pipe()
    os.set_blocking(wpipe, False)
    os.set_blocking(rpipe, False)
    old: dict[signal.Signals, signal._HANDLER] = {}
    player_ref: list[_Player] = []

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signum)

    def on_winch(_signum: int, _frame: FrameType | None) -> None:
        if player_ref:
            player_ref[0]._winch = True

    def on_tstp(_signum: int, _frame: FrameType | None) -> None:
        # Suspended from outside (`kill -TSTP`; Ctrl-Z is a key in raw mode): give the terminal
        # back as it was before stopping, take it again and redraw everything on SIGCONT.
        with contextlib.suppress(OSError, termios.error):
            _write_all(out_fd, RESTORE)
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        # SIGSTOP, not SIGTSTP again: the kernel ignores a TSTP to an orphaned process group
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped here until SIGCONT
        with contextlib.suppress(OSError, termios.error):
            tty.setraw(in_fd, termios.TCSANOW)
            _write_all(out_fd, _ENTER_SCREEN)
        if player_ref:
            player_ref[0]._winch = True  # a full redraw, at whatever size the terminal has now

    old_wakeup = -1
    try:
        for sig in _STOP_SIGNALS:
            old[sig] = signal.signal(sig, on_stop)
        old[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_winch)
        old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, on_tstp)
        old_wakeup = signal.set_wakeup_fd(wpipe, warn_on_full_buffer=False)
        tty.setraw(in_fd, termios.TCSANOW)  # no ISIG: Ctrl-C is a key
        _write_all(out_fd, _ENTER_SCREEN)
        player = _Player(seeker, verdict, opts, in_fd, out_fd, live)
        player_ref.append(player)
        player.run(rpipe)
        return 0
    except _Stop as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 130
    finally:
        # Every way out passes here; signals that would interrupt the restore are held off.
        with _signals_blocked():
            if live is not None:
                live.stop()
            try:
                _write_all(out_fd, RESTORE)
            except OSError:
                pass  # the terminal is gone; its settings are restored below if it still exists
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
            signal.set_wakeup_fd(old_wakeup)
            for signum, previous in old.items():
                signal.signal(signum, previous)
            os.close(rpipe)
            os.close(wpipe)


_STOP_SIGNALS = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGXCPU,
)
"""Signals whose default action ends the process: each stops the player through the restore
(SIGINT does too, as KeyboardInterrupt). Only these were TERM and HUP: ``kill -QUIT`` or
``kill -USR1`` left the reviewer's terminal raw, on the alternate screen, cursor hidden."""


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    sigs = {*_STOP_SIGNALS, signal.SIGINT, signal.SIGWINCH}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def is_interactive(in_fd: int = 0, out_fd: int = 1) -> bool:
    return os.isatty(in_fd) and os.isatty(out_fd)


def outcome_word(report: VerificationReport) -> str:
    """Short verification state for the status line."""
    if report.outcome is Outcome.VALID:
        return "VALID"
    signed = max(report.signed_frames - 1, 0)
    return f"{report.outcome.value}: shown up to frame {signed}"
