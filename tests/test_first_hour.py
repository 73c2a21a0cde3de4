"""A newcomer's first hour, end to end: the README's and the demo's commands pasted as printed,
through a real shell, the real OpenSSH client and the real bastion (issue 7, "First hour")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest

from recorder import FrameKind
from replay import Outcome
from tests.bastion_env import Env
from tests.test_bastion import frames_of, last_session, wait_for
from tests.test_cli import no_traceback
from zsp_tui.access import Actor
from zsp_tui.models import Target

ROOT = Path(__file__).resolve().parent.parent


def run_zsp(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            input: str = "") -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args], input=input, capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=60)


def shell(line: str, *, env: dict[str, str] | None = None, input: str = "",
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a line as a user pastes it into bash; `zsp` is this checkout's CLI."""
    fn = f'zsp() {{ "{sys.executable}" -m zsp_tui "$@"; }}\n'
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(["bash", "-c", fn + line], input=input, capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=60)


def with_identity(env: Env, user: str, line: str) -> str:
    """A printed `ssh -p PORT zsp@HOST ...` line with the test user's key and the pinned host key
    (what the operator's own ~/.ssh/config supplies); the rest of the line is pasted unchanged."""
    if not line.startswith("ssh "):
        raise AssertionError(line)
    opts = (f"-i {env.keys[user]} -o IdentitiesOnly=yes -o UserKnownHostsFile={env.known_hosts} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR")
    return f"ssh {opts} {line[4:]}"


def request_id(text: str) -> str:
    m = re.search(r"\b(r-[0-9a-z]+)\b", text)
    assert m, text
    return m.group(1)


# --- a multi-word --reason over ssh ---------------------------------------------------------------


REASONS = [
    # (words as the local shell hands them to ssh, the reason zsp must record)
    (["--reason", "INC-7 vacuum"], "INC-7 vacuum"),  # --reason "INC-7 vacuum": ssh joins with spaces
    (["--reason", "'INC-7 vacuum'"], "INC-7 vacuum"),  # quoted for the remote side: still works
    (["--reason", "INC-7", "vacuum", "now"], "INC-7 vacuum now"),  # no quotes at all
    (["--reason", "can't log in"], "can't log in"),  # a lone apostrophe arrives unbalanced
    (["--reason", "-x --y"], "-x --y"),  # option-like words inside a reason are words
]


@pytest.mark.parametrize(("words", "reason"), REASONS)
def test_request_reason_is_the_rest_of_the_words(env: Env, words: list[str], reason: str) -> None:
    p = env.ssh("alice", "zsp", "request", "local", "--for", "30m", *words)
    assert p.returncode == 0, p.stderr
    assert env.svc.get(request_id(p.stdout)).reason == reason


def test_reason_before_other_options_and_in_one_quoted_command(env: Env) -> None:
    p = env.ssh("alice", "zsp", "request", "local", "--reason", "INC-7 vacuum", "--for", "30m")
    assert p.returncode == 0, p.stderr
    r = env.svc.get(request_id(p.stdout))
    assert r.reason == "INC-7 vacuum" and r.duration == timedelta(minutes=30)
    env.svc.cancel(Actor("alice"), r.id)
    # The whole remote command as one argument, quoted as a shell would.
    p = env.ssh("alice", "zsp", "request local --for 1h --reason 'INC-8 reindex' --login " + env.svc.target("local").logins[0])
    assert p.returncode == 0, p.stderr
    r = env.svc.get(request_id(p.stdout))
    assert r.reason == "INC-8 reindex" and r.duration == timedelta(hours=1)


def test_reason_without_words_is_one_clear_error(env: Env) -> None:
    p = env.ssh("alice", "zsp", "request", "local", "--for", "30m", "--reason")
    assert p.returncode == 2
    assert p.stderr.count("zsp: error:") == 1 and "zsp: error: zsp" not in p.stderr, p.stderr
    assert "--reason" in p.stderr and "Traceback" not in p.stderr
    assert env.svc.requests() == []


