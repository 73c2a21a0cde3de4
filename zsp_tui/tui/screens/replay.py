"""Replay: one recorded session's screen, played, sought and stepped, with its verification state.

What the reviewer sees, top to bottom: the verification bar (VALID / INCOMPLETE / CORRUPT with the
reason and the signer, VERIFYING with progress, or LIVE), a banner whenever the playhead is past
the part of the recording a signature covers (UNTRUSTED for a CORRUPT one), the emulated terminal
at its recorded size (scrollable when the reviewer's terminal is smaller) beside a panel of the
commands typed and the raw keystrokes, the timeline (density, markers, playhead; click to seek)
and a status line (playing/paused, time, speed, frame, crop, what was typed last).

How it stays responsive: the recording is verified in a thread (``read_overview``: the verdict,
the density and the markers in one fast pass, about 1 s for 100 MB). The seek index comes from the
cache (``DATA/cache/seek/<id>.seek``: the moment is shown at once, before the verdict) or, after
the verdict, is built by a :class:`..playback.Feed` thread while the screen already plays what is
indexed (cached once complete and matching the verdict); a second Feed then finds the commands.
Seeks (keyframe + at most ~32 KiB replayed) run in a worker; playback applies frames on a 30 Hz
timer with a time budget per tick (big frames in slices). Nothing recorded is drawn except
through the emulator's cells (widgets/terminal_view.py).

The moments real-time rules fired are the recording's ``rule.match`` event frames (the evidence,
not the store's flag rows): ``⚑`` on the timeline, ``f``/``F`` jump to the next/previous one
(paused, through the same seek as everything else), and the status line names the rule and what
it matched while the playhead is at that moment (for :data:`FLAG_SHOWN_US` after it).

Opened from Live to moderate a session (``moderating``: the watch ``AccessService.join_watch``
made, which audited it) it follows the session under a banner that says so; the watch beats every
second from a thread worker (a stale heartbeat counts as gone at the owning bastion), ``T``
terminates the session (after a confirmation, ``AccessService.terminate_watch``), and leaving the
screen leaves the watch (``left``). A watch that ended elsewhere (the session ended, or counted
lost) says so in the banner.

Opened at a search hit (``at_us``, ``highlight``) it seeks there, paused, with the hit marked on
the screen and on the timeline. With a cached index the screen shows that moment before the
verification pass ends (labelled VERIFYING; the cache is derived from an earlier verified pass and
every frame read after a keyframe is chained again), and is re-checked when the verdict arrives.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from recorder import PublicKey
from replay import (
    Command,
    Outcome,
    ReplayError,
    Seeker,
    SeekIndex,
    VerificationReport,
    load_index,
    printable,
    save_index,
)
from replay import (
    Screen as TermScreen,
)

from ...exceptions import ZspError
from ...models import WATCH_BEAT_S, SessionRecord, Watch, WatchEnd
from ...session_ref import SessionRef, identity_problem
from ..context import Area, ReviewContext
from ..playback import Feed, Marker, Overview, Playback, read_overview, untrusted_tail_end
from ..text import plain
from ..widgets.replay_panel import ReplayPanel, clock
from ..widgets.terminal_view import TerminalView
from ..widgets.timeline import Timeline, TimelineState
from .dialogs import ConfirmDialog, ReasonDialog
from .export import export_session

__all__ = ["FLAG_SHOWN_US", "ReplayScreen"]

SEEK_SHORT_US = 5_000_000
SEEK_LONG_US = 30_000_000
_TICK_S = 1 / 30
_BUDGET_S = 0.015
"""Longest run of emulation per tick of the playback clock (the UI stays at 30 Hz or better)."""
_NARROW = 110
"""Below this many columns the side panel starts hidden (the recorded screen needs the room)."""
_LIVE_GRACE_S = 5.0
"""After the store says a followed session ended, how long to wait for its seal to be signed."""
FLAG_SHOWN_US = 5_000_000
"""For how long after a flagged moment the status line still names its rule."""


_T = TypeVar("_T")


def _grant_reason(ctx: ReviewContext, record: SessionRecord) -> str | None:
    """The reason given for the grant a session ran under (None if it has none or it is gone)."""
    if not record.grant_id:
        return None
    grant_id = record.grant_id
    try:
        with ctx.service.store.transaction(write=False) as tx:
            request = tx.get_request(grant_id)
    except (ZspError, OSError, sqlite3.Error):
        return None
    return request.reason if request is not None else None


def _with_store(call: Callable[[], _T], tries: int = 5) -> _T:
    """``call()``, tried again a few times if the store is busy. The store shares one SQLite
    connection between threads: a transaction begun while another thread's is open fails at once
    ("cannot start a transaction within a transaction") instead of waiting."""
    for attempt in range(tries - 1):
        try:
            return call()
        except sqlite3.OperationalError as exc:
            # Only a transaction that could not begin (nothing of it happened) is tried again: an
            # audit event must never be written twice.
            if "within a transaction" not in str(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    return call()


def _when(t_us: int) -> str:
    return f"{clock(t_us)}.{t_us // 1000 % 1000:03d}"


class ReplayScreen(Screen[None]):
    CSS_PATH = "replay.tcss"
    AUTO_FOCUS = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("space", "toggle_play", "Play/pause"),
        Binding("plus,equals_sign,right_square_bracket", "faster", "Faster", key_display="+", show=False),
        Binding("minus,underscore,left_square_bracket", "slower", "Slower", key_display="-", show=False),
        Binding("left", "seek(-5)", "Back 5 s", show=False),
        Binding("right", "seek(5)", "Forward 5 s", show=False),
        Binding("shift+left", "seek(-30)", "Back 30 s", show=False),
        Binding("shift+right", "seek(30)", "Forward 30 s", show=False),
        Binding("home", "seek_to('start')", "To the start", show=False),
        Binding("end", "seek_to('end')", "To the end (live: to the live edge)", show=False),
        Binding("full_stop", "step(1)", "Step forward", key_display=".", show=False),
        Binding("comma", "step(-1)", "Step back", key_display=",", show=False),
        Binding("n", "command(1)", "Next command"),
        Binding("p", "command(-1)", "Prev command", show=False),
        # Not in the footer (Quit would not fit at 80 columns): in ? help, REVIEW.md and beside the flag shown.
        Binding("f", "flag(1)", "Next flagged moment", show=False),
        Binding("F", "flag(-1)", "Previous flagged moment", key_display="F", show=False),
        Binding("i", "toggle_idle", "Skip idle", show=False),
        Binding("c", "toggle_panel", "Panel"),
        Binding("x", "export", "Export"),
        Binding("m", "mark_reviewed", "Mark reviewed", show=False),
        Binding("w", "panel_width", "Panel width", show=False),
        Binding("T", "terminate", "Terminate (moderating)", key_display="T", show=False),
        Binding("ctrl+up", "pan(0, -1)", "Scroll view up", show=False),
        Binding("ctrl+down", "pan(0, 1)", "Scroll view down", show=False),
        Binding("ctrl+left", "pan(-1, 0)", "Scroll view left", show=False),
        Binding("ctrl+right", "pan(1, 0)", "Scroll view right", show=False),
    ]

    def __init__(
        self,
        ctx: ReviewContext,
        session_id: str,
        *,
        at_us: int | None = None,
        highlight: str | None = None,
        follow: bool = False,
        moderating: Watch | None = None,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.moderating = moderating
        """The reviewer's watch of this moderated session (opened from Live with ``j``)."""
        self._watch_over: str | None = None
        """Why the watch ended, once it did (left, terminated, session over, lost)."""
        self.session_id = session_id
        self.at_us = at_us
        self.highlight = highlight
        self.follow = follow or moderating is not None
        self.overview = Overview()
        self.report: VerificationReport | None = None
        """The verdict of the verification pass (or, when following, of the feed once it ended)."""
        self.problem: str | None = None
        """Why nothing is shown (wrong session, unreadable, not allowed)."""
        self.playback: Playback | None = None
        self.feed: Feed | None = None
        """The pass that builds the seek index (or follows a live recording)."""
        self.commands_feed: Feed | None = None
        """The pass that finds the commands (after the index is complete)."""
        self.live = False
        """Following a session still being recorded."""
        self.ended: str | None = None
        """Why a followed session ended, once it did."""
        self.progress = 0.0
        self.tail_us: int | None = None
        self.audited = False
        self._record: SessionRecord | None = None
        self._path: Path | None = None
        self._trusted: list[PublicKey] = []
        self._file_size = 0
        self._provisional: SeekIndex | None = None
        """The cached index shown before the verdict (checked against it when it arrives)."""
        self._built: SeekIndex | None = None
        """The index built here, waiting for the verdict before it is cached."""
        self._pending_us: int | None = None
        """A seek waiting for the index being built to reach it."""
        self._pending_showing: str | None = None
        """The text that deferred seek looks for (a search hit's, a command's line), kept with it."""
        self._seek_gen = 0
        self._seeking = False
        self._stop = threading.Event()
        self._first_shown = threading.Event()
        """Set once the first screen is drawn (or the screen gave up)."""
        self._timer: Timer | None = None
        self._last_tick = 0.0
        self._drawn = -1
        self._store_ended_at: float | None = None
        self._polling_store = False
        self._panel_wide = False
        self._lines: dict[str, object] = {}
        self._listed: tuple[int, str] = (-1, "?")
        self._command_at: int | None = None
        """The command last jumped to (n/p go on from it, not from where its line showed)."""
        self._flag_at: Marker | None = None
        """The flagged moment last jumped to (f/F go on from it: several may share one time)."""

    # --- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(plain(f"session {self.session_id}", "bold"), id="session")
        if self.moderating is not None:
            yield Static(self._moderating_text(), id="moderating")
        yield Static(plain("opening…"), id="verdict")
        yield Static("", id="untrusted")
        with Horizontal(id="main"):
            yield TerminalView(id="term")
            yield ReplayPanel(id="panel")
        yield Timeline(self.overview, id="timeline")
        yield Static("", id="status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#untrusted").display = False
        if self.app.size.width < _NARROW:
            self.query_one("#panel").display = False
        if self.moderating is not None:
            # The service let this reviewer moderate (the rule's moderators): no role needed here.
            self.set_interval(WATCH_BEAT_S, self._beat)
        elif not self.ctx.reviewer.may(Area.REPLAY):
            self.problem = "replay needs the reviewer or admin role"
            self._show_verdict()
            return
        self._open()
        self._last_tick = time.monotonic()
        self._timer = self.set_interval(_TICK_S, self._tick)

    def on_unmount(self) -> None:
        if self.moderating is not None and self._watch_over is None:
            # Leaving the screen leaves the watch: one short store write, here, so it is not lost
            # with the screen's workers (a failure: the owning bastion counts the watch lost).
            self._watch_over = "left"
            try:
                self.ctx.service.leave_watch(self.moderating.id, WatchEnd.LEFT)
            except (ZspError, OSError, sqlite3.Error) as exc:
                self.app.notify(f"could not leave the watch: {printable(str(exc))}", severity="warning", markup=False)
        self._stop.set()
        self._first_shown.set()
        for feed in (self.feed, self.commands_feed):
            if feed is not None:
                feed.stop(timeout=1.0)

    # --- opening (workers) ----------------------------------------------------------------------

    def _show_session(self, record: SessionRecord, reason: str | None) -> None:
        """Whose session this is, where, when and under which grant: the line above the verdict."""
        line = plain(f"{record.user} → {record.login}@{record.target}", "bold")
        line.append_text(plain(f"  started {record.started_at:%Y-%m-%d %H:%M:%S}Z"))
        if record.grant_id:
            line.append_text(plain(f"  grant {record.grant_id}", "dim"))
            if reason:
                line.append_text(plain(": ", "dim"))
                line.append_text(plain(reason, "italic"))
        if record.command:
            line.append_text(plain("  exec: ", "dim"))
            line.append_text(plain(record.command))
        line.append_text(plain(f"  session {record.id}", "dim"))
        self.query_one("#session", Static).update(line)

    # --- moderating -------------------------------------------------------------------------------

    def _moderating_text(self) -> Text:
        if self._watch_over is not None:
            # What it means for the operator: the session is over, or their input waits for a
            # moderator (held, then the session ends after the grace) unless another one watches.
            after = {
                "terminated": "the session is terminated",
                "session-ended": "the session ended",
            }.get(self._watch_over, "the operator's input is held unless another moderator watches")
            return plain(f"NOT MODERATING: your watch ended ({self._watch_over}); {after}", "bold reverse")
        return plain("MODERATING: input flows while you watch; T terminates", "bold reverse")

    def _beat(self) -> None:
        if self.moderating is not None and self._watch_over is None:
            self._beat_worker(self.moderating)

    @work(thread=True, group="beat", exclusive=True, exit_on_error=False)
    def _beat_worker(self, watch: Watch) -> None:
        """The watch's heartbeat (in a thread: a store write); False from the store: it is over."""
        try:
            alive = self.ctx.service.beat_watch(watch.id)
        except (ZspError, OSError, sqlite3.Error):
            return  # a busy or failing store: beaten again in a second (or counted lost)
        if not alive:
            self._call(self._watch_ended, "the session ended, or the bastion counted it lost")

    def _watch_ended(self, why: str) -> None:
        if self._watch_over is None:
            self._watch_over = why
            self._update("#moderating", self._moderating_text())

    def action_terminate(self) -> None:
        """``T`` while moderating: end the session (after a confirmation)."""
        watch = self.moderating
        if watch is None:
            self.notify("T terminates a session you moderate (j on Live)", timeout=3)
            return
        if self._watch_over is not None:
            self.notify(f"your watch has ended ({self._watch_over})", severity="warning", markup=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._terminate(watch)

        self.app.push_screen(
            ConfirmDialog(
                plain(f"Terminate session {self.session_id[-8:]}?"),
                plain("As its moderator you end it now: the operator's connection is closed and the end recorded."),
                yes="Terminate",
            ),
            answered,
        )

    @work(thread=True, group="terminate", exit_on_error=False)
    def _terminate(self, watch: Watch) -> None:
        try:
            self.ctx.service.terminate_watch(self.ctx.reviewer.actor, watch.id)
        except (ZspError, OSError, sqlite3.Error) as exc:
            self.app.call_from_thread(
                self.notify, f"not terminated: {printable(str(exc))}", severity="error", markup=False
            )
            return
        self._call(self._watch_ended, "terminated")
        self.app.call_from_thread(self.notify, "session terminated; the bastion ends it now", title="Moderating")

    def _audited(self) -> bool:
        """Append ``review.replay`` (once per open), in the opening worker; False (and nothing
        shown) if the audit log cannot take it. It is written after the session is looked up and
        the cached index loaded, so it is not in the way of the first screen (a write to the
        store with its fsync), and before the recording is read. The store's one connection must
        not run two transactions at once: every use of it here is in this one worker, in turn."""
        if self.audited:
            return True
        if self.moderating is not None:
            self.audited = True  # the watch's session.watch.start, written when it was joined
            return True
        try:
            self._audit()
        except (ZspError, OSError, sqlite3.Error) as exc:
            self._call(self._fail, f"cannot write the audit event, so nothing is shown: {exc}")
            return False
        return True

    def _audit(self) -> None:
        """One event per open: ``review.watch`` when following a session still being recorded
        (opened from Live), ``review.replay`` otherwise (a followed session that has already
        ended is replayed)."""
        if self.audited:
            return
        self.audited = True
        record = self._record
        if self.follow and record is not None and record.ended_at is None:
            _with_store(
                lambda: self.ctx.audit(
                    "review.watch",
                    f"{self.ctx.reviewer.name} follows session {record.id} of {record.user} "
                    f"on {record.login}@{record.target}",
                    session_id=self.session_id,
                    session_user=record.user,
                    grant=record.grant_id,
                )
            )
            return
        what = "followed" if self.follow else "replayed"
        _with_store(
            lambda: self.ctx.audit(
                "review.replay",
                f"{self.ctx.reviewer.name} {what} session {self.session_id}",
                session_id=self.session_id,
                follow=self.follow,
                at_us=self.at_us,
            )
        )

    @work(thread=True, group="open")
    def _open(self) -> None:
        """Find the recording; start following it, or show it from the cache and verify it."""
        try:
            record = _with_store(lambda: self.ctx.service.session(self.session_id))
            trusted = self.ctx.data.trusted_keys()
        except (ZspError, OSError, sqlite3.Error) as exc:  # the store or the keys: shown, not raised into the UI
            self._call(self._fail, f"cannot open session {self.session_id}: {exc}")
            return
        if record is None:
            self._call(self._fail, f"no session {self.session_id}")
            return
        try:
            # A recording uploaded to object storage: its verified download (hash-checked).
            path = self.ctx.data.recording_path(record)
        except ZspError as exc:
            self._call(self._fail, f"cannot open session {self.session_id}: {exc}")
            return
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            self._call(self._fail, f"cannot read {path}: {exc.strerror or exc}")
            return
        self._record, self._path, self._trusted, self._file_size = record, path, trusted, size
        # Audited before anything of the recording is shown (fail closed): one store write.
        if not self._audited():
            return
        self._call(self._show_session, record, _grant_reason(self.ctx, record))
        if self.follow and record.ended_at is None:
            self._start_live(path, trusted)
            return
        cached = load_index(self._cache_path())
        if cached is not None and cached.session_id == self.session_id and cached.size == size:
            # Shown at once, labelled VERIFYING; checked against the verdict when it arrives.
            self._provisional = cached
            self._call(self._ready, Seeker(path, cached), None, False)
        cached_shown = self._provisional is not None
        if cached_shown:
            # The first screen first: the verification pass would compete with its seek for the
            # interpreter (this is a thread, not a process), for a moment that is over in ~50 ms.
            self._first_shown.wait(timeout=2.0)
        try:
            report = read_overview(path, trusted, self.overview, progress=self._set_progress, stop=self._stop.is_set)
        except ReplayError as exc:
            self._call(self._fail, f"cannot read {path}: {exc}")
            return
        if report is None:
            return
        tail = untrusted_tail_end(path, report) if report.outcome is Outcome.CORRUPT else None
        self._call(self._verified, report, tail)
        if not cached_shown and report.signed_frames > 0 and self.problem is None and not self._stop.is_set():
            # Without a cached index: the verdict first (about 1 s for 100 MB), then the index,
            # built while the screen plays what is indexed; the two passes in parallel would
            # share one interpreter and the verdict would take as long as the index.
            self._start_build(path, trusted, size)

    def _cache_path(self) -> Path:
        return self.ctx.data.root / "cache" / "seek" / f"{self.session_id}.seek"

    def _call(self, fn: object, *args: object) -> None:
        """Run ``fn`` on the UI thread, unless the screen is gone."""
        if self._stop.is_set():
            return

        def on_ui_thread() -> None:
            # Checked again here: the screen may have been popped since (its widgets are removed
            # before on_unmount sets _stop), and a result for it must not reach a dying screen.
            if self._stop.is_set() or self._closing or self._closed or self._pruning:
                return
            fn(*args)  # type: ignore[operator]

        try:
            self.app.call_from_thread(on_ui_thread)
        except RuntimeError:
            self._stop.set()  # the app is shutting down

    def _set_progress(self, fraction: float) -> None:
        self.progress = fraction

    def _start_build(self, path: Path, trusted: list[PublicKey], size: int) -> None:
        """Build the seek index in a Feed thread; play what is indexed while it grows."""
        index = SeekIndex(self.session_id, size, b"", 0, 0, 0, 0)

        def complete(feed: Feed) -> None:
            final = feed.report
            if final is not None:
                index.head, index.frames, index.signed = final.head or b"", final.frames, final.signed_frames
                self._call(self._index_built, index)

        feed = Feed(
            path,
            trusted,
            index,
            self.overview,
            follow=False,
            build=True,
            with_overview=False,
            commands=False,
            session_id=self.session_id,
            on_complete=complete,
        )
        self.feed = feed
        feed.start()
        self._when_started(feed, Seeker(path, index), False)

    def _start_live(self, path: Path, trusted: list[PublicKey]) -> None:
        index = SeekIndex(self.session_id, 0, b"", 0, 0, 0, 0)
        feed = Feed(
            path, trusted, index, self.overview, follow=True, build=True, with_overview=True, session_id=self.session_id
        )
        self.feed = feed
        self.live = True
        feed.start()
        self._when_started(feed, Seeker(path, index), True)

    @work(thread=True, group="start")
    def _when_started(self, feed: Feed, seeker: Seeker, live: bool) -> None:
        """Play once the index has its first keyframe (its own worker: the verification pass goes
        on meanwhile, and a recording with nothing signed may take the whole file to say so)."""
        if self._wait_for_start(feed):
            self._call(self._ready, seeker, feed.lock, live)

    def _wait_for_start(self, feed: Feed) -> bool:
        """Wait until the index has its first keyframe: the header, once signed. Following a live
        session, also until the feed has read what the file held when it was opened, so the
        first screen is the live edge (the status line shows how far it has read meanwhile)."""
        while not feed.index.keyframes and not feed.done:
            if self._stop.is_set():
                return False
            time.sleep(0.02)
        while feed.follow and feed.offset < self._file_size and not feed.done:
            if self._stop.is_set():
                return False
            time.sleep(0.02)
        if not feed.index.keyframes:
            self._call(self._fail, feed.error or "nothing of this recording is signed yet: nothing to show")
            return False
        return True

    def _find_commands(self, index: SeekIndex) -> None:
        """Commands only (the index is complete): a Feed that does not build."""
        if self._path is None or self._stop.is_set():
            return
        feed = Feed(self._path, self._trusted, index, self.overview, follow=False, build=False, with_overview=False)
        self.commands_feed = feed
        feed.start()

    def _index_built(self, index: SeekIndex) -> None:
        """The index is complete: cache it (once it matches the verdict) and find the commands."""
        self._built = index
        self._maybe_cache()
        if self.commands_feed is None:
            self._find_commands(index)

    def _maybe_cache(self) -> None:
        """Save the index built here once the verification pass agrees with the pass that built it
        (same head and frame count: the file did not change in between)."""
        index, report = self._built, self.report
        if index is None or report is None or not index.matches(report, self._file_size):
            return
        if index.shown != report.signed_frames:
            return  # not every signed frame is in it (the pass stopped early): not worth keeping
        self._built = None
        self._save_cache(index)

    @work(thread=True, group="cache")
    def _save_cache(self, index: SeekIndex) -> None:
        save_index(index, self._cache_path())

    # --- results (UI thread) --------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self._first_shown.set()
        self.problem = why
        self.playback = None
        self.query_one(TerminalView).show(None)
        self._show_verdict()

    def _ready(self, seeker: Seeker, lock: threading.Lock | None, live: bool) -> None:
        if self.problem is not None:
            return
        try:
            pb = Playback(seeker, lock, live=live)
        except ReplayError as exc:
            self._fail(str(exc))
            return
        self.playback = pb
        if self.at_us is None and not live:
            self._first_shown.set()
        if live:
            self._first_shown.set()  # following: the first tick shows the live edge
        elif self.at_us is not None:
            pb.paused = True
            self._seek(self.at_us, showing=self.highlight)
        self._drawn = -1

    def _verified(self, report: VerificationReport, tail: int | None) -> None:
        self.report = report
        self.tail_us = tail
        record, path = self._record, self._path
        if record is not None and path is not None:
            heads = (record.head,) if record.head else ()
            problem = identity_problem(SessionRef(path, self.session_id, heads, record.end_reason), report)
            if problem is not None:
                # A genuine recording, but not of this session: nothing of it is shown.
                self._fail(f"CORRUPT wrong-session: {problem}")
                return
        self._maybe_cache()
        cached = self._provisional
        if cached is not None:
            if cached.matches(report, self._file_size):
                self._find_commands(cached)
            else:
                # The cache is not of this recording as verified now: drop what it showed, rebuild.
                self._provisional = None
                self.playback = None
                self.query_one(TerminalView).show(None)
                self._rebuild()
        elif report.signed_frames == 0 and self.playback is None:
            self._fail("nothing of this recording is covered by a verified signature: nothing to show")
            return
        self._show_verdict()

    @work(thread=True, group="open")
    def _rebuild(self) -> None:
        if self._path is not None:
            self._start_build(self._path, self._trusted, self._file_size)

    # --- the clock ------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        dt = now - self._last_tick
        self._last_tick = now
        pb = self.playback
        if pb is not None and not self._seeking:
            if self._pending_us is not None:
                feed = self.feed
                if pb.duration_us >= self._pending_us or feed is None or feed.done:
                    target, self._pending_us = self._pending_us, None
                    self._seek(target, showing=self._pending_showing)
            else:
                pb.signed_end_us = self._shown_us()
                try:
                    pb.tick(dt, _BUDGET_S, time.monotonic)
                except ReplayError as exc:
                    self._fail(str(exc))
                    return
        self._check_live()
        self._refresh_view()

    def _check_live(self) -> None:
        feed = self.feed
        if not self.live or feed is None or self.ended is not None:
            return
        if feed.done:
            final = feed.report
            if final is not None:
                self.report = final
            reason = final.seal.reason if final is not None and final.seal is not None else None
            self.ended = reason or (self._record.end_reason if self._record else None) or "the recording stopped"
            if final is not None and final.outcome is Outcome.CORRUPT and self._path is not None:
                self.tail_us = untrusted_tail_end(self._path, final)
            self.notify(f"The live session ended: {self.ended}", title="Live")
            if self.moderating is not None:
                self._watch_ended("the session ended")
            self._show_verdict()
            return
        if self._store_ended_at is not None:
            if time.monotonic() - self._store_ended_at > _LIVE_GRACE_S:
                feed.stop(timeout=1.0)  # ended without a signed seal (interrupted): stop waiting
        elif not self._polling_store:
            self._polling_store = True
            self._poll_store()

    @work(thread=True, group="store")
    def _poll_store(self) -> None:
        time.sleep(1.0)
        try:
            record = _with_store(lambda: self.ctx.service.session(self.session_id))
        except (ZspError, OSError, sqlite3.Error):  # a busy store: asked again next time
            record = None
        self._call(self._store_seen, record)

    def _store_seen(self, record: SessionRecord | None) -> None:
        self._polling_store = False
        if record is not None and record.ended_at is not None and self._store_ended_at is None:
            self._record = record
            self._store_ended_at = time.monotonic()

    # --- drawing --------------------------------------------------------------------------------

    def _refresh_view(self) -> None:
        pb = self.playback
        view = self.query_one(TerminalView)
        if pb is not None and pb.version != self._drawn:
            self._drawn = pb.version
            screen: TermScreen = pb.ph.terminal.screen()
            view.show(screen, self.highlight)
        self._update_timeline()
        self._show_verdict()
        self._show_status()
        label = self.commands_label()
        if (self.overview.version, label) != self._listed:
            self._listed = (self.overview.version, label)
            _markers, keys, commands = self.overview.snapshot()
            try:
                self.query_one(ReplayPanel).update_lists(
                    commands, keys, label, self.overview.files_snapshot(), self.overview.changes_snapshot()
                )
            except NoMatches:  # a timer tick while the screen is torn down (its widgets already gone)
                return

    def commands_label(self) -> str:
        """Beside the Commands title: ``(reading…)`` while the recording is still being read,
        ``(live)`` once a followed session's recording has been read up to its live edge (the
        list then grows as the operator types), nothing once every command is listed."""
        if self.commands_done:
            return ""
        feed = self.feed
        if self.live and self.ended is None and feed is not None and feed.offset >= self._file_size:
            return "(live)"
        return "(reading…)"

    @property
    def commands_done(self) -> bool:
        """Every command of the recording (so far, when following it) is in the panel."""
        if self.live:
            return self.feed is not None and self.feed.done
        return self.commands_feed is not None and self.commands_feed.done

    def _shown_us(self) -> int:
        """How far what is shown is signed: the time of the last signature released to the index
        (the last frame shown may be earlier: nothing happened in between)."""
        pb = self.playback
        if pb is None:
            return 0
        signed = self.overview.checkpoint_time(pb.seeker.index.shown)
        return max(pb.duration_us, signed or 0)

    def _end_us(self) -> int:
        ends = [self._shown_us(), self.overview.end_us, self.tail_us or 0, self.at_us or 0]
        if self.report is not None:
            ends.append(self.report.duration_us)
        return max(ends)

    def _intact_us(self) -> int:
        if self.report is not None:
            return self.report.duration_us
        return max(self._shown_us(), self.overview.end_us)

    def _corrupt(self) -> bool:
        return self.report is not None and self.report.outcome is Outcome.CORRUPT

    def _update_timeline(self) -> None:
        pb = self.playback
        pos = pb.pos_us if pb is not None else (self.at_us or 0)
        hit = self.at_us if self.highlight else None
        state = TimelineState(self._end_us(), self._shown_us(), self._intact_us(), self._corrupt(), pos, hit)
        self.query_one(Timeline).update_state(state)

    def beyond_shown(self) -> bool:
        """The playhead is past what a signature covers (and something lies beyond it)."""
        pb = self.playback
        if pb is None or self.report is None:
            return False
        withheld = self._corrupt() or self.report.frames > self.report.signed_frames + 1
        if not withheld or (self.live and self.ended is None):
            return False
        # Past the last signature, or at it with nothing more to show (what follows is not shown).
        shown = self._shown_us()
        return pb.pos_us > shown or (pb.pos_us >= shown and pb.at_end)

    def verdict_text(self) -> Text:
        """The verification bar: what the reviewer must know before trusting anything below it."""
        if self.problem is not None:
            return plain(f"✖ {self.problem}", "bold white on dark_red")
        r = self.report
        signer = f"  signer {r.signer_fingerprint}" if r is not None and r.signer_fingerprint else ""
        if self.live and self.ended is None:
            feed = self.feed
            read = feed.read if feed is not None else 0
            waiting = feed.pending if feed is not None else 0
            return plain(
                f"● LIVE  following session {self.session_id}: {read} frames verified so far, "
                f"{waiting} awaiting a signature (shown once signed)",
                "bold white on dark_blue",
            )
        if r is None:
            cached = " (showing the seek index cached at the last verification)" if self._provisional else ""
            return plain(f"VERIFYING {self.progress:.0%}{cached}", "bold black on yellow")
        ended = f"  ENDED: {self.ended}" if self.live and self.ended else ""
        if r.outcome is Outcome.VALID:
            reason = f"  ended: {r.seal.reason}" if r.seal is not None and r.seal.reason else ""
            return plain(f"✔ VALID  sealed and signed{reason}{signer}{ended}", "bold black on green")
        shown = max(r.signed_frames - 1, 0)
        problem = r.problem.value if r.problem is not None else ""
        if r.outcome is Outcome.INCOMPLETE:
            return plain(
                f"INCOMPLETE: {problem}: {r.detail}; shown up to frame {shown} ({_when(self._shown_us())}), "
                f"what follows is not signed{signer}{ended}",
                "bold black on dark_orange",
            )
        where = "the file preamble" if r.bad_frame is None else f"frame {r.bad_frame}"
        return plain(
            f"✖ CORRUPT at {where} ({_when(r.duration_us)}, offset {r.bad_offset}): {problem}: {r.detail}; "
            f"content after {_when(self._shown_us())} is UNTRUSTED and not shown{signer}{ended}",
            "bold white on dark_red",
        )

    def _show_verdict(self) -> None:
        self._update("#verdict", self.verdict_text())
        banner = self.query_one("#untrusted", Static)
        beyond = self.beyond_shown()
        if beyond:
            r = self.report
            if self._corrupt() and r is not None:
                at = "the preamble" if r.bad_frame is None else f"frame {r.bad_frame}"
                text = (
                    f"UNTRUSTED: past {_when(self._shown_us())} the recording is not covered by a verified "
                    f"signature; its chain breaks at {at}. Nothing after this point is shown."
                )
            else:
                text = (
                    f"NOT SIGNED: past {_when(self._shown_us())} no verified signature covers the "
                    "recording; nothing after this point is shown."
                )
            self._update(
                "#untrusted", plain(text, "bold white on dark_red" if self._corrupt() else "bold black on dark_orange")
            )
        if banner.display != beyond:
            banner.display = beyond

    def status_text(self) -> Text:
        pb = self.playback
        if pb is None:
            feed = self.feed
            if feed is not None and not feed.done:
                return plain(f"building the seek index: {self._indexed():.0%}…")
            return plain("")
        view = self.query_one(TerminalView)
        if self._seeking or self._pending_us is not None:
            state = "seeking…"
        elif self.live and self.ended is None and pb.following:
            state = "● live"
        elif pb.paused:
            state = "⏸ paused"
        elif pb.at_end and not self.live:
            state = "■ end"
        else:
            state = "▶ playing"
        end = self._end_us()
        # Most important first; what does not fit the line is left out (narrow terminals).
        parts: list[Text] = [plain(f"{state} {_when(pb.pos_us)}/{clock(end)}"), plain(f"{pb.speed:g}x")]
        flag = self.flag_text()
        if flag is not None:
            parts.append(flag)
        if self.live and self.ended is None and not pb.following:
            parts.append(plain("behind live: End to catch up", "bold yellow"))
        screen = view.screen_value
        if view.cropped and screen is not None:
            parts.append(plain(f"CROPPED {screen.cols}x{screen.rows}", "bold yellow"))
        if self.highlight:
            hit = plain(f"hit: {self.highlight}", "yellow")
            if view.highlighted_rows == 0:
                hit.append_text(plain(" (not on screen now)", "dim"))
            parts.append(hit)
        feed = self.feed
        if feed is not None and not feed.done and not self.live:
            waiting = f", seeking to {_when(self._pending_us)}" if self._pending_us is not None else ""
            parts.append(plain(f"building the seek index {self._indexed():.0%}{waiting}", "bold"))
        typed = pb.ph.typed.describe(pb.pos_us)
        if typed:  # already escaped by the tracker (replay.printable): not escaped twice
            parts.append(Text(f"typed: {typed}", style="dim", no_wrap=True, end=""))
        parts.append(plain("skip idle" if pb.skip_idle else "real pauses"))
        parts.append(plain(f"frame {pb.ph.frame}"))
        if view.cropped:
            parts.append(plain("ctrl+arrows scroll", "dim"))
        width = max(self.size.width or self.app.size.width, 20)
        text = Text(no_wrap=True, end="")
        for n, part in enumerate(parts):
            sep = 3 if n else 0
            if n >= 2 and text.cell_len + sep + part.cell_len > width:
                if part.cell_len > 40 and text.cell_len + sep + 20 <= width:
                    part = part[: width - text.cell_len - sep - 1]  # a long value: its start
                    part.append("…")
                else:
                    continue
            if n:
                text.append(" | ")
            text.append_text(part)
        return text

    def current_flag(self) -> Marker | None:
        """The flagged moment the playhead is at: the one last jumped to, else the latest at or
        before the playhead, while the playhead is within :data:`FLAG_SHOWN_US` after it."""
        pb = self.playback
        if pb is None:
            return None
        pos = pb.pos_us
        at = self._flag_at
        if at is not None and 0 <= pos - at.t_us <= FLAG_SHOWN_US:
            return at
        latest = None
        for m in self.overview.flag_markers():
            if m.t_us > pos:
                break
            latest = m
        if latest is not None and pos - latest.t_us <= FLAG_SHOWN_US:
            return latest
        return None

    def flag_text(self) -> Text | None:
        """``⚑ 2/5 RULE (severity, trigger): text`` for the current flagged moment. What it says
        is the recording's, so only frames a verified signature covers are named (else only that a
        rule fired there), and through ``plain`` (escaped, never markup)."""
        m = self.current_flag()
        if m is None:
            return None
        flags = self.overview.flag_markers()
        n = next((i for i, f in enumerate(flags) if f.frame == m.frame), 0) + 1
        text = plain(f"⚑ {n}/{len(flags)} ", "bold magenta")
        if m.frame < self._signed_frames():
            text.append_text(plain(m.label, "magenta"))
        else:
            text.append_text(plain("a rule fired here (not signed: not shown)", "dim magenta"))
        text.append_text(plain(" f/F", "dim"))
        return text

    def _signed_frames(self) -> int:
        """Frames a verified signature covers: the verdict's, else (before it, or following a live
        session) the seek index's."""
        if self.report is not None and not (self.live and self.ended is None):
            return self.report.signed_frames
        pb = self.playback
        return pb.seeker.index.shown if pb is not None else 0

    def _indexed(self) -> float:
        """How much of the file the index-building pass has read."""
        feed = self.feed
        if feed is None or self._file_size <= 0:
            return 0.0
        return min(feed.offset / self._file_size, 1.0)

    def _show_status(self) -> None:
        self._update("#status", self.status_text())

    def _update(self, selector: str, text: Text) -> None:
        """Update a line only when it changed (30 times a second otherwise, each a relayout)."""
        key = (text.plain, tuple(text.spans), str(text.style))
        if self._lines.get(selector) != key:
            self._lines[selector] = key
            self.query_one(selector, Static).update(text)

    # --- seeking --------------------------------------------------------------------------------

    def _seek(self, t_us: int, showing: str | None = None) -> None:
        """Seek to ``t_us`` in a worker; with ``showing``, to the first moment from there whose
        screen shows that text (a search hit, a command line), if it does within a few frames."""
        pb = self.playback
        if pb is None:
            return
        t = max(0, t_us)
        feed = self.feed
        if feed is not None and feed.build and not feed.done and not self.live and t > pb.duration_us:
            self._pending_us = t  # the index has not reached it yet: go there once it has
            self._pending_showing = showing
            return
        self._pending_us = None
        self._pending_showing = None
        self._command_at = None
        self._flag_at = None
        pb.following = False  # a seek leaves the live edge (End returns to it)
        self._seek_gen += 1
        self._seeking = True
        if showing and showing.strip():
            self._find_hit(pb, self._seek_gen, t, showing.strip())
        else:
            self._seek_worker(pb, self._seek_gen, t, None)

    def _seek_frame(self, seq: int) -> None:
        pb = self.playback
        if pb is None:
            return
        pb.following = False
        self._seek_gen += 1
        self._seeking = True
        self._seek_worker(pb, self._seek_gen, None, seq)

    @work(thread=True, group="seek")
    def _find_hit(self, pb: Playback, gen: int, t_us: int, needle: str) -> None:
        """Seek to ``t_us``; if ``needle`` is not on that screen yet, to the first frame after it
        that shows it (a few frames at most): a hit's or a command's time is when its line was
        written or its Enter typed, and the echo may come a moment later."""
        try:
            ph = pb.find_forward(t_us, needle)
            if ph is None:
                ph = pb.playhead_at(t_us)
        except ReplayError as exc:
            self._call(self._fail, str(exc))
            return
        self._call(self._seek_done, pb, gen, ph, max(t_us, ph.t_us))

    @work(thread=True, group="seek")
    def _seek_worker(self, pb: Playback, gen: int, t_us: int | None, seq: int | None) -> None:
        try:
            ph = pb.playhead_at(t_us) if t_us is not None else pb.playhead_at_frame(seq or 0)
        except ReplayError as exc:
            self._call(self._fail, str(exc))
            return
        self._call(self._seek_done, pb, gen, ph, t_us)

    def _seek_done(self, pb: Playback, gen: int, ph: object, t_us: int | None) -> None:
        from replay import Playhead

        if gen != self._seek_gen or pb is not self.playback or not isinstance(ph, Playhead):
            return  # a later seek superseded this one
        self._seeking = False
        pos = ph.t_us if t_us is None else t_us
        if pos > pb.duration_us and not pb.live:
            pb.paused = True  # past what is shown: stay there (the banner says why)
        pb.install(ph, pos)
        self._refresh_view()
        self._first_shown.set()

    # --- actions --------------------------------------------------------------------------------

    def action_toggle_play(self) -> None:
        pb = self.playback
        if pb is None:
            return
        if pb.paused and pb.at_end and not self.live:
            pb.paused = False
            self._seek(0)  # at the end, play again from the start
            return
        pb.paused = not pb.paused
        if pb.paused:
            pb.following = False  # paused, the live session goes on without the screen
        self._refresh_view()

    def action_faster(self) -> None:
        if self.playback is not None:
            self.playback.faster()
            self._refresh_view()

    def action_slower(self) -> None:
        if self.playback is not None:
            self.playback.slower()
            self._refresh_view()

    def action_toggle_idle(self) -> None:
        if self.playback is not None:
            self.playback.skip_idle = not self.playback.skip_idle
            self._refresh_view()

    def action_seek(self, seconds: int) -> None:
        pb = self.playback
        if pb is None:
            return
        target = min(max(0, pb.pos_us + seconds * 1_000_000), max(self._end_us(), 0))
        self._seek(target)

    def action_seek_to(self, where: str) -> None:
        pb = self.playback
        if pb is None:
            return
        if where == "end" and self.live and self.ended is None:
            self._pending_us = None
            self._seek_gen += 1  # a seek still running would leave the edge again
            self._seeking = False
            pb.go_live()
            self._refresh_view()
            return
        self._seek(0 if where == "start" else self._shown_us())

    def action_step(self, direction: int) -> None:
        pb = self.playback
        if pb is None or self._seeking:
            return
        pb.paused = True
        if direction > 0:
            try:
                pb.step()
            except ReplayError as exc:
                self._fail(str(exc))
                return
            self._refresh_view()
            return
        seq = self.overview.visible_before(pb.ph.frame)
        self._seek_frame(seq if seq is not None else 0)

    def action_command(self, direction: int) -> None:
        pb = self.playback
        if pb is None:
            return
        _markers, _keys, commands = self.overview.snapshot()
        ordered = sorted(commands, key=lambda c: c.t_us)
        here = self._command_at
        if direction > 0:
            later = [c for c in ordered if c.t_us > (here if here is not None else pb.pos_us)]
            if later:
                self._jump_command(later[0])
        else:
            earlier = [c for c in ordered if c.t_us < (here if here is not None else pb.pos_us)]
            if earlier:
                self._jump_command(earlier[-1])

    def _jump_command(self, command: Command) -> None:
        """Paused at ``command``: the first moment from its Enter that shows its line."""
        if self.playback is not None:
            self.playback.paused = True
        self._seek(command.t_us, showing=None if command.blind else command.text[:60])
        self._command_at = command.t_us

    def action_flag(self, direction: int) -> None:
        """Paused at the next (previous) moment a rule fired, in recording order."""
        pb = self.playback
        if pb is None:
            return
        flags = self.overview.flag_markers()
        at = self._flag_at
        if at is not None:
            i = next((k for k, f in enumerate(flags) if f.frame == at.frame), None)
            j = None if i is None else i + direction
            target = flags[j] if j is not None and 0 <= j < len(flags) else None
        elif direction > 0:
            target = next((f for f in flags if f.t_us > pb.pos_us), None)
        else:
            target = next((f for f in reversed(flags) if f.t_us < pb.pos_us), None)
        if target is None:
            self.notify("no later flagged moment" if direction > 0 else "no earlier flagged moment", timeout=2)
            return
        pb.paused = True
        # Like a command: the first screen from that moment that shows the matched line, if it shows
        # within a few frames (the rule fires at Enter; the echo may come a moment later).
        self._seek(target.t_us, showing=target.showing or None)
        self._flag_at = target

    def action_export(self) -> None:
        export_session(self, self.ctx, self.session_id)

    def action_mark_reviewed(self) -> None:
        """Attest the review of this session (``zsp review-mark``): a note, then the recording is
        verified again and the attestation signed into the audit log; refusals are shown."""

        def answered(note: str | None) -> None:
            if note is not None:
                self._mark_reviewed(note)

        self.app.push_screen(
            ReasonDialog(
                plain(f"Attest your review of session {self.session_id}?"),
                plain(
                    "Signed into the audit log with the recording's verified chain head: who, when and "
                    "your note. Never your own session; once per reviewer."
                ),
                confirm="Attest",
                required=False,
                placeholder="note (optional): what you checked",
            ),
            answered,
        )

    @work(thread=True, group="review-mark", exit_on_error=False)
    def _mark_reviewed(self, note: str) -> None:
        from ...reviews import mark_reviewed

        def say(message: str, title: str, severity: SeverityLevel) -> None:
            # Plain text (markup off): an error may quote what a user or a file controls.
            self.app.call_from_thread(self.notify, printable(message), title=title, severity=severity, markup=False)

        try:
            review = mark_reviewed(self.ctx.data, self.ctx.service, self.ctx.reviewer.actor, self.session_id, note)
        except ZspError as exc:
            say(str(exc), "Not attested", "error")
        except (sqlite3.Error, OSError) as exc:
            say(f"could not record the review: {exc}", "Not attested", "error")
        else:
            head = review.head[:16]
            say(f"reviewed by {review.reviewer} ({review.outcome}, head {head}...): signed into the audit log",
                "Review attested", "information")

    def action_toggle_panel(self) -> None:
        panel = self.query_one(ReplayPanel)
        panel.display = not panel.display

    def action_panel_width(self) -> None:
        panel = self.query_one(ReplayPanel)
        self._panel_wide = not self._panel_wide
        panel.set_class(self._panel_wide, "wide")
        panel.display = True

    def action_pan(self, dx: int, dy: int) -> None:
        """Scroll a cropped view by a quarter of its size (it follows the cursor again when the
        screen changes)."""
        view = self.query_one(TerminalView)
        region = view.scrollable_content_region
        view.scroll_relative(
            x=dx * max(region.width // 4, 1), y=dy * max(region.height // 4, 1), animate=False, immediate=True
        )

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        self._seek(message.t_us)

    def on_replay_panel_jump(self, message: ReplayPanel.Jump) -> None:
        if message.command is not None:
            self._jump_command(message.command)
            return
        if self.playback is not None:
            self.playback.paused = True
        self._seek(message.t_us)
