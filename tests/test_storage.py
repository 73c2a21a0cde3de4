"""The recording storage interface: by session id, never a path, never a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import LocalDirectory, Outcome, SourceError, verify


def _record(path: Path, key: SigningKey) -> str:
    meta = SessionMeta(user="u", target="t", login="l", term="xterm", cols=80, rows=24)
    w = RecordingWriter(FileSink(path), key, meta)
    w.output(b"hello\r\n")
    return str(w.close(0, "exit").session_id)


def test_local_directory_lists_opens_and_refuses_what_is_not_a_recording(tmp_path: Path) -> None:
    key = SigningKey.generate()
    root = tmp_path / "recordings"
    root.mkdir()
    sid = _record(root / "x.tmp", key)
    os.rename(root / "x.tmp", root / f"{sid}.zsprec")
    (root / "notes.txt").write_text("not a recording")
    (root / "dir.zsprec").mkdir()
    outside = tmp_path / "elsewhere.zsprec"
    outside.write_bytes(b"secret")
    (root / "planted.zsprec").symlink_to(outside)

    store = LocalDirectory(root)
    listed = {r.name: r for r in store.list()}
    assert list(listed) == [sid]  # not the text file, the directory or the symlink
    assert listed[sid].size == (root / f"{sid}.zsprec").stat().st_size
    assert store.stat(sid) == listed[sid] and store.stat("planted") is None and store.stat("nope") is None
    with store.open(sid) as f:
        assert verify(f, [key.public]).outcome is Outcome.VALID
    for bad in ("../elsewhere", "a/b", "", "..", "/etc/passwd", "x" * 200):
        with pytest.raises(SourceError):
            store.open(bad)
    with pytest.raises(SourceError):
        store.open("missing")
    assert list(LocalDirectory(tmp_path / "absent").list()) == []
