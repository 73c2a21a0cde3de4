"""Recorded file transfer end to end: stock OpenSSH ``sftp`` and ``scp`` -> `zsp serve` (the SFTP
proxy, bastion/sftp.py) -> a real sshd's SFTP, under a grant whose rule has ``file_transfer = true``;
the recording (read back with ``replay.load``, chain verified) holds every operation, each file's
sha256 and direction, and its content up to ``max_file_record_bytes``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from recorder import FrameKind, load_trusted_keys
from replay import Outcome, load
from tests.bastion_env import POLICY, Env, make_env
from zsp_tui.access import Actor

SFTP_POLICY = POLICY.replace("approvals = 1\n", "approvals = 1\nfile_transfer = true\n")


def _env(tmp_path: Path, policy: str, config: str = "") -> Env:
    env = make_env(tmp_path, with_sshd=True, sshd_options=("Subsystem sftp internal-sftp",))
    env.data.policy_path.write_text(policy)
    if config:
        env.configure(config)
    env.start()
    return env


@pytest.fixture
def sftp_env(tmp_path: Path) -> Iterator[Env]:
    env = _env(tmp_path, SFTP_POLICY)
    yield env
    env.stop()
    if env.sshd:
        env.sshd.stop()


def _opts(env: Env) -> list[str]:
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
        "-P",
        str(env.port),
    ]


def sftp(env: Env, batch: str, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sftp", *_opts(env), *extra, "-b", "-", "srv@127.0.0.1"],
        input=batch,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scp(env: Env, src: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scp", *_opts(env), src, dst], capture_output=True, text=True, timeout=60)


def events(env: Env, path: str) -> list:
    frames, report = load(path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.VALID, report
    return [f.data for f in frames if f.kind is FrameKind.EVENT]


def content(evs: list, path: str, direction: str) -> bytes:
    chunks = sorted(
        (e.fields["offset"], base64.b64decode(e.fields["data"]))
        for e in evs
        if e.type == "sftp.data" and e.fields["path"] == path and e.fields["direction"] == direction
    )
    return b"".join(c for _, c in chunks)


def files(evs: list) -> list[dict]:
    return [e.fields for e in evs if e.type == "sftp.file"]


def test_sftp_upload_and_download_are_recorded_with_hashes(sftp_env: Env, tmp_path: Path) -> None:
    env = sftp_env
    env.grant("srv")
    data = os.urandom(200_000) + b"end\n"
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    remote = tmp_path / "remote" / "put.bin"
    remote.parent.mkdir()
    back = tmp_path / "back.bin"
    batch = (
        f"put {local} {remote}\nls {remote.parent}\nget {remote} {back}\nrename {remote} {remote}.2\n"
        f"mkdir {remote.parent}/d\nrmdir {remote.parent}/d\nput {local} {remote}.3\nrm {remote}.3\n"
    )
    p = sftp(env, batch)
    assert p.returncode == 0, p.stderr
    assert remote.with_name("put.bin.2").read_bytes() == data and back.read_bytes() == data
    s = env.svc.sessions()[-1]
    assert s.target == "srv" and s.end_reason == "exit"
    evs = events(env, s.path)
    sha = hashlib.sha256(data).hexdigest()
    up, down, _again = files(evs)
    assert (up["direction"], up["path"], up["size"], up["sha256"]) == ("upload", str(remote), len(data), sha)
    assert (down["direction"], down["path"], down["sha256"]) == ("download", str(remote), sha)
    assert up["content_complete"] and down["content_complete"]
    assert content(evs, str(remote), "upload") == data == content(evs, str(remote), "download")
    ops = {e.fields["op"] for e in evs if e.type == "sftp.op"}
    assert {"init", "open", "write", "read", "close", "opendir", "readdir", "stat", "mkdir", "rmdir", "remove"} <= ops
    removed = [e.fields for e in evs if e.type == "sftp.op" and e.fields["op"] in {"mkdir", "rmdir", "remove"}]
    assert [(x["op"], x["path"]) for x in removed] == [
        ("mkdir", f"{remote.parent}/d"),
        ("rmdir", f"{remote.parent}/d"),
        ("remove", f"{remote}.3"),
    ]
    assert not Path(f"{remote}.3").exists()
    renames = [e.fields for e in evs if e.type == "sftp.op" and e.fields.get("name") == "posix-rename@openssh.com"]
    renames += [e.fields for e in evs if e.type == "sftp.op" and e.fields["op"] == "rename"]
    assert renames and renames[0]["path2"] == f"{remote}.2"
    audit = [e for e in env.svc.audit_events() if e.event.startswith("transfer.")]
    assert [e.event for e in audit] == ["transfer.start", "transfer.file", "transfer.file", "transfer.file"]
    assert audit[1].code == "ZSP2411I" and audit[1].fields["sha256"] == sha


def test_scp_upload_and_download_are_recorded_with_hashes(sftp_env: Env, tmp_path: Path) -> None:
    env = sftp_env
    env.grant("srv")
    data = b"config line\n" * 5000
    local = tmp_path / "app.conf"
    local.write_bytes(data)
    remote = tmp_path / "copied.conf"
    p = scp(env, str(local), f"srv@127.0.0.1:{remote}")
    assert p.returncode == 0, p.stderr
    assert remote.read_bytes() == data
    back = tmp_path / "back.conf"
    p = scp(env, f"srv@127.0.0.1:{remote}", str(back))
    assert p.returncode == 0, p.stderr
    assert back.read_bytes() == data
    sha = hashlib.sha256(data).hexdigest()
    up_s, down_s = env.svc.sessions()[-2:]
    (up,) = files(events(env, up_s.path))
    (down,) = files(events(env, down_s.path))
    assert (up["direction"], up["sha256"], up["size"]) == ("upload", sha, len(data))
    assert (down["direction"], down["sha256"], down["size"]) == ("download", sha, len(data))


def test_file_transfer_is_refused_without_the_rule(tmp_path: Path) -> None:
    env = _env(tmp_path, POLICY)  # the rule has no file_transfer = true
    try:
        env.grant("srv")
        local = tmp_path / "x"
        local.write_text("x")
        p = sftp(env, f"put {local} {tmp_path}/y\n")
        assert p.returncode != 0 and not (tmp_path / "y").exists()
        p = scp(env, str(local), f"srv@127.0.0.1:{tmp_path}/y")
        assert p.returncode != 0 and not (tmp_path / "y").exists()
        assert "does not allow file transfer" in p.stderr
        refused = [e for e in env.svc.audit_events() if e.event == "channel.refused"]
        assert refused and refused[-1].fields["kind"] == "sftp"
        assert env.svc.sessions() == []
        # Legacy scp (-O: scp -t on the far end) stays refused, with the way that works.
        p = subprocess.run(
            ["scp", "-O", *_opts(env), str(local), f"srv@127.0.0.1:{tmp_path}/y"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode != 0 and "SFTP only" in p.stderr
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()


def test_a_file_over_the_content_cap_is_kept_as_hash_only(tmp_path: Path) -> None:
    env = _env(tmp_path, SFTP_POLICY, "[bastion]\nmax_file_record_bytes = 65536\n")
    try:
        env.grant("srv")
        data = os.urandom(300_000)
        small = b"small\n"
        (tmp_path / "big").write_bytes(data)
        (tmp_path / "small").write_bytes(small)
        p = sftp(env, f"put {tmp_path}/big {tmp_path}/big.r\nput {tmp_path}/small {tmp_path}/small.r\n")
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "big.r").read_bytes() == data
        evs = events(env, env.svc.sessions()[-1].path)
        big, little = files(evs)
        assert big["sha256"] == hashlib.sha256(data).hexdigest() and big["size"] == len(data)
        assert not big["content_complete"] and big["content_kept"] <= 65536
        assert len(content(evs, f"{tmp_path}/big.r", "upload")) == big["content_kept"]
        assert [e for e in evs if e.type == "sftp.data_capped" and e.fields["limit"] == 65536]
        assert little["content_complete"] and content(evs, f"{tmp_path}/small.r", "upload") == small
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_revoke_and_expiry_cut_a_transfer(sftp_env: Env, tmp_path: Path, how: str) -> None:
    env = sftp_env
    g = env.grant("srv", duration=timedelta(seconds=6) if how == "expired" else timedelta(minutes=30))
    (tmp_path / "huge").write_bytes(os.urandom(4 << 20))
    client = subprocess.Popen(
        ["sftp", *_opts(env), "-l", "800", "-b", "-", "srv@127.0.0.1"],  # 100 KB/s: ~40 s
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert client.stdin is not None
    client.stdin.write(f"put {tmp_path}/huge {tmp_path}/huge.r\n")
    client.stdin.close()
    deadline = time.monotonic() + 20
    while not (tmp_path / "huge.r").exists() or (tmp_path / "huge.r").stat().st_size < 100_000:
        assert time.monotonic() < deadline, "the transfer did not start"
        time.sleep(0.1)
    if how == "revoked":
        env.svc.revoke(Actor("bob"), g.id, "incident")
    client.wait(timeout=20)
    assert client.returncode != 0
    assert (tmp_path / "huge.r").stat().st_size < 4 << 20
    deadline = time.monotonic() + 10
    while (s := env.svc.sessions()[-1]).ended_at is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert s.end_reason == how
    evs = events(env, s.path)
    cut = [e.fields for e in evs if e.type == "sftp.file_incomplete"]
    assert cut and cut[0]["path"] == f"{tmp_path}/huge.r" and 0 < cut[0]["uploaded"] < 4 << 20
    assert not files(evs)
    assert f"grant.{how}" in [e.type for e in evs] or how == "revoked"


def test_policy_file_transfer_is_off_by_default_and_checked() -> None:
    from zsp_tui.exceptions import PolicyError
    from zsp_tui.policy import parse_policy

    assert not parse_policy(POLICY).allows_file_transfer("ops")
    on = parse_policy(SFTP_POLICY)
    assert on.allows_file_transfer("ops") and not on.allows_file_transfer("ops", break_glass=True)
    assert not on.allows_file_transfer("other")
    auto = (
        '[[auto_approve]]\nname = "a"\nrequesters = ["role:operator"]\ntargets = ["*"]\nlogins = ["*"]\n'
        'max_duration = "1h"\nfile_transfer = true\n'
    )
    assert parse_policy(auto).allows_file_transfer("a")
    bad = SFTP_POLICY.replace("file_transfer = true", 'file_transfer = "yes"')
    with pytest.raises(PolicyError) as exc:
        parse_policy(bad)
    assert exc.value.line == bad.splitlines().index('file_transfer = "yes"') + 1
    assert "file_transfer must be true or false" in str(exc.value)


def test_hostile_file_names_are_exact_in_the_recording_and_escaped_in_the_audit(sftp_env: Env, tmp_path: Path) -> None:
    env = sftp_env
    env.grant("srv")
    (tmp_path / "src").write_bytes(b"x")
    name = f"{tmp_path}/evil\x1b[2J\x1b]0;owned\x07\u202e.txt"
    p = sftp(env, f'put {tmp_path}/src "{name}"\nls {tmp_path}\n')
    assert p.returncode == 0, p.stderr
    assert Path(name).read_bytes() == b"x"
    evs = events(env, env.svc.sessions()[-1].path)
    (f,) = files(evs)
    assert f["path"] == name  # exact in the recording
    listing = [
        e.fields for e in evs if e.type == "sftp.reply" and e.fields.get("op") == "readdir" and e.fields.get("count")
    ]
    assert any(name.rsplit("/", 1)[1] in json.loads(x["names"]) for x in listing)
    (audited,) = [e for e in env.svc.audit_events() if e.event == "transfer.file"]
    assert audited.fields["path"] == name and "\x1b" not in audited.message and "\\x1b" in audited.message


def test_a_transfer_that_cannot_be_recorded_is_not_relayed(tmp_path: Path) -> None:
    env = make_env(tmp_path, with_sshd=True, sshd_options=("Subsystem sftp internal-sftp",))
    env.data.policy_path.write_text(SFTP_POLICY)
    env.start(fsize=2 * 1024 * 1024)  # the bastion may not write any file past 2 MiB
    try:
        env.grant("srv")
        data = os.urandom(12 << 20)
        (tmp_path / "big").write_bytes(data)
        p = sftp(env, f"put {tmp_path}/big {tmp_path}/big.r\n")
        assert p.returncode != 0
        deadline = time.monotonic() + 10
        while (s := env.svc.sessions()[-1]).ended_at is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert s.end_reason == "recording-failed"
        # What reached the target stopped with the recording (about 1.5 MiB of content fits in
        # 2 MiB of base64 frames; a little more was queued when the write failed).
        assert (tmp_path / "big.r").stat().st_size < 4 << 20
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()


def test_subsystems_of_the_console_and_review_users_are_refused(sftp_env: Env) -> None:
    for user in ("zsp", "review"):
        p = subprocess.run(
            ["sftp", *_opts(sftp_env), "-b", "-", f"{user}@127.0.0.1"],
            input="ls\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode != 0
    deadline = time.monotonic() + 10
    while len(refused := [e for e in sftp_env.svc.audit_events() if e.event == "channel.refused"]) < 2:
        assert time.monotonic() < deadline, refused
        time.sleep(0.1)
    assert [e.fields["kind"] for e in refused] == ["subsystem", "subsystem"]
