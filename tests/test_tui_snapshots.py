"""Snapshot tests of the review app's main screens at a fixed size (pytest-textual-snapshot).

Each test builds the app over the fixed data dir of tests/snapshot_data.py (fixed key, ids,
times and a clock that stands still; recordings written by the real recorder, indexed by the real
indexer) and compares an SVG screenshot with the accepted one in
``tests/__snapshots__/test_tui_snapshots/<test name>.svg``. The Pilot tests (test_tui_*.py) drive
the same screens over sessions recorded through the real bastion; these catch layout changes.
After a deliberate change of a screen, look at the report (``snapshot_report.html``) and accept
with ``python3 -m pytest tests/test_tui_snapshots.py --snapshot-update``.

The plugin pins syrupy 4.8, which needs pytest < 9 (the ``test`` extra says so); where it is not
installed this module is skipped. The tests are synchronous: ``snap_compare`` runs the app with
its own event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.snapshot_data import Snap, build_snapshot_data
from zsp_tui.tui import ReviewApp

pytest.importorskip("pytest_textual_snapshot")

SIZE = (100, 30)
"""(columns, rows) of the snapshots; the 80x24 ones say so."""


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snap:
    return build_snapshot_data(tmp_path_factory.mktemp("snapshot-data"))


def app_for(snap: Snap, user: str, start: str | None = None) -> ReviewApp:
    return ReviewApp(snap.context(user), start=start)


async def _settle(pilot: Any, done: Callable[[], bool] = lambda: True, timeout: float = 30.0) -> None:
    """Let workers and timers run until ``done()`` holds and no worker is left running."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.05)
        if done() and all(w.is_finished for w in pilot.app.workers):
            break
        if loop.time() > end:
            raise AssertionError("the screen did not settle")
    await pilot.pause(0.2)


def _screen_is(name: str) -> Callable[[Any], Callable[[], bool]]:
    return lambda pilot: lambda: type(pilot.app.screen).__name__ == name


def test_sessions_as_a_reviewer(snap: Snap, snap_compare: Any) -> None:
    """carol (reviewer): Sessions first; areas Sessions, Search, Live, Audit; no Requests."""

    async def ready(pilot: Any) -> None:
        await _settle(pilot, lambda: pilot.app.screen.verified is not None)

    assert snap_compare(app_for(snap, "carol"), terminal_size=SIZE, run_before=ready)


def test_sessions_at_80x24(snap: Snap, snap_compare: Any) -> None:
    async def ready(pilot: Any) -> None:
        await _settle(pilot, lambda: pilot.app.screen.verified is not None)

    assert snap_compare(app_for(snap, "alice"), terminal_size=(80, 24), run_before=ready)


def test_live_as_an_approver(snap: Snap, snap_compare: Any) -> None:
    """bob (approver): Live first (nobody connected); areas Live and Requests only."""

    async def ready(pilot: Any) -> None:
        await _settle(pilot)

    assert snap_compare(app_for(snap, "bob"), terminal_size=SIZE, run_before=ready)


def test_requests_as_an_approver(snap: Snap, snap_compare: Any) -> None:
    """dave's pending request with its reason, countdown and dave's history."""

    async def ready(pilot: Any) -> None:
        await _settle(pilot, lambda: getattr(pilot.app.screen, "_snapshot", None) is not None)

    assert snap_compare(app_for(snap, "bob", start="requests"), terminal_size=SIZE, run_before=ready)


def test_search_results(snap: Snap, snap_compare: Any) -> None:
    async def ready(pilot: Any) -> None:
        await _settle(pilot, _screen_is("SearchScreen")(pilot))
        await pilot.press(*"kubectl", "enter")
        await _settle(pilot)

    assert snap_compare(app_for(snap, "carol", start="search"), terminal_size=SIZE, run_before=ready)


def test_replay_at_a_moment(snap: Snap, snap_compare: Any) -> None:
    """The shell session paused 8 s in: verdict, screen in colour, timeline with markers, status."""

    async def ready(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.open_replay(snap.ids["shell"], at_us=8_000_000, highlight="web-7f")
        screen = pilot.app.screen
        # the verdict, and the commands read for the timeline's markers (a thread of the screen's own)
        await _settle(pilot, lambda: getattr(screen, "report", None) is not None and screen.commands_done)

    assert snap_compare(app_for(snap, "carol"), terminal_size=(130, 35), run_before=ready)


def test_audit_log(tmp_path: Path, snap_compare: Any) -> None:
    """A data dir of its own: the other snapshots' review events would otherwise be listed too."""
    fresh = build_snapshot_data(tmp_path)

    async def ready(pilot: Any) -> None:
        await _settle(pilot, lambda: getattr(pilot.app.screen, "report", None) is not None)

    assert snap_compare(app_for(fresh, "carol", start="audit"), terminal_size=SIZE, run_before=ready)


def test_help_at_80x24(snap: Snap, snap_compare: Any) -> None:
    """The smallest supported terminal: the help box still fits and scrolls."""
    assert snap_compare(app_for(snap, "alice"), press=["question_mark"], terminal_size=(80, 24))


def test_the_data_is_the_same_every_time(tmp_path: Path, snap: Snap) -> None:
    """What the snapshots rest on: a second build gives the same recordings, byte for byte."""
    again = build_snapshot_data(tmp_path)
    for sid in snap.ids.values():
        name = f"{sid}.zsprec"
        assert (snap.data.recordings / name).read_bytes() == (again.data.recordings / name).read_bytes()


def test_requests_with_a_held_command_at_80x24(tmp_path: Path, snap_compare: Any) -> None:
    """A command held by a rule under dave's request, the held list focused (its detail, and
    ``a Allow`` in the footer); at the smallest supported terminal."""
    from datetime import timedelta

    from tests.snapshot_data import NOW
    from zsp_tui.models import Hold, HoldState

    fresh = build_snapshot_data(tmp_path)
    with fresh.svc.store.transaction() as tx:
        tx.insert_hold(Hold(
            id="h-0a1b2c3d", session_id=fresh.ids["shell"], grant_id="r-grant1", user="alice", target="db1",
            login="postgres", rule="rm-rf-root", severity="critical", command="rm -rf / --no-preserve-root",
            state=HoldState.PENDING, created_at=NOW - timedelta(seconds=42),
            expires_at=NOW + timedelta(minutes=4, seconds=18),
        ))

    async def ready(pilot: Any) -> None:
        await _settle(pilot, lambda: getattr(pilot.app.screen, "_snapshot", None) is not None)
        pilot.app.screen.query_one("#holds").focus()
        await _settle(pilot)

    assert snap_compare(app_for(fresh, "bob", start="requests"), terminal_size=(80, 24), run_before=ready)
