"""The SSH surface under abuse (docs/RELIABILITY.md, rows A5-A9): requests before authentication,
switching user name and key between attempts, hostile TERM values, 1,000-character names, and a
flood from many source addresses while another user's session runs.

A real `zsp serve` over loopback; paramiko transports driven by hand for what OpenSSH never sends,
asyncssh and OpenSSH clients for the rest.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from replay import Outcome, load
from tests.bastion_env import Env, make_env, tracebacks
from tests.raw_ssh import RawClient, packet, string
from tests.test_bastion_limits import PROMPT, _add_carol, _Holder

HOSTILE = ("\x1b", "\x07", "\x9b", "\r", "\x00")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path)
    e.start()
    try:
        yield e
    finally:
        e.stop()
    assert not tracebacks(e.output), tracebacks(e.output)


def _transport(env: Env) -> paramiko.Transport:
    """Key exchange done, nothing authenticated."""
    t = paramiko.Transport(socket.create_connection(("127.0.0.1", env.port), timeout=10))
    t.start_client(timeout=10)
    return t


def _key(env: Env, user: str) -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key.from_private_key_file(str(env.keys[user]))


def _whoami(t: paramiko.Transport) -> str:
    ch = t.open_session(timeout=10)
    ch.exec_command("whoami")
    out = b""
    while chunk := ch.recv(4096):
        out += chunk
    return out.decode()


def _still_serves(env: Env) -> None:
    p = env.ssh("alice", "zsp", "whoami")
    assert p.returncode == 0 and p.stdout.startswith("alice"), p.stderr


def _events(env: Env, name: str) -> list:
    return [e for e in env.svc.audit_events() if e.event == name]


# --- A5: requests before authentication (CVE-2018-7749) -------------------------------------------


@pytest.mark.parametrize("request_kind", ["session", "direct-tcpip", "tcpip-forward"])
def test_a_request_before_authentication_is_a_disconnect(env: Env, request_kind: str) -> None:
    env.grant()
    t = _transport(env)
    try:
        if request_kind == "tcpip-forward":
            reply = t.global_request("tcpip-forward", ("127.0.0.1", 0), wait=True)
            assert reply is None  # refused, or the connection was dropped under it
        else:
            with pytest.raises((paramiko.SSHException, EOFError, OSError)):
                if request_kind == "session":
                    t.open_session(timeout=5)
                else:
                    t.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 1), timeout=5)
        deadline = time.monotonic() + 5
        while t.is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not t.is_active(), "the bastion kept a connection that sent a request before authenticating"
    finally:
        t.close()
    assert env.svc.sessions() == []
    assert not [e for e in env.svc.audit_events() if e.event in ("user.login", "session.start")]
    _still_serves(env)


def test_a_request_after_a_failed_attempt_is_a_disconnect(env: Env) -> None:
    t = _transport(env)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey("zsp", _key(env, "mallory"))  # not a registered key
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            t.open_session(timeout=5)
    finally:
        t.close()
    _still_serves(env)


@pytest.mark.parametrize(
    "payload",
    [
        bytes([90]) + string(b"session") + struct.pack(">III", 0, 2 << 20, 32768),  # CHANNEL_OPEN
        bytes([50]) + string(b"alice") + string(b"ssh-connection") + string(b"none"),  # USERAUTH_REQUEST
        bytes([80]) + string(b"tcpip-forward") + b"\x01" + string(b"127.0.0.1") + struct.pack(">I", 0),
        bytes([94]) + struct.pack(">I", 0) + string(b"x" * 100),  # CHANNEL_DATA on no channel
    ],
    ids=["channel-open", "userauth", "global-request", "channel-data"],
)
def test_a_message_out_of_place_before_key_exchange_is_a_disconnect(env: Env, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(b"SSH-2.0-OpenSSH_9.9\r\n" + packet(payload))
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        else:
            pytest.fail("the bastion kept a connection that sent a message out of place before key exchange")
    assert got.startswith(b"SSH-2.0-")  # its banner (and KEXINIT), then it hung up
    assert env.svc.sessions() == []
    _still_serves(env)


# --- A5c: a message out of place in the middle of key exchange (strict KEX) ------------------------


class _Cat:
    """alice's session running ``cat`` on its own connection: what must keep working meanwhile."""

    def __init__(self, env: Env) -> None:
        self.t = _transport(env)
        self.t.auth_publickey("local", _key(env, "alice"))
        self.ch = self.t.open_session(timeout=10)
        self.ch.settimeout(30)
        self.ch.exec_command("cat")

    def echoes(self, line: bytes) -> bool:
        self.ch.sendall(line + b"\n")
        got = b""
        while not got.endswith(line + b"\n"):
            chunk = self.ch.recv(4096)
            if not chunk:
                return False
            got += chunk
        return got == line + b"\n"

    def close(self) -> None:
        self.t.close()


