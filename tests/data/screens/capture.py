"""Capture the golden screens: real programs, through the real bastion, with tmux as the oracle.

Run as root on a machine with OpenSSH (client and sshd), tmux, vim, less and top (procps):

    python3 tests/data/screens/capture.py            # every scenario
    python3 tests/data/screens/capture.py vim top    # some of them

Not run by CI: the tests (tests/test_golden_screens.py) read only what this script commits.

What it does, for each scenario:

1. One bastion (``zsp serve`` over a scratch data dir, the test fixtures' ``make_env``) and one real
   sshd target ``srv`` trusting the bastion's CA, with a grant for alice.
2. A fresh tmux server (own socket, ``-f /dev/null``, status line off, ``default-terminal
   xterm-256color``, UTF-8 locale) whose only pane, of a FIXED size (80x24, or 100x30 for top),
   runs ``ssh -tt`` through the bastion to ``srv``: an interactive bash in a prepared directory
   (``/tmp/zsp-golden``: fixed path, own HOME, rc files and history), nothing of this machine's
   dotfiles. The pane shows only what ssh printed, and ssh (LogLevel=ERROR) prints only the
   session's output: the bastion passes the target's output through, and the grant (2 h) is far
   from its warnings. So the pane is the screen of exactly the recorded output.
3. The scenario drives real programs with ``tmux send-keys`` as a person types, and at marked
   points records tmux's view of the pane: ``capture-pane -p`` (text), ``capture-pane -p -e``
   (text with SGR attributes), cursor position and visibility, alternate screen, pane size.
   Before each capture the session must be quiet (no new frame in the live recording and no
   change in the pane for 0.8 s) and still be quiet after it; the mark is the number of frames
   in the recording at that moment, so the expected screen is that of frames ``seq < frames``
   (``t``: the time of the last of them, seconds from the start).
4. When the session has ended, the sealed recording is copied here as ``NAME.zsprec``, and the
   captures as ``NAME.json``. ``allowed_signers`` keeps the public key of every data-dir key that
   signed a recording still here (a partial re-run adds its new key and drops unused ones).

Where tmux and a classic terminal (xterm, and so the emulator) legitimately differ, the scenario
says so in ``differences`` and gives the expected lines in ``emulator_lines`` (row -> text); the
test ties each override back to tmux's line. Keep recordings small (< 1 MB each).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from recorder import load_trusted_keys  # noqa: E402
from replay import Outcome, Preamble, iter_raw, load, read_preamble, verify  # noqa: E402
from tests.bastion_env import Env, make_env  # noqa: E402

WORK = Path("/tmp/zsp-golden")
"""The remote side's working directory: a fixed path, so a re-run shows the same prompt and paths."""

TERM = "xterm-256color"
QUIET_S = 0.8


# --- the remote side's files ----------------------------------------------------------------------

BASHRC = r"""
PS1='\[\e[1;32m\]ops\[\e[0m\]:\[\e[1;34m\]\W\[\e[0m\]\$ '
HISTFILE=$HOME/.bash_history
HISTSIZE=100
eval "$(dircolors -b)"
"""

VIMRC = """\
set nocompatible
syntax on
set laststatus=2
set ruler
set background=dark
set viminfo=
"""

APP_PY = '''\
"""A small service: reads jobs from a queue and runs them."""

import json
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("worker")


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    retries: int = 3


def parse(line: str) -> Job:
    data = json.loads(line)
    return Job(int(data["id"]), str(data["name"]), int(data.get("retries", 3)))


def run(job: Job) -> bool:
    for attempt in range(job.retries):
        try:
            log.info("running %s (attempt %d)", job.name, attempt + 1)
            return True
        except OSError as exc:  # retried
            log.warning("job %s failed: %s", job.id, exc)
            time.sleep(2**attempt)
    return False


def main(path: str) -> int:
    ok = 0
    with open(path) as f:
        for line in f:
            if run(parse(line)):
                ok += 1
    print(f"{ok} jobs done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main("jobs.jsonl"))
'''

WIDE_TXT = (
    "日本語のテキスト: 東京都渋谷区\n"
    "中文: 你好\uff0c世界\uff01 한국어: 안녕하세요\n"
    "emoji: 😀 🎉 🚀 ✅ 🐍 end\n"
    "mixed: a中b文c 😀d\n"
    "combining: cafe\u0301 na\u0308ive\n"
    + "x" * 79 + "😀 <- emoji did not fit in the last column\n"
    + "y" * 78 + "中 <- CJK fits exactly\n"
    + "z" * 79 + "|\n"
    + "全角" * 25 + "\n"
)


