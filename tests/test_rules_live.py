"""Real-time rules in the bastion, end to end: a real ``zsp serve`` over loopback, a real sshd target
(``srv``, reached with the bastion's certificates), paramiko and OpenSSH clients, real SQLite.

One bastion serves the whole module (starting it and sshd is most of the cost); it re-reads
``rules.toml`` on every watcher tick, so a test that changes the file waits for its ``rules.load``
and puts the module's rules back. Each test asserts on what it leaves behind: the recording's
event frames, the audit log, the flag rows, the sinks, files the commands create on the target.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import paramiko
import pytest

from recorder import FrameKind
from replay import load
from tests.bastion_env import LOCAL_ON, Env, keygen, make_env
from tests.helpers import read_until
from zsp_tui.access import Actor
from zsp_tui.models import HoldState, RequestState, Role

RULES = """\
[settings]
defaults = "none"
hold_timeout = "10s"

[[rule]]
name = "flag-me"
severity = "medium"
actions = ["flag", "notify"]
command = 'echo FLAG-ME'

[[rule]]
name = "warn-me"
severity = "low"
actions = ["warn"]
message = "careful: WARNED-BY-RULE"
command = 'echo WARN-ME'

[[rule]]
name = "hold-touch"
severity = "high"
actions = ["flag", "notify", "hold"]
message = "touching a HELD file needs an approver"
command = 'touch \\S*HELD'

[[rule]]
name = "stop-me"
severity = "critical"
actions = ["terminate"]
command = 'echo STOP-ME'

[[rule]]
name = "kill-switch"
severity = "critical"
actions = ["terminate"]
output = '^KILL-SWITCH-ON'

[[rule]]
name = "long-session"
severity = "low"
actions = ["flag", "warn"]
message = "LONG-SESSION-NOTICE"
users = ["user:carol"]
min_duration = "2s"

