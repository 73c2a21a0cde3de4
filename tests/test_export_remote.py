"""Export without a shell on the bastion host: ``ssh zsp@BASTION export ... > FILE`` with stock
OpenSSH, and the review app's export action (``x`` on Sessions and Replay).

The bastion runs on a copy of the review data (real sessions recorded through it to a real sshd);
the exported files are checked with ``zsp verify``, never by looking at bytes alone.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tui_helpers import ReviewData
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.export import EXPORT_DIR, ExportDialog
from zsp_tui.tui.widgets.session_table import SessionTable


class Bastion:
    def __init__(self, data: ReviewData, root: Path) -> None:
        self.data = data
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zsp_tui", "serve", "--data", str(data.data.root), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening on" in line:
                self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                break
        assert self.port, "bastion did not start"
        host = Path(f"{data.data.host_key_path}.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host[0]} {host[1]}\n")

    def ssh(self, user: str, *command: str, tty: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        argv = ["ssh", "-p", str(self.port), "-i", str(self.data.keys[user]), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *(["-tt"] if tty else ["-T"]),
                "zsp@127.0.0.1", *command]
        return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def served(reviewed_template, tmp_path_factory) -> Iterator[Bastion]:
    from tests.tui_helpers import copy_reviewed

    root = tmp_path_factory.mktemp("export-remote")
    data = copy_reviewed(reviewed_template, root)
    b = Bastion(data, root)
    try:
        yield b
    finally:
        b.stop()


def zsp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True, timeout=120)


def exports(data: ReviewData) -> list:
    return [e for e in data.data.service().audit_events() if e.event == "recording.export"]


def test_a_reviewer_exports_a_bundle_through_the_bastion_and_it_verifies(served: Bastion, tmp_path: Path) -> None:
    sid = served.data.ids["shell"]
    before = len(exports(served.data))
    p = served.ssh("carol", "export", sid[:13])
    assert p.returncode == 0, p.stderr
    out = tmp_path / "evidence.tar"
    out.write_bytes(p.stdout)
    assert tarfile.is_tarfile(out)
    v = zsp("verify", str(out))
    assert v.returncode == 0, v.stdout + v.stderr
    assert "VALID" in v.stdout
    new = exports(served.data)[before:]
    assert [(e.actor, e.via, e.session_id, e.fields["format"], e.fields["file"]) for e in new] == [
        ("carol", "ssh", sid, "bundle", "stdout")
    ]
    import hashlib

    assert new[0].fields["sha256"] == hashlib.sha256(p.stdout).hexdigest()


def test_a_text_transcript_through_the_bastion(served: Bastion) -> None:
    p = served.ssh("carol", "export", served.data.ids["exec"], "--format", "text")
    assert p.returncode == 0, p.stderr
    assert b"hello-exec" in p.stdout and b"\x1b" not in p.stdout


def test_an_operator_may_not_export_and_nothing_is_audited_as_exported(served: Bastion) -> None:
    before = len(exports(served.data))
    p = served.ssh("dave", "export", served.data.ids["shell"])
    assert p.returncode != 0
    assert p.stdout == b""
    assert b"reviewer or admin" in p.stderr
    assert len(exports(served.data)) == before


@pytest.mark.parametrize(
    "words",
    [
        ("--data=/tmp", "x"),  # where to read is the bastion's to say
        ("--as=alice", "x"),  # and who is exporting
        ("-o", "/tmp/evil.tar", "x"),  # and where the bastion writes
        ("--force", "x"),
        ("--format", "zip", "x"),
    ],
)
def test_options_that_are_not_the_clients_to_choose_are_refused(served: Bastion, words: tuple[str, ...]) -> None:
    before = len(exports(served.data))
    p = served.ssh("carol", "export", *words)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stdout == b""
    assert len(exports(served.data)) == before
    assert not Path("/tmp/evil.tar").exists()


def test_a_session_word_that_looks_like_an_option_is_only_a_session_name(served: Bastion) -> None:
    p = served.ssh("carol", "export", "--", "--as=alice")
    assert p.returncode == 2
    assert b"--as=alice" in p.stderr and p.stdout == b""


def test_a_terminal_is_refused_since_it_would_mangle_the_file(served: Bastion) -> None:
    p = served.ssh("carol", "export", served.data.ids["shell"], tty=True)
    assert p.returncode != 0
    assert b"without -t" in p.stdout + p.stderr


def test_help_names_export(served: Bastion) -> None:
    p = served.ssh("carol", "help")
    assert b"  export ID... [--user U] [--target T]" in p.stdout and b"[--redact REGEX]..." in p.stdout


# --- the review app's export action ---------------------------------------------------------------


async def until(pilot, cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


@pytest.mark.parametrize("via", ["console", "ssh"])
async def test_x_on_sessions_exports_the_selected_session_and_audits_it(reviewed, via: str) -> None:
    app = ReviewApp(ReviewContext.open(reviewed.data, "carol", via))
    folder = reviewed.data.root / EXPORT_DIR
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: table.selected is not None, "rows")
        chosen = table.selected.session.id
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExportDialog), "the export dialog")
        assert bool(app.screen.query("#output")) is (via == "console")  # over ssh the path is not the reviewer's
        await pilot.click("#export")
        await until(pilot, lambda: folder.is_dir() and any(folder.glob("*.tar")), "the bundle")
        await until(pilot, lambda: any(e.session_id == chosen for e in exports(reviewed)), "the audit event")
    bundle = next(folder.glob("*.tar"))
    assert bundle.name.startswith(chosen)
    v = zsp("verify", "--json", str(bundle))
    assert v.returncode == 0, v.stdout + v.stderr
    event = [e for e in exports(reviewed) if e.session_id == chosen][-1]
    assert (event.actor, event.via, event.fields["format"]) == ("carol", via, "bundle")
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)


async def test_x_on_replay_exports_a_text_transcript_with_a_redaction(reviewed) -> None:
    sid = reviewed.ids["shell"]
    app = ReviewApp(ReviewContext.open(reviewed.data, "carol", "console"))
    out = reviewed.root / "t.txt"
    async with app.run_test(size=(160, 40)) as pilot:
        app.open_replay(sid)
        await until(pilot, lambda: type(app.screen).__name__ == "ReplayScreen", "replay")
        await pilot.pause(0.5)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExportDialog), "the export dialog")
        dialog = app.screen
        radios = list(dialog.query("RadioButton"))
        radios[3].value = True  # text
        await pilot.pause(0.1)
        dialog.query_one("#output").value = str(out)
        dialog.query_one("#redact").value = "kubectl"
        await pilot.click("#export")
        await until(pilot, out.exists, "the transcript")
    text = out.read_text()
    assert "kubectl" not in text and "******* delete pod" in text
    assert Path(f"{out}.sig").exists()


# --- redaction that cannot be done is refused; a pattern that matched nothing is said -------------


def test_a_pattern_that_still_matches_what_cannot_be_redacted_refuses_the_export(reviewed, tmp_path: Path) -> None:
    """The exec session's command line is in its recording header and in its audit events: signed
    as it is, so a redaction of it cannot be honoured, and nothing is written rather than a file
    said to be redacted that still holds it."""
    for fmt, name in (("bundle", "e.tar"), ("text", "e.txt"), ("asciicast", "e.cast")):
        out = tmp_path / name
        p = zsp("export", "--data", str(reviewed.data.root), "--as", "carol", reviewed.ids["exec"],
                "--format", fmt, "--redact", "hello-exec", "-o", str(out))  # fmt: skip
        assert p.returncode == 2, (fmt, p.stderr)
        assert "still matches" in p.stderr and "hello-exec" not in p.stderr  # the pattern may be the secret
        assert "Traceback" not in p.stderr
        assert not out.exists() and not Path(f"{out}.sig").exists()
        assert not list(tmp_path.glob(".zsp-export-*"))
    assert not [e for e in exports(reviewed) if e.fields.get("redacted")]


def test_a_pattern_that_matched_nothing_is_a_warning_and_a_match_is_counted(reviewed, tmp_path: Path) -> None:
    base = ("export", "--data", str(reviewed.data.root), "--as", "carol", reviewed.ids["shell"])
    miss = zsp(*base, "--redact", "no-such-text-anywhere", "-o", str(tmp_path / "m.tar"))
    assert miss.returncode == 0 and "no --redact pattern matched anything" in miss.stderr
    hit = zsp(*base, "--redact", "kubectl", "-o", str(tmp_path / "h.tar"))
    assert hit.returncode == 0 and re.search(r"redacted [1-9][0-9]* byte\(s\) in [1-9]", hit.stderr), hit.stderr


def test_a_backslash_in_a_pattern_survives_the_trip_through_ssh(served: Bastion) -> None:
    # what a user types locally: --redact 'kubectl\s+delete' (ssh sends the words joined, quotes gone)
    p = served.ssh("carol", "export", served.data.ids["shell"], "--format", "text", "--redact", r"kubectl\s+delete")
    assert p.returncode == 0, p.stderr
    assert b"kubectl delete" not in p.stdout and b"******* delete" not in p.stdout
    assert b"**************" in p.stdout  # "kubectl delete" became stars, the space too


@pytest.mark.parametrize("fmt", ["bundle", "text", "asciicast"])
def test_a_pattern_is_never_matched_across_the_framing_of_a_value(reviewed, tmp_path: Path, fmt: str) -> None:
    """``token=\\S+`` after a frame that ends in ``token=`` matches nothing in the session (a space
    follows), but would run into the next frame's length prefix and head in the file's bytes: the
    check for what redaction could not reach looks at each value on its own, not at the framing."""
    from recorder import FileSink, FsyncPolicy, RecordingWriter, SessionMeta

    rec = reviewed.data.recordings / "framing.zsprec"
    w = RecordingWriter(FileSink(rec, sync_dir=False), reviewed.data.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=80, rows=24),
                        coalesce_ms=0, fsync=FsyncPolicy.NEVER)  # fmt: skip
    w.output(b"set token=")
    w.output(b" (empty)\r\n")
    w.close(0, "exit")
    out = tmp_path / f"f.{fmt}"
    p = zsp("export", "--data", str(reviewed.data.root), "--as", "carol", str(rec), "--format", fmt,
            "--redact", r"token=\S+", "-o", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "no --redact pattern matched anything" in p.stderr