def log_lines(n: int) -> str:
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "INFO", "ERROR", "INFO"]
    out = []
    for i in range(n):
        lvl = levels[(i * 7) % len(levels)]
        h, m, s = 9 + i // 3600, (i // 60) % 60, i % 60
        out.append(f"2026-11-30T{h:02}:{m:02}:{s:02}Z {lvl:5} worker[{1200 + i % 7}] job {i:04} "
                   + (f"finished in {i * 37 % 900} ms" if lvl != "ERROR" else "failed: connection reset by peer"))
    return "\n".join(out) + "\n"


def prepare_work() -> None:
    # An inner tmux server left by an interrupted run of the tmux scenario.
    subprocess.run(["tmux", "-L", "inner", "kill-server"], capture_output=True)
    if WORK.exists():
        shutil.rmtree(WORK)
    home = WORK / "home"
    home.mkdir(parents=True)
    (home / ".bashrc").write_text(BASHRC)
    (home / ".vimrc").write_text(VIMRC)
    (home / ".bash_history").write_text("systemctl status nginx\njournalctl -u nginx --since today\n"
                                        "df -h /srv\n")
    (home / "inner.conf").write_text("set -g status-right ' inner '\nset -g status-interval 0\n"
                                     "set -g default-terminal screen\n"
                                     f"set -g default-command 'bash --rcfile {home}/.bashrc -i'\n")
    (WORK / "app.py").write_text(APP_PY)
    (WORK / "service.log").write_text(log_lines(600))
    (WORK / "wide.txt").write_text(WIDE_TXT)
    tree = WORK / "tree"
    tree.mkdir()
    for d in ("src", "docs"):
        (tree / d).mkdir()
    (tree / "README.md").write_text("hello\n")
    (tree / "notes with space.txt").write_text("x\n")
    run = tree / "run.sh"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    (tree / "backup.tar.gz").write_bytes(b"\x1f\x8b" + bytes(200))
    (tree / "logo.png").write_bytes(b"\x89PNG" + bytes(100))
    (tree / "link-to-src").symlink_to("src")
    (tree / "dangling").symlink_to("nowhere")
    os.mkfifo(tree / "pipe")
    suid = tree / "suid-tool"
    suid.write_text("x")
    suid.chmod(0o4755)
    shared = tree / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for p in [*tree.iterdir(), tree]:  # fixed times: `ls -l` shows the same dates on every run
        os.utime(p, (1_795_000_000, 1_795_000_000), follow_symlinks=not p.is_symlink())


# --- tmux and the live recording ------------------------------------------------------------------


def frame_count(path: Path) -> int:
    """Complete frames in a (possibly live) recording."""
    with open(path, "rb") as f:
        status, _ = read_preamble(f)
        if status is not Preamble.OK:
            return 0
        return sum(1 for _ in iter_raw(f))


@dataclass
class Capture:
    name: str
    frames: int
    size: tuple[int, int]
    cursor: tuple[int, int]
    cursor_visible: bool
    alternate: bool
    title: str
    lines: list[str]
    sgr: list[str]


