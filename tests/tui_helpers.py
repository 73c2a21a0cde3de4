"""A data dir for the review app's tests, filled with real sessions recorded through the real
bastion (OpenSSH-compatible paramiko clients, a real sshd target), built once per test run and
copied for each test that wants it (``reviewed`` fixture in tests/conftest.py).

Users: alice (operator, admin), bob (approver), carol (reviewer), dave (operator only).
Sessions (``ReviewData.ids``):
- ``shell``: alice's interactive shell on the sshd target ``srv`` (commands, colour output, a
  marker line ``kubectl delete pod web-7f``), sealed;
- ``exec``: alice's ``echo hello-exec; exit 3`` on ``local``, sealed;
- ``local``: alice's interactive shell on ``local`` with ``printf`` of 300 numbered lines, sealed.
Every recording is indexed for search. One pending request: dave asks for ``srv`` (``pending``).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import paramiko

from tests.bastion_env import keygen, make_env
from tests.helpers import read_until
from zsp_tui.access import AccessService, Actor
from zsp_tui.datadir import DataDir
from zsp_tui.models import Role

__all__ = ["ReviewData", "build_template", "copy_reviewed"]


@dataclass
class ReviewData:
    root: Path
    data: DataDir
    svc: AccessService
    ids: dict[str, str]
    """Name (``shell``, ``exec``, ``local``) -> session id."""
    pending: str
    """Id of dave's pending request."""
    keys: dict[str, Path]


def _shell(env, ssh_user: str, lines: list[bytes], done: bytes) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username=ssh_user, key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.invoke_shell(term="xterm-256color", width=80, height=24)
        buf = b""
        end = time.monotonic() + 15
        while not re.search(rb"[#$] $", buf):
            if time.monotonic() > end:
                raise AssertionError(f"no shell prompt in {buf[-300:]!r}")
            buf += chan.recv(65536) if chan.recv_ready() else b""
            time.sleep(0.02)
        for line in lines:
            chan.send(line + b"\r")
            time.sleep(0.3)
        buf = read_until(chan, buf, done)
        time.sleep(0.3)
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()


def build_template(root: Path) -> ReviewData:
    env = make_env(root, with_sshd=True)
    try:
        for name, role in (("carol", Role.REVIEWER), ("dave", Role.OPERATOR)):
            env.keys[name] = keygen(root / f"{name}_ed25519", name)
            env.svc.add_user(Actor("alice"), name, frozenset({role}), [Path(f"{env.keys[name]}.pub").read_text()])
        env.start()
        env.grant(target="srv")
        _shell(env, f"{env.svc.target('srv').default_login}@srv", [
            b"echo kubectl delete pod web-7f",
            b"printf '\\033[31mred\\033[0m plain\\n'",
            b"ls / | head -3",
            b"echo DONE-$((6*7))",
        ], b"DONE-42")
        env.grant()
        p = env.ssh("alice", "local", "echo hello-exec; exit 3")
        assert p.returncode == 3, p.stderr
        _shell(env, "local", [b"for i in $(seq 1 300); do echo line-$i; done", b"echo END-$((7*7))"], b"END-49")
        ids: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sessions = env.svc.sessions()
            if len(sessions) == 3 and all(s.ended_at for s in sessions):
                break
            time.sleep(0.1)
        sessions = env.svc.sessions()
        assert len(sessions) == 3, sessions
        ids = {"shell": sessions[0].id, "exec": sessions[1].id, "local": sessions[2].id}
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()
    from zsp_tui.indexing import index_one, open_index

    index = open_index(env.data)
    try:
        for s in sessions:
            index_one(env.data, Path(s.path), index)
    finally:
        index.close()
    pending = env.svc.request(Actor("dave"), "srv", None, timedelta(minutes=20), "INC-9 check disk").id
    return ReviewData(root, env.data, env.svc, ids, pending, env.keys)


def copy_reviewed(template: ReviewData, dest: Path) -> ReviewData:
    """A private copy of the template's data dir under ``dest``, paths in both databases rewritten."""
    old = str(template.data.root)
    shutil.copytree(template.data.root, dest / "data")
    new = str(dest / "data")
    for db, table in (("zsp.db", "sessions"), ("search.db", None)):
        path = dest / "data" / db
        if not path.exists():
            continue
        con = sqlite3.connect(path)
        try:
            tables = [table] if table else [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in tables:
                cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
                if "path" in cols:
                    con.execute(f"UPDATE {t} SET path = replace(path, ?, ?)", (old, new))
            con.commit()
        finally:
            con.close()
    d = DataDir(dest / "data")
    return ReviewData(dest, d, d.service(), dict(template.ids), template.pending, dict(template.keys))
