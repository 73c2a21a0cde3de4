"""``replay.printable`` throughput: how long escaping costs when a command prints a long list.

    python benchmarks/bench_printable.py [--rows 100000]

Three kinds of field, each ``--rows`` times: plain ASCII (the common case: the fast path returns
the string itself), non-ASCII text (Greek, CJK, emoji: still the fast path), and hostile fields
(escape sequences, C1, bidi, invalid UTF-8 as bytes: the slow path). Prints fields per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay import printable

FIELDS: dict[str, list[str | bytes]] = {
    "plain ASCII": ["r-7h3kq  alice -> postgres@db-1 for 30m: active until 2026-11-30T12:00:00Z"],
    "non-ASCII": ["Ελληνικά κείμενο, 漢字, naïve café 🙂 INC-7"],
    "hostile str": ["x\x1b[2K\x1b[1A\x1b]52;c;Y3VybA==\x07\rVALID\n\x9b2J\u202egnp.exe\u2066 tail\\"],
    "hostile bytes": [b"x\x1b]0;t\x07\xff\xfe\xe2\x80 \xc2\x9b ok"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print(f"{'field kind':<16}{'fields/s':>14}{'MB/s':>10}")
    for kind, (value,) in FIELDS.items():
        size = len(value if isinstance(value, bytes) else value.encode())
        start = time.perf_counter()
        for _ in range(args.rows):
            printable(value)
        elapsed = time.perf_counter() - start
        print(f"{kind:<16}{args.rows / elapsed:>14,.0f}{args.rows * size / elapsed / 1e6:>10.1f}")


if __name__ == "__main__":
    main()
