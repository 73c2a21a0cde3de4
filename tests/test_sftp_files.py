"""Recorded file transfers as first-class replay values (issue 13): ``replay.files`` over real
recordings made by stock ``sftp``/``scp`` through the bastion (tests/test_sftp.py's fixtures),
``zsp play --files``, ``zsp files --json/--extract`` and ``zsp search`` on a transferred path."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, load_trusted_keys
from replay import ContentMismatch, TransferredFile, files, only_signed, verify_frames
from tests.bastion_env import Env
from tests.test_sftp import scp, sftp, sftp_env  # noqa: F401  (the fixture)

HOSTILE = "evil\x1b[2J\x1b]0;owned\x07\u202e.txt"


def zsp(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zsp_tui", *args, "--data", str(env.data.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(env: Env, path: str, *, content: bool = True) -> list[TransferredFile]:
    with open(path, "rb") as f:
        trusted = load_trusted_keys(env.data.allowed_signers_path)
        return files(only_signed(verify_frames(f, trusted, source=path)), content=content)


@pytest.fixture
def session(sftp_env: Env, tmp_path: Path) -> tuple[Env, str, dict[str, bytes], Path]:  # noqa: F811
    """One SFTP session: an upload of random bytes, a file with a hostile name, report.csv, and
    the first file downloaded back."""
    env = sftp_env
    env.grant("srv")
    remote = tmp_path / "remote"
    remote.mkdir()
    data = {"blob.bin": os.urandom(70_000) + b"end\n", HOSTILE: b"x\n", "report.csv": b"a,b\n1,2\n"}
    for i, body in enumerate(data.values()):
        (tmp_path / f"src{i}").write_bytes(body)
    batch = "".join(f'put {tmp_path}/src{i} "{remote}/{name}"\n' for i, name in enumerate(data))
    batch += f"get {remote}/blob.bin {tmp_path}/back.bin\n"
    p = sftp(env, batch)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.bin").read_bytes() == data["blob.bin"]
    s = env.svc.sessions()[-1]
    return env, s.path, data, remote


def test_files_lists_each_transfer_with_its_hash_and_exact_content(session) -> None:
    env, path, data, remote = session
    found = listed(env, path)
    assert [(f.index, f.path, f.direction) for f in found] == [
        (0, f"{remote}/blob.bin", "upload"),
        (1, f"{remote}/{HOSTILE}", "upload"),
        (2, f"{remote}/report.csv", "upload"),
        (3, f"{remote}/blob.bin", "download"),
    ]
    bodies = [data["blob.bin"], data[HOSTILE], data["report.csv"], data["blob.bin"]]
    for f, body in zip(found, bodies, strict=True):
        assert f.size == len(body) and f.sha256 == hashlib.sha256(body).hexdigest()
        assert f.content_complete and f.finished and f.content_kept == len(body)
        assert f.content() == body
    assert found[0].t_us <= found[1].t_us <= found[3].t_us and found[0].frame < found[3].frame
    bare = listed(env, path, content=False)
    assert bare == found and all(not f.chunks for f in bare)  # chunks are not part of the value
    with pytest.raises(ValueError):
        bare[0].content()
    # Reassembly is checked: one changed byte, one lost chunk, and the content is refused.
    blob = found[0]
    (off, first), *rest = blob.chunks
    with pytest.raises(ContentMismatch):
        replace(blob, chunks=((off, b"X" + first[1:]), *rest)).content()
    with pytest.raises(ContentMismatch):
        replace(blob, chunks=tuple(rest)).content()


def test_scp_transfers_are_listed(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    env.grant("srv")
    body = b"line\n" * 3000
    (tmp_path / "app.conf").write_bytes(body)
    p = scp(env, str(tmp_path / "app.conf"), f"srv@127.0.0.1:{tmp_path}/copied.conf")
    assert p.returncode == 0, p.stderr
    (f,) = listed(env, env.svc.sessions()[-1].path)
    assert (f.path, f.direction, f.sha256) == (f"{tmp_path}/copied.conf", "upload", hashlib.sha256(body).hexdigest())
    assert f.content() == body


def test_play_and_files_show_the_list_escaped_and_json_exact(session, tmp_path: Path) -> None:
    env, path, data, remote = session
    for argv in (["play", path, "--files"], ["play", path, "--instant"], ["files", path]):
        p = zsp(env, *argv)
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "\u202e" not in p.stdout
        assert "evil\\x1b[2J" in p.stdout and f"{remote}/report.csv" in p.stdout
        assert hashlib.sha256(data["report.csv"]).hexdigest() in p.stdout
        assert "upload" in p.stdout and "download" in p.stdout
    p = zsp(env, "files", path, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [x["path"] for x in out][:3] == [f"{remote}/blob.bin", f"{remote}/{HOSTILE}", f"{remote}/report.csv"]
    assert out[1]["sha256"] == hashlib.sha256(b"x\n").hexdigest() and out[3]["direction"] == "download"


def test_extract_writes_complete_files_under_safe_names(session, tmp_path: Path) -> None:
    env, path, data, _remote = session
    dest = tmp_path / "out"
    p = zsp(env, "files", path, "--extract", str(dest), "--json")
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(dest))
    assert names == ["000-blob.bin", "001-evil_2J_0_owned_.txt", "002-report.csv", "003-blob.bin"]
    assert (dest / "000-blob.bin").read_bytes() == data["blob.bin"]
    assert (dest / "002-report.csv").read_bytes() == data["report.csv"]
    assert [x["extracted"] for x in json.loads(p.stdout)] == names
    # Never overwrites: a second extraction into the same directory writes nothing and says so.
    p = zsp(env, "files", path, "--extract", str(dest))
    assert p.returncode == 1 and "cannot create" in p.stderr


def test_extract_refuses_content_that_does_not_match_its_hash(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    """A signed recording (a faulty bastion: the signature is good, the content is not what the
    recorded sha256 says): --extract writes nothing of it and exits 1."""
    env = sftp_env
    rec = tmp_path / "faulty.zsprec"
    w = RecordingWriter(
        FileSink(rec, sync_dir=False),
        env.data.signing_key(),
        SessionMeta(user="alice", target="srv", login="srv", grant_id=None, term="", cols=80, rows=24, host="b"),
    )
    good, bad = b"the real content\n", b"other content\n"
    for name, body in (("/tmp/good.txt", good), ("/tmp/../../etc/passwd", bad)):
        w.event("sftp.data", "", path=name, direction="upload", offset=0, data=base64.b64encode(body).decode())
        w.event(
            "sftp.file",
            "",
            path=name,
            direction="upload",
            size=len(good),
            sha256=hashlib.sha256(good).hexdigest(),
            content_kept=len(body),
            content_complete=True,
        )
    w.close(0, "exit")
    dest = tmp_path / "out"
    p = zsp(env, "files", str(rec), "--extract", str(dest))
    assert p.returncode == 1 and "refused" in p.stderr
    assert os.listdir(dest) == ["000-good.txt"] and (dest / "000-good.txt").read_bytes() == good
    assert not (tmp_path / "etc").exists()


def test_search_finds_a_transferred_path(session) -> None:
    """The bastion indexes the session itself once it ends (a child process, so it lands a moment
    after the client returns): wait for it, within a liveness bound, without running ``zsp index``."""
    env, path, _data, remote = session
    deadline = time.monotonic() + 60
    while True:
        p = zsp(env, "search", "--json", "report.csv")
        if (p.returncode == 0 and json.loads(p.stdout)) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    (f,) = [f for f in listed(env, path, content=False) if f.path.endswith("report.csv")]
    sid = env.svc.sessions()[-1].id
    assert [(h["session_id"], h["frame"], h["t"]) for h in hits] == [(sid, f.frame, f.t_us / 1e6)]
    assert f"{remote}/report.csv" in hits[0]["text"] and "[sftp upload]" in hits[0]["text"]
    p = zsp(env, "search", "--json", "evil", "owned")
    assert p.returncode == 0, p.stderr
    (hit,) = json.loads(p.stdout)
    assert "\x1b" not in hit["text"] and "\\x1b" in hit["text"]


async def test_the_replay_panel_lists_the_files_and_enter_jumps_there(session, tmp_path: Path) -> None:
    from textual.widgets import OptionList

    from tests.bastion_env import keygen
    from tests.test_tui_replay import _open, _settle, _until
    from zsp_tui.access import Actor
    from zsp_tui.models import Role
    from zsp_tui.tui import ReviewApp, ReviewContext
    from zsp_tui.tui.widgets.replay_panel import ReplayPanel

    env, path, _data, remote = session
    key = keygen(tmp_path / "carol_ed25519", "carol")
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.REVIEWER}), [Path(f"{key}.pub").read_text()])
    found = listed(env, path, content=False)
    app = ReviewApp(ReviewContext.open(env.data, "carol", "console"))
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open(pilot, app, env.svc.sessions()[-1].id)
        panel = screen.query_one(ReplayPanel)
        flist = panel.query_one("#files", OptionList)
        await _until(pilot, lambda: flist.option_count == len(found))
        assert flist.display
        texts = [str(flist.get_option_at_index(i).prompt) for i in range(flist.option_count)]
        assert f"{remote}/report.csv" in texts[2] and "↑" in texts[2] and "↓" in texts[3]
        assert "\x1b" not in texts[1] and "\u202e" not in texts[1] and "\\x1b" in texts[1]
        await pilot.press("home")
        await _settle(pilot, screen)
        flist.focus()
        flist.highlighted = 3
        await pilot.press("enter")
        await _settle(pilot, screen)
        pb = screen.playback
        assert pb is not None and pb.paused and abs(pb.pos_us - found[3].t_us) < 1_000_000
        # The timeline marks the files, not every SFTP packet.
        labels = [m.label for m in screen.overview.markers]
        assert not [x for x in labels if x.startswith(("sftp.op", "sftp.reply", "sftp.data"))]
        assert sum(x.startswith("sftp.file") for x in labels) == 4


def test_a_path_that_is_not_utf8_is_exact_in_json_and_escaped_on_the_terminal(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    rec = tmp_path / "raw.zsprec"
    w = RecordingWriter(
        FileSink(rec, sync_dir=False),
        env.data.signing_key(),
        SessionMeta(user="alice", target="srv", login="srv", grant_id=None, term="", cols=80, rows=24, host="b"),
    )
    raw = b"/tmp/caf\xe9\x1b[31m.txt"  # as the bastion writes it: text with escapes, and the exact bytes
    text = raw.decode("utf-8", "backslashreplace")
    body = b"bytes\n"
    fields = {"path": text, "path_b64": base64.b64encode(raw).decode()}
    w.event("sftp.data", "", direction="download", offset=0, data=base64.b64encode(body).decode(), **fields)
    sha = hashlib.sha256(body).hexdigest()
    w.event("sftp.file", "", direction="download", size=6, sha256=sha, content_kept=6, content_complete=True, **fields)
    w.close(0, "exit")
    p = zsp(env, "files", str(rec), "--json")
    assert p.returncode == 0, p.stderr
    (x,) = json.loads(p.stdout)
    assert base64.b64decode(x["path_b64"]) == raw and x["direction"] == "download"
    p = zsp(env, "play", str(rec), "--files")
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout and "\\x1b[31m" in p.stdout and "caf" in p.stdout
    dest = tmp_path / "out"
    p = zsp(env, "files", str(rec), "--extract", str(dest))
    assert p.returncode == 0, p.stderr
    assert os.listdir(dest) == ["000-caf_xe9_31m.txt"] and (dest / "000-caf_xe9_31m.txt").read_bytes() == body


def test_the_text_export_lists_the_files_escaped(session, tmp_path: Path) -> None:
    env, _path, data, remote = session
    out = tmp_path / "t.txt"
    p = zsp(env, "export", env.svc.sessions()[-1].id, "--format", "text", "-o", str(out), "--as", "alice")
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    section = text.split("Files transferred\n-----------------\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(section) == 4 and "\x1b" not in text and "\u202e" not in text
    assert section[2].endswith(f"{remote}/report.csv") and "upload 8 bytes" in section[2]
    assert hashlib.sha256(data["report.csv"]).hexdigest() in section[2] and "download" in section[3]
    assert "evil\\x1b[2J" in section[1]


def test_the_asciicast_marks_each_file_with_its_path_escaped(session, tmp_path: Path) -> None:
    env, _path, _data, remote = session
    out = tmp_path / "t.cast"
    p = zsp(env, "export", env.svc.sessions()[-1].id, "--format", "asciicast", "-o", str(out), "--as", "alice")
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    marks = [e[2] for e in events if e[1] == "m" and e[2].startswith("sftp.file:")]
    assert len(marks) == 4 and marks[2].endswith(f": {remote}/report.csv") and "upload 8 bytes" in marks[2]
    assert "\x1b" not in marks[1] and "evil\\x1b[2J" in marks[1]
    # The per-packet events stay in the recording but are no markers (a large transfer has thousands).
    assert not [e for e in events if e[1] == "m" and e[2].startswith(("sftp.op", "sftp.reply", "sftp.data"))]
