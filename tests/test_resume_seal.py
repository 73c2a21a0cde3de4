"""Sealing a recording whose writer died (recorder.interrupted_seal, append_at_end): the chain is
resumed from the verified end, only a seal (reason ``interrupted``) and its checkpoint are
appended, the original bytes stay a prefix, and both verifiers (replay's and the standalone
verify.py of evidence bundles) accept the result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recorder import (
    FileSink,
    FrameKind,
    RecordingWriter,
    ResumeRefused,
    SessionMeta,
    SigningKey,
    append_at_end,
    interrupted_seal,
)
from replay import Outcome, Problem, load, verify
from tests import independent_verifier
from tests.helpers import frame_spans

META = SessionMeta(user="alice", target="local", login="alice", term="xterm", cols=80, rows=24, host="h")


def _killed(path: Path, key: SigningKey, *, checkpoint_frames: int = 256) -> None:
    """A recording whose writer stopped without a seal (what ``kill -9`` leaves)."""
    w = RecordingWriter(FileSink(path), key, META, checkpoint_frames=checkpoint_frames, coalesce_ms=0)
    w.output(b"hello\r\n")
    w.input(b"ls\r")
    w.resize(100, 30)
    w.event("note", "something happened")
    w.output(b"a" * 1000)
    w.flush()
    w.abandon()


def _seal(path: Path, key: SigningKey, resumed_by: str = "serve:test:1") -> None:
    report = verify(path, [key.public])
    assert report.outcome is Outcome.INCOMPLETE and report.problem is Problem.NO_SEAL
    end = report.chain_end()
    assert end is not None
    resumed = interrupted_seal(end, key, recovered_by=resumed_by)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        append_at_end(fd, resumed, name=str(path))
    finally:
        os.close(fd)


def test_an_unsealed_recording_is_sealed_interrupted_and_verifies(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "r.zsprec"
    _killed(path, key)
    before = path.read_bytes()
    found = verify(path, [key.public])
    assert found.output_bytes == 1007 and found.input_bytes == 3
    _seal(path, key)
    after = path.read_bytes()
    assert after.startswith(before)
    assert [s for s in frame_spans(after) if s[0] >= len(before)] and len(frame_spans(after)) == found.frames + 2
    frames, report = load(path, [key.public])
    assert report.outcome is Outcome.VALID and report.seal is not None
    assert [f.kind for f in frames[-2:]] == [FrameKind.SEAL, FrameKind.CHECKPOINT]
    seal = report.seal
    assert seal.reason == "interrupted" and seal.exit_status is None and seal.frames == found.frames
    assert (seal.output_bytes, seal.input_bytes) == (1007, 3)
    assert seal.extra == {
        "session_frames": found.frames,
        "session_signed_frames": found.signed_frames,
        "session_head": found.head.hex(),
        "recovered_by": "serve:test:1",
    }
    assert report.duration_us == found.duration_us
    # The standalone verifier shipped in evidence bundles (written from FORMAT.md) agrees.
    standalone = independent_verifier.verify(after, independent_verifier.parse_trusted_keys([key.public.openssh]))
    assert standalone.outcome == "VALID" and standalone.end_reason == "interrupted"  # type: ignore[attr-defined]
    assert standalone.head == report.head  # type: ignore[attr-defined]


def test_a_checkpoint_comes_first_when_the_unsigned_frames_are_at_the_limit(tmp_path: Path) -> None:
    """The writer signs after ``checkpoint_frames`` frames; killed just before that checkpoint
    reached the file, one more unsigned frame (the seal) would be ``missing-signature``."""
    key = SigningKey.generate()
    path = tmp_path / "r.zsprec"
    w = RecordingWriter(FileSink(path), key, META, checkpoint_frames=4, coalesce_ms=0)
    for i in range(4):
        w.output(b"x%d" % i)
    w.flush()
    w.abandon()
    frames, report = load(path, [key.public])
    assert frames[-1].kind is FrameKind.CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: frame_spans(data)[-1][0]])  # the checkpoint lost: 4 frames unsigned
    found = verify(path, [key.public])
    assert found.frames - found.signed_frames - 1 == 4
    _seal(path, key)
    frames, report = load(path, [key.public])
    assert report.outcome is Outcome.VALID and report.seal is not None and report.seal.reason == "interrupted"
    assert [f.kind for f in frames[-3:]] == [FrameKind.CHECKPOINT, FrameKind.SEAL, FrameKind.CHECKPOINT]
    assert report.seal.extra["session_frames"] == found.frames


def test_another_key_or_a_changed_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "r.zsprec"
    _killed(path, key)
    before = path.read_bytes()
    end = verify(path, [key.public]).chain_end()
    assert end is not None
    with pytest.raises(ResumeRefused, match="another key"):
        interrupted_seal(end, SigningKey.generate(), recovered_by="x")
    resumed = interrupted_seal(end, key, recovered_by="x")
    with open(path, "ab") as f:
        f.write(b"\x00")  # the file grew since it was verified
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        with pytest.raises(ResumeRefused, match="changed since it was verified"):
            append_at_end(fd, resumed)
    finally:
        os.close(fd)
    assert path.read_bytes() == before + b"\x00"


def test_a_sealed_recording_cut_back_to_before_its_seal_is_incomplete_again(tmp_path: Path) -> None:
    """The original bytes are exactly the prefix: cutting the seal off restores the killed file."""
    key = SigningKey.generate()
    path = tmp_path / "r.zsprec"
    _killed(path, key)
    before = path.read_bytes()
    _seal(path, key)
    path.write_bytes(path.read_bytes()[: len(before)])
    report = verify(path, [key.public])
    assert report.outcome is Outcome.INCOMPLETE and report.problem is Problem.NO_SEAL
    assert path.read_bytes() == before
