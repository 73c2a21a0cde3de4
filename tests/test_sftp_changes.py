"""File operations that change the target without moving content (issue 13: "records every
operation (open, read, write, rename, remove, mkdir, stat...)" and shows them to reviewers):
``replay.file_changes``/``file_ops`` over real recordings made by stock ``sftp`` through the
bastion to a real sshd, ``zsp files`` (and ``--ops``, ``--json``), ``zsp play`` and ``zsp search``."""

from __future__ import annotations

import json
from pathlib import Path

from recorder import load_trusted_keys
from replay import file_changes, file_ops, only_signed, verify_frames
from tests.bastion_env import Env
from tests.test_sftp import sftp, sftp_env  # noqa: F401  (the fixture)
from tests.test_sftp_files import HOSTILE, zsp


def _session(env: Env, tmp_path: Path) -> tuple[str, Path]:
    env.grant("srv")
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "src").write_bytes(b"payload\n")
    batch = "\n".join(
        [
            f"put {tmp_path}/src {remote}/a.txt",
            f"rename {remote}/a.txt {remote}/b.txt",
            f"chmod 600 {remote}/b.txt",
            f"mkdir {remote}/d",
            f'mkdir "{remote}/{HOSTILE}"',
            f"rmdir {remote}/d",
            f"ln -s {remote}/b.txt {remote}/link",
            f"rm {remote}/b.txt",
            f"-rm {remote}/missing.txt",  # refused by the target: recorded with its status
            "",
        ]
    )
    p = sftp(env, batch)
    assert p.returncode == 0, p.stderr
    return env.svc.sessions()[-1].path, remote


def _frames(env: Env, path: str) -> list:
    trusted = load_trusted_keys(env.data.allowed_signers_path)
    with open(path, "rb") as f:
        return list(only_signed(verify_frames(f, trusted, source=path)))


