"""Render throughput of ``replay.Terminal`` against pyte on the same input.

    python benchmarks/bench_terminal.py [--mb 10] [--chunks 65536,4096] [--pyte-mb 2] [--no-capture]

Each input is fed in pieces of each ``--chunks`` size, ``take_lines()`` after each piece, as the
search indexer does after every output frame. 64 KiB is what the recorder writes for fast output
(it joins output for up to 20 ms into frames of up to 64 KiB); 4 KiB is a pessimistic case (a
program that writes little at a time). Inputs:

- ``plain logs``: log lines of 60-100 characters ending in CR LF, on 100x30 (the issue's "plain
  scrolling output": ``cat`` of a log, ``seq``, build output);
- ``long lines``: lines of 150-400 characters that wrap on an 80-column screen;
- ``colour ls``: ``ls -l --color`` style lines (an SGR around each name, xterm's ``ESC ( B``);
- ``full-screen``: generated vim/top-like redraws on 120x40: the alternate screen, a scroll region,
  CUP + SGR + short text runs + EL, insert/delete line, status line;
- ``vim``, ``top``, ``tmux`` (unless ``--no-capture`` or the program is missing): real output
  captured here under a PTY of 120x40 with TERM=xterm-256color: vim scrolling a syntax-highlighted
  file with ^F/^E/^B, ``top -d 0.05``, and tmux running ``seq`` and a colour ``ls``. Repeated to
  about ``--mb`` / 4 MB.

pyte is fed only the first ``--pyte-mb`` MB of each input (it is 10-50 times slower); its MB/s is
over what it was fed. Numbers vary with the machine and its load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import Terminal

WORDS = (
    "the quick brown fox jumps over lazy dog error warning info debug request GET POST "
    "/api/v1/items status=200 latency=12ms user=alice retry timeout connection reset"
).split()
CODE = "def class return import self if else for while in not None True False print".split()


def plain_logs(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    out: list[bytes] = []
    total = 0
    i = 0
    while total < size:
        head = f"2026-11-30T14:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z INFO "
        line = (head + " ".join(rnd.choice(WORDS) for _ in range(16)))[: rnd.randrange(60, 101)]
        data = line.encode() + b"\r\n"
        out.append(data)
        total += len(data)
        i += 1
    return b"".join(out)


def long_lines(size: int, seed: int = 2) -> bytes:
    rnd = random.Random(seed)
    out: list[bytes] = []
    total = 0
    while total < size:
        line = " ".join(rnd.choice(WORDS) for _ in range(80))[: rnd.randrange(150, 401)]
        data = line.encode() + b"\r\n"
        out.append(data)
        total += len(data)
    return b"".join(out)


def colour_ls(size: int, seed: int = 3) -> bytes:
    rnd = random.Random(seed)
    colours = [b"\x1b[01;34m", b"\x1b[01;32m", b"\x1b[01;36m", b"\x1b[00m", b"\x1b[40;33;01m"]
    out: list[bytes] = []
    total = 0
    while total < size:
        name = "_".join(rnd.choice(WORDS) for _ in range(rnd.randrange(1, 4))).encode()
        data = (
            b"-rwxr-xr-x  1 root root %8d Apr 10  2022 " % rnd.randrange(10**7)
            + rnd.choice(colours)
            + name
            + b"\x1b(B\x1b[m\x1b[K\r\n"
        )
        out.append(data)
        total += len(data)
    return b"".join(out)


def full_screen(size: int, seed: int = 4, cols: int = 120, rows: int = 40) -> bytes:
    rnd = random.Random(seed)
    colours = [
        b"\x1b[0m",
        b"\x1b[1;34m",
        b"\x1b[33m",
        b"\x1b[38;5;208m",
        b"\x1b[38;2;120;200;80m",
        b"\x1b[0;7m",
        b"\x1b[m",
    ]
    out = [b"\x1b[?1049h\x1b[H\x1b[2J\x1b[1;%dr" % (rows - 1)]
    total = 0
    while total < size:
        parts: list[bytes] = []
        kind = rnd.random()
        if kind < 0.15:  # scroll the region by a few lines (vim ^E, less)
            parts.append(b"\x1b[%d;1H" % (rows - 1))
            for _ in range(rnd.randrange(1, 4)):
                parts.append(b"\r\n" + b" ".join(rnd.choice(CODE).encode() for _ in range(rnd.randrange(3, 12))))
        elif kind < 0.25:  # insert lines at the top (vim ^Y)
            parts.append(b"\x1b[H\x1b[%dL" % rnd.randrange(1, 3))
        else:  # redraw some lines
            for _ in range(rnd.randrange(3, 20)):
                parts.append(b"\x1b[%d;%dH" % (rnd.randrange(1, rows), rnd.randrange(1, 10)))
                for _ in range(rnd.randrange(1, 6)):
                    parts.append(rnd.choice(colours))
                    parts.append(" ".join(rnd.choice(CODE) for _ in range(rnd.randrange(1, 4))).encode())
                parts.append(b"\x1b[0m\x1b[K")
        parts.append(
            b"\x1b[%d;1H\x1b[7m-- INSERT --\x1b[0m  %d,%d\x1b[K" % (rows, rnd.randrange(1000), rnd.randrange(80))
        )
        data = b"".join(parts)
        out.append(data)
        total += len(data)
    return b"".join(out)


def capture(
    argv: Sequence[str], keys: Sequence[bytes] = (), cols: int = 120, rows: int = 40, timeout: float = 30.0
) -> bytes:
    """Run ``argv`` under a PTY of ``cols`` x ``rows``, type ``keys``, return all it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        env = dict(os.environ, TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        os.execvpe(argv[0], list(argv), env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out: list[bytes] = []
    pending = list(keys)
    deadline = time.monotonic() + timeout
    next_key = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.01)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out.append(data)
        elif pending and time.monotonic() >= next_key:
            os.write(fd, pending.pop(0))
            next_key = time.monotonic() + 0.005
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)
    return b"".join(out)


