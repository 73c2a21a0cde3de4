"""The replay emulator against a real terminal: tmux, the oracle of the golden tests.

Each stream is printed into a detached tmux pane of a fixed size (``cat`` under ``stty -opost``,
so the bytes reach tmux unchanged) and ``capture-pane`` is compared with ``Terminal.screen()``,
text and cursor. The cases are where terminals disagree (the pending-wrap position), wide
characters at the margin, scroll regions, and seeded random full-screen streams. Where we differ
from tmux on purpose (invalid UTF-8 as U+FFFD, blanking the other half of a half-overwritten wide
character, DEC graphics translated) the streams avoid it; see replay/_terminal.py.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from replay import Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CASES: dict[str, tuple[bytes, tuple[int, int]]] = {
    "pending wrap then LF": (b"0123456789\nX", (10, 4)),
    "pending wrap then BS": (b"0123456789\x08X", (10, 4)),
    "pending wrap then CUB": (b"0123456789\x1b[DX", (10, 4)),
    "pending wrap then EL": (b"0123456789\x1b[K", (10, 4)),
    "pending wrap then CR": (b"0123456789\rX", (10, 4)),
    "wide at the margin": ("123456789中".encode(), (10, 4)),
    "emoji at the margin": ("12345678😀😀".encode(), (10, 4)),
    "combining mark": (b"e\xcc\x81x", (10, 4)),
    "ED 3 keeps the screen": (b"abc\r\ndef\x1b[3J", (10, 4)),
    "tab stops": (b"a\tb\x1b[3g\r\tc", (10, 4)),
    "DECSTBM homes": (b"abc\x1b[2;3rX", (10, 4)),
    "RI at the top": (b"a\r\nb\x1b[H\x1bMc", (10, 4)),
    "IL": (b"a\r\nb\r\nc\x1b[2;1H\x1b[L", (10, 4)),
    "REP": (b"ab\x1b[3b", (10, 4)),
    "autowrap off": (b"\x1b[?7l0123456789abc", (10, 4)),
    "SU in a region": (b"a\r\nb\r\nc\r\nd\x1b[2;3r\x1b[S", (10, 4)),
    "origin mode": (b"\x1b[2;3r\x1b[?6h\x1b[1;1HX\x1b[9;1HY", (10, 4)),
    "DECSC/DECRC": (b"\x1b[2;3H\x1b7\x1b[H\x1b8X", (10, 4)),
    "long SGR": (b"\x1b[" + b"1;" * 40 + b"31mX", (10, 4)),
    "alternate screen round trip": (b"main\x1b[?1049h\x1b[Halt\x1b[?1049lX", (10, 4)),
    "lines wider than the screen": (b"".join(b"%d:" % i + b"x" * (i * 7 % 23) + b"\r\n" for i in range(30)), (10, 5)),
}


def _random_stream(seed: int, cols: int, rows: int) -> bytes:
    """What full-screen programs send: CUP, SGR, text (some wide), EL, scroll regions, IL/DL, CR LF."""
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "中文", "😀", "x", "—", "naïve"]
    out = [b"\x1b[H\x1b[2J"]
    for _ in range(300):
        op = rnd.random()
        if op < 0.3:
            out.append(b"\x1b[%d;%dH" % (rnd.randrange(1, rows + 1), rnd.randrange(1, cols + 1)))
        elif op < 0.5:
            out.append(rnd.choice([b"\x1b[0m", b"\x1b[1;31m", b"\x1b[38;5;208m", b"\x1b[7m", b"\x1b[m"]))
        elif op < 0.75:
            out.append(" ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 4))).encode())
        elif op < 0.8:
            out.append(rnd.choice([b"\x1b[K", b"\x1b[1K", b"\x1b[2K", b"\x1b[J", b"\x1b[1J"]))
        elif op < 0.85:
            top = rnd.randrange(1, rows)
            out.append(b"\x1b[%d;%dr" % (top, rnd.randrange(top + 1, rows + 1)))
        elif op < 0.9:
            out.append(rnd.choice([b"\x1b[L", b"\x1b[2M", b"\x1b[S", b"\x1b[T", b"\x1bM", b"\x1bD"]))
        else:
            out.append(rnd.choice([b"\r\n", b"\n", b"\r", b"\x08", b"\t"]))
    return b"".join(out)


for _seed in range(6):
    CASES[f"random full-screen stream {_seed}"] = (_random_stream(_seed, 30, 8), (30, 8))


_servers = itertools.count()


def _tmux_screens(
    tmp: Path, cases: dict[str, tuple[bytes, tuple[int, int]]]
) -> dict[str, tuple[tuple[str, ...], tuple[int, int]]]:
    """Print every case in its own detached tmux session (one server); capture pane and cursor."""
    socket = f"zsp-test-{os.getpid()}-{next(_servers)}"
    base = ["tmux", "-L", socket, "-f", "/dev/null"]
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
    names = {name: f"s{i}" for i, name in enumerate(cases)}
    try:
        for name, (data, (cols, rows)) in cases.items():
            path = tmp / f"{names[name]}.bin"
            path.write_bytes(data)
            command = f"stty -opost; cat {path}; sleep 60"
            subprocess.run(
                [*base, "new-session", "-d", "-s", names[name], "-x", str(cols), "-y", str(rows), command],
                check=True,
                env=env,
            )
            subprocess.run([*base, "set-option", "-t", names[name], "status", "off"], check=True, env=env)
        time.sleep(1.0)
        out = {}
        for name, (_, (_cols, rows)) in cases.items():
            pane = subprocess.run(
                [*base, "capture-pane", "-p", "-t", names[name]], check=True, capture_output=True, text=True, env=env
            ).stdout
            cursor = subprocess.run(
                [*base, "display-message", "-p", "-t", names[name], "#{cursor_x},#{cursor_y}"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout.strip()
            x, y = (int(v) for v in cursor.split(","))
            out[name] = (tuple(line.rstrip() for line in pane.split("\n")[:rows]), (x, y))
        return out
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, env=env)


@pytest.fixture(scope="module")
def tmux_screens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[tuple[str, ...], tuple[int, int]]]:
    return _tmux_screens(tmp_path_factory.mktemp("tmux"), CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_screen_equals_tmux(name: str, tmux_screens: dict[str, tuple[tuple[str, ...], tuple[int, int]]]) -> None:
    data, (cols, rows) = CASES[name]
    t = Terminal(cols, rows)
    t.feed(data)
    lines, cursor = tmux_screens[name]
    assert t.screen().lines == lines
    assert t.cursor == cursor
