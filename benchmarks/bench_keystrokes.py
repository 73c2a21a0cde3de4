"""Keystroke round trip alone, direct OpenSSH vs through a fresh ``zsp serve``: for A/B of two trees.

    cd TREE && sudo env PYTHONPATH=TREE python3 benchmarks/bench_keystrokes.py [--keys 2000] [--label A]

Needs root (it starts sshd and logs in as the current user). Prints one line: p50/p99 direct,
through zsp, and the difference. Run it from each tree's own directory, alternating: with
``python -m`` the current directory comes before ``PYTHONPATH``, so the bastion runs the code of
the directory it is started from. Uses ``bench_proof``'s environment and ``rtt``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proof as bp

from tests.bastion_env import make_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--label", default=str(Path.cwd()))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = make_env(root, with_sshd=True, direct_key=True, sshd_options=bp.SSHD_OPTIONS)
        if env.sshd is None:
            raise SystemExit("no sshd")
        known_direct = root / "sshd_known_hosts"
        known_direct.write_text(f"[127.0.0.1]:{env.sshd.port} {env.sshd.host_key_pub}\n")
        env.configure(bp.LIMITS)
        env.start()
        try:
            login = env.svc.target("srv").default_login
            env.grant("srv", duration=timedelta(hours=2))
            key = env.keys["alice"]
            rd = asyncio.run(bp.rtt("127.0.0.1", env.sshd.port, login, key, known_direct, args.keys))
            rb = asyncio.run(bp.rtt("127.0.0.1", env.port, f"{login}@srv", key, env.known_hosts, args.keys))
        finally:
            env.stop()
            env.sshd.stop()
    d50, d99, b50, b99 = (bp.pct(r, p) * 1e3 for r, p in ((rd, 0.5), (rd, 0.99), (rb, 0.5), (rb, 0.99)))
    print(
        f"{args.label}: direct p50 {d50:.3f} p99 {d99:.3f} ms | zsp p50 {b50:.3f} p99 {b99:.3f} ms | "
        f"added p50 {b50 - d50:+.3f} p99 {b99 - d99:+.3f} ms"
    )


if __name__ == "__main__":
    main()
