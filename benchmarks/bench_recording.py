"""Recording format benchmark: write and verify throughput, bytes on disk per payload byte.

    python benchmarks/bench_recording.py [--mb 256] [--dir DIR]

Prints one table. Rows:

* ``baseline``: msgpack pack + blake3 + buffered file append, nothing else (the floor the
  writer is measured against).
* ``writer, write per frame``: RecordingWriter with every frame handed to the OS as it is made
  (one ``writev`` per frame), checkpoints signed every 256 frames.
* ``writer, batched``: the same writer flushing once per 64 frames, which is what AsyncRecorder
  does under load (it drains whatever queued while the previous write ran).
* ``AsyncRecorder``: the real path of a bastion session, from an asyncio loop with ``drain()``.
* ``verify``: the streaming verifier over the file the batched writer produced.

Payload MB/s count only the bytes of output data, not framing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from blake3 import blake3

from recorder import AsyncRecorder, FileSink, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, verify

META = SessionMeta(user="bench", target="local", login="bench", host="bench")
SIZES = (100, 4096, 32768)


def baseline(path: Path, payload: bytes, n: int) -> float:
    pack = msgpack.Packer(use_bin_type=True).pack
    head = bytes(32)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for i in range(n):
            body = pack([1, i, i, payload])
            head = blake3(body, key=head).digest()
            f.write(struct.pack(">I", len(body)))
            f.write(body)
            f.write(head)
    return time.perf_counter() - t0


def writer_run(path: Path, key: SigningKey, payload: bytes, n: int, batch: int) -> float:
    t0 = time.perf_counter()
    w = RecordingWriter(FileSink(path, sync_dir=False), key, META, coalesce_ms=0,
                        fsync=FsyncPolicy.NEVER, autoflush=batch == 1)
    out = w.output
    if batch == 1:
        for _ in range(n):
            out(payload)
    else:
        flush = w.flush
        for i in range(n):
            out(payload)
            if i % batch == batch - 1:
                flush()
    w.close(0, "exit")
    return time.perf_counter() - t0


def async_run(path: Path, key: SigningKey, payload: bytes, n: int) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        w = RecordingWriter(FileSink(path, sync_dir=False), key, META, coalesce_ms=0,
                            fsync=FsyncPolicy.NEVER, autoflush=False)
        rec = AsyncRecorder(w)
        for _ in range(n):
            rec.output(payload)
            await rec.drain()
        await rec.close(0, "exit")
        return time.perf_counter() - t0

    return asyncio.run(main())


def best(fn: Callable[[], float], path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        path.unlink(missing_ok=True)
        times.append(fn())
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mb", type=int, default=128, help="payload MB per measurement (default 128)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="directory for the files (default: a temp dir)")
    args = ap.parse_args()
    key = SigningKey.generate()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        rows = []
        for size in SIZES:
            payload = os.urandom(size)
            n = max(1000, args.mb * 1_000_000 // size)
            if size == 100:
                n //= 8  # keep the small-frame rows short; MB/s is what counts
            mb = n * size / 1e6
            p = d / f"f{size}.zsprec"
            base = best(lambda p=p, pl=payload, n=n: baseline(p, pl, n), p, args.repeat)
            per_frame = best(lambda p=p, pl=payload, n=n: writer_run(p, key, pl, n, 1), p, args.repeat)
            async_t = best(lambda p=p, pl=payload, n=n: async_run(p, key, pl, n), p, args.repeat)
            batched = best(lambda p=p, pl=payload, n=n: writer_run(p, key, pl, n, 64), p, args.repeat)
            disk = p.stat().st_size
            t0 = time.perf_counter()
            report = verify(p, [key.public])
            vt = time.perf_counter() - t0
            if report.outcome is not Outcome.VALID:
                raise SystemExit(f"benchmark recording did not verify: {report}")
            rows.append((size, mb / base, mb / per_frame, mb / batched, mb / async_t, mb / vt, disk / (n * size)))
    print(f"payload MB/s (higher is better); {args.mb} MB per row, best of {args.repeat}; "
          f"files in {args.dir or tempfile.gettempdir()}")
    hdr = ("frame payload", "baseline", "writer/frame", "writer batched", "AsyncRecorder", "verify", "disk/payload")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for size, b, pf, bt, a, v, ratio in rows:
        print(f"| {size} B | {b:.0f} | {pf:.0f} | {bt:.0f} | {a:.0f} | {v:.0f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
