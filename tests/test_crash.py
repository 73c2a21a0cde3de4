"""A writer killed with SIGKILL mid-burst leaves a recording that verifies INCOMPLETE and intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recorder import SigningKey
from replay import Outcome, Problem, verify
from tests.helpers import SEED_A

WRITER = textwrap.dedent(
    """
    import sys, os
    from pathlib import Path
    from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
    key = SigningKey.from_seed(bytes(range(32)))
    w = RecordingWriter(FileSink(Path(sys.argv[1])), key,
                        SessionMeta(user="u", target="local", login="u"),
                        coalesce_ms=int(sys.argv[2]))
    payload = os.urandom(3000)
    n = 0
    while True:
        w.output(payload[: 1 + n % 3000])
        if n % 7 == 0:
            w.input(b"k")
        n += 1
        if n % 500 == 0:
            # Everything built so far has reached the OS, except output inside the coalescing window.
            sys.stdout.write(f"{w.frames}\\n"); sys.stdout.flush()
    """
)


@pytest.mark.parametrize("round", range(6))
def test_sigkill_mid_burst_is_incomplete_and_intact(tmp_path: Path, round: int) -> None:
    key = SigningKey.from_seed(SEED_A)
    path = tmp_path / "killed.zsprec"
    coalesce = 0 if round % 2 == 0 else 20
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(coalesce)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 30
    want = 2 + round  # progress lines before the kill, so the kill lands at different points
    lines = 0
    while lines < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
        lines += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert reported > 0, "writer never reported progress"
    r = verify(path, [key.public])
    assert r.outcome is Outcome.INCOMPLETE, r
    assert r.problem in (Problem.NO_SEAL, Problem.TORN)
    # Nothing the writer had handed to the OS is lost (the frames built before its last report,
    # output still inside the coalescing window is not a frame yet, so not counted).
    assert r.frames >= reported, (r.frames, reported)
    assert r.signed_frames > 0 and r.signed_frames <= r.frames
