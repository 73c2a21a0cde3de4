"""The far side of a session: a PTY shell on this host (``local``) or an SSH login on a target.

Both look the same to the relay: ``readers()`` gives one ``(fd, read)`` pair per output stream
(fd 1 stdout, 2 stderr; ``await read()`` returns the next chunk, b"" at the end), ``write()``
sends input, ``resize()`` changes the window, ``wait()`` gives the exit status, ``close()`` ends it.
The relay awaits each stream's ``read`` itself: no queue and no extra task between the target and
the operator, which matters for keystroke echo.

Remote targets are reached with a certificate minted for this session only: principal = the
login, valid from now until the grant ends, key id naming user, grant and session, and no
permission but ``permit-pty``. The target's host key must equal the pinned one; there is no
trust on first use.

Ending a session ends what runs on the far side, whatever the path (exit, revoke, expiry, the
operator leaving): ``close()`` is idempotent and always releases the PTY or the target connection.
A command still running is stopped first: HUP and TERM, then KILL after a short grace. Locally
that goes to every process of the session (its process group, and any other group it made); on an
SSH target it is the ``signal`` channel request (RFC 4254 6.9), which OpenSSH's sshd (7.9 and
later) delivers with ``killpg`` to the session's process group. Closing the connection alone would
not do: sshd lets a command without a PTY run on after its connection is gone.

sshd refuses the signal request for root logins ("session signalling requires privilege
separation": it does not separate privileges after a root login). So the KILL step also runs
:data:`KILL_SESSION` in a second channel of the same connection: it kills every process in the
command's session, found through /proc (Linux targets; elsewhere it fails harmlessly and closing
the connection is all that is left). That also reaches job-control groups, which sshd's ``killpg``
misses. A process that starts a session of its own (``setsid``, a daemon) is out of reach either
way, as it is when sshd ends a session itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh

from ..local_account import LocalAccount, own_account
from ..models import Target

__all__ = ["LocalUpstream", "SshUpstream", "Upstream", "UpstreamError", "allowed_env"]

_READ = 256 * 1024  # a whole upstream packet (_MAX_PACKET) per read: fewer relay turns and frames
_JOIN = 256 * 1024
_MAX_PENDING = 1 << 20  # input held for a PTY that is not reading, before the relay waits
# Upstream channel: a wide window and large packets, so the target sends fewer, bigger packets
# (the relay's cost is per packet; sshd sends up to what we advertise).
_WINDOW = 8 * 1024 * 1024
_MAX_PACKET = 256 * 1024
# How long a command has after HUP and TERM before KILL, and after KILL before we stop waiting.
STOP_GRACE = 0.5
# Run on the target in a second channel of the session's own connection, when sshd may have refused
# the signal request: KILL every process in the sessions of this connection's other channels. sshd
# forks each channel's command as a session leader, so those are the session leaders whose parent
# is ours (that sshd process), other than our own. /proc/PID/stat: pid (comm) state ppid pgrp session.
KILL_SESSION = (
    "cat /proc/[0-9]*/stat 2>/dev/null | awk -v me=\"$$\" -v pp=\"$PPID\" '"
    r'{ pid = $1; sub(/^.*\) /, ""); ppid[pid] = $2; sid[pid] = $4 } '
    "END { for (p in sid) if (ppid[p] == pp && sid[p] == p && p != me) lead[p] = 1; "
    "for (p in sid) if (sid[p] in lead) print p }' | xargs -r kill -KILL 2>/dev/null; true"
)
# aes-gcm: hardware accelerated, no separate MAC, and far cheaper per packet in asyncssh than
# chacha20-poly1305 or ctr+HMAC. The upstream leg (we are the client) prefers it.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
# The operator leg offers aes-gcm only: OpenSSH clients list chacha20 and ctr before gcm, and the
# client's order wins, so offering ctr would get ctr. Every OpenSSH since 6.2 and paramiko >= 3.3
# speak aes-gcm.
SERVER_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# Key exchange: modern curves and SHA-2 groups only (no SHA-1, no 1024/2048-bit RSA kex).
KEX = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
# Should a ctr cipher ever be negotiated: HMACs run in OpenSSL, asyncssh's umac is Python.
MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512")


Reader = Callable[[], Awaitable[bytes]]


class UpstreamError(Exception):
    """The target could not be reached or refused us; ``event`` names the audit event."""

    def __init__(self, message: str, *, event: str = "upstream.error") -> None:
        self.event = event
        super().__init__(message)


class Upstream(Protocol):
    error: str | None
    """Why the target's connection broke mid-session, if it did (the relay records it)."""

    @property
    def echo_off(self) -> bool:
        """True while the far side has terminal echo off (known for local PTYs only)."""
        ...

    def readers(self) -> list[tuple[int, Reader]]: ...

    async def write(self, data: bytes) -> None:
        """Send input; waits while the target is not reading (bounded memory)."""
        ...

    def write_eof(self) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    async def wait(self) -> int | None: ...

    async def close(self) -> None:
        """Stop whatever still runs (HUP and TERM, then KILL) and release the PTY or connection;
        idempotent, and called on every way a session ends."""
        ...


