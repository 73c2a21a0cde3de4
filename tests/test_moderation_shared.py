"""Moderated sessions across processes: watches live in the store, so a moderator joins from the
review app's Live screen (another process than the bastion), from any worker of ``zsp serve
--workers 2``, and a killed watcher (its heartbeat stops) counts as gone. Real ``zsp serve``
subprocesses, a real sshd target (``srv``, short-lived certificates), asyncssh clients, the
Textual app under Pilot on the same data dir, real SQLite. bob (approver) moderates; alice
(operator, admin) operates; erin (reviewer) is no moderator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from textual.widgets import DataTable, Static

from recorder import FrameKind
from replay import load
from tests.bastion_env import Env, make_env, tracebacks
from tests.test_moderation import GRACE, WAIT, Stream
from tests.test_review_ssh import BAR, review_ssh
from zsp_tui.access import Actor
from zsp_tui.exceptions import WatchRefused
from zsp_tui.models import WATCH_FRESH_S, Role, SessionRecord, WatchEnd
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.dialogs import ConfirmDialog
from zsp_tui.tui.screens.replay import ReplayScreen

POLICY = """\
[settings]
request_timeout = "1h"
warn_before = ["5m"]

[[rule]]
name = "watched"
requesters = ["role:operator"]
targets = ["*"]
logins = ["*"]
max_duration = "4h"
require_reason = true
approvers = ["role:approver"]
moderators = ["role:approver", "role:admin"]
moderation = "watch"
"""


def _env(root: Path, *args: str) -> Env:
    e = make_env(root, with_sshd=True)
    e.data.policy_path.write_text(POLICY)
    e.svc.add_user(Actor("alice"), "erin", frozenset({Role.REVIEWER}))
    e.configure(f"[bastion]\nmoderation_wait = {WAIT}\nmoderation_grace = {GRACE}\n")
    e.grant("srv")
    e.start(args=args)
    return e


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = _env(tmp_path_factory.mktemp("modshared"))
    try:
        yield e
    finally:
        e.stop()
        if e.sshd is not None:
            e.sshd.stop()


async def operator(env: Env) -> tuple[asyncssh.SSHClientConnection, Any, Stream, Stream, str]:
    """alice's PTY shell on the real sshd target ``srv``; waits until it waits for a moderator."""
    conn = await asyncssh.connect("127.0.0.1", username="srv", **env.asyncssh_options("alice"))
    proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
    out, err = Stream(proc.stdout), Stream(proc.stderr)
    m = await err.until(r"watch ([0-9a-f-]{36})")
    return conn, proc, out, err, m.group(1)


def ended(env: Env, sid: str, timeout: float = 20.0) -> SessionRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = env.svc.session(sid)
        if s is not None and s.ended_at is not None:
            return s
        time.sleep(0.1)
    raise AssertionError(f"session {sid} did not end")


def frames(env: Env, path: str) -> list[Any]:
    got, report = load(path, env.data.trusted_keys())
    assert report.valid, report
    return [f.data for f in got if f.kind is FrameKind.EVENT]


def audited(env: Env, sid: str, name: str) -> list[Any]:
    return [e for e in env.svc.audit_events() if e.session_id == sid and e.event == name]


def _app(env: Env, user: str) -> ReviewApp:
    return ReviewApp(ReviewContext.open(env.data, user, "console"), start="live")


def _cell(app: ReviewApp, sid: str, column: str) -> str:
    table = app.screen.query_one("#live", DataTable)
    if sid not in {k.value for k in table.rows}:
        return ""
    return str(table.get_cell(sid, column))


