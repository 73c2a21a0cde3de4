"""The review app through the bastion with nothing but OpenSSH: ``ssh -tt review@BASTION``.

The real OpenSSH client runs on the slave side of a PTY; the test is the reviewer's terminal on
the master side and reads what ssh draws through zsp's own terminal emulator (replay.Terminal).
The bastion is the real ``zsp serve`` (tests/bastion_env.py), the app the real ``zsp review``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replay import Terminal
from tests.bastion_env import Env, keygen, make_env
from zsp_tui.access import Actor
from zsp_tui.bastion.review import DEFAULT_TERM, REVIEW_USER, app_env, safe_term
from zsp_tui.models import Role

BAR = " zsp review "


def _add(env: Env, name: str, role: Role) -> None:
    env.keys[name] = keygen(env.root / f"{name}_ed25519", name)
    env.svc.add_user(Actor("alice"), name, frozenset({role}), [Path(f"{env.keys[name]}.pub").read_text()])


def _start(tmp_path: Path, bastion: str = "") -> Env:
    """alice (operator, admin), bob (approver), carol (reviewer), dave (operator only)."""
    env = make_env(tmp_path)
    _add(env, "carol", Role.REVIEWER)
    _add(env, "dave", Role.OPERATOR)
    if bastion:
        env.configure(f"[bastion]\n{bastion}")
    env.start()
    return env


@pytest.fixture
def rev(tmp_path: Path) -> Iterator[Env]:
    env = _start(tmp_path)
    yield env
    env.stop()


def review_pids(env: Env) -> set[int]:
    """Every running ``zsp_tui review`` process over ``env``'s data dir (from /proc; other tests
    and other people may run review apps of their own on this host)."""
    mine = f"--data={env.data.root}".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"zsp_tui" in argv and b"review" in argv and mine in argv and state != b"Z":
            pids.add(int(entry))
    return pids


def children_of(pid: int) -> set[int]:
    """Descendants of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(b")", 1)[1].split()[1])
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out.add(child)
                todo.append(child)
    return out