_ENV_NAME = re.compile(r"LANG|LC_[A-Za-z0-9_]+")


def allowed_env(env: Mapping[str, str]) -> dict[str, str]:
    """Only LANG and LC_* pass to the target (TERM travels with the PTY request), and only names
    and values that a process environment can hold: no ``=`` in a name, no NUL anywhere (a local
    shell could not be started with them, and no target's C strings would keep them whole)."""
    return {k: v for k, v in env.items() if _ENV_NAME.fullmatch(k) and len(v) < 256 and "\x00" not in v}


class LocalUpstream:
    """A shell (or command) in a new PTY on the bastion host, as the user running zsp."""

    def __init__(self, account: LocalAccount | None = None) -> None:
        self.account = account
        """Who the shell runs as (see ``local_account``); None: the bastion's own account."""
        self._master = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._pending = bytearray()
        self._writable = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._eof = False
        self._pipes = False
        self._stopped = False
        self.error: str | None = None  # a local PTY does not break like a connection

    @property
    def echo_off(self) -> bool:
        if self._master < 0:
            return False
        try:
            lflag = termios.tcgetattr(self._master)[3]
        except termios.error:
            return False
        # A password prompt: echo off but still line-buffered (full-screen programs turn both off).
        return not lflag & termios.ECHO and bool(lflag & termios.ICANON)

    async def start(self, command: str | None, term: str | None, size: tuple[int, int], env: Mapping[str, str]) -> None:
        acct = self.account or own_account()
        shell = acct.shell
        # As root, the shell runs as the unprivileged account, so it cannot read the data dir.
        who: dict[str, Any] = {"user": acct.uid, "group": acct.gid, "extra_groups": []} if acct.switch else {}
        argv = [shell, "-c", command] if command else [shell, "-l"]
        child_env = {
            "HOME": acct.home,
            "USER": acct.name,
            "LOGNAME": acct.name,
            "SHELL": shell,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            **allowed_env(env),
        }
        started = False
        try:
            await self._spawn(argv, child_env, acct, who, term, size)
            started = True
        except OSError as exc:  # out of descriptors, processes or PTYs: refuse the session
            raise UpstreamError(f"cannot start a shell on the bastion: {exc.strerror or exc}") from None
        except ValueError as exc:  # an environment no process can take (the server refuses a NUL first)
            raise UpstreamError(f"cannot start a shell on the bastion: {exc}") from None
        finally:
            if not started:  # failed or cancelled: leak nothing
                await self.close()

    async def _spawn(
        self,
        argv: list[str],
        child_env: dict[str, str],
        acct: LocalAccount,
        who: dict[str, Any],
        term: str | None,
        size: tuple[int, int],
    ) -> None:
        cwd = acct.home
        if term is None:
            # No PTY asked for (ssh CMD without -t): plain pipes, stdout and stderr kept apart.
            self._pipes = True
            child_env["TERM"] = "dumb"
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
                **who,
            )
            return
        child_env["TERM"] = term
        master, slave = os.openpty()
        self._master = master  # from here on, close() releases it
        if acct.switch:
            os.fchown(slave, acct.uid, -1)  # the terminal is the session account's, as login(1) does
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_take_controlling_tty,
                **who,
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._loop.add_reader(master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, _READ)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave descriptor closed, the shell is gone
            data = b""
        if not data:
            self._loop.remove_reader(self._master)
            self._eof = True
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            # Backpressure: stop reading the PTY until the relay catches up.
            self._loop.remove_reader(self._master)
            self._loop.create_task(self._put_slow(data))

    async def _put_slow(self, data: bytes) -> None:
        await self._queue.put(data)
        if not self._eof and self._master >= 0:
            self._loop.add_reader(self._master, self._on_readable)

    async def _read_pty(self) -> bytes:
        data = await self._queue.get()
        # Join what the PTY produced meanwhile: one write, one frame, fewer SSH packets.
        while data and len(data) < _JOIN and not self._queue.empty():
            more = self._queue.get_nowait()
            if not more:
                self._queue.put_nowait(more)  # keep the end-of-stream marker for the next read
                break
            data += more
        return data

    def readers(self) -> list[tuple[int, Reader]]:
        proc = self._proc
        if self._pipes and proc is not None and proc.stdout is not None and proc.stderr is not None:
            out, err = proc.stdout, proc.stderr
            return [(1, lambda: out.read(_READ)), (2, lambda: err.read(_READ))]
        return [(1, self._read_pty)]

    async def write(self, data: bytes) -> None:
        if self._pipes:
            stdin = self._proc.stdin if self._proc is not None else None
            if stdin is not None and not stdin.is_closing():
                stdin.write(data)
                with contextlib.suppress(ConnectionError):
                    await stdin.drain()
            return
        self._pending += data
        self._flush()
        while len(self._pending) > _MAX_PENDING and self._master >= 0:
            self._writable.clear()
            await self._writable.wait()

    def _flush(self) -> None:
        if self._master < 0:
            return
        try:
            n = os.write(self._master, self._pending)
            del self._pending[:n]
        except BlockingIOError:
            pass
        except OSError:
            self._pending.clear()
            self._writable.set()
            return
        if self._pending:
            self._loop.add_writer(self._master, self._on_writable)

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._master)
        self._flush()
        if len(self._pending) <= _MAX_PENDING:
            self._writable.set()

    def write_eof(self) -> None:
        if self._pipes:
            if self._proc is not None and self._proc.stdin is not None:
                self._proc.stdin.close()
        else:
            self._pending += b"\x04"  # end of input on a PTY, as a terminal's ^D
            self._flush()

    def resize(self, cols: int, rows: int) -> None:
        if self._master >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def wait(self) -> int | None:
        if self._proc is None:
            return None
        return await self._proc.wait()

    async def close(self) -> None:
        """Stop every process of the session (even if the shell itself has exited) and release the PTY."""
        proc = self._proc
        try:
            if proc is not None and not self._stopped:
                self._stopped = True
                # The shell was started as a session leader: its pid names its session and first group.
                if _signal_session(proc.pid, (signal.SIGHUP, signal.SIGTERM)):
                    await _sleep_until(lambda: not _session_alive(proc.pid), STOP_GRACE)
                    _signal_session(proc.pid, (signal.SIGKILL,))
                # wait() also waits for the pipes to reach EOF, which a stopped relay may never read to:
                # do not let a closing session hang on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 2)
        finally:
            if proc is not None:
                _release(proc)
        if self._master >= 0:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
            os.close(self._master)
            self._master = -1
            self._writable.set()


