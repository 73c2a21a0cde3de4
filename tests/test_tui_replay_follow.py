"""Replay following a live session through the real bastion: it opens AT the live edge (the
screen as it is now, however long the session ran before), stays there as output arrives, says
when the reviewer has sought back ("behind live"), and End returns to the edge. One audit event
per open (``review.watch``, written by Replay)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from textual.widgets import Label, Static

from tests.bastion_env import Env, make_env
from tests.helpers import read_until
from zsp_tui.access import Actor
from zsp_tui.models import Role
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.widgets.terminal_view import TerminalView

_TICK = re.compile(rb"tick-(\d+)")
_LAG = 14
"""Ticks (0.2 s each) the screen may be behind the operator: the bastion signs every 2 s and
nothing unsigned is shown, plus the feed's 0.2 s poll and a tick."""


@pytest.fixture
def live_env(tmp_path: Path) -> Iterator[Env]:
    env = make_env(tmp_path)
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.REVIEWER}))
    env.start()
    yield env
    env.stop()


class Counter:
    """A shell printing ``tick-N`` every 0.2 s through the bastion; a thread drains the channel
    and remembers the newest N the operator's terminal received."""

    def __init__(self, env: Env) -> None:
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(env.known_hosts))
        self.client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                            look_for_keys=False, allow_agent=False)
        self.chan = self.client.invoke_shell(term="xterm", width=80, height=24)
        read_until(self.chan, b"", b"$ ")
        self.newest = -1
        self._stop = threading.Event()
        self.chan.send(b"i=0; while [ $i -lt 600 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done\r")
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        tail = b""
        while not self._stop.is_set():
            if self.chan.recv_ready():
                tail = (tail + self.chan.recv(65536))[-200:]
                found = [int(n) for n in _TICK.findall(tail)]
                if found:
                    self.newest = max(self.newest, *found)
            else:
                time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self.client.close()


def _shown(app: ReviewApp) -> int:
    """The newest tick on the Replay screen (-1 if none)."""
    screen = app.screen.query_one(TerminalView).screen_value
    if screen is None:
        return -1
    found = [int(n) for line in screen.lines for n in _TICK.findall(line.encode())]
    return max(found, default=-1)


def _status(app: ReviewApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def _until(pilot, check, timeout: float = 45.0) -> None:
    # Generous: the whole suite runs on two workers on two cores, and this waits on a real bastion,
    # its signatures (every 2 s), the follow feed's thread and Textual's; it failed at 15 s under load.
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await pilot.pause(0.1)


async def test_follow_opens_at_the_live_edge_and_keeps_up(live_env: Env) -> None:
    live_env.grant()
    counter = Counter(live_env)
    try:
        # The session was busy for a while before the reviewer follows it (5 s unloaded; waited
        # for, not slept: on a loaded machine the shell's ticks come slower).
        deadline = time.monotonic() + 60
        while counter.newest < 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counter.newest >= 25, counter.newest
        (session,) = live_env.svc.unended_sessions()
        app = ReviewApp(ReviewContext.open(live_env.data, "carol", "console"), start="live")
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: bool(app.screen.query("#live")) and app.screen.query_one("#live").row_count == 1)
            opened = counter.newest
            await pilot.press("w")
            await _until(pilot, lambda: isinstance(app.screen, ReplayScreen) and _shown(app) >= 0)
            screen = app.screen
            assert isinstance(screen, ReplayScreen) and screen.follow
            # The first screen shown is the live edge: within a signature's delay of the newest
            # tick when the reviewer opened it (not of the newest now: however long a loaded
            # machine took to draw it, the operator's shell went on meanwhile).
            first = _shown(app)
            assert first >= opened - _LAG, (first, opened)
            assert "● live" in _status(app) and "behind live" not in _status(app)
            await _until(pilot, lambda: screen.commands_label() == "(live)")
            title = str(screen.query_one("#commands-title", Label).render())
            assert title == "Commands  (live)", title
            # ...and it keeps up while more arrives: each newer tick the operator saw shows (a
            # liveness bound, not a deadline: how late depends on the machine's load).
            for _ in range(3):
                await pilot.pause(1.0)
                seen = counter.newest
                await _until(pilot, lambda seen=seen: _shown(app) >= seen)
            await _until(pilot, lambda: _shown(app) > first + 5)
            # Seeking back: behind, and says so; it plays from there at 1x (stays behind).
            await pilot.press("shift+left")
            await _until(pilot, lambda: "behind live: End to catch up" in _status(app))
            await pilot.pause(1.0)
            assert _shown(app) < counter.newest - 20
            assert "behind live: End to catch up" in _status(app)
            # End: back at the live edge.
            await pilot.press("end")
            await _until(pilot, lambda: _shown(app) >= counter.newest - _LAG)
            assert "● live" in _status(app) and "behind live" not in _status(app)
        events = [e for e in live_env.svc.audit_events() if e.event in ("review.watch", "review.replay")]
        assert [(e.event, e.actor, e.session_id) for e in events] == [("review.watch", "carol", session.id)]
    finally:
        counter.close()


async def test_a_fast_producer_is_coalesced_at_the_live_edge(live_env: Env) -> None:
    """``yes`` through the bastion while followed: the screen skips to the newest keyframe instead
    of replaying every frame, the keyboard keeps working, and the end of the burst shows."""
    live_env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(live_env.known_hosts))
    client.connect("127.0.0.1", live_env.port, username="local", key_filename=str(live_env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    chan = client.invoke_shell(term="xterm", width=80, height=24)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if chan.recv_ready():
                chan.recv(1 << 20)
            else:
                time.sleep(0.01)

    try:
        read_until(chan, b"", b"$ ")  # (head cuts a line: the marker follows "fast-pro" on its row)
        threading.Thread(target=drain, daemon=True).start()
        (session,) = live_env.svc.unended_sessions()
        app = ReviewApp(ReviewContext.open(live_env.data, "carol", "console"))
        async with app.run_test(size=(100, 30)) as pilot:
            app.open_replay(session.id, follow=True)
            await _until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.playback is not None)
            screen = app.screen
            assert isinstance(screen, ReplayScreen)
            chan.send(b"yes fast-producer | head -c 1000000; echo FAST-$((6*7))-DONE\r")
            panel = screen.query_one("#panel")
            before = panel.display
            await pilot.pause(1.0)
            await pilot.press("c")  # the keyboard is served during the burst
            await _until(pilot, lambda: panel.display != before)
            view = screen.query_one(TerminalView)

            def done() -> bool:
                value = view.screen_value
                return value is not None and any("FAST-42-DONE" in line for line in value.lines)

            await _until(pilot, done, timeout=60)
            pb = screen.playback
            assert pb is not None and pb.following and pb.jumps > 0
            assert "● live" in _status(app)
    finally:
        stop.set()
        client.close()