async def _until(pilot: Any, check: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await pilot.pause(0.1)


async def _select(pilot: Any, app: ReviewApp, sid: str) -> None:
    await _until(pilot, lambda: "waits for a moderator" in _cell(app, sid, "moderation"))
    table = app.screen.query_one("#live", DataTable)
    table.move_cursor(row=table.get_row_index(sid), animate=False)
    await pilot.pause()


def _moderating(app: ReviewApp) -> ReplayScreen | None:
    screen = app.screen
    return screen if isinstance(screen, ReplayScreen) and screen.moderating is not None else None


# --- the review app's Live screen ------------------------------------------------------------------


async def test_a_moderator_joins_from_the_live_screen_and_leaving_holds_then_ends_it(env: Env) -> None:
    conn, proc, out, err, sid = await operator(env)
    await err.until("waits for a moderator")
    proc.stdin.write("echo EARLY-$((40+2))\r")
    await asyncio.sleep(1.0)
    assert "EARLY-42" not in out.text  # the target is not reached before a moderator watches
    app = _app(env, "bob")  # an approver: moderates by the rule, without the reviewer role
    async with app.run_test(size=(130, 36)) as pilot:
        await _select(pilot, app, sid)
        await pilot.press("j")
        await _until(pilot, lambda: _moderating(app) is not None)
        await err.until("the session starts")
        await out.until("EARLY-42")  # held while waiting, then sent
        screen = _moderating(app)
        assert screen is not None
        banner = str(screen.query_one("#moderating", Static).render())
        assert "MODERATING: input flows while you watch; T terminates" in banner
        proc.stdin.write("echo SEEN-$((6*7))\r")
        await out.until("SEEN-42")
        [watch] = await asyncio.to_thread(env.svc.watches, [sid])
        assert (watch.user, watch.via, watch.client) == ("bob", "console", "review app (console)")
        await asyncio.sleep(2.5)  # beats keep it present past a second or two
        [still] = await asyncio.to_thread(env.svc.watches, [sid])
        assert still.seen_at > watch.seen_at
        await pilot.press("escape")  # leaving Replay leaves the watch
        await _until(pilot, lambda: _moderating(app) is None)
        await err.until("input is held")
        proc.stdin.write("echo HELD-$((1+1))\r")
        await err.until("no moderator watched this session", timeout=GRACE + 5)
    await proc.wait_closed()
    conn.close()
    assert "HELD-2" not in out.text
    s = ended(env, sid)
    assert s.end_reason == "moderation-lapsed" and s.target == "srv"
    events = frames(env, s.path)
    [start] = [e for e in events if e.type == "moderation.watch.start"]
    [end] = [e for e in events if e.type == "moderation.watch.end"]
    assert start.fields["moderator"] == "bob" and start.fields["via"] == "console"
    assert end.fields["how"] == "left" and end.fields["since"]
    [a_start] = audited(env, sid, "session.watch.start")
    [a_end] = audited(env, sid, "session.watch.end")
    assert (a_start.actor, a_start.via) == ("bob", "console")
    assert a_end.actor == "bob" and a_end.fields["how"] == "left" and a_end.fields["since"]
    assert a_start.time <= a_end.time


async def test_a_moderator_terminates_from_the_live_screen(env: Env) -> None:
    conn, proc, out, err, sid = await operator(env)
    app = _app(env, "bob")
    async with app.run_test(size=(130, 36)) as pilot:
        await _select(pilot, app, sid)
        await pilot.press("j")
        await _until(pilot, lambda: _moderating(app) is not None)
        await err.until("the session starts")
        proc.stdin.write("echo UP-$((2+3))\r")
        await out.until("UP-5")
        await pilot.press("T")
        await _until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await err.until("moderator bob ended this session")
        screen = _moderating(app)
        assert screen is not None
        await _until(pilot, lambda: "NOT MODERATING" in str(screen.query_one("#moderating", Static).render()))
    await proc.wait_closed()
    conn.close()
    s = ended(env, sid)
    assert s.end_reason == "moderator-terminated"
    [term] = audited(env, sid, "session.moderation.terminate")
    assert (term.actor, term.via) == ("bob", "console")
    [a_end] = audited(env, sid, "session.watch.end")
    assert a_end.fields["how"] == "terminated"
    events = frames(env, s.path)
    assert [e.fields["how"] for e in events if e.type == "moderation.watch.end"] == ["terminated"]
    assert any(e.type == "session.ended" and "moderator bob ended" in e.message for e in events)


async def test_the_live_screen_refuses_the_operator_and_non_moderators_in_words(env: Env) -> None:
    conn, proc, _out, err, sid = await operator(env)
    for user, said in (("alice", "nobody moderates their own session"), ("erin", "not among this session's")):
        app = _app(env, user)
        async with app.run_test(size=(130, 36)) as pilot:
            await _select(pilot, app, sid)
            await pilot.press("j")
            await _until(pilot, lambda: said in str(app.screen.query_one("#status", Static).render()))
            assert _moderating(app) is None
    proc.close()
    conn.close()
    ended(env, sid)
    refused = audited(env, sid, "session.watch.refused")
    assert {(e.actor, e.via) for e in refused} >= {("alice", "console"), ("erin", "console")}
    assert not audited(env, sid, "session.watch.start")
    assert "the session starts" not in err.text


async def test_a_moderator_joins_from_the_review_app_over_openssh(env: Env) -> None:
    """``ssh -tt review@BASTION`` (stock OpenSSH in a PTY; the app runs under the bastion), Live,
    ``j``: the watch is the store's like any other (``via`` ssh), and Esc leaves it."""
    conn, proc, out, err, sid = await operator(env)
    ssh = review_ssh(env, "bob", cols=130, rows=36)
    try:
        await asyncio.to_thread(ssh.wait_for, lambda lines: lines[0].startswith(BAR), "the area bar")
        ssh.send(b"3")
        await asyncio.to_thread(
            ssh.wait_for, lambda lines: any("waits for a moderator" in x for x in lines), "the Live list"
        )
        ssh.send(b"j")
        await asyncio.to_thread(
            ssh.wait_for, lambda lines: any("MODERATING: input flows while you watch" in x for x in lines), "banner"
        )
        await err.until("the session starts")
        proc.stdin.write("echo OVER-$((8+8))\r")
        await out.until("OVER-16")
        await asyncio.to_thread(ssh.wait_for, lambda lines: any("OVER-16" in x for x in lines), "the followed screen")
        ssh.send(b"\x1b")
        await err.until("input is held")
        ssh.send(b"q")
        assert await asyncio.to_thread(ssh.finish) == 0
    finally:
        ssh.close()
    await err.until("no moderator watched this session", timeout=GRACE + 5)
    await proc.wait_closed()
    conn.close()
    s = ended(env, sid)
    assert s.end_reason == "moderation-lapsed"
    [start] = audited(env, sid, "session.watch.start")
    assert (start.actor, start.via, start.fields["client"]) == ("bob", "ssh", "review app (ssh)")
    [end] = audited(env, sid, "session.watch.end")
    assert end.fields["how"] == "left"


# --- the service's refusals ---------------------------------------------------------------------


async def test_the_service_refuses_unknown_ended_unmoderated_and_other_hosts_sessions(env: Env) -> None:
    conn, proc, _out, _err, sid = await operator(env)
    svc = env.svc
    bob = Actor("bob", "console")
    with pytest.raises(WatchRefused, match="no live session 'nope'"):
        svc.join_watch(bob, "nope", client="console")
    with pytest.raises(WatchRefused, match="runs on bastion"):
        svc.join_watch(bob, sid, client="console", here="another-host")
    # A session no grant opened (zsp record on the bastion host) is not moderated.
    plain = SessionRecord(
        id="00000000-0000-4000-8000-000000000001",
        user="alice",
        target="local",
        login="x",
        grant_id=None,
        command=None,
        client="local",
        path=str(env.data.recordings / "none.zsprec"),
        started_at=svc.clock.now(),
        owner="record:host:1",
    )
    assert svc.session_started(plain, via="console")
    with pytest.raises(WatchRefused, match="is not moderated"):
        svc.join_watch(bob, plain.id, client="console")
    svc.session_ended(plain, 0, "exit", None, via="console")
    with pytest.raises(WatchRefused, match="no live session"):
        svc.join_watch(bob, plain.id, client="console")
    proc.close()
    conn.close()
    s = ended(env, sid)
    with pytest.raises(WatchRefused, match="no live session"):
        svc.join_watch(bob, s.id, client="console")
    reasons = [e.fields["reason"] for e in svc.audit_events() if e.event == "session.watch.refused"]
    assert any(f"runs on bastion {socket.gethostname()}; watch it there" in r for r in reasons)
    assert any("is not moderated" in r for r in reasons)


async def test_a_killed_watcher_counts_as_gone(env: Env) -> None:
    conn, proc, out, err, sid = await operator(env)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from zsp_tui.access import Actor\n"
        "from zsp_tui.datadir import DataDir\n"
        "svc = DataDir(Path(sys.argv[1])).service()\n"
        "w = svc.join_watch(Actor('bob', 'console'), sys.argv[2], client='console')\n"
        "print(w.id, flush=True)\n"
        "while svc.beat_watch(w.id):\n"
        "    time.sleep(1)\n"
    )
    watcher = subprocess.Popen(
        [sys.executable, "-c", script, str(env.data.root), sid], stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        wid = (await asyncio.to_thread(watcher.stdout.readline)).strip()
        await err.until("the session starts")
        proc.stdin.write("echo ALIVE-$((5+5))\r")
        await out.until("ALIVE-10")
        await asyncio.sleep(WATCH_FRESH_S + 1)  # it beats: still present
        assert "input is held" not in err.text
        os.kill(watcher.pid, signal.SIGKILL)
        await err.until("input is held", timeout=WATCH_FRESH_S + 5)
        await err.until("no moderator watched this session", timeout=GRACE + 5)
    finally:
        watcher.kill()
        watcher.wait()
        if watcher.stdout is not None:
            watcher.stdout.close()
    await proc.wait_closed()
    conn.close()
    s = ended(env, sid)
    assert s.end_reason == "moderation-lapsed"
    [a_end] = audited(env, sid, "session.watch.end")
    assert a_end.fields["how"] == "lost" and a_end.fields["watch"] == wid
    [end] = [e for e in frames(env, s.path) if e.type == "moderation.watch.end"]
    assert end.fields["how"] == "lost"
    assert env.svc.watches([sid], open_only=False)[0].how is WatchEnd.LOST


# --- zsp serve --workers 2 -------------------------------------------------------------------------


async def test_ssh_watch_from_another_worker_starts_the_session(tmp_path: Path) -> None:
    env = _env(tmp_path, "--workers", "2")
    try:
        conn, proc, out, err, sid = await operator(env)
        owner = env.svc.session(sid).owner
        # A connection lands on a worker when it is accepted: find one on the other worker (a
        # refused watch without a terminal names the process that served it).
        mconn = None
        for attempt in range(40):
            c = await asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options("bob"))
            await c.run(f"watch probe-{attempt}", check=False)
            [probe] = [
                e
                for e in env.svc.audit_events()
                if e.event == "session.watch.refused" and e.fields.get("requested_session") == f"probe-{attempt}"
            ]
            if probe.fields["bastion"] != owner:
                mconn = c
                break
            c.close()
        assert mconn is not None, "every connection landed on the session's own worker"
        t_join = time.monotonic()
        mproc = await mconn.create_process(f"watch {sid}", term_type="xterm", term_size=(100, 30))
        mout = Stream(mproc.stdout)
        await err.until("the session starts")
        print(f"watch on the other worker -> session started after {time.monotonic() - t_join:.2f} s")
        proc.stdin.write("echo ACROSS-$((20+1))\r")
        await out.until("ACROSS-21")
        await mout.until("ACROSS-21")  # the other worker follows the recording file
        mproc.stdin.write("q")
        await mproc.wait_closed()
        mconn.close()
        await err.until("input is held")
        proc.close()
        conn.close()
        s = ended(env, sid)
        [start] = audited(env, sid, "session.watch.start")
        assert start.fields["bastion"] != s.owner and start.fields["owner"] == s.owner
        [a_end] = audited(env, sid, "session.watch.end")
        assert a_end.fields["how"] == "left"
        kinds = [e.type for e in frames(env, s.path)]
        assert kinds.index("moderation.watch.start") < kinds.index("moderation.watch.end")
    finally:
        env.stop()
        if env.sshd is not None:
            env.sshd.stop()


