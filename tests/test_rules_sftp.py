"""File rules live: stock OpenSSH ``sftp``/``scp`` and paramiko -> ``zsp serve`` (the recorded SFTP
relay) -> a real sshd's SFTP, with ``rules.toml`` holding the shipped set and rules of its own.
A request a rule matches is flagged in the recording, the audit log and the flags before it is
relayed; ``deny`` answers it ``permission denied`` and the session goes on; ``terminate`` answers
it so, ends the session and revokes the grant: the file never moves.

One bastion serves the module; each test asserts on what it leaves behind."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paramiko
import pytest

from recorder import FrameKind
from replay import load
from tests.bastion_env import POLICY, Env, make_env
from tests.rules_helpers import file_rules, rule
from zsp_tui.access import Actor
from zsp_tui.cli import main
from zsp_tui.models import RequestState

SFTP_POLICY = POLICY.replace("approvals = 1\n", "approvals = 1\nfile_transfer = true\n")
LOGIN = pwd.getpwuid(os.getuid()).pw_name

RULES = '[settings]\ndefaults = "standard"\n\n' + file_rules(
    rule(
        "flag-upload",
        "medium",
        actions=["flag", "notify", "warn"],
        message="UPLOAD-WARNED",
        path="FLAGGED-UP",
        file_ops=["write"],
    ),
    rule(
        "stop-download",
        "critical",
        actions=["terminate"],
        message="secret downloads end the session",
        path="SECRET-DOWN",
        file_ops=["read"],
    ),
    rule(
        "keep-files",
        "high",
        actions=["deny"],
        message="KEEP-ME files stay",
        path="KEEP-ME",
        file_ops=["remove", "rename"],
    ),
    rule("scoped-login", "high", actions=["terminate"], path="SCOPED", logins=["nobody-logs-in-as-this"]),
    rule("scoped-target", "high", actions=["terminate"], path="SCOPED", targets=["label:prod"]),
    rule("scoped-here", "low", actions=["flag"], path="SCOPED", logins=[LOGIN], targets=["srv"]),
)


@dataclass
class Live:
    env: Env
    work: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("rules-sftp")
    env = make_env(root, with_sshd=True, sshd_options=("Subsystem sftp internal-sftp",))
    env.data.policy_path.write_text(SFTP_POLICY)
    env.data.root.joinpath("rules.toml").write_text(RULES)
    work = root / "work"
    work.mkdir()
    env.start()
    yield Live(env, work)
    env.stop()
    if env.sshd:
        env.sshd.stop()


# --- helpers -------------------------------------------------------------------------------------


def wait_for(cond: Any, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def ensure_grant(live: Live) -> Any:
    svc = live.env.svc
    mine = [g for g in svc.requests(active_only=True) if g.requester == "alice" and g.target == "srv"]
    if mine:
        return mine[0]
    r = svc.request(Actor("alice"), "srv", LOGIN, timedelta(minutes=30), "file rules test")
    return svc.approve(Actor("bob"), r.id)


def _opts(env: Env) -> list[str]:
    return [
        "-i", str(env.keys["alice"]), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={env.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-P", str(env.port),
    ]


def sftp(live: Live, batch: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sftp", *_opts(live.env), "-b", "-", "srv@127.0.0.1"], input=batch, capture_output=True, text=True, timeout=60
    )


def scp(live: Live, src: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scp", *_opts(live.env), src, dst], capture_output=True, text=True, timeout=60)


def last_session(live: Live, before: set[str]) -> Any:
    """The session started since ``before``, once it is sealed."""
    svc = live.env.svc
    s = wait_for(lambda: next((x for x in svc.sessions() if x.id not in before), None))
    return wait_for(lambda: (x := svc.session(s.id)).ended_at and x)


def events(live: Live, path: str) -> list[Any]:
    got, report = load(path, live.env.data.trusted_keys())
    assert report.valid, report
    return [f.data for f in got if f.kind is FrameKind.EVENT]


def of(evs: list[Any], type: str) -> list[dict[str, Any]]:
    return [e.fields for e in evs if e.type == type]


def audit(live: Live, event: str, session_id: str) -> list[Any]:
    return [e for e in live.env.svc.audit_events() if e.event == event and e.session_id == session_id]


def zsp(capsys: pytest.CaptureFixture[str], live: Live, *args: str) -> tuple[int, str]:
    code = main([*args, "--data", str(live.env.data.root)])
    return code, capsys.readouterr().out


def sessions_before(live: Live) -> set[str]:
    return {s.id for s in live.env.svc.sessions()}


# --- flag, warn ----------------------------------------------------------------------------------


def test_an_upload_a_rule_flags_is_recorded_audited_and_listed_as_flagged(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_grant(live)
    before = sessions_before(live)
    local = live.work / "local-up.txt"
    local.write_bytes(b"uploaded\n")
    remote = live.work / "FLAGGED-UP.txt"
    p = sftp(live, f"put {local} {remote}\n")
    assert p.returncode == 0, p.stderr
    assert remote.read_bytes() == b"uploaded\n"  # flag only: the upload went through
    assert "UPLOAD-WARNED" in p.stderr  # warn: a line on the channel's stderr, which OpenSSH's sftp shows
    s = last_session(live, before)
    assert s.end_reason == "exit"
    evs = events(live, s.path)
    types = [e.type for e in evs]
    [match] = of(evs, "rule.match")
    assert (match["rule"], match["trigger"], match["text"]) == ("flag-upload", "file", f"write {remote}")
    assert match["actions"] == "flag,notify,warn"
    opened = next(i for i, e in enumerate(evs) if e.type == "sftp.op" and e.fields.get("path") == str(remote))
    assert opened < types.index("rule.match")  # recorded, then matched, then relayed
    [ev] = wait_for(lambda: audit(live, "rule.match", s.id))
    assert ev.fields["rule"] == "flag-upload" and ev.fields["notify"] is True
    code, out = zsp(capsys, live, "sessions", "--flagged", "--json")
    assert code == 0 and s.id in [r["id"] for r in json.loads(out)]
    code, out = zsp(capsys, live, "rules", "test", s.id)
    assert code == 0 and "flag-upload" in out and "agree: yes" in out, out


# --- terminate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["sftp", "scp"])
def test_a_download_a_rule_terminates_never_moves_and_revokes_the_grant(
    live: Live, client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    grant = ensure_grant(live)
    before = sessions_before(live)
    secret = os.urandom(50_000)
    remote = live.work / f"SECRET-DOWN-{client}.bin"
    remote.write_bytes(secret)
    local = live.work / f"got-{client}.bin"
    if client == "sftp":
        p = sftp(live, f"get {remote} {local}\n")
    else:
        p = scp(live, f"srv@127.0.0.1:{remote}", str(local))
    assert p.returncode != 0
    # the operator is told why, and the request got its answer before the session ended
    assert "[zsp] rule stop-download (critical): secret downloads end the session" in p.stderr
    assert f'remote open "{remote}": Permission denied' in p.stderr
    assert not local.exists() or secret[:64] not in local.read_bytes()  # no byte of it arrived
    s = last_session(live, before)
    assert s.end_reason == "rule"
    evs = events(live, s.path)
    assert not of(evs, "sftp.data") and not of(evs, "sftp.file")
    [refusal] = [r for r in of(evs, "sftp.reply") if r.get("by") == "rule"]
    assert (refusal["status"], refusal["rule"], refusal["path"]) == ("permission-denied", "stop-download", str(remote))
    [term] = of(evs, "rule.terminate")
    assert term["rule"] == "stop-download" and term["text"] == f"read {remote}"
    g = live.env.svc.get(grant.id)
    assert g.state is RequestState.REVOKED and g.ended_by == "rule:stop-download"
    [ev] = wait_for(lambda: audit(live, "rule.terminate", s.id))
    assert ev.fields["rule"] == "stop-download"
    code, out = zsp(capsys, live, "rules", "test", s.id)
    assert code == 0 and "agree: yes" in out, out


# --- deny ----------------------------------------------------------------------------------------


def test_a_denied_operation_is_refused_and_the_session_goes_on(live: Live) -> None:
    grant = ensure_grant(live)
    before = sessions_before(live)
    keep = live.work / "KEEP-ME.txt"
    keep.write_text("stays\n")
    after = live.work / "after-deny.txt"
    local = live.work / "local-after.txt"
    local.write_text("after\n")
    # '-': sftp's batch mode goes on after a failed command
    p = sftp(live, f"-rm {keep}\n-rename {keep} {live.work}/moved.txt\nput {local} {after}\n")
    assert p.returncode == 0, p.stderr
    assert "Permission denied" in p.stderr, p.stderr
    assert keep.read_text() == "stays\n" and not (live.work / "moved.txt").exists()
    assert after.read_text() == "after\n"  # the session went on
    s = last_session(live, before)
    assert s.end_reason == "exit"
    evs = events(live, s.path)
    refusals = [r for r in of(evs, "sftp.reply") if r.get("by") == "rule"]
    assert [r["rule"] for r in refusals] == ["keep-files", "keep-files"]
    assert all(r["status"] == "permission-denied" and "KEEP-ME files stay" in r["text"] for r in refusals)
    assert [r["path"] for r in refusals] == [str(keep), str(keep)]  # the rename's first path
    assert [m["rule"] for m in of(evs, "rule.match")] == ["keep-files", "keep-files"]
    assert live.env.svc.get(grant.id).state is RequestState.APPROVED
    # Reviewers see the refusals among the session's file changes (zsp files), the rule named.
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "files", s.id, "--data", str(live.env.data.root)],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    changes = p.stdout.split("other changes to files (2):\n", 1)[1].splitlines()[1:]
    assert [c.split()[1:5] for c in changes] == [
        ["remove", "refused", "by", "rule"],
        ["rename", "refused", "by", "rule"],
    ]
    assert all("keep-files" in c for c in changes)


# --- scope ---------------------------------------------------------------------------------------


def test_rules_scoped_to_other_logins_or_targets_do_not_fire(live: Live) -> None:
    ensure_grant(live)
    before = sessions_before(live)
    local = live.work / "local-scoped.txt"
    local.write_text("scoped\n")
    remote = live.work / "SCOPED.txt"
    p = sftp(live, f"put {local} {remote}\n")
    assert p.returncode == 0, p.stderr
    assert remote.read_text() == "scoped\n"
    s = last_session(live, before)
    assert s.end_reason == "exit"
    assert [m["rule"] for m in of(events(live, s.path), "rule.match")] == ["scoped-here"]


# --- shipped -------------------------------------------------------------------------------------


def test_the_shipped_rules_flag_an_authorized_keys_upload(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = zsp(capsys, live, "rules", "list")
    assert code == 0
    rows = {line.split()[0]: line.split()[:5] for line in out.splitlines()[2:]}
    for name in ("ssh-key-upload", "sudoers-upload", "shadow-download"):
        assert rows[name][2:] == ["file", "flag,notify", "shipped"], rows[name]
    assert rows["flag-upload"][2] == "file"
    ensure_grant(live)
    before = sessions_before(live)
    (live.work / ".ssh").mkdir(exist_ok=True)
    local = live.work / "key.pub"
    local.write_text("ssh-ed25519 AAAA test\n")
    remote = live.work / ".ssh" / "authorized_keys"
    p = scp(live, str(local), f"srv@127.0.0.1:{remote}")
    assert p.returncode == 0, p.stderr
    s = last_session(live, before)
    [m] = of(events(live, s.path), "rule.match")
    assert (m["rule"], m["severity"], m["text"]) == ("ssh-key-upload", "medium", f"write {remote}")
    # a link to /etc/shadow made over sftp (to read it later under another name)
    before = sessions_before(live)
    link = live.work / "not-a-shadow"
    p = sftp(live, f"ln -s /etc/shadow {link}\n")
    assert p.returncode == 0, p.stderr
    s = last_session(live, before)
    [m] = of(events(live, s.path), "rule.match")
    assert (m["rule"], m["trigger"]) == ("shadow-download", "file") and m["text"].startswith("symlink ")
    assert "/etc/shadow" in m["text"] and str(link) in m["text"]


# --- hostile names -------------------------------------------------------------------------------


def test_hostile_file_names_are_matched_and_escaped_everywhere(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_grant(live)
    before = sessions_before(live)
    evil = f"{live.work}/FLAGGED-UP\x1b]0;owned\x07\x1b[2J\nforged line\u202e.txt"
    huge = f"{live.work}/{'a' * 65536}/FLAGGED-UP"
    client = paramiko.SSHClient()
    client.load_host_keys(str(live.env.known_hosts))
    client.connect("127.0.0.1", live.env.port, username="srv", key_filename=str(live.env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        sftp_client = client.open_sftp()
        with sftp_client.open(evil, "w") as f:
            f.write(b"x")
        with pytest.raises(OSError):
            sftp_client.open(huge, "w")  # the target refuses it (too long); the rule saw it first
        sftp_client.close()
    finally:
        client.close()
    assert Path(evil).read_bytes() == b"x"
    s = last_session(live, before)
    evs = events(live, s.path)
    first, second = of(evs, "rule.match")
    assert first["text"] == f"write {evil}"  # exact in the recording
    assert second["text"].startswith(f"write {live.work}/aaa") and len(second["text"]) == 1024
    audited = wait_for(lambda: (a := audit(live, "rule.match", s.id)) and len(a) == 2 and a)
    for a in audited:
        assert "\x1b" not in a.message and "\n" not in a.message and "\x07" not in a.message
    assert "\\x1b]0;owned" in audited[0].message and len(audited[1].message) < 1200
    code, out = zsp(capsys, live, "rules", "test", s.id)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "forged line" in out
    assert "\nforged line" not in out
    # the 64 KiB path is recorded exactly only in its first 3 KiB: its match (at the end) is not
    # found offline, and zsp rules test says why
    assert "note: 1 file request(s) with a path longer than the recording keeps exactly" in out
    assert "agree: no: recorded live, not found here: flag-upload" in out
    code, out = zsp(capsys, live, "search", "--flagged")
    assert code == 0 and "\x1b" not in out and "\nforged line" not in out


def test_a_flood_of_denied_operations_is_reported_twenty_times_and_all_denied(live: Live) -> None:
    ensure_grant(live)
    before = sessions_before(live)
    keep = [live.work / f"KEEP-ME-{i}.txt" for i in range(25)]
    for k in keep:
        k.write_text("stays\n")
    p = sftp(live, "".join(f"-rm {k}\n" for k in keep))
    assert p.returncode == 0, p.stderr
    assert all(k.exists() for k in keep)
    s = last_session(live, before)
    evs = events(live, s.path)
    assert len([r for r in of(evs, "sftp.reply") if r.get("by") == "rule"]) == 25
    assert len(of(evs, "rule.match")) == 20
    [sup] = of(evs, "rule.suppressed")
    assert (sup["total"], sup["rules"]) == (5, "keep-files=5")
    assert len(wait_for(lambda: (a := audit(live, "rule.match", s.id)) and len(a) == 20 and a)) == 20
