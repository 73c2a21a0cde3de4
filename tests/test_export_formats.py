"""``zsp export --format asciicast|asciicast3|text``: real sessions recorded through the real
bastion and a real sshd (the ``reviewed`` template, built once per run), plus synthetic
recordings signed by the data dir's key for the edge cases (multibyte characters split across
frames, resizes, events, hostile output, an unsealed recording, a ten-hour session).

asciicast v2 is read with the asciinema package (2.x, its own parser, and ``asciinema cat``);
asciicast v3 has no player on this machine, so it is read with a strict parser written from the
spec (docs.asciinema.org/manual/asciicast/v3) below."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta
from replay import asciicast, export_meta, load
from tests.tui_helpers import ReviewData, copy_reviewed
from zsp_tui.cli import main

ROOT = Path(__file__).resolve().parent.parent
ESC_OR_BIDI = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


# --- helpers ------------------------------------------------------------------------------------


class Clock:
    """Monotonic and wall clocks advancing by ``step_ns`` per reading (a deterministic session)."""

    def __init__(self, step_ns: int = 3_000_000) -> None:
        self._mono = itertools.count(10**12, step_ns)
        self._wall = itertools.count(1_790_000_000 * 10**9, step_ns)

    def mono(self) -> int:
        return next(self._mono)

    def wall(self) -> int:
        return next(self._wall)


def writer(
    path: Path, rv: ReviewData, *, clock: Clock | None = None, pty: bool = True, checkpoint_ms: int = 5000
) -> RecordingWriter:
    c = clock or Clock()
    meta = SessionMeta(
        user="alice",
        target="db1",
        login="root",
        grant_id=None,
        term="xterm-256color" if pty else "",
        cols=80 if pty else 0,
        rows=24 if pty else 0,
        host="bastion",
    )
    return RecordingWriter(
        FileSink(path, sync_dir=False),
        rv.data.signing_key(),
        meta,
        session_id=uuid.uuid4(),
        coalesce_ms=0,
        checkpoint_ms=checkpoint_ms,
        clock=c.mono,
        wall_clock=c.wall,
    )


def export(rv: ReviewData, *args: str) -> tuple[int, str]:
    """``zsp export ... --as carol`` in process; (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["export", *args, "--as", "carol", "--data", str(rv.data.root)])
    return code, err.getvalue()


def cast_events(path: Path) -> tuple[dict, list[list]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    return json.loads(lines[0]), [json.loads(x) for x in lines[1:-1]]


def strict_v3(path: Path) -> tuple[dict, list[tuple[Decimal, str, str]]]:
    """Parse an asciicast v3 file by the letter of the spec; fail on anything it does not allow.
    Intervals are read as exact decimals, so their sum is exact too."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")  # strict: the file is UTF-8
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert not lines[0].startswith("#"), "the first line must be the header, not a comment"
    header = json.loads(lines[0])
    assert isinstance(header, dict) and header["version"] == 3
    term = header["term"]
    assert isinstance(term, dict)
    for key in ("cols", "rows"):
        assert type(term[key]) is int and 0 < term[key] <= 65535
    assert isinstance(term.get("type", ""), str)
    assert "width" not in header and "height" not in header, "v2 keys in a v3 header"
    if "timestamp" in header:
        assert type(header["timestamp"]) is int
    for key in ("title", "command"):
        if key in header:
            assert isinstance(header[key], str)
    if "env" in header:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in header["env"].items())
    events: list[tuple[Decimal, str, str]] = []
    for line in lines[1:]:
        assert line, "no blank lines in the event stream"
        if line.startswith("#"):
            continue
        ev = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        assert isinstance(ev, list) and len(ev) == 3, line
        interval, code, data = ev
        assert isinstance(interval, Decimal) and interval >= 0, line
        assert code in ("o", "i", "m", "r", "x"), line
        assert isinstance(data, str), line
        if code == "r":
            assert re.fullmatch(r"[1-9]\d{0,4}x[1-9]\d{0,4}", data), line
        if code == "x":
            assert re.fullmatch(r"-?\d+", data), line
        events.append((interval, code, data))
    assert [c for _, c, _ in events].count("x") <= 1
    if any(c == "x" for _, c, _ in events):
        assert events[-1][1] == "x", "the exit event ends the stream"
    return header, events


def asciinema_cat(path: Path) -> str:
    p = subprocess.run(["asciinema", "cat", str(path)], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode("utf-8")


def allowed_signers(rv: ReviewData, tmp: Path) -> Path:
    """What a responder writes from the bastion's published key: the export signer, for evidence@zsp
    (the data dir's own allowed_signers is checked too, in the signature test)."""
    f = tmp / "allowed_signers"
    f.write_text(f'zsp@{socket.gethostname()} namespaces="evidence@zsp" {rv.data.signing_key().public.openssh}\n')
    return f


def ssh_keygen_verify(signers: Path, path: Path) -> subprocess.CompletedProcess[bytes]:
    with open(path, "rb") as f:
        return subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(signers),
                "-I",
                f"zsp@{socket.gethostname()}",
                "-n",
                "evidence@zsp",
                "-s",
                f"{path}.sig",
            ],
            stdin=f,
            capture_output=True,
            timeout=30,
        )