@pytest.mark.parametrize("quoted", [False, True])
def test_deny_and_revoke_reasons_over_ssh(env: Env, quoted: bool) -> None:
    def reason(text: str) -> list[str]:
        return ["--reason", f"'{text}'" if quoted else text]

    r = env.svc.request(Actor("alice"), "local", None, timedelta(minutes=30), "test")
    p = env.ssh("bob", "zsp", "deny", r.id, *reason("not during the freeze"))
    assert p.returncode == 0, p.stderr
    assert env.svc.get(r.id).note == "not during the freeze"
    g = env.grant()
    p = env.ssh("bob", "zsp", "revoke", g.id, *reason("done for today"))
    assert p.returncode == 0, p.stderr
    assert env.svc.get(g.id).note == "done for today"


def test_refusal_hint_pastes(env: Env) -> None:
    """The command printed when a session is refused works when pasted into a shell."""
    p = env.ssh("alice", "local", "true")
    assert p.returncode == 1
    line = p.stderr.split("Ask for one:")[1].strip().splitlines()[0].strip()
    assert line.startswith(f"ssh -p {env.port} zsp@127.0.0.1 request local")
    q = shell(with_identity(env, "alice", line))
    assert q.returncode == 0, q.stderr
    r = env.svc.get(request_id(q.stdout))
    assert r.reason == "why you need it"  # unquoted: the rest of the words
    # Its own "an approver runs" hint pastes too.
    approve = q.stdout.split("an approver runs:")[1].strip().splitlines()[0]
    a = shell(with_identity(env, "bob", approve))
    assert a.returncode == 0, a.stderr
    assert env.svc.get(r.id).active(env.svc.clock.now())


def test_a_login_the_target_does_not_have_is_said_so_not_a_request_that_fails(env: Env) -> None:
    p = env.ssh("alice", "nosuch@local", "true")
    assert p.returncode == 1 and "Ask for one" not in p.stderr
    assert "local has no login 'nosuch'" in p.stderr and "targets" in p.stderr
    e = [e for e in env.svc.audit_events() if e.event == "session.refused"][-1]
    assert e.fields["reason"] == "no-such-login" and e.login == "nosuch"


def test_reasons_need_no_quotes_on_the_console_either(env: Env) -> None:
    """As over ssh, ``--reason`` takes the words up to the next option."""
    p = run_zsp("request", "local", "--for", "30m", "--reason", "INC-7", "vacuum", "now", "--as", "alice",
                "--data", str(env.data.root))
    assert p.returncode == 0, p.stderr
    rid = request_id(p.stdout)
    assert env.svc.get(rid).reason == "INC-7 vacuum now"
    d = run_zsp("deny", rid, "--reason", "not", "now", "--as", "bob", "--data", str(env.data.root))
    assert d.returncode == 0, d.stderr
    assert env.svc.get(rid).note == "not now"


# --- output over ssh ------------------------------------------------------------------------------


