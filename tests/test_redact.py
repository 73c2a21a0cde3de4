"""Redaction that stays verifiable (replay.redact_recording, verify(..., redacted=)).

Recordings are written with the real RecordingWriter (and one comes from a real session through
the bastion, the review template); the redacted copies are checked by the production verifier
and by the standalone verify.py (loaded by path), which must agree on every case."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from recorder import PREAMBLE, FileSink, Frame, FrameKind, FsyncPolicy, RecordingWriter, SessionMeta, SigningKey
from replay import (
    Outcome,
    Problem,
    RedactedFrame,
    RedactionError,
    RedactionResult,
    ReplayError,
    VerificationReport,
    load,
    redact_recording,
    verify,
    verify_frames,
)
from tests.helpers import FakeClock, fixed_session_id
from tests.independent_verifier import standalone

SECRETS = [re.compile(rb"hunter2"), re.compile(rb"SECRET-9", re.IGNORECASE)]


def _writer(path: Path, key: SigningKey, n: int) -> RecordingWriter:
    """A writer with a fake clock, a checkpoint every 4 frames and no coalescing (one frame per call)."""
    clock = FakeClock()
    return RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="srv", login="root", grant_id="g-1", term="xterm", cols=80, rows=24),
        session_id=fixed_session_id(n),
        checkpoint_frames=4,
        coalesce_ms=0,
        fsync=FsyncPolicy.NEVER,
        clock=clock.mono,
        wall_clock=clock.wall,
    )


def _record(path: Path, key: SigningKey, *, seal: bool = True) -> Path:
    w = _writer(path, key, 7)
    w.output(b"$ cat creds\r\npass=hunter2 ok\r\n")  # 2: the secret inside one frame
    w.output(b"token SEC")  # 3, 5: split across two output frames, a resize between them
    w.resize(100, 30)  # 4
    w.output(b"RET-9 done\r\n")  # 5
    w.input(b"echo sec")  # 7 (6 is a checkpoint): split across input frames
    w.input(b"ret-9\r")  # 8
    w.event("note", "hunter2 in an event is not terminal data")  # 9: events are never redacted
    w.output(b"nothing to see\r\n")  # 10
    if seal:
        w.close(0, "exit")
    else:
        w.tick()
        w.flush()
        w.abandon()
        with open(path, "ab") as f:
            f.write(b"\x00\x00\x00\x40torn")  # a frame cut short by a crash
    return path


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Path:
    return _record(tmp_path_factory.mktemp("redact") / "a.zsprec", key)


@pytest.fixture(scope="module")
def redacted(rec: Path, key: SigningKey) -> tuple[bytes, RedactionResult]:
    out = io.BytesIO()
    with open(rec, "rb") as f:
        result = redact_recording(f, out, SECRETS, [key.public])
    return out.getvalue(), result


def _frames(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(length prefix, body, stored head) of every frame."""
    out = []
    pos = len(PREAMBLE)
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + n + 32 > len(data):
            break
        out.append((data[pos : pos + 4], data[pos + 4 : pos + 4 + n], data[pos + 4 + n : pos + 36 + n]))
        pos += 36 + n
    return out


def _join(frames: list[tuple[bytes, bytes, bytes]]) -> bytes:
    return PREAMBLE + b"".join(struct.pack(">I", len(b)) + b + h for _, b, h in frames)


def _both(data: bytes, key: SigningKey, listed: dict[int, RedactedFrame] | None) -> tuple[str, str | None, int | None]:
    """The verdict of the production verifier, checked equal to the standalone verify.py's."""
    r = verify(io.BytesIO(data), [key.public], redacted=listed)
    mine = (r.outcome.value, r.problem.value if r.problem else None, r.bad_frame)
    sl = (
        None
        if listed is None
        else {i: standalone.Redacted(x.original_head, int(x.kind), x.length) for i, x in listed.items()}
    )
    s = standalone.verify_recording(io.BytesIO(data), [standalone.TrustedKey(key.public.raw)], sl)
    theirs = (s.outcome, s.problem, s.frame if s.outcome == "CORRUPT" else None)
    assert mine == theirs, (mine, theirs, r.detail, s.detail)
    if r.outcome is Outcome.VALID:
        assert list(r.redacted_frames) == s.redacted_frames
        assert r.head == s.head
    return mine