def _release(proc: asyncio.subprocess.Process) -> None:
    """Close ``proc``'s pipes and asyncio transport now, on the running loop.

    asyncio closes them itself once the process was reaped and every pipe reached EOF. When the
    bounded wait in ``close`` gave up first (a descendant that left the session, ``setsid cmd &``,
    still holds stdout; or a machine so loaded the exit was not seen within it), they stayed open,
    and the transport's finaliser closed them later: after the loop closed, on a stopping bastion,
    which printed "Exception ignored in ... BaseSubprocessTransport.__del__ ... Event loop is
    closed". The process itself was stopped already; its exit status is not waited for again.
    """
    if proc.stdin is not None:
        proc.stdin.close()
    # asyncio.subprocess.Process has no public close: its transport's close() is what asyncio
    # itself calls (closing the pipes; killing the process if it still runs).
    transport = getattr(proc, "_transport", None)
    if isinstance(transport, asyncio.SubprocessTransport) and not transport.is_closing():
        transport.close()


def _session_pids(sid: int) -> list[int]:
    """Every process in session ``sid`` (Linux /proc), whatever process group it moved to."""
    pids: list[int] = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:  # no procfs: the process group is all we can reach
        return pids
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def _session_alive(sid: int) -> bool:
    return bool(_session_pids(sid))


