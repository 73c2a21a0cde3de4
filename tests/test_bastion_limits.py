"""One user, or one address, cannot lock everyone else out: a real `zsp serve`, real OpenSSH and
asyncssh clients, hostile load from its own process or raw sockets on several loopback addresses.

The timing bounds here are liveness checks (a login that starves waits for the 10 s login timeout),
not speed benchmarks: generous, and far from what a starved login takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import asyncssh
import pytest

from recorder import load_trusted_keys
from replay import Outcome, load
from tests.bastion_env import Env, keygen, make_env
from zsp_tui.access import Actor
from zsp_tui.bastion.limits import ControlGate, FairExecutor, Pending
from zsp_tui.config import load_settings
from zsp_tui.exceptions import ConfigError
from zsp_tui.models import Role

PROMPT = 3.0
"""Seconds within which the other user's login and command must finish (login timeout: 10 s)."""
ROOT = Path(__file__).resolve().parent.parent


def _add_carol(env: Env) -> None:
    """A second operator with a grant on local: the user who must not be locked out."""
    env.keys["carol"] = keygen(env.root / "carol_ed25519", "carol")
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.OPERATOR}), [Path(f"{env.keys['carol']}.pub").read_text()])
    env.grant(user="carol")


def _timed(env: Env, user: str, ssh_user: str, *command: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    p = env.ssh(user, ssh_user, *command, timeout=30)
    return time.monotonic() - t0, p


def _events(env: Env, name: str) -> list:
    return [e for e in env.svc.audit_events() if e.event == name]


# --- a control-command flood --------------------------------------------------------------------


def test_another_user_logs_in_and_works_promptly_during_a_control_flood(tmp_path: Path) -> None:
    env = make_env(tmp_path)  # default limits
    _add_carol(env)
    env.start()
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.flood_client", "control", str(env.port), str(env.keys["alice"]),
         str(env.known_hosts), "14", "16", "12"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(4)  # let the flood fill whatever it can
        assert flood.poll() is None, flood.stderr.read() if flood.stderr else ""
        for _ in range(3):
            took, p = _timed(env, "carol", "zsp", "whoami")
            assert p.returncode == 0 and p.stdout.startswith("carol roles=operator"), p.stderr
            assert took < PROMPT, f"whoami took {took:.1f}s during the flood"
            took, p = _timed(env, "carol", "local", "echo carol-was-here")
            assert p.returncode == 0 and p.stdout == "carol-was-here\n", p.stderr
            assert took < PROMPT, f"a session took {took:.1f}s during the flood"
            time.sleep(0.5)
        out, _ = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
        env.stop()
    seen = json.loads(out.strip().splitlines()[-1])
    # The flooder was told no: command rate and channels per connection (connections per user
    # have their own test: on a busy machine the flood may not open 64 in time).
    assert seen.get("rate-refused", 0) > 0, seen
    assert seen.get("channel-refused", 0) > 0, seen
    # Refusals are audited, but at most a few per connection: the log is not the flood's to fill.
    refused = [e for e in _events(env, "channel.refused") if e.actor == "alice"]
    logins = [e for e in _events(env, "user.login") if e.actor == "alice"]
    assert refused and len(refused) <= 10 * len(logins)
    # The other user's session was recorded and verifies.
    mine = [s for s in env.svc.sessions() if s.user == "carol"]
    assert len(mine) == 3
    for s in mine:
        assert load(s.path, load_trusted_keys(env.data.allowed_signers_path))[1].outcome is Outcome.VALID


def test_control_commands_are_rate_limited_per_user_with_one_clear_line(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\ncontrol_rate = 1\ncontrol_burst = 3\n")
    _add_carol(env)
    env.start()
    try:

        async def burst() -> list[asyncssh.SSHCompletedProcess]:
            async with asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options("alice")) as conn:
                return [await conn.run("whoami", check=False) for _ in range(15)]

        started = time.monotonic()
        results = asyncio.run(burst())
        took = time.monotonic() - started
        ok = [r for r in results if r.exit_status == 0]
        refused = [r for r in results if r.exit_status != 0]
        # The burst, plus what refilled (1 a second) while the 15 ran: about a second unloaded, more
        # on a loaded machine; bounded by how long they took, not by a guess at it.
        assert 3 <= len(ok) <= 3 + int(took) + 1 and refused, (len(ok), took)
        for r in refused:
            err = str(r.stderr or "")
            assert r.exit_status == 1 and err.count("\n") == 1
            assert "too many control commands from alice" in err and "1 a second" in err
        # Another user has a bucket of their own.
        assert env.ssh("carol", "zsp", "whoami").returncode == 0
        # And alice's refills.
        time.sleep(1.2)
        assert env.ssh("alice", "zsp", "whoami").returncode == 0
        audited = [e for e in _events(env, "channel.refused") if e.fields.get("kind") == "control-limit"]
        assert 1 <= len(audited) <= 10 and all(e.actor == "alice" for e in audited)
    finally:
        env.stop()


def test_concurrent_control_commands_per_user_are_capped(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_control_per_user = 2\ncontrol_burst = 100\ncontrol_rate = 100\n")
    env.start()
    try:

        async def many() -> list[asyncssh.SSHCompletedProcess]:
            opts = env.asyncssh_options("alice")
            conns = [await asyncssh.connect("127.0.0.1", username="zsp", **opts) for _ in range(4)]
            try:
                return list(
                    await asyncio.gather(*(c.run("grants --json", check=False) for c in conns for _ in range(5)))
                )
            finally:
                for c in conns:
                    c.close()
                    await c.wait_closed()

        results = asyncio.run(many())
        busy = [r for r in results if "control commands running" in str(r.stderr or "")]
        assert busy and all(r.exit_status == 1 for r in busy)
        assert any(r.exit_status == 0 for r in results)
    finally:
        env.stop()


# --- connections and channels per user ----------------------------------------------------------


def test_per_user_connection_and_channel_caps(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_connections_per_user = 2\nmax_channels_per_connection = 2\n")
    _add_carol(env)
    env.grant()
    env.start()
    try:

        async def scenario() -> None:
            opts = env.asyncssh_options("alice")
            held: list[asyncssh.SSHClientConnection] = []
            try:
                held.append(a1 := await asyncssh.connect("127.0.0.1", username="local", **opts))
                held.append(a2 := await asyncssh.connect("127.0.0.1", username="zsp", **opts))
                # A third is refused right after authentication, with the reason (OpenSSH shows it).
                p = await asyncio.to_thread(env.ssh, "alice", "zsp", "whoami")
                assert p.returncode == 255 and "alice already has 2 connections open (limit)" in p.stderr
                assert "alice roles" not in p.stdout
                # Another user is not counted against alice.
                held.append(c := await asyncssh.connect("127.0.0.1", username="zsp", **env.asyncssh_options("carol")))
                assert (await c.run("whoami", check=False)).exit_status == 0
                # Two channels at once on a connection, not three.
                p1 = await a1.create_process("sleep 30")
                p2 = await a1.create_process("sleep 30")
                with pytest.raises(asyncssh.ChannelOpenError, match="too many channels on this connection"):
                    await a1.create_process("true")
                for proc in (p1, p2):
                    proc.close()
                    await proc.wait_closed()
                await asyncio.sleep(0.3)
                assert (await a1.run("echo again", check=False)).stdout == "again\n"
                # Closing a connection frees its place.
                a2.close()
                await a2.wait_closed()
                await asyncio.sleep(0.3)
                held.append(a3 := await asyncssh.connect("127.0.0.1", username="zsp", **opts))
                assert (await a3.run("whoami", check=False)).exit_status == 0
            finally:
                for conn in held:
                    conn.close()
                    await conn.wait_closed()

        asyncio.run(scenario())
        refused = [e for e in _events(env, "channel.refused") if e.fields.get("kind") == "channel-limit"]
        assert refused and refused[0].actor == "alice"
        failures = [e for e in _events(env, "user.login.failure") if "connections open" in e.message]
        assert failures, "a login refused for the connection cap is in the audit log"
        # ...and is not counted as a failed authentication from that address.
        assert env.ssh("alice", "zsp", "whoami").returncode == 0
    finally:
        env.stop()


# --- unauthenticated connections from many addresses --------------------------------------------


class _Holder:
    """Raw TCP connections that never authenticate, kept at ``per_source`` from each address and
    reopened as soon as the bastion closes one (from a thread, while the test logs in)."""

    def __init__(self, port: int, sources: list[str], per_source: int) -> None:
        self.port, self.sources, self.per_source = port, sources, per_source
        self.sel = selectors.DefaultSelector()
        self.open: dict[str, int] = dict.fromkeys(sources, 0)
        self.closed_by_server = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self, src: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.connect(("127.0.0.1", self.port))
        s.sendall(b"SSH-2.0-flood\r\n")
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, src)
        self.open[src] += 1

    def fill(self) -> None:
        for src in self.sources:
            while self.open[src] < self.per_source:
                self._connect(src)

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(s)
                    s.close()
                    self.open[key.data] -= 1
                    self.closed_by_server += 1
            if not self.stop.is_set():
                self.fill()

    def still_open(self) -> int:
        """Connections the bastion has not closed (reads what is waiting; before the thread runs)."""
        alive = 0
        for key in list(self.sel.get_map().values()):
            s: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                while s.recv(65536):
                    pass
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()


def test_unauthenticated_flood_from_many_addresses_is_capped_and_leaves_room(tmp_path: Path) -> None:
    env = make_env(tmp_path)  # default limits: 64 per address, 256 in all
    env.start()
    # A dozen loopback addresses, 64 each: 768 connections held before the global cap existed.
    holder = _Holder(env.port, [f"127.0.0.{i}" for i in range(2, 14)], 64)
    try:
        holder.fill()
        time.sleep(1.0)
        assert holder.still_open() <= 256
        holder.thread.start()  # from now on every closed connection is reopened at once
        time.sleep(1.0)
        for _ in range(3):
            took, p = _timed(env, "alice", "zsp", "whoami")
            assert p.returncode == 0 and p.stdout.startswith("alice"), p.stderr
            assert took < PROMPT, f"login took {took:.1f}s during the flood"
        assert holder.closed_by_server > 0
    finally:
        holder.close()
        env.stop()


def test_a_crowd_of_addresses_cannot_displace_a_login_in_progress(tmp_path: Path) -> None:
    # A small global cap, flooded from more addresses than it holds: a login still gets through,
    # because the flooders' own crowded addresses give up their connections first.
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_unauthenticated = 20\nmax_unauthenticated_per_source = 4\n")
    env.start()
    holder = _Holder(env.port, [f"127.0.1.{i}" for i in range(1, 11)], 4)
    try:
        holder.fill()
        time.sleep(1.0)
        assert holder.still_open() <= 20
        holder.thread.start()
        time.sleep(1.0)
        for _ in range(3):
            took, p = _timed(env, "alice", "zsp", "whoami")
            assert p.returncode == 0, p.stderr
            assert took < PROMPT
    finally:
        holder.close()
        env.stop()


# --- the pieces, deterministically --------------------------------------------------------------


def test_fair_executor_serves_lanes_in_turn() -> None:
    ex = FairExecutor("test")
    gate = threading.Event()
    order: list[str] = []
    try:
        first = ex.submit("a", gate.wait)
        time.sleep(0.05)  # the worker is now busy with "a"'s first job
        flood = [ex.submit("a", lambda i=i: order.append(f"a{i}")) for i in range(100)]
        other = ex.submit("b", lambda: order.append("b"))
        gate.set()
        other.result(5)
        for f in (first, *flood):
            f.result(5)
        assert order.index("b") <= 1  # behind at most one of "a"'s hundred
        failing: Future[None] = ex.submit("c", lambda: 1 / 0)  # type: ignore[func-returns-value]
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
        assert ex.submit("c", lambda: 42).result(5) == 42  # an error does not stop the worker
    finally:
        gate.set()
        ex.shutdown()


def test_control_gate_rate_burst_and_concurrency() -> None:
    now = [0.0]
    g = ControlGate(rate=2, burst=3, concurrent=2, clock=lambda: now[0])
    assert g.enter("a") is None and g.enter("a") is None
    assert "2 control commands running" in (g.enter("a") or "")
    g.leave("a")
    g.leave("a")
    assert g.enter("a") is None
    g.leave("a")
    assert "too many control commands" in (g.enter("a") or "")  # three used, none refilled
    assert g.enter("b") is None  # another user's bucket
    now[0] += 0.5  # one token back
    assert g.enter("a") is None
    g.leave("a")
    assert g.enter("a") is not None


def test_pending_displaces_the_busiest_address_first() -> None:
    now = [0.0]
    p: Pending[str] = Pending(per_source=3, total=5, clock=lambda: now[0])

    def admit(ip: str, key: str) -> tuple[bool, str | None]:
        now[0] += 1
        return p.admit(ip, key)

    for i in range(3):
        assert admit("10.0.0.1", f"x{i}") == (True, None)
    assert admit("10.0.0.1", "x3") == (False, None)  # per-address cap
    assert admit("10.0.0.2", "y0") == (True, None)
    assert admit("10.0.0.3", "z0") == (True, None)
    assert len(p) == 5
    # Full: the newcomer displaces the busiest address's oldest, never the lone ones.
    assert admit("10.0.0.4", "w0") == (True, "x0")
    assert admit("10.0.0.5", "v0") == (True, "x1")
    # Now every address holds one: a random one goes, never one that is authenticating while
    # others are not (a real login in progress, under a flood of idle connections).
    p.authenticating("y0", "10.0.0.2")
    ok, gone = admit("10.0.0.6", "u0")
    assert ok and gone in {"x2", "z0", "w0", "v0"}
    seen = {gone}
    for i in range(40):
        ok, gone = admit(f"10.1.0.{i}", f"n{i}")
        assert ok and gone != "y0"
        seen.add(gone)
    assert len(seen) > 5  # spread over the addresses, not always the oldest
    assert p.on("10.0.0.2") == 1 and len(p) == 5
    assert p.remove("y0", "10.0.0.2") and not p.remove("y0", "10.0.0.2")
    assert len(p) == 4


def test_new_limits_are_read_from_zsp_toml_and_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "zsp.toml"
    cfg.write_text(
        "[bastion]\nmax_connections_per_user = 3\nmax_channels_per_connection = 2\ncontrol_rate = 7\n"
        "control_burst = 9\nmax_control_per_user = 1\nmax_unauthenticated = 50\n"
    )
    assert load_settings(cfg).bastion == {
        "max_connections_per_user": 3,
        "max_channels_per_connection": 2,
        "control_rate": 7,
        "control_burst": 9,
        "max_control_per_user": 1,
        "max_unauthenticated": 50,
    }
    for bad in ("control_rate = 0", "max_unauthenticated = -1", 'max_connections_per_user = "2"', "control_rate = 1.5"):
        cfg.write_text(f"[bastion]\n{bad}\n")
        with pytest.raises(ConfigError, match="must be an integer"):
            load_settings(cfg)


def _unanswering_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A TCP port whose accept queue is full: new connections hang until they time out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(8):  # fill the backlog; later connects wait for a SYN-ACK that never comes
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(server.getsockname())
        fillers.append(c)
    return server, fillers


def test_a_hung_audit_sink_delays_nobody(tmp_path: Path) -> None:
    """A syslog collector that never answers: logins, control commands and sessions go on at
    their pace (each sink sends from its own thread); the database keeps every event."""
    server, fillers = _unanswering_listener()
    env = make_env(tmp_path)
    env.configure(f'[audit]\nsyslog = "tcp://127.0.0.1:{server.getsockname()[1]}"\n')
    env.start()
    try:
        env.grant()
        for _ in range(3):
            started = time.monotonic()
            p = env.ssh("alice", "zsp", "whoami")
            assert p.returncode == 0, p.stderr
            assert time.monotonic() - started < 3.0  # a sink send would hold it for 5 s each time
        started = time.monotonic()
        p = env.ssh("alice", "local", "echo through")
        assert p.returncode == 0 and p.stdout.strip() == "through"
        assert time.monotonic() - started < 3.0
        assert any(e.event == "session.end" for e in env.svc.audit_events())
    finally:
        env.stop()
        for c in fillers:
            c.close()
        server.close()


def test_background_sink_never_blocks_and_bounds_what_waits() -> None:
    from zsp_tui.sinks import BackgroundSink

    release = threading.Event()
    got: list[str] = []

    class Stuck:
        name = "stuck"

        def send(self, events) -> None:
            release.wait(10)
            got.extend(e for e in events)

    sink = BackgroundSink(Stuck(), max_pending=5)
    started = time.monotonic()
    sink.send(["first"])  # taken by the thread, which then hangs in send
    time.sleep(0.2)
    sink.send([f"e{i}" for i in range(8)])  # 5 wait, 3 are dropped
    assert time.monotonic() - started < 1.0 and sink.dropped == 3
    release.set()
    sink.close()
    assert got == ["first", "e0", "e1", "e2", "e3", "e4"]