@dataclass
class Pane:
    """One tmux server with one pane running an ssh session through the bastion."""

    sock: Path
    env: Env
    recording: Path | None = None
    captures: list[Capture] = field(default_factory=list)
    initial_title: str = ""
    """tmux's own default pane title (the host name): a capture with it says "no title set"."""

    def tmux(self, *args: str) -> str:
        p = subprocess.run(["tmux", "-S", str(self.sock), *args], capture_output=True, text=True,
                           env={**os.environ, "LC_ALL": "C.UTF-8"})
        if p.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def start(self, cols: int, rows: int, shell: str) -> None:
        conf = self.sock.with_suffix(".conf")
        conf.write_text(f"set -g status off\nset -g default-terminal {TERM}\nset -g history-limit 0\n"
                        "set -g escape-time 0\n")
        before = len(self.env.svc.sessions())
        argv = [*self.env.ssh_argv("alice", "srv", "-tt"), shell]
        subprocess.run(["tmux", "-u", "-S", str(self.sock), "-f", str(conf), "new-session", "-d", "-s", "g",
                        "-x", str(cols), "-y", str(rows), shlex.join(argv)], check=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"})
        self.initial_title = self.tmux("display", "-p", "-t", "g", "#{pane_title}").rstrip("\n")
        deadline = time.monotonic() + 20
        while len(self.env.svc.sessions()) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("no session started: " + "".join(self.env.output[-5:]))
            time.sleep(0.05)
        self.recording = Path(self.env.svc.sessions()[-1].path)

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "g")

    def keys(self, *keys: str, literal: bool = False, pause: float = 0.15) -> None:
        self.tmux("send-keys", "-t", "g", *(["-l"] if literal else []), *keys)
        time.sleep(pause)

    def type(self, text: str, per_key: float = 0.0) -> None:
        """Type text as a person would (``per_key`` > 0: one key at a time)."""
        if per_key:
            for ch in text:
                self.keys(ch, literal=True, pause=per_key)
        else:
            self.keys(text, literal=True)

    def wait_for(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"never saw {needle!r} in:\n{self.text()}")
            time.sleep(0.1)

    def settle(self, timeout: float = 30) -> int:
        """Wait until neither the recording nor the pane changed for QUIET_S; the frame count."""
        if self.recording is None:
            raise RuntimeError("no session")
        deadline = time.monotonic() + timeout
        last = (frame_count(self.recording), self.text())
        since = time.monotonic()
        while time.monotonic() - since < QUIET_S:
            if time.monotonic() > deadline:
                raise RuntimeError("the session never went quiet")
            time.sleep(0.1)
            now = (frame_count(self.recording), self.text())
            if now != last:
                last, since = now, time.monotonic()
        return last[0]

    def capture(self, name: str) -> None:
        if self.recording is None:
            raise RuntimeError("no session")
        for _attempt in range(10):
            frames = self.settle()
            lines = self.text().split("\n")
            sgr = self.tmux("capture-pane", "-p", "-e", "-t", "g").split("\n")
            info = self.tmux("display", "-p", "-t", "g",
                             "#{pane_width},#{pane_height},#{cursor_x},#{cursor_y},#{cursor_flag},"
                             "#{alternate_on},#{pane_title}").rstrip("\n")
            time.sleep(0.3)
            if frame_count(self.recording) == frames and self.text().split("\n") == lines:
                w, h, cx, cy, cf, alt, title = info.split(",", 6)
                rows = int(h)
                self.captures.append(Capture(name, frames, (int(w), rows), (int(cx), int(cy)), cf == "1",
                                             alt == "1", "" if title == self.initial_title else title,
                                             [ln.rstrip() for ln in lines[:rows]],
                                             sgr[:rows]))
                print(f"  captured {name}: {frames} frames, {w}x{h}")
                return
        raise RuntimeError(f"{name}: the session kept changing while captured")

    def finish(self, timeout: float = 30) -> None:
        """Wait for the session (and so the pane and the tmux server) to end."""
        deadline = time.monotonic() + timeout
        sid = Path(self.recording or "").stem
        while True:
            s = next((s for s in self.env.svc.sessions() if s.id == sid), None)
            if s is not None and s.ended_at is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the session did not end")
            time.sleep(0.1)
        subprocess.run(["tmux", "-S", str(self.sock), "kill-server"], capture_output=True)


def shell_command() -> str:
    """What ssh asks the target to run: an interactive bash in the prepared directory, with a clean
    environment (TERM as sshd set it from the client's pty request)."""
    home = WORK / "home"
    return (f"cd {WORK} && exec env -i HOME={home} TERM=$TERM LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin "
            f"bash --rcfile {home}/.bashrc -i")


PROMPT = "ops:"


def at_prompt(p: Pane, count: int) -> None:
    """Wait for the ``count``-th prompt on screen."""
    deadline = time.monotonic() + 20
    while p.text().count(PROMPT) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no prompt #{count}:\n{p.text()}")
        time.sleep(0.1)


def prompt_last(p: Pane) -> None:
    """Wait until the last line with text on screen is an empty prompt."""
    deadline = time.monotonic() + 20
    while not [ln for ln in p.text().split("\n") if ln.strip()][-1].startswith(PROMPT):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no prompt at the end:\n{p.text()}")
        time.sleep(0.1)


def run_line(p: Pane, line: str, per_key: float = 0.0) -> None:
    p.type(line, per_key)
    p.keys("Enter")


# --- scenarios ------------------------------------------------------------------------------------


