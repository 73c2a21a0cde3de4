"""Evidence export benchmark: export and verify a large recording in every format.

    python benchmarks/bench_export.py [--mb 64] [--dir DIR]

Writes a recording of terminal-like output (coloured lines, 4 KiB frames, typed commands) into a
fresh data dir, then times, each as a real ``zsp`` command (one process, as a user runs it):

* ``export bundle`` (copy, verify, hash, tar, sign, self-check), ``export bundle --redact``;
* ``zsp verify BUNDLE`` and the bundle's own ``verify.py`` (the standalone verifier);
* ``export asciicast``, ``export asciicast3``, ``export text`` (verify + render through the
  replay engine).

Prints one table: seconds, MB/s of recording, and the output size.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder import FileSink, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey


def make_recording(path: Path, key: SigningKey, mb: int) -> int:
    rnd = random.Random(7)
    words = [b"ls", b"-la", b"token=", b"error", b"\x1b[31mred\x1b[0m", b"ok", b"/var/log/syslog", b"42"]
    w = RecordingWriter(FileSink(path, sync_dir=False), key,
                        SessionMeta(user="bench", target="srv", login="root", term="xterm", cols=120, rows=40),
                        coalesce_ms=0, fsync=FsyncPolicy.NEVER)
    total = 0
    n = 0
    while total < mb << 20:
        if n % 50 == 0:
            w.input(b"grep -r secret /etc\r")
        lines = b"".join(b" ".join(rnd.choice(words) for _ in range(12)) + b"\r\n" for _ in range(60))
        chunk = lines[:4096]
        w.output(chunk)
        total += len(chunk)
        n += 1
    w.close(0, "exit")
    return os.path.getsize(path)


def run(argv: list[str], **kw) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stdout}{p.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--dir")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zsp-bench-export-", dir=args.dir))
    data = root / "data"
    zsp = [sys.executable, "-m", "zsp_tui"]
    run([*zsp, "init", "--data", str(data)])
    key = SigningKey.load(data / "keys" / "recording_ed25519")
    rec = data / "recordings" / "bench.zsprec"
    size = make_recording(rec, key, args.mb)
    mb = size / 1e6
    rows: list[tuple[str, float, int]] = []

    def export(name: str, fmt: str, out: Path, *extra: str) -> None:
        dt = run([*zsp, "export", "--data", str(data), str(rec), "--format", fmt, "-o", str(out), *extra])
        rows.append((name, dt, out.stat().st_size))

    bundle = root / "b.tar"
    export("export bundle", "bundle", bundle)
    export("export bundle --redact", "bundle", root / "r.tar", "--redact", r"token=\S+", "--redact", r"/var/log/\w+")
    rows.append(("zsp verify BUNDLE", run([*zsp, "verify", str(bundle)]), 0))
    with tarfile.open(bundle) as t:
        t.extractall(root / "x", filter="data")
    top = next((root / "x").iterdir())
    rows.append(("python3 verify.py (standalone)", run([sys.executable, str(top / "verify.py")]), 0))
    export("export asciicast", "asciicast", root / "a.cast")
    export("export asciicast3", "asciicast3", root / "a3.cast")
    export("export text", "text", root / "t.txt")
    print(f"recording: {mb:.1f} MB, {args.mb} MiB of output in 4 KiB frames (python {sys.version.split()[0]})")
    print(f"{'operation':34} {'seconds':>8} {'MB/s':>8} {'output MB':>10}")
    for name, dt, out in rows:
        print(f"{name:34} {dt:8.2f} {mb / dt:8.1f} {out / 1e6 if out else 0:10.1f}")


if __name__ == "__main__":
    main()