# --- the data: real sessions, synthetic edge cases, several exports -----------------------------

HOSTILE = (
    b"\x1b]0;pwned-title\x07\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b[H"
    + "\u202eevil\u2066text\u2069 \u200f".encode()
    + b"bell\x07 back\\slash\r\n"
)


def _synthetic(rv: ReviewData, out: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    # split multibyte characters, a resize, events, a typed command, a seal
    p = out / "split.zsprec"
    w = writer(p, rv)
    w.output(b"$ ")
    w.input(b"echo caf\xc3")  # the operator's keys, split too
    w.input(b"\xa9\r")
    w.output(b"echo caf\xc3")
    w.output(b"\xa9\r\ncaf\xc3")
    w.output(b"\xa9 \xe2\x82")
    w.output(b"\xac \xf0\x9f")
    w.output(b"\x98\x80 done\r\n$ ")
    w.resize(132, 43)
    w.event("grant.warning", "grant ends in 5 minutes\x1b[2J")
    w.output(b"\xe2")  # cut off for good: comes out as U+FFFD
    w.close(7, "exit")
    paths["split"] = p
    # hostile output and a hostile command line
    p = out / "hostile.zsprec"
    w = writer(p, rv)
    w.output(b"$ ")
    w.input(b"printf evil\x1b[31m\r")
    w.output(b"printf evil\x1b[31m\r\n" + HOSTILE + b"$ ")
    w.event("note", "\x1b]0;title\x07\u202eevent")
    w.output(b"sudo -k; sudo true\r\n[sudo] password for root: ")
    w.event("input.masked", "9 bytes of input masked", bytes=9, run=1)  # what the bastion writes instead
    w.output(b"\r\n$ ")
    w.close(0, "exit")
    paths["hostile"] = p
    # never sealed: INCOMPLETE
    p = out / "unsealed.zsprec"
    w = writer(p, rv, checkpoint_ms=1)
    w.output(b"$ ")
    w.input(b"uptime\r")
    w.output(b"uptime\r\n up 3 days\r\n$ ")
    w.tick()  # a checkpoint signs it all
    w.output(b"never signed\r\n")  # the crash came before the next one
    w.flush()
    w.abandon()
    paths["unsealed"] = p
    # no PTY (an exec): newlines as the terminal's ONLCR showed them
    p = out / "nopty.zsprec"
    w = writer(p, rv, pty=False)
    w.output(b"one\ntwo\n")
    w.close(0, "exit")
    paths["nopty"] = p
    # over ten hours, irregular steps (7.3 s and a bit per clock reading): intervals must add up exactly
    p = out / "long.zsprec"
    w = writer(p, rv, clock=Clock(step_ns=7_300_333_777))
    for i in range(5000):
        w.output(b"tick %d\r\n" % i)
    w.close(0, "exit")
    paths["long"] = p
    # corrupt: a byte flipped in the middle of a real session's recording
    src = Path(rv.svc.session(rv.ids["shell"]).path)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    p = out / "corrupt.zsprec"
    p.write_bytes(bytes(data))
    paths["corrupt"] = p
    return paths


@pytest.fixture(scope="module")
def ex(reviewed_template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One copy of the reviewed data dir, the synthetic recordings, and every export made once."""
    root = tmp_path_factory.mktemp("export-formats")
    rv = copy_reviewed(reviewed_template, root)
    out = root / "out"
    out.mkdir()
    syn = _synthetic(rv, root)
    ids = rv.ids
    results: dict[str, tuple[int, str]] = {}

    def run(name: str, *args: str) -> None:
        results[name] = export(rv, *args)

    run("shell.cast", ids["shell"], "--format", "asciicast", "-o", str(out / "shell.cast"))
    run("shell-in.cast", ids["shell"], "--format", "asciicast", "--include-input", "-o", str(out / "shell-in.cast"))
    run("shell.v3.cast", ids["shell"], "--format", "asciicast3", "-o", str(out / "shell.v3.cast"))
    run("shell.txt", ids["shell"], "--format", "text", "-o", str(out / "shell.txt"))
    run("exec.v3.cast", ids["exec"], "--format", "asciicast3", "-o", str(out / "exec.v3.cast"))
    for name in ("split", "hostile", "unsealed", "nopty", "long"):
        run(f"{name}.cast", str(syn[name]), "--format", "asciicast", "-o", str(out / f"{name}.cast"))
        run(f"{name}.v3.cast", str(syn[name]), "--format", "asciicast3", "-o", str(out / f"{name}.v3.cast"))
    for name in ("split", "hostile", "unsealed"):
        run(f"{name}.txt", str(syn[name]), "--format", "text", "-o", str(out / f"{name}.txt"))
    many = out / "many"
    many.mkdir()
    run("many", "--user", "alice", "--format", "text", "-o", str(many))
    one = out / "one"
    one.mkdir()
    run("one", ids["exec"], "--format", "asciicast3", "-o", str(one))
    refused = out / "refused"
    refused.mkdir()
    run("corrupt", str(syn["corrupt"]), "--format", "asciicast", "-o", str(refused / "c.cast"))
    # the store's own file of a session, damaged (last: no later export reads ``local``)
    stored = Path(rv.svc.session(ids["local"]).path)
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0x40
    stored.write_bytes(bytes(data))
    run("corrupt-id", ids["local"], "--format", "text", "-o", str(refused / "c.txt"))
    yield {"rv": rv, "out": out, "syn": syn, "results": results, "root": root}


def _ok(ex: dict, name: str) -> Path:
    code, err = ex["results"][name]
    assert code == 0, err
    return ex["out"] / name


# --- asciicast v2 ----------------------------------------------------------------------------------


def test_v2_of_a_real_session_parses_with_asciinema_and_cat_prints_its_output(ex) -> None:
    path = _ok(ex, "shell.cast")
    from asciinema.asciicast import v2

    with open(path, encoding="utf-8") as f, v2.open_from_file(f.readline(), f) as cast:
        header = cast.v2_header
        events = list(cast.events())
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    assert header["env"] == {"TERM": "xterm-256color"}
    assert header["zsp"]["session_id"] == ex["rv"].ids["shell"]
    assert header["zsp"]["outcome"] == "VALID"
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert {e[1] for e in events} <= {"o", "m"}  # no "i" without --include-input
    labels = [e[2] for e in events if e[1] == "m"]
    assert "$ echo kubectl delete pod web-7f" in labels
    assert "$ echo DONE-$((6*7))" in labels
    shown = asciinema_cat(path)
    assert "DONE-42" in shown and "\x1b[31mred\x1b[0m plain" in shown


def test_keystrokes_only_with_include_input(ex) -> None:
    _, plain = cast_events(_ok(ex, "shell.cast"))
    _, with_input = cast_events(_ok(ex, "shell-in.cast"))
    assert not [e for e in plain if e[1] == "i"]
    typed = "".join(e[2] for e in with_input if e[1] == "i")
    assert "echo DONE-$((6*7))\r" in typed
    assert [e for e in with_input if e[1] != "i"] == plain


def test_split_multibyte_characters_come_out_whole(ex) -> None:
    path = _ok(ex, "split.cast")
    _, events = cast_events(path)
    out = [e[2] for e in events if e[1] == "o"]
    assert "".join(out) == "$ echo café\r\ncafé € 😀 done\r\n$ \ufffd"
    assert "\ufffd" not in "".join(out[:-1])  # only the character cut off for good
    assert "café € 😀 done" in asciinema_cat(path)
    # resize, the recorded event (escaped), the typed command, the exit
    assert ["r", "132x43"] in [e[1:] for e in events]
    labels = [e[2] for e in events if e[1] == "m"]
    assert "grant.warning: grant ends in 5 minutes\\x1b[2J" in labels
    assert "$ echo café" in labels
    assert labels[-1] == "exit 7 (exit)"
    # the file is valid UTF-8 JSON whose strings are exactly these
    path.read_bytes().decode("utf-8")


def test_a_session_without_pty_gets_crlf(ex) -> None:
    _, events = cast_events(_ok(ex, "nopty.cast"))
    assert "".join(e[2] for e in events if e[1] == "o") == "one\r\ntwo\r\n"


def test_hostile_labels_are_escaped_and_output_is_exact_json(ex) -> None:
    header, events = cast_events(_ok(ex, "hostile.cast"))
    labels = [e[2] for e in events if e[1] == "m"]
    assert labels and not any(ESC_OR_BIDI.search(label) for label in labels)
    assert "note: \\x1b]0;title\\x07\\u202eevent" in labels
    assert "input.masked: 9 bytes of input masked" in labels
    assert not ESC_OR_BIDI.search(header["title"])
    # the output itself is the session's, byte for byte (a player interprets it as the terminal did)
    assert HOSTILE.decode() in "".join(e[2] for e in events if e[1] == "o")


def test_unsealed_recording_is_exported_and_says_incomplete(ex) -> None:
    header, events = cast_events(_ok(ex, "unsealed.cast"))
    assert header["title"].endswith("[INCOMPLETE]")
    assert header["zsp"]["outcome"] == "INCOMPLETE" and header["zsp"]["detail"]
    shown = "".join(e[2] for e in events if e[1] == "o")
    assert "up 3 days" in shown and "never signed" not in shown  # only what a signature covers
    _, ev3 = strict_v3(_ok(ex, "unsealed.v3.cast"))
    assert "x" not in [c for _, c, _ in ev3]  # no exit status without a seal


# --- asciicast v3 ----------------------------------------------------------------------------------


def test_v3_is_strict_per_spec_and_matches_v2(ex) -> None:
    for name in ("shell", "split", "hostile", "nopty", "long"):
        header, events = strict_v3(_ok(ex, f"{name}.v3.cast"))
        v2_header, v2_events = cast_events(ex["out"] / f"{name}.cast")
        assert header["term"]["cols"] == v2_header["width"] and header["term"]["rows"] == v2_header["height"]
        assert header["title"] == v2_header["title"] and header["timestamp"] == v2_header["timestamp"]
        # the same events; v3 times are intervals that add up to v2's absolute times exactly
        total = Decimal(0)
        for (interval, code, data), (at, code2, data2) in zip(events, v2_events, strict=False):
            total += interval
            assert (total, code, data) == (Decimal(str(at)), code2, data2)
        assert len(events) == len(v2_events) + (1 if events[-1][1] == "x" else 0)
    header, events = strict_v3(ex["out"] / "split.v3.cast")
    assert header["term"] == {"cols": 80, "rows": 24, "type": "xterm-256color"}
    assert events[-1][1:] == ("x", "7")


def test_v3_of_an_exec_session_ends_with_its_exit_status(ex) -> None:
    _, events = strict_v3(_ok(ex, "exec.v3.cast"))
    assert events[-1][1:] == ("x", "3")
    assert ("m", "$ echo hello-exec; exit 3") in [(c, d) for _, c, d in events]
    assert "hello-exec\r\n" in "".join(d for _, c, d in events if c == "o")


def test_ten_hour_session_does_not_drift(ex) -> None:
    path = ex["syn"]["long"]
    frames, report = load(path, [ex["rv"].data.signing_key().public])
    out_us = [f.t_us for f in frames if f.kind.name == "OUTPUT"]
    assert len(out_us) == 5000 and out_us[-1] > 10 * 3600 * 10**6
    path = _ok(ex, "long.v3.cast")
    _, events = strict_v3(path)
    at = list(itertools.accumulate(i for i, _, _ in events))
    o_times = [t for t, (_, c, _) in zip(at, events, strict=True) if c == "o"]
    assert o_times == [Decimal(t) / 10**6 for t in out_us]  # every event exact, to the microsecond
    # read as asciinema 3 reads it (src/asciicast/util.rs: the number as an f64, its shortest
    # decimal form, the first six decimals, summed as integer microseconds): no drift either
    as_read = [int(Decimal(repr(json.loads(x)[0])) * 10**6) for x in path.read_text().splitlines()[1:]]
    at_us = list(itertools.accumulate(as_read))
    assert [t for t, (_, c, _) in zip(at_us, events, strict=True) if c == "o"] == out_us
    # at millisecond resolution each absolute time is rounded and the error carried: the sum of
    # 5000 intervals is still the last event's time rounded once (rounding each interval drifts)
    meta = export_meta(report)
    lines = list(asciicast(frames, meta, version=3, resolution_us=1000))
    intervals = [Decimal(json.loads(x, parse_float=str)[0]) for x in lines[1:]]
    ends = [f.t_us for f in frames if f.kind.name in ("OUTPUT", "SEAL")]
    assert sum(intervals) == Decimal((ends[-1] + 500) // 1000) / 1000
    naive = sum(Decimal(round((b - a) / 1000)) / 1000 for a, b in itertools.pairwise([0, *ends]))
    assert naive != sum(intervals)  # what the carry is for


# --- text --------------------------------------------------------------------------------------------


def test_transcript_of_a_real_session(ex) -> None:
    text = _ok(ex, "shell.txt").read_text(encoding="utf-8")
    rv = ex["rv"]
    s = rv.svc.session(rv.ids["shell"])
    head, _, rest = text.partition("\nCommands\n--------\n")
    commands, _, output = rest.partition("\nOutput\n------\n")
    key = rv.data.signing_key().public
    assert f"Session:      {s.id}\n" in head
    assert "User:         alice\n" in head and "Target:       srv\n" in head
    assert f"Grant:        {s.grant_id}\n" in head and "Reason:       test\n" in head
    assert "Approved by:  bob\n" in head
    assert f"Verification: VALID, signed by {key.fingerprint}, final chain head {s.head}\n" in head
    assert re.search(r"Started:      \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n", head)
    assert "Exit status:  0\n" in head
    assert re.search(r"\+00:00:\d\d\.\d{3}  \d{4}-\d\d-\d\dT[\d:.]+Z  \$ echo kubectl delete pod web-7f\n", commands)
    assert "$ echo DONE-$((6*7))\n" in commands
    assert "red plain\n" in output and "DONE-42\n" in output
    assert "\x1b" not in text


def test_transcript_of_hostile_output_holds_no_control_character(ex) -> None:
    raw = _ok(ex, "hostile.txt").read_bytes()
    text = raw.decode("utf-8")
    assert not ESC_OR_BIDI.search(text.replace("\n", ""))
    assert "pwned" not in text  # the title was a sequence the terminal consumed
    assert "evil" in text and "back\\\\slash" in text
    assert "$ printf evil\n" in text or "$ printf evil\\x1b[31m" in text
    assert "  [masked 9 bytes]\n" in text.partition("\nOutput\n")[0]


def test_transcript_of_split_and_unsealed_sessions(ex) -> None:
    text = _ok(ex, "split.txt").read_text(encoding="utf-8")
    assert "café € 😀 done\n" in text and "$ echo café\n" in text
    assert "Exit status:  7\n" in text
    inc = _ok(ex, "unsealed.txt").read_text(encoding="utf-8")
    assert "Verification: INCOMPLETE, signed by" in inc
    assert "incomplete: recording was never sealed" in inc
    assert "up 3 days" in inc and "never signed" not in inc
    assert "1 frame(s) after the last signature are not in this transcript" in inc


def test_several_sessions_go_into_a_directory_each_signed_and_audited(ex) -> None:
    code, err = ex["results"]["many"]
    assert code == 0, err
    rv = ex["rv"]
    many = ex["out"] / "many"
    expect = sorted(rv.ids.values())
    assert sorted(p.name for p in many.iterdir()) == sorted(
        [f"{i}.txt" for i in expect] + [f"{i}.txt.sig" for i in expect]
    )
    signers = allowed_signers(rv, ex["root"])
    for sid in expect:
        p = ssh_keygen_verify(signers, many / f"{sid}.txt")
        assert p.returncode == 0, p.stderr
        assert f"Session:      {sid}\n" in (many / f"{sid}.txt").read_text()
    events = [
        e for e in rv.svc.audit_events() if e.event == "recording.export" and e.fields["file"].startswith(f"{many}/")
    ]
    assert sorted(e.session_id for e in events) == expect
    assert {e.fields["format"] for e in events} == {"text"} and {e.actor for e in events} == {"carol"}
    assert {e.fields["file"] for e in events} == {str(many / f"{sid}.txt") for sid in expect}
    assert all(e.fields["sessions"] == 1 for e in events)


def test_a_directory_gets_files_named_by_session_even_for_one(ex) -> None:
    code, err = ex["results"]["one"]
    assert code == 0, err
    sid = ex["rv"].ids["exec"]
    assert sorted(p.name for p in (ex["out"] / "one").iterdir()) == [f"{sid}.cast", f"{sid}.cast.sig"]


def test_sig_verifies_with_ssh_keygen_and_a_changed_byte_does_not(ex) -> None:
    signers = allowed_signers(ex["rv"], ex["root"])
    for name in ("shell.cast", "shell.v3.cast", "shell.txt"):
        path = _ok(ex, name)
        for trusted in (signers, ex["rv"].data.allowed_signers_path):
            p = ssh_keygen_verify(trusted, path)
            assert p.returncode == 0, p.stderr
            assert b'Good "evidence@zsp" signature' in p.stdout + p.stderr
    bad = ex["root"] / "tampered.cast"
    shutil.copy(ex["out"] / "shell.cast", bad)
    shutil.copy(ex["out"] / "shell.cast.sig", f"{bad}.sig")
    data = bad.read_bytes()
    bad.write_bytes(data.replace(b"DONE-42", b"DONE-43", 1))
    assert ssh_keygen_verify(signers, bad).returncode != 0


def test_corrupt_recording_is_refused_and_leaves_nothing(ex) -> None:
    code, err = ex["results"]["corrupt"]
    assert code == 1
    assert "CORRUPT" in err and ex["rv"].ids["shell"] in err and "hash-mismatch" in err
    assert "Traceback" not in err
    code, err = ex["results"]["corrupt-id"]
    assert code == 1
    assert f"session {ex['rv'].ids['local']}: the recording is CORRUPT" in err
    assert err.count("\n") == 1
    assert list((ex["out"] / "refused").iterdir()) == []


def test_an_existing_file_is_refused_without_force(ex) -> None:
    target = ex["out"] / "shell.txt"
    before = target.read_bytes()
    code, err = export(ex["rv"], ex["rv"].ids["shell"], "--format", "text", "-o", str(target))
    assert code == 2 and "exists" in err
    assert target.read_bytes() == before


def test_stdout_gets_the_file_and_no_sig(ex) -> None:
    rv = ex["rv"]
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "zsp_tui",
            "export",
            rv.ids["exec"],
            "--format",
            "asciicast",
            "-o",
            "-",
            "--as",
            "carol",
            "--data",
            str(rv.data.root),
        ],
        capture_output=True,
        timeout=60,
        cwd=ex["root"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr
    header, *events = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert header["version"] == 2 and header["zsp"]["session_id"] == rv.ids["exec"]
    assert "hello-exec\r\n" in "".join(e[2] for e in events if e[1] == "o")
    assert b"no .sig" in p.stderr
    assert not list(ex["root"].glob(".zsp-export-*"))


def test_redaction_applies_to_every_format(ex) -> None:
    rv = ex["rv"]
    out = ex["out"]
    for fmt, name in (("asciicast", "red.cast"), ("text", "red.txt")):
        code, err = export(rv, rv.ids["shell"], "--format", fmt, "--redact", "kubectl", "-o", str(out / name))
        assert code == 0, err
        text = (out / name).read_text(encoding="utf-8")
        assert "kubectl" not in text and "******* delete pod web-7f" in text
        assert "DONE-42" in text  # only the matches changed
    header, _ = cast_events(out / "red.cast")
    assert header["title"].endswith("[redacted]") and header["zsp"]["redacted_frames"] >= 1
    assert re.search(
        r"\nRedacted:     \d+ frame\(s\): matching bytes replaced with '\*'\n", (out / "red.txt").read_text()
    )