def ssh_bytes(env: Env, user: str, *argv: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    """Raw bytes: text mode would turn \r\n into \n and hide the difference."""
    return subprocess.run([*env.ssh_argv(user, "zsp", *extra), *argv], capture_output=True, timeout=60)


def test_help_over_a_pty_has_crlf_line_ends(env: Env) -> None:
    p = ssh_bytes(env, "alice", "help", extra=("-tt",))
    assert p.returncode == 0
    assert b"\r\n" in p.stdout and re.search(rb"(?<!\r)\n", p.stdout) is None, p.stdout[:200]
    # An error over a PTY too; and without a PTY, output is left as it is.
    e = ssh_bytes(env, "alice", "approve", extra=("-tt",))
    assert e.returncode == 2 and b"zsp: error:" in e.stdout + e.stderr
    assert re.search(rb"(?<!\r)\n", e.stdout + e.stderr) is None
    plain = ssh_bytes(env, "alice", "help")
    assert b"\r" not in plain.stdout and plain.stdout.count(b"\n") > 5


@pytest.mark.parametrize("argv", [["approve"], ["request", "local"], ["nosuch"], ["grants", "--bogus"]])
def test_errors_over_ssh_have_one_prefix(env: Env, argv: list[str]) -> None:
    p = env.ssh("alice", "zsp", *argv)
    assert p.returncode == 2
    assert p.stderr.startswith("zsp: error: ") and p.stderr.count("zsp:") == 1, p.stderr
    assert "zsp: error: zsp" not in p.stderr
    assert "Traceback" not in p.stderr


# --- targets one may request --------------------------------------------------------------------


def test_unknown_target_points_to_targets_which_lists_them(env: Env) -> None:
    p = env.ssh("alice", "nosuch", "true")
    assert p.returncode == 1
    hint = p.stderr.split("list what you may request:")[1].strip().splitlines()[0]
    assert hint.endswith(" targets")
    q = shell(with_identity(env, "alice", hint))
    assert q.returncode == 0, q.stderr
    login = env.svc.target("local").logins[0]
    assert re.search(rf"^local\s+{re.escape(login)} \(default\)\s+rule ops: up to 4h, 1 approval", q.stdout, re.M)
    j = json.loads(env.ssh("alice", "zsp", "targets", "--json").stdout)
    assert j == [{"target": "local", "login": login, "default": True, "ways": ["rule ops: up to 4h, 1 approval"]}]
    # bob is an approver, not a requester: the policy lets him request nothing.
    b = env.ssh("bob", "zsp", "targets")
    assert b.returncode == 0 and "local" not in b.stdout and "no target" in b.stdout
    assert json.loads(env.ssh("bob", "zsp", "targets", "--json").stdout) == []
    # The same on the console.
    c = run_zsp("targets", "--as", "alice", "--data", str(env.data.root), "--json")
    assert c.returncode == 0 and json.loads(c.stdout) == j
    c = run_zsp("targets", "--as", "nobody", "--data", str(env.data.root))
    assert c.returncode == 1 and c.stderr.count("zsp: error:") == 1
    no_traceback(c)


# --- warnings -----------------------------------------------------------------------------------


def test_short_grant_gets_one_warning_per_threshold_reached(env: Env) -> None:
    """An 8 s grant is inside both the 5 m and the 1 m thresholds from the start: one warning for
    those (not two at once), then one more at the 2 s threshold."""
    policy = env.data.policy_path.read_text().replace('warn_before = ["5m", "2s"]', 'warn_before = ["5m", "2s", "1m"]')
    env.data.policy_path.write_text(policy)
    env.grant(duration=timedelta(seconds=8))
    p = env.ssh("alice", "local", "sleep 20", timeout=30)
    assert p.returncode != 0
    s = wait_for(lambda: (x := last_session(env)).ended_at and x)
    assert s.end_reason == "expired"
    frames, report = frames_of(env, s.path)
    assert report.outcome is Outcome.VALID
    warnings = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "grant.warning"]
    assert len(warnings) == 2, [w.message for w in warnings]
    assert warnings[0].fields["seconds_left"] >= 3 and warnings[1].fields["seconds_left"] <= 2
    assert p.stderr.count("ends in") + p.stdout.count("ends in") == 2


# --- the console: audit, sessions, verify, ids --------------------------------------------------


def test_audit_lines_leave_out_a_missing_login(env: Env) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    env.svc.add_target(Actor("alice"), Target(name="db1", host="127.0.0.1", port=22, logins=("postgres",),
                                              host_key=key))
    p = run_zsp("audit", "--data", str(env.data.root))
    assert p.returncode == 0
    line = next(ln for ln in p.stdout.splitlines() if "target.create" in ln)
    assert " db1 " in line and "None@" not in line and "@db1" not in line, line
    env.grant()
    p = run_zsp("audit", "--data", str(env.data.root))
    login = env.svc.target("local").logins[0]
    assert f" {login}@local " in p.stdout and "None@" not in p.stdout


