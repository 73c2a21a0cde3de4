"""``ssh -t -p 2222 review@BASTION``: the review app through the bastion, with nothing but OpenSSH.

The SSH user name :data:`REVIEW_USER` opens the review app (``zsp review``) for the zsp user the
signing key belongs to, who must hold the reviewer, approver or admin role
(:data:`zsp_tui.tui.context.REVIEW_ROLES`). The app runs as a child process of the bastion, in a
PTY of its own on the bastion host: ``python -P -m zsp_tui review --data DIR --as USER --via ssh``.
Its bytes are relayed both ways through the event loop (the PTY master is read with ``add_reader``);
a window change becomes ``TIOCSWINSZ`` on the child's PTY (and so SIGWINCH to the app). The channel
ends with the app's exit status; when the client goes away or the bastion stops, the app's session
gets SIGHUP and SIGTERM, then SIGKILL after a short grace (:meth:`LocalUpstream.close`).

What the app gets from the client is only what it needs, checked: TERM (a terminfo-like name, else
:data:`DEFAULT_TERM`), the window size (clamped), COLORTERM (``truecolor``/``24bit`` only). Its
environment is built from scratch: nothing of the bastion's own (no ``TEXTUAL_*`` that would turn
on devtools or debug logging, no ``PYTHON*`` that would load code), UTF-8 locale, HOME, ZSP_DATA,
and PYTHONPATH naming the very code the bastion runs.

The review channel is not a recorded session: it needs no grant, is not in the session list, and
counts against its own caps (per user and in all, ``[bastion] max_review_apps_per_user`` and
``max_review_apps``), not the session caps. Agent, X11 and port forwarding stay refused, as on
every connection. The app itself audits ``review.open`` (``via=ssh``) and what the reviewer does;
refusals here are ``review.refused`` events (at most a few per connection).

Name collision: targets are addressed as ``TARGET`` or ``LOGIN@TARGET``. The bare user name
``review`` is always the review app, as ``zsp`` is always the control commands: both are checked
before any target lookup. A target an admin names ``review`` is still reachable with its login
spelled out, ``ssh LOGIN@review@BASTION`` (a user name with an ``@`` is never the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import asyncssh

from replay import printable

from ..audit import NewEvent
from ..local_account import own_account
from ..models import User
from .control import SshHint
from .limits import window_size
from .upstream import LocalUpstream

__all__ = ["DEFAULT_TERM", "REVIEW_USER", "ReviewApps", "app_argv", "app_env", "review_command", "safe_term"]

REVIEW_USER = "review"
"""The SSH user name that opens the review app (``ssh -t review@BASTION``)."""
DEFAULT_TERM = "xterm-256color"
"""TERM for the app when the client sent none usable."""
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
"""What a terminal type looks like (terminfo names): anything else is replaced, never passed on."""
_COLORTERM = frozenset({"truecolor", "24bit"})
_READ = 65536
_EXIT_WAIT = 5.0
"""After the app closed its terminal, how long it has to exit before it is stopped."""
_STOP_WAIT = 5.0

Audit = Callable[[NewEvent], Awaitable[None]]


def safe_term(term: str | None) -> str:
    """The client's TERM if it is a plain terminal type name, else :data:`DEFAULT_TERM`."""
    if term and _TERM.fullmatch(term):
        return term
    return DEFAULT_TERM


def app_argv(data_root: Path, user: str) -> list[str]:
    """The command line of the review app for ``user`` (``--as=`` so no name reads as an option).
    ``-P``: the app's working directory never shadows the code on PYTHONPATH."""
    import sys

    return [sys.executable, "-P", "-m", "zsp_tui", "review", f"--data={data_root}", f"--as={user}", "--via=ssh"]


