"""`zsp record` on a real terminal: raw passthrough, resizes, masked passwords, exit status."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from recorder import Event, FrameKind, Resize, load_trusted_keys
from replay import Outcome, load


class Terminal:
    """The operator's side: a PTY whose slave is zsp's controlling terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], cols: int = 80, rows: int = 24) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # A new session; the wrapper below re-opens the slave by name to make it the controlling
        # terminal, so SIGWINCH reaches zsp as it does in a real terminal emulator.
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.seen = b""

    def expect(self, needle: bytes, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while needle not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r}; screen so far: {self.seen[-500:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    break
        if needle not in self.seen:
            raise AssertionError(f"did not see {needle!r}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def wait(self) -> int:
        try:
            while True:
                r, _, _ = select.select([self.master], [], [], 0.2)
                if r:
                    self.seen += os.read(self.master, 65536)
                elif self.proc.poll() is not None:
                    break
        except OSError:
            pass
        code = self.proc.wait(15)
        os.close(self.master)
        return code


SCRIPT = (
    'stty -echo; printf "Password: "; read pw; stty echo; echo; printf "got %s\\n" "$pw"; '
    'printf "ready\\n"; read x; stty size; exit 5'
)


def test_record_on_a_terminal(data_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, TERM="xterm-256color")
    subprocess.run([sys.executable, "-m", "zsp_tui", "init"], env=env, check=True, capture_output=True)
    out = tmp_path / "tty.zsprec"
    wrapper = (
        "import os, sys; fd = os.open(os.ttyname(0), os.O_RDWR);"  # acquire the ctty
        "os.execvp(sys.executable, [sys.executable, '-m', 'zsp_tui'] + sys.argv[1:])"
    )
    term = Terminal([sys.executable, "-c", wrapper, "record", "-o", str(out), "--", "sh", "-c", SCRIPT], env)
    term.expect(b"Password: ")
    term.send(b"hunter2\r")
    term.expect(b"got hunter2")
    term.expect(b"ready")
    term.resize(132, 50)
    time.sleep(0.3)  # let SIGWINCH reach zsp before the next line; the recording is asserted below
    term.send(b"\r")
    term.expect(b"50 132")
    assert term.wait() == 5
    assert b"hunter2\r" not in term.seen.split(b"got")[0]  # not echoed on the screen either

    frames, report = load(out, load_trusted_keys(data_dir / "allowed_signers"))
    assert report.outcome is Outcome.VALID
    header = frames[0].data
    assert (header.cols, header.rows, header.term) == (80, 24, "xterm-256color")
    typed = b"".join(f.data for f in frames if f.kind is FrameKind.INPUT)
    assert b"hunter2" not in typed, "a password typed with echo off was stored"
    masked = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "input.masked"]
    assert masked and isinstance(masked[0], Event) and sum(e.fields["bytes"] for e in masked) >= 8
    assert Resize(132, 50) in [f.data for f in frames if f.kind is FrameKind.RESIZE]
    assert b"\r" in typed  # the Enter after the resize was recorded in clear
    assert report.seal.exit_status == 5