MID_KEX = {
    "service-request": bytes([5]) + string(b"ssh-userauth"),
    "channel-open": bytes([90]) + string(b"session") + struct.pack(">III", 0, 2 << 20, 32768),
}


@pytest.mark.parametrize("stage", ["after-kexinit", "after-ecdh-init"])
@pytest.mark.parametrize("message", list(MID_KEX))
def test_a_message_out_of_place_in_the_middle_of_key_exchange_is_a_disconnect(
    env: Env, stage: str, message: str
) -> None:
    """KEXINIT exchanged (and, later still, the server's ECDH reply and NEWKEYS sent, ours not
    yet), then a SERVICE_REQUEST or CHANNEL_OPEN in the clear: strict KEX allows nothing but key
    exchange there. That client is dropped, with one line on the bastion's output; nothing is
    authenticated; another session running meanwhile keeps working."""
    env.grant()
    other = _Cat(env)
    try:
        assert other.echoes(b"before")
        raw = RawClient(env.port)
        try:
            raw.start_kex()
            if stage == "after-ecdh-init":
                raw.send_ecdh_init()
            raw.send(MID_KEX[message])
            assert raw.wait_closed(), "the bastion kept a connection that broke key exchange"
        finally:
            raw.close()
        assert other.echoes(b"after")
    finally:
        other.close()
    _still_serves(env)
    env.stop()
    assert [e.actor for e in _events(env, "user.login")] == ["alice", "alice"]  # the session's, the check's
    assert not _events(env, "user.login.failure")
    [s] = env.svc.sessions()  # the cat session's only
    assert s.user == "alice" and s.command == "cat"
    said = [line for line in "".join(env.output).splitlines() if "dropped" in line]
    assert len(said) == 1 and "before login: ProtocolError" in said[0], env.output


# --- A5d: a channel with no room: maximum packet size 0, window 0 -----------------------------------


def _open_raw_channel(t: paramiko.Transport, window: int, max_packet: int) -> paramiko.Channel:
    """A session channel opened with exactly these sizes: paramiko clamps them to sane minimums
    unless its sanitizers are bypassed (what a hostile client would send)."""
    t._sanitize_window_size = lambda size: size  # type: ignore[method-assign]
    t._sanitize_packet_size = lambda size: size  # type: ignore[method-assign]
    return t.open_channel("session", window_size=window, max_packet_size=max_packet, timeout=10)


@pytest.mark.parametrize("window", [0, 2 << 20], ids=["window-0", "window-2m"])
def test_a_channel_with_a_maximum_packet_size_of_0_drops_that_connection_only(env: Env, window: int) -> None:
    """asyncssh refuses a channel that could never carry a byte (a protocol error: that
    connection ends, said on the bastion's output); alice's other session is untouched."""
    env.grant()
    other = _Cat(env)
    try:
        assert other.echoes(b"before")
        t = _transport(env)
        try:
            t.auth_publickey("local", _key(env, "alice"))
            with pytest.raises((paramiko.SSHException, EOFError, OSError)):
                _open_raw_channel(t, window, 0)
            deadline = time.monotonic() + 10
            while t.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not t.is_active(), "the bastion kept a connection that opened a channel with no room"
        finally:
            t.close()
        assert other.echoes(b"after")
    finally:
        other.close()
    _still_serves(env)
    env.stop()
    [s] = env.svc.sessions()  # the cat session's only
    assert s.command == "cat"
    said = [line for line in "".join(env.output).splitlines() if "dropped" in line]
    assert len(said) == 1 and "(alice): ProtocolError: Invalid maximum packet size" in said[0], env.output


