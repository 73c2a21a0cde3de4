"""Search index on PostgreSQL vs SQLite: indexing throughput and query latency, same rows, same queries.

    python benchmarks/bench_search_pg.py [--sessions 200] [--lines 5000] [--runs 100] [--url postgresql://...]

Without ``--url`` a throwaway PostgreSQL cluster is started as the tests do (``tests/servers.py``:
Debian's postgresql, fsync off) and removed at the end. Prints one table, a column per backend.

* ``index``: ``replace`` of every session (``--lines`` rows each: the commands and output lines of
  ``bench_search.py``'s generator, generated beforehand, so only the index is timed), one
  transaction per session, lines/s of wall time.
* ``size``: the SQLite file (with its WAL) vs the ``search_*`` tables with their indexes.
* ``query ...``: ``search`` (limit 50) latency p50/p99 over ``--runs`` runs with varied words and
  users, each after one warm-up run. Both backends return the same hits (checked).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from bench_search import COMMANDS, OUTPUTS, WORDS, _fill, timed  # noqa: E402

from replay import HitKind, IndexedSession, Row, SearchIndex, SqliteSearchIndex  # noqa: E402

START = 1_780_000_000
USERS = [f"user{i:02d}" for i in range(20)]


def sessions(count: int, lines: int) -> tuple[list[tuple[IndexedSession, list[Row]]], list[str]]:
    rnd = random.Random(3)
    out = []
    rare: list[str] = []
    for s in range(count):
        rows: list[Row] = []
        t = 0
        while len(rows) < lines:
            t += rnd.randint(1, 30) * 1_000_000
            cmd = _fill(rnd.choice(COMMANDS), rnd)
            rows.append(Row(t, len(rows) + 1, HitKind.COMMAND, cmd))
            rows.append(Row(t, len(rows) + 1, HitKind.OUTPUT, "root@db1:~# " + cmd))
            for _ in range(rnd.randint(1, 40)):
                rows.append(Row(t + 1000, len(rows) + 1, HitKind.OUTPUT, _fill(rnd.choice(OUTPUTS), rnd)))
        rows = rows[:lines]
        if s % 10 == 3:
            word = f"zebra{s:05d}quux"
            rare.append(word)
            rows[rnd.randrange(lines)] = Row(t + 5, lines, HitKind.OUTPUT, f"unusual token {word} here")
        session = IndexedSession(
            path=f"/recordings/{s:06d}.zsprec", session_id=f"{s:06d}", user=USERS[s % len(USERS)],
            target=f"host{rnd.randint(0, 49):02d}", login="root", grant_id=None,
            started_us=(START + s * 600) * 1_000_000, outcome="VALID",
        )
        out.append((session, rows))
    return out, rare


def fill(index: SearchIndex, data: list[tuple[IndexedSession, list[Row]]]) -> float:
    t0 = time.perf_counter()
    for session, rows in data:
        index.replace(session, rows)
    return time.perf_counter() - t0


def queries(n_sessions: int, rare: list[str]) -> list[tuple[str, Callable[[SearchIndex, int], object]]]:
    since = (START + n_sessions * 600 - 86400) * 1_000_000  # the last day: 144 sessions of 10 min
    return [
        ("common word (root)", lambda ix, i: ix.search("root")),
        ("common word, rotating", lambda ix, i: ix.search(WORDS[i % len(WORDS)])),
        ("rare word", lambda ix, i: ix.search(rare[i % len(rare)])),
        ("rm -rf /tmp/build-", lambda ix, i: ix.search("rm -rf /tmp/build-")),
        ('"upstream timeout"', lambda ix, i: ix.search('"upstream timeout"')),
        ("kubectl delete pod, --commands-only", lambda ix, i: ix.search("kubectl delete pod", commands_only=True)),
        ("common word, --user", lambda ix, i: ix.search("nginx", user=USERS[i % len(USERS)])),
        ("rare word, --user (no hit mostly)", lambda ix, i: ix.search(rare[i % len(rare)], user=USERS[i % 20])),
        ("no match at all", lambda ix, i: ix.search(f"nothing{i}here")),
        ("2 letters (no trigram): db", lambda ix, i: ix.search("db")),
        ("common word, --since 1 day", lambda ix, i: ix.search("status", since_us=since)),
        ("common word, limit 1000", lambda ix, i: ix.search("status", limit=1000)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    args = ap.parse_args()

    from zsp_tui.store.pg_search import PostgresSearchIndex

    cluster = None
    url = args.url
    if url is None:
        from tests.servers import _start_postgres

        cluster = _start_postgres()
        url = cluster.database()
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-pg-"))
    try:
        t0 = time.perf_counter()
        data, rare = sessions(args.sessions, args.lines)
        n_lines = sum(len(r) for _, r in data)
        print(f"{args.sessions} sessions x {args.lines} lines generated in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        indexes: dict[str, SearchIndex] = {
            "SQLite FTS5": SqliteSearchIndex(tmp / "search.db"),
            "PostgreSQL pg_trgm": PostgresSearchIndex(url),
        }
        table: list[tuple[str, list[str]]] = []
        took = {name: fill(ix, data) for name, ix in indexes.items()}
        table.append((f"index {n_lines:,} lines", [f"{n_lines / s:,.0f} lines/s ({s:.0f} s)" for s in took.values()]))
        pg = indexes["PostgreSQL pg_trgm"]
        assert isinstance(pg, PostgresSearchIndex)
        with pg._pool.connection() as conn:
            conn.execute("VACUUM ANALYZE search_lines")
            got = conn.execute("SELECT pg_total_relation_size('search_lines') + "
                               "pg_total_relation_size('search_sessions')").fetchone()
            pg_bytes = int(got[0]) if got else 0
        lite_bytes = sum(f.stat().st_size for f in tmp.glob("search.db*"))
        table.append(("size", [f"{lite_bytes / 1e6:.0f} MB", f"{pg_bytes / 1e6:.0f} MB"]))
        for name, fn in queries(args.sessions, rare):
            cells = []
            for ix in indexes.values():
                fn(ix, 0)
                p50, p99 = timed(lambda i, ix=ix, fn=fn: fn(ix, i), args.runs)
                cells.append(f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
            want = [(h.path, h.t_us, h.text) for h in fn(indexes["SQLite FTS5"], 1)]  # type: ignore[attr-defined]
            if [(h.path, h.t_us, h.text) for h in fn(pg, 1)] != want:  # type: ignore[attr-defined]
                raise SystemExit(f"{name}: the backends disagree")
            table.append((f"query {name}", cells))
        for ix in indexes.values():
            ix.close()
        width = max(len(a) for a, _ in table)
        names = list(indexes)
        print(f"{'measure':<{width}}  {names[0]:<28}  {names[1]}")
        for a, (x, y) in table:
            print(f"{a:<{width}}  {x:<28}  {y}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
