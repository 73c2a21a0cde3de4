"""Scale-out benchmark: ``zsp serve --workers N``, and the store (SQLite vs PostgreSQL).

    python benchmarks/bench_scale.py [--workers 1,2] [--seconds 10] [--clients 16] [--held 200] [--latency 10]

Needs root (the built-in ``local`` target runs shells as ``nobody``) and, for the PostgreSQL
column, PostgreSQL's initdb/pg_ctl (a throwaway cluster, as tests/servers.py makes). Prints:

* admission: sessions per second admitted, ``--clients`` asyncssh clients each connecting and
  running ``true`` on ``local`` in a loop for ``--seconds``, through 1 worker vs N workers
  (SQLite store); every session is recorded, stored, sealed and indexed as in production;
* held: ``--held`` concurrent interactive sessions (PTY, ``cat``) opened at once, how many were
  held, how long opening them took, and the keystroke round trip (p50/p99) across them all;
* latency: ``ssh zsp@bastion request``, ``ssh zsp@bastion approve`` and a session
  (``ssh local@bastion true``) end to end with OpenSSH, median of ``--latency`` runs, on the
  SQLite store vs PostgreSQL.

The clients run on the same machine as the bastion (this machine has 2 cores): the numbers
show what more workers buy when the bastion, not the clients, is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.bastion_env import Env, make_env

os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))

LIMITS = (
    "[bastion]\nmax_sessions_per_user = 10000\nmax_connections_per_user = 10000\n"
    "max_unauthenticated_per_source = 10000\nmax_unauthenticated = 10000\n"
)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def admission(env: Env, seconds: float, clients: int) -> float:
    opts = env.asyncssh_options("alice")
    done = 0
    end = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < end:
            async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
                r = await conn.run("true", check=False)
                if r.exit_status == 0:
                    done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.monotonic() - t0)


async def held(env: Env, n: int) -> tuple[int, float, float, float]:
    opts = env.asyncssh_options("alice")
    sem = asyncio.Semaphore(32)  # open them 32 at a time: the login handshakes, not the hold, are CPU

    async def one() -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess] | None:
        async with sem:
            try:
                conn = await asyncssh.connect("127.0.0.1", username="local", **opts)
                proc = await conn.create_process("stty raw -echo; cat", term_type="xterm", encoding=None)
                return conn, proc
            except (OSError, asyncssh.Error):
                return None

    t0 = time.monotonic()
    opened = [x for x in await asyncio.gather(*(one() for _ in range(n))) if x is not None]
    took = time.monotonic() - t0
    await asyncio.sleep(2)  # let every shell reach cat
    rtts: list[float] = []
    for _round in range(3):
        for _conn, proc in opened:
            t = time.perf_counter()
            proc.stdin.write(b"x")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.stdout.read(1), 5)
                rtts.append((time.perf_counter() - t) * 1000)
    for conn, _proc in opened:
        conn.close()
    return len(opened), took, pct(rtts, 50) if rtts else 0.0, pct(rtts, 99) if rtts else 0.0


def latency(env: Env, runs: int) -> tuple[float, float, float]:
    req, app, ses = [], [], []
    for i in range(runs):
        t = time.perf_counter()
        r = env.ssh("alice", "zsp", "request", "local", "--for", "5m", "--reason", f"bench {i}")
        req.append(time.perf_counter() - t)
        rid = next((w for w in r.stdout.split() if w.startswith("r-")), None)
        if rid is None:
            raise RuntimeError(f"request refused: {r.stdout} {r.stderr}")
        t = time.perf_counter()
        env.ssh("bob", "zsp", "approve", rid)
        app.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = env.ssh("alice", "local", "true")
        ses.append(time.perf_counter() - t)
        if s.returncode != 0:
            raise RuntimeError(s.stderr)
        env.ssh("bob", "zsp", "revoke", rid)  # one active grant per login: the next request needs this gone
    return tuple(statistics.median(x) * 1000 for x in (req, app, ses))  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--held", type=int, default=200)
    ap.add_argument("--latency", type=int, default=10)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.workers.split(",")):
            env = make_env(Path(tmp) / f"w{n}")
            env.configure(LIMITS)
            env.start(args=("--workers", str(n)))
            try:
                env.grant()
                rate = asyncio.run(admission(env, args.seconds, args.clients))
                count, took, p50, p99 = asyncio.run(held(env, args.held))
            finally:
                env.stop()
            rows.append(
                f"| {n} worker{'s' if n > 1 else ' '} | {rate:8.1f} | {count:4d} of {args.held:<4d} | {took:6.1f} s "
                f"| {p50:6.2f} | {p99:7.2f} |"
            )
        print(f"\nAdmission ({args.clients} clients, {args.seconds:g} s) and held interactive sessions (SQLite store)\n")
        print("| bastion   | sessions/s | held         | opening | echo p50 ms | echo p99 ms |")
        print("|-----------|-----------:|--------------|--------:|------------:|------------:|")
        for row in rows:
            print(row)

        stores: list[tuple[str, str | None]] = [("SQLite", None)]
        cluster = None
        if not args.no_postgres:
            from tests.servers import _start_postgres

            cluster = _start_postgres()
            stores.append(("PostgreSQL", cluster.database()))
        lat = []
        try:
            for name, url in stores:
                if url:
                    os.environ["ZSP_DATABASE_URL"] = url
                else:
                    os.environ.pop("ZSP_DATABASE_URL", None)
                env = make_env(Path(tmp) / f"lat-{name}")
                env.start()
                try:
                    lat.append((name, *latency(env, args.latency)))
                finally:
                    env.stop()
        finally:
            os.environ.pop("ZSP_DATABASE_URL", None)
            if cluster is not None:
                cluster.stop()
                shutil.rmtree(cluster.root, ignore_errors=True)
        print(f"\nEnd to end with OpenSSH, median of {args.latency} (ms)\n")
        print("| store      | request | approve | session start (ssh local@ true) |")
        print("|------------|--------:|--------:|--------------------------------:|")
        for name, r, a, s in lat:
            print(f"| {name:10} | {r:7.0f} | {a:7.0f} | {s:31.0f} |")


if __name__ == "__main__":
    main()