def test_zsp_record_sessions_are_listed_and_resolve_by_prefix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_zsp("init", "--data", str(data)).returncode == 0
    r = run_zsp("record", "--data", str(data), "--", "sh", "-c", "echo recorded-here; exit 3")
    assert r.returncode == 3, r.stderr
    o = run_zsp("record", "--data", str(data), "-o", str(tmp_path / "fix.zsprec"), "--", "true")
    assert o.returncode == 0, o.stderr
    listed = json.loads(run_zsp("sessions", "--data", str(data), "--json").stdout)
    assert len(listed) == 2
    first, second = listed
    assert first["status"] == "sealed" and first["end_reason"] == "exit" and first["exit_status"] == 3
    assert second["path"] == str(tmp_path / "fix.zsprec") and second["status"] == "sealed"
    table = run_zsp("sessions", "--data", str(data)).stdout
    assert first["id"] in table and second["id"] in table

    # The full id, and the shortest unique prefix, name the recording; `verify` shows why it ended.
    for ref in (first["id"], _unique_prefix(first["id"], second["id"])):
        v = run_zsp("verify", "--data", str(data), ref)
        assert v.returncode == 0, v.stdout + v.stderr
        assert v.stdout.startswith("VALID") and " exit=3 reason=exit " in v.stdout
    j = json.loads(run_zsp("verify", "--data", str(data), "--json", first["id"]).stdout)
    assert j[0]["end_reason"] == "exit"
    p = run_zsp("play", "--data", str(data), "--instant", _unique_prefix(first["id"], second["id"]))
    assert p.returncode == 0 and "recorded-here" in p.stdout


def _unique_prefix(sid: str, other: str) -> str:
    n = 4
    while other.startswith(sid[:n]):
        n += 1
    return sid[:n]


