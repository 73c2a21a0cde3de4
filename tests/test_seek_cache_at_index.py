"""Search indexing also caches the seek index: a session the bastion made searchable opens at any
hit at once (``DATA/cache/seek/<id>.seek``), though nobody ever played it; the cache is the one
``load_index`` accepts for exactly that recording, and a changed recording does not use it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from recorder import load_trusted_keys
from replay import Seeker, build_index, load_index, verify
from tests.bastion_env import Env, make_env
from tests.helpers import read_until
from tests.test_search_bastion import poll, sealed, search


def _shell_session(env: Env) -> None:
    """A shell through the bastion: ~250 KB of numbers (several keyframes), colour, a resize,
    the alternate screen entered and left, marker words to search for."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        buf = read_until(chan, b"", b"$ ")
        chan.send(b"echo early-marker-$((2*3)); seq 1 40000; echo middle-marker-$((3*3))\r")
        buf = read_until(chan, buf, b"middle-marker-9", timeout=60)
        chan.resize_pty(width=100, height=30)
        time.sleep(0.3)
        chan.send(b"printf '\\033[1;31mred-marker\\033[0m\\n\\033[?1049hALT-SCREEN\\033[?1049l'; seq 50000 60000\r")
        buf = read_until(chan, buf, b"60000", timeout=60)
        chan.send(b"echo late-marker-$((4*4))\r")
        buf = read_until(chan, buf, b"late-marker-16")
        time.sleep(0.2)
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()


