"""The zsp CLI as a user runs it: real processes, real files, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recorder import FrameKind, load_trusted_keys
from replay import Outcome, load, verify

GOLDEN = Path(__file__).parent / "data" / "golden"


def zsp(*args: str, input: bytes | None = b"", env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "zsp_tui", *args], input=input, capture_output=True,
                          env=e, cwd=cwd, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def frames(path: Path, keyfile: Path):
    return load(path, load_trusted_keys(keyfile))

def test_help_lists_commands() -> None:
    p = zsp("--help")
    assert p.returncode == 0
    for cmd in ("init", "record", "verify"):
        assert cmd in p.stdout


def test_init_creates_keys_once(data_dir: Path) -> None:
    p = zsp("init")
    assert p.returncode == 0, p.stderr
    key = data_dir / "keys" / "recording_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    first = key.read_bytes()
    # Stock OpenSSH reads both halves, and agrees on the fingerprint zsp prints.
    fp = subprocess.run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True, check=True)
    assert fp.stdout.split()[1] in p.stdout
    subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, check=True)
    signers = (data_dir / "allowed_signers").read_text()
    again = zsp("init")
    assert again.returncode == 0 and "nothing (all present; kept)" in again.stdout
    assert key.read_bytes() == first
    assert (data_dir / "allowed_signers").read_text() == signers
    assert 'namespaces="session-recording@zsp,evidence@zsp"' in signers


def test_init_into_impossible_place_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = zsp("init", "--data", str(blocker / "data"))
    assert p.returncode == 2
    no_traceback(p)
    assert p.stderr.startswith("zsp: error: data directory") and p.stderr.count("\n") == 1


def test_record_without_init_refuses_and_runs_nothing(data_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    p = zsp("record", "-o", str(tmp_path / "r.zsprec"), "--", "touch", str(marker))
    assert p.returncode == 2 and "zsp init" in p.stderr
    no_traceback(p)
    assert not marker.exists() and not (tmp_path / "r.zsprec").exists()


def test_record_refuses_to_overwrite_and_runs_nothing(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    out = tmp_path / "r.zsprec"
    out.write_bytes(b"precious")
    marker = tmp_path / "ran"
    p = zsp("record", "-o", str(out), "--", "touch", str(marker))
    assert p.returncode == 2 and "never overwrites" in p.stderr
    no_traceback(p)
    assert out.read_bytes() == b"precious" and not marker.exists()


@pytest.mark.parametrize(
    ("script", "code", "status", "reason"),
    [("exit 0", 0, 0, "exit"), ("exit 7", 7, 7, "exit"), ("kill -TERM $$", 143, -15, "signal")],
)
def test_record_passes_exit_status_through(data_dir: Path, tmp_path: Path, script: str, code: int,
                                           status: int, reason: str) -> None:
    zsp("init")
    out = tmp_path / "r.zsprec"
    p = zsp("record", "-q", "-o", str(out), "--", "sh", "-c", f"echo started; {script}")
    assert p.returncode == code, p.stderr
    assert "started" in p.stdout
    fs, report = frames(out, data_dir / "allowed_signers")
    assert report.outcome is Outcome.VALID
    assert report.seal.exit_status == status and report.seal.reason == reason
    assert b"started" in b"".join(f.data for f in fs if f.kind is FrameKind.OUTPUT)
    assert report.header.command == f"sh -c 'echo started; {script}'"


def test_record_missing_command_is_recorded_as_127(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    out = tmp_path / "r.zsprec"
    p = zsp("record", "-q", "-o", str(out), "--", "/nonexistent/cmd")
    assert p.returncode == 127
    assert "cannot run /nonexistent/cmd" in p.stdout  # printed on the session's terminal
    assert verify(out, load_trusted_keys(data_dir / "allowed_signers")).seal.exit_status == 127


def test_record_piped_stdin_is_relayed_and_recorded(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    out = tmp_path / "r.zsprec"
    p = zsp("record", "-q", "-o", str(out), "--", "sh", "-c", "read a; read b; echo \"[$a|$b]\"",
            input=b"one\ntwo\n")
    assert p.returncode == 0 and "[one|two]" in p.stdout
    fs, report = frames(out, data_dir / "allowed_signers")
    assert report.outcome is Outcome.VALID
    assert b"".join(f.data for f in fs if f.kind is FrameKind.INPUT).startswith(b"one\ntwo\n")


def test_record_default_path_and_verify_with_data_dir_trust(data_dir: Path) -> None:
    zsp("init")
    p = zsp("record", "--", "true")
    assert p.returncode == 0
    recs = list((data_dir / "recordings").glob("*.zsprec"))
    assert len(recs) == 1 and str(recs[0]) in p.stderr
    v = zsp("verify", str(recs[0]))
    assert v.returncode == 0 and v.stdout.startswith("VALID")


def test_verify_outcomes_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSP_DATA", str(tmp_path / "none"))
    signer = str(GOLDEN / "signer.pub")
    ok = zsp("verify", "--signer", signer, str(GOLDEN / "valid.zsprec"))
    assert ok.returncode == 0 and ok.stdout.startswith("VALID") and "frames=37" in ok.stdout
    assert "SHA256:" in ok.stdout
    bad = zsp("verify", "--signer", signer, str(GOLDEN / "valid.zsprec"), str(GOLDEN / "flipped.zsprec"),
              str(GOLDEN / "torn.zsprec"))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["VALID", "CORRUPT", "INCOMPLETE"]
    assert "at frame 12" in lines[1] and "hash-mismatch" in lines[1]
    assert "intact up to frame 19" in lines[2]
    missing = zsp("verify", "--signer", signer, str(tmp_path / "nope.zsprec"), str(GOLDEN / "valid.zsprec"))
    assert missing.returncode == 2
    no_traceback(missing)
    assert "No such file" in missing.stdout and "VALID" in missing.stdout


def test_verify_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSP_DATA", str(tmp_path / "none"))
    p = zsp("verify", "--json", "--signer", str(GOLDEN / "signer.pub"), str(GOLDEN / "valid.zsprec"),
            str(GOLDEN / "dropped.zsprec"))
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert [d["outcome"] for d in doc] == ["VALID", "CORRUPT"]
    assert doc[1]["problem"] == "sequence-gap" and doc[1]["bad_frame"] == 12
    assert doc[0]["exit_status"] == 0 and len(doc[0]["head"]) == 64


def test_verify_untrusted_and_trust_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSP_DATA", str(tmp_path / "none"))
    p = zsp("verify", str(GOLDEN / "valid.zsprec"))
    assert p.returncode == 2 and "no trusted signer keys" in p.stderr
    no_traceback(p)
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    p = zsp("verify", "--signer", str(junk), str(GOLDEN / "valid.zsprec"))
    assert p.returncode == 2 and "no ssh-ed25519 public key" in p.stderr
    no_traceback(p)
    p = zsp("verify", "--signer", str(GOLDEN / "signer.pub"), str(GOLDEN / "untrusted.zsprec"))
    assert p.returncode == 1 and "untrusted-signer" in p.stdout


def test_verify_accepts_allowed_signers_and_private_key_files(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    out = tmp_path / "r.zsprec"
    zsp("record", "-q", "-o", str(out), "--", "true")
    env = {"ZSP_DATA": str(tmp_path / "elsewhere")}
    for f in ("allowed_signers", "keys/recording_ed25519", "keys/recording_ed25519.pub"):
        p = zsp("verify", "--signer", str(data_dir / f), str(out), env=env)
        assert p.returncode == 0, (f, p.stdout, p.stderr)


def test_verify_directory_and_garbage_files_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSP_DATA", str(tmp_path / "none"))
    garbage = tmp_path / "g.zsprec"
    garbage.write_bytes(b"hello world, not a recording")
    p = zsp("verify", "--signer", str(GOLDEN / "signer.pub"), str(garbage), str(tmp_path))
    assert p.returncode == 2
    no_traceback(p)
    assert "not-a-recording" in p.stdout and "Is a directory" in p.stdout