[[rule]]
name = "flood"
severity = "info"
actions = ["flag"]
output = '^FLOOD-[0-9]+'
"""


@dataclass
class Live:
    env: Env
    work: Path
    """Where the target's commands write their files (the target is this host)."""
    jsonl: Path
    hooks: list[dict[str, Any]]
    output: list[str] = field(default_factory=list)
    """The bastion's stdout and stderr lines, as they come."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("rules-live")
    hooks: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    env = make_env(root, with_sshd=True)
    env.keys["carol"] = keygen(root / "carol_ed25519", "carol")
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR}), [Path(f"{env.keys['carol']}.pub").read_text()])
    jsonl = root / "audit.jsonl"
    env.data.config_path.write_text(
        LOCAL_ON + f'[audit]\njsonl = "{jsonl}"\nwebhook = "http://127.0.0.1:{http.server_address[1]}/hook"\n'
    )
    env.data.root.joinpath("rules.toml").write_text(RULES)
    work = root / "work"
    work.mkdir()
    env.start()
    out = Live(env, work, jsonl, hooks)
    assert env.proc is not None and env.proc.stdout is not None
    stream = env.proc.stdout

    def collect() -> None:
        for line in stream:
            out.output.append(line)

    threading.Thread(target=collect, daemon=True).start()
    yield out
    env.stop()
    if env.sshd:
        env.sshd.stop()
    http.shutdown()
    http.server_close()


# --- helpers -------------------------------------------------------------------------------------


def wait_for(cond: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def ensure_grant(live: Live, user: str = "alice") -> None:
    svc = live.env.svc
    login = svc.target("srv").default_login
    mine = [g for g in svc.requests(active_only=True) if g.requester == user and g.target == "srv"]
    if not mine:
        r = svc.request(Actor(user), "srv", login, timedelta(minutes=30), "rules test")
        svc.approve(Actor("bob"), r.id)


class Shell:
    """An interactive PTY session through the bastion on ``srv`` (paramiko), stderr combined."""

    def __init__(self, live: Live, user: str = "alice") -> None:
        ensure_grant(live, user)
        env = live.env
        self.before = {s.id for s in env.svc.sessions()}
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(env.known_hosts))
        self.client.connect("127.0.0.1", env.port, username="srv", key_filename=str(env.keys[user]),
                            look_for_keys=False, allow_agent=False)
        self.chan = self.client.invoke_shell(term="xterm", width=100, height=30)
        self.chan.set_combine_stderr(True)
        self.buf = b""
        end = time.monotonic() + 60  # a liveness bound: a login on a loaded machine took over 15 s
        while not re.search(rb"[#$] $", self.buf):
            if time.monotonic() > end:
                raise AssertionError(f"no shell prompt in {self.buf[-300:]!r}")
            self.buf += self.chan.recv(65536) if self.chan.recv_ready() else b""
            time.sleep(0.02)
        self.env = env

    def send(self, data: bytes) -> None:
        self.chan.send(data)

    def line(self, text: str) -> None:
        """Type ``text`` as a person does: the Enter once the line shows (a command is read off
        the screen, as replay reads it: typed ahead of its echo, it is read at the next input)."""
        self.send(text.encode())
        self.expect(text.encode())
        self.send(b"\r")

    def expect(self, needle: bytes, timeout: float = 15, *, since: int = 0) -> bytes:
        """Read until ``needle`` is in what was read from offset ``since`` on (``since=len(sh.buf)``:
        only output that is still to come counts, not an echo of the command that printed it)."""
        self.buf = self.buf[:since] + read_until(self.chan, self.buf[since:], needle, timeout)
        return self.buf

    def rest(self) -> bytes:
        """Everything left to read once the channel is closing."""
        while data := self.chan.recv(65536):
            self.buf += data
        return self.buf

    def session(self):
        return wait_for(lambda: next((s for s in self.env.svc.sessions() if s.id not in self.before), None))

    def close(self) -> Any:
        """Exit (if still open) and wait for the session to be sealed; returns its record."""
        s = self.session()
        if not self.chan.closed:
            try:
                self.send(b"exit\r")
                self.chan.recv_exit_status()
            except (OSError, EOFError, paramiko.SSHException):
                pass
        self.client.close()
        return wait_for(lambda: (x := self.env.svc.session(s.id)).ended_at and x)


def frames(live: Live, path: str) -> list[Any]:
    got, report = load(path, live.env.data.trusted_keys())
    assert report.valid, report
    return got


def events(got: list[Any], type: str) -> list[Any]:
    return [f.data for f in got if f.kind is FrameKind.EVENT and f.data.type == type]


def typed(got: list[Any]) -> bytes:
    return b"".join(f.data for f in got if f.kind is FrameKind.INPUT)


def audit(live: Live, event: str, session_id: str | None = None) -> list[Any]:
    return [
        e for e in live.env.svc.audit_events()
        if e.event == event and (session_id is None or e.session_id == session_id)
    ]


def pending_hold(live: Live, rule: str = "hold-touch", timeout: float = 10.0):
    return wait_for(lambda: next((h for h in live.env.svc.holds() if h.rule == rule), None), timeout)


def set_rules(live: Live, text: str) -> None:
    """Write rules.toml and wait until the bastion has taken it (its ``rules.load``)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    live.env.data.root.joinpath("rules.toml").write_text(text)
    wait_for(lambda: any(e.fields.get("sha256") == digest for e in audit(live, "rules.load")))


# --- flag, notify, warn ----------------------------------------------------------------------------


