"""The rules engine's cost on the relay's hot paths: every output chunk and every keystroke.

    python benchmarks/bench_rules.py [--mb 64] [--keys 20000]

Output: ``SessionRules.output`` over bulk output in 32 KiB chunks (what SSH channels deliver),
with the shipped standard
set, with a set that has only output rules, and with no rules; as microseconds of engine time per
MB and the throughput that alone would allow (the bastion relays ~120 MB/s recorded, so 1 ms/MB
is 12 % of it and 0.4 ms/MB is 5 %). Kinds of output: plain log lines, coloured ``ls``-like lines
(escape sequences in every line), one long line without newlines (base64, minified JSON), and
random bytes (what ``bench_bastion.py`` sends: ``cat`` of /dev/urandom data).

Keystrokes: a shell session typed key by key, each echoed (output then input, as the relay sees
them), an Enter every 12 keys followed by a few lines of output and a prompt; the engine time of
``gate`` + ``input`` per keystroke (and of ``output`` for its echo), p50/p99/max in microseconds.
Also the first keystroke after 1 MB of output, text and random bytes (the scanner catches up on the
last 64 KiB at once).

File requests: ``SessionRules.file_verdict`` on an upload (an SFTP open for writing) of an ordinary
path, and of a 64 KiB one (rules match a path whole), per request in microseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zsp_tui.rules import FileOp, RuleSet, SessionFacts
from zsp_tui.rules.config import load_rules, parse_rules
from zsp_tui.rules.engine import SessionRules

PROMPT = b"\x1b[01;32malice@db1\x1b[00m:\x1b[01;34m~\x1b[00m$ "
CHUNK = 32 * 1024


def facts() -> SessionFacts:
    return SessionFacts("alice", frozenset({"operator"}), frozenset(), "db1", frozenset({"prod"}), "postgres",
                        datetime(2026, 1, 5, 10, 0, tzinfo=UTC))


def rule_sets() -> dict[str, RuleSet]:
    return {
        "standard": load_rules(Path("/nonexistent/rules.toml")),
        "output only": parse_rules('[settings]\ndefaults = "none"\n[[rule]]\nname = "k"\nseverity = "high"\n'
                                   'output = "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"\n', "bench"),
        "none": parse_rules('[settings]\ndefaults = "none"\n', "bench"),
    }


def streams(mb: int) -> dict[str, bytes]:
    size = mb * 1024 * 1024
    log = b"".join(b"2026-01-05T10:00:%02d.%06dZ INFO worker-%d request id=%08x took %d ms\r\n"
                   % (i % 60, i, i % 7, i * 2654435761 % 2**32, i % 997) for i in range(size // 70))
    ls = b"".join(b"-rw-r--r-- 1 alice staff %8d Jan  5 10:00 \x1b[01;34mfile-%06d.txt\x1b[0m\r\n" % (i * 37, i)
                  for i in range(size // 75))
    blob = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIzNDU2Nzg5" * (size // 48 + 1))[:size]
    noise = random.Random(1).randbytes(size)
    return {"log lines": log[:size], "coloured ls": ls[:size], "one long line": blob, "random bytes": noise}


def bench_output(rules: RuleSet, data: bytes) -> float:
    """Engine seconds for ``data`` in 32 KiB chunks (the keystroke after it is measured apart)."""
    engine = SessionRules(rules, facts(), cols=120, rows=40, pty=True)
    engine.start()
    engine.output(PROMPT, 0)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]  # as the channel hands them over
    output = engine.output
    t0 = time.perf_counter()
    for i, chunk in enumerate(chunks):
        output(chunk, i)
    return time.perf_counter() - t0


def bench_keys(rules: RuleSet, n: int) -> tuple[list[float], list[float]]:
    engine = SessionRules(rules, facts(), cols=120, rows=40, pty=True)
    engine.start()
    engine.output(PROMPT, 0)
    line = b"ls -l /var/log/nginx/access.log | tail -n 20"
    costs: list[float] = []
    t = 0
    pc = time.perf_counter
    k = 0
    while len(costs) < n:
        c = line[k % len(line) : k % len(line) + 1]
        k += 1
        enter = k % 12 == 0
        key = b"\r" if enter else c
        t += 1000
        t0 = pc()
        engine.gate(key, t_us=t)
        engine.input(key, t)
        engine.output(b"\r\n" if enter else key, t + 1)
        costs.append(pc() - t0)
        if enter:
            engine.output(b"".join(b"line %d of the command's output\r\n" % i for i in range(5)) + PROMPT, t + 2)
    # the first keystroke after 1 MB of output: text lines, then random bytes
    after = []
    for bulk in (b"".join(b"%080d\r\n" % i for i in range(12_800)), random.Random(2).randbytes(1 << 20)):
        for i in range(0, len(bulk), CHUNK):
            engine.output(bulk[i : i + CHUNK], t + 3)
        engine.output(b"\x1bc" + PROMPT, t + 3)
        t0 = pc()
        engine.gate(b"l", t_us=t + 4)
        engine.input(b"l", t + 4)
        after.append(pc() - t0)
    return costs, after


def bench_files(rules: RuleSet, path: str, n: int) -> float:
    """Seconds of engine time per SFTP request (an open for writing) on ``path``."""
    engine = SessionRules(rules, facts(), cols=0, rows=0, pty=False)
    ops = (FileOp.WRITE,)
    paths = (path,)
    t0 = time.perf_counter()
    for i in range(n):
        engine.file_verdict(ops, paths, i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64, help="MB of each kind of output (default 64)")
    parser.add_argument("--keys", type=int, default=20_000, help="keystrokes (default 20000)")
    args = parser.parse_args()
    sets = rule_sets()
    data = streams(args.mb)
    print(f"output, {CHUNK // 1024} KiB chunks, {args.mb} MB each (engine time only)")
    print(f"{'rules':<13}{'output':<15}{'µs per MB':>11}{'MB/s':>9}{'share of 120 MB/s':>19}")
    for name, rules in sets.items():
        for kind, stream in data.items():
            best = min(bench_output(rules, stream) for _ in range(3))
            per_mb = best / (len(stream) / 1e6)
            print(f"{name:<13}{kind:<15}{per_mb * 1e6:>11.0f}{1 / per_mb:>9.0f}{per_mb * 120 * 100:>18.1f}%")
    print()
    print(f"keystrokes: {args.keys} typed and echoed, an Enter every 12 (engine time per keystroke)")
    print(f"{'rules':<13}{'p50 µs':>8}{'p99 µs':>8}{'max µs':>9}   first key after 1 MB of text / random, µs")
    for name, rules in sets.items():
        bench_keys(rules, 2000)  # warm up
        costs, after = bench_keys(rules, args.keys)
        costs.sort()
        p50 = statistics.median(costs) * 1e6
        p99 = costs[int(len(costs) * 0.99)] * 1e6
        print(f"{name:<13}{p50:>8.1f}{p99:>8.1f}{costs[-1] * 1e6:>9.0f}   {after[0] * 1e6:.0f} / {after[1] * 1e6:.0f}")
    print()
    print("file requests: an SFTP open for writing (engine time per request)")
    print(f"{'rules':<13}{'µs, a usual path':>17}{'µs, a 64 KiB path':>19}")
    huge = "/home/alice/" + "d" * 65536 + "/file.txt"
    for name, rules in sets.items():
        usual = min(bench_files(rules, "/home/alice/project/src/module.py", 20_000) for _ in range(3))
        long = min(bench_files(rules, huge, 200) for _ in range(3))
        print(f"{name:<13}{usual * 1e6:>17.1f}{long * 1e6:>19.0f}")


if __name__ == "__main__":
    main()
