"""Bastion benchmark: the same sshd reached directly and through `zsp serve` (recording on).

    python benchmarks/bench_bastion.py [--mb 256] [--rtt 1000] [--connects 20] [--rules standard|none]

Needs root (it starts sshd and logs in as the current user). Prints one table:

* bulk output: ``cat`` of a file of random bytes, exec without a PTY, stdout to /dev/null;
* PTY text: ``ssh -tt ... cat`` of a text file (PTY output arrives in chunks of at most 4 KiB);
* keystroke round trip: one byte to ``cat`` in raw mode and back, p50/p99 (asyncssh client);
* connection set-up: ``ssh ... true``, mean.

``--rules``: the bastion's real-time rules (docs/RULES.md): the shipped ``standard`` set (the
default, as a data dir without ``rules.toml`` has it), or ``none`` (``defaults = "none"`` and no
rules: what the relay costs without them). Run both to see what rules add.

Direct uses OpenSSH's defaults (chacha20-poly1305); through the bastion the operator leg
negotiates aes-gcm, and the bastion's upstream leg prefers aes-gcm too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.bastion_env import Env, make_env


def direct_argv(env: Env, login: str) -> list[str]:
    assert env.sshd is not None
    return ["ssh", "-p", str(env.sshd.port), "-i", str(env.keys["alice"]), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={env.root / 'sshd_known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"{login}@127.0.0.1"]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   check=True, timeout=600)
    return time.perf_counter() - t0


async def rtt(host: str, port: int, username: str, key: Path, known_hosts: Path, n: int) -> list[float]:
    async with asyncssh.connect(host, port, username=username, client_keys=[str(key)], known_hosts=str(known_hosts),
                                agent_path=None) as conn:
        proc = await conn.create_process("stty raw -echo; echo ready; exec cat", term_type="xterm",
                                         term_size=(80, 24), encoding=None)
        buf = b""
        while b"ready" not in buf:
            buf += await proc.stdout.read(1024)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            proc.stdin.write(b"x")
            got = await proc.stdout.read(1024)
            if not got:
                break
            out.append(time.perf_counter() - t0)
        proc.stdin.write(b"\x03")
        proc.close()
        return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rtt", type=int, default=1000)
    ap.add_argument("--connects", type=int, default=20)
    ap.add_argument("--rules", choices=("standard", "none"), default="standard")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = make_env(root, with_sshd=True, direct_key=True)
        assert env.sshd is not None
        (root / "sshd_known_hosts").write_text(f"[127.0.0.1]:{env.sshd.port} {env.sshd.host_key_pub}\n")
        env.data.rules_path.write_text(f'[settings]\ndefaults = "{args.rules}"\n')
        env.start()
        try:
            login = env.svc.target("srv").default_login
            env.grant("srv", duration=timedelta(hours=1))
            data = root / "bulk.bin"
            with open(data, "wb") as f:
                for _ in range(args.mb):
                    f.write(os.urandom(1 << 20))
            text = root / "text.txt"
            with open(text, "w") as f:
                line = "".join(chr(32 + i % 90) for i in range(99)) + "\n"
                f.write(line * (args.mb * (1 << 20) // 8 // len(line)))  # 1/8 of the size: PTY is slower
            text_mb = text.stat().st_size / 1e6
            bastion = [*env.ssh_argv("alice", f"{login}@srv")]
            direct = direct_argv(env, login)

            rows = []
            d = min(timed([*direct, f"cat {data}"]) for _ in range(2))
            b = min(timed([*bastion, f"cat {data}"]) for _ in range(2))
            rows.append(("bulk output (cat, no PTY)", f"{args.mb / d:.0f} MB/s", f"{args.mb / b:.0f} MB/s", f"{d / b:.2f}x"))
            d = min(timed([*direct[:1], "-tt", *direct[1:], f"cat {text}"]) for _ in range(2))
            b = min(timed([*bastion[:1], "-tt", *bastion[1:], f"cat {text}"]) for _ in range(2))
            rows.append(("PTY text (ssh -tt cat)", f"{text_mb / d:.0f} MB/s", f"{text_mb / b:.0f} MB/s", f"{d / b:.2f}x"))
            rd = asyncio.run(rtt("127.0.0.1", env.sshd.port, login, env.keys["alice"], root / "sshd_known_hosts",
                                 args.rtt))
            rb = asyncio.run(rtt("127.0.0.1", env.port, f"{login}@srv", env.keys["alice"], env.known_hosts, args.rtt))
            rows.append(("keystroke RTT p50", f"{pct(rd, .5) * 1e3:.3f} ms", f"{pct(rb, .5) * 1e3:.3f} ms",
                         f"+{(pct(rb, .5) - pct(rd, .5)) * 1e3:.3f} ms"))
            rows.append(("keystroke RTT p99", f"{pct(rd, .99) * 1e3:.3f} ms", f"{pct(rb, .99) * 1e3:.3f} ms",
                         f"+{(pct(rb, .99) - pct(rd, .99)) * 1e3:.3f} ms"))
            cd = statistics.mean(timed([*direct, "true"]) for _ in range(args.connects))
            cb = statistics.mean(timed([*bastion, "true"]) for _ in range(args.connects))
            rows.append(("connection set-up (ssh true)", f"{cd * 1e3:.0f} ms", f"{cb * 1e3:.0f} ms",
                         f"+{(cb - cd) * 1e3:.0f} ms"))
            sessions = env.svc.sessions()
            sealed = sum(1 for s in sessions if s.head)
        finally:
            env.stop()
            if env.sshd:
                env.sshd.stop()
    print(f"bastion benchmark: {args.mb} MB bulk, {text_mb:.0f} MB PTY text, {args.rtt} keystrokes, "
          f"{args.connects} connects, rules {args.rules}; {sealed}/{len(sessions)} sessions recorded and sealed")
    print("| measure | direct | through zsp (recorded) | ratio / added |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