class Pty:
    """``argv`` on the slave side of a PTY of ``cols`` x ``rows`` (stderr apart); the test is the
    terminal on the master side, its screen a replay.Terminal fed with what is drawn."""

    def __init__(
        self, argv: list[str], *, cols: int = 100, rows: int = 30, term: str = "xterm-256color", **env: str
    ) -> None:
        self.master, self.slave = os.openpty()
        self.cols, self.rows = cols, rows
        self._winsize(cols, rows)
        self.screen = Terminal(cols, rows)
        self.out = b""
        self.proc = subprocess.Popen(
            argv,
            stdin=self.slave,
            stdout=self.slave,
            stderr=subprocess.PIPE,
            env={**os.environ, "TERM": term, **env},
            start_new_session=True,
        )

    def _winsize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, cols: int, rows: int) -> None:
        """What a terminal emulator does when its window changes: the new size, then SIGWINCH."""
        self.cols, self.rows = cols, rows
        self._winsize(cols, rows)
        self.screen.resize(cols, rows)
        self.proc.send_signal(signal.SIGWINCH)

    def _pump(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.out += data
        self.screen.feed(data)
        return bool(data)

    def lines(self) -> list[str]:
        return [self.screen.line(y) for y in range(self.screen.rows)]

    def wait_for(self, check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.lines()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen; screen:\n" + "\n".join(self.lines()))
            if self.proc.poll() is not None and not self._pump(0.1):
                raise AssertionError(
                    f"{what} not seen, ssh exited {self.proc.returncode}: {self.stderr()!r}\n" + "\n".join(self.lines())
                )
            self._pump(0.1)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._pump(0.1)
        if self.proc.poll() is None:
            raise AssertionError("ssh did not exit; screen:\n" + "\n".join(self.lines()))
        while self._pump(0.1):
            pass
        return self.proc.returncode

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        os.close(self.master)
        os.close(self.slave)


def review_ssh(env: Env, user: str, *extra: str, **kw: Any) -> Pty:
    """``ssh -tt ... review@127.0.0.1`` as ``user``, in a PTY."""
    return Pty(env.ssh_argv(user, REVIEW_USER, "-tt", *extra), **kw)


def drawn(lines: list[str]) -> bool:
    return lines[0].startswith(BAR) and "Sessions" in lines[0]


def wait_gone(env: Env, timeout: float = 60) -> set[int]:
    """The review apps over ``env``'s data dir still running after at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = review_pids(env)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = review_pids(env)
    return left


def bastion_review_children(env: Env) -> set[int]:
    assert env.proc is not None
    return children_of(env.proc.pid) & review_pids(env)


# --- opening, quitting, auditing ---------------------------------------------------------------


def test_a_reviewer_opens_the_app_over_plain_openssh_and_quits_with_q(rev: Env) -> None:
    ssh = review_ssh(rev, "carol")
    try:
        ssh.wait_for(drawn, "the area bar")
        top = ssh.lines()[0]
        assert "carol (reviewer)" in top and "Audit" in top and "Requests" not in top
        assert len(bastion_review_children(rev)) == 1
        ssh.send(b"q")
        assert ssh.finish() == 0, ssh.stderr()
    finally:
        ssh.close()
    events = [e for e in rev.svc.audit_events() if e.event == "review.open"]
    assert [(e.actor, e.via) for e in events] == [("carol", "ssh")]
    logins = [e for e in rev.svc.audit_events() if e.event == "user.login" and e.actor == "carol"]
    assert logins and logins[-1].fields["ssh_user"] == "review"
    # The review channel is no recorded session and needed no grant.
    assert rev.svc.sessions() == []
    assert not any(e.event.startswith("session.") for e in rev.svc.audit_events())
    assert wait_gone(rev) == set()


def test_an_operator_without_a_review_role_gets_one_line_and_no_app(rev: Env) -> None:
    ssh = review_ssh(rev, "dave")
    try:
        code = ssh.finish()
        err = ssh.stderr()
    finally:
        ssh.close()
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [
        "zsp: dave may not open the review app: it needs the reviewer, approver or admin role (has: operator)"
    ], err
    assert BAR.encode() not in ssh.out
    assert review_pids(rev) == set()
    refused = [e for e in rev.svc.audit_events() if e.event == "review.refused"]
    assert [(e.actor, e.via, e.outcome, e.fields["reason"]) for e in refused] == [("dave", "ssh", "failure", "role")]
    assert not [e for e in rev.svc.audit_events() if e.event == "review.open"]


def test_without_a_terminal_the_hint_says_ssh_t(rev: Env) -> None:
    plain = rev.ssh("carol", REVIEW_USER, extra=("-T",))
    assert plain.returncode != 0
    assert plain.stderr.strip().splitlines() == [
        f"zsp: the review app needs a terminal; open it with: ssh -t -p {rev.port} review@127.0.0.1"
    ], plain.stderr
    command = rev.ssh("carol", REVIEW_USER, "sessions")
    assert command.returncode != 0
    assert command.stderr.strip().splitlines() == [
        f"zsp: the review app takes no command; open it with: ssh -t -p {rev.port} review@127.0.0.1"
    ], command.stderr
    # Even with a terminal, a command is not run (nor given to the app as arguments).
    forced = rev.ssh("carol", REVIEW_USER, "zsp review --start=audit", extra=("-tt",))
    assert forced.returncode != 0 and "takes no command" in forced.stderr
    reasons = [e.fields["reason"] for e in rev.svc.audit_events() if e.event == "review.refused"]
    assert reasons == ["no-pty", "command", "command"]
    assert not [e for e in rev.svc.audit_events() if e.event == "review.open"]


def test_a_window_change_reaches_the_app(rev: Env) -> None:
    ssh = review_ssh(rev, "carol", cols=100, rows=30)
    try:
        ssh.wait_for(drawn, "the area bar")
        ssh.wait_for(lambda lines: "q quit" in lines[0], "the bar's end at 100 columns")
        # The footer sits on the last row: at 30 rows, then at 40 once the app knows the new size.
        ssh.wait_for(lambda lines: "Quit" in lines[29], "the footer on row 30")
        ssh.resize(120, 40)
        ssh.wait_for(lambda lines: "Quit" in lines[39], "the footer on row 40 after the resize")
        ssh.resize(80, 24)
        ssh.wait_for(lambda lines: "Quit" in lines[23] and len(lines[0].rstrip()) <= 80, "a redraw at 80x24")
        ssh.send(b"q")
        assert ssh.finish() == 0
    finally:
        ssh.close()


def test_a_client_that_goes_away_takes_its_app_with_it(rev: Env) -> None:
    ssh = review_ssh(rev, "carol")
    try:
        ssh.wait_for(drawn, "the area bar")
        apps = bastion_review_children(rev)
        assert len(apps) == 1
        ssh.proc.kill()  # no goodbye: the TCP connection just closes
        ssh.proc.wait()
        assert wait_gone(rev) == set(), "the review app outlived its client"
    finally:
        ssh.close()
    assert bastion_review_children(rev) == set()


def test_removing_the_reviewer_ends_their_app(rev: Env) -> None:
    """The bastion drops connections whose user (or key) is removed: an open app goes with them."""
    ssh = review_ssh(rev, "carol")
    try:
        ssh.wait_for(drawn, "the area bar")
        assert len(bastion_review_children(rev)) == 1
        rev.svc.remove_user(Actor("alice"), "carol")
        assert ssh.finish() != 0
        assert wait_gone(rev) == set()
    finally:
        ssh.close()
    gone = [e for e in rev.svc.audit_events() if e.event == "user.disconnect"]
    assert [(e.actor, e.fields["reason"]) for e in gone] == [("carol", "user-removed")]


def test_stopping_the_bastion_ends_the_apps(tmp_path: Path) -> None:
    env = _start(tmp_path)
    ssh = review_ssh(env, "carol")
    try:
        ssh.wait_for(drawn, "the area bar")
        apps = bastion_review_children(env)
        assert len(apps) == 1
        env.stop()
        assert wait_gone(env) == set()
        assert ssh.finish() != 0
    finally:
        ssh.close()
        if env.proc is not None and env.proc.poll() is None:
            env.stop()


def test_review_apps_are_capped_per_user(tmp_path: Path) -> None:
    env = _start(tmp_path, "max_review_apps_per_user = 1\nmax_review_apps = 2\n")
    _add(env, "erin", Role.APPROVER)
    _add(env, "frank", Role.REVIEWER)
    first = review_ssh(env, "carol")
    opened: list[Pty] = [first]
    try:
        first.wait_for(drawn, "carol's first app")
        again = env.ssh("carol", REVIEW_USER, extra=("-tt",))
        assert again.returncode != 0
        assert again.stderr.strip().splitlines() == ["zsp: carol already has 1 review apps open (limit 1)"]
        # erin is within her own cap; the bastion's cap (2) is then full for frank.
        second = review_ssh(env, "erin")
        opened.append(second)
        second.wait_for(lambda lines: lines[0].startswith(BAR) and "Requests" in lines[0], "erin's app")
        third = env.ssh("frank", REVIEW_USER, extra=("-tt",))
        assert third.returncode != 0
        assert third.stderr.strip().splitlines() == [
            "zsp: the bastion already runs 2 review apps (limit); try again later"
        ]
        # A slot freed is a slot again.
        first.send(b"q")
        assert first.finish() == 0
        fourth = review_ssh(env, "frank")
        opened.append(fourth)
        fourth.wait_for(drawn, "frank's app once a slot is free")
        reasons = [(e.actor, e.fields["reason"]) for e in env.svc.audit_events() if e.event == "review.refused"]
        assert reasons == [("carol", "limit"), ("frank", "limit")]
    finally:
        for s in opened:
            s.close()
        env.stop()


# --- hostile client values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "term",
    ["xterm\nX", "x" * 10_000, "xterm;rm -rf ~", "../../../../etc/passwd", "\x1b]0;pwned\x07", "xterm-256color\x00"],
)
def test_a_hostile_term_is_replaced(term: str) -> None:
    assert safe_term(term) == DEFAULT_TERM
    assert app_env(Path("/data"), term)["TERM"] == DEFAULT_TERM


def test_the_app_environment_carries_nothing_of_the_bastions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTUAL", "devtools,debug")
    monkeypatch.setenv("TEXTUAL_LOG", "/tmp/x")
    monkeypatch.setenv("PYTHONSTARTUP", "/tmp/evil.py")
    monkeypatch.setenv("PYTHONINSPECT", "1")
    env = app_env(Path("/data"), "screen-256color", {"COLORTERM": "truecolor", "TEXTUAL": "devtools"})
    assert not any(k.startswith("TEXTUAL") for k in env)
    assert {k for k in env if k.startswith("PYTHON")} == {"PYTHONPATH", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE"}
    assert env["TERM"] == "screen-256color" and env["COLORTERM"] == "truecolor"
    assert env["LC_ALL"].endswith("UTF-8") and env["ZSP_DATA"] == "/data"
    assert "COLORTERM" not in app_env(Path("/data"), None, {"COLORTERM": "\x1b[2J"})


def test_a_hostile_term_over_ssh_still_gets_a_working_app(rev: Env) -> None:
    """OpenSSH sends $TERM as it is in the PTY request; the app gets the default instead."""
    ssh = review_ssh(rev, "carol", term="xterm\nX" + "y" * 10_000)
    try:
        ssh.wait_for(drawn, "the area bar")
        apps = bastion_review_children(rev)
        assert len(apps) == 1
        (pid,) = apps
        environ = dict(
            item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
        )
        assert environ[b"TERM"] == DEFAULT_TERM.encode()
        assert not any(k.startswith(b"TEXTUAL") for k in environ)
        ssh.send(b"q")
        assert ssh.finish() == 0
    finally:
        ssh.close()


# --- the demo -------------------------------------------------------------------------------------


def test_the_demo_review_steps_paste_as_printed(tmp_path: Path) -> None:
    """`zsp serve --demo`'s review step, both lines pasted into a shell in a terminal: through the
    bastion and on the host, the approver (a reviewer too in the demo) sees the app with Sessions
    and Requests."""
    from tests.test_first_hour import Demo

    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    Path(home["HOME"]).mkdir()
    demo = Demo([], home)
    try:
        over_ssh, on_host = demo.steps()[7:9]  # step 5
        assert over_ssh.startswith("ssh -t -F ") and over_ssh.endswith(" review@zsp-approver"), demo.text
        assert on_host.startswith("zsp review --data ") and on_host.endswith(" --as demo-approver"), demo.text
        # `zsp` is this checkout's CLI, as tests/test_first_hour.py's shell() has it; stderr is the
        # terminal too, as in a real one (Textual draws on stderr; Pty keeps stderr apart)
        zsp = f'exec 2>&1\nzsp() {{ "{sys.executable}" -m zsp_tui "$@"; }}\n'
        for step in (over_ssh, on_host):
            app = Pty(["bash", "-c", zsp + step], PYTHONPATH=str(Path(__file__).resolve().parent.parent), **home)
            try:
                # The roles come with the first store read: wait for them rather than the first paint.
                app.wait_for(
                    lambda lines: drawn(lines) and "demo-approver (approver, reviewer)" in lines[0],
                    "the demo approver's app, with its roles",
                )
                app.send(b"q")
                assert app.finish() == 0
            finally:
                app.close()
    finally:
        demo.stop()


def test_the_caps_are_settings_checked_like_the_others(tmp_path: Path) -> None:
    from zsp_tui.config import load_settings
    from zsp_tui.exceptions import ConfigError

    cfg = tmp_path / "zsp.toml"
    cfg.write_text("[bastion]\nmax_review_apps_per_user = 3\nmax_review_apps = 40\n")
    assert load_settings(cfg).bastion == {"max_review_apps_per_user": 3, "max_review_apps": 40}
    for bad in ("max_review_apps = 0", "max_review_apps_per_user = -1", 'max_review_apps = "2"'):
        cfg.write_text(f"[bastion]\n{bad}\n")
        with pytest.raises(ConfigError, match="must be an integer"):
            load_settings(cfg)


async def test_hostile_pty_requests_cannot_break_the_relay(rev: Env) -> None:
    """A client other than OpenSSH can send any terminal type and any window size (32 bits): the
    app gets the default TERM and a clamped size, and the bastion stays up for the next one."""
    import asyncio

    import asyncssh

    term = "\x1b]0;pwned\x07" + "x" * 10_000
    opts = rev.asyncssh_options("carol")
    async with asyncssh.connect("127.0.0.1", username=REVIEW_USER, **opts) as conn:
        proc = await conn.create_process(term_type=term, term_size=(70_000, 30), encoding=None)
        screen = Terminal(1000, 30)
        seen = b""

        async def until(check, what: str) -> None:
            nonlocal seen
            deadline = asyncio.get_running_loop().time() + 60
            while not check():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise AssertionError(f"{what} not seen: {seen[-300:]!r}")
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(proc.stdout.read(65536), min(left, 1))
                    seen += data
                    screen.feed(data)

        await until(lambda: screen.line(0).startswith(BAR), "the area bar")
        (pid,) = bastion_review_children(rev)
        size = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"TERM=" + DEFAULT_TERM.encode() + b"\0" in size and b"pwned" not in size
        proc.change_terminal_size(0, 0)  # nonsense: the defaults, 80x24
        proc.change_terminal_size(70_000, 70_000)  # too large for TIOCSWINSZ: clamped
        proc.change_terminal_size(90, 20)
        screen.resize(90, 20)
        await until(lambda: "Quit" in screen.line(19), "the footer on row 20")
        proc.stdin.write(b"q")
        result = await asyncio.wait_for(proc.wait(), 30)
        assert result.exit_status == 0
    assert rev.proc is not None and rev.proc.poll() is None
    assert rev.ssh("carol", REVIEW_USER, extra=("-T",)).returncode == 1  # still answering