def _wait_ended(env: Env, n: int) -> None:
    end = time.monotonic() + 60  # a liveness bound, for a loaded machine
    while time.monotonic() < end:
        sessions = env.svc.sessions()
        if len(sessions) >= n and all(s.ended_at for s in sessions):
            return
        time.sleep(0.1)
    raise AssertionError("sessions did not end")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A bastion that recorded a shell session and an exec session, both searchable: nothing else
    ever opened them (no player, no review app)."""
    env = make_env(tmp_path_factory.mktemp("seekcache"))
    env.start()
    try:
        env.grant()
        _shell_session(env)
        p = env.ssh("alice", "local", "echo exec-marker; seq 1 3000")
        assert p.returncode == 0, p.stderr
        _wait_ended(env, 2)
        # Sealed, not live, hits: the seek cache is written by the indexing of the sealed session
        # (a child process of the bastion, a moment after the session's end).
        assert poll(env, "late-marker-16", until=sealed), "the shell session never became searchable"
        assert poll(env, "exec-marker", until=sealed), "the exec session never became searchable"
        yield env
    finally:
        env.stop()


def _trusted(env: Env) -> list:
    return load_trusted_keys(env.data.allowed_signers_path)


def _cached(env: Env, session_id: str) -> Path:
    return env.data.root / "cache" / "seek" / f"{session_id}.seek"


def test_a_searchable_session_is_seek_cached_without_being_played(indexed: Env) -> None:
    env = indexed
    for s in env.svc.sessions():
        path = _cached(env, s.id)
        assert path.is_file(), f"no seek cache for {s.id}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        index = load_index(path)
        assert index is not None, "load_index refuses the cache indexing wrote"
        report = verify(s.path, _trusted(env))
        assert report.valid
        assert index.matches(report, os.stat(s.path).st_size)
        assert index.shown == report.signed_frames
    assert not list((env.data.root / "cache" / "seek").glob(".seek-*")), "a temporary file was left behind"
    from zsp_tui.indexing import seek_cache

    assert seek_cache(env.data, "x") == env.data.root / "cache" / "seek" / "x.seek"  # where the players look


def _screens(seeker: Seeker, times: list[int]) -> list:
    return [seeker.screen_at(t) for t in times]


def test_the_cache_shows_the_same_screens_as_an_index_built_fresh(indexed: Env) -> None:
    env = indexed
    trusted = _trusted(env)
    for s in env.svc.sessions():
        report = verify(s.path, trusted)
        cached = load_index(_cached(env, s.id))
        assert cached is not None
        fresh = build_index(s.path, trusted, report)
        # The same keyframes, at the same places, for the same recording.
        assert [(k.frame, k.t_us, k.offset, k.head) for k in cached.keyframes] == [
            (k.frame, k.t_us, k.offset, k.head) for k in fresh.keyframes
        ]
        assert (cached.shown, cached.duration_us, cached.onlcr) == (fresh.shown, fresh.duration_us, fresh.onlcr)
        hits = search(env, "marker")
        times = sorted({0, cached.duration_us // 3, cached.duration_us // 2, cached.duration_us}
                       | {k.t_us for k in fresh.keyframes}
                       | {k.t_us + 1 for k in fresh.keyframes}
                       | {round(h["t"] * 1e6) for h in hits if h["session_id"] == s.id})
        assert len(times) >= 6
        a, b = Seeker(s.path, cached), Seeker(s.path, fresh)
        got, want = _screens(a, times), _screens(b, times)
        assert got == want
        frames = sorted({0, report.signed_frames // 2, report.signed_frames - 1} | {k.frame for k in fresh.keyframes})
        assert [a.frame_at(f) for f in frames] == [b.frame_at(f) for f in frames]
    shell = env.svc.sessions()[0]
    index = load_index(_cached(env, shell.id))
    assert index is not None and len(index.keyframes) >= 6, "the long session has several keyframes"
    hit = next(h for h in search(env, "middle-marker-9") if h["kind"] == "output")
    screen, _ = Seeker(shell.path, index).screen_at(round(hit["t"] * 1e6))
    assert any("middle-marker-9" in line for line in screen.lines)


def test_a_recording_changed_after_indexing_does_not_use_the_cache(indexed: Env, tmp_path: Path) -> None:
    env = indexed
    trusted = _trusted(env)
    s = env.svc.sessions()[0]
    cache = _cached(env, s.id)
    original = load_index(cache)
    assert original is not None
    copy = tmp_path / "copy.zsprec"
    shutil.copyfile(s.path, copy)
    assert original.matches(verify(copy, trusted), copy.stat().st_size)  # a byte-identical copy may use it
    # One byte of output changed in place (same size): the verifier's head and counts differ.
    raw = bytearray(copy.read_bytes())
    at = raw.find(b"middle-marker-9")
    assert at > 0
    raw[at] ^= 0x01
    copy.write_bytes(raw)
    changed = verify(copy, trusted)
    assert not changed.valid
    assert not original.matches(changed, copy.stat().st_size)
    # Appended to (size differs): not used either.
    appended = tmp_path / "appended.zsprec"
    appended.write_bytes(Path(s.path).read_bytes() + b"\x00" * 7)
    assert not original.matches(verify(appended, trusted), appended.stat().st_size)
    # What the players do with it: Seeker.open rebuilds from the changed file, never the cache's keyframes.
    planted = tmp_path / "planted.seek"
    shutil.copyfile(cache, planted)
    os.chmod(planted, 0o600)
    seeker = Seeker.open(copy, trusted, changed, cache=planted)
    assert seeker.index is not original
    assert seeker.index.shown == changed.signed_frames < original.shown
    assert load_index(planted).size == copy.stat().st_size  # rewritten for the file as it is now


def _zsp(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args, "--data", str(env.data.root)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_zsp_index_writes_the_seek_caches(indexed: Env, tmp_path: Path) -> None:
    env = indexed
    shutil.rmtree(env.data.root / "cache" / "seek")
    p = _zsp(env, "index", "--rebuild")
    assert p.returncode == 0, p.stderr
    assert "2 recording(s) indexed" in p.stderr
    trusted = _trusted(env)
    for s in env.svc.sessions():
        index = load_index(_cached(env, s.id))
        assert index is not None, f"zsp index did not cache {s.id}"
        assert index.matches(verify(s.path, trusted), os.stat(s.path).st_size)


def test_a_cache_dir_that_cannot_be_written_leaves_search_indexing_working(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    (env.data.root / "cache").write_text("not a directory\n")  # cache/seek cannot be made
    env.start()
    try:
        env.grant()
        p = env.ssh("alice", "local", "echo searchable-anyway-$((5*5))")
        assert p.returncode == 0 and "searchable-anyway-25" in p.stdout
        _wait_ended(env, 1)
        assert poll(env, "searchable-anyway-25", until=sealed), "search indexing failed with the cache"
        q = env.ssh("alice", "local", "echo goes-on-$((6*7))")  # the bastion goes on
        assert q.returncode == 0 and "goes-on-42" in q.stdout
        _wait_ended(env, 2)
        # Indexed before the bastion stops: a stop that cut its indexing short would say "could not index".
        assert poll(env, "goes-on-42", until=sealed), "search indexing failed with the cache"
    finally:
        env.stop()
    out = "".join(env.output)
    assert "could not cache the seek index" in out, out
    assert "could not index" not in out, out
    q = _zsp(env, "index", "--rebuild")
    assert q.returncode == 0, q.stderr
    assert "could not cache the seek index" in q.stderr and "2 recording(s) indexed" in q.stderr
    assert search(env, "searchable-anyway-25")
    assert (env.data.root / "cache").read_text() == "not a directory\n"


# --- the one pass itself, on recordings written by the recorder ------------------------------------


def _index_with_keyframes(tmp_path: Path, path: Path, key) -> tuple[list, object]:
    from replay import SqliteSearchIndex, index_recording

    made: list = []
    index = SqliteSearchIndex(tmp_path / f"{path.stem}.db")
    try:
        stored = index_recording(index, path, [key.public], keyframes=made.append)
    finally:
        index.close()
    return made, stored


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_output_keyframes_equal_a_fresh_build(tmp_path: Path, key, seed: int) -> None:
    """Random bytes (escape sequences, wide and broken UTF-8, CRs typed mid-line), resizes: the
    scanner feeds output in pieces while commands wait for their echo; the keyframes it makes must
    still show what a player's own emulation shows."""
    from tests.helpers import write_recording

    path = write_recording(tmp_path / f"r{seed}.zsprec", key, seed=seed, frames=5000, checkpoint_frames=64)
    made, stored = _index_with_keyframes(tmp_path, path, key)
    report = verify(path, [key.public])
    assert stored.outcome == "VALID" and len(made) == 1
    cached = made[0]
    assert cached.matches(report, path.stat().st_size)
    fresh = build_index(path, [key.public], report)
    assert len(fresh.keyframes) >= 3
    assert [(k.frame, k.t_us, k.offset, k.head) for k in cached.keyframes] == [
        (k.frame, k.t_us, k.offset, k.head) for k in fresh.keyframes
    ]
    a, b = Seeker(path, cached), Seeker(path, fresh)
    frames = sorted({k.frame for k in fresh.keyframes} | {k.frame + 1 for k in fresh.keyframes} | {report.frames // 2})
    assert [a.frame_at(f) for f in frames] == [b.frame_at(f) for f in frames]


def test_a_zero_size_resize_makes_no_seek_index_but_the_rows_stand(tmp_path: Path, key) -> None:
    """The scanner takes ``resize 0x30`` as 80x30, a player ignores it: the scanner's terminal no
    longer shows what a player would, so no keyframe is taken from it (no cache; replay builds one)."""
    from tests.search_helpers import Script

    s = Script(tmp_path / "z.zsprec", key, cols=100, rows=30)
    s.at(1).out(b"$ ").key(b"echo before-resize\r").out(b"echo before-resize\r\nbefore-resize\r\n$ ")
    s.w.resize(0, 30)
    s.at(2).out(b"x" * 150 + b"\r\nafter-resize\r\n$ ")
    s.at(3).out(b"".join(b"line %d of what follows\r\n" % i for i in range(3000)))  # keyframes fall due
    path = s.close()
    made, stored = _index_with_keyframes(tmp_path, path, key)
    assert made == []
    assert stored.outcome == "VALID" and stored.rows > 0
    fresh = build_index(path, [key.public], verify(path, [key.public]))
    assert len(fresh.keyframes) >= 2  # one after the resize, which a scanner keyframe would get wrong
    assert Seeker(path, fresh).screen_at(fresh.duration_us)[0].cols == 100  # what a player shows