def test_a_flagged_command_is_in_the_recording_the_audit_log_the_flags_and_the_sinks(live: Live) -> None:
    sh = Shell(live)
    sh.line("echo FLAG-ME one")
    sh.expect(b"FLAG-ME one\r\n")
    s = sh.close()
    got = frames(live, s.path)
    [loaded] = events(got, "rules.loaded")
    assert loaded.fields["rules"] == 7 and loaded.fields["ruleset"] == hashlib.sha256(RULES.encode()).hexdigest()
    assert "operator" in loaded.fields["roles"]
    [match] = [m for m in events(got, "rule.match") if m.fields["rule"] == "flag-me"]
    assert match.fields["severity"] == "medium" and match.fields["trigger"] == "command"
    assert match.fields["actions"] == "flag,notify" and "echo FLAG-ME one" in match.fields["text"]
    [ev] = wait_for(lambda: audit(live, "rule.match", s.id))
    assert ev.actor == "alice" and ev.via == "rule" and ev.fields["rule"] == "flag-me"
    assert ev.fields["notify"] is True and "echo FLAG-ME one" in ev.fields["text"]
    with live.env.svc.store.transaction(write=False) as tx:
        [flag] = tx.list_flags(session_id=s.id)
    assert flag.rule == "flag-me" and flag.severity == "medium" and flag.t_us == ev.fields["t_us"]
    assert live.env.svc.session(s.id).flags == 1 and live.env.svc.session(s.id).flag_severity == "medium"
    # The JSON Lines sink and the webhook (whose filter does not name rule.match: notify does).
    sink = wait_for(lambda: [
        x for x in map(json.loads, live.jsonl.read_text().splitlines())
        if x["event"] == "rule.match" and x["session_id"] == s.id
    ])
    assert sink[0]["rule"] == "flag-me" and sink[0]["seq"] == ev.seq
    hooked = wait_for(lambda: [e for h in live.hooks for e in h["events"] if e.get("session_id") == s.id])
    assert [e["event"] for e in hooked] == ["rule.match"] and hooked[0]["notify"] is True


def test_warn_reaches_the_operator(live: Live) -> None:
    sh = Shell(live)
    sh.line("echo WARN-ME now")
    buf = sh.expect(b"WARNED-BY-RULE")
    assert b"[zsp] rule warn-me (low): careful: WARNED-BY-RULE" in buf
    s = sh.close()
    [m] = events(frames(live, s.path), "rule.match")
    assert m.fields["rule"] == "warn-me" and m.fields["actions"] == "flag,warn"


def test_a_duration_rule_fires_once_the_session_lasted_long_enough(live: Live) -> None:
    sh = Shell(live, "carol")
    buf = sh.expect(b"LONG-SESSION-NOTICE", timeout=60)
    assert b"[zsp] rule long-session (low): LONG-SESSION-NOTICE" in buf
    s = sh.close()
    [m] = events(frames(live, s.path), "rule.match")
    assert (m.fields["rule"], m.fields["trigger"]) == ("long-session", "duration")
    [ev] = wait_for(lambda: audit(live, "rule.match", s.id))
    assert ev.actor == "carol" and ev.fields["trigger"] == "duration"
    # Once the session had lasted min_duration (2 s) by its own clock, not before. (It was timed from
    # when the test saw the prompt, 1.5-4 s: a login slowed by load made that look early.)
    assert ev.fields["t_us"] >= 2_000_000, ev.fields["t_us"]


# --- hold -------------------------------------------------------------------------------------------


def test_a_held_command_runs_only_once_another_user_allows_it(live: Live) -> None:
    target = live.work / "allowed-HELD"
    sh = Shell(live)
    sh.send(f"touch {target}\r".encode())
    hold = pending_hold(live)
    buf = sh.expect(b"times out in 10s")
    assert b"[zsp] held by rule hold-touch: waiting for approval (" in buf
    assert f"allow {hold.id}); times out in 10s".encode() in buf
    assert hold.user == "alice" and hold.command.endswith(f"touch {target}") and hold.state is HoldState.PENDING
    time.sleep(0.5)
    assert not target.exists()
    env = live.env
    listing = env.ssh("bob", "zsp", "holds")
    assert listing.returncode == 0 and hold.id in listing.stdout and "rule hold-touch (high)" in listing.stdout
    assert hold.id in env.ssh("bob", "zsp", "status").stdout
    assert hold.id not in env.ssh("carol", "zsp", "holds").stdout  # others' command lines: deciders only
    # The webhook learns of the hold (its id, to decide it) at once: the rule asks to notify.
    hooked = wait_for(lambda: [e for h in live.hooks for e in h["events"] if e.get("hold") == hold.id])
    assert hooked[0]["event"] == "rule.hold" and hooked[0]["command"].endswith(f"touch {target}")
    # Not the operator (an admin too: two-person rule), not an operator without the approver role.
    own = env.ssh("alice", "zsp", "allow", hold.id)
    assert own.returncode == 1 and f"alice cannot allow their own held command {hold.id}" in own.stderr
    carol = env.ssh("carol", "zsp", "allow", hold.id)
    assert carol.returncode == 1 and "carol may not allow held commands" in carol.stderr
    assert not target.exists() and env.svc.hold(hold.id).state is HoldState.PENDING
    ok = env.ssh("bob", "zsp", "allow", hold.id)
    assert ok.returncode == 0 and "allowed by bob" in ok.stdout, ok.stderr
    wait_for(target.exists, 30)  # a liveness bound: latency is bench_rules.py's to measure
    sh.expect(f"{hold.id} allowed by bob".encode())
    again = env.ssh("bob", "zsp", "deny", hold.id)
    assert again.returncode == 1 and f"cannot deny {hold.id}: it is allowed" in again.stderr
    s = sh.close()
    got = frames(live, s.path)
    [m] = [m for m in events(got, "rule.match") if m.fields["rule"] == "hold-touch"]
    assert m.fields["hold"] == hold.id and m.fields["actions"] == "flag,notify,hold"
    [allow] = events(got, "rule.hold.allow")
    assert allow.fields == {"id": hold.id, "by": "bob"}
    assert f"touch {target}\r".encode() in typed(got)
    names = [e.event for e in env.svc.audit_events() if e.fields.get("hold") == hold.id]
    assert names == ["rule.hold", "access_request.refused", "access_request.refused", "rule.hold.allow"]


