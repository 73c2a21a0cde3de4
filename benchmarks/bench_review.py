"""Review app benchmark: the Sessions area over a store of 100,000 sessions.

    python benchmarks/bench_review.py [--sessions 100000] [--runs 3] [--dir DIR]

Prints one table. Rows:

* ``first paint``: from constructing the app (ReviewContext.open included) to the Sessions
  table showing its first screenful of rows, headless (``App.run_test`` at 120x40). Median of
  ``--runs`` fresh app starts, for 100 sessions and for ``--sessions``.
* ``filter keystroke``: from a key typed in the filter to the table showing the first rows of
  the new result; the app waits DEBOUNCE (0.15 s) of quiet before it queries, so the row also
  gives the part after it. Median over a typed word, one keystroke at a time.
* ``End``: from pressing End (the oldest session) to its row drawn.
* ``memory``: the process's resident set (VmRSS) after the first paint and after paging through
  the list, and the Python heap peak (tracemalloc) over a whole run, measured in a separate run
  (tracemalloc slows everything it watches).

The sessions are synthetic rows inserted straight into the SQLite store (tests/session_rows.py):
recording 100,000 sessions through the bastion would take hours, and the list reads only the
store. Their recordings do not exist, so they show as unverified.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.session_rows import fill_sessions
from zsp_tui.access import Actor
from zsp_tui.datadir import DataDir
from zsp_tui.models import Role
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.sessions import DEBOUNCE
from zsp_tui.tui.widgets.session_table import SessionTable

SIZE = (120, 40)


def make_data(root: Path, n: int) -> DataDir:
    d = DataDir(root)
    d.init()
    svc = d.service()
    svc.add_user(Actor(None), "rev", frozenset({Role.REVIEWER, Role.ADMIN}))
    svc.store.close()
    fill_sessions(d.db_path, n)
    return d


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def shown(table: SessionTable) -> bool:
    rows = min(table.total, table.scrollable_content_region.height - 1)
    return table.total > 0 and all(table.row(table.scroll_offset.y + i) is not None for i in range(rows))


async def wait(pilot, cond, timeout: float = 60.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.002)


async def run_once(d: DataDir, *, keystrokes: str = "", page: bool = False) -> dict[str, object]:
    out: dict[str, object] = {}
    t0 = time.perf_counter()
    app = ReviewApp(ReviewContext.open(d, "rev", "console"))
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: type(app.screen).__name__ == "SessionsScreen")
        table = app.screen.query_one(SessionTable)
        await wait(pilot, lambda: shown(table))
        out["first_paint"] = time.perf_counter() - t0
        out["rss_first"] = rss_mb()
        if page:
            t = time.perf_counter()
            await pilot.press("end")
            last = table.total - 1
            await wait(
                pilot,
                lambda: (
                    table.cursor == last
                    and table.row(last) is not None
                    and table.scroll_offset.y + table.scrollable_content_region.height - 1 > last
                ),
            )
            out["end"] = time.perf_counter() - t
            for _ in range(50):
                await pilot.press("pageup")
            await wait(pilot, lambda: shown(table))
            out["rss_paged"] = rss_mb()
        if keystrokes:
            await pilot.press("slash")
            times = []
            for i, key in enumerate(keystrokes):
                want = keystrokes[: i + 1]
                t = time.perf_counter()
                await pilot.press(key)
                await wait(pilot, lambda w=want: table.query_value.text == w and (shown(table) or table.total == 0))
                times.append(time.perf_counter() - t)
            out["keys"] = times
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        small = make_data(Path(tmp) / "small", 100)
        t = time.perf_counter()
        big = make_data(Path(tmp) / "big", args.sessions)
        fill = time.perf_counter() - t
        rows: list[tuple[str, str]] = [(f"store filled with {args.sessions:,} sessions", f"{fill:.1f} s")]
        for label, d in (("100", small), (f"{args.sessions:,}", big)):
            paints = [asyncio.run(run_once(d))["first_paint"] for _ in range(args.runs)]
            rows.append((f"first paint, {label} sessions (median of {args.runs})", ms(statistics.median(paints))))
        before = rss_mb()
        r = asyncio.run(run_once(big, keystrokes="replica", page=True))
        keys = r["keys"]
        rows.append(
            (
                f"filter keystroke, {args.sessions:,} sessions (median of {len(keys)}; max)",
                f"{ms(statistics.median(keys))} ({ms(max(keys))} max)",
            )
        )
        rows.append(("  of which after the debounce", ms(statistics.median(keys) - DEBOUNCE)))
        rows.append((f"End to the oldest of {args.sessions:,}", ms(r["end"])))
        rows.append(("RSS before that run (interpreter, imports, earlier runs)", f"{before:.0f} MB"))
        rows.append(("RSS after first paint", f"{r['rss_first']:.0f} MB"))
        rows.append(("RSS after End and 50 x PageUp", f"{r['rss_paged']:.0f} MB"))
        tracemalloc.start()
        asyncio.run(run_once(big, keystrokes="rep", page=True))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("Python heap peak over a run (tracemalloc)", f"{peak / 2**20:.1f} MB"))
    width = max(len(a) for a, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 20}")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def ms(seconds: object) -> str:
    return f"{float(seconds) * 1000:.0f} ms"  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
