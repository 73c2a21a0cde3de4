"""A session through the real bastion is searchable with `zsp search` without running any command:
the bastion indexes it when it is sealed, off its event loop (in a child process: it lands a moment
after the session ends, so the tests wait for it, within a liveness bound)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import paramiko

from tests.bastion_env import Env, tracebacks
from tests.helpers import read_until


def search(env: Env, *words: str) -> list[dict]:
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "search", "--data", str(env.data.root), "--json", *words],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert "Traceback" not in p.stderr, p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else []


def sealed(hits: list[dict]) -> bool:
    """Hits, all from a sealed session's indexing (not from a pass over it while it was live)."""
    return bool(hits) and all(h["outcome"] != "LIVE" for h in hits)


def poll(env: Env, *words: str, timeout: float = 60.0, until: Callable[[list[dict]], bool] = bool) -> list[dict]:
    """Search until the hits satisfy ``until`` (default: there are some); the last hits once
    ``timeout`` seconds passed (a liveness bound: the bastion's indexing is asynchronous)."""
    end = time.monotonic() + timeout
    while True:
        hits = search(env, *words)
        if until(hits) or time.monotonic() > end:
            return hits
        time.sleep(0.2)


def test_a_bastion_session_is_searchable_without_any_command(env: Env) -> None:
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        buf = read_until(chan, b"", b"$ ")
        chan.send(b"echo kubectl delete pod web-7f; echo DONE-$((6*7))\r")
        buf = read_until(chan, buf, b"DONE-42")
        time.sleep(0.2)
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    hits = poll(env, "kubectl", "delete", "pod", until=sealed)
    kinds = {h["kind"] for h in hits}
    assert kinds == {"command", "output"}, hits
    cmd = next(h for h in hits if h["kind"] == "command")
    assert cmd["text"] == "echo kubectl delete pod web-7f; echo DONE-$((6*7))"
    assert cmd["user"] == "alice" and cmd["target"] == "local"
    session = env.svc.sessions()[-1]
    assert cmd["session_id"] == session.id and cmd["play"].startswith(f"zsp play --data {env.data.root} {session.id} --from ")
    assert search(env, "DONE-42")  # the output line


def test_an_indexing_failure_never_affects_the_session(tmp_path) -> None:
    from recorder import load_trusted_keys
    from replay import verify
    from tests.bastion_env import make_env

    env = make_env(tmp_path)
    (env.data.root / "search.db").mkdir()  # the index cannot be opened
    env.start()
    env.follow()
    try:
        env.grant()
        p = env.ssh("alice", "local", "echo still-recorded; exit 3")
        assert p.returncode == 3 and "still-recorded" in p.stdout
        s = env.svc.sessions()[-1]
        end = time.monotonic() + 10
        while env.svc.session(s.id).ended_at is None and time.monotonic() < end:
            time.sleep(0.1)
        assert verify(s.path, load_trusted_keys(env.data.allowed_signers_path)).valid
        assert env.ssh("alice", "local", "true").returncode == 0  # the bastion goes on
        # The warning comes from the indexing, after the session: waited for, not raced by the stop.
        assert env.wait_output("zsp: warning: could not index"), "".join(env.output)
    finally:
        env.stop()
    log = "".join(env.output)
    assert "zsp: warning: could not index" in log and not tracebacks(env.output), log


def test_a_live_session_is_searchable_while_it_runs(env: Env) -> None:
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        buf = read_until(chan, b"", b"$ ")
        chan.send(b"echo live-$((6*7))-marker\r")
        buf = read_until(chan, buf, b"live-42-marker")
        hits = poll(env, "live-42-marker")  # checkpoint (2 s) + the bastion's pass (3 s), on a loaded machine
        assert hits and all(h["outcome"] == "LIVE" for h in hits), hits
        assert [h["kind"] for h in hits] == ["output"]
        (cmd,) = poll(env, "--commands-only", "live-$((6*7))-marker")
        assert cmd["kind"] == "command" and cmd["text"] == "echo live-$((6*7))-marker"
        session = env.svc.sessions()[-1]
        assert session.ended_at is None  # still running
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    hits = poll(env, "live-42-marker", until=lambda hits: bool(hits) and all(h["outcome"] == "VALID" for h in hits))
    assert len(hits) == 1 and all(h["outcome"] == "VALID" for h in hits), hits  # replaced at the seal, not added


def test_an_exec_session_replays_without_a_staircase_and_its_command_is_found(env: Env) -> None:
    """Found by a first-time reviewer: `ssh bastion 'cmd'` has no PTY, so its output has bare LFs
    that the operator's terminal showed as CR LF; the player drew a staircase, and the command,
    typed on the ssh command line rather than at a prompt, was in no list and no search."""
    env.grant()
    p = env.ssh("alice", "local", "echo exec-first; echo exec-second; echo exec-third")
    assert p.returncode == 0
    sid = env.svc.sessions()[-1].id
    shown = subprocess.run([sys.executable, "-m", "zsp_tui", "play", sid, "--instant", "--data", str(env.data.root)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:3] == ["exec-first", "exec-second", "exec-third"]
    listed = subprocess.run([sys.executable, "-m", "zsp_tui", "play", sid, "--commands", "--data", str(env.data.root)],
                            capture_output=True, text=True, timeout=60)
    assert "echo exec-first; echo exec-second; echo exec-third" in listed.stdout
    hits = poll(env, "exec-second", "--commands-only", until=sealed)
    assert [h["kind"] for h in hits] == ["command"] and hits[0]["session_id"] == sid and hits[0]["t"] == 0
