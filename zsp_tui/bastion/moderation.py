"""Moderated sessions: a session under a grant whose policy rule says ``moderation = "watch"``.

The session does not reach its target until a moderator (a user matching the rule's
``moderators``, never the operator, admins included) watches it with
``ssh -t zsp@BASTION watch SESSION`` or from the review app's Live screen (``j``); it ends if
nobody does within ``[bastion] moderation_wait`` seconds. When the last moderator leaves, the
operator's input is held (not read, so nothing typed is lost or sent) for
``[bastion] moderation_grace`` seconds, then the session ends; a moderator joining meanwhile
releases it. A moderator can end the session (``T`` in the view).

Who watches is in the store, not in this process: ``AccessService.join_watch`` checks the rules
and keeps a watch row (audited), the watcher beats it every :data:`BEAT_S` seconds, and the
bastion that records the session (its grant watcher, ``Bastion._moderate``) reads the open watches
of its moderated sessions four times a second and hands the fresh ones to :meth:`Moderation.sync`.
So any process of the host serves a watcher (a worker of ``zsp serve --workers``, the review app);
a heartbeat older than :data:`FRESH_S` counts as gone (``lost``), a watch ended ``terminated``
ends the session, and a store that stops answering leaves the last read to go stale (fail closed).

The watch view is read-only and never relays the target's raw bytes: it follows the recording
being written (``replay.follow``, verified frame by frame), feeds the replay emulator
(``replay.Terminal``) and draws its screens with ``replay.Renderer`` (cursor moves, SGR, text).
Who watched, from when to when, is in the recording (``moderation.watch.start`` and
``moderation.watch.end`` event frames) and the audit log (``session.watch.start``/``end``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from recorder import FrameKind, RecordingFailed, Resize
from replay import Renderer, SourceError, Terminal, WorkBudget, follow, printable

from ..models import WATCH_BEAT_S, WATCH_FRESH_S
from ..rules.engine import SCAN_BURST, SCAN_RATE
from .limits import window_size

if TYPE_CHECKING:
    from ..models import SessionRecord, Watch
    from .session import LiveSession

__all__ = ["BEAT_S", "FRESH_S", "Moderation", "watch_view"]

_DRAW_INTERVAL = 0.1
BEAT_S = WATCH_BEAT_S
FRESH_S = WATCH_FRESH_S


@dataclass(eq=False)
class Moderation:
    """The moderators a session needs, who watches it now, and the gate on the operator's input.

    Who watches is the store's (``watches``, written by whichever process serves the watcher):
    the owning bastion's grant watcher reads the open watches four times a second and hands the
    fresh ones to :meth:`sync`; this object only remembers the last set to tell joins and leaves."""

    moderators: tuple[str, ...]
    """Policy principals (the grant's rule's ``moderators``)."""
    grace: float
    on_lapse: Callable[[], None]
    """Called when the grace after the last moderator left is over (ends the session)."""
    watchers: dict[str, Watch] = field(default_factory=dict)
    """The watches known present (fresh heartbeat), by id."""
    present: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while at least one moderator watches: the operator's input flows."""
    started: bool = False
    """A moderator has joined once (the session has gone on to its target)."""
    closed: bool = False
    _lapse: asyncio.Task[None] | None = None

    def sync(self, present: Iterable[Watch]) -> tuple[list[Watch], list[Watch]]:
        """``present`` watch the session now; returns who joined and who left since the last
        call. The last leaving holds the input and starts the grace; a join calls it off."""
        if self.closed:
            return [], []
        now = {w.id: w for w in present}
        joined = [w for wid, w in now.items() if wid not in self.watchers]
        left = [w for wid, w in self.watchers.items() if wid not in now]
        self.watchers = now
        if now:
            self.started = True
            if self._lapse is not None:
                self._lapse.cancel()
                self._lapse = None
            self.present.set()
        elif left:
            self.present.clear()
            self._lapse = asyncio.get_running_loop().create_task(self._lapse_after())
        return joined, left

    async def _lapse_after(self) -> None:
        await asyncio.sleep(self.grace)
        if not self.watchers:
            self.on_lapse()

    def close(self) -> list[Watch]:
        """The session is over: no more grace; returns who was still watching (let go)."""
        self.closed = True
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None
        gone = list(self.watchers.values())
        self.watchers.clear()
        return gone