# --- PostgreSQL: fail closed ---------------------------------------------------------------------


@dataclasses.dataclass
class _Watched:
    """A moderated shell on ``local`` (alice) and bob's ``watch`` of it, over ssh, with its first
    command echoed: the session runs because a moderator is present."""

    conn: asyncssh.SSHClientConnection
    proc: asyncssh.SSHClientProcess[str]
    out: Stream
    err: Stream
    sid: str
    mconn: asyncssh.SSHClientConnection
    mproc: asyncssh.SSHClientProcess[str]


def _moderated_local(tmp_path: Path, extra: str = "") -> Env:
    """A bastion whose ``local`` target is moderated (not started)."""
    env = make_env(tmp_path)
    env.data.policy_path.write_text(POLICY.replace('targets = ["*"]', 'targets = ["local"]'))  # "*": not local
    env.configure(f"[bastion]\nmoderation_wait = {WAIT}\nmoderation_grace = {GRACE}\n{extra}")
    env.grant("local")
    return env


async def _watched(env: Env, size: tuple[int, int] = (80, 24)) -> _Watched:
    conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice"))
    proc = await conn.create_process(term_type="xterm", term_size=size)
    out, err = Stream(proc.stdout), Stream(proc.stderr)
    sid = (await err.until(r"watch ([0-9a-f-]{36})")).group(1)
    mconn = await asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options("bob"))
    mproc = await mconn.create_process(f"watch {sid}", term_type="xterm", term_size=(100, 30))
    await err.until("the session starts")
    proc.stdin.write("echo UP-$((3+4))\r")
    await out.until("UP-7")
    return _Watched(conn, proc, out, err, sid, mconn, mproc)


