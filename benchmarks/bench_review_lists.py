"""What the review app's Requests and Live areas read on every refresh, with a large store.

    python benchmarks/bench_review_lists.py [--rows 100000] [--dir DIR]

Prints one table. Rows (median of 5 runs each; the store is a real SQLite data dir made by
``zsp init``, filled with ``--rows`` decided requests and ``--rows`` ended sessions copied from
one real row each, plus one pending request and one live session):

* ``pending requests (Requests, every 2 s)``: the read-only indexed query the Requests area polls.
* ``AccessService.requests() (all)``: every request, as ``zsp grants`` reads them; what the
  Requests area reads only when the pending set changes (the requester's history).
* ``unended sessions (Live, every 1 s)``: ``AccessService.unended_sessions``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zsp_tui.access import Actor
from zsp_tui.datadir import DataDir
from zsp_tui.models import RequestState, Role, SessionRecord

POLICY = """\
[[rule]]
name = "ops"
requesters = ["role:operator"]
targets = ["local", "*"]
logins = ["*"]
max_duration = "4h"
approvers = ["role:approver"]
approvals = 1
"""


def _copies(con: sqlite3.Connection, table: str, key: str, n: int, change: Callable[[int], dict[str, Any]]) -> None:
    cols = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
    row = con.execute(f"SELECT * FROM {table} WHERE {key} IS NOT NULL LIMIT 1").fetchone()
    rows = []
    for i in range(n):
        values = list(row)
        for col, value in change(i).items():
            values[cols.index(col)] = value
        rows.append(values)
    con.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(cols))})", rows)


def _median_ms(fn: Callable[[], object]) -> tuple[float, object]:
    times, out = [], None
    for _ in range(5):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-review-"))
    d = DataDir(root / "data")
    d.init()
    d.policy_path.write_text(POLICY)
    d.config_path.write_text("[targets]\nlocal = true\n")
    svc = d.service()
    svc.add_user(Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}))
    svc.add_user(Actor("alice"), "bob", frozenset({Role.APPROVER}))
    done = svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x")
    svc.deny(Actor("bob"), done.id, "no")
    now = datetime.now(UTC)
    ended = SessionRecord(str(uuid.uuid4()), "alice", "local", "alice", None, None, "c", "/x", now)
    svc.session_started(ended)
    svc.session_ended(ended, 0, "exit", None)
    con = sqlite3.connect(d.db_path)
    _copies(con, "requests", "decided_at", args.rows, lambda i: {"id": f"r-b{i:07d}"})
    _copies(con, "sessions", "ended_at", args.rows, lambda i: {"id": str(uuid.uuid4())})
    con.commit()
    con.close()
    svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "pending")
    svc.session_started(SessionRecord(str(uuid.uuid4()), "alice", "local", "alice", None, None, "c", "/y", now))

    def pending() -> list[Any]:
        with svc.store.transaction(write=False) as tx:
            return tx.list_requests((RequestState.PENDING,))

    rows = [
        ("pending requests (Requests, every 2 s)", *_median_ms(pending)),
        ("AccessService.requests() (all)", *_median_ms(svc.requests)),
        ("unended sessions (Live, every 1 s)", *_median_ms(svc.unended_sessions)),
    ]
    print(f"store: {args.rows:,} decided requests, {args.rows:,} ended sessions")
    print(f"{'read':<42} {'median ms':>10} {'rows':>8}")
    for name, ms, out in rows:
        print(f"{name:<42} {ms:>10.1f} {len(out):>8}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
