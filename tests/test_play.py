"""``zsp play`` shows only what a verified signature covers: a forged file cannot print a fake verdict first.

Without a terminal, ``zsp play --instant`` prints the final screen as text (the emulated screen, never
the recorded bytes); these recordings print one line of ``out-NN;`` that wraps at 80 columns, so
``_text`` joins the screen's lines back before comparing.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import msgpack
import pytest

from recorder import FileSink, Frame, FrameKind, RecordingWriter, SessionMeta, SigningKey, chain_head
from replay import only_signed, verify_frames
from tests.helpers import FakeClock, fixed_session_id, rechain, split_frames

FAKE = b"\r\nzsp: VALID       fake.zsprec  frames=9 signer=SHA256:trust-me\r\n"


def _write(path: Path, key: SigningKey, *, seal: bool = True) -> Path:
    """Output frames ``out-00`` .. ``out-11``, a checkpoint after every 3 non-checkpoint frames."""
    clock = FakeClock()
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="root", term="xterm", cols=80, rows=24, host="bastion"),
        session_id=fixed_session_id(7),
        checkpoint_frames=3,
        coalesce_ms=0,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    for i in range(12):
        w.output(b"out-%02d;" % i)
    if seal:
        w.close(0, "exit")
    else:
        w.flush()
        w.abandon()
    return path


def play(path: Path, signer: Path, tmp_path: Path, *, merged: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, ZSP_DATA=str(tmp_path / "no-data-dir"))
    return subprocess.run(
        [sys.executable, "-m", "zsp_tui", "play", "--instant", "--signer", str(signer), str(path)],
        capture_output=not merged,
        stdout=subprocess.PIPE if merged else None,
        stderr=subprocess.STDOUT if merged else None,
        env=env,
        timeout=60,
    )


@pytest.fixture
def signer(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "signer.pub"
    p.write_text(key.public.openssh + "\n")
    return p


def _text(stdout: bytes) -> bytes:
    """The screen printed, its rows joined (the output is one line wrapped at the 80th column)."""
    return stdout.replace(b"\n", b"")


def _bodies(data: bytes) -> list[list[object]]:
    return [msgpack.unpackb(b) for b in split_frames(data)]


def _outputs(bodies: list[list[object]]) -> list[int]:
    return [i for i, b in enumerate(bodies) if b[0] == FrameKind.OUTPUT]


def test_valid_recording_plays_everything(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    path = _write(tmp_path / "ok.zsprec", key)
    p = play(path, signer, tmp_path)
    assert p.returncode == 0, p.stderr
    assert _text(p.stdout) == b"".join(b"out-%02d;" % i for i in range(12))
    assert p.stdout.count(b"\n") == 2  # a screen of two rows, not the raw bytes
    assert b"VALID" in p.stderr and b"not shown" not in p.stderr


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_forged_output_never_reaches_stdout(tmp_path: Path, key: SigningKey, signer: Path, where: str) -> None:
    """Heads recomputed, no valid signature: the forged frame and all after it stay hidden."""
    data = _write(tmp_path / "ok.zsprec", key).read_bytes()
    bodies = _bodies(data)
    outs = _outputs(bodies)
    k = {"first": outs[0], "middle": outs[len(outs) // 2], "last": outs[-1]}[where]
    forged_index = outs.index(k)
    bodies[k][3] = FAKE
    # Keep the seal's byte count true, so the only thing wrong is the missing signature.
    bodies[-2][3]["output_bytes"] += len(FAKE) - len(b"out-00;")
    sid = uuid.UUID(str(bodies[0][3]["session_id"]))
    forged = tmp_path / "forged.zsprec"
    forged.write_bytes(rechain([msgpack.packb(b) for b in bodies], sid))

    p = play(forged, signer, tmp_path)
    assert p.returncode == 1
    assert b"CORRUPT" in p.stderr and b"bad-signature" in p.stderr
    assert b"VALID" not in p.stdout and b"trust-me" not in p.stdout
    # What a good signature covered before the forgery is shown; nothing from the forged frame on.
    assert _text(p.stdout) == b"".join(b"out-%02d;" % i for i in range(forged_index - forged_index % 3))

    # Interleaved in one stream (a terminal), the fake verdict never appears either.
    m = play(forged, signer, tmp_path, merged=True)
    assert b"trust-me" not in m.stdout
    assert m.stdout.count(b"VALID") == 0 and b"CORRUPT" in m.stdout


def test_forged_frames_appended_to_a_cut_recording_are_not_shown(tmp_path: Path, key: SigningKey,
                                                                 signer: Path) -> None:
    """Cut back to a checkpoint, then forged frames chained on: INCOMPLETE, and the forgery stays hidden."""
    data = _write(tmp_path / "ok.zsprec", key).read_bytes()
    bodies = _bodies(data)
    last_ckpt = max(i for i, b in enumerate(bodies[:-2]) if b[0] == FrameKind.CHECKPOINT)
    cut = data[: 8 + sum(4 + len(b) + 32 for b in split_frames(data)[: last_ckpt + 1])]
    head = cut[-32:]
    t = bodies[last_ckpt][2]
    extra = b""
    for seq, chunk in enumerate([FAKE, b"more forged output"], start=last_ckpt + 1):
        body = msgpack.packb([int(FrameKind.OUTPUT), seq, t, chunk])
        head = chain_head(head, body)
        extra += struct.pack(">I", len(body)) + body + head
    path = tmp_path / "appended.zsprec"
    path.write_bytes(cut + extra)

    p = play(path, signer, tmp_path)
    assert p.returncode == 1
    assert b"INCOMPLETE" in p.stderr
    assert b"trust-me" not in p.stdout and b"forged" not in p.stdout
    assert b"2 frame(s) from frame %d on were not shown" % (last_ckpt + 1) in p.stderr


def test_unsigned_tail_of_an_honest_crash_is_withheld_with_a_notice(tmp_path: Path, key: SigningKey,
                                                                    signer: Path) -> None:
    path = _write(tmp_path / "crash.zsprec", key, seal=False)
    data = path.read_bytes()
    bodies = _bodies(data)
    # Drop the writer's last checkpoint so the recording ends with unsigned output, as after a crash.
    last = max(i for i, b in enumerate(bodies) if b[0] == FrameKind.CHECKPOINT)
    keep = split_frames(data)[:last]
    path.write_bytes(data[: 8 + sum(4 + len(b) + 32 for b in keep)])
    p = play(path, signer, tmp_path)
    assert p.returncode == 1 and b"INCOMPLETE" in p.stderr
    shown = [i for i in range(12) if b"out-%02d;" % i in p.stdout]
    assert shown == list(range(len(shown))) and len(shown) < 12
    assert b"were not shown: not covered by a verified signature" in p.stderr


def _frames(n_out: int, ckpt_after: set[int]) -> list[Frame]:
    out: list[Frame] = [Frame(0, FrameKind.HEADER, 0, None)]
    for i in range(1, n_out + 1):
        out.append(Frame(len(out), FrameKind.OUTPUT, i, b"x" * 10))
        if i in ckpt_after:
            out.append(Frame(len(out), FrameKind.CHECKPOINT, i, None))
    return out


def test_only_signed_releases_at_checkpoints_and_reports_what_it_withheld() -> None:
    frames = _frames(5, {2})
    seen: list[int] = []
    gen = only_signed(iter(frames))
    try:
        while True:
            seen.append(next(gen).seq)
    except StopIteration as stop:
        withheld = stop.value
    assert seen == [0, 1, 2, 3]
    assert (withheld.frames, withheld.first, withheld.overflow) == (3, 4, False)


def test_only_signed_stops_at_the_pending_limit_but_drains_its_source() -> None:
    frames = _frames(20, {2, 20})
    consumed: list[int] = []

    def source():
        for f in frames:
            consumed.append(f.seq)
            yield f

    gen = only_signed(source(), max_pending_bytes=55)
    seen: list[int] = []
    try:
        while True:
            seen.append(next(gen).seq)
    except StopIteration as stop:
        withheld = stop.value
    assert seen == [0, 1, 2, 3]  # nothing after the overflow, not even the later checkpoint
    assert withheld.overflow and withheld.first == 4
    assert consumed == [f.seq for f in frames]  # read to the end: the verifier's report is whole


def test_play_pipeline_on_a_real_verifier(tmp_path: Path, key: SigningKey) -> None:
    """Every frame only_signed releases from verify_frames is at or before the last good signature."""
    path = _write(tmp_path / "ok.zsprec", key, seal=False)
    with open(path, "rb") as f:
        gen = only_signed(verify_frames(f, [key.public]))
        released = list(gen)
    with open(path, "rb") as f:
        v = verify_frames(f, [key.public])
        try:
            while True:
                next(v)
        except StopIteration as stop:
            report = stop.value
    assert released and max(fr.seq for fr in released) == report.signed_frames


def test_recording_signed_by_an_untrusted_key_shows_nothing(tmp_path: Path, other_key: SigningKey,
                                                            signer: Path) -> None:
    """An attacker's own key signs every checkpoint correctly: not trusted, so nothing is shown."""
    path = _write(tmp_path / "theirs.zsprec", other_key)
    p = play(path, signer, tmp_path)
    assert p.returncode == 1 and b"untrusted-signer" in p.stderr
    assert p.stdout == b""