def test_changes_are_listed_with_the_targets_answer(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    path, remote = _session(env, tmp_path)
    frames = _frames(env, path)
    got = [(c.op, c.path, c.path2, c.outcome) for c in file_changes(frames)]
    assert got == [
        ("rename", f"{remote}/a.txt", f"{remote}/b.txt", "ok"),
        ("setstat", f"{remote}/b.txt", "", "ok"),
        ("mkdir", f"{remote}/d", "", "ok"),
        ("mkdir", f"{remote}/{HOSTILE}", "", "ok"),
        ("rmdir", f"{remote}/d", "", "ok"),
        # OpenSSH's sftp sends symlink's arguments as (target, link name), in that order
        ("symlink", f"{remote}/b.txt", f"{remote}/link", "ok"),
        ("remove", f"{remote}/b.txt", "", "ok"),
        ("remove", f"{remote}/missing.txt", "", "no-such-file"),
    ]
    chmod = file_changes(frames)[1]
    assert "mode=0o600" in chmod.detail
    assert (remote / "link").is_symlink() and not (remote / "b.txt").exists()
    # The whole log has the opens and stats too, never the per-chunk reads and writes.
    ops = [o.op for o in file_ops(frames)]
    assert "open" in ops and "close" in ops and "rename" in ops
    assert "read" not in ops and "write" not in ops
    frames_of = [c.frame for c in file_changes(frames)]
    assert frames_of == sorted(frames_of)


def test_files_and_play_show_changes_escaped_and_json_exact(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    _path, remote = _session(env, tmp_path)
    sid = env.svc.sessions()[-1].id
    for args in (("files", sid), ("play", sid, "--files")):
        p = zsp(env, *args)
        assert p.returncode == 0, p.stderr
        assert "other changes to files (8):" in p.stdout
        assert f"{remote}/a.txt -> {remote}/b.txt" in p.stdout
        assert "no-such-file" in p.stdout and "mode=0o600" in p.stdout
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "\u202e" not in p.stdout
        assert "\\x1b[2J" in p.stdout and "\\\\x1b" not in p.stdout  # the hostile name, escaped once
    p = zsp(env, "files", sid, "--ops", "--json")
    assert p.returncode == 0, p.stderr
    ops = json.loads(p.stdout)
    mk = [o for o in ops if o["op"] == "mkdir"]
    assert [o["path"] for o in mk] == [f"{remote}/d", f"{remote}/{HOSTILE}"]  # exact, hostile bytes and all
    assert {"op": "rename", "path": f"{remote}/a.txt", "path2": f"{remote}/b.txt", "outcome": "ok"}.items() <= next(
        o for o in ops if o["op"] == "rename"
    ).items()
    p = zsp(env, "files", sid, "--ops")
    assert p.returncode == 0 and "realpath" in p.stdout and "open" in p.stdout and "\x1b" not in p.stdout


def test_search_finds_a_renamed_and_a_removed_path(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    _path, remote = _session(env, tmp_path)
    p = zsp(env, "index")
    assert p.returncode == 0, p.stderr
    p = zsp(env, "search", "--json", "missing.txt")
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    assert any(f"[sftp remove] {remote}/missing.txt" in h["text"] for h in hits), hits
    p = zsp(env, "search", "--json", "b.txt")
    texts = [h["text"] for h in json.loads(p.stdout)]
    assert any(t == f"[sftp rename] {remote}/a.txt -> {remote}/b.txt" for t in texts), texts


async def test_the_replay_panel_lists_the_changes_with_outcomes(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    from textual.widgets import OptionList

    from tests.bastion_env import keygen
    from tests.test_tui_replay import _open, _settle, _until
    from zsp_tui.access import Actor
    from zsp_tui.models import Role
    from zsp_tui.tui import ReviewApp, ReviewContext
    from zsp_tui.tui.widgets.replay_panel import ReplayPanel

    env = sftp_env
    path, remote = _session(env, tmp_path)
    changes = file_changes(_frames(env, path))
    key = keygen(tmp_path / "carol_ed25519", "carol")
    env.svc.add_user(Actor("alice"), "carol", frozenset({Role.REVIEWER}), [Path(f"{key}.pub").read_text()])
    app = ReviewApp(ReviewContext.open(env.data, "carol", "console"))
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await _open(pilot, app, env.svc.sessions()[-1].id)
        panel = screen.query_one(ReplayPanel)
        glist = panel.query_one("#changes", OptionList)
        await _until(pilot, lambda: glist.option_count == len(changes))
        await _settle(pilot, screen)
        assert glist.display
        texts = [str(glist.get_option_at_index(i).prompt) for i in range(glist.option_count)]
        assert "rename" in texts[0] and f"{remote}/a.txt -> {remote}/b.txt" in texts[0] and "(" not in texts[0]
        assert "remove" in texts[-1] and "(no-such-file)" in texts[-1]  # the target's refusal
        assert "\x1b" not in texts[3] and "\u202e" not in texts[3] and "\\x1b[2J" in texts[3]
        assert "\\\\x1b" not in texts[3]  # escaped once, not twice
        await pilot.press("home")
        await _settle(pilot, screen)
        glist.focus()
        glist.highlighted = len(changes) - 1
        await pilot.press("enter")
        await _settle(pilot, screen)
        pb = screen.playback
        assert pb is not None and pb.paused and abs(pb.pos_us - changes[-1].t_us) < 1_000_000
        labels = [m.label for m in screen.overview.markers]
        assert sum(x.startswith("sftp rename: ") for x in labels) == 1


def test_text_and_asciicast_exports_show_the_changes_escaped(sftp_env: Env, tmp_path: Path) -> None:  # noqa: F811
    env = sftp_env
    _path, remote = _session(env, tmp_path)
    sid = env.svc.sessions()[-1].id
    out = tmp_path / "t.txt"
    p = zsp(env, "export", sid, "--format", "text", "-o", str(out), "--as", "alice")
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    section = text.split("Other changes to files\n----------------------\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(section) == 8 and "\x1b" not in text and "\u202e" not in text
    assert "rename (ok)" in section[0] and section[0].endswith(f"{remote}/a.txt -> {remote}/b.txt")
    assert "setstat mode=0o600 (ok)" in section[1]
    assert "remove (no-such-file)" in section[-1] and "evil\\x1b[2J" in section[3]
    cast = tmp_path / "t.cast"
    p = zsp(env, "export", sid, "--format", "asciicast", "-o", str(cast), "--as", "alice")
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in cast.read_text().splitlines()[1:]]
    marks = [e[2] for e in events if e[1] == "m" and e[2].startswith("sftp ")]
    assert len(marks) == 8 and marks[0] == f"sftp rename: {remote}/a.txt -> {remote}/b.txt"
    assert "\x1b" not in marks[3] and "evil\\x1b[2J" in marks[3]