def test_a_denied_command_never_runs_and_the_line_is_cleared(live: Live) -> None:
    target = live.work / "denied-HELD"
    sh = Shell(live)
    sh.send(f"touch {target}\r".encode())
    hold = pending_hold(live)
    p = live.env.ssh("bob", "zsp", "deny", hold.id, "--reason", "not", "during", "the", "freeze")
    assert p.returncode == 0 and "denied by bob (not during the freeze)" in p.stdout, p.stderr
    sh.expect(f"{hold.id} denied by bob: not during the freeze; the line was not sent".encode())
    sh.send(b"echo AFTER-$((40+2))\r")
    sh.expect(b"AFTER-42")
    assert not target.exists()
    s = sh.close()
    got = frames(live, s.path)
    [deny] = events(got, "rule.hold.deny")
    assert deny.fields == {"id": hold.id, "by": "bob", "reason": "not during the freeze"}
    keys = typed(got)
    assert f"touch {target}\x05\x15".encode() in keys and f"touch {target}\r".encode() not in keys
    [ev] = audit(live, "rule.hold.deny", s.id)
    assert ev.actor == "bob" and ev.fields["reason"] == "not during the freeze" and ev.fields["hold"] == hold.id


def test_a_hold_times_out_denied_while_another_users_session_keeps_working(live: Live) -> None:
    target = live.work / "timeout-HELD"
    sh = Shell(live)
    sh.send(f"touch {target}\r".encode())
    hold = pending_hold(live)
    # Meanwhile carol works on the same target through the same bastion, unaffected.
    other = Shell(live, "carol")
    other.send(b"echo CAROL-$((6*7))\r")
    other.expect(b"CAROL-42")
    # carol's command ran while alice's was still held: she never waited on it
    assert live.env.svc.hold(hold.id).state is HoldState.PENDING
    other.close()
    sh.expect(f"{hold.id} timed out".encode(), timeout=20)
    assert not target.exists()
    assert live.env.svc.hold(hold.id).state is HoldState.EXPIRED
    late = live.env.ssh("bob", "zsp", "allow", hold.id)
    assert late.returncode == 1 and f"cannot allow {hold.id}: it is expired" in late.stderr
    s = sh.close()
    got = frames(live, s.path)
    [deny] = events(got, "rule.hold.deny")
    assert deny.fields == {"id": hold.id, "by": "system", "reason": "timeout"}
    assert f"touch {target}\x05\x15".encode() in typed(got)
    [ev] = audit(live, "rule.hold.deny", s.id)
    assert (ev.actor, ev.fields["reason"], ev.fields["state"]) == ("system", "timeout", "expired")


