"""Render throughput of the replay emulator (``replay.Terminal``) versus pyte, on the same input.

    python benchmarks/bench_replay.py [--plain-mb 24] [--full-mb 12] [--mixed-mb 12] [--pyte-mb 2] [--runs 3]

Three inputs, fed in the chunks a recording holds them in:

* **plain**: scrolling output as a PTY prints it (``\\r\\n`` line ends): service log lines, ``ls -l``
  listings and ``seq`` numbers, in 4 KiB chunks (the size the recorder writes under load).
* **full-screen**: the output frames of the golden recordings of vim, top, nested tmux and less
  (``tests/data/screens``, real programs through the bastion), each replayed at its recorded size
  with its own frame boundaries, repeated until the input is large enough: cursor addressing,
  scroll regions, SGR, alternate screen, erase, redraws.
* **mixed**: CJK, emoji and combining marks in coloured lines, with cursor movement and line
  editing redraws (a shell session of a team that writes in Japanese and Chinese).

``Terminal`` is timed on the whole input (best of ``--runs``); pyte, at 0.5-1 MB/s, on a prefix of
``--pyte-mb`` (the table says so). The goal (issue 8): >= 20 MB/s plain and >= 5 MB/s full-screen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recorder import MAX_DATA_PER_FRAME, FrameKind, Header, load_trusted_keys  # noqa: E402
from replay import Terminal, load  # noqa: E402

SCREENS = ROOT / "tests" / "data" / "screens"
CHUNK = MAX_DATA_PER_FRAME
SMALL_CHUNK = 4096


@dataclass(frozen=True)
class Segment:
    """Output to feed to a fresh terminal of one size, in recorded chunks."""

    cols: int
    rows: int
    chunks: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


def chunked(data: bytes, n: int = CHUNK) -> tuple[bytes, ...]:
    return tuple(data[i : i + n] for i in range(0, len(data), n))


def plain_input(mb: float, kinds: tuple[int, ...] = (0, 1, 2)) -> list[Segment]:
    """Blocks of log lines (kind 0: 75-95 bytes, most wrap at 80 columns), ``ls -l`` lines (1: about
    72 bytes) and ``seq`` numbers (2), in turn."""
    rnd = random.Random(1)
    levels = ["INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    parts: list[str] = []
    size = 0
    i = 0
    while size < mb * 1e6:
        kind = kinds[i % len(kinds)]
        if kind == 0:
            block = [f"2026-11-30T09:{n // 60 % 60:02}:{n % 60:02}.{rnd.randrange(1000):03}Z {rnd.choice(levels):5} "
                     f"api[{rnd.randrange(1000, 9999)}] GET /v1/orders/{rnd.randrange(10**6)} 200 "
                     f"{rnd.randrange(1, 900)}ms user=u{rnd.randrange(500)}" for n in range(200)]
        elif kind == 1:
            block = [f"-rw-r--r-- 1 www-data www-data {rnd.randrange(10**7):>9} Nov {rnd.randrange(1, 31):2} "
                     f"{rnd.randrange(24):02}:{rnd.randrange(60):02} report-{n:05}.{rnd.choice(['csv', 'json', 'gz'])}"
                     for n in range(200)]
        else:
            block = [str(n) for n in range(i * 1000, i * 1000 + 500)]
        text = "\r\n".join(block) + "\r\n"
        parts.append(text)
        size += len(text)
        i += 1
    return [Segment(80, 24, chunked("".join(parts).encode()))]


def recorded_segments(names: tuple[str, ...]) -> list[Segment]:
    trusted = load_trusted_keys(SCREENS / "allowed_signers")
    segments = []
    for name in names:
        doc = json.loads((SCREENS / f"{name}.json").read_text())
        frames, _report = load(SCREENS / doc["recording"], trusted)
        header = frames[0].data
        if not isinstance(header, Header):
            raise SystemExit(f"{name}: no header")
        chunks = tuple(f.data for f in frames if f.kind is FrameKind.OUTPUT)
        segments.append(Segment(header.cols, header.rows, chunks))
    return segments


def repeat(segments: list[Segment], mb: float) -> list[Segment]:
    out: list[Segment] = []
    size = 0
    while size < mb * 1e6:
        for s in segments:
            out.append(s)
            size += s.size
    return out


def mixed_input(mb: float) -> list[Segment]:
    rnd = random.Random(2)
    words = ["日本語", "東京都", "渋谷区", "你好", "世界", "한국어", "안녕하세요", "😀", "🚀", "✅", "🐍", "café",
             "nai\u0308ve", "deploy", "ok", "全角テキスト", "ｶﾀｶﾅ", "error", "запрос", "Ελληνικά"]
    colours = ["\x1b[0m", "\x1b[1;32m", "\x1b[31m", "\x1b[38;5;208m", "\x1b[48;2;30;30;60m", "\x1b[4m", "\x1b[7m"]
    parts: list[str] = []
    size = 0
    n = 0
    while size < mb * 1e6:
        line = " ".join(rnd.choice(colours) + rnd.choice(words) for _ in range(rnd.randrange(3, 10))) + "\x1b[0m"
        if n % 7 == 0:  # a prompt redrawn by line editing: back, erase to end, retype
            line = f"\x1b[1;32mops\x1b[0m:~$ {line}\r\x1b[16C\x1b[K{line}\x1b[5D\x1b[2P"
        text = line + "\r\n"
        parts.append(text)
        size += len(text.encode())
        n += 1
    return [Segment(80, 24, chunked("".join(parts).encode()))]


def run_terminal(segments: list[Segment]) -> None:
    for s in segments:
        t = Terminal(s.cols, s.rows)
        feed = t.feed
        for c in s.chunks:
            feed(c)
        t.screen()


def run_pyte(segments: list[Segment]) -> None:
    import pyte

    for s in segments:
        screen = pyte.Screen(s.cols, s.rows)
        stream = pyte.ByteStream(screen)
        for c in s.chunks:
            stream.feed(c)


PYTE_ERRORS: list[str] = []


def run_pyte_tolerant(segments: list[Segment]) -> None:
    """pyte, going on after a chunk it raises on (what a player built on it would have to do;
    the rest of that chunk is lost, so the screen is wrong, but the time is comparable)."""
    import pyte

    for s in segments:
        screen = pyte.Screen(s.cols, s.rows)
        stream = pyte.ByteStream(screen)
        for c in s.chunks:
            try:
                stream.feed(c)
            except Exception as exc:  # noqa: BLE001 - counted and reported below the table
                PYTE_ERRORS.append(f"{type(exc).__name__}: {exc}")


def prefix(segments: list[Segment], mb: float) -> list[Segment]:
    out: list[Segment] = []
    size = 0
    for s in segments:
        chunks = []
        for c in s.chunks:
            if size >= mb * 1e6:
                break
            chunks.append(c)
            size += len(c)
        if chunks:
            out.append(Segment(s.cols, s.rows, tuple(chunks)))
        if size >= mb * 1e6:
            break
    return out


def rate(fn: Callable[[list[Segment]], None], segments: list[Segment], runs: int) -> tuple[float, float, str]:
    """MB/s per second of this process's CPU time, and per second of wall time (best of ``runs``).
    On a shared machine the wall time includes waiting for a CPU; the CPU time does not."""
    size = sum(s.size for s in segments)
    best_cpu = best_wall = float("inf")
    for _ in range(runs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            fn(segments)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what broke (pyte raises on some input)
            return 0.0, 0.0, f"raised {type(exc).__name__}: {exc}"
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return size / best_cpu / 1e6, size / best_wall / 1e6, ""


def main() -> None:
    ap = argparse.ArgumentParser(description="replay.Terminal vs pyte render throughput")
    ap.add_argument("--plain-mb", type=float, default=24)
    ap.add_argument("--full-mb", type=float, default=12)
    ap.add_argument("--mixed-mb", type=float, default=12)
    ap.add_argument("--pyte-mb", type=float, default=2, help="pyte is timed on this prefix of each input")
    ap.add_argument("--runs", type=int, default=3, help="Terminal: best of this many runs")
    ap.add_argument("--no-pyte", action="store_true")
    args = ap.parse_args()

    inputs = {
        "plain scrolling (log, ls -l, seq)": (plain := plain_input(args.plain_mb), 20.0),
        "  same, in 4 KiB frames": ([Segment(s.cols, s.rows, chunked(b"".join(s.chunks), SMALL_CHUNK))
                                     for s in plain], 20.0),
        "  log lines only (most wrap)": (plain_input(args.plain_mb / 3, (0,)), None),
        "  ls -l lines only": (plain_input(args.plain_mb / 3, (1,)), None),
        "  seq only (short lines)": (plain_input(args.plain_mb / 3, (2,)), None),
        "full-screen (vim, top, tmux, less)": (repeat(recorded_segments(("vim", "top", "tmux", "less")),
                                                      args.full_mb), 5.0),
        "mixed: CJK, emoji, colour, editing": (mixed_input(args.mixed_mb), None),
    }
    load1, _, _ = os.getloadavg()
    print(f"load average {load1:.2f} on {os.cpu_count()} CPUs. MB/s per CPU second (the goal's column) and per "
          "wall second (lower when other processes take the CPU)")
    print(f"{'input':<36}{'MB':>7}{'Terminal MB/s':>15}{'wall':>7}{'goal':>10}{'pyte MB/s':>11}{'on MB':>8}"
          f"{'x pyte':>8}")
    notes: list[str] = []
    for label, (segments, goal) in inputs.items():
        size = sum(s.size for s in segments) / 1e6
        mine, mine_wall, err = rate(run_terminal, segments, args.runs)
        if err:
            raise SystemExit(f"{label}: Terminal {err}")
        if args.no_pyte:
            theirs, note, on = 0.0, "", 0.0
        else:
            head = prefix(segments, args.pyte_mb)
            on = sum(s.size for s in head) / 1e6
            theirs, _, note = rate(run_pyte, head, 1)
            if note:
                PYTE_ERRORS.clear()
                theirs, _, _ = rate(run_pyte_tolerant, head, 1)
                notes.append(f"pyte on {label}: {note}; timed going on past each chunk it raises on "
                             f"({len(PYTE_ERRORS)} chunks raised, {len(set(PYTE_ERRORS))} distinct errors)")
                note = "*"
        ok = "" if goal is None else ("ok" if mine >= goal else "MISS")
        goal_s = "" if goal is None else f">={goal:.0f} {ok}"
        pyte_s = (f"{theirs:.2f}" if theirs else "-") + note
        ratio = f"{mine / theirs:.0f}x" if theirs else "-"
        print(f"{label:<36}{size:>7.1f}{mine:>15.1f}{mine_wall:>7.1f}{goal_s:>10}{pyte_s:>11}{on:>8.1f}{ratio:>8}")
    for n in notes:
        print("* " + n)


if __name__ == "__main__":
    main()
