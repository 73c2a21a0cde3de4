"""The whole performance table in one command: the bastion against direct OpenSSH, concurrency, recorder.

    python benchmarks/bench_proof.py [--quick] [--json PATH] [--sessions 10,50,200] [--workers N]
                                     [--serve-prefix CMD]

Needs root (it starts sshd and logs in as the current user). One sshd, reached directly and
through one ``zsp serve`` (recording on, the shipped ``standard`` rules), in the same run, so the
ratios hold on a shared machine whose absolute numbers drift. Rows:

* bulk output, PTY text, keystroke round trip p50/p99, connection set-up: as
  ``bench_bastion.py`` measures them (its functions); best (bulk, PTY) or mean (set-up) of the
  runs, direct and through zsp interleaved. Keystrokes are measured on a quiet bastion: after the
  bulk sessions' search indexing is done (it runs in a child process at a lower priority, but on
  two busy cores it still takes a turn now and then: ``docs/PERF.md``).
* concurrency, for each N of ``--sessions``: N asyncssh clients (in this process, one loop) open
  a PTY session each at once (``cat`` in raw mode), then each types one key every ``--interval``
  seconds for ``--seconds`` and times its echo. Rows: sessions admitted per second (all N opened
  at once, until the last one answers), keystroke p50/p99 over all sessions, and for the
  bastion its CPU (% of one core over the typing phase, from /proc/PID/stat) and RSS added per
  session (/proc/PID/status VmRSS, after admission minus before). The same for direct sshd
  (its CPU: the sshd processes of the sessions are not one process; not shown). The clients' own
  CPU (this process) is in the JSON: at 200 sessions they, sshd and the bastion share two cores.
* recorder: write (``bench_recording.async_run``, AsyncRecorder, 4 KiB and 32 KiB frames),
  verify (``replay.verify`` of that file), render (``bench_replay``: ``Terminal`` on plain
  scrolling output, MB/s of CPU time), seek (``bench_seek``: a long recording, p99 of random
  seeks), search (``bench_search``: index build MB/s of CPU time, rare-word query p50/p99).

``--workers N`` runs ``zsp serve --workers N``: the bastion's CPU, its event loops' CPU and its
RSS are then summed over the parent and its workers (search-indexing children left out, as for
one process). ``--serve-prefix`` runs the bastion through a command that execs the rest (e.g. to try a
sitecustomize with ``env PYTHONPATH=DIR``). ``--json PATH`` writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_recording
import bench_replay
import bench_search
import bench_seek
from bench_bastion import direct_argv, pct, rtt, timed

from recorder import SigningKey
from replay import Outcome, Seeker, build_index, verify
from tests.bastion_env import Env, make_env
from zsp_tui.indexing import coverage, open_index

LIMITS = """
[bastion]
max_sessions_per_user = 10000
max_connections_per_user = 10000
max_unauthenticated = 10000
max_unauthenticated_per_source = 10000
"""
"""A benchmark opens hundreds of sessions of one user from one address: the caps are raised."""

SSHD_OPTIONS = ("MaxStartups 10000:100:10000", "MaxSessions 100")
"""sshd's default MaxStartups (10:30:100) drops concurrent logins."""


