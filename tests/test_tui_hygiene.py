"""What the review app leaves behind: no thread still running once the app has exited, no SQLite
connection (file descriptor) opened per refresh and kept, no worker failing because its screen
went away before its result arrived. Driven over the real recorded sessions (``reviewed``)."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback

from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen


async def _until(pilot, cond, timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _db_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith((".db", ".db-wal", ".db-shm")):
            n += 1
    return n


def _busy(before: set[threading.Thread]) -> dict[str, str]:
    """Threads started since ``before`` that are doing something (name -> where): the event loop's
    executor threads waiting for work are idle (the loop shuts them down when it closes)."""
    frames = sys._current_frames()
    out: dict[str, str] = {}
    for t in threading.enumerate():
        if t in before or not t.is_alive() or t.ident not in frames:
            continue
        stack = traceback.extract_stack(frames[t.ident])
        idle = [f for f in stack if f.filename.endswith("concurrent/futures/thread.py") and f.name == "_worker"]
        after = stack[stack.index(idle[-1]) + 1 :] if idle else []
        if idle and all(f.filename.endswith(("/queue.py", "/threading.py")) for f in after):
            continue
        out[t.name] = "".join(traceback.format_list(stack[-6:]))
    return out


async def _quiet_db_fds(app: ReviewApp, pilot, before: set[threading.Thread]) -> int:
    """The .db descriptors open at a moment no worker of the app runs (a refresh in flight holds
    one for a moment, even a superseded one whose thread still runs: that is not a leak);
    garbage from earlier tests collected first."""
    gc.collect()
    deadline = time.monotonic() + 60
    while any(w.state.name in ("PENDING", "RUNNING") for w in app.workers) or _busy(before):
        if time.monotonic() > deadline:
            raise AssertionError("the app's workers never all finished")
        await pilot.pause(0.02)
    return _db_fds()  # no await since the check: no worker started in between


def _errors(app: ReviewApp) -> list[str]:
    return [f"{w.name}: {w.error!r}" for w in app.workers if w.error is not None and w.state.name == "ERROR"]


async def test_no_thread_outlives_the_app_after_every_area_and_a_replay(reviewed) -> None:
    before = set(threading.enumerate())
    app = ReviewApp(ReviewContext.open(reviewed.data, "alice", "console"))
    async with app.run_test(size=(120, 36)) as pilot:
        for key in ("2", "3", "4", "5", "1"):
            await pilot.press(key)
            await pilot.pause(0.2)
        app.open_replay(reviewed.ids["shell"])
        await _until(pilot, lambda: isinstance(app.screen, ReplayScreen), what="the replay screen")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await _until(pilot, lambda: screen.playback is not None and screen.report is not None, what="the replay")
        await pilot.press("escape")
        await _until(pilot, lambda: not isinstance(app.screen, ReplayScreen), what="leaving the replay")
        # and one popped while it is still opening
        app.open_replay(reviewed.ids["local"])
        await _until(pilot, lambda: isinstance(app.screen, ReplayScreen), what="the second replay")
        await pilot.press("escape")
        await pilot.pause(0.2)
        errors = _errors(app)
    assert errors == []
    deadline = time.monotonic() + 30
    while _busy(before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _busy(before) == {}


async def _cycle(app: ReviewApp, pilot, times: int) -> None:
    """Show Sessions, Live, Requests and Audit in turn ``times`` times, refreshing each."""
    for _ in range(times):
        for key in ("1", "3", "4", "5"):
            await pilot.press(key)
            screen = app.screen
            for name in ("action_reload", "_run_refresh", "_look_for_newer", "_run_query"):
                fn = getattr(screen, name, None)
                if fn is not None:
                    fn()
            await app.workers.wait_for_complete()
            await pilot.pause()


async def test_refreshing_every_area_many_times_keeps_no_connection_open(reviewed) -> None:
    before = set(threading.enumerate())
    app = ReviewApp(ReviewContext.open(reviewed.data, "alice", "console"))
    async with app.run_test(size=(120, 36)) as pilot:
        for key in ("2", "3", "4", "5", "1"):
            await pilot.press(key)
            await pilot.pause(0.3)
        # SQLite keeps a closed connection's descriptor for reuse while another connection of
        # the process holds a lock on the file (one more search.db descriptor at some point,
        # then steady): a few cycles first.
        await _cycle(app, pilot, 5)
        start = await _quiet_db_fds(app, pilot, before)
        seen = []
        for _ in range(6):  # 30 more cycles: the count does not grow with them
            await _cycle(app, pilot, 5)
            seen.append(await _quiet_db_fds(app, pilot, before))
        errors = _errors(app)
    assert errors == []
    # A connection opened per refresh and kept would add 30 or more; what SQLite parks for reuse
    # is at most one per database file (zsp.db, search.db).
    assert max(seen) <= start + 2, (start, seen)