def app_env(data_root: Path, term: str | None, client_env: dict[str, str] | None = None) -> dict[str, str]:
    """The app's whole environment, built from scratch (nothing of the bastion's is inherited)."""
    import zsp_tui

    code = Path(zsp_tui.__file__).resolve().parent.parent  # the zsp_tui the bastion itself runs
    env = {
        "TERM": safe_term(term),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": os.environ.get("HOME") or str(data_root),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "ZSP_DATA": str(data_root),
        "PYTHONPATH": str(code),
        "PYTHONUTF8": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    colorterm = (client_env or {}).get("COLORTERM")
    if colorterm in _COLORTERM:
        env["COLORTERM"] = colorterm
    return env


def review_command(hint: SshHint) -> str:
    """The command that opens the review app, for this user, pasteable (the demo's ssh_config too)."""
    alias = dict(hint.aliases).get(hint.user or "") if hint.ssh_config else None
    if alias is not None:
        return f"ssh -t -F {hint.ssh_config} {REVIEW_USER}@{alias}"
    return f"ssh -t -p {hint.port} {REVIEW_USER}@{hint.host}"


class _AppPty(LocalUpstream):
    """The review app in a PTY of its own, as the bastion's account, working in the data dir."""

    async def start_app(
        self, argv: list[str], env: dict[str, str], term: str, size: tuple[int, int], cwd: Path
    ) -> None:
        account = replace(own_account(), home=str(cwd))  # never another account: the app reads the data dir
        started = False
        try:
            await self._spawn(argv, env, account, {}, term, size)
            started = True
        finally:
            if not started:
                await self.close()


class ReviewApps:
    """The review apps the bastion runs: admission (role, PTY, caps), the relay, and their end."""

    def __init__(self, data_root: Path, per_user: int, total: int) -> None:
        self.data_root = data_root
        self.per_user = per_user
        self.total = total
        self.running: dict[str, int] = {}
        """Apps per user, counted from admission."""
        self._stop = asyncio.Event()
        self._apps: set[_AppPty] = set()

    @property
    def count(self) -> int:
        return sum(self.running.values())

    async def run(self, process: asyncssh.SSHServerProcess[bytes], user: User, hint: SshHint, audit: Audit) -> None:
        """Serve one ``review@`` channel: refuse it with one line, or run the app until it ends."""
        from ..tui.context import REVIEW_ROLES

        peer = process.get_extra_info("peername") or ("?", 0)
        client = f"{peer[0]}:{peer[1]}"
        mine = self.running.get(user.name, 0)
        term = process.get_terminal_type()
        why: tuple[str, str] | None = None
        if not user.roles & REVIEW_ROLES:
            roles = ", ".join(sorted(r.value for r in user.roles)) or "none"
            why = (
                "role",
                f"{user.name} may not open the review app: it needs the reviewer, approver or admin role "
                f"(has: {roles})",
            )
        elif process.subsystem or process.command is not None:
            why = ("command", f"the review app takes no command; open it with: {review_command(hint)}")
        elif term is None:
            why = ("no-pty", f"the review app needs a terminal; open it with: {review_command(hint)}")
        elif self._stop.is_set():
            why = ("shutdown", "the bastion is shutting down")
        elif mine >= self.per_user:
            why = ("limit", f"{user.name} already has {mine} review apps open (limit {self.per_user})")
        elif self.count >= self.total:
            why = ("limit", f"the bastion already runs {self.count} review apps (limit); try again later")
        if why is not None:
            reason, message = why
            await audit(
                NewEvent(
                    "review.refused",
                    user.name,
                    "ssh",
                    f"review app refused: {message}",
                    outcome="failure",
                    fields={"reason": reason, "client": client},
                )
            )
            return _refuse(process, message)
        # Counted and reserved with no await in between: concurrent channels cannot all pass.
        self.running[user.name] = mine + 1
        try:
            status = await self._run_app(process, user, term or DEFAULT_TERM)
        finally:
            self.running[user.name] -= 1
            if self.running[user.name] <= 0:
                del self.running[user.name]
        with contextlib.suppress(OSError, asyncssh.Error):
            process.exit(status if status is not None and 0 <= status < 256 else 255)

    async def _run_app(self, process: asyncssh.SSHServerProcess[bytes], user: User, term: str) -> int | None:
        width, height, _, _ = process.get_terminal_size()
        size = window_size(width, height)
        app = _AppPty()
        try:
            await app.start_app(
                app_argv(self.data_root, user.name),
                app_env(self.data_root, term, dict(process.env)),
                safe_term(term),
                size,
                self.data_root,
            )
        except OSError as exc:
            _refuse(process, f"cannot start the review app: {exc.strerror or exc}", 255)
            return None
        self._apps.add(app)
        try:
            return await self._relay(process, app)
        finally:
            self._apps.discard(app)
            await app.close()  # HUP and TERM to the app's session, KILL after a grace; the PTY released

    async def _relay(self, process: asyncssh.SSHServerProcess[bytes], app: _AppPty) -> int | None:
        """Bytes both ways until the app closes its terminal (it exited), the client's channel
        closes or the bastion stops; the app's exit status in the first case, else None."""

        async def to_app() -> None:
            while True:
                try:
                    data = await process.stdin.read(_READ)
                except asyncssh.TerminalSizeChanged as exc:
                    app.resize(*window_size(exc.width, exc.height))
                    continue
                except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                    continue
                if not data:
                    return  # the client sends no more input; the app runs until it or the channel ends
                await app.write(data)

        async def to_client() -> None:
            for _, read in app.readers():
                while data := await read():
                    process.stdout.write(data)
                    await process.stdout.drain()

        out_task = asyncio.create_task(to_client())
        in_task = asyncio.create_task(to_app())
        gone_task = asyncio.create_task(process.channel.wait_closed())
        stop_task = asyncio.create_task(self._stop.wait())
        tasks = (out_task, in_task, gone_task, stop_task)
        try:
            done, _ = await asyncio.wait({out_task, gone_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError, asyncssh.Error):
                    await task
        app_ended = out_task in done and not out_task.cancelled() and out_task.exception() is None
        if not app_ended or gone_task in done:
            return None  # the client or the bastion ended it: the caller stops the app
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(app.wait(), _EXIT_WAIT)
        return None

    async def stop(self) -> None:
        """The bastion stops: end every app (each relay stops it and releases its PTY)."""
        self._stop.set()
        deadline = asyncio.get_running_loop().time() + _STOP_WAIT
        while self._apps and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for app in list(self._apps):
            await app.close()


def _refuse(process: asyncssh.SSHServerProcess[bytes], message: str, status: int = 1) -> None:
    """One line on stderr (escaped: it may quote what the client sent), then the exit status."""
    with contextlib.suppress(OSError, asyncssh.Error):
        process.stderr.write(f"zsp: {printable(message)}\r\n".encode())
        process.exit(status)
