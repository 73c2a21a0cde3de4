"""A SIGKILL campaign against the recording writer, run as its own process: ``python -m
tests.crash_campaign DIR N SEED``.

It imports the recorder once and forks one child per iteration; each child writes a burst (random
output sizes, input, coalescing and checkpoint settings; it seals after a random number of frames
and then idles) and is killed with SIGKILL after a random delay, so kills land before the file
exists, in the header, mid-frame, between a frame and its checkpoint, after the seal. The forking
happens here, in a process with no threads, not in the test runner. The caller verifies every file.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

from recorder import FileSink, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey

SEED_KEY = bytes(range(32))


def _child(path: Path, rng: random.Random) -> None:
    key = SigningKey.from_seed(SEED_KEY)
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="u", target="local", login="u"),
        coalesce_ms=rng.choice((0, 0, 5, 20)),
        checkpoint_frames=rng.choice((1, 4, 32, 256)),
        checkpoint_ms=rng.choice((1, 50, 2000)),
        fsync=FsyncPolicy.NEVER,  # SIGKILL, not a power cut: what reached the page cache stays
    )
    payload = rng.randbytes(5000)
    frames = rng.randrange(1, 3000)
    for n in range(frames):
        w.output(payload[: 1 + (n * 7919) % len(payload)])
        if n % 5 == 0:
            w.input(b"k")
        if n % 97 == 0:
            w.tick()
    w.close(0, "exit")
    time.sleep(30)


def main() -> None:
    out, iterations, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    for i in range(iterations):
        child_seed = rng.getrandbits(64)
        path = out / f"{i:05d}.zsprec"
        pid = os.fork()
        if pid == 0:
            try:
                _child(path, random.Random(child_seed))
            finally:
                os._exit(0)
        time.sleep(rng.choice((0.0, 0.001, 0.003, 0.01, 0.02, 0.05)) * rng.random())
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