class _Follower:
    """Follows the recording in a thread, emulating its terminal; the view draws its screens."""

    def __init__(self, path: Path, trusted: Iterable[Any]) -> None:
        self.path = path
        self.trusted = list(trusted)
        self.lock = threading.Lock()
        self.terminal = Terminal(80, 24)
        self.onlcr = False
        self.version = 0
        self.error: str | None = None
        self.stopped = False
        self.done = False
        """The recording was read to its end (sealed, or broken): nothing more will come."""
        self.skipped = 0
        """Output characters not emulated: over the emulator budget (hostile output; the rules
        engine's bound, :data:`~zsp_tui.rules.engine.SCAN_BURST`, in wall time here)."""
        self._budget = WorkBudget(SCAN_BURST, SCAN_RATE, time.monotonic())
        self.thread = threading.Thread(target=self._run, name="zsp-watch-follow", daemon=True)

    def _run(self) -> None:
        try:
            gen = follow(self.path, self.trusted, poll=0.1, stop=lambda: self.stopped)
            while True:
                try:
                    frame = next(gen)
                except StopIteration as end:
                    report = end.value
                    self.done = not self.stopped and report.problem is None  # sealed: the session is over
                    if report.problem is not None:
                        self.error = f"{report.outcome.value} {report.problem.value}: {report.detail}"
                    return
                data = frame.data
                with self.lock:
                    if frame.kind is FrameKind.HEADER:
                        header: Any = data
                        self.terminal = Terminal(header.cols or 80, header.rows or 24)
                        self.onlcr = not header.term
                    elif frame.kind is FrameKind.OUTPUT and isinstance(data, bytes):
                        self._feed(data.replace(b"\n", b"\r\n") if self.onlcr else data)
                    elif frame.kind is FrameKind.RESIZE and isinstance(data, Resize) and data.cols and data.rows:
                        self.terminal.resize(data.cols, data.rows)
                    else:
                        continue
                    self.version += 1
        except SourceError as exc:
            self.error = exc.reason
        except Exception as exc:  # noqa: BLE001 - the view says so; the session is not concerned
            self.error = repr(exc)

    def _feed(self, data: bytes) -> None:
        """Output to the terminal, within the emulator budget: this thread holds the GIL against
        the event loop while it emulates, so hostile output is skipped as the rules engine skips it."""
        term = self.terminal
        self.skipped += self._budget.run(term, time.monotonic(), lambda: term.feed(data), len(data))
        term.take_lines()


async def watch_view(
    process: asyncssh.SSHServerProcess[bytes],
    record: SessionRecord,
    trusted: Iterable[Any],
    *,
    beat: Callable[[], Awaitable[bool]],
    terminate: Callable[[], Awaitable[None]],
) -> str:
    """Show ``record``'s terminal to a moderator until they leave (``q``), end it (``T``), or the
    session ends; returns how the view ended: ``left``, ``terminated``, ``session-ended``.

    ``beat`` is called every second (the watch's heartbeat in the store); False means the watch
    is over (the session ended, or the owning bastion counted it lost): the view ends. The
    session may be recorded by another process of this host (a worker): only its recording
    file and the store are shared."""
    follower = _Follower(Path(record.path), trusted)
    follower.thread.start()
    cols, rows = process.get_terminal_size()[:2]
    renderer = Renderer(*window_size(cols or 80, rows or 24))
    out = process.stdout
    how = "left"
    keys: asyncio.Queue[bytes] = asyncio.Queue()

    async def read_keys() -> None:
        while True:
            try:
                data = await process.stdin.read(1024)
            except asyncssh.TerminalSizeChanged as exc:
                renderer.resize(*window_size(exc.width or 80, exc.height or 24))
                await keys.put(b"")
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            except (OSError, asyncssh.Error):
                data = b""  # the moderator's connection is gone: they left
            if not data:
                await keys.put(b"q")
                return
            await keys.put(data)

    reader = asyncio.create_task(read_keys())
    status_base = (
        f"WATCH {record.user} {record.login}@{record.target} ({record.id[:8]})  q: leave  T: terminate the session"
    )
    shown = -1
    next_beat = time.monotonic() + BEAT_S
    try:
        out.write(b"\x1b[?1049h\x1b[2J\x1b[H")
        while not process.channel.is_closing():
            if follower.done:
                how = "session-ended"  # sealed: the session is over
                break
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + BEAT_S
                if not await beat():
                    how = "session-ended"
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAW_INTERVAL):  # not wait_for: it can drop a cancel on 3.11 (gh-86296)
                    data = await keys.get()
                if b"T" in data:
                    how = "terminated"
                    await terminate()
                    break
                if b"q" in data or b"\x03" in data:
                    break
                if data == b"":
                    shown = -1  # resized: draw again
            # Never waited for on the event loop: a costly frame holds the lock while it is fed (the
            # next turn draws). Keys, the heartbeat and T are served meanwhile.
            if (follower.version != shown or follower.error) and follower.lock.acquire(blocking=False):
                try:
                    shown = follower.version
                    screen = follower.terminal.screen()
                finally:
                    follower.lock.release()
                status = status_base if follower.error is None else f"cannot follow: {printable(follower.error)}"
                if follower.skipped:
                    status = f"{status}  [costly output not shown: {follower.skipped} chars]"
                out.write(renderer.draw(screen, status[: renderer.cols]))
                await out.drain()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, asyncssh.Error):
            await reader
        follower.stopped = True
        with contextlib.suppress(OSError, asyncssh.Error):
            out.write(b"\x1b[0m\x1b[?25h\x1b[?1049l")
    return how


def record_watch(live: LiveSession, kind: str, message: str, **fields: Any) -> None:
    """A ``moderation.*`` event frame in the session's recording (if it still records)."""
    if live.recorder.failed is None:
        with contextlib.suppress(RecordingFailed):
            live.recorder.event(kind, message, **fields)
