"""Seek latency in a long recording: how fast ``zsp play`` shows any moment of a one-hour, 100 MB session.

    python benchmarks/bench_seek.py [--minutes 60] [--mb 100] [--points 1000] [--keep DIR]

Writes a recording with :class:`recorder.RecordingWriter` (fake clock: one hour of session time in
a few seconds) whose output is a realistic mix: scrolling logs (coloured, timestamped lines, in
bursts), full-screen redraw bursts (``top``/``vim``-like: cursor addressing, SGR, erase, on the
alternate screen), typed commands, pauses and a few resizes. Then it verifies it, builds the seek
index (``replay.build_index``: a second verified pass through the emulator, keyframes every
32 KiB / 10 s), saves and reloads the index as ``zsp play`` caches it, and seeks to ``--points``
random moments (``Seeker.screen_at``: nearest keyframe + replay of the frames after it + the
``Screen``), printing p50/p90/p99/max latency. Goal: p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder import FileSink, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey
from replay import Seeker, build_index, load_index, save_index, verify

WORDS = b"GET POST /api/v1/users /healthz 200 404 500 ms user=alice db=prod retry cache miss hit".split()


def log_burst(rnd: random.Random, t_s: float, lines: int) -> bytes:
    out = []
    for _ in range(lines):
        level = rnd.choice([b"\x1b[32mINFO\x1b[0m", b"\x1b[33mWARN\x1b[0m", b"\x1b[31mERROR\x1b[0m", b"DEBUG"])
        msg = b" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 14)))
        out.append(b"2026-11-30T12:%02d:%06.3fZ %s %s\r\n" % (int(t_s // 60) % 60, t_s % 60, level, msg))
    return b"".join(out)


def redraw_burst(rnd: random.Random, cols: int, rows: int, frames: int) -> bytes:
    out = [b"\x1b[?1049h\x1b[H\x1b[2J"]
    for _ in range(frames):
        out.append(b"\x1b[H\x1b[7m top - 12:00:00 up 3 days, load average: %.2f \x1b[K\x1b[0m" % rnd.random())
        for y in range(2, rows):
            pid = rnd.randint(1, 99999)
            cpu = rnd.random() * 100
            colour = 31 if cpu > 80 else 0
            out.append(
                b"\x1b[%d;1H\x1b[%dm%6d root      20   0 %7d %6d S %5.1f  0.3   0:%02d.%02d %s\x1b[0m\x1b[K"
                % (y, colour, pid, rnd.randint(1000, 10**6), rnd.randint(100, 10**5), cpu, rnd.randint(0, 59),
                   rnd.randint(0, 99), rnd.choice(WORDS)[: cols - 60])
            )
    out.append(b"\x1b[?1049l")
    return b"".join(out)


def write_session(path: Path, minutes: int, mb: int, seed: int = 1) -> tuple[int, float]:
    rnd = random.Random(seed)
    key = SigningKey.from_seed(bytes(32), comment="bench")
    t_ns = 10**12
    cols, rows = 120, 40
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="prod", login="root", cols=cols, rows=rows),
        fsync=FsyncPolicy.NEVER,
        clock=lambda: t_ns,
        wall_clock=lambda: 1_790_000_000 * 10**9 + t_ns,
    )
    end_ns = t_ns + minutes * 60 * 10**9
    target = mb * 1_000_000
    per_step = target / (minutes * 60 / 0.25)  # output bytes per 250 ms step on average
    start = time.perf_counter()
    while t_ns < end_ns:
        t_ns += 250_000_000
        r = rnd.random()
        if r < 0.02:
            w.input(b"kubectl logs -f app\r", at_ns=t_ns)
        elif r < 0.025:
            cols, rows = rnd.choice([(120, 40), (80, 24), (200, 50)])
            w.resize(cols, rows, at_ns=t_ns)
        elif r < 0.1:
            continue  # a quiet moment
        budget = int(per_step * rnd.uniform(0.3, 1.7) / 0.9)
        data = redraw_burst(rnd, cols, rows, 1 + budget // 4000) if rnd.random() < 0.35 else b""
        while len(data) < budget:
            data += log_burst(rnd, t_ns / 1e9, 20)
        for i in range(0, len(data), 16384):  # as a PTY delivers it
            w.output(data[i : i + 16384], at_ns=t_ns + i)
        w.tick(at_ns=t_ns + len(data))
    w.close(0, "exit", at_ns=t_ns + 10**9)
    return w.output_bytes, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the recording and index here (kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        rec = d / "bench.zsprec"
        rec.unlink(missing_ok=True)
        out_bytes, gen_s = write_session(rec, args.minutes, args.mb)
        size = rec.stat().st_size
        key = SigningKey.from_seed(bytes(32), comment="bench")
        print(f"recording      {size / 1e6:,.1f} MB on disk, {out_bytes / 1e6:,.1f} MB of output, "
              f"{args.minutes} min (written in {gen_s:.1f} s)")

        t0 = time.perf_counter()
        report = verify(rec, [key.public])
        verify_s = time.perf_counter() - t0
        print(f"verify         {verify_s:.2f} s ({size / 1e6 / verify_s:,.0f} MB/s) {report.outcome.value}")

        t0 = time.perf_counter()
        index = build_index(rec, [key.public], report)
        build_s = time.perf_counter() - t0
        cache = d / "bench.seek"
        save_index(index, cache)
        t0 = time.perf_counter()
        loaded = load_index(cache)
        load_s = time.perf_counter() - t0
        if loaded is None or not loaded.matches(report, size):
            raise SystemExit("the saved index does not load back")
        print(f"index build    {build_s:.1f} s ({out_bytes / 1e6 / build_s:,.1f} MB/s of output), "
              f"{len(index.keyframes)} keyframes, {cache.stat().st_size / 1e6:,.1f} MB "
              f"({cache.stat().st_size / size:.1%} of the recording), loads in {load_s * 1000:.0f} ms")

        seeker = Seeker(rec, loaded)
        rnd = random.Random(7)
        lat: list[float] = []
        for _ in range(args.points):
            t = rnd.randrange(0, seeker.duration_us + 1)
            s0 = time.perf_counter()
            seeker.screen_at(t)
            lat.append((time.perf_counter() - s0) * 1000)
        print(f"seek ({args.points} random points)  p50 {statistics.median(lat):.1f} ms  p90 {pct(lat, 90):.1f} ms  "
              f"p99 {pct(lat, 99):.1f} ms  max {max(lat):.1f} ms  (goal p99 <= 50 ms)")


if __name__ == "__main__":
    main()