def sc_vim(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "vim app.py")
    p.wait_for("app.py")
    p.capture("open")
    p.keys(":set number", literal=True)
    p.keys("Enter")
    p.capture("number")
    p.keys("G")  # to the end: scrolls
    p.keys("o")
    p.type("# added during the golden capture: ünïcödé, 中文", per_key=0.01)
    p.keys("Escape", pause=0.4)
    p.capture("typed")
    p.keys(":split", literal=True)
    p.keys("Enter")
    p.keys("gg")
    p.keys("C-d")
    p.capture("split")
    for k in ("C-e", "C-e", "C-e", "C-y"):  # line scrolls inside the split: scroll regions
        p.keys(k)
    p.keys("j", "j")
    p.capture("scroll-lines")
    p.keys(":qa!", literal=True)
    p.keys("Enter")
    at_prompt(p, 2)
    p.capture("after-quit")
    run_line(p, "exit")


def sc_vim_windows(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "vim -O app.py wide.txt")  # two windows side by side
    p.wait_for("wide.txt")
    p.capture("vsplit")
    p.keys("C-w", "l")
    p.keys(":set nowrap", literal=True)
    p.keys("Enter")
    p.keys("6G")
    p.keys("40l")  # scroll sideways through a line of wide characters
    p.capture("nowrap")
    p.keys("C-w", "h")
    p.keys("12G")
    p.keys("V", "j", "j")  # visual line selection
    p.capture("visual")
    p.keys("Escape", pause=0.3)
    p.keys("G", "o")
    p.type("log.in", per_key=0.03)
    p.keys("C-n")  # completion menu (popup colours)
    p.capture("completion")
    p.keys("Escape", pause=0.3)
    p.keys(":qa!", literal=True)
    p.keys("Enter")
    at_prompt(p, 2)
    run_line(p, "exit")


def sc_less(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "less service.log")
    p.wait_for("job 0000")
    p.capture("open")
    p.keys("Space")
    p.keys("Space")
    p.capture("page-down")
    p.keys("/failed: conn", literal=True)
    p.keys("Enter")
    p.capture("search")
    p.keys("n")
    p.keys("n")
    p.capture("search-next")
    for k in ("k", "k", "k", "k", "j"):  # line scrolls back (reverse index / insert line) and on
        p.keys(k)
    p.capture("line-scroll")
    p.keys("q")
    at_prompt(p, 2)
    p.capture("after-quit")
    run_line(p, "exit")


def sc_top(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "top -d 6")
    p.wait_for("load average")
    time.sleep(1)
    p.keys("Space")  # refresh now
    p.capture("refresh-1")
    p.keys("Space")
    p.capture("refresh-2")
    p.keys("z")  # colour mode
    p.keys("x")  # highlight the sort column
    p.keys("b")  # ... in bold/reverse
    p.capture("colour")
    p.keys("q")
    prompt_last(p)
    p.capture("after-quit")
    run_line(p, "exit")


def sc_tmux(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, f"tmux -L inner -f {WORK}/home/inner.conf new-session -s work")
    p.wait_for("inner")
    at_prompt(p, 1)  # the inner tmux cleared the screen
    run_line(p, "ls tree | head -3")
    at_prompt(p, 2)
    p.keys("C-b", "%")
    at_prompt(p, 3)
    run_line(p, "echo right pane")
    at_prompt(p, 4)
    p.keys("C-b", '"')
    at_prompt(p, 5)
    run_line(p, "seq 1 30")
    p.wait_for("30")
    p.capture("split")
    p.keys("C-b", "[")  # copy mode in the bottom pane: scroll back, select
    for k in ("k", "k", "k", "k", "k", "k", "k", "k", "Space", "k", "k", "0"):
        p.keys(k, pause=0.05)
    p.capture("copy-mode")
    p.keys("q")
    p.keys("C-b", "d")
    p.wait_for("detached")
    p.capture("detached")
    run_line(p, "tmux -L inner kill-server; exit")


def sc_tmux_acs(p: Pane) -> None:
    """Nested tmux in the C locale: it draws its borders with the DEC line-drawing charset (ESC ( 0)."""
    at_prompt(p, 1)
    run_line(p, f"LC_ALL=C tmux -L inner -f {WORK}/home/inner.conf new-session -s acs")
    p.wait_for("inner")
    at_prompt(p, 1)
    p.keys("C-b", "%")
    at_prompt(p, 2)
    p.keys("C-b", '"')
    at_prompt(p, 3)
    run_line(p, "echo bottom right")
    p.wait_for("bottom right\n")
    p.capture("borders")
    run_line(p, "tmux -L inner kill-server")
    p.wait_for("exited")
    run_line(p, "exit")