def test_a_secret_in_one_frame_and_split_across_frames_is_replaced(
    rec: Path, redacted: tuple[bytes, RedactionResult], key: SigningKey
) -> None:
    data, result = redacted
    _, report = load(rec, [key.public])
    assert report.outcome is Outcome.VALID and result.report.head == report.head
    got, _ = load_redacted(data, key, result)
    out = b"".join(f.data for f in got if f.kind is FrameKind.OUTPUT)
    typed = b"".join(f.data for f in got if f.kind is FrameKind.INPUT)
    assert out == b"$ cat creds\r\npass=******* ok\r\ntoken ******** done\r\nnothing to see\r\n"
    assert typed == b"echo ********\r"
    assert [(r.frame, r.kind, r.length, r.redacted_bytes) for r in result.redactions] == [
        (2, FrameKind.OUTPUT, 30, 7),
        (3, FrameKind.OUTPUT, 9, 3),
        (5, FrameKind.OUTPUT, 12, 5),
        (7, FrameKind.INPUT, 8, 3),
        (8, FrameKind.INPUT, 6, 5),
    ]
    event = next(f for f in got if f.kind is FrameKind.EVENT)
    assert "hunter2" in event.data.message  # type: ignore[union-attr]  # only terminal bytes are redacted
    assert b"hunter2" not in data.split(b"note")[0] and b"SECRET" not in data.upper()
    assert result.redacted_bytes == 23
    assert result.redactions[0].to_json()["kind"] == "output"


def load_redacted(data: bytes, key: SigningKey, result: RedactionResult) -> tuple[list[Frame], VerificationReport]:
    out = []
    gen = verify_frames(io.BytesIO(data), [key.public], redacted=result.redacted)
    try:
        while True:
            out.append(next(gen))
    except StopIteration as stop:
        return out, stop.value


def test_only_the_listed_frames_differ(rec: Path, redacted: tuple[bytes, RedactionResult]) -> None:
    data, result = redacted
    original = rec.read_bytes()
    assert data[: len(PREAMBLE)] == original[: len(PREAMBLE)] and len(data) == len(original)
    a, b = _frames(original), _frames(data)
    listed = {r.frame: r for r in result.redactions}
    assert len(a) == len(b)
    for i, (fa, fb) in enumerate(zip(a, b, strict=True)):
        if i in listed:
            assert fa[2] == fb[2] == listed[i].original_head  # the original stored head is kept
            assert fa[1] != fb[1]
            ka, sa, ta, da = msgpack.unpackb(fa[1])
            kb, sb, tb, db = msgpack.unpackb(fb[1])
            assert (ka, sa, ta, len(da)) == (kb, sb, tb, len(db))
        else:
            assert fa == fb, f"frame {i} changed but is not listed"


def test_the_redacted_copy_verifies_with_its_list_and_only_with_it(
    redacted: tuple[bytes, RedactionResult], key: SigningKey
) -> None:
    data, result = redacted
    assert _both(data, key, dict(result.redacted)) == ("VALID", None, None)
    report = verify(io.BytesIO(data), [key.public], redacted=result.redacted)
    assert report.redacted_frames == (2, 3, 5, 7, 8)
    assert report.to_json()["redacted_frames"] == [2, 3, 5, 7, 8]
    assert verify(io.BytesIO(data), [key.public]).to_json()["redacted_frames"] == []
    # without the list, the first redacted frame is where the chain breaks
    assert _both(data, key, None) == ("CORRUPT", "hash-mismatch", 2)


def _restar(data: bytes, index: int, edit: Callable[[list[Any]], None] | None = None) -> bytes:
    """Re-encode frame ``index`` with a star in its data (keeping its stored head): what a
    dishonest redactor does to a frame it does not list."""
    frames = _frames(data)
    pre, body, head = frames[index]
    obj = msgpack.unpackb(body)
    obj[3] = b"*" + obj[3][1:]
    if edit is not None:
        edit(obj)
    frames[index] = (pre, msgpack.packb(obj, use_bin_type=True), head)
    return _join(frames)


def test_changing_an_unlisted_frame_is_a_hash_mismatch_at_that_frame(
    redacted: tuple[bytes, RedactionResult], key: SigningKey
) -> None:
    data, result = redacted
    assert _both(_restar(data, 10), key, dict(result.redacted)) == ("CORRUPT", "hash-mismatch", 10)
    fewer = {i: x for i, x in result.redacted.items() if i != 5}  # a frame changed but left off the list
    assert _both(data, key, fewer) == ("CORRUPT", "hash-mismatch", 5)


