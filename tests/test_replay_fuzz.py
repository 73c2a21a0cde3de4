"""Fuzzed recordings of hostile output through `zsp play` and the review app (docs/RELIABILITY.md,
rows P2-P3): whatever a recording's bytes, the player and the Replay screen neither crash nor put a
raw control character on the reviewer's terminal.

A recording full of hostile output (title and clipboard writes, the alternate screen, queries that
make a terminal answer, DCS, C1 controls, bidi overrides, hyperlinks) is mutated at random (seeded:
``ZSP_SEED``): bytes flipped, cut, garbage spliced in, frames duplicated. CI runs a dozen mutations
through `zsp play --instant` and a few through the Replay screen under Pilot; ``ZSP_LONG=1`` runs
hundreds. (The reader alone: tests/test_reader_fuzz.py.)
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from tests.helpers import frame_spans

LONG = os.environ.get("ZSP_LONG") == "1"
SEED = int(os.environ.get("ZSP_SEED", "20261201"))

HOSTILE_OUTPUT = [
    b"\x1b]0;evil-title\x07\x1b]52;c;ZXZpbA==\x07",
    b"\x1b[?1049hALT-SCREEN\x1b[6n\x1bP$qm\x1b\\",
    b"\x1b[?1049lback\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\ bidi:\xe2\x80\xaedlrow\r\n",
    b"nul:\x01\x02\x1b[2Jcleared \xc2\x9b c1 \x9b31m raw-c1\r\n",
    b"\x1b[999;999H\x1b[38;2;255;0;0mred\x1b[0m\x1b#8\x1b(0lqk\x1b(B\r\n",
    b"\x1b[21t\x1b[>c\x1bZ\x1b[?2026h sync \x1b[?2026l\x1b]1337;File=x\x07\r\n",
]
# What must never reach a terminal raw: C0 (bar newline), DEL, C1, and bidi and line/paragraph separators.
_RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _hostile_recording(path: Path, key: SigningKey) -> bytes:
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="root", term="xterm", cols=80, rows=24),
        checkpoint_frames=4,
        coalesce_ms=0,
    )
    for i in range(3):
        for chunk in HOSTILE_OUTPUT:
            w.output(chunk)
        w.input(b"\x1b[A\x03 typed %d\r" % i)
    w.close(0, "exit")
    return path.read_bytes()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    spans = frame_spans(data)
    how = rng.choice(("flip", "cut", "splice", "dup", "flips"))
    if how == "flip":
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if how == "flips":
        b = bytearray(data)
        for _ in range(rng.randrange(2, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if how == "cut":
        return data[: rng.randrange(len(data))]
    if how == "splice":
        i = rng.randrange(len(data))
        return data[:i] + rng.randbytes(rng.randrange(1, 300)) + data[i:]
    a, b = spans[rng.randrange(len(spans))]
    return data[:b] + data[a:b] + data[b:]


@pytest.fixture
def signer(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "signer.pub"
    p.write_text(key.public.openssh + "\n")
    return p


def test_zsp_play_on_fuzzed_hostile_recordings_never_crashes_or_writes_raw(
    tmp_path: Path, key: SigningKey, signer: Path
) -> None:
    pristine = _hostile_recording(tmp_path / "pristine.zsprec", key)
    rng = random.Random(SEED)
    env = dict(os.environ, ZSP_DATA=str(tmp_path / "no-data-dir"))
    cases = [pristine] + [_mutate(pristine, rng) for _ in range(300 if LONG else 12)]
    for i, data in enumerate(cases):
        path = tmp_path / f"m{i}.zsprec"
        path.write_bytes(data)
        p = subprocess.run(
            [sys.executable, "-m", "zsp_tui", "play", "--instant", "--signer", str(signer), str(path)],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert p.returncode in (0, 1, 2), (i, p.returncode, p.stderr)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err, (i, err)
        assert not _RAW.search(out), (i, _RAW.search(out))
        assert not _RAW.search(err), (i, err)
        if i == 0:
            assert p.returncode == 0 and "VALID" in err  # (its screen: DECALN filled it with E)


async def test_the_replay_screen_on_fuzzed_hostile_recordings_never_crashes_or_draws_raw(
    reviewed, key: SigningKey
) -> None:
    from tests.test_tui_replay import _CONTROL, _app, _drawn, _open, _segments, _settle
    from zsp_tui.tui.screens.replay import ReplayScreen

    sid = reviewed.ids["shell"]
    path = Path(reviewed.svc.session(sid).path)
    pristine = path.read_bytes()
    rng = random.Random(SEED)
    for i in range(60 if LONG else 4):
        path.write_bytes(_mutate(pristine, rng))
        app = _app(reviewed)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _open(pilot, app, sid)
            assert isinstance(app.screen, ReplayScreen)
            for key_name in ("end", "home", "right", "right"):
                await pilot.press(key_name)
                await _settle(pilot, screen)
                for seg in _segments(screen) + _drawn(screen):
                    assert not _CONTROL.search(seg.text), (i, repr(seg.text))
            verdict = str(screen.verdict_text()) if screen.report is not None else str(screen.problem)
            assert "VALID" not in verdict.split() or screen.report is not None, verdict
        assert app.return_code in (None, 0)
    path.write_bytes(pristine)