def sc_ls(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "ls --color=always tree")
    at_prompt(p, 2)
    run_line(p, "ls -lgG --color=always --time-style=+%F tree")
    at_prompt(p, 3)
    p.capture("ls")
    run_line(p, r"printf 'name\tsize\tmode\nrun.sh\t40\t0755\n\tindented\tby tabs\n'")
    prompt_last(p)
    p.capture("tabs")
    run_line(p, "clear; grep --color=always -n -m 4 'ERROR' service.log")  # SGR with EL (ESC [ K)
    prompt_last(p)
    run_line(p, "diff --color=always -u app.py <(sed 's/retries/attempts/' app.py) | head -12")
    prompt_last(p)
    p.capture("grep-diff")
    run_line(p, "exit")


def sc_wide(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "cat wide.txt")
    at_prompt(p, 2)
    p.type("echo 'typed: 你好 😀 ok'", per_key=0.02)
    p.keys("Enter")
    at_prompt(p, 3)
    # Line editing across wide characters: readline moves over them, inserts and deletes before them.
    p.type("echo 東京 渋谷 😀 end", per_key=0.02)
    for _ in range(8):
        p.keys("Left", pause=0.05)
    p.type("区", per_key=0.05)
    p.keys("C-a")
    p.keys("M-f")
    p.keys("C-d", "C-d")
    p.capture("wide-editing")
    p.keys("C-e")
    p.keys("Enter")
    at_prompt(p, 4)
    p.capture("wide")
    run_line(p, "less wide.txt")  # wide characters wrapped and redrawn by a full-screen program
    p.wait_for("(END)")
    p.capture("less")
    p.keys("q")
    at_prompt(p, 5)
    run_line(p, "exit")


def sc_resize(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "clear; stty size")
    p.wait_for("24 80")
    at_prompt(p, 1)
    run_line(p, "less service.log")
    p.wait_for("job 0000")
    p.capture("before")
    p.tmux("resize-window", "-t", "g", "-x", "100", "-y", "30")
    time.sleep(0.5)
    p.capture("grown")
    p.tmux("resize-window", "-t", "g", "-x", "60", "-y", "20")
    time.sleep(0.5)
    p.capture("shrunk")
    p.keys("q")
    at_prompt(p, 2)
    run_line(p, "stty size")
    p.wait_for("20 60")
    p.capture("after-quit")
    run_line(p, "exit")


def sc_invalid_utf8(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, r"printf '\xff\xfe abc \xc3('; echo")
    at_prompt(p, 2)
    run_line(p, r"printf 'overlong \xc0\xaf surrogate \xed\xa0\x80 cut \xf0\x9f\x98 end\n'")
    at_prompt(p, 3)
    p.capture("invalid")
    run_line(p, "exit")


def sc_man(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "man ls")
    p.wait_for("NAME")
    p.capture("open")  # bold and underlined words (less turns groff's overstrike into SGR)
    p.keys("Space")
    p.keys("/--color", literal=True)
    p.keys("Enter")
    p.capture("search")
    p.keys("q")
    at_prompt(p, 2)
    p.capture("after-quit")
    run_line(p, "exit")


COLOUR_LINES = [
    r"for i in $(seq 0 255); do printf '\e[48;5;%sm%4s\e[0m' $i $i; (( (i + 1) % 16 )) || echo; done",
    r"for i in $(seq 0 4 252); do printf '\e[38;2;%d;%d;200m#\e[48;2;%d;0;0m \e[0m' $i $((252 - i)) $i; done; echo",
    r"printf '\e[1mbold\e[0m \e[2mdim\e[0m \e[3mitalic\e[0m \e[4munder\e[0m \e[5mblink\e[0m "
    r"\e[7mreverse\e[0m \e[8mhidden\e[0m \e[9mstrike\e[0m \e[1;4;31mall\e[22;24mred\e[0m\n'",
    r"printf '\e]2;colour test\a'",  # a title (OSC 2)
    r"printf '\e[31;42mred on green\e[K\e[0m\n\e[97;100mbright\e[39;49m default\n'",
    # Erase with a background colour (BCE), then text after it: tmux shows coloured blanks only
    # before the last character of a row.
    r"printf '\e[42m\e[K\e[0m\e[30Cbce\n\e[44m\e[8X\e[0m\e[10Cech\n'",
]


