"""Every flip, drop, duplicate, swap, splice and truncation is caught, at the right frame, never VALID."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey, checkpoint_message
from replay import Outcome, Problem, verify
from tests.helpers import (
    FakeClock,
    fixed_session_id,
    frame_at,
    frame_spans,
    rechain,
    split_frames,
    write_recording,
)

LONG = os.environ.get("ZSP_LONG") == "1"


def _every_kind(path: Path, key: SigningKey) -> bytes:
    """A recording with output, input, resize and event frames (str/int/bool/nil fields) and several
    checkpoints: the random fixture happens to hold no event frame."""
    clock = FakeClock()
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="postgres", grant_id="g-1", term="xterm", cols=80, rows=24,
                    host="bastion"),
        session_id=fixed_session_id(4242),
        checkpoint_frames=5,
        coalesce_ms=0,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    w.output(b"$ ")
    w.input(b"sudo -i\r")
    w.event("input.masked", "input withheld", bytes=7)
    w.output(b"\x1b[1mroot\x1b[0m# ")
    w.resize(132, 43)
    w.event("note", "grant ends soon", minutes=5, urgent=True, by=None, who="alice")
    w.input(b"exit\r")
    w.output("caf\u00e9\r\n".encode())
    w.resize(80, 24)
    w.close(0, "exit")
    return path.read_bytes()


@pytest.fixture(scope="module", params=["random", "every-kind"])
def small_recording(request: pytest.FixtureRequest, small_recording: bytes, key: SigningKey,
                    tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Every test below runs on the shared random recording and on one holding every frame kind."""
    if request.param == "random":
        return small_recording
    return _every_kind(tmp_path_factory.mktemp("kinds") / "kinds.zsprec", key)


def check(data: bytes, key: SigningKey):
    return verify(io.BytesIO(data), [key.public])


def assert_pinned(report, frame: int | None) -> None:
    """The report names ``frame`` as the first frame that is not proven intact."""
    assert report.outcome is not Outcome.VALID
    if report.outcome is Outcome.CORRUPT:
        assert report.bad_frame == frame, report
    else:
        # INCOMPLETE: every frame before ``frame`` is intact, and ``frame`` is not.
        assert frame is not None and report.frames == frame, report


def test_untouched_is_valid(small_recording: bytes, key: SigningKey) -> None:
    r = check(small_recording, key)
    assert r.outcome is Outcome.VALID, r
    assert r.frames == len(frame_spans(small_recording))


def test_every_single_byte_flip_is_caught_at_its_frame(small_recording: bytes, key: SigningKey) -> None:
    data = small_recording
    spans = frame_spans(data)
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(data)
            mutated[pos] ^= mask
            r = check(bytes(mutated), key)
            assert_pinned(r, frame_at(spans, pos))


def test_truncation_at_every_offset_is_never_valid(small_recording: bytes, key: SigningKey) -> None:
    data = small_recording
    spans = frame_spans(data)
    for cut in range(len(data)):
        r = check(data[:cut], key)
        assert r.outcome is Outcome.INCOMPLETE, (cut, r)
        complete = sum(1 for _, end in spans if end <= cut)
        assert r.frames == complete, (cut, r)
        assert r.signed_frames <= r.frames


def test_every_dropped_frame_is_caught(small_recording: bytes, key: SigningKey) -> None:
    data = small_recording
    spans = frame_spans(data)
    for i, (a, b) in enumerate(spans):
        r = check(data[:a] + data[b:], key)
        if i == len(spans) - 1:
            # Dropping the last frame (the seal's signature) is truncation: never VALID.
            assert r.outcome is Outcome.INCOMPLETE and r.problem is Problem.UNSIGNED_SEAL
        else:
            assert_pinned(r, i)


def test_every_duplicated_frame_is_caught(small_recording: bytes, key: SigningKey) -> None:
    data = small_recording
    spans = frame_spans(data)
    for i, (a, b) in enumerate(spans):
        r = check(data[:b] + data[a:b] + data[b:], key)
        assert_pinned(r, i + 1)


def test_every_adjacent_swap_is_caught(small_recording: bytes, key: SigningKey) -> None:
    data = small_recording
    spans = frame_spans(data)
    for i in range(len(spans) - 1):
        (a, b), (_, c) = spans[i], spans[i + 1]
        r = check(data[:a] + data[b:c] + data[a:b] + data[c:], key)
        assert_pinned(r, i)


