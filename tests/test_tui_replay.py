"""The Replay screen, driven by Textual's Pilot over sessions recorded through the real bastion.

What the reviewer sees is read from the widgets themselves: the strips the terminal view draws
(text, colours, and that no control character is ever in them), the timeline's state, the
verification bar, the status line, the side panel's lists; and the audit log."""

from __future__ import annotations

import re
import time

from rich.segment import Segment

from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.widgets.terminal_view import TerminalView

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _app(reviewed, user: str = "carol") -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"))


async def _until(pilot, cond, timeout: float = 20.0) -> None:
    """Let the app run (workers, timers) until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the replay screen")
        await pilot.pause(0.05)


async def _open(pilot, app: ReviewApp, sid: str, **kw) -> ReplayScreen:
    app.open_replay(sid, **kw)
    await _until(pilot, lambda: isinstance(app.screen, ReplayScreen))
    screen = app.screen
    assert isinstance(screen, ReplayScreen)
    await _until(pilot, lambda: screen.playback is not None or screen.problem is not None)
    await _until(pilot, lambda: screen.report is not None or screen.problem is not None or screen.live)
    await _settle(pilot, screen)
    return screen


async def _settle(pilot, screen: ReplayScreen) -> None:
    await _until(pilot, lambda: not screen._seeking and screen._pending_us is None)
    await pilot.pause(0.1)


def _rows(screen: ReplayScreen) -> list[str]:
    return [strip.text.rstrip() for strip in screen.query_one(TerminalView).row_strips()]


def _segments(screen: ReplayScreen) -> list[Segment]:
    return [seg for strip in screen.query_one(TerminalView).row_strips() for seg in strip]


def _drawn(screen: ReplayScreen) -> list[Segment]:
    """Every segment the view draws at its current size and scroll (what reaches the terminal)."""
    view = screen.query_one(TerminalView)
    return [seg for y in range(view.size.height) for seg in view.render_line(y)]


async def test_shows_the_recorded_screen_with_colours_at_the_recorded_size(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["shell"])
        await pilot.press("end")
        await _settle(pilot, screen)
        rows = _rows(screen)
        assert len(rows) == 24
        assert all(strip.cell_length == 80 for strip in screen.query_one(TerminalView).row_strips())
        assert any("kubectl delete pod web-7f" in r for r in rows)
        reds = [s for s in _segments(screen) if s.text.strip() == "red"]
        assert reds and reds[0].style is not None and reds[0].style.color is not None
        assert reds[0].style.color.number == 1  # palette red, as the session drew it
        assert "VALID" in str(screen.verdict_text())
        assert not screen.query_one(TerminalView).cropped