def sc_colours(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "clear")
    for line in COLOUR_LINES:
        prompt_last(p)
        run_line(p, line)
        time.sleep(0.5)
    prompt_last(p)
    p.capture("colours")
    run_line(p, "exit")


def sc_bash(p: Pane) -> None:
    at_prompt(p, 1)
    run_line(p, "echo first command", per_key=0.02)
    run_line(p, "echo second command", per_key=0.02)
    at_prompt(p, 3)
    # History: up twice to the first, edit its start and end.
    p.keys("Up")
    p.keys("Up")
    p.keys("C-a")
    p.keys("M-f")  # after "echo"
    p.type(" edited", per_key=0.02)
    p.keys("C-e")
    p.keys("BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace")
    p.type("line", per_key=0.02)
    p.keys("Enter")
    at_prompt(p, 4)
    # Reverse search.
    p.keys("C-r")
    p.type("seco", per_key=0.05)
    p.capture("reverse-search")
    p.keys("Enter")
    at_prompt(p, 5)
    # Tab completion, a long line wrapping past the margin, edited in the middle.
    p.type("wc -l serv", per_key=0.02)
    p.keys("Tab", pause=0.4)
    p.keys("Enter")
    at_prompt(p, 6)
    p.type("echo " + " ".join(f"word{i:02}" for i in range(16)), per_key=0.005)
    for _ in range(60):
        p.keys("Left", pause=0.01)
    p.type("INSERTED ", per_key=0.02)
    p.capture("wrapped-edit")
    p.keys("Enter")
    at_prompt(p, 7)
    p.capture("end")
    run_line(p, "exit")


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Pane], None]
    size: tuple[int, int]
    description: str
    emulator_lines: dict[str, dict[int, str]] = field(default_factory=dict)
    """capture name -> row -> the line a classic terminal shows where tmux differs."""
    differences: tuple[str, ...] = ()


SCENARIOS = [
    Scenario("vim", sc_vim, (80, 24), "vim on a Python file: syntax colours, :set number, G and typing "
             "(scrolls), :split, quit back to the shell"),
    Scenario("vim_windows", sc_vim_windows, (80, 24), "vim -O: side-by-side windows, nowrap scrolled "
             "sideways through wide characters, a visual selection, the completion menu"),
    Scenario("less", sc_less, (80, 24), "less on a 600-line log: pages down, a search with highlights, quit"),
    Scenario("top", sc_top, (100, 30), "top at 100x30: two refreshes, colour mode with the sort column "
             "highlighted, then quit"),
    Scenario("tmux", sc_tmux, (80, 24), "tmux nested in the session: three panes, a status line, copy mode "
             "with a selection, detach"),
    Scenario("tmux_acs", sc_tmux_acs, (80, 24), "tmux nested in the C locale: pane borders in the DEC "
             "line-drawing character set"),
    Scenario("ls", sc_ls, (80, 24), "ls --color=always over dirs, links, a dangling link, a fifo, "
             "setuid, sticky, archives and images"),
    Scenario("wide", sc_wide, (80, 24), "CJK, emoji (one that does not fit in the last column), "
             "combining marks, wide text typed at the prompt"),
    Scenario("resize", sc_resize, (80, 24), "less, then the window grows to 100x30 and shrinks to 60x20 "
             "(RESIZE frames, SIGWINCH redraws), quit"),
    Scenario("invalid_utf8", sc_invalid_utf8, (80, 24), "invalid UTF-8: stray bytes, a cut sequence, "
             "overlong and surrogate encodings",
             emulator_lines={"invalid": {
                 1: "\ufffd\ufffd abc \ufffd(",
                 4: "overlong \ufffd\ufffd surrogate \ufffd\ufffd\ufffd cut \ufffd end",
             }},
             differences=("tmux drops bytes that are not valid UTF-8; a classic terminal (xterm, VTE) and "
                          "the emulator draw U+FFFD for each maximal invalid subpart (Unicode's "
                          "'substitution of maximal subparts'). Rows listed in emulator_lines are tmux's "
                          "line with those U+FFFD added; the test checks that removing them gives tmux's line.",)),
    Scenario("man", sc_man, (80, 24), "man ls: groff output paged by less (bold, underline), a search, quit"),
    Scenario("colours", sc_colours, (80, 24), "a colour test typed at the prompt: every SGR attribute, the "
             "256-colour palette as backgrounds, truecolor foreground and background, erase with a background"),
    Scenario("bash", sc_bash, (80, 24), "bash line editing: history recall and edits, reverse search, "
             "tab completion, a wrapped line edited in the middle"),
]