def _signal_session(sid: int, signals: tuple[signal.Signals, ...]) -> bool:
    """Send ``signals`` to session ``sid``'s process group and every other process in the session;
    False if nothing was left to signal."""
    found = False
    for sig in signals:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # gone (or its pid reused)
            os.killpg(sid, sig)
            found = True
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                found = True
    return found


async def _sleep_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` until it is true or ``timeout`` seconds have passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _take_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass(frozen=True, slots=True)
class CertIdentity:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    key_id: str


def mint_certificate(ca: asyncssh.SSHKey, login: str, key_id: str, valid_before: float) -> CertIdentity:
    """A fresh key and a user certificate for it: this login only, now until ``valid_before``, pty only."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca.generate_user_certificate(
        key,
        key_id,
        principals=[login],
        valid_after=now - 5,
        valid_before=int(valid_before),
        permit_x11_forwarding=False,
        permit_agent_forwarding=False,
        permit_port_forwarding=False,
        permit_pty=True,
        permit_user_rc=False,
    )
    return CertIdentity(key, cert, key_id)


class SshUpstream:
    """A login on a remote target over SSH, authenticated with a per-session certificate."""

    error: str | None = None

    @property
    def echo_off(self) -> bool:
        return False  # not observable remotely; the relay uses a prompt heuristic instead

    def __init__(self) -> None:
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc: asyncssh.SSHClientProcess[bytes] | None = None
        self._channel_closed: asyncio.Future[None] | None = None
        self._closed = False

    async def start(
        self,
        target: Target,
        login: str,
        identity: CertIdentity | None,
        command: str | None,
        term: str | None,
        size: tuple[int, int],
        env: Mapping[str, str],
        *,
        subsystem: str | None = None,
    ) -> None:
        try:
            pinned = asyncssh.import_public_key(target.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise UpstreamError(f"target {target.name} has no valid pinned host key: {exc}") from None
        client_keys: list[Any]
        if identity is not None:
            client_keys = [(identity.key, identity.cert)]
        else:  # the documented fallback: a static key for targets that cannot trust a CA
            try:
                client_keys = [asyncssh.read_private_key(target.client_key)]
            except (OSError, asyncssh.KeyImportError) as exc:
                raise UpstreamError(f"cannot read the static key of {target.name}: {exc}") from None
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(
                    target.host,
                    target.port,
                    username=login,
                    client_keys=client_keys,
                    known_hosts=([pinned], [], []),
                    config=None,  # not the service account's ~/.ssh/config
                    kex_algs=list(KEX),
                    agent_path=None,
                    agent_forwarding=False,
                    encryption_algs=list(CIPHERS),
                    preferred_auth=["publickey"],
                    keepalive_interval=30,
                    server_host_key_algs=[pinned.get_algorithm()],
                ),
                15,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UpstreamError(
                f"{target.name}'s host key does not match the pinned key ({_fp(pinned)}): {exc.reason}",
                event="upstream.host_key_mismatch",
            ) from None
        except asyncssh.PermissionDenied as exc:  # reached, but the login was refused
            raise UpstreamError(
                f"{target.name} ({target.host}:{target.port}) refused the login as {login}: {exc} "
                "(does it trust the bastion's CA, `zsp ca`, for this principal?)"
            ) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise UpstreamError(f"cannot reach {target.name} ({target.host}:{target.port}): {exc}") from None
        opened = False
        try:
            self._proc = await self._conn.create_process(
                command,
                subsystem=subsystem,  # "sftp": the file-transfer proxy (sftp.py) speaks to it
                term_type=term,
                term_size=size if term else None,
                request_pty=bool(term),
                encoding=None,
                env=allowed_env(env),
                window=_WINDOW,
                max_pktsize=_MAX_PACKET,
            )
            # Whether the channel has closed, from its receive side: is_closing() only says that
            # we stopped sending (true after the operator's end-of-input, ssh -n).
            self._channel_closed = asyncio.ensure_future(self._proc.wait_closed())
            opened = True
        except (OSError, asyncssh.Error) as exc:
            raise UpstreamError(f"{target.name} refused the session: {exc}") from None
        finally:
            if not opened:  # refused, or cancelled meanwhile: the connection goes too
                await self.close()

    @property
    def process(self) -> asyncssh.SSHClientProcess[bytes] | None:
        """The remote command or subsystem, once started."""
        return self._proc

    def readers(self) -> list[tuple[int, Reader]]:
        proc = self._proc
        if proc is None:
            return []
        return [(1, lambda: self._read(proc.stdout)), (2, lambda: self._read(proc.stderr))]

    async def _read(self, stream: asyncssh.SSHReader[bytes]) -> bytes:
        try:
            return await stream.read(_READ)
        except (asyncssh.Error, OSError) as exc:
            # The connection ended under us; the relay sees the end, the exit status stays unknown.
            self.error = str(exc)
            return b""

    async def write(self, data: bytes) -> None:
        if self._proc is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)
            with contextlib.suppress(asyncssh.Error, ConnectionError):
                await self._proc.stdin.drain()

    def write_eof(self) -> None:
        if self._proc is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write_eof()

    def resize(self, cols: int, rows: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                self._proc.change_terminal_size(cols, rows)

    async def wait(self) -> int | None:
        if self._proc is None:
            return None
        await self._proc.wait_closed()
        if self._proc.exit_signal:
            return -_signum(self._proc.exit_signal[0])
        return self._proc.exit_status

    def _ended(self, proc: asyncssh.SSHClientProcess[bytes]) -> bool:
        """The remote command has exited (status or signal reported) or its channel has closed."""
        return proc.returncode is not None or (self._channel_closed is not None and self._channel_closed.done())

    async def close(self) -> None:
        """Stop the remote command if it still runs, then close the connection (idempotent)."""
        if self._closed or self._conn is None:
            return
        self._closed = True
        proc = self._proc
        if proc is not None and not self._ended(proc):
            # HUP and TERM, then KILL: sshd signals the session's process group. Closing the
            # connection alone leaves a command without a PTY running on the target.
            for names in (("HUP", "TERM"), ("KILL",)):
                if names == ("KILL",):
                    # For targets that refuse the signal request; first, while the command's
                    # session leader still lives to name its session.
                    await self._kill_session()
                with contextlib.suppress(OSError, asyncssh.Error):
                    for name in names:
                        proc.send_signal(name)
                if await _sleep_until(lambda: self._ended(proc), STOP_GRACE):
                    break
        self._conn.close()
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            await asyncio.wait_for(self._conn.wait_closed(), 2)
        if self._channel_closed is not None:
            self._channel_closed.cancel()


    async def _kill_session(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            await asyncio.wait_for(self._conn.run(KILL_SESSION, check=False, stdin=asyncssh.DEVNULL), STOP_GRACE * 2)




def _fp(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def _signum(name: str) -> int:
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        return 255