def test_a_session_ending_while_held_cancels_the_hold(live: Live) -> None:
    target = live.work / "cancelled-HELD"
    sh = Shell(live)
    s = sh.session()
    sh.send(f"touch {target}\r".encode())
    hold = pending_hold(live)
    sh.client.close()  # the operator goes away while the command waits
    wait_for(lambda: live.env.svc.hold(hold.id).state is HoldState.CANCELLED)
    s = wait_for(lambda: (x := live.env.svc.session(s.id)).ended_at and x)
    assert s.end_reason == "client-closed" and not target.exists()
    [deny] = events(frames(live, s.path), "rule.hold.deny")
    assert deny.fields == {"id": hold.id, "by": "system", "reason": "session ended (client-closed)"}
    [ev] = wait_for(lambda: audit(live, "rule.hold.deny", s.id))
    assert (ev.actor, ev.fields["state"]) == ("system", "cancelled")
    late = live.env.ssh("bob", "zsp", "allow", hold.id)
    assert late.returncode == 1 and f"cannot allow {hold.id}: it is cancelled" in late.stderr


def test_pasted_lines_before_a_held_one_run_the_held_one_and_the_rest_wait(live: Live) -> None:
    one, held, three = (live.work / n for n in ("paste-one", "paste-two-HELD", "paste-three"))
    sh = Shell(live)
    sh.send(f"echo 1 > {one}\rtouch {held}\recho 3 > {three}\r".encode())
    hold = pending_hold(live)
    wait_for(one.exists, 5)
    time.sleep(0.5)
    assert not held.exists() and not three.exists()
    # Decided on the console this time (zsp allow, as bob).
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "allow", hold.id, "--as", "bob", "--data", str(live.env.data.root)],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    wait_for(lambda: held.exists() and three.exists(), 5)
    s = sh.close()
    keys = typed(frames(live, s.path))
    assert f"echo 1 > {one}\r".encode() in keys and f"touch {held}\r".encode() in keys


