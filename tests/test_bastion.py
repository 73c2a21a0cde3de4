"""The bastion end to end: OpenSSH, paramiko and asyncssh clients -> `zsp serve` -> local PTY or a
real sshd (trusting the bastion's CA), with every session recorded and every grant enforced."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncssh
import paramiko
import pytest

from recorder import FrameKind, Resize, load_trusted_keys
from replay import Outcome, load, verify
from tests.bastion_env import Env, make_env
from tests.helpers import exec_sh, read_until
from zsp_tui.access import Actor
from zsp_tui.models import Role, SessionRecord


def frames_of(env: Env, path: str):
    return load(path, load_trusted_keys(env.data.allowed_signers_path))

def output_of(frames) -> bytes:
    return b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT)


def last_session(env: Env):
    sessions = env.svc.sessions()
    assert sessions, "no session was recorded"
    return sessions[-1]


def wait_for(cond, timeout: float = 10.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


# --- access ------------------------------------------------------------------------------------


def test_refused_without_a_grant(env: Env) -> None:
    p = env.ssh("alice", "local", "true")
    assert p.returncode == 1
    assert "has no active grant for" in p.stderr and "request local --login" in p.stderr
    assert env.svc.sessions() == []
    assert "session.refused" in [e.event for e in env.svc.audit_events()]


def test_unknown_key_cannot_log_in(env: Env) -> None:
    p = env.ssh("mallory", "zsp", "whoami")
    assert p.returncode == 255 and "Permission denied" in p.stderr
    failure = wait_for(lambda: [e for e in env.svc.audit_events() if e.event == "user.login.failure"])
    assert failure[0].outcome == "failure" and failure[0].fields["ssh_user"] == "zsp"
    assert failure[0].code == "ZSP1000W"
    env.ssh("alice", "zsp", "whoami")
    ok = wait_for(lambda: [e for e in env.svc.audit_events() if e.event == "user.login"])
    assert ok[0].actor == "alice" and ok[0].fields["ssh_user"] == "zsp"


def test_password_auth_is_not_offered(env: Env) -> None:
    p = env.ssh("alice", "zsp", "whoami", extra=("-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert p.returncode == 255 and "Permission denied (publickey)" in p.stderr


def test_exec_with_a_grant_is_recorded_with_its_exit_status(env: Env) -> None:
    g = env.grant()
    p = env.ssh("alice", "local", "echo out; echo err >&2; exit 7")
    assert p.returncode == 7 and p.stdout == "out\n" and p.stderr == "err\n"
    s = last_session(env)
    assert (s.user, s.target, s.grant_id, s.exit_status, s.end_reason) == ("alice", "local", g.id, 7, "exit")
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID and report.seal.exit_status == 7
    assert b"out\n" in output_of(frames) and b"err\n" in output_of(frames)
    assert frames[0].data.command == "echo out; echo err >&2; exit 7" and frames[0].data.grant_id == g.id
    # The audit log's session.end carries the recording's final chain head.
    end = [e for e in env.svc.audit_events() if e.event == "session.end"][-1]
    assert end.fields["head"] == report.head.hex() == s.head
    p = env.ssh("alice", "local", "kill -TERM $$")
    assert p.returncode == 255 and last_session(env).exit_status == -15


def test_pty_session_with_openssh(env: Env) -> None:
    env.grant()
    p = env.ssh("alice", "local", "stty size; tty", extra=("-tt",))
    assert p.returncode == 0 and "/dev/pts/" in p.stdout
    s = last_session(env)
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID and frames[0].data.term != ""


def test_control_commands_and_self_approval_over_ssh(env: Env) -> None:
    p = env.ssh("alice", "zsp", "request", "local", "--for", "10m", "--reason", "'fix INC-9'")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.split()[0]
    p = env.ssh("alice", "zsp", "approve", rid)
    assert p.returncode == 1 and "cannot approve their own request" in p.stderr
    p = env.ssh("bob", "zsp", "status")
    assert rid in p.stdout and "waiting for your approval" in p.stdout
    assert env.ssh("bob", "zsp", "approve", rid).returncode == 0
    grants = json.loads(env.ssh("alice", "zsp", "grants", "--active", "--json").stdout)
    assert [g["id"] for g in grants] == [rid]
    assert env.ssh("alice", "local", "true").returncode == 0
    who = env.ssh("bob", "zsp", "whoami").stdout
    assert who.startswith("bob roles=approver")
    bad = env.ssh("bob", "zsp", "frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    via = {e.event: e.via for e in env.svc.audit_events() if e.event.startswith("access_request")}
    assert via["access_request.create"] == "ssh" and via["access_request.approve"] == "ssh"


# --- PTY behaviour with paramiko (a second, independent client) ----------------------------------


def test_resize_and_utf8_with_paramiko(env: Env) -> None:
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect(
        "127.0.0.1",
        env.port,
        username="local",
        key_filename=str(env.keys["alice"]),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        chan = client.invoke_shell(term="xterm-256color", width=80, height=24)
        chan.send(b"stty size\r")
        buf = b""
        buf = read_until(chan, buf, b"24 80")
        chan.resize_pty(width=132, height=50)
        time.sleep(0.3)
        chan.send(b"stty size\r")
        buf = read_until(chan, buf, b"50 132")
        chan.send(b"printf '\\xe2\\x82\\xac%.0s' 1 2 3; echo\r")
        buf = read_until(chan, buf, "€€€".encode())
        chan.send(b"exit 3\r")
        assert chan.recv_exit_status() == 3
    finally:
        client.close()
    s = wait_for(lambda: (s := last_session(env)).ended_at and s)
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID
    assert Resize(132, 50) in [f.data for f in frames if f.kind is FrameKind.RESIZE]
    assert "€€€".encode() in output_of(frames)
    assert frames[0].data.term == "xterm-256color" and (frames[0].data.cols, frames[0].data.rows) == (80, 24)




# --- time box ------------------------------------------------------------------------------------


def _start_long_session(env: Env) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*env.ssh_argv("alice", "local", "-tt"), "sleep 60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_expiry_ends_the_session_within_a_second(env: Env) -> None:
    g = env.grant(duration=timedelta(seconds=4))
    client = _start_long_session(env)
    s = wait_for(lambda: env.svc.sessions() and env.svc.sessions()[-1])
    out, err = client.communicate(timeout=30)
    s = wait_for(lambda: (x := env.svc.session(s.id)).ended_at and x)
    assert s.end_reason == "expired"
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID and report.seal.reason == "expired"
    # Ended within 1 s of the grant's end, by the bastion's own (signed) clock.
    late = report.seal.wall_us / 1e6 - g.ends_at.timestamp()
    assert -0.1 <= late <= 1.0, late
    assert "expired" in out + err
    warnings = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "grant.warning"]
    assert warnings, "no in-band warning before the end"
    assert "grant.expired" in [f.data.type for f in frames if f.kind is FrameKind.EVENT]


def test_revoke_ends_the_session_within_a_second(env: Env) -> None:
    g = env.grant()
    client = _start_long_session(env)
    wait_for(lambda: env.svc.sessions())
    time.sleep(0.5)
    env.svc.revoke(Actor("bob"), g.id, "incident over")
    revoked_at = env.svc.get(g.id).ended_at
    client.communicate(timeout=30)
    s = wait_for(lambda: (x := env.svc.sessions()[-1]).ended_at and x)
    _, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID and report.seal.reason == "revoked" and s.end_reason == "revoked"
    assert report.seal.wall_us / 1e6 - revoked_at.timestamp() <= 1.0


# --- remote targets --------------------------------------------------------------------------------


def test_remote_target_with_a_short_lived_certificate(remote_env: Env) -> None:
    env = remote_env
    g = env.grant("srv")
    p = env.ssh("alice", "srv", "whoami; exit 5")
    assert p.returncode == 5, p.stderr
    s = last_session(env)
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID and s.target == "srv"
    assert output_of(frames).strip().decode() == env.svc.get(g.id).login
    # sshd logged the certificate: the key id names user, grant and session.
    log = (env.sshd.dir / "sshd.log").read_text()
    assert f"user=alice grant={g.id} session={s.id}" in log
    # A PTY session through the same path.
    p = env.ssh("alice", "srv", "tty", extra=("-tt",))
    assert p.returncode == 0 and "/dev/pts/" in p.stdout


def test_pinned_host_key_mismatch_refuses_the_session(tmp_path: Path) -> None:
    env = make_env(tmp_path, with_sshd=True, wrong_host_key=True)
    env.start()
    try:
        env.grant("srv")
        p = env.ssh("alice", "srv", "true")
        assert p.returncode == 255 and "does not match the pinned key" in p.stderr
        assert "upstream.host_key_mismatch" in [e.event for e in env.svc.audit_events()]
        s = last_session(env)
        frames, report = frames_of(env, s.path)
        assert report.outcome is Outcome.VALID and s.end_reason == "upstream-error"
        assert "upstream.host_key_mismatch" in [f.data.type for f in frames if f.kind is FrameKind.EVENT]
        assert "Accepted" not in (env.sshd.dir / "sshd.log").read_text()
    finally:
        env.stop()
        env.sshd.stop()


# --- hardening ---------------------------------------------------------------------------------------


async def test_forwarding_and_file_transfer_are_refused(env: Env) -> None:
    env.grant()
    async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        with pytest.raises(asyncssh.Error):
            async with conn.start_sftp_client():
                pass
        r = await conn.run("scp -t /tmp/x", check=False)
        assert r.exit_status == 1 and "file transfer" in r.stderr
    p = env.ssh("alice", "local", "echo $SSH_AUTH_SOCK", extra=("-A",))
    assert p.stdout.strip() == ""  # agent forwarding is off
    refused = [e.fields.get("kind") for e in env.svc.audit_events() if e.event == "channel.refused"]
    # (SFTP is refused by asyncssh itself, before any hook: no sftp_factory.)
    assert {"direct-tcpip", "tcpip-forward", "scp"} <= set(refused)


def test_strict_kex_is_required(env: Env) -> None:
    sock = __import__("socket").create_connection(("127.0.0.1", env.port))
    t = paramiko.Transport(sock, strict_kex=False)
    try:
        with pytest.raises((paramiko.SSHException, EOFError)):
            t.connect(username="zsp", pkey=paramiko.Ed25519Key.from_private_key_file(str(env.keys["alice"])))
            t.open_session().exec_command("whoami")
    finally:
        t.close()


def test_oversized_user_name_is_refused(env: Env) -> None:
    p = env.ssh("alice", "x" * 300, "true")
    assert p.returncode == 255


def test_environment_is_filtered(env: Env) -> None:
    env.grant()
    p = subprocess.run(
        [*env.ssh_argv("alice", "local", "-o", "SendEnv=LC_ZSP LD_PRELOAD"), "echo lc=$LC_ZSP ld=$LD_PRELOAD"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ZSP": "ok", "LD_PRELOAD": "/tmp/evil.so"},
        timeout=30,
    )
    assert p.stdout.strip() == "lc=ok ld="


# --- failure ----------------------------------------------------------------------------------------


def test_full_disk_ends_the_session_and_keeps_what_was_written(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.start(fsize=2 * 1024 * 1024)  # the bastion may not write any file past 2 MiB
    try:
        env.grant()
        p = env.ssh("alice", "local", "head -c 20000000 /dev/zero | od -v | head -c 20000000", timeout=60)
        assert p.returncode != 0
        assert "recording failed" in p.stderr
        s = wait_for(lambda: (x := last_session(env)).ended_at and x)
        assert s.end_reason == "recording-failed" and s.head is None
        report = verify(s.path, load_trusted_keys(env.data.allowed_signers_path))
        assert report.outcome is Outcome.INCOMPLETE and report.frames > 10
        assert len(p.stdout) < 3 * 1024 * 1024  # output stopped with the recording
        end = [e for e in env.svc.audit_events() if e.event == "session.end"][-1]
        assert end.outcome == "failure" and end.fields["reason"] == "recording-failed"
    finally:
        env.stop()


def test_unwritable_recordings_refuse_new_sessions(env: Env) -> None:
    env.grant()
    rec = env.data.recordings
    rec.rename(rec.with_name("recordings.away"))
    rec.write_text("not a directory")
    try:
        p = env.ssh("alice", "local", "echo should-not-run")
        assert p.returncode == 1 and "cannot be recorded" in p.stderr and "should-not-run" not in p.stdout
        assert "session.recording_failed" in [e.event for e in env.svc.audit_events()]
    finally:
        rec.unlink()
        rec.with_name("recordings.away").rename(rec)


def killed_mid_session(env: Env) -> SessionRecord:
    """Start ``env``'s bastion, open a busy session, ``kill -9`` the bastion; the session as stored."""
    env.start()
    env.grant()
    client = subprocess.Popen(
        [*env.ssh_argv("alice", "local"), "while true; do echo tick; sleep 0.01; done"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    s = wait_for(lambda: env.svc.sessions() and env.svc.sessions()[-1])
    wait_for(lambda: Path(s.path).stat().st_size > 4000)
    env.stop(signal.SIGKILL)
    client.wait(30)
    client.stdout.close()
    client.stderr.close()
    return s


def test_kill_9_of_the_bastion_leaves_intact_incomplete_recordings(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    report = verify(s.path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.INCOMPLETE and report.frames > 5 and report.signed_frames > 0


async def test_fifty_concurrent_sessions_all_recorded(env: Env) -> None:
    env.grant()
    opts = env.asyncssh_options("alice")

    async def one(i: int) -> tuple[int, str]:
        async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
            r = await conn.run(f"echo session-{i}; sleep 0.3; exit {i % 5}", check=False)
            return r.exit_status, r.stdout

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert [r[0] for r in results] == [i % 5 for i in range(50)]
    assert all(r[1] == f"session-{i}\n" for i, r in enumerate(results))
    sessions = await asyncio.to_thread(env.svc.sessions)
    assert len(sessions) == 50
    trusted = load_trusted_keys(env.data.allowed_signers_path)
    outputs = set()
    for s in sessions:
        frames, report = frames_of(env, s.path)
        assert report.outcome is Outcome.VALID
        outputs.add(output_of(frames))
    assert outputs == {f"session-{i}\n".encode() for i in range(50)}
    assert trusted


def test_per_source_failure_cap_and_per_user_session_cap(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_auth_failures_per_source = 3\nmax_sessions_per_user = 1\n")
    env.start()
    try:
        env.grant()
        # One session is allowed; a second concurrent one is refused.
        first = subprocess.Popen([*env.ssh_argv("alice", "local"), "sleep 5"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        wait_for(lambda: env.svc.sessions())
        p = env.ssh("alice", "local", "true")
        assert p.returncode == 1 and "open sessions (limit)" in p.stderr
        first.kill()
        first.communicate()
        # Three failed logins from this address, then even a good key is turned away.
        for _ in range(3):
            assert env.ssh("mallory", "zsp", "whoami").returncode == 255
        time.sleep(0.3)
        p = env.ssh("alice", "zsp", "whoami")
        assert p.returncode == 255 and "alice" not in p.stdout
    finally:
        env.stop()


def test_static_key_fallback_for_targets_without_the_ca(tmp_path: Path) -> None:
    from tests.bastion_env import keygen
    from tests.sshd import start_sshd

    env = make_env(tmp_path)
    static = keygen(tmp_path / "static_ed25519", "zsp-static")
    login = pwd.getpwuid(os.getuid()).pw_name
    sshd = start_sshd(tmp_path / "sshd2", authorized={login: Path(f"{static}.pub").read_text().strip()})
    try:
        p = subprocess.run([sys.executable, "-m", "zsp_tui", "target", "add", "legacy", "--host", "127.0.0.1",
                            "--port", str(sshd.port), "--login", login, "--scan", "--key", str(static),
                            "--as", "alice", "--data", str(env.data.root)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert env.svc.target("legacy").client_key == str(static)
        created = [e for e in env.svc.audit_events() if e.event == "target.create"][-1]
        assert created.fields["auth"] == "static-key"
        env.start()
        env.grant("legacy")
        p = env.ssh("alice", "legacy", "echo via-static-key")
        assert p.returncode == 0 and p.stdout == "via-static-key\n", p.stderr
        assert verify(last_session(env).path, load_trusted_keys(env.data.allowed_signers_path)).valid
    finally:
        env.stop()
        sshd.stop()


def test_sigterm_seals_live_sessions(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.start()
    env.grant()
    client = _start_long_session(env)
    s = wait_for(lambda: env.svc.sessions() and env.svc.sessions()[-1])
    time.sleep(0.3)
    env.stop(signal.SIGTERM)
    out, err = client.communicate(timeout=30)
    report = verify(s.path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.VALID and report.seal.reason == "shutdown"
    assert "shutting down" in out + err
    assert env.svc.session(s.id).end_reason == "shutdown"


def test_password_typed_on_a_remote_target_is_not_stored(remote_env: Env) -> None:
    env = remote_env
    env.grant("srv")
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="srv", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.get_transport().open_session()
        chan.get_pty(term="xterm", width=80, height=24)
        chan.exec_command("read -s -p 'Password: ' pw; echo; echo got ${#pw}; read -p 'Name: ' n; echo hi $n")
        buf = read_until(chan, b"", b"Password: ")
        chan.send(b"hunter2\r")
        buf = read_until(chan, buf, b"Name: ")
        chan.send(b"zed\r")
        buf = read_until(chan, buf, b"hi zed")
        assert chan.recv_exit_status() == 0
    finally:
        client.close()
    s = wait_for(lambda: (x := last_session(env)).ended_at and x)
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID
    typed = b"".join(f.data for f in frames if f.kind is FrameKind.INPUT)
    assert b"hunter2" not in typed and b"zed\r" in typed
    masked = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "input.masked"]
    assert masked and sum(m.fields["bytes"] for m in masked) == len(b"hunter2\r")


def _pty_client(env: Env, ssh_user: str = "local"):
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username=ssh_user, key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    return client


def test_masking_cannot_hide_commands_on_local(env: Env) -> None:
    env.grant()
    client = _pty_client(env)
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        # sh without readline reads in canonical mode: with echo off, that looks like a prompt.
        exec_sh(chan)  # at each shell's prompt: typeahead before bash starts reading can be flushed
        chan.send(b"stty -echo; echo RE''ADY\r")
        buf = read_until(chan, b"", b"READY")
        time.sleep(0.2)
        # Two lines in one chunk, then another line, all with echo off.
        chan.send(b"echo hidden-one\recho SHOWN-TWO\r")
        buf = read_until(chan, buf, b"SHOWN-TWO")
        chan.send(b"echo SHOWN-THREE\r")
        buf = read_until(chan, buf, b"SHOWN-THREE")
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    s = wait_for(lambda: (x := last_session(env)).ended_at and x)
    frames, report = frames_of(env, s.path)
    assert report.valid
    typed = b"".join(f.data for f in frames if f.kind is FrameKind.INPUT)
    assert b"echo SHOWN-TWO\r" in typed and b"echo SHOWN-THREE\r" in typed
    masked = [f.data.fields["bytes"] for f in frames if f.kind is FrameKind.EVENT and f.data.type == "input.masked"]
    assert masked == [len(b"echo hidden-one\r")]


def test_fake_prompt_on_a_remote_target_hides_one_line_at_most(remote_env: Env) -> None:
    env = remote_env
    env.grant("srv")
    client = _pty_client(env, "srv")
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        chan.send(b"printf 'Password: '\r")
        buf = read_until(chan, b"", b"Password: ")
        time.sleep(0.2)
        chan.send(b"echo one\recho VISIBLE\r")
        buf = read_until(chan, buf, b"VISIBLE")
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    s = wait_for(lambda: (x := last_session(env)).ended_at and x)
    frames, _ = frames_of(env, s.path)
    typed = b"".join(f.data for f in frames if f.kind is FrameKind.INPUT)
    assert b"echo VISIBLE\r" in typed


def test_revoke_ends_a_session_whose_target_closed_its_output(env: Env) -> None:
    g = env.grant()
    client = subprocess.Popen([*env.ssh_argv("alice", "local"), "exec >&- 2>&-; sleep 30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    s = wait_for(lambda: env.svc.sessions() and env.svc.sessions()[-1])
    time.sleep(0.5)
    env.svc.revoke(Actor("bob"), g.id)
    revoked = env.svc.get(g.id).ended_at
    client.communicate(timeout=30)
    s = wait_for(lambda: (x := env.svc.session(s.id)).ended_at and x)
    assert s.end_reason == "revoked"
    assert (s.ended_at - revoked).total_seconds() <= 2.0


async def test_session_cap_holds_under_concurrent_channels(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_sessions_per_user = 2\n")
    env.start()
    try:
        env.grant()
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            results = await asyncio.gather(*(conn.run("sleep 1", check=False) for _ in range(10)))
        ok = [r for r in results if r.exit_status == 0]
        refused = [r for r in results if "open sessions (limit)" in (r.stderr or "")]
        assert len(ok) == 2 and len(refused) == 8
    finally:
        env.stop()


def test_unauthenticated_connections_per_source_are_capped(tmp_path: Path) -> None:
    import socket

    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_unauthenticated_per_source = 3\n")
    env.start()
    idle = []
    try:
        for _ in range(3):
            idle.append(socket.create_connection(("127.0.0.1", env.port)))
        time.sleep(0.3)
        p = env.ssh("alice", "zsp", "whoami")
        assert p.returncode == 255 and "alice" not in p.stdout
        for s in idle:
            s.close()
        idle.clear()
        wait_for(lambda: env.ssh("alice", "zsp", "whoami").returncode == 0)
    finally:
        for s in idle:
            s.close()
        env.stop()


def test_a_failed_recording_does_not_stop_grant_enforcement_for_others(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    key = keygen_for(env, "carol")
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR}), [Path(f"{key}.pub").read_text()])
    env.keys["carol"] = key
    env.start(fsize=3 * 1024 * 1024)
    try:
        env.grant()
        g = env.grant(user="carol")
        # carol's session idles; alice's floods its recording past the file-size limit.
        carol = subprocess.Popen([*env.ssh_argv("carol", "local", "-tt"), "sleep 60"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: any(s.user == "carol" for s in env.svc.sessions()))
        p = env.ssh("alice", "local", "trap '' HUP; head -c 30000000 /dev/zero | od -v", timeout=60)
        assert "recording failed" in p.stderr
        env.svc.revoke(Actor("bob"), g.id)
        revoked = env.svc.get(g.id).ended_at
        carol.communicate(timeout=30)
        s = wait_for(lambda: next((x for x in env.svc.sessions() if x.user == "carol" and x.ended_at), None))
        assert s.end_reason == "revoked" and (s.ended_at - revoked).total_seconds() <= 2.0
    finally:
        env.stop()


def keygen_for(env: Env, name: str) -> Path:
    from tests.bastion_env import keygen

    return keygen(env.root / f"{name}_ed25519", name)


def test_lost_target_connection_is_recorded(remote_env: Env) -> None:
    env = remote_env
    env.grant("srv")
    client = subprocess.Popen([*env.ssh_argv("alice", "srv", "-tt"), "sleep 60"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    s = wait_for(lambda: env.svc.sessions() and env.svc.sessions()[-1])
    # Kill the sshd processes serving the session (children of the listening sshd), not the listener.
    children = wait_for(lambda: subprocess.run(["pgrep", "-P", str(env.sshd.proc.pid)], capture_output=True,
                                               text=True).stdout.split())
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    client.communicate(timeout=30)
    s = wait_for(lambda: (x := env.svc.session(s.id)).ended_at and x)
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID
    assert s.end_reason == "upstream-error" and report.seal.reason == "upstream-error"
    assert "upstream.error" in [f.data.type for f in frames if f.kind is FrameKind.EVENT]
    assert "upstream.error" in [e.event for e in env.svc.audit_events()]
