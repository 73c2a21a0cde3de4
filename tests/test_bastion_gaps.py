"""Gaps at the bastion found in review (issue 7), through the real `zsp serve` with real clients:
stock scp/sftp clients are refused however the server program is spelled, refused sessions on
unknown targets are audited (capped per connection), a session's recording has a size limit,
and new sessions are refused when the recordings disk is short of space."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

from recorder import (
    AsyncRecorder,
    FileSink,
    FrameKind,
    RecordingFailed,
    RecordingLimitReached,
    RecordingWriter,
    SessionMeta,
    SigningKey,
    load_trusted_keys,
)
from replay import Outcome, load
from tests.bastion_env import Env, make_env
from zsp_tui.access import Actor
from zsp_tui.bastion.transfer import transfer_program
from zsp_tui.config import load_settings
from zsp_tui.exceptions import ConfigError
from zsp_tui.models import RequestState

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def configure(env: Env, **bastion: int) -> None:
    env.configure("[bastion]\n" + "".join(f"{k} = {v}\n" for k, v in bastion.items()))


def events(env: Env, name: str):
    return [e for e in env.svc.audit_events() if e.event == name]


def client_opts(env: Env) -> list[str]:
    return [
        "-i",
        str(env.keys["alice"]),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={env.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]


# --- file transfer: which commands are the stock clients' servers -------------------------------


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("scp -t /tmp/x", "scp"),
        ("scp -f /etc/hostname", "scp"),
        ("/usr/bin/scp -t /tmp/x", "scp"),
        ("  scp   -t /tmp", "scp"),
        ("'scp' -t /tmp", "scp"),
        ("env scp -t /tmp", "scp"),
        ("env -i LC_ALL=C /usr/bin/scp -t .", "scp"),
        ("exec scp -t .", "scp"),
        ("command scp -t .", "scp"),
        ("LC_ALL=C scp -t .", "scp"),
        ("sftp-server", "sftp-server"),
        (SFTP_SERVER, "sftp-server"),
        ("/usr/libexec/sftp-server", "sftp-server"),
        ("/usr/libexec/openssh/sftp-server -e", "sftp-server"),
        ("/usr/lib/openssh//sftp-server", "sftp-server"),
        ("/usr/lib/openssh/../openssh/sftp-server", "sftp-server"),
        ("internal-sftp", "internal-sftp"),
        ("scp -t 'unbalanced", "scp"),
        ("echo scp", None),
        ("scpx -t .", None),
        ("/opt/scp-wrapper", None),
        ("ls /usr/lib/openssh/sftp-server", None),
        ("", None),
        (None, None),
    ],
)
def test_transfer_program(command: str | None, program: str | None) -> None:
    assert transfer_program(command) == program


def test_scp_legacy_mode_is_refused_and_audited(env: Env, tmp_path: Path) -> None:
    env.grant()
    src = tmp_path / "payload"
    src.write_bytes(b"secret\n")
    dest = tmp_path / "copied-legacy"
    p = subprocess.run(
        ["scp", "-O", "-P", str(env.port), *client_opts(env), str(src), f"local@127.0.0.1:{dest}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and not dest.exists()
    assert "file transfer runs through zsp over SFTP only" in p.stderr
    refused = events(env, "channel.refused")
    assert refused and refused[-1].fields["kind"] == "scp" and refused[-1].fields["detail"].startswith("scp -t")
    assert env.svc.sessions() == []


def test_scp_default_sftp_mode_is_refused(env: Env, tmp_path: Path) -> None:
    env.grant()
    src = tmp_path / "payload"
    src.write_bytes(b"secret\n")
    dest = tmp_path / "copied-sftp-mode"
    p = subprocess.run(
        ["scp", "-P", str(env.port), *client_opts(env), str(src), f"local@127.0.0.1:{dest}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The sftp subsystem needs a grant whose rule has file_transfer = true (tests/test_sftp.py),
    # and is never offered on the bastion's own `local` target.
    assert p.returncode != 0 and not dest.exists()
    assert "file transfer to the bastion itself is not offered" in p.stderr
    assert events(env, "channel.refused")[-1].fields["kind"] == "sftp"
    assert env.svc.sessions() == []


@pytest.mark.parametrize(
    "server",
    [
        SFTP_SERVER,
        "/usr/lib/openssh//sftp-server",
        "/usr/lib/openssh/../openssh/sftp-server",
        f"env {SFTP_SERVER}",
        f"LC_ALL=C {SFTP_SERVER}",
        f"exec {SFTP_SERVER} -e",
    ],
)
def test_sftp_with_any_spelling_of_the_server_is_refused(env: Env, tmp_path: Path, server: str) -> None:
    env.grant()
    src = tmp_path / "payload"
    src.write_bytes(b"secret\n")
    dest = tmp_path / "copied-by-sftp"
    batch = tmp_path / "batch"
    batch.write_text(f"put {src} {dest}\n")
    p = subprocess.run(
        ["sftp", "-P", str(env.port), *client_opts(env), "-s", server, "-b", str(batch), "local@127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and not dest.exists(), p.stderr
    refused = events(env, "channel.refused")
    assert refused and refused[-1].fields["kind"] == "sftp" and refused[-1].fields["detail"] == server
    assert env.svc.sessions() == []


def test_commands_that_merely_mention_scp_still_run(env: Env) -> None:
    env.grant()
    p = env.ssh("alice", "local", "echo scp sftp-server")
    assert p.returncode == 0 and p.stdout.strip() == "scp sftp-server"


# --- refused sessions are audited, capped per connection ----------------------------------------


def test_unknown_target_is_refused_and_audited(env: Env) -> None:
    p = env.ssh("alice", "nosuch", "true")
    assert p.returncode == 1 and "no such target 'nosuch'" in p.stderr
    refused = events(env, "session.refused")
    assert len(refused) == 1
    e = refused[0]
    assert (e.actor, e.outcome, e.code) == ("alice", "failure", "ZSP2001W")
    assert e.fields["reason"] == "no-such-target" and e.fields["requested_target"] == "nosuch"


def test_login_at_unknown_target_is_audited_too(env: Env) -> None:
    p = env.ssh("alice", "root@nosuch", "true")
    assert p.returncode == 1
    assert events(env, "session.refused")[-1].fields["requested_target"] == "nosuch"


async def test_refused_sessions_are_audited_at_most_ten_per_connection(env: Env) -> None:
    async with asyncssh.connect("127.0.0.1", username="nosuch", **env.asyncssh_options("alice")) as conn:
        for _ in range(15):
            r = await conn.run("true", check=False)
            assert r.exit_status == 1
    assert len(events(env, "session.refused")) == 10
    async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
        for _ in range(12):  # no grant: also capped
            assert (await conn.run("true", check=False)).exit_status == 1
    refused = events(env, "session.refused")
    assert len(refused) == 20 and refused[-1].fields["reason"] == "no-grant"


# --- recording size limit -----------------------------------------------------------------------


def limited_env(tmp_path: Path, **bastion: int) -> Env:
    e = make_env(tmp_path)
    configure(e, **bastion)
    e.start()
    return e


def check_limited(env: Env, limit: int, stderr: str) -> None:
    assert "[zsp] this session reached its recording limit" in stderr
    s = env.svc.sessions()[-1]
    assert s.end_reason == "recording-limit" and s.head
    frames, report = load(s.path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.VALID and report.seal.reason == "recording-limit"
    data = sum(len(f.data) for f in frames if f.kind in (FrameKind.OUTPUT, FrameKind.INPUT))
    assert data <= limit
    assert "session.recording_limit" in [f.data.type for f in frames if f.kind is FrameKind.EVENT]
    end = events(env, "session.end")[-1]
    assert end.fields["reason"] == "recording-limit" and end.session_id == s.id


def test_output_past_the_recording_limit_ends_the_session(tmp_path: Path) -> None:
    env = limited_env(tmp_path, max_recording_bytes=65536)
    try:
        env.grant()
        p = env.ssh("alice", "local", "head -c 2000000 /dev/zero; sleep 30")
        assert p.returncode != 0
        assert len(p.stdout) <= 65536  # nothing past the limit reached the operator either
        check_limited(env, 65536, p.stderr)
        # The limit is per session: the next one starts afresh.
        q = env.ssh("alice", "local", "echo again")
        assert q.returncode == 0 and q.stdout.strip() == "again"
    finally:
        env.stop()


def test_input_past_the_recording_limit_ends_the_session(tmp_path: Path) -> None:
    env = limited_env(tmp_path, max_recording_bytes=65536)
    try:
        env.grant()
        sink = tmp_path / "received"
        p = env.ssh("alice", "local", f"cat > {sink}; sleep 30", input="x" * 1_000_000)
        assert p.returncode != 0
        check_limited(env, 65536, p.stderr)
        # Unrecorded input never reached the target (which may not even have opened the file yet).
        assert not sink.exists() or sink.stat().st_size <= 65536
    finally:
        env.stop()


def test_interactive_session_past_the_recording_limit_ends(tmp_path: Path) -> None:
    env = limited_env(tmp_path, max_recording_bytes=8192)
    try:
        env.grant()
        p = env.ssh("alice", "local", extra=("-tt",), input="yes | head -c 100000\nsleep 30\nexit\n")
        check_limited(env, 8192, p.stderr)
    finally:
        env.stop()


# --- free space for recordings ------------------------------------------------------------------


def test_sessions_are_refused_when_the_recordings_disk_is_short_of_space(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    env = limited_env(tmp_path, min_free_bytes=free + (1 << 40))  # more than there is
    try:
        g = env.grant()
        before = set(env.data.recordings.iterdir())
        p = env.ssh("alice", "local", "echo should-not-run")
        assert p.returncode == 1 and "should-not-run" not in p.stdout
        assert "short of disk space" in p.stderr
        e = events(env, "session.refused")[-1]
        assert e.fields["reason"] == "disk-space" and e.grant_id == g.id and e.target == "local"
        assert "required" in e.fields["detail"]
        assert env.svc.sessions() == [] and set(env.data.recordings.iterdir()) == before
    finally:
        env.stop()


def test_sessions_run_when_there_is_space(tmp_path: Path) -> None:
    env = limited_env(tmp_path, min_free_bytes=4096)
    try:
        env.grant()
        p = env.ssh("alice", "local", "echo ok")
        assert p.returncode == 0 and p.stdout.strip() == "ok"
    finally:
        env.stop()


@pytest.mark.parametrize(
    "line", ["max_recording_bytes = 100", "max_recording_bytes = true", "min_free_bytes = -1", 'min_free_bytes = "1G"']
)
def test_bad_limits_are_config_errors(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "zsp.toml"
    cfg.write_text(f"[bastion]\n{line}\n")
    with pytest.raises(ConfigError, match=r"zsp.toml:2: .*must be an integer"):
        load_settings(cfg)


# --- the recorder's limit itself ----------------------------------------------------------------


async def test_async_recorder_limit_is_exact_and_leaves_a_sealable_recording(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "limited.zsprec"
    errors: list[RecordingFailed] = []
    rec = AsyncRecorder(
        RecordingWriter(FileSink(path), key, SessionMeta(user="a", target="t", login="l"), autoflush=False),
        on_error=errors.append,
        max_bytes=100,
    )
    rec.output(b"o" * 60)
    rec.input(b"i" * 40)  # exactly at the limit: accepted
    assert rec.recorded_bytes == 100
    with pytest.raises(RecordingLimitReached) as caught:
        rec.output(b"x")
    assert caught.value.limit == 100 and isinstance(caught.value, RecordingFailed)
    with pytest.raises(RecordingLimitReached):
        rec.input(b"y")  # and every later call, either way
    assert len(errors) == 1 and errors[0] is caught.value
    assert rec.failed is None  # the recording is intact
    rec.event("session.recording_limit", "limit reached", limit=100)
    await rec.close(None, "recording-limit")
    frames, report = load(path, [key.public])
    assert report.outcome is Outcome.VALID and report.seal.reason == "recording-limit"
    assert b"".join(f.data for f in frames if f.kind in (FrameKind.OUTPUT, FrameKind.INPUT)) == b"o" * 60 + b"i" * 40


async def test_async_recorder_limit_counts_across_calls(tmp_path: Path, key: SigningKey) -> None:
    rec = AsyncRecorder(
        RecordingWriter(FileSink(tmp_path / "r.zsprec"), key, SessionMeta(user="a", target="t", login="l")),
        max_bytes=1000,
    )
    for _ in range(10):
        rec.output(b"z" * 100)
    with pytest.raises(RecordingLimitReached):
        rec.output(b"z")
    await rec.close(0, "exit")
    with pytest.raises(ValueError, match="max_bytes"):
        AsyncRecorder(
            RecordingWriter(FileSink(tmp_path / "s.zsprec"), key, SessionMeta(user="a", target="t", login="l")),
            max_bytes=-1,
        )


# --- control commands over SSH: refusals by the wrong user are audited ----------------------------


def test_wrong_user_control_commands_are_refused_and_audited(env: Env) -> None:
    r = env.svc.request(Actor("alice"), "local", None, timedelta(minutes=30), "test")
    p = env.ssh("bob", "zsp", f"cancel {r.id}")
    assert p.returncode == 1 and f"only alice can cancel {r.id}" in p.stderr and "Traceback" not in p.stderr
    p = env.ssh("alice", "zsp", f"approve {r.id}")
    assert p.returncode == 1 and "cannot approve their own request" in p.stderr
    refused = events(env, "access_request.refused")
    assert [(e.actor, e.via, e.fields["action"], e.grant_id) for e in refused] == [
        ("bob", "ssh", "cancel", r.id),
        ("alice", "ssh", "approve", r.id),
    ]
    assert env.svc.get(r.id).state is RequestState.PENDING
