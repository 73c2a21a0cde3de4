"""Search benchmark: index build throughput, index size, query latency over many sessions.

    python benchmarks/bench_search.py [--sessions 10000] [--build-mb 20] [--dir DIR]

Prints one table. Rows:

* ``build, interactive``: shell sessions written with the real RecordingWriter (a test key):
  commands typed key by key with their echo, then their output (listings, logs, kubectl, psql),
  indexed with ``index_recording`` (verify -> only_signed -> scan through the emulator -> FTS5,
  one transaction per session). MB/s of recording bytes.
* ``build, bulk output``: the same for sessions that mostly print (``cat`` of a log file).
* ``index size``: search.db bytes / recording bytes, for the sessions built above.
* ``query ...``: latency p50/p99 of ``SqliteSearchIndex.search`` (limit 50) over an index of
  ``--sessions`` sessions. To build that many in minutes, their rows (a mix of the same commands
  and output lines, ~150 per session, 20 users, 50 targets) are inserted through the index API
  (``replace``) instead of being scanned from recordings: the query cost depends on the rows,
  not on how they were made. Each query runs 200 times with varied words/users.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from recorder import FileSink, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey
from replay import HitKind, IndexedSession, Row, SqliteSearchIndex, index_recording

KEY = SigningKey.from_seed(bytes(range(32)), comment="bench")
WORDS = ("app web api db cache queue worker auth billing orders users search report metrics nginx "
         "postgres redis kafka node prod staging canary backup deploy").split()
COMMANDS = [
    "ls -la /var/log/{w}",
    "cd /srv/{w}",
    "tail -n 100 /var/log/{w}/current",
    "kubectl get pods -n {w}",
    "kubectl delete pod {w}-{n:x}",
    "kubectl logs deploy/{w} --since=1h",
    "psql -U app -c 'SELECT count(*) FROM {w}'",
    "systemctl restart {w}",
    "grep -rn ERROR /var/log/{w}",
    "df -h",
    "rm -rf /tmp/build-{n}",
    "git pull origin main",
    "docker ps --filter name={w}",
    "sudo journalctl -u {w} --since today",
    "curl -s http://localhost:8080/{w}/health",
    "cat /etc/{w}/config.yaml",
]
OUTPUTS = [
    "drwxr-xr-x  2 root root 4096 Nov 30 12:{m:02d} {w}",
    "-rw-r--r--  1 app  app  {n} Nov 30 11:{m:02d} {w}.log",
    "2026-11-30T12:{m:02d}:01Z {w}[{n}]: INFO request id={h} path=/api/v1/{w} status=200 dur={m}ms",
    "2026-11-30T12:{m:02d}:02Z {w}[{n}]: ERROR upstream timeout after 30s host={w}-{m}.internal",
    "{w}-{h}   1/1     Running   0          {m}d",
    " count ",
    "-------",
    "  {n}",
    "Filesystem      Size  Used Avail Use% Mounted on",
    "/dev/sda1        99G   {m}G   {n}G  {m}% /",
    "{{\"status\":\"ok\",\"service\":\"{w}\",\"uptime\":{n}}}",
]


def _fill(template: str, rnd: random.Random) -> str:
    return template.format(w=rnd.choice(WORDS), n=rnd.randint(1, 99999), m=rnd.randint(0, 59),
                           h=f"{rnd.getrandbits(32):08x}")


class _Clock:
    def __init__(self) -> None:
        self.t = 10**12

    def __call__(self) -> int:
        self.t += 7_000_000  # 7 ms per reading
        return self.t


def write_interactive(path: Path, rnd: random.Random, commands: int) -> None:
    clock = _Clock()
    w = RecordingWriter(FileSink(path, sync_dir=False), KEY,
                        SessionMeta(user="bench", target="db1", login="root", term="xterm", cols=120, rows=40),
                        clock=clock, coalesce_ms=0, fsync=FsyncPolicy.NEVER)
    w.output(b"root@db1:~# ")
    for _ in range(commands):
        cmd = _fill(rnd.choice(COMMANDS), rnd).encode()
        for i in range(0, len(cmd), 3):  # typed, echoed
            w.input(cmd[i : i + 3])
            w.output(cmd[i : i + 3])
        w.input(b"\r")
        lines = [_fill(rnd.choice(OUTPUTS), rnd) for _ in range(rnd.randint(1, 40))]
        w.output(b"\r\n" + "\r\n".join(lines).encode() + b"\r\nroot@db1:~# ")
    w.close(0, "exit")


def write_bulk(path: Path, rnd: random.Random, mb: float) -> None:
    clock = _Clock()
    w = RecordingWriter(FileSink(path, sync_dir=False), KEY,
                        SessionMeta(user="bench", target="db1", login="root", term="xterm", cols=120, rows=40),
                        clock=clock, coalesce_ms=0, fsync=FsyncPolicy.NEVER)
    w.input(b"cat /var/log/app/current\r")
    size = 0
    while size < mb * 1e6:
        chunk = ("\r\n".join(_fill(rnd.choice(OUTPUTS), rnd) for _ in range(300)) + "\r\n").encode()
        for i in range(0, len(chunk), 32768):
            w.output(chunk[i : i + 32768])
        size += len(chunk)
    w.close(0, "exit")


def build(root: Path, mb: float) -> list[tuple[str, float, float, float, float]]:
    """(name, MB, seconds, CPU seconds, index bytes/recording bytes) per build kind."""
    rnd = random.Random(1)
    out = []
    for name in ("interactive", "bulk output"):
        d = root / name.replace(" ", "-")
        d.mkdir()
        paths = []
        total = 0
        i = 0
        while total < mb * 1e6:
            p = d / f"s{i}.zsprec"
            if name == "interactive":
                write_interactive(p, rnd, 60)
            else:
                write_bulk(p, rnd, min(5.0, mb))
            total += p.stat().st_size
            paths.append(p)
            i += 1
        db = d / "search.db"
        index = SqliteSearchIndex(db)
        t0, c0 = time.perf_counter(), time.process_time()
        for p in paths:
            s = index_recording(index, p, [KEY.public])
            if s.outcome != "VALID":
                raise SystemExit(f"{p}: {s.outcome}")
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        index.close()
        size = sum(f.stat().st_size for f in d.glob("search.db*"))
        out.append((name, total / 1e6, secs, cpu, size / total))
    return out


def fill_index(db: Path, sessions: int) -> tuple[SqliteSearchIndex, list[str], float]:
    rnd = random.Random(2)
    index = SqliteSearchIndex(db)
    users = [f"user{i:02d}" for i in range(20)]
    rare: list[str] = []
    t0 = time.perf_counter()
    start = 1_780_000_000
    for s in range(sessions):
        rows = []
        t = 0
        for _ in range(rnd.randint(5, 20)):
            t += rnd.randint(1, 30) * 1_000_000
            cmd = _fill(rnd.choice(COMMANDS), rnd)
            rows.append(Row(t, len(rows) * 3 + 1, HitKind.COMMAND, cmd))
            rows.append(Row(t, len(rows) * 3 + 2, HitKind.OUTPUT, "root@db1:~# " + cmd))
            for _ in range(rnd.randint(1, 15)):
                rows.append(Row(t + 1000, len(rows) * 3 + 3, HitKind.OUTPUT, _fill(rnd.choice(OUTPUTS), rnd)))
        if s % 100 == 7:
            word = f"zebra{s:05d}quux"
            rare.append(word)
            rows.append(Row(t + 5, len(rows) * 3 + 4, HitKind.OUTPUT, f"unusual token {word} here"))
        session = IndexedSession(
            path=f"/recordings/{s:06d}.zsprec", session_id=f"{s:06d}", user=rnd.choice(users),
            target=f"host{rnd.randint(0, 49):02d}", login="root", grant_id=None,
            started_us=(start + s * 60) * 1_000_000, outcome="VALID",
        )
        index.replace(session, rows)
    return index, rare, time.perf_counter() - t0


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--build-mb", type=float, default=20)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--dir")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-search-"))
    rows: list[tuple[str, str]] = []
    for name, mb, secs, cpu, ratio in build(root, args.build_mb):
        # CPU time too: on a shared machine the wall clock also counts other processes' turns.
        rows.append((f"build, {name} ({mb:.1f} MB)", f"{mb / secs:.2f} MB/s wall, {mb / cpu:.2f} MB/s of CPU time"))
        rows.append((f"index size, {name}", f"{ratio:.2f} x the recordings"))
    index, rare, secs = fill_index(root / "many.db", args.sessions)
    n_rows = sum(s.rows for s in index.sessions().values())
    rows.append((f"fill {args.sessions} sessions, {n_rows} rows (index API)", f"{secs:.1f} s"))
    users = [f"user{i:02d}" for i in range(20)]
    words = WORDS
    queries = [
        ("common word (root)", lambda i: index.search("root")),
        ("common word, rotating (kubectl/ERROR/...)", lambda i: index.search(words[i % len(words)])),
        ("rare word", lambda i: index.search(rare[i % len(rare)])),
        ("phrase with punctuation: rm -rf /tmp/build-", lambda i: index.search("rm -rf /tmp/build-")),
        ("quoted phrase: \"upstream timeout\"", lambda i: index.search('"upstream timeout"')),
        ("kubectl delete pod, --commands-only", lambda i: index.search("kubectl delete pod", commands_only=True)),
        ("common word, --user", lambda i: index.search("nginx", user=users[i % len(users)])),
        ("rare word, --user (no hit mostly)", lambda i: index.search(rare[i % len(rare)], user=users[i % 20])),
        ("no match at all", lambda i: index.search(f"nothing{i}here")),
        ("common word, --since 1 day", lambda i: index.search(
            "status", since_us=(1_780_000_000 + args.sessions * 60 - 86400) * 1_000_000)),
    ]
    for name, fn in queries:
        fn(0)  # warm the page cache
        p50, p99 = timed(fn, args.runs)
        rows.append((f"query {name}", f"p50 {p50:.1f} ms  p99 {p99:.1f} ms"))
    index.close()
    db_size = sum(f.stat().st_size for f in root.glob("many.db*"))
    rows.append(("query index file", f"{db_size / 1e6:.0f} MB"))
    width = max(len(a) for a, _ in rows)
    print(f"{'measure':<{width}}  result")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    if not args.dir:
        for p in sorted(root.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        os.rmdir(root)


if __name__ == "__main__":
    main()
