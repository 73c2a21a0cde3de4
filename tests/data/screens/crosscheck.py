"""Cross-check replay.Terminal against tmux after EVERY output and resize frame of the goldens.

    python3 tests/data/screens/crosscheck.py [NAME ...]      # needs tmux

(tests/test_golden_screens.py runs it too, when tmux is installed, as CI's machine has it.)

The golden tests compare screens at the marks taken during capture. This replays each committed
recording into a fresh tmux pane of the recorded size (a small player in the pane writes one frame
at a time to its raw-mode terminal; ``ESC [ 6 n`` after each frame, answered by tmux, proves tmux
has parsed the frame before the pane is read) and compares the text (with DEC line drawing drawn as
a terminal draws it), cursor and alternate-screen flag after each frame, so redraws in between the
marks are checked too. RESIZE frames become ``tmux resize-window``. Rows a capture documents as a
legitimate difference (invalid UTF-8) are skipped in the scenario that has them. Prints the first
difference per scenario and exits 1 if any.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from recorder import FrameKind  # noqa: E402
from replay import Terminal  # noqa: E402
from tests.test_golden_screens import NAMES, golden, tmux_cells  # noqa: E402

PLAYER = r"""
import os, sys, tty
sys.path.insert(0, sys.argv[1])
from tests.test_golden_screens import golden
from recorder import FrameKind
frames = golden(sys.argv[2]).frames
tty.setraw(0)
cmd = open(sys.argv[3], "rb", buffering=0)
ack = open(sys.argv[4], "wb", buffering=0)
for line in iter(cmd.readline, b""):
    seq = int(line)
    if frames[seq].kind is FrameKind.OUTPUT:
        os.write(1, frames[seq].data)
    os.write(1, b"\x1b[6n")
    reply = b""
    while not reply.endswith(b"R"):
        reply += os.read(0, 1)
    ack.write(b"ok\n")
"""


def tmux(sock: Path, *args: str) -> str:
    p = subprocess.run(["tmux", "-S", str(sock), *args], capture_output=True, text=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"}, check=True)
    return p.stdout


def _read_ack(fd: int, timeout: float = 15) -> bytes:
    """The player's "ok" line, or what came before it stopped answering."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:  # the player closed its end
                time.sleep(0.01)
            got += chunk
    return got


def check(name: str, tmp: Path) -> str | None:
    g = golden(name)
    skip_rows = {int(r) for c in g.doc["captures"] for r in c["emulator_lines"]}
    # The socket in a short directory of its own: a Unix socket path has at most 107 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="zspx-"))
    sock, cmd, ack = sock_dir / "s", tmp / f"{name}.cmd", tmp / f"{name}.ack"
    for fifo in (cmd, ack):
        os.mkfifo(fifo)
    (tmp / "player.py").write_text(PLAYER)
    conf = tmp / "tmux.conf"
    conf.write_text("set -g status off\nset -g history-limit 0\nset -g escape-time 0\n")
    argv = [sys.executable, str(tmp / "player.py"), str(ROOT), name, str(cmd), str(ack)]
    subprocess.run(["tmux", "-u", "-S", str(sock), "-f", str(conf), "new-session", "-d", "-s", "x",
                    "-x", str(g.header.cols), "-y", str(g.header.rows), shlex.join(argv)],
                   check=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    t = Terminal(g.header.cols, g.header.rows)
    ar = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
    cw = -1
    try:
        deadline = time.monotonic() + 20
        while cw < 0:  # the player opens its end when it has started
            try:
                cw = os.open(cmd, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                if time.monotonic() > deadline:
                    return f"{name}: the player did not start"
                time.sleep(0.05)
        for f in g.frames:
            if f.kind is FrameKind.RESIZE:
                tmux(sock, "resize-window", "-t", "x", "-x", str(f.data.cols), "-y", str(f.data.rows))
                t.resize(f.data.cols, f.data.rows)
            elif f.kind is FrameKind.OUTPUT:
                t.feed(f.data)
            else:
                continue
            os.write(cw, f"{f.seq}\n".encode())
            if _read_ack(ar) != b"ok\n":
                return f"{name}: the player stopped at frame {f.seq}"
            sgr = tmux(sock, "capture-pane", "-p", "-e", "-t", "x").split("\n")[: t.rows]
            want = ["".join(ch for ch, _ in row).rstrip() for row in tmux_cells(sgr)]
            info = tmux(sock, "display", "-p", "-t", "x", "#{cursor_x},#{cursor_y},#{alternate_on}").strip()
            s = t.screen()
            for y, (w, e) in enumerate(zip(want, s.lines, strict=True)):
                if w != e and y not in skip_rows:
                    return f"{name}: frame {f.seq}, row {y}:\n  tmux     {w!r}\n  emulator {e!r}"
            mine = f"{s.cursor[0]},{s.cursor[1]},{int(s.alternate)}"
            if info != mine:
                return f"{name}: frame {f.seq}: cursor,alternate tmux {info} emulator {mine}"
    finally:
        os.close(ar)
        if cw >= 0:
            os.close(cw)
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)
        sock.unlink(missing_ok=True)
        sock_dir.rmdir()
    return None


def main() -> int:
    names = sys.argv[1:] or NAMES
    bad = 0
    with tempfile.TemporaryDirectory(prefix="zsp-crosscheck-") as t:
        for name in names:
            start = time.monotonic()
            problem = check(name, Path(t))
            frames = json.loads((HERE / f"{name}.json").read_text())["captures"][-1]["frames"]
            print(problem or f"{name}: same screens after every frame ({time.monotonic() - start:.1f} s, "
                  f"marks up to frame {frames})")
            bad += problem is not None
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
