"""Live area of the review app, against a real bastion: a session in progress appears, a reviewer
follows it (audited), and terminating it revokes its grant through the service, which makes the
bastion close the real SSH session. Who may do what is the service's rule, shown when refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paramiko
import pytest
from textual.widgets import DataTable, Input, Static

from tests.bastion_env import Env, make_env
from tests.helpers import read_until
from zsp_tui.access import Actor
from zsp_tui.models import RequestState, Role, SessionRecord
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.dialogs import ReasonDialog
from zsp_tui.tui.screens.live import LiveScreen
from zsp_tui.tui.screens.replay import ReplayScreen


@pytest.fixture
def live_env(tmp_path: Path) -> Iterator[Env]:
    """A running bastion: alice (operator, admin), bob (approver), carol (reviewer only)."""
    env = make_env(tmp_path)
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.REVIEWER}))
    env.start()
    yield env
    env.stop()


def _shell(env: Env) -> tuple[paramiko.SSHClient, paramiko.Channel]:
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    chan = client.invoke_shell(term="xterm", width=80, height=24)
    buf = read_until(chan, b"", b"$ ")
    chan.send(b"echo live-$((6*7))\r")
    read_until(chan, buf, b"live-42")
    return client, chan


def _app(env_data, user: str) -> ReviewApp:
    return ReviewApp(ReviewContext.open(env_data, user, "console"), start="live")


def _rows(app: ReviewApp) -> list[list[str]]:
    table = app.screen.query_one("#live", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _status(app: ReviewApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def _until(pilot, check, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await pilot.pause(0.1)


async def test_follow_and_terminate_a_real_live_session(live_env: Env) -> None:
    grant = live_env.grant()
    client, chan = _shell(live_env)
    try:
        (session,) = live_env.svc.unended_sessions()
        # carol, a reviewer: sees it, follows it (audited), may not end it
        app = _app(live_env.data, "carol")
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: len(_rows(app)) == 1)
            row = _rows(app)[0]
            assert row[0] == session.id[-8:] and row[1] == "alice"
            assert row[2] == f"{session.login}@local" and row[3] == grant.id
            started = row[5]
            await _until(pilot, lambda: _rows(app) and _rows(app)[0][5] != started)  # it ticks
            await pilot.press("w")
            await _until(pilot, lambda: isinstance(app.screen, ReplayScreen))  # audited first, then opened
            assert app.screen.session_id == session.id and app.screen.follow is True
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, LiveScreen)
            await pilot.press("t")
            await pilot.pause()
            assert isinstance(app.screen, ReasonDialog)
            await pilot.press(*"curious", "enter")
            await _until(pilot, lambda: "refused" in _status(app))
            assert f"refused: carol may not revoke {grant.id}" in _status(app)
        # One event for the open, written by Replay: review.watch (no review.replay beside it)
        watched = [e for e in live_env.svc.audit_events() if e.event in ("review.watch", "review.replay")]
        assert [(e.event, e.actor, e.via, e.session_id) for e in watched] == [
            ("review.watch", "carol", "console", session.id)
        ]
        assert live_env.svc.get(grant.id).state is RequestState.APPROVED
        assert not chan.closed and not chan.exit_status_ready()
        chan.send(b"echo still-$((6*7))\r")
        read_until(chan, b"", b"still-42")

        # bob, an approver: cannot follow (says so), terminates it after the confirmation
        app = _app(live_env.data, "bob")
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: len(_rows(app)) == 1)
            await pilot.press("w")
            await pilot.pause()
            assert isinstance(app.screen, LiveScreen)
            assert "bob cannot follow sessions: watching needs the reviewer or admin role" in _status(app)
            await pilot.press("t")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ReasonDialog)
            assert f"This revokes grant {grant.id}" in str(dialog.query_one(".dialog-body", Static).render())
            await pilot.press("escape")  # cancelled: nothing happens
            await pilot.pause()
            assert live_env.svc.get(grant.id).state is RequestState.APPROVED
            await pilot.press("t")
            await pilot.pause()
            app.screen.query_one("#reason", Input).value = "INC-9 suspicious"
            await pilot.click("#ok")
            await _until(pilot, lambda: "revoked" in _status(app))
            assert f"revoked {grant.id}: session {session.id[-8:]} of alice ends within a second" in _status(app)
            # the real session ends, and drops off the list
            await _until(pilot, lambda: chan.closed or chan.exit_status_ready())
            await _until(pilot, lambda: _rows(app) == [])
        r = live_env.svc.get(grant.id)
        assert r.state is RequestState.REVOKED and r.ended_by == "bob" and r.note == "INC-9 suspicious"
        end = time.monotonic() + 60
        while live_env.svc.session(session.id).ended_at is None and time.monotonic() < end:
            await asyncio.sleep(0.1)
        ended = live_env.svc.session(session.id)
        assert ended.ended_at is not None and "revoked" in (ended.end_reason or ""), ended
        assert [e.event for e in live_env.svc.audit_events() if e.event == "review.watch"] == ["review.watch"]
    finally:
        client.close()


def _unended(reviewed, **changes) -> SessionRecord:
    record = SessionRecord(
        id=str(uuid.uuid4()), user="alice", target="local", login="alice", grant_id=None, command=None,
        client="console", path=str(reviewed.data.recordings / "x.zsprec"), started_at=datetime.now(UTC),
        owner="record:host:1",
    )
    record = SessionRecord(**{**{f: getattr(record, f) for f in SessionRecord.__slots__}, **changes})
    reviewed.svc.session_started(record, via="console")  # what `zsp record` does
    return record


async def test_a_session_without_a_grant_cannot_be_terminated_by_revoking(reviewed) -> None:
    record = _unended(reviewed)
    app = _app(reviewed.data, "alice")
    async with app.run_test(size=(100, 30)) as pilot:
        await _until(pilot, lambda: len(_rows(app)) == 1)
        assert _rows(app)[0][3] == "none (zsp record)"
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)  # no dialog
        assert "opened without a grant (zsp record on the bastion host)" in _status(app)
    assert reviewed.svc.session(record.id).ended_at is None


async def test_hostile_live_values_render_literally(reviewed) -> None:
    _unended(reviewed, user="[reverse]x[/]\x1b[2J", target="[link=x]t[/]", client="[b]1.2.3.4[/b]\u202e",
             command="rm -rf / # [blink]ok[/]")
    app = _app(reviewed.data, "carol")
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: len(_rows(app)) == 1)
        row = _rows(app)[0]
        assert row[1] == "[reverse]x[/]\\x…"  # cut to its column, escaped before the cut
        assert row[2] == "alice@[link=x]t[/]"
        assert row[6] == "[b]1.2.3.4[/b]\\u202e"
        table = app.screen.query_one("#live", DataTable)
        drawn = "\n".join(table.render_line(y).text for y in range(table.size.height))
        assert "[reverse]x[/]\\x…" in drawn and "alice@[link=x]t[/]" in drawn and "[b]1.2.3.4[/b]\\u202e" in drawn
        assert "\x1b" not in drawn and "\u202e" not in drawn
        detail = str(app.screen.query_one("#detail", Static).render())
        assert "[reverse]x[/]\\x1b[2J on alice@[link=x]t[/]" in detail
        assert "command: rm -rf / # [blink]ok[/]" in detail and "\x1b" not in detail


async def test_live_fits_80x24(reviewed) -> None:
    _unended(reviewed)
    app = _app(reviewed.data, "carol")
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: len(_rows(app)) == 1)
        table = app.screen.query_one("#live", DataTable)
        assert table.region.height >= 10 and table.region.right <= 80
