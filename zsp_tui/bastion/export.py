"""``ssh zsp@BASTION export SESSION... > evidence.tar``: evidence export with nothing but OpenSSH.

A responder who has no account on the bastion host, only a reviewer's (or admin's) key, exports
sessions through the bastion: the control command ``export`` takes the options of ``zsp export``
that choose *what* to export (sessions, ``--user``/``--target``/``--since``, ``--format``,
``--redact``, ``--include-input``, ``--files``) and writes the result to the channel's stdout. Where it goes on
the bastion host, which data dir, and who is exporting are not the client's to say: the bastion
runs ``python -P -m zsp_tui export --data=DIR --as=USER --via=ssh -o - ...`` as a child process
(the same command as on the console, so the same role check, audit events and signatures), with an
environment built from scratch (:func:`zsp_tui.bastion.review.app_env`), and relays its stdout with
backpressure. Messages from the child (already escaped by the CLI) go to the channel's stderr, capped.

A terminal (``ssh -t``) would mangle the tar on its way to the client's file, so it is refused.
Exports count against their own caps (per user and in all); a client that goes away stops its
export (the child is killed; its temp file is removed by the child or left mode 0600 in the
bastion's temp directory if it was killed mid-write).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import asyncssh

from replay import printable

from ..evidence import FORMATS
from ..exceptions import UsageError
from ..models import User
from .review import app_env

__all__ = ["EXPORT_COMMAND", "RemoteExports", "export_argv", "is_export"]

EXPORT_COMMAND = "export"
_READ = 1 << 16
_MAX_STDERR = 64 * 1024
_STOP_WAIT = 5.0


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting the bastion."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Refused(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise _Refused(message or "usage: export SESSION... [--format F] [--redact REGEX]... > FILE")


def _parser() -> _Parser:
    p = _Parser(prog="export", add_help=False)
    p.add_argument("sessions", nargs="*")
    p.add_argument("--user")
    p.add_argument("--target")
    p.add_argument("--since")
    p.add_argument("--format", choices=FORMATS, default="bundle")
    p.add_argument("--redact", action="append", default=[])
    p.add_argument("--include-input", action="store_true")
    p.add_argument("--files", action="store_true")
    return p


def is_export(command: str | None) -> bool:
    """Whether a control command line is an export (its first word)."""
    return bool(command) and (command or "").split(None, 1)[:1] == [EXPORT_COMMAND]


def _words(command: str) -> list[str]:
    """The words of an export command line: quotes group (``--redact 'api \\S+'``), but a backslash is
    kept as typed, since ``--redact`` patterns are full of them (``\\S+``, ``\\d``) and ssh has already
    joined the client's words with the local shell's quoting removed."""
    lex = shlex.shlex(command, posix=True)
    lex.whitespace_split = True
    lex.escape = ""
    lex.commenters = ""
    try:
        return list(lex)
    except ValueError as exc:
        raise UsageError(f"export: {exc} (quote a pattern that has spaces: --redact \"'a b'\")") from None


def export_argv(data_root: Path, user: str, command: str) -> list[str]:
    """The child's command line for ``command`` (the client's words, checked), or UsageError.

    Only options that choose what to export pass; every value is given as ``--opt=value`` and the
    sessions after ``--``, so nothing the client sends can read as another option."""
    words = _words(command)[1:]
    try:
        args = _parser().parse_args(words)
    except _Refused as exc:
        raise UsageError(f"export: {exc}") from None
    argv = [sys.executable, "-P", "-m", "zsp_tui", "export", f"--data={data_root}", f"--as={user}", "--via=ssh"]
    argv += ["-o", "-", f"--format={args.format}"]
    for name in ("user", "target", "since"):
        value = getattr(args, name)
        if value is not None:
            argv.append(f"--{name}={value}")
    argv += [f"--redact={r}" for r in args.redact]
    if args.include_input:
        argv.append("--include-input")
    if args.files:
        argv.append("--files")
    return [*argv, "--", *args.sessions]


class RemoteExports:
    """Exports running for ssh clients: admission (caps, no PTY), the child, the relay."""

    def __init__(self, data_root: Path, per_user: int = 1, total: int = 4) -> None:
        self.data_root = data_root
        self.per_user = per_user
        self.total = total
        self._running: dict[str, int] = defaultdict(int)
        self._children: set[asyncio.subprocess.Process] = set()

    @property
    def count(self) -> int:
        return sum(self._running.values())

    async def run(self, process: asyncssh.SSHServerProcess[bytes], user: User) -> None:
        if process.get_terminal_type() is not None:
            return _refuse(process, "export writes a file to stdout: run it without -t and redirect it (> FILE)")
        try:
            argv = export_argv(self.data_root, user.name, process.command or "")
        except UsageError as exc:
            return _refuse(process, str(exc), 2)
        if self._running[user.name] >= self.per_user or self.count >= self.total:
            return _refuse(process, f"too many exports running ({self.per_user} per user, {self.total} in all)")
        self._running[user.name] += 1
        try:
            status = await self._run_child(process, argv)
            if not process.channel.is_closing():
                process.exit(status)
        finally:
            self._running[user.name] -= 1
            if self._running[user.name] <= 0:
                del self._running[user.name]

    async def _run_child(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
        env = app_env(self.data_root, None)
        del env["TERM"]
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=self.data_root,
            start_new_session=True,
        )
        self._children.add(child)
        stdout, stderr = child.stdout, child.stderr
        if stdout is None or stderr is None:  # created with PIPE: never
            raise RuntimeError("export child without pipes")
        err = io.BytesIO()

        async def drain_stderr() -> None:
            while chunk := await stderr.read(_READ):
                if err.tell() < _MAX_STDERR:
                    err.write(chunk[: _MAX_STDERR - err.tell()])

        errors = asyncio.ensure_future(drain_stderr())
        # A client that goes away stops its export at once, whatever the child is doing (matching
        # a slow pattern, building the bundle): the relay alone would notice only at its next write.
        gone = asyncio.ensure_future(process.channel.wait_closed())
        gone.add_done_callback(lambda f: None if f.cancelled() else asyncio.ensure_future(self._stop(child)))
        try:
            while chunk := await stdout.read(_READ):
                process.stdout.write(chunk)
                await process.stdout.drain()  # backpressure: a slow client slows the child
            status = await child.wait()
            await errors
        except (OSError, asyncssh.Error, asyncio.CancelledError):
            await self._stop(child)
            errors.cancel()
            raise
        finally:
            gone.cancel()
            self._children.discard(child)
        if process.channel.is_closing():
            return 1
        text = err.getvalue().decode("utf-8", "replace")
        if text:  # the CLI escaped what it printed; escape again per line in case it did not
            process.stderr.write("".join(printable(line) + "\n" for line in text.splitlines()).encode())
        return status if 0 <= status < 256 else 1

    @staticmethod
    async def _stop(child: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            await asyncio.wait_for(child.wait(), _STOP_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()

    async def stop(self) -> None:
        """End every running export (the bastion is stopping)."""
        await asyncio.gather(*(self._stop(c) for c in list(self._children)), return_exceptions=True)


def _refuse(process: asyncssh.SSHServerProcess[bytes], message: str, status: int = 1) -> None:
    process.stderr.write(f"zsp: {printable(message)}\n".encode())
    process.exit(status)