# --- driver ---------------------------------------------------------------------------------------


def record(env: Env, sc: Scenario, tmp: Path) -> dict[str, Any]:
    print(f"{sc.name}:")
    pane = Pane(tmp / f"{sc.name}.sock", env)
    pane.start(*sc.size, shell_command())
    try:
        sc.run(pane)
        pane.finish()
    finally:
        subprocess.run(["tmux", "-S", str(pane.sock), "kill-server"], capture_output=True)
    if pane.recording is None:
        raise RuntimeError("no recording")
    report = verify(pane.recording, load_trusted_keys(env.data.allowed_signers_path))
    if report.outcome is not Outcome.VALID:
        raise RuntimeError(f"{sc.name}: recording is {report.outcome.value}")
    frames, _ = load(pane.recording, load_trusted_keys(env.data.allowed_signers_path))
    shutil.copyfile(pane.recording, HERE / f"{sc.name}.zsprec")
    size = (HERE / f"{sc.name}.zsprec").stat().st_size
    print(f"  {size} bytes, signer {report.signer_fingerprint}")
    if size > 1_000_000:
        raise RuntimeError(f"{sc.name}: recording too large ({size} bytes)")
    doc = {
        "scenario": sc.name,
        "description": sc.description,
        "recording": f"{sc.name}.zsprec",
        "term": TERM,
        "size": list(sc.size),
        "signer": report.signer_fingerprint,
        "differences": list(sc.differences),
        "captures": [
            {
                "name": c.name,
                "frames": c.frames,
                "t": round(frames[c.frames - 1].t_us / 1e6, 3),
                "size": list(c.size),
                "cursor": list(c.cursor),
                "cursor_visible": c.cursor_visible,
                "alternate": c.alternate,
                "title": c.title,
                "lines": c.lines,
                "sgr": c.sgr,
                "emulator_lines": {str(k): v for k, v in sc.emulator_lines.get(c.name, {}).items()},
            }
            for c in pane.captures
        ],
    }
    (HERE / f"{sc.name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc


def update_signers(env: Env) -> None:
    """allowed_signers: this run's key plus earlier keys still signing a recording here."""
    path = HERE / "allowed_signers"
    lines = path.read_text().splitlines() if path.exists() else []
    lines += [ln for ln in env.data.allowed_signers_path.read_text().splitlines() if ln.strip()]
    needed = {json.loads(p.read_text())["signer"] for p in HERE.glob("*.json")}
    keep: list[str] = []
    for ln in dict.fromkeys(lines):
        if ln.startswith("#"):
            continue
        tmp = Path(tempfile.mkstemp()[1])
        tmp.write_text(ln + "\n")
        fps = {k.fingerprint for k in load_trusted_keys(tmp)}
        tmp.unlink()
        if fps & needed:
            keep.append(ln)
    path.write_text("# Public keys of the capture runs' data dirs (tests/data/screens/capture.py)\n"
                    + "\n".join(keep) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="scenarios (default: all): " + ", ".join(s.name for s in SCENARIOS))
    args = ap.parse_args()
    chosen = [s for s in SCENARIOS if not args.names or s.name in args.names]
    if args.names and len(chosen) != len(set(args.names)):
        ap.error("unknown scenario")
    for tool in ("tmux", "vim", "less", "top", "ssh", "sshd"):
        if shutil.which(tool) is None and not (tool == "sshd" and Path("/usr/sbin/sshd").exists()):
            ap.error(f"{tool} is needed")
    prepare_work()
    with tempfile.TemporaryDirectory(prefix="zsp-capture-") as t:
        tmp = Path(t)
        env = make_env(tmp, with_sshd=True)
        env.start()
        try:
            env.grant("srv", duration=timedelta(hours=2))
            for sc in chosen:
                record(env, sc, tmp)
            update_signers(env)
        finally:
            env.stop()
            if env.sshd:
                env.sshd.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
