"""What a session leaves behind when it ends: nothing. Real `zsp serve`, a real sshd target, real
OpenSSH and asyncssh clients.

- Every session closes its target connection or PTY, whichever way it ends: hundreds of sessions
  bring the bastion's descriptor count and the target sshd's session count back where they were.
- A command is stopped on revoke and expiry, on ``local`` and on a remote sshd, with or without a
  PTY, even one that ignores HUP and TERM or never writes a byte: its pid is checked gone.
- Removing a key or a user ends the connections that logged in with it, sessions and all, and an
  open connection cannot run control commands any more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

from recorder import load_trusted_keys
from replay import Outcome, verify
from tests.bastion_env import Env, keygen, make_env
from tests.sshd import Sshd, start_sshd
from zsp_tui.access import Actor
from zsp_tui.models import Role

# --- fixtures and /proc probes -------------------------------------------------------------------


def wait_for(cond, timeout: float = 10.0, step: float = 0.02):
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


def _stats() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, fields after the command name) for every process, from /proc/PID/stat."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        yield int(name), stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def target_sessions(sshd: Sshd | None) -> int:
    """Connections the target sshd is serving: the listener forks one child per connection."""
    assert sshd is not None
    listener = str(sshd.proc.pid).encode()
    return sum(1 for _, f in _stats() if f[1] == listener and f[0] != b"Z")


def bastion_fds(env: Env) -> int:
    assert env.proc is not None
    return len(os.listdir(f"/proc/{env.proc.pid}/fd"))


def read_pids(path: Path, count: int = 1) -> list[int]:
    """The pids a remote or local command wrote to ``path`` (waits until it has)."""

    def ready() -> list[int] | None:
        try:
            pids = [int(x) for x in path.read_text().split()]
        except (OSError, ValueError):
            return None
        return pids if len(pids) == count else None

    pids = wait_for(ready, 20)
    assert pids, f"the command never wrote its pid to {path}"
    return pids


def session_of(env: Env, count: int = 1):
    return wait_for(lambda: len(env.svc.sessions()) >= count and env.svc.sessions()[-1])


def ended(env: Env, session_id: str):
    s = wait_for(lambda: (x := env.svc.session(session_id)) is not None and x.ended_at is not None and x)
    assert s, "the session never ended"
    return s


def sealed_with(env: Env, path: str, reason: str) -> None:
    report = verify(path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.VALID and report.seal is not None and report.seal.reason == reason


# --- 3. no leaked descriptors, PTYs or target sessions -------------------------------------------


async def test_hundreds_of_sessions_leave_no_descriptor_or_target_session(remote_env: Env) -> None:
    env = remote_env
    env.grant("srv")
    env.grant("local")
    opts = env.asyncssh_options("alice")

    async def run(user: str, command: str, *, pty: bool = False) -> int | None:
        async with asyncssh.connect("127.0.0.1", username=user, **opts) as conn:
            r = await conn.run(command, check=False, term_type="xterm" if pty else None)
            return r.exit_status

    async def batch(user: str, command: str, n: int, *, pty: bool = False, parallel: int = 5) -> list[int | None]:
        """``n`` sessions over ``parallel`` connections, each running its share in turn (few enough
        at once for sshd's MaxStartups, which drops connections beyond 10 unauthenticated)."""

        async def conn_runs(k: int) -> list[int | None]:
            async with asyncssh.connect("127.0.0.1", username=user, **opts) as conn:
                out = []
                for _ in range(k):
                    r = await conn.run(command, check=False, term_type="xterm" if pty else None)
                    out.append(r.exit_status)
                return out

        groups = await asyncio.gather(*(conn_runs(n // parallel) for _ in range(parallel)))
        return [s for g in groups for s in g]

    async def abandoned(user: str) -> None:
        """The operator leaves while the command runs (the client-closed path)."""
        async with asyncssh.connect("127.0.0.1", username=user, **opts) as conn:
            proc = await conn.create_process("echo up; sleep 300")
            line = await proc.stdout.readline()
            if line != "up\n":  # say why (a refusal is on stderr, with an exit status)
                proc.stdin.write_eof()
                err = await proc.stderr.read()
                await proc.wait_closed()
                raise AssertionError(f"{user}: {line!r}, exit {proc.exit_status}, stderr {err!r}, bastion {env.output}")
            proc.close()

    # Warm up every path once, then take the baseline.
    await run("srv", "true")
    await run("local", "true")
    await run("local", "true", pty=True)
    await abandoned("srv")
    await abandoned("local")
    await asyncio.to_thread(wait_for, lambda: target_sessions(env.sshd) == 0, 3.0)
    await asyncio.sleep(0.5)
    fds, targets = bastion_fds(env), target_sessions(env.sshd)

    assert await batch("srv", "echo hi", 100) == [0] * 100
    assert await batch("local", "exit 3", 50) == [3] * 50
    assert await batch("local", "tty >/dev/null", 50, pty=True) == [0] * 50
    for _ in range(2):
        await asyncio.gather(*(abandoned("srv") for _ in range(5)), *(abandoned("local") for _ in range(5)))

    # Every session ended; nothing is left open on either side.
    sessions = await asyncio.to_thread(env.svc.sessions)
    assert len(sessions) == 5 + 220
    await asyncio.to_thread(wait_for, lambda: all(s.ended_at for s in env.svc.sessions()))
    assert await asyncio.to_thread(wait_for, lambda: target_sessions(env.sshd) == targets), target_sessions(env.sshd)
    assert await asyncio.to_thread(wait_for, lambda: bastion_fds(env) <= fds), (bastion_fds(env), fds)


_SLOW_GRANT_CHECK = """\
import time
from zsp_tui.access import AccessService

_standing = AccessService.standing_grants


def _slow(self, ids):
    time.sleep(1.0)  # a busy store: the grant watcher waits on its answer
    return _standing(self, ids)


AccessService.standing_grants = _slow
"""


async def test_a_session_admitted_while_the_grant_watcher_asks_the_store_is_not_ended(
    tmp_path: Path,
) -> None:
    """The watcher asks the store about the grants of the sessions live when it asks; a session
    admitted while it waits (its grant checked at admission) must not be judged by that answer,
    which lacks its grant: it was ended as "grant inactive" (seen under load, a full run)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_GRANT_CHECK)
    env = make_env(tmp_path / "env", with_sshd=True)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env.start(prefix=("env", f"PYTHONPATH={path}"))
    try:
        env.grant("srv")
        env.grant("local")
        opts = env.asyncssh_options("alice")
        async with asyncssh.connect("127.0.0.1", username="srv", **opts) as first:
            held = await first.create_process("echo up; sleep 60")
            assert await held.stdout.readline() == "up\n"  # a session the watcher asks about
            sessions = []
            async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
                for _ in range(4):  # each admitted at some point of a slow check: most inside one
                    proc = await conn.create_process("echo up; sleep 60")
                    assert await proc.stdout.readline() == "up\n"
                    sessions.append(proc)
                    await asyncio.sleep(0.3)
                await asyncio.sleep(3)  # two more checks, each lasting a second
                for proc in sessions:
                    assert proc.exit_status is None and not proc.stdout.at_eof(), await proc.stderr.read()
        assert not [line for line in env.output if "inactive" in line], env.output
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()


# --- 4. revoke and expiry stop the command, remote and local -------------------------------------


def unprivileged_login() -> str | None:
    """A local account with a shell to log in to the target as, other than root: sshd honours the
    SSH ``signal`` request only for non-root logins (no privilege separation after a root login)."""
    for pw in pwd.getpwall():
        if 1000 <= pw.pw_uid < 65534 and pw.pw_shell.endswith("sh") and os.path.exists(pw.pw_shell):
            return pw.pw_name
    return None


@dataclasses.dataclass(frozen=True)
class Remote:
    """A target on a real sshd, reached as ``login``."""

    target: str
    login: str
    sshd: Sshd


@pytest.fixture(params=["user", "root"])
def remote(request: pytest.FixtureRequest, remote_env: Env) -> Iterator[Remote]:
    """``root``: the environment's sshd, logged in to as the current user (root in CI). ``user``: a
    second sshd (UsePAM, so that a password-locked account may log in with a certificate) reached
    as an unprivileged account; skipped if the machine has none."""
    env = remote_env
    assert env.sshd is not None
    if os.getuid() != 0:
        pytest.skip("the test sshd can only log in as root")
    if request.param == "root":
        yield Remote("srv", "root", env.sshd)
        return
    login = unprivileged_login()
    if login is None:
        pytest.skip("no unprivileged account with a shell to log in to the target as")
    ca_line = Path(f"{env.data.ca_key_path}.pub").read_text().strip()
    sshd = start_sshd(env.root / "sshd-user", trusted_ca=ca_line, options=("UsePAM yes",))
    try:
        srv = env.svc.target("srv")
        env.svc.add_target(
            Actor("alice"),
            dataclasses.replace(srv, name="srv-user", port=sshd.port, logins=(login,),
                                host_key=" ".join(sshd.host_key_pub.split()[:2])),
        )
        yield Remote("srv-user", login, sshd)
    finally:
        sshd.stop()


def start_remote(env: Env, remote: Remote, command: str, *, pty: bool, eof: bool = False) -> subprocess.Popen[bytes]:
    """``eof``: the operator sends end-of-input at once (``ssh -n``, ``< /dev/null``, most scripts)."""
    ssh_user = f"{remote.login}@{remote.target}"
    extra = ("-tt",) if pty else ("-T", "-n") if eof else ("-T",)
    return subprocess.Popen([*env.ssh_argv("alice", ssh_user, *extra), command],
                            stdin=subprocess.DEVNULL if eof else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_line_pids(client: subprocess.Popen[bytes], count: int) -> list[int]:
    """The pids the command printed first (then it writes nothing more)."""
    assert client.stdout is not None
    line = client.stdout.readline()
    pids = [int(x) for x in line.split()]
    assert len(pids) == count, line
    return pids


# Each prints the pids that must be gone afterwards, then never writes to its output again.
REMOTE_COMMANDS = {
    "plain": ("echo $$; exec sleep 300", 1, False),
    "ignores-hup-and-term": ("trap '' HUP TERM INT; sleep 300 & echo $$ $!; wait", 2, False),
    "closed-output": ("echo $$; exec >&- 2>&- </dev/null; exec sleep 300", 1, False),
    "own-process-group": ("set -m; trap '' HUP TERM; sleep 300 & echo $$ $!; wait", 2, False),
    "pty": ("echo $$; exec sleep 300", 1, True),
    "operator-sent-eof": ("echo $$; exec sleep 300", 1, False),  # ssh -n: our side of the channel is closed
}


@pytest.mark.parametrize("variant", sorted(REMOTE_COMMANDS))
def test_revoke_stops_the_command_on_a_remote_target(remote_env: Env, remote: Remote, variant: str) -> None:
    env = remote_env
    command, count, pty = REMOTE_COMMANDS[variant]
    g = env.grant(remote.target, remote.login)
    client = start_remote(env, remote, command, pty=pty, eof=variant == "operator-sent-eof")
    try:
        pids = first_line_pids(client, count)
        s = session_of(env)
        assert all(alive(p) for p in pids) and target_sessions(remote.sshd) == 1
        env.svc.revoke(Actor("bob"), g.id, "incident over")
        revoked = time.monotonic()
        assert wait_for(lambda: not any(alive(p) for p in pids), 2.0), "the remote command outlived the revoke"
        gone = time.monotonic() - revoked
        assert gone <= 2.0, gone
        assert wait_for(lambda: target_sessions(remote.sshd) == 0), "the target's sshd session stayed open"
        s = ended(env, s.id)
        assert s.end_reason == "revoked"
        sealed_with(env, s.path, "revoked")
        if variant in ("plain", "operator-sent-eof"):
            # sshd honours the signal request for non-root logins: the command got HUP (sent before
            # TERM), not KILL. For root it refuses it, and the KILL fallback does the job.
            assert s.exit_status == (-signal.SIGKILL if remote.login == "root" else -signal.SIGHUP)
        client.communicate(timeout=10)
    finally:
        client.kill()
        client.communicate()


@pytest.mark.parametrize("eof", [False, True], ids=["stdin-open", "operator-sent-eof"])
def test_expiry_stops_a_silent_remote_command(remote_env: Env, remote: Remote, eof: bool) -> None:
    env = remote_env
    g = env.grant(remote.target, remote.login, duration=timedelta(seconds=4))
    client = start_remote(env, remote, "echo $$; exec sleep 300", pty=False, eof=eof)
    try:
        (pid,) = first_line_pids(client, 1)
        s = session_of(env)
        assert g.ends_at is not None
        while time.time() < g.ends_at.timestamp():
            assert alive(pid), "the command ended before its grant did"
            time.sleep(0.05)
        assert wait_for(lambda: not alive(pid), 2.0), "the remote command outlived its grant"
        assert time.time() - g.ends_at.timestamp() <= 2.0
        assert wait_for(lambda: target_sessions(remote.sshd) == 0), "the target's sshd session stayed open"
        s = ended(env, s.id)
        assert s.end_reason == "expired"
        sealed_with(env, s.path, "expired")
    finally:
        client.kill()
        client.communicate()


def test_operator_leaving_stops_the_remote_command(remote_env: Env, remote: Remote) -> None:
    env = remote_env
    env.grant(remote.target, remote.login)
    client = start_remote(env, remote, "echo $$; exec sleep 300", pty=False)
    try:
        (pid,) = first_line_pids(client, 1)
        s = session_of(env)
        client.kill()  # the operator's connection drops
        assert wait_for(lambda: not alive(pid), 3.0), "the remote command outlived its operator's connection"
        assert wait_for(lambda: target_sessions(remote.sshd) == 0), "the target's sshd session stayed open"
        assert ended(env, s.id).end_reason == "client-closed"
    finally:
        client.kill()
        client.communicate()


LOCAL_COMMANDS = {
    # Job control puts the background job in a process group of its own: signalling the shell's
    # group alone would miss it.
    "own-process-group": ("set -m; trap '' HUP TERM; sleep 300 & echo $! > PIDFILE; wait", False),
    "ignores-hup-and-term": ("trap '' HUP TERM INT; sleep 300 & echo $$ $! > PIDFILE; wait", False),
    "pty": ("trap '' HUP TERM; sleep 300 & echo $! > PIDFILE; wait", True),
}


def local_pidfile(env: Env) -> Path:
    """A file the `local` session can write: when the bastion runs as root, `local` shells run as an
    unprivileged account (tests/test_defaults.py), which cannot enter the test's own directories."""
    shared = Path(tempfile.mkdtemp(prefix="zsp-local-"))
    shared.chmod(0o777)
    return shared / "pids"


@pytest.mark.parametrize("variant", sorted(LOCAL_COMMANDS))
def test_revoke_stops_every_process_of_a_local_session(env: Env, variant: str) -> None:
    command, pty = LOCAL_COMMANDS[variant]
    pidfile = local_pidfile(env)
    g = env.grant()
    count = 2 if "$$ $!" in command else 1
    extra = ("-tt",) if pty else ("-T",)
    client = subprocess.Popen([*env.ssh_argv("alice", "local", *extra), command.replace("PIDFILE", str(pidfile))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pids = read_pids(pidfile, count)
        s = session_of(env)
        env.svc.revoke(Actor("bob"), g.id)
        revoked = time.monotonic()
        assert wait_for(lambda: not any(alive(p) for p in pids), 2.0), "a local process outlived the revoke"
        assert time.monotonic() - revoked <= 2.0
        assert ended(env, s.id).end_reason == "revoked"
    finally:
        client.kill()
        client.communicate()


def test_a_local_session_that_exits_leaves_no_process_behind(env: Env) -> None:
    pidfile = local_pidfile(env)
    env.grant()
    p = env.ssh("alice", "local", f"sleep 300 >/dev/null 2>&1 </dev/null & echo $! > {pidfile}")
    assert p.returncode == 0, p.stderr
    (pid,) = read_pids(pidfile)
    assert wait_for(lambda: not alive(pid), 3.0), "a background process outlived its session"


# --- 8. removing a key or a user ends what was opened with it ------------------------------------


async def _control(conn: asyncssh.SSHClientConnection, command: str) -> tuple[int | None, str]:
    """Run a control command; (None, why) if the connection would not even open the channel."""
    try:
        r = await conn.run(command, check=False)
    except (asyncssh.Error, OSError) as exc:
        return None, repr(exc)
    return r.exit_status, str(r.stdout)


def disconnects(env: Env, count: int) -> list:
    """The ``user.disconnect`` audit events, once there are ``count`` (written after each disconnect)."""
    wait_for(lambda: len([e for e in env.svc.audit_events() if e.event == "user.disconnect"]) >= count)
    events = [e for e in env.svc.audit_events() if e.event == "user.disconnect"]
    assert len(events) == count, events
    return events


async def _closed(conn: asyncssh.SSHClientConnection, timeout: float = 5.0) -> bool:
    try:
        await asyncio.wait_for(conn.wait_closed(), timeout)
    except TimeoutError:
        return False
    return True


async def test_removing_a_key_ends_its_connections_sessions_and_control(env: Env) -> None:
    # alice has a second key; only connections made with the removed one end.
    second = keygen(env.root / "alice2_ed25519", "alice2")
    env.svc.add_key(Actor("alice"), "alice", Path(f"{second}.pub").read_text())
    g = env.grant()
    first_fp = next(k.fingerprint for k in env.svc.users()[0].keys if "alice2" not in k.comment)
    opts = env.asyncssh_options("alice")
    opts2 = {**opts, "client_keys": [str(second)]}
    pidfile = local_pidfile(env)
    async with (
        asyncssh.connect("127.0.0.1", username="zsp", **opts) as control,
        asyncssh.connect("127.0.0.1", username="local", **opts) as sessions,
        asyncssh.connect("127.0.0.1", username="zsp", **opts2) as other,
    ):
        status, out = await _control(control, "whoami")
        assert status == 0 and out.startswith("alice"), out
        proc = await sessions.create_process(f"echo $$ > {pidfile}; exec sleep 300")
        (pid,) = await asyncio.to_thread(read_pids, pidfile)
        s = await asyncio.to_thread(session_of, env)

        await asyncio.to_thread(env.svc.remove_key, Actor("alice"), "alice", first_fp)
        # At once, before the watcher's next look: the open control connection runs nothing more.
        status, out = await _control(control, "whoami")
        assert status != 0 and "alice" not in out, (status, out)
        # Its session is ended (recorded and sealed with the reason), then both connections.
        assert await _closed(control) and await _closed(sessions)
        await proc.wait_closed()
        s = await asyncio.to_thread(ended, env, s.id)
        assert s.end_reason == "key-removed"
        sealed_with(env, s.path, "key-removed")
        assert await asyncio.to_thread(wait_for, lambda: not alive(pid), 2.0)
        # The grant itself stands, and so does the connection made with the other key.
        assert env.svc.get(g.id).state.value == "approved"
        status, out = await _control(other, "whoami")
        assert status == 0 and out.startswith("alice"), out
    events = await asyncio.to_thread(disconnects, env, 2)
    assert {e.fields["reason"] for e in events} == {"key-removed"}
    assert {e.fields["fingerprint"] for e in events} == {first_fp}


@pytest.mark.parametrize("readd", [False, True], ids=["removed", "removed-and-added-again"])
async def test_removing_a_user_ends_their_connections(env: Env, readd: bool) -> None:
    mallory_pub = Path(f"{env.keys['mallory']}.pub").read_text()
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR}), [mallory_pub])
    env.grant(user="carol")
    opts = env.asyncssh_options("mallory")
    pidfile = local_pidfile(env)
    async with (
        asyncssh.connect("127.0.0.1", username="zsp", **opts) as control,
        asyncssh.connect("127.0.0.1", username="local", **opts) as sessions,
    ):
        proc = await sessions.create_process(f"trap '' HUP TERM; echo $$ > {pidfile}; sleep 300 & wait")
        (pid,) = await asyncio.to_thread(read_pids, pidfile)
        s = await asyncio.to_thread(session_of, env)

        def remove() -> None:
            env.svc.remove_user(Actor("alice"), "carol")
            if readd:  # same name, same key, at once: a different user, who did not log in on these
                env.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR, Role.ADMIN}), [mallory_pub])

        await asyncio.to_thread(remove)
        status, out = await _control(control, "whoami")
        assert status != 0 and "carol" not in out, (status, out)
        assert await _closed(control) and await _closed(sessions)
        await proc.wait_closed()
        s = await asyncio.to_thread(ended, env, s.id)
        assert s.end_reason in ("user-removed", "revoked")  # remove_user also revokes the grant
        assert await asyncio.to_thread(wait_for, lambda: not alive(pid), 2.0)
    events = await asyncio.to_thread(disconnects, env, 2)
    assert {e.fields["reason"] for e in events} == {"user-removed"}
