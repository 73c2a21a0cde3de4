"""Synthetic session rows written straight into a data dir's SQLite store, for paging tests and
benchmarks at 100,000 sessions (recording that many through the bastion would take hours).

These rows are store-only: their recordings do not exist. Real sessions come from the
``reviewed`` fixture (tests/tui_helpers.py); these only exercise the list's paging and queries.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from zsp_tui.clock import rfc3339

__all__ = ["fill_sessions"]

USERS = [f"user{i:02d}" for i in range(50)]
TARGETS = [f"db-{i:02d}" for i in range(20)]
LOGINS = ["root", "app", "postgres"]
REASONS = ["INC-{n} restart the replica", "deploy hotfix {n}", "rotate certificates {n}", "look at disk {n}"]


def fill_sessions(db: Path, n: int, *, grants: int = 2000, live_every: int = 997) -> None:
    """Insert ``n`` ended sessions (one in ``live_every`` live) under ``grants`` approved requests,
    one per second from 2026-01-01, ids ``syn-000000``..; deterministic."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    con = sqlite3.connect(db)
    try:
        with con:
            con.executemany(
                "INSERT INTO requests(id, requester_id, requester, target, login, duration_s, reason, state, "
                "approvals_needed, approver_patterns, rule, break_glass, created_at, lapses_at) "
                "VALUES (?, 1, ?, ?, ?, 3600, ?, 'expired', 1, '[]', 'synthetic', 0, ?, ?)",
                (
                    (
                        f"gr-{g:05d}",
                        USERS[g % len(USERS)],
                        TARGETS[g % len(TARGETS)],
                        LOGINS[g % len(LOGINS)],
                        REASONS[g % len(REASONS)].format(n=g),
                        rfc3339(start),
                        rfc3339(start),
                    )
                    for g in range(grants)
                ),
            )
            rows = []
            for i in range(n):
                g = i % grants
                began = start + timedelta(seconds=i)
                live = live_every and i % live_every == live_every - 1
                ended = None if live else rfc3339(began + timedelta(seconds=5 + (i * 7919) % 3600))
                rows.append(
                    (
                        f"syn-{i:06d}",
                        USERS[g % len(USERS)],
                        TARGETS[g % len(TARGETS)],
                        LOGINS[g % len(LOGINS)],
                        f"gr-{g:05d}",
                        None if i % 3 else f"ls /srv/{i}",
                        "10.0.0.1:5000",
                        f"/nonexistent/syn-{i:06d}.zsp",
                        rfc3339(began),
                        ended,
                        None if live else 0,
                        None if live else ("exit" if i % 5 else "grant expired"),
                        None if live or i % 11 == 0 else "ab" * 32,
                    )
                )
            con.executemany(
                "INSERT INTO sessions(id, user, target, login, grant_id, command, client, path, started_at, "
                "ended_at, exit_status, end_reason, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        con.close()