def test_frame_from_another_session_with_same_key_is_caught(tmp_path: Path, key: SigningKey) -> None:
    # Same key, same script (so same kinds and sizes at each index), different session id.
    a = write_recording(tmp_path / "a.zsprec", key, seed=7).read_bytes()
    b = write_recording(tmp_path / "b.zsprec", key, seed=7, session_id=fixed_session_id(99)).read_bytes()
    sa, sb = frame_spans(a), frame_spans(b)
    assert len(sa) == len(sb)
    for i in range(len(sa)):
        (a0, a1), (b0, b1) = sa[i], sb[i]
        spliced = a[:a0] + b[b0:b1] + a[a1:]
        r = check(spliced, key)
        # A foreign header is self-consistent (its chain starts from its own session id), so the
        # break shows at frame 1, the first frame that chains to the real header.
        assert_pinned(r, i if i else 1)
        # Inserted rather than replaced:
        r = check(a[:a0] + b[b0:b1] + a[a0:], key)
        assert_pinned(r, i if i else 1)


def test_appended_frames_and_bytes_are_corrupt(tmp_path: Path, key: SigningKey, small_recording: bytes) -> None:
    spans = frame_spans(small_recording)
    last = small_recording[spans[-1][0] :]
    r = check(small_recording + last, key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.AFTER_SEAL
    assert r.bad_frame == len(spans)
    r = check(small_recording + b"\x00", key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.AFTER_SEAL
    # A whole other sealed recording appended (chained to nothing here) is caught too.
    r = check(small_recording + small_recording[8:], key)
    assert r.outcome is Outcome.CORRUPT


def test_untrusted_signer_is_never_valid(small_recording: bytes, other_key: SigningKey) -> None:
    r = check(small_recording, other_key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNTRUSTED_SIGNER and r.bad_frame == 0


def test_resigned_by_other_key_is_untrusted(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    # An attacker who rewrites the whole file with their own key gets a consistent recording
    # that is signed by a key nobody trusts.
    forged = write_recording(tmp_path / "f.zsprec", other_key).read_bytes()
    r = check(forged, key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNTRUSTED_SIGNER


def test_unknown_version_is_corrupt(small_recording: bytes, key: SigningKey) -> None:
    r = check(small_recording[:7] + b"\x02" + small_recording[8:], key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNKNOWN_VERSION and r.bad_frame is None


def test_unsealed_recording_is_incomplete_with_signed_prefix(tmp_path: Path, key: SigningKey) -> None:
    data = write_recording(tmp_path / "u.zsprec", key, frames=30, seal=False).read_bytes()
    r = check(data, key)
    assert r.outcome is Outcome.INCOMPLETE and r.problem is Problem.NO_SEAL
    assert r.frames == len(frame_spans(data))
    assert 0 < r.signed_frames <= r.frames
    assert r.last_checkpoint_wall_us is not None


# --- randomized campaigns (hypothesis) --------------------------------------------------------

recordings = st.integers(min_value=0, max_value=10_000)
campaign = settings(
    max_examples=400 if LONG else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hyp")


def _rec(rec_dir: Path, key: SigningKey, seed: int, frames: int) -> bytes:
    path = rec_dir / f"{seed}-{frames}.zsprec"
    if not path.exists():
        write_recording(path, key, seed=seed, frames=frames)
    return path.read_bytes()


@campaign
@given(seed=recordings, frames=st.integers(1, 120), data=st.data())
def test_random_flip(rec_dir: Path, key: SigningKey, seed: int, frames: int, data: st.DataObject) -> None:
    rec = _rec(rec_dir, key, seed, frames)
    pos = data.draw(st.integers(0, len(rec) - 1))
    mask = data.draw(st.integers(1, 255))
    mutated = bytearray(rec)
    mutated[pos] ^= mask
    assert_pinned(check(bytes(mutated), key), frame_at(frame_spans(rec), pos))


@campaign
@given(seed=recordings, frames=st.integers(1, 120), data=st.data())
def test_random_drop_dup_swap(rec_dir: Path, key: SigningKey, seed: int, frames: int, data: st.DataObject) -> None:
    rec = _rec(rec_dir, key, seed, frames)
    spans = frame_spans(rec)
    i = data.draw(st.integers(0, len(spans) - 2))
    j = data.draw(st.integers(i + 1, len(spans) - 1))
    (a, b), (c, d) = spans[i], spans[j]
    op = data.draw(st.sampled_from(["drop", "dup", "swap", "move"]))
    if op == "drop":
        mutated, bad = rec[:a] + rec[b:], i
    elif op == "dup":
        mutated, bad = rec[:d] + rec[a:b] + rec[d:], j + 1
    elif op == "swap":
        mutated, bad = rec[:a] + rec[c:d] + rec[b:c] + rec[a:b] + rec[d:], i
    else:  # move frame j to position i
        mutated, bad = rec[:a] + rec[c:d] + rec[a:c] + rec[d:], i
    assert_pinned(check(mutated, key), bad)


@campaign
@given(seed=recordings, frames=st.integers(1, 120), data=st.data())
def test_random_truncation(rec_dir: Path, key: SigningKey, seed: int, frames: int, data: st.DataObject) -> None:
    rec = _rec(rec_dir, key, seed, frames)
    cut = data.draw(st.integers(0, len(rec) - 1))
    r = check(rec[:cut], key)
    assert r.outcome is Outcome.INCOMPLETE
    assert r.frames == sum(1 for _, end in frame_spans(rec) if end <= cut)


# --- a forger without the key: recomputes every head, cannot sign -----------------------------


def _forge(data: bytes, edit) -> bytes:
    import msgpack

    bodies = [msgpack.unpackb(b) for b in split_frames(data)]
    sid = uuid.UUID(bodies[0][3]["session_id"])
    bodies = edit(bodies)
    return rechain([msgpack.packb(b) for b in bodies], sid)


def _kinds(data: bytes) -> list[int]:
    import msgpack

    return [msgpack.unpackb(b)[0] for b in split_frames(data)]


def test_rechained_identity_is_verified_as_such(small_recording: bytes, key: SigningKey) -> None:
    assert check(_forge(small_recording, lambda b: b), key).outcome is Outcome.VALID


def test_edited_output_with_recomputed_chain_fails_the_next_signature(small_recording: bytes, key: SigningKey) -> None:
    kinds = _kinds(small_recording)
    k = kinds.index(1)  # first output frame
    nxt = kinds.index(5, k)  # the checkpoint after it

    def edit(bodies):
        bodies[k][3] = b"rm -rf / # innocent"
        return bodies

    r = check(_forge(small_recording, edit), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.BAD_SIGNATURE and r.bad_frame == nxt
    assert r.signed_frames <= k  # nothing from the edited frame on is claimed as signed


def test_stripped_checkpoints_are_missing_signatures(tmp_path: Path, key: SigningKey) -> None:
    data = write_recording(tmp_path / "r.zsprec", key, frames=60, checkpoint_frames=8).read_bytes()

    def strip(bodies):
        kept = [b for b in bodies[:-1] if b[0] != 5] + [bodies[-1]]
        for i, b in enumerate(kept):
            b[1] = i
        return kept

    r = check(_forge(data, strip), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.MISSING_SIGNATURE
    # Pinned to the first frame over the limit (header included), whatever its kind.
    assert r.bad_frame == 8


def test_time_going_back_is_corrupt(small_recording: bytes, key: SigningKey) -> None:
    kinds = _kinds(small_recording)
    k = kinds.index(1, 3)

    def edit(bodies):
        bodies[k][2] = 0
        bodies[k - 1][2] = max(bodies[k - 1][2], 1)
        return bodies

    r = check(_forge(small_recording, edit), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.TIME_BACKWARDS and r.bad_frame == k


def test_seal_that_lies_about_counts_is_corrupt(small_recording: bytes, key: SigningKey) -> None:
    def edit(bodies):
        bodies[-2][3]["output_bytes"] -= 1
        return bodies

    r = check(_forge(small_recording, edit), key)
    assert r.problem is Problem.SEAL_MISMATCH and r.bad_frame == len(_kinds(small_recording)) - 2


def test_header_of_an_unknown_version_is_refused(small_recording: bytes, key: SigningKey) -> None:
    def edit(bodies):
        bodies[0][3]["version"] = 2
        return bodies

    r = check(_forge(small_recording, edit), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNKNOWN_VERSION and r.bad_frame == 0


def test_swapped_signer_key_in_header_is_caught(small_recording: bytes, key: SigningKey,
                                               other_key: SigningKey) -> None:
    def edit(bodies):
        bodies[0][3]["signer"] = other_key.public.openssh
        bodies[0][3]["signer_fingerprint"] = other_key.public.fingerprint
        return bodies

    # Trusting both keys: the header now names the other key, whose signatures are absent.
    r = verify(io.BytesIO(_forge(small_recording, edit)), [key.public, other_key.public])
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.BAD_SIGNATURE and r.bad_frame == 1


def test_not_a_header_first_and_second_header(small_recording: bytes, key: SigningKey) -> None:
    r = check(_forge(small_recording, lambda b: [[1, 0, 0, b"x"], *b[1:]]), key)
    assert r.problem is Problem.NO_HEADER and r.bad_frame == 0

    def second(bodies):
        bodies[2] = [0, 2, bodies[2][2], bodies[0][3]]
        return bodies

    r = check(_forge(small_recording, second), key)
    assert r.problem is Problem.MALFORMED and r.bad_frame == 2


# --- checkpoint signatures, the seal's own included -------------------------------------------


def _checkpoints(data: bytes) -> list[int]:
    return [i for i, k in enumerate(_kinds(data)) if k == 5]


def test_fixture_holds_every_frame_kind(tmp_path: Path, key: SigningKey) -> None:
    kinds = _kinds(_every_kind(tmp_path / "k.zsprec", key))
    assert set(kinds) == {0, 1, 2, 3, 4, 5, 6}
    assert kinds[-2:] == [6, 5]


def _resign(bodies, i: int, sid: uuid.UUID, signer: SigningKey, data: bytes, *, wall_delta: int = 0) -> None:
    """Replace checkpoint ``i``'s signature with one by ``signer`` over the true head of frame i-1."""
    heads = [data[b - 32 : b] for _, b in frame_spans(data)]
    ck = bodies[i][3]
    ck["wall_us"] += wall_delta
    ck["sig"] = signer.sign(checkpoint_message(sid, i - 1, heads[i - 1], ck["wall_us"]))


def test_every_forged_checkpoint_signature_is_corrupt(small_recording: bytes, key: SigningKey,
                                                      other_key: SigningKey) -> None:
    """A forger who recomputes every head but cannot sign: each checkpoint, the seal's last, is checked."""
    data = small_recording
    sid = uuid.UUID(msgpack.unpackb(split_frames(data)[0])[3]["session_id"])
    ckpts = _checkpoints(data)
    assert ckpts[-1] == len(frame_spans(data)) - 1  # the seal's checkpoint is among them

    for i in ckpts:
        def flip(bodies, i=i):
            sig = bytearray(bodies[i][3]["sig"])
            sig[0] ^= 1
            bodies[i][3]["sig"] = bytes(sig)
            return bodies

        def other(bodies, i=i):
            _resign(bodies, i, sid, other_key, data)
            return bodies

        def moved_time(bodies, i=i):
            # The signature is genuine but the signed wall time was changed.
            bodies[i][3]["wall_us"] += 1
            return bodies

        def reused(bodies, i=i):
            # A genuine signature of another checkpoint of the same recording.
            j = ckpts[0] if i != ckpts[0] else ckpts[1]
            bodies[i][3]["sig"] = bodies[j][3]["sig"]
            return bodies

        for edit in (flip, other, moved_time, reused):
            r = check(_forge(data, edit), key)
            assert r.outcome is Outcome.CORRUPT, (i, edit.__name__, r)
            assert r.problem is Problem.BAD_SIGNATURE and r.bad_frame == i, (i, edit.__name__, r)
            assert r.signed_frames < i

        # Trusting the forger's key as well does not help: the header names the real signer.
        r = verify(io.BytesIO(_forge(data, other)), [key.public, other_key.public])
        assert r.outcome is Outcome.CORRUPT and r.bad_frame == i


def test_seal_checkpoint_resigned_correctly_is_valid(small_recording: bytes, key: SigningKey) -> None:
    """The forgery tests above fail for the signature, not for the re-encoding: a true re-signing passes."""
    data = small_recording
    sid = uuid.UUID(msgpack.unpackb(split_frames(data)[0])[3]["session_id"])
    last = _checkpoints(data)[-1]

    def resign(bodies):
        _resign(bodies, last, sid, key, data, wall_delta=1)
        return bodies

    assert check(_forge(data, resign), key).outcome is Outcome.VALID


def test_seal_checkpoint_naming_another_frame_is_corrupt(small_recording: bytes, key: SigningKey) -> None:
    last = _checkpoints(small_recording)[-1]

    def edit(bodies):
        bodies[last][3]["index"] -= 1
        return bodies

    r = check(_forge(small_recording, edit), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.MALFORMED and r.bad_frame == last