def test_a_channel_opened_with_a_window_of_0_waits_for_room_then_runs(env: Env) -> None:
    """Window 0 is legal: the bastion may send nothing until the client adjusts it. The session
    waits (no busy loop, nothing lost), then runs to its end once room is given."""
    env.grant()
    t = _transport(env)
    try:
        t.auth_publickey("local", _key(env, "alice"))
        ch = _open_raw_channel(t, 0, 32768)
        ch.settimeout(30)
        ch.exec_command("echo window-ok")
        _still_serves(env)  # the bastion answers others meanwhile
        m = paramiko.Message()
        m.add_byte(bytes([93]))  # CHANNEL_WINDOW_ADJUST
        m.add_int(ch.remote_chanid)
        m.add_int(1 << 20)
        t._send_user_message(m)
        out = b""
        while chunk := ch.recv(4096):
            out += chunk
        assert out == b"window-ok\n" and ch.recv_exit_status() == 0
    finally:
        t.close()
    [s] = env.svc.sessions()
    _frames, report = load(s.path, env.data.trusted_keys())
    assert report.outcome is Outcome.VALID


# --- A6: user name and key switched between attempts (CVE-2023-48712, CVE-2024-45337) -------------


@pytest.fixture
def one_service_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let paramiko make several attempts on one connection as OpenSSH does: paramiko asks for the
    ``ssh-userauth`` service again before every attempt, which asyncssh refuses (a disconnect, "Unexpected
    service in service request"); here it asks once, then sends each USERAUTH_REQUEST straight away."""
    original = paramiko.auth_handler.AuthHandler._request_auth

    def request_auth(self: paramiko.auth_handler.AuthHandler) -> None:
        if not getattr(self.transport, "_zsp_service_accepted", False):
            self.transport._zsp_service_accepted = True  # type: ignore[attr-defined]
            original(self)
            return
        m = paramiko.Message()
        m.add_string("ssh-userauth")
        m.rewind()
        self._parse_service_accept(m)

    monkeypatch.setattr(paramiko.auth_handler.AuthHandler, "_request_auth", request_auth)


def _forged(env: Env, claimed: str, signer: str) -> paramiko.Ed25519Key:
    """``claimed``'s public key, but signatures made with ``signer``'s private key: offering it is an
    attempt to authenticate as ``claimed`` that must fail."""
    key = _key(env, claimed)
    key.sign_ssh_data = _key(env, signer).sign_ssh_data  # type: ignore[method-assign]
    return key


@pytest.mark.parametrize("first_user", ["zsp", "local", "root@local"])
@pytest.mark.usefixtures("one_service_request")
def test_a_failed_attempt_as_the_admin_then_another_key_is_that_key_s_owner(env: Env, first_user: str) -> None:
    """alice is an admin; bob only approves. A failed attempt with alice's key (bad signature, under
    any SSH user name) then a good one with bob's key: the connection is bob's, never alice's."""
    t = _transport(env)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey(first_user, _forged(env, "alice", "mallory"))
        assert not t.is_authenticated()
        t.auth_publickey("zsp", _key(env, "bob"))
        who = _whoami(t)
    finally:
        t.close()
    assert who.startswith("bob") and "alice" not in who
    logins = _events(env, "user.login")
    assert logins and logins[-1].actor == "bob"


@pytest.mark.usefixtures("one_service_request")
def test_switching_the_ssh_user_name_after_a_good_key_keeps_the_key_s_owner(env: Env) -> None:
    """An unregistered key under one name, then alice's under another: identity is alice, bound
    from the key whose signature was checked; the user name only names where to go."""
    t = _transport(env)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey("local", _key(env, "mallory"))
        t.auth_publickey("zsp", _key(env, "alice"))
        assert _whoami(t).startswith("alice")
    finally:
        t.close()


# --- A7: hostile TERM values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "term",
    ["\x1b]0;pwned\x07xterm", "x" * 1000, "xterm\r\n[zsp] VALID", "xterm;touch /tmp/zsp-term-$$"],
    ids=["osc-title", "1000-chars", "forged-line", "shell-meta"],
)
def test_a_hostile_term_is_recorded_exactly_and_never_printed_raw(env: Env, tmp_path: Path, term: str) -> None:
    env.grant()

    async def session() -> tuple[int | None, bytes]:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            proc = await conn.create_process("echo term-ok; exit 0", term_type=term, encoding=None)
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            await proc.wait_closed()
            return proc.exit_status, out

    status, out = asyncio.run(session())
    assert status == 0 and b"term-ok" in out
    [s] = env.svc.sessions()
    _frames, report = load(s.path, env.data.trusted_keys())
    assert report.outcome is Outcome.VALID
    assert report.header is not None and report.header.term == term  # evidence keeps the exact value
    # Everything that shows the session to a person escapes it; --json gives it back exactly.
    zsp = [sys.executable, "-m", "zsp_tui"]
    for argv in (["sessions"], ["verify", s.id], ["play", s.id, "--instant"]):
        p = subprocess.run([*zsp, *argv, "--data", str(env.data.root)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        for bad in HOSTILE:
            assert bad not in p.stdout and bad not in p.stderr, (argv, bad)
        assert "[zsp] VALID" not in p.stdout.splitlines()
    p = subprocess.run([*zsp, "verify", s.id, "--json", "--data", str(env.data.root)], capture_output=True, text=True)
    assert json.loads(p.stdout)[0]["outcome"] == "VALID"
    _still_serves(env)


@pytest.mark.parametrize("term", ["\x9b2Jxterm", "\u00e9" * 10], ids=["c1-csi", "non-ascii"])
def test_a_term_that_is_not_ascii_text_is_refused_before_any_session(env: Env, term: str) -> None:
    """asyncssh refuses a pty request whose TERM is not ASCII (a protocol error: the connection
    ends); nothing is recorded, and the bastion serves the next client."""
    env.grant()

    async def session() -> None:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            await conn.create_process("echo should-not-run", term_type=term, encoding=None)

    with pytest.raises((asyncssh.Error, OSError)):
        asyncio.run(session())
    assert env.svc.sessions() == []
    _still_serves(env)


NUL_TERM = "xterm\x00evil"
NUL_REFUSAL = b"zsp: a NUL byte in the terminal type (TERM) is not accepted"


def _nul_refusals(env: Env, field: str) -> list:
    return [
        e
        for e in _events(env, "session.refused")
        if e.fields.get("reason") == "nul-byte" and e.fields["field"] == field
    ]


def _asyncssh_nul_term(env: Env, ssh_user: str, command: str | None) -> tuple[int | None, bytes, bytes]:
    async def session() -> tuple[int | None, bytes, bytes]:
        async with asyncssh.connect("127.0.0.1", username=ssh_user, **env.asyncssh_options("alice")) as conn:
            proc = await conn.create_process(command, term_type=NUL_TERM, encoding=None)
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            err = await asyncio.wait_for(proc.stderr.read(), 20)
            await proc.wait_closed()
            return proc.exit_status, out, err

    return asyncio.run(session())


def _paramiko_nul_term(env: Env, ssh_user: str) -> tuple[int, bytes]:
    """paramiko's ``invoke_shell(term=...)``: a pty request, then a shell; the PTY merges stderr."""
    t = _transport(env)
    try:
        t.auth_publickey(ssh_user, _key(env, "alice"))
        ch = t.open_session(timeout=10)
        ch.settimeout(20)
        ch.get_pty(term=NUL_TERM)
        ch.invoke_shell()
        out = b""
        while chunk := ch.recv(4096):
            out += chunk
        return ch.recv_exit_status(), out + ch.recv_stderr(4096)
    finally:
        t.close()


def test_a_term_with_a_nul_is_refused_before_any_session_with_a_clear_audited_reason(env: Env) -> None:
    """asyncssh takes a NUL as ASCII, so the pty request reaches the bastion; no shell can be given
    such a TERM (it once ended the session at once, exit 255 and no message). Refused like a NUL in
    the user name or command: one clear line, exit 1, audited, nothing recorded."""
    env.grant()
    status, out, err = _asyncssh_nul_term(env, "local", "echo should-not-run")
    assert (status, out) == (1, b"") and err.strip() == NUL_REFUSAL
    status2, merged = _paramiko_nul_term(env, "local")
    assert status2 == 1 and NUL_REFUSAL in merged and b"should-not-run" not in merged
    assert env.svc.sessions() == []
    refusals = _nul_refusals(env, "term")
    assert len(refusals) == 2 and all(e.actor == "alice" and e.outcome == "failure" for e in refusals)
    assert "\x00" not in json.dumps([e.to_json() for e in env.svc.audit_events()])
    _still_serves(env)


def test_a_term_with_a_nul_never_reaches_a_real_sshd_target(remote_env: Env) -> None:
    """OpenSSH's sshd drops the connection on such a pty request (the session would end as
    "refused the session: Connection lost"): the bastion refuses it first, before connecting."""
    env = remote_env
    login = env.svc.target("srv").logins[0]
    env.grant("srv", login)
    status, out, err = _asyncssh_nul_term(env, f"{login}@srv", None)
    assert (status, out) == (1, b"") and err.strip() == NUL_REFUSAL
    status2, merged = _paramiko_nul_term(env, f"{login}@srv")
    assert status2 == 1 and NUL_REFUSAL in merged
    assert env.svc.sessions() == [] and len(_nul_refusals(env, "term")) == 2
    assert not _events(env, "upstream.error")
    _still_serves(env)


def test_a_nul_in_the_user_name_or_command_is_refused_and_audited(env: Env) -> None:
    """A user name with a NUL never gets past asyncssh (SASLprep prohibits it: the connection ends
    before authentication); a command with one is refused like the TERM above."""
    env.grant()
    t = _transport(env)
    try:
        with pytest.raises(paramiko.SSHException):
            t.auth_publickey("local\x00root", _key(env, "alice"))
    finally:
        t.close()
    assert not _events(env, "user.login")
    t = _transport(env)
    try:
        t.auth_publickey("local", _key(env, "alice"))
        ch = t.open_session(timeout=10)
        ch.settimeout(20)
        ch.exec_command(b"echo should-not-run\x00; id")
        assert ch.recv_exit_status() == 1
        assert ch.recv_stderr(4096).strip() == b"zsp: a NUL byte in the command is not accepted"
    finally:
        t.close()
    assert env.svc.sessions() == []
    assert len(_nul_refusals(env, "command")) == 1
    _still_serves(env)


@pytest.mark.parametrize(
    "env_vars",
    [{"LANG": "C\x00evil"}, {"LC_ALL=x": "C"}, {"LC_\u00e9": "C"}],
    ids=["nul-value", "equals-name", "wide-name"],
)
def test_locale_variables_no_process_can_take_are_dropped_not_fatal(env: Env, env_vars: dict[str, str]) -> None:
    """Only LANG and LC_* pass to the target; a value with a NUL or a name with ``=`` could not be
    given to a local shell (it once ended the session at once): dropped, the session runs."""
    env.grant()

    async def session() -> tuple[int | None, bytes]:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            proc = await conn.create_process(
                "echo env-ok; env | grep -c evil; exit 0", env={**env_vars, "LC_TIME": "C"}, encoding=None
            )
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            await proc.wait_closed()
            return proc.exit_status, out

    status, out = asyncio.run(session())
    assert status == 0 and out.split() == [b"env-ok", b"0"]
    [s] = env.svc.sessions()
    _frames, report = load(s.path, env.data.trusted_keys())
    assert report.outcome is Outcome.VALID
    assert report.header is not None and report.header.extra["env"] == {"LC_TIME": "C"}


# --- A8: 1,000-character names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ssh_user",
    ["u" * 1000, "root@" + "t" * 995, "l" * 995 + "@local", "\u00e9" * 1000],
    ids=["user", "target", "login", "wide"],
)
def test_a_1000_character_user_name_is_refused_and_audited_bounded(env: Env, ssh_user: str) -> None:
    env.grant()
    p = env.ssh("alice", ssh_user, "echo should-not-run")
    assert p.returncode == 255 and "should-not-run" not in p.stdout
    assert env.svc.sessions() == []
    _still_serves(env)
    # Whatever the audit log holds of it is capped, not the whole name.
    for e in env.svc.audit_events():
        assert len(json.dumps(e.to_json())) < 4096


@pytest.mark.parametrize(
    "argv",
    [
        ("request", "t" * 1000, "--for", "1h", "--reason", "x"),
        ("request", "local", "--login", "l" * 1000, "--for", "1h", "--reason", "x"),
        ("request", "local", "--for", "1h", "--reason", "r" * 1000),
        ("approve", "r-" + "a" * 1000),
        ("revoke", "r-" + "a" * 1000),
    ],
    ids=["target", "login", "reason", "approve-id", "revoke-id"],
)
def test_1000_character_control_arguments_get_one_clear_line(env: Env, argv: tuple[str, ...]) -> None:
    p = env.ssh("alice", "zsp", *argv)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert lines and len(lines) <= 2, p.stderr
    assert "Traceback" not in p.stderr
    for e in env.svc.audit_events():
        assert len(json.dumps(e.to_json())) < 8192
    _still_serves(env)


# --- A9: a flood from many source addresses while a session runs -----------------------------------


def test_a_running_session_keeps_working_through_a_flood_from_49_addresses(tmp_path: Path) -> None:
    env = make_env(tmp_path)  # default limits: 64 unauthenticated per address, 256 in all
    _add_carol(env)
    env.start()
    holder = _Holder(env.port, [f"127.0.0.{i}" for i in range(2, 51)], 8)  # 392 connections
    lines = [f"line-{i}-through-the-flood" for i in range(20)]

    async def carol_types() -> list[float]:
        waits = []
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("carol")) as conn:
            proc = await conn.create_process("cat", encoding=None)
            await asyncio.sleep(0.5)
            holder.fill()
            holder.thread.start()  # every connection the bastion closes is reopened at once
            await asyncio.sleep(1.0)
            for line in lines:
                t0 = time.monotonic()
                proc.stdin.write(line.encode() + b"\n")
                echoed = await asyncio.wait_for(proc.stdout.readline(), 30)
                waits.append(time.monotonic() - t0)
                assert echoed == line.encode() + b"\n"
                await asyncio.sleep(0.05)
            proc.stdin.write_eof()
            await asyncio.wait_for(proc.wait_closed(), 10)
        return waits

    try:
        waits = asyncio.run(carol_types())
        assert max(waits) < PROMPT, f"an echo took {max(waits):.1f}s during the flood"
        took, p = time.monotonic(), env.ssh("alice", "zsp", "whoami", timeout=30)
        assert p.returncode == 0 and p.stdout.startswith("alice") and time.monotonic() - took < PROMPT
        assert holder.closed_by_server > 0  # the flood was pushed back, not let in
    finally:
        holder.close()
        env.stop()
    [s] = [s for s in env.svc.sessions() if s.user == "carol"]
    frames, report = load(s.path, env.data.trusted_keys())
    assert report.outcome is Outcome.VALID
    typed = b"".join(f.data for f in frames if f.kind.name == "INPUT")
    assert typed == b"".join(line.encode() + b"\n" for line in lines)