def test_without_a_pty_a_denied_line_is_never_sent(live: Live) -> None:
    """A script on stdin (no PTY): the held line waits whole, and a denied one never reaches the
    shell (nothing could clear it there: bash would run a partial last line at EOF)."""
    ensure_grant(live)
    before, held, after = (live.work / n for n in ("script-before", "script-HELD", "script-after"))
    env = live.env
    client = subprocess.Popen([*env.ssh_argv("alice", "srv"), "bash"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdin is not None
        client.stdin.write(f"echo 1 > {before}\ntouch {held}\necho 3 > {after}\n")
        client.stdin.close()
        hold = pending_hold(live)
        wait_for(before.exists, 5)
        assert env.ssh("bob", "zsp", "deny", hold.id).returncode == 0
        client.stdin = None  # closed above: communicate() must not flush it
        client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0 and after.exists() and not held.exists()
    s = max(env.svc.sessions(), key=lambda x: x.started_at)
    keys = typed(frames(live, wait_for(lambda: (x := env.svc.session(s.id)).ended_at and x).path))
    assert keys == f"echo 1 > {before}\necho 3 > {after}\n".encode()


def test_an_exec_command_is_held_before_it_runs(live: Live) -> None:
    ensure_grant(live)
    target = live.work / "exec-HELD"
    env = live.env
    client = subprocess.Popen([*env.ssh_argv("alice", "srv"), f"touch {target}; echo exec-done"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hold = pending_hold(live)
        time.sleep(0.3)
        assert not target.exists() and client.poll() is None
        assert env.ssh("bob", "zsp", "allow", hold.id).returncode == 0
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0 and "exec-done" in out and target.exists()
    assert "held by rule hold-touch" in err


# --- terminate ---------------------------------------------------------------------------------------


def test_a_terminating_rule_ends_the_session_at_once_and_revokes_its_grant(live: Live) -> None:
    sh = Shell(live)
    s = sh.session()
    sh.send(b"echo STOP-ME please\r")
    t0 = time.monotonic()
    sh.chan.recv_exit_status()
    took = time.monotonic() - t0
    assert took < 10.0, took  # a liveness bound on a loaded CI machine (typically well under 1 s)
    s = sh.close()
    assert s.end_reason == "rule"
    got = frames(live, s.path)
    [term] = events(got, "rule.terminate")
    assert term.fields["rule"] == "stop-me"
    assert b"echo STOP-ME please\r" not in typed(got)  # the Enter never reached the target
    grant = live.env.svc.get(s.grant_id)
    assert grant.state is RequestState.REVOKED and grant.ended_by == "rule:stop-me"
    [ev] = wait_for(lambda: audit(live, "rule.terminate", s.id))
    assert ev.fields["rule"] == "stop-me"
    [revoke] = [e for e in live.env.svc.audit_events() if e.event == "grant.revoke" and e.grant_id == s.grant_id]
    assert (revoke.actor, revoke.via) == ("rule:stop-me", "rule")
    assert b"[zsp] rule stop-me (critical): rule stop-me; session ended, its grant revoked" in sh.rest()


def test_an_output_rule_terminates_as_soon_as_the_line_is_seen(live: Live) -> None:
    sh = Shell(live)
    sh.send(b"printf 'KILL-SWITCH-%s\\n' ON; sleep 30\r")
    t0 = time.monotonic()
    sh.chan.recv_exit_status()
    assert time.monotonic() - t0 < 15.0  # long before the `sleep 30` ends
    s = sh.close()
    assert s.end_reason == "rule"
    [term] = events(frames(live, s.path), "rule.terminate")
    assert term.fields["rule"] == "kill-switch" and term.fields["text"] == "KILL-SWITCH-ON"
    assert live.env.svc.get(s.grant_id).ended_by == "rule:kill-switch"


def test_a_terminating_rule_refuses_an_exec_command(live: Live) -> None:
    ensure_grant(live)
    target = live.work / "never"
    p = live.env.ssh("alice", "srv", f"echo STOP-ME > {target}")
    assert p.returncode != 0 and "rule stop-me" in p.stderr
    assert not target.exists()


# --- the rules file ----------------------------------------------------------------------------------


def test_a_malformed_rules_file_is_refused_audited_once_and_the_last_good_rules_stay(live: Live) -> None:
    bad = RULES + '\n[[rule]]\nname = "broken"\nseverity = "dreadful"\ncommand = "x"\n'
    line = bad.count("\n", 0, bad.index('severity = "dreadful"')) + 1
    live.env.data.root.joinpath("rules.toml").write_text(bad)
    try:
        [ev] = wait_for(lambda: audit(live, "rules.invalid"))
        assert f"rules.toml:{line}: severity must be one of" in ev.fields["error"]
        assert ev.fields["kept_sha256"] == hashlib.sha256(RULES.encode()).hexdigest()
        wait_for(lambda: any("rules file refused" in x and f":{line}" in x for x in live.output))
        time.sleep(1.0)  # several watcher ticks: still one event for this content
        assert len(audit(live, "rules.invalid")) == 1
        # A new session obeys the last good rules.
        sh = Shell(live)
        sh.line("echo FLAG-ME two")
        sh.expect(b"FLAG-ME two\r\n")
        s = sh.close()
        assert [m.fields["rule"] for m in events(frames(live, s.path), "rule.match")] == ["flag-me"]
    finally:
        set_rules(live, RULES + "\n# again\n")
        set_rules(live, RULES)


def test_serve_refuses_to_start_without_usable_rules(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.data.root.joinpath("rules.toml").write_text('[settings]\ndefaults = "standard"\n\n[[rule]]\nname = "x"\n')
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "serve", "--data", str(env.data.root), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 1
    assert "rules.toml:4" in p.stderr and "does not start" in p.stderr and "Traceback" not in p.stderr


# --- adversarial -----------------------------------------------------------------------------------


def test_a_flood_of_matching_output_does_not_flood_the_audit_log(live: Live) -> None:
    sh = Shell(live)
    sh.send(b"for i in $(seq 1 500); do echo FLOOD-$i; done; echo END-$((5*5))\r")
    sh.expect(b"END-25")
    s = sh.close()
    got = frames(live, s.path)
    assert len([m for m in events(got, "rule.match") if m.fields["rule"] == "flood"]) == 20
    [sup] = events(got, "rule.suppressed")
    assert sup.fields["total"] == 480 and sup.fields["rules"] == "flood=480"
    # The audit events and flags are written off the relay: wait for them (a liveness bound), then
    # give any extra one the time to show before counting.
    wait_for(lambda: len(audit(live, "rule.match", s.id)) >= 20 and live.env.svc.session(s.id).flags >= 20, 60)
    time.sleep(0.5)
    assert len(audit(live, "rule.match", s.id)) == 20
    assert live.env.svc.session(s.id).flags == 20


def test_a_starting_bastion_cancels_the_holds_its_predecessor_left(tmp_path: Path) -> None:
    """What a killed bastion held cannot still be waiting: its session is gone (service level)."""
    from zsp_tui.models import SessionRecord
    from zsp_tui.rules.model import Action, Rule, Severity

    env = make_env(tmp_path)
    rec = SessionRecord(id="01a22d72-7f58-7659-a4da-38372c5b2e22", user="alice", target="local", login="x",
                        grant_id=None, command=None, client="127.0.0.1:1", path="/nonexistent",
                        started_at=env.svc.clock.now())
    rule = Rule(name="r", severity=Severity.HIGH, actions=frozenset({Action.FLAG, Action.HOLD}))
    hold = env.svc.create_hold(rec, rule, "rm -rf /srv", timedelta(minutes=5))
    [done] = env.svc.cancel_stale_holds("the bastion stopped while the command was held")
    assert done.id == hold.id and env.svc.hold(hold.id).state is HoldState.CANCELLED
    assert env.svc.holds() == []


def test_zsp_rules_test_agrees_with_what_fired_live(live: Live) -> None:
    """One session in which a rule flags, a hold is allowed, another denied, and a rule
    terminates; replayed offline by ``zsp rules test`` with the same rules, it finds the same."""
    allowed, denied = live.work / "agree-a-HELD", live.work / "agree-b-HELD"
    sh = Shell(live)
    sh.line("echo FLAG-ME agree")
    sh.expect(b"FLAG-ME agree\r\n")
    for target, verb in ((allowed, "allow"), (denied, "deny")):
        sh.line(f"touch {target}")
        hold = pending_hold(live)
        assert live.env.ssh("bob", "zsp", verb, hold.id).returncode == 0
        sh.expect(f"{hold.id} {'allowed' if verb == 'allow' else 'denied'} by bob".encode())
    sh.line("echo STOP-ME agree")
    sh.chan.recv_exit_status()
    s = sh.close()
    assert s.end_reason == "rule" and allowed.exists() and not denied.exists()
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "rules", "test", "--json", s.id, "--data", str(live.env.data.root)],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    [result] = json.loads(p.stdout)
    assert result["agree"] is True, result
    assert [m["rule"] for m in result["matches"]] == ["flag-me", "hold-touch"]  # what the target got
    never = sorted((m["rule"], m["text"]) for m in result["never_entered"])
    assert never == [("hold-touch", f"touch {denied}"), ("stop-me", "echo STOP-ME agree")]


def test_a_line_typed_at_a_password_prompt_is_never_gated_nor_put_in_a_hold(live: Live) -> None:
    """The gate runs on what is recorded: a password that happens to match a hold rule is masked
    (sealed to the escrow key), never held, so it reaches neither the hold, the audit log nor the
    approver's screen."""
    before = {h.id for h in live.env.svc.holds(pending_only=False)}
    sh = Shell(live)
    sh.line("read -s -p 'Password: ' pw; echo GOT-${#pw}")
    # Typed once the prompt shows, as a person does: the echoed command line holds "Password: " too,
    # and a password typed before the prompt reached the bastion is typed at no prompt (recorded, gated).
    sh.expect(b"Password: ", since=len(sh.buf))
    sh.send(b"touch pw-HELD\r")
    sh.expect(b"GOT-13")
    s = sh.close()
    assert {h.id for h in live.env.svc.holds(pending_only=False)} == before
    got = frames(live, s.path)
    assert b"pw-HELD" not in typed(got) and events(got, "input.masked")
    assert not events(got, "rule.match")
    assert not [e for e in live.env.svc.audit_events() if "pw-HELD" in json.dumps(e.to_json())]