async def test_a_lost_store_means_no_moderator_is_known_present(
    tmp_path: Path, postgres_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moderator still watches, but the store that says so is gone: once the last heartbeat
    read is stale the input is held and, after the grace, the session ends (the grant checks'
    own grace is much longer here, so it is the moderation that ends it)."""
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_cluster.database())
    env = _moderated_local(tmp_path, "store_grace = 120\n")
    env.start()
    try:
        w = await _watched(env)
        conn, proc, err, mconn, mproc = w.conn, w.proc, w.err, w.mconn, w.mproc
        await asyncio.to_thread(postgres_cluster.stop)
        try:
            t_down = time.monotonic()
            await err.until("input is held", timeout=WATCH_FRESH_S + 15)
            assert mproc.exit_status is None  # the moderator's view is still open: not what decides
            await err.until("no moderator watched this session", timeout=GRACE + 10)
            print(f"store stopped -> moderated session ended after {time.monotonic() - t_down:.2f} s")
            await asyncio.wait_for(proc.wait_closed(), 15)
            assert "this session ends in 120 s" in err.text  # the grant checks' grace had not run out
        finally:
            await asyncio.to_thread(postgres_cluster.start)
        mconn.abort()
        conn.close()
        assert not tracebacks(env.output), tracebacks(env.output)
    finally:
        env.stop()
    assert not tracebacks(env.output), tracebacks(env.output)


async def test_a_bastion_stopped_while_a_moderator_watches_ends_the_view_cleanly(tmp_path: Path) -> None:
    """``zsp serve`` stopped (SIGTERM) while a moderator's view is open: the view ends before the
    store's thread stops, so its watch's end is written and nothing fails on the way out (the
    view's last store write used to reach a store thread already shut down: a traceback). The
    session's end ends the watch in the store first (on SQLite it failed: the session id was
    passed as a UUID, and the bastion said its store failed)."""
    env = _moderated_local(tmp_path)
    env.start()
    try:
        w = await _watched(env)
        await asyncio.to_thread(env.stop)
        await asyncio.wait_for(w.mproc.wait_closed(), 15)
        w.mconn.abort()
        w.conn.abort()
    finally:
        env.stop()
    assert not tracebacks(env.output), tracebacks(env.output)
    assert not [line for line in env.output if "store fails" in line], env.output
    [watch] = env.svc.watches([w.sid], open_only=False)
    assert not watch.open and watch.how is WatchEnd.SESSION_ENDED  # ended with its session, first


async def test_costly_output_in_a_watched_session_does_not_stall_the_moderator_view(tmp_path: Path) -> None:
    """The view emulates the watched session in a thread and drew under that thread's lock on
    the event loop: a frame of DECALN then ED 2 at 1000x500 (a million cells per 7 bytes) held
    the lock, and so every session, for over a minute, ``T`` included, as soon as the view drew
    while a frame was being fed (here: the moderator resizes their window). The view now never waits
    for the lock, and its emulator is bounded as the rules engine's is (the rest is skipped, and
    the status line says so)."""
    env = _moderated_local(tmp_path)
    env.start()
    try:
        w = await _watched(env, size=(1000, 500))
        # 1.3 MB: seconds to print, hours to emulate whole. The streams read it in the background.
        w.proc.stdin.write("python3 -c 'import os; [os.write(1, b\"\\033#8\\033[2J\" * 3000) for _ in range(60)]'\r")
        await asyncio.sleep(3)  # frames of it are recorded and followed
        w.mproc.change_terminal_size(120, 40)  # the view draws again, while a frame is being fed
        await asyncio.sleep(1)
        sent = time.monotonic()
        w.mproc.stdin.write("T")
        await w.err.until("moderator bob ended this session", timeout=60)
        took = time.monotonic() - sent
        await asyncio.wait_for(w.proc.wait_closed(), 15)
        w.mconn.abort()
        w.conn.abort()
    finally:
        env.stop()
    assert took < 10, f"T took {took:.1f} s"
    assert not tracebacks(env.output), tracebacks(env.output)