@pytest.mark.parametrize(
    ("edit", "listed_as"),
    [
        (lambda o: o.__setitem__(0, 2), None),  # the body's kind changed (output -> input)
        (lambda o: o.__setitem__(3, o[3] + b"*"), None),  # longer data
        (lambda o: o.__setitem__(1, 4), None),  # another seq
        (None, RedactedFrame(b"", FrameKind.INPUT, 12)),  # listed with the wrong kind
        (None, RedactedFrame(b"", FrameKind.OUTPUT, 11)),  # listed with the wrong length
        (None, RedactedFrame(b"", FrameKind.RESIZE, 12)),  # a kind that can never be redacted
    ],
)
def test_a_listed_frame_that_changed_more_than_its_data_is_malformed(
    redacted: tuple[bytes, RedactionResult],
    key: SigningKey,
    edit: Callable[[list[Any]], None] | None,
    listed_as: RedactedFrame | None,
) -> None:
    data, result = redacted
    listed = dict(result.redacted)
    if listed_as is not None:
        listed[5] = RedactedFrame(listed[5].original_head, listed_as.kind, listed_as.length)
    tampered = data if edit is None else _restar(data, 5, edit)
    assert _both(tampered, key, listed) == ("CORRUPT", "malformed", 5)


def test_a_wrong_original_head_is_a_hash_mismatch(redacted: tuple[bytes, RedactionResult], key: SigningKey) -> None:
    data, result = redacted
    listed = dict(result.redacted)
    listed[3] = RedactedFrame(bytes(32), FrameKind.OUTPUT, 9)
    assert _both(data, key, listed) == ("CORRUPT", "hash-mismatch", 3)
    report = verify(io.BytesIO(data), [key.public], redacted=listed)
    assert "does not carry its original head" in report.detail


def test_a_listed_frame_that_is_unchanged_is_malformed(
    redacted: tuple[bytes, RedactionResult], key: SigningKey
) -> None:
    """A redaction claim for a frame still holding its original bytes (its body hashes to its head
    from the previous one) is a redaction that never happened: refused by both verifiers."""
    data, result = redacted
    listed = dict(result.redacted)
    listed[10] = RedactedFrame(_frames(data)[10][2], FrameKind.OUTPUT, 16)
    assert _both(data, key, listed) == ("CORRUPT", "malformed", 10)
    report = verify(io.BytesIO(data), [key.public], redacted=listed)
    assert report.detail == "frame 10 is listed as redacted but is unchanged"


@pytest.mark.parametrize(
    ("frame", "bad"),
    [(0, 0), (1, 1), (4, 4), (9, 9), (10_000, 10_000), (-1, None)],
    ids=["header", "checkpoint", "resize", "event", "past-the-end", "negative"],
)
def test_frames_that_can_never_be_listed(
    redacted: tuple[bytes, RedactionResult], key: SigningKey, frame: int, bad: int | None
) -> None:
    data, result = redacted
    listed = dict(result.redacted)
    head = _frames(data)[frame][2] if 0 <= frame < 20 else bytes(32)
    listed[frame] = RedactedFrame(head, FrameKind.OUTPUT, 3)
    assert _both(data, key, listed) == ("CORRUPT", "malformed", bad)


