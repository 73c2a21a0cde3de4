"""Replay's layout on a small terminal: a recording larger than the view is anchored top-left
(never scrolled sideways by itself, follows the cursor only vertically), and at 80x24 the footer
and the status line keep what matters most. Recordings are written by the real recorder with
the data dir's key and registered as sessions of the ``reviewed`` data dir."""

from __future__ import annotations

import time

from textual.widgets import Footer, Static

from tests.test_tui_replay import _register
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.widgets.terminal_view import TerminalView


def _app(reviewed) -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, "carol", "console"))


async def _until(pilot, cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await pilot.pause(0.05)


def _wide_session(reviewed) -> str:
    """100x30: a ``top``-like full screen (cursor at the far right of row 6), then ``less``-like
    (its ``:`` prompt on the bottom row, cursor after it), then a shell prompt at the bottom."""
    from recorder import FileSink, RecordingWriter, SessionMeta

    d = reviewed.data
    clock = [10**12]
    path = d.recordings / "wide.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=100, rows=30),
                        clock=lambda: clock[0], wall_clock=lambda: 1_790_000_000 * 10**9 + clock[0])

    def at(seconds: float) -> int:
        clock[0] = 10**12 + int(seconds * 1e9)
        return clock[0]

    top = b"\x1b[H\x1b[2Jtop - 10:00:00 up 1 day" + b"".join(b"\x1b[%d;1HPID-%02d%s" % (r, r, b"." * 80) for r in range(2, 8))
    w.output(top + b"\x1b[6;100H", at_ns=at(1.0))
    w.tick(at_ns=at(3.0))
    less = b"\x1b[H\x1b[2J" + b"".join(b"\x1b[%d;1HLESS-%02d%s" % (r, r, b"-" * 90) for r in range(1, 30))
    w.output(less + b"\x1b[30;1H:", at_ns=at(4.0))
    w.tick(at_ns=at(6.0))
    w.close(None, "exit", at_ns=at(7.0))
    return _register(reviewed, path)


def _visible(view: TerminalView) -> list[str]:
    return ["".join(s.text for s in view.render_line(y)) for y in range(view.scrollable_content_region.height)]


async def test_a_cropped_view_is_anchored_top_left_and_follows_the_cursor_only_vertically(reviewed) -> None:
    sid = _wide_session(reviewed)
    app = _app(reviewed)
    async with app.run_test(size=(86, 24)) as pilot:
        app.open_replay(sid, at_us=2_000_000)  # the top-like screen
        await _until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.playback is not None)
        screen = app.screen
        view = screen.query_one(TerminalView)
        await _until(pilot, lambda: any("top - " in line for line in _visible(view)))
        assert view.cropped
        lines = _visible(view)
        assert view.scroll_offset.x == 0 and view.scroll_offset.y == 0
        assert lines[0].startswith("top - 10:00:00"), lines[:2]  # row 1 and its first column shown
        assert lines[1].startswith("PID-02")
        # The reviewer scrolls sideways: it stays there (the cursor did not move)
        await pilot.press("ctrl+right")
        await pilot.pause(0.3)
        assert view.scroll_offset.x > 0
        await pilot.press("ctrl+left", "ctrl+left")
        await pilot.pause(0.1)
        # The less-like screen: its prompt on the bottom row comes into view, the first column stays
        assert isinstance(screen, ReplayScreen)
        screen._seek(5_000_000)
        await _until(pilot, lambda: any(line.startswith(":") for line in _visible(view)))
        lines = _visible(view)
        assert view.scroll_offset.x == 0 and view.scroll_offset.y > 0
        assert lines[-1].startswith(":") and lines[-2].startswith("LESS-29")
        assert all(line.startswith("LESS-") for line in lines[:-1])


async def test_at_80x24_the_footer_and_status_keep_what_matters(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_replay(reviewed.ids["shell"], at_us=1_000_000, highlight="echo")
        await _until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.playback is not None)
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await _until(pilot, lambda: not screen._seeking and screen.report is not None)
        await pilot.pause(0.3)
        footer = app.screen.query_one(Footer)
        shown = " ".join(
            str(getattr(w, "description", "")) for w in footer.query("FooterKey") if w.region.right <= app.size.width
        )
        for must in ("Back", "Play", "Next", "Help", "Quit"):
            assert must in shown, shown
        status = str(screen.query_one("#status", Static).render())
        assert status.startswith("⏸ paused 00:01.000/"), status
        assert "CROPPED" in status and "hit: echo" in status, status
        assert len(status) <= 80