def captured(workdir: Path) -> dict[str, tuple[bytes, tuple[int, int]]]:
    found: dict[str, tuple[bytes, tuple[int, int]]] = {}
    if shutil.which("vim"):
        source = workdir / "big.py"
        source.write_text(
            "".join(
                f'def function_{i}(alpha, beta=None):\n    """Docstring {i}."""\n'
                f"    return [x * {i} for x in range(alpha) if x % 3 == 0]  # comment\n\n"
                for i in range(3000)
            )
        )
        keys = [b"\x06"] * 150 + [b"\x05"] * 300 + [b"\x02"] * 100 + [b":q!\r"]
        argv = ["vim", "-N", "-u", "NONE", "-i", "NONE", "-c", "syntax on", "-c", "set number", str(source)]
        found["vim (captured)"] = (capture(argv, keys), (120, 40))
    if shutil.which("top"):
        found["top (captured)"] = (capture(["top", "-d", "0.05", "-n", "100"], timeout=20), (120, 40))
    if shutil.which("tmux"):
        command = "seq 1 100000; ls -la --color=always /usr/bin | head -3000"
        socket = f"zsp-bench-{os.getpid()}"
        argv = ["tmux", "-L", socket, "-f", "/dev/null", "new-session", command]
        try:
            found["tmux (captured)"] = (capture(argv, timeout=30), (120, 40))
        finally:  # the server outlives a client killed at the timeout
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    return found


def run_terminal(chunks: list[bytes], size: tuple[int, int]) -> float:
    term = Terminal(*size)
    feed, take = term.feed, term.take_lines
    start = time.perf_counter()
    for chunk in chunks:
        feed(chunk)
        take()
    term.screen()
    return time.perf_counter() - start


def run_pyte(chunks: list[bytes], size: tuple[int, int]) -> tuple[float, int]:
    """Seconds pyte took, and how many chunks made it raise (it does on sequences vim sends)."""
    import pyte

    screen = pyte.Screen(*size)
    stream = pyte.ByteStream(screen)
    errors = 0
    start = time.perf_counter()
    for chunk in chunks:
        try:
            stream.feed(chunk)
        except (TypeError, ValueError, KeyError, IndexError):
            errors += 1
            stream = pyte.ByteStream(screen)  # its parser is left mid-sequence: start a new one
    _ = screen.display
    return time.perf_counter() - start, errors


def split(data: bytes, chunk: int) -> list[bytes]:
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of each generated input")
    parser.add_argument("--chunks", default="65536,4096", help="bytes per feed() call, comma-separated")
    parser.add_argument("--pyte-mb", type=float, default=2.0, help="how much of each input pyte is fed (0: skip pyte)")
    parser.add_argument("--no-capture", action="store_true", help="skip the inputs captured from vim, top, tmux")
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    inputs: dict[str, tuple[bytes, tuple[int, int]]] = {
        "plain logs": (plain_logs(size), (100, 30)),
        "long lines": (long_lines(size), (80, 24)),
        "colour ls": (colour_ls(size), (120, 40)),
        "full-screen": (full_screen(size // 2), (120, 40)),
    }
    if not args.no_capture:
        with tempfile.TemporaryDirectory() as tmp:
            for name, (data, dims) in captured(Path(tmp)).items():
                if data:
                    inputs[name] = (data * max(1, int(size / 4 / len(data))), dims)
    chunks = [int(c) for c in args.chunks.split(",")]
    print(
        f"Terminal MB/s with feed() pieces of {', '.join(map(str, chunks))} bytes; pyte fed the first {args.pyte_mb:g} MB\n"
    )
    header = f"{'input':<18}{'MB':>7}" + "".join(f"{'@' + str(c):>10}" for c in chunks) + f"{'pyte':>8}{'x pyte':>8}"
    print(header)
    print("-" * len(header))
    for name, (data, dims) in inputs.items():
        mb = len(data) / 1e6
        line = f"{name:<18}{mb:>7.2f}"
        rates = []
        for chunk in chunks:
            rates.append(mb / run_terminal(split(data, chunk), dims))
            line += f"{rates[-1]:>10.1f}"
        if args.pyte_mb > 0:
            part = data[: int(args.pyte_mb * 1e6)]
            pyte_seconds, errors = run_pyte(split(part, chunks[0]), dims)
            pyte_rate = len(part) / 1e6 / pyte_seconds
            line += f"{pyte_rate:>8.2f}{min(rates) / pyte_rate:>8.0f}"
            if errors:
                line += f"  (pyte raised on {errors} pieces)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