def test_a_corrupt_source_is_refused_before_anything_is_written(
    rec: Path, key: SigningKey, other_key: SigningKey
) -> None:
    raw = bytearray(rec.read_bytes())
    raw[len(raw) // 2] ^= 1
    out = io.BytesIO()
    with pytest.raises(RedactionError) as e:
        redact_recording(io.BytesIO(bytes(raw)), out, SECRETS, [key.public])
    assert isinstance(e.value, ReplayError) and "CORRUPT" in e.value.reason
    assert e.value.report is not None and e.value.report.outcome is Outcome.CORRUPT
    assert out.getvalue() == b""
    with pytest.raises(ReplayError, match="untrusted-signer"):
        redact_recording(io.BytesIO(rec.read_bytes()), out, SECRETS, [other_key.public])
    assert out.getvalue() == b""


def test_an_incomplete_recording_keeps_its_torn_tail(tmp_path: Path, key: SigningKey) -> None:
    src = _record(tmp_path / "torn.zsprec", key, seal=False)
    out = io.BytesIO()
    with open(src, "rb") as f:
        result = redact_recording(f, out, SECRETS, [key.public])
    data = out.getvalue()
    assert result.report.outcome is Outcome.INCOMPLETE and result.report.problem is Problem.TORN
    assert data.endswith(b"\x00\x00\x00\x40torn") and len(data) == src.stat().st_size
    report = verify(io.BytesIO(data), [key.public], redacted=result.redacted)
    assert (report.outcome, report.problem, report.frames) == (Outcome.INCOMPLETE, Problem.TORN, result.report.frames)
    assert report.head == result.report.head and len(report.redacted_frames) == 5


def test_patterns_apply_in_turn_and_a_copy_without_matches_is_identical(rec: Path, key: SigningKey) -> None:
    out = io.BytesIO()
    with open(rec, "rb") as f:
        result = redact_recording(f, out, [re.compile(rb"hunter2"), re.compile(rb"pass=\*+")], [key.public])
    got, _ = load_redacted(out.getvalue(), key, result)
    assert b"************ ok" in b"".join(f.data for f in got if f.kind is FrameKind.OUTPUT)
    assert [r.frame for r in result.redactions] == [2]
    nothing = io.BytesIO()
    with open(rec, "rb") as f:
        none = redact_recording(f, nothing, [re.compile(rb"not-there"), re.compile(rb"x*")], [key.public])
    assert none.redactions == () and nothing.getvalue() == rec.read_bytes()
    with pytest.raises(TypeError):
        redact_recording(io.BytesIO(), io.BytesIO(), [re.compile("text")], [key.public])  # type: ignore[list-item]


def test_a_real_bastion_session(reviewed_template: Any, tmp_path: Path) -> None:
    """The review template's shell session on the sshd target (typed through paramiko, echoed by a
    real shell): what was typed and shown is redacted wherever SSH packets split it."""
    rv = reviewed_template
    path = Path(rv.svc.session(rv.ids["shell"]).path)
    trusted = [rv.data.signing_key().public]
    before, _ = load(path, trusted)
    secret = re.compile(rb"web-7f")
    out_path = tmp_path / "redacted.zsprec"
    with open(path, "rb") as f, open(out_path, "wb") as out:
        result = redact_recording(f, out, [secret], trusted)
    assert result.report.outcome is Outcome.VALID
    kinds = {r.kind for r in result.redactions}
    assert kinds == {FrameKind.OUTPUT, FrameKind.INPUT}, result.redactions
    report = verify(out_path, trusted, redacted=result.redacted)
    assert report.outcome is Outcome.VALID and report.head == result.report.head
    assert report.redacted_frames == tuple(r.frame for r in result.redactions)
    frames, _ = load_redacted(out_path.read_bytes(), rv.data.signing_key(), result)
    for kind in (FrameKind.OUTPUT, FrameKind.INPUT):
        original = b"".join(f.data for f in before if f.kind is kind)
        now = b"".join(f.data for f in frames if f.kind is kind)
        assert secret.search(original) and not secret.search(now)
        assert now == secret.sub(b"******", original)
    assert verify(out_path, trusted).problem is Problem.HASH_MISMATCH


def _coloured(path: Path, key: SigningKey, chunks: list[bytes]) -> Path:
    w = _writer(path, key, 8)
    for c in chunks:
        w.output(c)
    w.close(0, "exit")
    return path


@pytest.mark.parametrize(
    ("pattern", "chunks", "expected"),
    [
        # grep --color: the byte pass finds the secret alone first; "pass=" is left (the pattern's
        # whole match on screen, "pass=hunter2", is gone once the secret is starred)
        (rb"(pass=)?hunter2", [b"pass=\x1b[01;31m\x1b[Khunter2\x1b[m\x1b[K ok\r\n"], b"pass=\x1b[01;31m\x1b[K*******\x1b[m\x1b[K ok\r\n"),
        # prompt colouring between the key and the secret: only the shown text has "pass=hunter2"
        (rb"pass=hunter2", [b"pass=\x1b[1mhunter\x1b[0m2 ok\r\n"], b"*****\x1b[1m******\x1b[0m* ok\r\n"),
        # a colour change inside the secret, split across frames at the escape sequence
        (rb"hunter2", [b"hun\x1b[3", b"1mter2\x1b[0m!\r\n"], b"***\x1b[31m****\x1b[0m!\r\n"),
        # an OSC (window title) between the halves is not shown either
        (rb"hunter2", [b"hunt\x1b]0;t\x07er2\r\n"], b"****\x1b]0;t\x07***\r\n"),
    ],
    ids=["grep-color", "sgr-inside", "sgr-split-frames", "osc"],
)
def test_a_secret_the_terminal_shows_whole_is_found_and_escape_sequences_are_kept(
    tmp_path: Path, key: SigningKey, pattern: bytes, chunks: list[bytes], expected: bytes
) -> None:
    rec = _coloured(tmp_path / "c.zsprec", key, chunks)
    out = io.BytesIO()
    with open(rec, "rb") as f:
        result = redact_recording(f, out, [re.compile(pattern)], [key.public])
    got, report = load_redacted(out.getvalue(), key, result)
    assert report.outcome is Outcome.VALID
    assert b"".join(f.data for f in got if f.kind is FrameKind.OUTPUT) == expected
    assert _both(out.getvalue(), key, dict(result.redacted))[0] == "VALID"

