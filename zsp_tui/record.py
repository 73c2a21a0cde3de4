"""``zsp record``: run a command in a PTY on this machine and record it, like ``script``.

The terminal passes through faithfully: the controlling terminal goes to raw mode, the
child's PTY gets the same modes and window size, SIGWINCH resizes it, and the child's exit
status becomes ours. Console work on the bastion host (break-glass) is recorded exactly as a
bastion session is, with the same writer and format.

Keystrokes typed while the PTY has echo off but canonical mode on (a password prompt:
``sudo``, ``passwd``, ``ssh``) are not stored in clear: an ``input.masked`` event records how many
bytes were withheld and holds them sealed to the escrow key (without one, nothing is withheld).
Full-screen programs turn off echo *and* canonical mode, so they stay recorded.

Fail closed: if the recording cannot be created, the command never starts; if it fails later,
the child is hung up and killed and ``zsp record`` exits with :data:`EXIT_RECORDING_FAILED`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import struct
import termios
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

from recorder import EscrowPublicKey, RecordingFailed, RecordingWriter, SealInfo

from .masking import Excessive, InputMasker, MaskedInput, MaskLimits

__all__ = ["EXIT_RECORDING_FAILED", "get_winsize", "run_recorded"]

EXIT_RECORDING_FAILED = 125
"""Exit status when the recording failed mid-session (as ``env`` and ``timeout`` use 125)."""

_READ = 65536
_WINSZ = struct.Struct("HHHH")


def get_winsize(fd: int) -> tuple[int, int] | None:
    """(cols, rows) of the terminal on ``fd``, or None if it is not a terminal."""
    try:
        rows, cols, _, _ = _WINSZ.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * _WINSZ.size))
    except OSError:
        return None
    return (cols, rows) if cols and rows else None


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSZ.pack(rows, cols, 0, 0))


@contextlib.contextmanager
def _raw(fd: int, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSAFLUSH)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _echo_masked(master: int) -> bool:
    """True while the PTY is at a password prompt: echo off, canonical mode on."""
    try:
        lflag = termios.tcgetattr(master)[3]
    except termios.error:
        return False
    return not lflag & termios.ECHO and bool(lflag & termios.ICANON)


def run_recorded(
    argv: list[str],
    writer: RecordingWriter,
    *,
    size: tuple[int, int],
    stdin: int = 0,
    stdout: int = 1,
    escrow: EscrowPublicKey | None = None,
    mask_limits: MaskLimits | None = None,
    on_excessive: Callable[[Excessive], None] | None = None,
) -> tuple[int, SealInfo | None, RecordingFailed | None]:
    """Run ``argv`` in a new PTY, relay it to ``stdin``/``stdout`` and record it with ``writer``.

    Input at password prompts is masked only with an ``escrow`` key to seal it to; ``on_excessive``
    is called once if the session masks more than ``mask_limits`` allow.
    Returns ``(exit code for zsp, seal info, recording failure)``.
    """
    is_tty = os.isatty(stdin)
    master, slave = os.openpty()
    _set_winsize(slave, *size)
    if is_tty:
        termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(stdin))

    # Signals arrive through a pipe so the select loop wakes for them.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    got: list[int] = []
    handled = (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, _frame: got.append(signum)) for s in handled}
    old_wakeup = signal.set_wakeup_fd(wake_w)

    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(master)
            os.login_tty(slave)
            for s, h in previous.items():
                signal.signal(s, h)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"zsp record: cannot run {argv[0]}: {exc.strerror}\r\n".encode())
        os._exit(127)
    os.close(slave)

    failure: RecordingFailed | None = None
    status = 0
    try:
        with _raw(stdin, is_tty):
            masked = MaskedInput(
                InputMasker(lambda: _echo_masked(master)),
                escrow,
                writer.session_id,
                mask_limits or MaskLimits(),
                event=writer.event,
                record_input=writer.input,
            )
            failure = _relay(master, stdin, stdout, writer, masked, on_excessive, got, wake_r, is_tty, pid)
            if failure is not None:
                _kill(pid)
            _, status = os.waitpid(pid, 0)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for s, h in previous.items():
            signal.signal(s, h)
        for fd in (master, wake_r, wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    code = os.waitstatus_to_exitcode(status)
    if failure is not None:
        writer.abandon()
        return EXIT_RECORDING_FAILED, None, failure
    terminated = signal.SIGTERM in got or signal.SIGHUP in got
    reason = "terminated" if terminated else ("signal" if code < 0 else "exit")
    try:
        info = writer.close(code, reason)
    except RecordingFailed as exc:
        return EXIT_RECORDING_FAILED, None, exc
    return (128 - code if code < 0 else code), info, None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def _relay(
    master: int,
    stdin: int,
    stdout: int,
    writer: RecordingWriter,
    masked: MaskedInput,
    on_excessive: Callable[[Excessive], None] | None,
    got: list[int],
    wake_r: int,
    is_tty: bool,
    pid: int,
) -> RecordingFailed | None:
    os.set_blocking(master, False)
    sel = selectors.PollSelector()  # poll, unlike epoll, accepts a regular file on stdin
    sel.register(master, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    try:
        sel.register(stdin, selectors.EVENT_READ)
    except (ValueError, OSError):  # stdin closed or not selectable: nothing to relay
        pass
    to_child = bytearray()
    stdout_ok = True
    try:
        masked.start()
        while True:
            deadline = writer.next_deadline()
            timeout = None if deadline is None else max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            events = sel.select(timeout)
            for key, mask in events:
                fd = key.fd
                if fd == master and mask & selectors.EVENT_READ:
                    try:
                        data = os.read(master, _READ)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno == errno.EIO:  # the child side closed: session over
                            return None
                        raise
                    if not data:
                        return None
                    writer.output(data)
                    if stdout_ok:
                        try:
                            _write_all(stdout, data)
                        except BrokenPipeError:
                            stdout_ok = False
                elif fd == master and mask & selectors.EVENT_WRITE:
                    _flush_to_child(master, to_child, sel)
                elif fd == stdin:
                    data = os.read(stdin, _READ)
                    if not data:
                        sel.unregister(stdin)
                        if not is_tty:
                            to_child += b"\x04"  # EOF on stdin becomes ^D, as script(1) does
                            _flush_to_child(master, to_child, sel)
                        continue
                    crossed = masked.feed(data)  # withheld bytes are sealed to the escrow key, never dropped
                    if crossed is not None and on_excessive is not None:
                        on_excessive(crossed)
                    to_child += data
                    _flush_to_child(master, to_child, sel)
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    while got and got[-1] == signal.SIGWINCH:
                        got.pop()
                        size = get_winsize(stdin) if is_tty else None
                        if size:
                            _set_winsize(master, *size)
                            writer.resize(*size)
                    if any(s in (signal.SIGTERM, signal.SIGHUP) for s in got):
                        writer.event("session.terminated", "zsp record received a termination signal")
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGHUP)
            writer.tick()
    except RecordingFailed as exc:
        return exc


def _flush_to_child(master: int, buf: bytearray, sel: selectors.BaseSelector) -> None:
    try:
        n = os.write(master, buf)
        del buf[:n]
    except BlockingIOError:
        pass
    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if buf else 0)
    sel.modify(master, want)


def default_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        size = get_winsize(fd)
        if size:
            return size
    try:
        return int(os.environ.get("COLUMNS", "80")), int(os.environ.get("LINES", "24"))
    except ValueError:
        return 80, 24


def output_path(recordings: Path, session_id: object) -> Path:
    return recordings / f"{session_id}.zsprec"
