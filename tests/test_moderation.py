"""Moderated sessions end to end: a real ``zsp serve`` over loopback, asyncssh clients for the
operator (a PTY shell on ``local``) and the moderators (``ssh -t zsp@BASTION watch SESSION``),
real SQLite. The policy's only rule is moderated by ``role:approver`` and ``role:admin``: bob
(approver) moderates; alice (operator and admin) is the operator, so she may not watch her own
session; carol (operator) is no moderator. Each test asserts on the operator's terminal, the
recording's event frames and the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from recorder import FrameKind
from replay import load
from tests.bastion_env import Env, keygen, make_env
from zsp_tui.access import Actor
from zsp_tui.exceptions import PolicyError
from zsp_tui.models import Role
from zsp_tui.policy import parse_policy

POLICY = """\
[settings]
request_timeout = "1h"
warn_before = ["5m"]

[[rule]]
name = "watched"
requesters = ["role:operator"]
targets = ["local"]
logins = ["*"]
max_duration = "4h"
require_reason = true
approvers = ["role:approver"]
moderators = ["role:approver", "role:admin"]
moderation = "watch"
"""

WAIT = 8
GRACE = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("moderation")
    e = make_env(root)
    e.data.policy_path.write_text(POLICY)
    e.keys["carol"] = keygen(root / "carol_ed25519", "carol")
    e.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR}), [Path(f"{e.keys['carol']}.pub").read_text()])
    e.configure(f"[bastion]\nmoderation_wait = {WAIT}\nmoderation_grace = {GRACE}\n")
    e.grant("local")  # alice's, for every test
    e.start()
    try:
        yield e
    finally:
        e.stop()


class Stream:
    """Collects what a process writes to one of its streams, in the background."""

    def __init__(self, reader: asyncssh.SSHReader[str]) -> None:
        self.text = ""
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncssh.SSHReader[str]) -> None:
        while data := await reader.read(4096):
            self.text += data

    async def until(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text):
                return m
            await asyncio.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen in {self.text[-2000:]!r}")


async def operator(env: Env, user: str = "alice") -> tuple[asyncssh.SSHClientConnection, Any, Stream, Stream, str]:
    """A PTY shell on ``local``; returns the connection, process, stdout, stderr and session id."""
    conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options(user))
    proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
    out, err = Stream(proc.stdout), Stream(proc.stderr)
    m = await err.until(r"watch ([0-9a-f-]{36})")
    return conn, proc, out, err, m.group(1)


async def watch(
    env: Env, user: str, sid: str, *, pty: bool = True
) -> tuple[asyncssh.SSHClientConnection, Any, Stream, Stream]:
    conn = await asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options(user))
    kwargs: dict[str, Any] = {"term_type": "xterm", "term_size": (100, 30)} if pty else {}
    proc = await conn.create_process(f"watch {sid}", **kwargs)
    return conn, proc, Stream(proc.stdout), Stream(proc.stderr)


def ended(env: Env, sid: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = env.svc.session(sid)
        if s.ended_at is not None:
            return s
        time.sleep(0.1)
    raise AssertionError(f"session {sid} did not end")


def event_frames(env: Env, path: str) -> list[Any]:
    got, report = load(path, env.data.trusted_keys())
    assert report.valid, report
    return [f.data for f in got if f.kind is FrameKind.EVENT]


def audited(env: Env, sid: str) -> list[Any]:
    return [e for e in env.svc.audit_events() if e.session_id == sid]


def test_waits_starts_when_a_moderator_joins_and_ends_after_the_last_leaves(env: Env) -> None:
    async def run() -> str:
        conn, proc, out, err, sid = await operator(env)
        await err.until("waits for a moderator")
        proc.stdin.write("echo EARLY-$((40+2))\r")
        await asyncio.sleep(1.0)
        assert "EARLY-42" not in out.text  # the target is not reached before a moderator watches
        mconn, mproc, mout, _ = await watch(env, "bob", sid)
        await err.until("the session starts")
        await out.until("EARLY-42")  # what was typed while waiting was held, then sent
        proc.stdin.write("echo SEEN-$((6*7))\r")
        await out.until("SEEN-42")
        await mout.until("SEEN-42")  # the moderator's view, drawn by the replay emulator
        assert "WATCH alice" in mout.text
        mproc.stdin.write("q")
        await mproc.wait_closed()
        mconn.close()
        await err.until("input is held")
        proc.stdin.write("echo HELD-$((1+1))\r")
        await err.until("no moderator watched this session", timeout=GRACE + 5)
        await proc.wait_closed()
        assert "HELD-2" not in out.text
        conn.close()
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    assert s.end_reason == "moderation-lapsed"
    types = [e.type for e in event_frames(env, s.path)]
    assert types.index("moderation.wait") < types.index("moderation.watch.start") < types.index("moderation.watch.end")
    [start] = [e for e in event_frames(env, s.path) if e.type == "moderation.watch.start"]
    assert start.fields["moderator"] == "bob"
    names = [e.event for e in audited(env, sid)]
    for name in ("session.moderation.wait", "session.watch.start", "session.watch.end", "session.moderation.lapsed"):
        assert name in names, names
    [end] = [e for e in audited(env, sid) if e.event == "session.watch.end"]
    assert end.actor == "bob" and end.fields["how"] == "left" and end.fields["since"]
    assert end.code == "ZSP2602I"


def test_a_moderator_terminates_the_session(env: Env) -> None:
    async def run() -> str:
        conn, proc, _out, err, sid = await operator(env)
        mconn, mproc, mout, _ = await watch(env, "bob", sid)
        await err.until("the session starts")
        proc.stdin.write("echo UP-$((2+3))\r")
        await mout.until("UP-5")
        mproc.stdin.write("T")
        await err.until("moderator bob ended this session")
        await proc.wait_closed()
        await mproc.wait_closed()
        conn.close()
        mconn.close()
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    assert s.end_reason == "moderator-terminated"
    names = [e.event for e in audited(env, sid)]
    assert "session.moderation.terminate" in names
    frames = event_frames(env, s.path)
    assert [e.fields["moderator"] for e in frames if e.type == "moderation.watch.end"] == ["bob"]
    assert any(e.type == "session.ended" and "moderator bob ended" in e.message for e in frames)
    [end] = [e for e in audited(env, sid) if e.event == "session.watch.end"]
    assert end.fields["how"] == "terminated"


def test_no_moderator_in_time_ends_the_session(env: Env) -> None:
    async def run() -> str:
        conn, proc, _out, err, sid = await operator(env)
        await err.until("no moderator joined within", timeout=WAIT + 5)
        await proc.wait_closed()
        conn.close()
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    assert s.end_reason == "moderation-timeout"
    assert "session.moderation.timeout" in [e.event for e in audited(env, sid)]


def test_the_operator_and_non_moderators_cannot_watch(env: Env) -> None:
    async def run() -> str:
        conn, proc, _out, _err, sid = await operator(env)
        refusals = []
        for user, target, pty in (
            ("alice", sid, True),
            ("carol", sid, True),
            ("bob", "no-such", True),
            ("bob", sid, False),
        ):
            mconn, mproc, _, merr = await watch(env, user, target, pty=pty)
            await mproc.wait_closed()
            mconn.close()
            refusals.append((mproc.exit_status, merr.text))
        proc.close()
        conn.close()
        assert all(status != 0 for status, _ in refusals), refusals
        assert "own session" in refusals[0][1]
        assert "not among this session's moderators" in refusals[1][1]
        assert "no live session" in refusals[2][1]
        assert "needs a terminal" in refusals[3][1]
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    assert s.end_reason == "client-closed"
    refused = [e for e in env.svc.audit_events() if e.event == "session.watch.refused"]
    assert {e.actor for e in refused} >= {"alice", "carol", "bob"}
    assert "session.watch.start" not in [e.event for e in audited(env, sid)]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('moderation = "bogus"\nmoderators = ["role:approver"]\n', 'moderation must be "none" or "watch"'),
        ('moderation = "watch"\n', "needs moderators"),
        ('moderation = "watch"\nmoderators = ["role:nope"]\n', "unknown role"),
    ],
)
def test_policy_check_names_the_line_of_a_bad_moderation(extra: str, problem: str) -> None:
    text = POLICY.split("moderators")[0] + extra
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert problem in info.value.problem
    assert info.value.line is not None and info.value.line > 10


def test_moderated_by_finds_the_grants_rule() -> None:
    p = parse_policy(POLICY)
    assert p.moderated_by("watched") == ("role:approver", "role:admin")
    assert p.moderated_by("gone") == ()


def test_a_moderator_coming_back_within_the_grace_releases_held_input(env: Env) -> None:
    async def run() -> str:
        conn, proc, out, err, sid = await operator(env)
        mconn, _, _, _ = await watch(env, "bob", sid)
        await err.until("the session starts")
        mconn.abort()  # gone without a word: counts as leaving
        await err.until("input is held")
        proc.stdin.write("echo BACK-$((3*3))\r")
        await asyncio.sleep(0.5)
        assert "BACK-9" not in out.text
        mconn2, mproc2, mout2, _ = await watch(env, "bob", sid)
        await out.until("BACK-9")  # held, not lost: sent once a moderator watches again
        await mout2.until("BACK-9")
        await asyncio.sleep(GRACE + 1)
        assert "no moderator watched" not in err.text  # the grace was called off
        mproc2.stdin.write("q")
        await mproc2.wait_closed()
        mconn2.close()
        await proc.wait_closed()
        conn.close()
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    assert s.end_reason == "moderation-lapsed"
    ends = [e for e in audited(env, sid) if e.event == "session.watch.end"]
    assert [e.fields["how"] for e in ends] == ["left", "left"]


def test_the_session_ending_while_watched_ends_the_view_and_is_recorded(env: Env) -> None:
    async def run() -> str:
        conn, proc, _out, err, sid = await operator(env)
        mconn, mproc, _mout, _ = await watch(env, "bob", sid)
        await err.until("the session starts")
        proc.stdin.write("exit\r")
        await proc.wait_closed()
        await asyncio.wait_for(mproc.wait_closed(), 10)
        mconn.close()
        conn.close()
        return sid

    sid = asyncio.run(run())
    s = ended(env, sid)
    frames = event_frames(env, s.path)
    [end] = [e for e in frames if e.type == "moderation.watch.end"]
    assert end.fields["how"] == "session-ended" and end.fields["moderator"] == "bob"
    [audit_end] = [e for e in audited(env, sid) if e.event == "session.watch.end"]
    assert audit_end.fields["how"] == "session-ended"


def test_openssh_moderator_joins_and_terminates(env: Env) -> None:
    """Stock OpenSSH as the moderator: ``ssh -tt zsp@BASTION watch SESSION``, then ``T``."""

    async def run() -> tuple[str, str]:
        conn, proc, out, err, sid = await operator(env)
        ssh = await asyncio.create_subprocess_exec(
            *env.ssh_argv("bob", "zsp", "-tt"),
            "watch",
            sid,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert ssh.stdin is not None and ssh.stdout is not None
        await err.until("the session starts")
        proc.stdin.write("echo VIA-$((7+7))\r")
        await out.until("VIA-14")
        seen = b""
        deadline = time.monotonic() + 10
        while b"VIA-14" not in seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                seen += await asyncio.wait_for(ssh.stdout.read(4096), 0.5)
        ssh.stdin.write(b"T")
        await ssh.stdin.drain()
        await err.until("moderator bob ended this session")
        await proc.wait_closed()
        rest, _ = await asyncio.wait_for(ssh.communicate(), 10)
        conn.close()
        return sid, (seen + rest).decode(errors="replace")

    sid, shown = asyncio.run(run())
    assert "VIA-14" in shown and "WATCH alice" in shown
    assert ended(env, sid).end_reason == "moderator-terminated"
