"""Store latency: the access service's operations on the embedded SQLite file vs PostgreSQL.

    python benchmarks/bench_store.py [--n 300] [--url postgresql://...] [--fsync on|off]

Each operation is what a bastion or an admin does, end to end through ``AccessService`` (each
is one or two store transactions: the sweep, the change and its audit events with their signed
checkpoint), timed one at a time on one thread:

* request create: ``svc.request`` (policy read, a pending request, ``access_request.create``);
* approve: ``svc.approve`` of that request (one approval grants it: ``grant.start``);
* session start+end: ``svc.session_started`` then ``svc.session_ended``, as the bastion records a session;
* audit append: ``svc.record_event``, one event on its own (a login);
* grant check (read): ``svc.standing_grants`` of one live session's grant, what the bastion's watcher
  reads four times a second.

Without ``--url`` a throwaway PostgreSQL cluster is started (Debian's PostgreSQL, as the tests
do) with ``fsync`` as ``--fsync`` says (default on: SQLite runs ``synchronous = FULL``, so both
make each commit durable). Prints p50 and p99 in milliseconds per operation, for both stores.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.access_helpers import POLICY, populate
from tests.servers import PostgresCluster, _start_postgres
from zsp_tui.access import AccessService, Actor
from zsp_tui.audit import NewEvent
from zsp_tui.clock import SystemClock
from zsp_tui.datadir import DataDir
from zsp_tui.models import SessionRecord

OPS = ("request create", "approve", "session start+end", "audit append", "grant check (read)")


def _service(root: Path, url: str | None) -> AccessService:
    root.mkdir(parents=True)
    if url:
        (root / "zsp.toml").write_text(f'[store]\nurl = "{url}"\n')
    d = DataDir(root)
    d.init()
    d.policy_path.write_text(POLICY)
    svc = d.service(SystemClock())
    populate(svc)
    return svc


def run(svc: AccessService, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {op: [] for op in OPS}
    oscar, bob, alice = Actor("oscar"), Actor("bob"), Actor("alice")
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        rid = svc.request(oscar, "web", "deploy", timedelta(minutes=30), f"deploy {i}").id
        t1 = clock()
        svc.approve(bob, rid)
        t2 = clock()
        record = SessionRecord(
            id=f"s-{uuid.uuid4().hex[:12]}",
            user="oscar",
            target="web",
            login="deploy",
            grant_id=rid,
            command=None,
            client="10.0.0.9:5000",
            path="/dev/null",
            started_at=datetime.now(UTC),
            owner="bench",
        )
        t3 = clock()
        svc.session_started(record)
        svc.session_ended(record, 0, "exit", "ab" * 32, frames=10)
        t4 = clock()
        svc.record_event(NewEvent("user.login", "oscar", "ssh", f"oscar logged in ({i})"))
        t5 = clock()
        svc.standing_grants([rid])
        t6 = clock()
        svc.revoke(alice, rid, "bench")  # untimed: the next request starts clean
        for op, ms in zip(OPS, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t6 - t5), strict=True):
            times[op].append(ms * 1000)
    return times


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _cluster(fsync: str) -> PostgresCluster:
    cluster = _start_postgres()  # initdb and a first start (with fsync off, as the tests run it)
    if fsync == "on":
        cluster.stop()
        opts = f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        got = cluster._ctl("-o", opts, "-l", str(cluster.root / "log"), "-w", "-t", "60", "start")
        if got.returncode != 0:
            raise RuntimeError(got.stderr)
    return cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="rounds (each does every operation once)")
    ap.add_argument("--url", help="an empty PostgreSQL database to use (default: a throwaway cluster)")
    ap.add_argument("--fsync", choices=["on", "off"], default="on", help="the throwaway cluster's fsync")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zsp-bench-store-"))
    cluster = None
    try:
        url = args.url
        if url is None:
            cluster = _cluster(args.fsync)
            url = cluster.database()
        results = {}
        for name, store_url in (("sqlite", None), ("postgresql", url)):
            svc = _service(tmp / name, store_url)
            run(svc, max(5, args.n // 10))  # warm up: prepared statements, the pool, page cache
            results[name] = run(svc, args.n)
            svc.store.close()
        where = "--url" if args.url else f"throwaway cluster, fsync={args.fsync}"
        print(f"store latency, ms per operation, {args.n} rounds (PostgreSQL: {where}; SQLite: WAL, synchronous=FULL)")
        print(f"{'operation':<22} {'sqlite p50':>11} {'sqlite p99':>11} {'pg p50':>9} {'pg p99':>9}")
        for op in OPS:
            s, p = results["sqlite"][op], results["postgresql"][op]
            print(
                f"{op:<22} {statistics.median(s):>11.2f} {_pct(s, 0.99):>11.2f} "
                f"{statistics.median(p):>9.2f} {_pct(p, 0.99):>9.2f}"
            )
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