def test_session_ids_resolve_in_the_data_dir_never_the_cwd(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_zsp("init", "--data", str(data)).returncode == 0
    for _ in range(2):
        assert run_zsp("record", "--data", str(data), "-q", "--", "true").returncode == 0
    a, b = (s["id"] for s in json.loads(run_zsp("sessions", "--data", str(data), "--json").stdout))
    common = a[: next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # A forged file in the current directory named like the session (with and without .zsprec):
    # the session's own recording is verified, not the file.
    forged = run_zsp("record", "--data", str(data), "-q", "-o", str(cwd / a), "--", "echo", "forged")
    assert forged.returncode == 0
    (cwd / f"{a}.zsprec").write_bytes((cwd / a).read_bytes())
    for ref in (a, f"{a}.zsprec"):
        v = run_zsp("verify", "--data", str(data), "--json", ref, cwd=cwd)
        assert v.returncode == 0, v.stdout
        assert json.loads(v.stdout)[0]["source"] == str(data / "recordings" / f"{a}.zsprec")
    # With a "/", it is a path.
    v = run_zsp("verify", "--data", str(data), "--json", f"./{a}", cwd=cwd)
    assert v.returncode == 0 and json.loads(v.stdout)[0]["source"] == f"{a}"
    # Ambiguous and unknown prefixes, and too-short ones: one error each, exit 2.
    if len(common) >= 4:
        amb = run_zsp("verify", "--data", str(data), common, cwd=cwd)
        assert amb.returncode == 2 and re.search(r"matches [23] sessions", amb.stdout) and a in amb.stdout and b in amb.stdout
        pa = run_zsp("play", "--data", str(data), common, cwd=cwd)
        assert pa.returncode == 2 and pa.stderr.count("zsp: error:") == 1 and a in pa.stderr
        no_traceback(pa)
    for ref in ("ffffffff", "abc", "fix.zsprec"):
        v = run_zsp("verify", "--data", str(data), ref, cwd=cwd)
        assert v.returncode == 2 and v.stdout.startswith("ERROR"), v.stdout
    (cwd / "fix.zsprec").write_bytes((cwd / a).read_bytes())
    v = run_zsp("verify", "--data", str(data), "fix.zsprec", cwd=cwd)
    assert v.returncode == 2 and "./fix.zsprec" in v.stdout
    assert run_zsp("verify", "--data", str(data), "./fix.zsprec", cwd=cwd).returncode == 0


# --- the demo ------------------------------------------------------------------------------------


class Demo:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "zsp_tui", "serve", "--demo", "--listen", "127.0.0.1:0",
                                      *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **env})
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        # A reader thread and a deadline: a demo that never prints its last step fails the test, not hangs it.
        self.reader = reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and reader.is_alive() and not self._done():
            time.sleep(0.05)
        self.text = "".join(self.lines)

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.append(line)

    def _done(self) -> bool:
        return any(ln.startswith("       zsp verify evidence.tar") for ln in self.lines)  # the last step

    def steps(self) -> list[str]:
        return [ln.strip() for ln in self.lines if ln.startswith("       ")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.reader.join(15)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def test_demo_steps_work_pasted_verbatim(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    Path(home["HOME"]).mkdir()
    demo = Demo([], home)
    try:
        steps = demo.steps()
        assert len(steps) == 11, demo.text
        assert str(tmp_path / "xdg" / "zsp-demo") in demo.text  # its own data dir
        request, _approve_template, open_shell, sessions, verify, search, play, _review, _host, export, check = steps
        # review: see
        # tests/test_review_ssh.py (it needs a terminal)
        assert "zsp play" in play
        r = shell(request, env=home)
        assert r.returncode == 0, r.stderr
        rid = request_id(r.stdout)
        # The "an approver runs" hint names the demo's ssh_config and the approver's alias: paste it.
        hint = r.stdout.split("an approver runs:")[1].strip().splitlines()[0]
        assert hint == _approve_template.replace("r-xxxxxx", rid)
        a = shell(hint, env=home)
        assert a.returncode == 0, a.stderr
        # Help over ssh, in demo mode, prints session commands that carry the ssh_config too.
        h = shell(request.split(" zsp@zsp-operator ")[0] + " zsp@zsp-operator help", env=home)
        assert h.returncode == 0 and "open a session:  ssh -F " in h.stdout and "LOGIN@TARGET@zsp-operator" in h.stdout
        o = shell(open_shell, env=home, input="echo hello-from-demo\nexit\n")
        assert o.returncode == 0, o.stderr
        assert "hello-from-demo" in o.stdout
        s = shell(sessions, env=home)
        assert s.returncode == 0 and "sealed" in s.stdout, s.stdout + s.stderr
        sid = s.stdout.splitlines()[1].split()[0]
        v = shell(verify.replace("SESSION_ID", sid), env=home)
        assert v.returncode == 0 and v.stdout.startswith("VALID"), v.stdout + v.stderr
        # The bastion indexed the session as it ended: searchable with no other command.
        deadline = time.monotonic() + 60  # a liveness bound: indexed in a child process after the end
        while (f := shell(search.replace("WORDS", "hello-from-demo"), env=home)).returncode and time.monotonic() < deadline:
            time.sleep(0.2)  # indexed within moments of the end, off the bastion's event loop
        assert f.returncode == 0 and f"zsp play --data {tmp_path / 'xdg' / 'zsp-demo'} {sid} --from " in f.stdout, (
            f.stdout + f.stderr
        )
        p = shell(play.replace("SESSION_ID", sid[:13]) + " --instant", env=home)
        assert p.returncode == 0 and "hello-from-demo" in p.stdout, p.stderr
        x = shell(export.replace("SESSION_ID", sid[-8:]), env=home, cwd=tmp_path)
        assert x.returncode == 0, x.stderr
        c = shell(check, env=home, cwd=tmp_path)
        assert c.returncode == 0 and c.stdout.startswith("VALID"), c.stdout + c.stderr
    finally:
        demo.stop()


def test_demo_runs_beside_an_installation_from_the_readme(tmp_path: Path) -> None:
    """After the README's admin section (`zsp init`, a first admin), `zsp serve --demo` still starts,
    in its own data dir, and leaves the installation alone; pointed at it with --data, it says what works."""
    home = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    Path(home["HOME"]).mkdir()
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run_zsp("init", env=home).returncode == 0
    u = run_zsp("user", "add", "alice", "--key", f"{key}.pub", "--role", "operator", "--role", "admin", env=home)
    assert u.returncode == 0, u.stderr
    main = tmp_path / "xdg" / "zsp"
    before = sorted(p.name for p in main.iterdir())
    demo = Demo([], home)
    try:
        assert "listening on" in demo.text, demo.text + (demo.proc.stderr.read() if demo.proc.poll() is not None
                                                          and demo.proc.stderr else "")
        assert f"data {tmp_path / 'xdg' / 'zsp-demo'}" in demo.text
    finally:
        demo.stop()
    refused = run_zsp("serve", "--demo", "--data", str(main), "--listen", "127.0.0.1:0", env=home)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "without --data" in refused.stderr, refused.stderr
    assert "--as" not in refused.stderr
    no_traceback(refused)
    assert sorted(p.name for p in main.iterdir()) == before  # nothing written into the installation
    users = run_zsp("user", "list", "--json", env=home)
    assert "demo-operator" not in users.stdout