# --- process figures ------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat; with
    ``tid``, of that thread only (/proc/PID/task/TID/stat; the main thread's tid is the pid)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bastion_pids(pid: int) -> list[int]:
    """``pid`` and its workers (``zsp serve --workers N`` forks them as children): the processes
    that relay sessions. Search-indexing children are left out, as they are for one process."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"zsp_tui.index_process" in cmdline:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_cpu(pids: list[int], *, loops: bool = False) -> float:
    """CPU seconds of ``pids`` (``loops``: of their main threads, the event loops, alone)."""
    total = 0.0
    for p in pids:
        try:
            total += cpu_seconds(p, p if loops else None)
        except OSError:
            continue  # gone
    return total


# --- concurrency ------------------------------------------------------------------------------


async def _open(host: str, port: int, username: str, key: Path, known_hosts: Path) -> tuple[Any, Any]:
    conn = await asyncssh.connect(host, port, username=username, client_keys=[str(key)],
                                  known_hosts=str(known_hosts), agent_path=None)
    proc = await conn.create_process("stty raw -echo; echo ready; exec cat", term_type="xterm",
                                     term_size=(80, 24), encoding=None)
    buf = b""
    while b"ready" not in buf:
        got = await proc.stdout.read(1024)
        if not got:
            raise RuntimeError(f"session ended before it was ready: {buf!r}")
        buf += got
    return conn, proc


async def _type(proc: Any, interval: float, until: float, rnd: random.Random) -> list[float]:
    await asyncio.sleep(rnd.uniform(0, interval))  # spread the sessions' keys over the interval
    out: list[float] = []
    while time.monotonic() < until:
        t0 = time.perf_counter()
        proc.stdin.write(b"x")
        got = await proc.stdout.read(1024)
        if not got:
            break
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    return out


async def concurrent(host: str, port: int, username: str, key: Path, known_hosts: Path, n: int,
                     interval: float, seconds: float, pid: int | None) -> dict[str, float]:
    """N sessions opened at once, then typing; see the module docstring."""
    pids = bastion_pids(pid) if pid else []
    rss0 = sum(rss_bytes(p) for p in pids)
    t0 = time.perf_counter()
    opened = await asyncio.gather(*(_open(host, port, username, key, known_hosts) for _ in range(n)),
                                  return_exceptions=True)
    admit = time.perf_counter() - t0
    ok = [o for o in opened if not isinstance(o, BaseException)]
    failed = [o for o in opened if isinstance(o, BaseException)]
    try:
        await asyncio.sleep(0.5)
        rss1 = sum(rss_bytes(p) for p in pids)
        main0 = tree_cpu(pids, loops=True)
        client0 = time.process_time()
        cpu0, w0 = tree_cpu(pids), time.perf_counter()
        until = time.monotonic() + seconds
        rnd = random.Random(n)
        samples = await asyncio.gather(*(_type(proc, interval, until, rnd) for _, proc in ok))
        cpu1, w1 = tree_cpu(pids), time.perf_counter()
        main1 = tree_cpu(pids, loops=True)
        client1 = time.process_time()
    finally:
        for conn, proc in ok:
            proc.stdin.write(b"\x03")
            proc.close()
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn, _ in ok), return_exceptions=True)
    flat = [s for ss in samples for s in ss]
    row: dict[str, float] = {
        "sessions": n,
        "opened": len(ok),
        "admitted_per_s": len(ok) / admit,
        "keys": len(flat),
        "p50_ms": pct(flat, 0.5) * 1e3 if flat else float("nan"),
        "p99_ms": pct(flat, 0.99) * 1e3 if flat else float("nan"),
        "client_cpu_pct": 100 * (client1 - client0) / (w1 - w0),
    }
    if failed:
        row["first_failure"] = repr(failed[0])[:200]  # type: ignore[assignment]
    if pid:
        row["cpu_pct"] = 100 * (cpu1 - cpu0) / (w1 - w0)
        row["cpu_pct_per_session"] = row["cpu_pct"] / max(1, len(ok))
        row["loop_thread_cpu_pct"] = 100 * (main1 - main0) / (w1 - w0)
        row["cpu_ms_per_key"] = (cpu1 - cpu0) * 1e3 / max(1, len(flat))
        row["rss_per_session_kb"] = (rss1 - rss0) / 1024 / max(1, len(ok))
    return row


# --- the bastion rows ---------------------------------------------------------------------------


def wait_indexed(env: Env, timeout: float = 600) -> bool:
    """Until the search index covers every sealed session (the indexer is idle again); False if
    it still did not after ``timeout`` seconds (the keystroke rows then share the CPU with it).
    Indexing random bytes is slow (the terminal emulator takes them for controls): one 64 MB bulk
    recording took 70 s on the idle machine on 2026-12-01, so 120 s did not cover a quick run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = open_index(env.data)
        try:
            stale = coverage(env.data, index).stale
        finally:
            index.close()
        if not stale:
            return True
        time.sleep(0.5)
    return False


def bastion_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    rows: list[dict[str, Any]] = []
    conc: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = make_env(root, with_sshd=True, direct_key=True, sshd_options=SSHD_OPTIONS)
        if env.sshd is None:
            raise SystemExit("no sshd")
        known_direct = root / "sshd_known_hosts"
        known_direct.write_text(f"[127.0.0.1]:{env.sshd.port} {env.sshd.host_key_pub}\n")
        env.configure(LIMITS)
        env.start(
            prefix=tuple(shlex.split(args.serve_prefix)),
            args=("--workers", str(args.workers)) if args.workers else (),
        )
        if env.proc is None:
            raise SystemExit("no bastion")
        pid = env.proc.pid
        try:
            login = env.svc.target("srv").default_login
            env.grant("srv", duration=timedelta(hours=2))
            if not args.concurrency_only:
                relay_rows(args, env, login, known_direct, rows)
            for n in args.sessions:
                for via, port, user, kh, p in (("direct", env.sshd.port, login, known_direct, None),
                                               ("zsp", env.port, f"{login}@srv", env.known_hosts, pid)):
                    if via == "direct" and args.no_direct:
                        continue
                    row = asyncio.run(concurrent("127.0.0.1", port, user, env.keys["alice"], kh, n,
                                                 args.interval, args.seconds, p))
                    row["via"] = via
                    conc.append(row)
                    print(f"  {n} sessions via {via}: {json.dumps(row)}", file=sys.stderr, flush=True)
                    time.sleep(1)
            # Ending 200 sessions logged in as root takes a minute here: sshd ignores the signal
            # request for root logins, so each end also runs KILL_SESSION in a login shell on the
            # target (docs/PERF.md); 30 s was too short to see them all sealed.
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not all(s.ended_at for s in env.svc.sessions()):
                time.sleep(0.2)
            sessions = env.svc.sessions()
            sealed = f"{sum(1 for s in sessions if s.head)}/{len(sessions)} sessions recorded and sealed"
        finally:
            env.stop()
            env.sshd.stop()
    return rows, conc, sealed


def relay_rows(args: argparse.Namespace, env: Env, login: str, known_direct: Path, rows: list[dict[str, Any]]) -> None:
    """Bulk, PTY text, keystrokes, set-up: direct and through zsp, interleaved."""
    if env.sshd is None:
        raise SystemExit("no sshd")
    data = env.root / "bulk.bin"
    with open(data, "wb") as f:
        for _ in range(args.mb):
            f.write(os.urandom(1 << 20))
    text = env.root / "text.txt"
    line = "".join(chr(32 + i % 90) for i in range(99)) + "\n"
    text.write_text(line * (args.mb * (1 << 20) // 8 // len(line)))
    text_mb = text.stat().st_size / 1e6
    zsp = env.ssh_argv("alice", f"{login}@srv")
    direct = direct_argv(env, login)

    def pair(name: str, unit: str, size: float, d_argv: list[str], b_argv: list[str]) -> None:
        d = b = float("inf")
        for _ in range(args.runs):  # interleaved: a burst of load elsewhere hits both
            d = min(d, timed(d_argv))
            b = min(b, timed(b_argv))
        rows.append({"measure": name, "direct": size / d, "zsp": size / b, "unit": unit, "ratio": d / b})

    pair("bulk output (cat, no PTY)", "MB/s", args.mb, [*direct, f"cat {data}"], [*zsp, f"cat {data}"])
    pair("PTY text (ssh -tt cat)", "MB/s", text_mb, [direct[0], "-tt", *direct[1:], f"cat {text}"],
         [zsp[0], "-tt", *zsp[1:], f"cat {text}"])
    settled = wait_indexed(env)
    rd = asyncio.run(rtt("127.0.0.1", env.sshd.port, login, env.keys["alice"], known_direct, args.keys))
    rb = asyncio.run(rtt("127.0.0.1", env.port, f"{login}@srv", env.keys["alice"], env.known_hosts, args.keys))
    for p in (0.5, 0.99):
        d_ms, b_ms = pct(rd, p) * 1e3, pct(rb, p) * 1e3
        rows.append({"measure": f"keystroke round trip p{int(p * 100)}", "direct": d_ms, "zsp": b_ms,
                     "unit": "ms", "added_ms": b_ms - d_ms, "indexing_settled": settled})
    cd: list[float] = []
    cb: list[float] = []
    for _ in range(args.connects):
        cd.append(timed([*direct, "true"]))
        cb.append(timed([*zsp, "true"]))
    d_ms, b_ms = statistics.mean(cd) * 1e3, statistics.mean(cb) * 1e3
    rows.append({"measure": "connection set-up (ssh true)", "direct": d_ms, "zsp": b_ms, "unit": "ms",
                 "added_ms": b_ms - d_ms})


# --- recorder rows ------------------------------------------------------------------------------



def cpu_timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def recorder_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    key = SigningKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for size in (4096, 32768):
            payload = os.urandom(size)
            n = args.rec_mb * 1_000_000 // size
            p = d / f"w{size}.zsprec"
            secs = bench_recording.best(lambda p=p, pl=payload, n=n: bench_recording.async_run(p, key, pl, n), p, 2)
            rows.append({"measure": f"recorder write, AsyncRecorder, {size} B frames", "value": n * size / 1e6 / secs,
                         "unit": "MB/s"})
            wall, _ = cpu_timed(lambda p=p: verify(p, [key.public]))
            if verify(p, [key.public]).outcome is not Outcome.VALID:
                raise SystemExit("the benchmark recording does not verify")
            rows.append({"measure": f"verify, {size} B frames", "value": p.stat().st_size / 1e6 / wall,
                         "unit": "MB/s"})
        segments = bench_replay.plain_input(args.render_mb)
        cpu_rate, _, _ = bench_replay.rate(bench_replay.run_terminal, segments, 2)
        rows.append({"measure": "render, plain scrolling output (Terminal)", "value": cpu_rate, "unit": "MB/s CPU"})
        rec = d / "seek.zsprec"
        bench_seek.write_session(rec, args.seek_minutes, args.seek_mb)
        skey = SigningKey.from_seed(bytes(32), comment="bench")
        report = verify(rec, [skey.public])
        index = build_index(rec, [skey.public], report)
        seeker = Seeker(rec, index)
        rnd = random.Random(7)
        lat = []
        for _ in range(args.seek_points):
            t = rnd.randrange(0, seeker.duration_us + 1)
            t0 = time.perf_counter()
            seeker.screen_at(t)
            lat.append((time.perf_counter() - t0) * 1e3)
        rows.append({"measure": f"seek, {args.seek_mb} MB / {args.seek_minutes} min recording, p99",
                     "value": bench_seek.pct(lat, 99), "unit": "ms"})
        sd = d / "search"
        sd.mkdir()
        for name, mb, _secs, cpu, _ratio in bench_search.build(sd, args.search_mb):
            rows.append({"measure": f"search index build, {name}", "value": mb / cpu, "unit": "MB/s CPU"})
        ix, rare, _ = bench_search.fill_index(d / "many.db", args.search_sessions)
        try:
            p50, p99 = bench_search.timed(lambda i: ix.search(rare[i % len(rare)]), 100)
        finally:
            ix.close()
        rows.append({"measure": f"search query, rare word, {args.search_sessions} sessions, p50", "value": p50,
                     "unit": "ms"})
        rows.append({"measure": f"search query, rare word, {args.search_sessions} sessions, p99", "value": p99,
                     "unit": "ms"})
    return rows


# --- output ---------------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit.startswith("MB/s"):
        return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{value:.3f} {unit}" if unit == "ms" and value < 10 else f"{value:.1f} {unit}"


def print_tables(rows: list[dict[str, Any]], conc: list[dict[str, Any]], rec: list[dict[str, Any]]) -> None:
    print("| measure | direct | through zsp (recorded) | ratio / added |")
    print("|---|---|---|---|")
    for r in rows:
        extra = f"{r['ratio']:.2f}x" if "ratio" in r else f"{r['added_ms']:+.3f} ms"
        if r.get("indexing_settled") is False:
            extra += " (search indexing still running)"
        print(f"| {r['measure']} | {fmt(r['direct'], r['unit'])} | {fmt(r['zsp'], r['unit'])} | {extra} |")
    if conc:
        print()
        print("| sessions | via | admitted/s | keystroke p50 | keystroke p99 | p99 added | bastion CPU | "
              "CPU/session | RSS/session |")
        print("|---|---|---|---|---|---|---|---|---|")
        direct = {r["sessions"]: r for r in conc if r["via"] == "direct"}
        for r in conc:
            added = ""
            if r["via"] == "zsp" and r["sessions"] in direct:
                added = f"{r['p99_ms'] - direct[r['sessions']]['p99_ms']:+.2f} ms"
            cpu = f"{r['cpu_pct']:.0f}% of a core" if "cpu_pct" in r else ""
            per = f"{r['cpu_pct_per_session']:.2f}%" if "cpu_pct" in r else ""
            rss = f"{r['rss_per_session_kb']:.0f} KiB" if "rss_per_session_kb" in r else ""
            opened = "" if r["opened"] == r["sessions"] else f" ({r['opened']} opened)"
            print(f"| {r['sessions']}{opened} | {r['via']} | {r['admitted_per_s']:.1f} | {r['p50_ms']:.2f} ms | "
                  f"{r['p99_ms']:.2f} ms | {added} | {cpu} | {per} | {rss} |")
    if rec:
        print()
        print("| recorder / replay | figure |")
        print("|---|---|")
        for r in rec:
            print(f"| {r['measure']} | {fmt(r['value'], r['unit'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes and short phases (a few minutes in all)")
    ap.add_argument("--json", type=Path, help="write every figure here as JSON")
    ap.add_argument("--sessions", default=None,
                    help="concurrency levels, comma-separated (default 10,50,200; \"\": none)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between two keys of one session")
    ap.add_argument("--workers", type=int, default=0,
                    help="zsp serve --workers N (CPU and RSS are then summed over its workers)")
    ap.add_argument("--serve-prefix", default="", help="run zsp serve through this command (it execs the rest)")
    ap.add_argument("--no-bastion", action="store_true", help="only the recorder rows")
    ap.add_argument("--concurrency-only", action="store_true",
                    help="of the bastion rows, only the concurrency ones (to compare bastion settings quickly)")
    ap.add_argument("--no-direct", action="store_true", help="concurrency through zsp only (no direct rows)")
    ap.add_argument("--no-recorder", action="store_true", help="only the bastion rows")
    args = ap.parse_args()
    q = args.quick
    args.mb = 64 if q else 256
    args.runs = 2 if q else 3
    args.keys = 500 if q else 2000
    args.connects = 5 if q else 20
    args.seconds = 4.0 if q else 10.0
    args.sessions = [int(x) for x in ("10,50,200" if args.sessions is None else args.sessions).split(",") if x]
    args.rec_mb = 32 if q else 128
    args.render_mb = 4 if q else 16
    args.seek_mb, args.seek_minutes, args.seek_points = (10, 10, 200) if q else (100, 60, 1000)
    args.search_mb, args.search_sessions = (2.0, 1000) if q else (10.0, 10_000)
    started = time.time()
    rows: list[dict[str, Any]] = []
    conc: list[dict[str, Any]] = []
    sealed = ""
    if not args.no_bastion:
        rows, conc, sealed = bastion_rows(args)
    rec = [] if args.no_recorder else recorder_rows(args)
    print(f"bench_proof{' --quick' if q else ''}: {args.mb} MB bulk, {args.keys} keystrokes, "
          f"{args.connects} connects, sessions {args.sessions} typing 1 key / {args.interval * 1000:.0f} ms for "
          f"{args.seconds:.0f} s; {sealed}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print_tables(rows, conc, rec)
    if args.json:
        args.json.write_text(json.dumps({
            "started": started, "quick": q, "host": platform.node(), "cpus": os.cpu_count(),
            "load": os.getloadavg(), "python": platform.python_version(), "serve_prefix": args.serve_prefix, "workers": args.workers,
            "relay": rows, "concurrency": conc, "recorder": rec, "sealed": sealed,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
