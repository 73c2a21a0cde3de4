"""allowed_signers options are honoured or refused, never ignored, and agree with ssh-keygen -Y verify."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest

from recorder import (
    SIGNATURE_NAMESPACE,
    FileSink,
    FrameKind,
    KeyFileError,
    RecordingWriter,
    SessionMeta,
    SigningKey,
    load_trusted_keys,
)
from replay import Outcome, Problem, verify
from tests.helpers import FakeClock, fixed_session_id, split_frames


@pytest.fixture
def utc_plus_2(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run with the local zone at UTC+2 (POSIX sign: Etc/GMT-2), for both us and ssh-keygen."""
    monkeypatch.setenv("TZ", "Etc/GMT-2")
    time.tzset()
    yield "Etc/GMT-2"
    monkeypatch.undo()
    time.tzset()


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "allowed_signers"
    p.write_text(text)
    return p


def _line(key: SigningKey, options: str, principals: str = "ops@example.com") -> str:
    return f"{principals} {options} {key.public.openssh} a comment\n" if options else f"{principals} {key.public.openssh}\n"


def _ts(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp())


# --- parsing -------------------------------------------------------------------------------------


def test_plain_and_namespaced_lines_load(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    text = (
        "# comment\n\n"
        + f"{key.public.openssh} bare pub line\n"
        + _line(other_key, f'namespaces="{SIGNATURE_NAMESPACE}"')
    )
    keys = load_trusted_keys(_file(tmp_path, text))
    assert [k.raw for k in keys] == [key.public.raw, other_key.public.raw]
    assert not any(k.bounded for k in keys)


@pytest.mark.parametrize(
    "namespaces, trusted",
    [
        (SIGNATURE_NAMESPACE, True),
        (f"file,{SIGNATURE_NAMESPACE},git", True),  # commas inside the quotes
        ("*@zsp", True),
        ("session-recording@zs?", True),
        ("SESSION-RECORDING@ZSP", False),  # patterns are case-sensitive, as OpenSSH's
        ("git", False),
        ("file,git", False),
        (f"*,!{SIGNATURE_NAMESPACE}", False),
        (f"!{SIGNATURE_NAMESPACE},*", False),
        ("", False),
    ],
)
def test_namespaces_are_honoured(tmp_path: Path, key: SigningKey, other_key: SigningKey, namespaces: str,
                                 trusted: bool) -> None:
    # A second, unrestricted key keeps the file usable, so exclusion shows as a missing key.
    text = _line(key, f'namespaces="{namespaces}"') + _line(other_key, "")
    keys = load_trusted_keys(_file(tmp_path, text))
    assert (key.public.raw in {k.raw for k in keys}) is trusted


def test_a_file_whose_keys_are_all_for_other_namespaces_is_refused(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(KeyFileError, match=f"no ssh-ed25519 public key allowed for namespace {SIGNATURE_NAMESPACE}"):
        load_trusted_keys(_file(tmp_path, _line(key, 'namespaces="git"')))


@pytest.mark.parametrize(
    "options, message",
    [
        ("cert-authority", "cert-authority is not supported"),
        ("CERT-AUTHORITY", "cert-authority is not supported"),  # option names are case-insensitive
        (f'cert-authority,namespaces="{SIGNATURE_NAMESPACE}"', "cert-authority is not supported"),
        ('restrict', "unknown option 'restrict'"),
        ('verify-required', "unknown option 'verify-required'"),
        ('no-touch-required', "unknown option 'no-touch-required'"),
        ('foo="a,b"', "unknown option 'foo'"),
        (f'namespaces="{SIGNATURE_NAMESPACE}",bogus', "unknown option 'bogus'"),
        (f"namespaces={SIGNATURE_NAMESPACE}", "double quotes"),
        ('namespaces="unterminated', "unterminated quote"),
        (f'namespaces="{SIGNATURE_NAMESPACE}",namespaces="git"', 'more than one "namespaces"'),
        (f'namespaces="{SIGNATURE_NAMESPACE}",', "options end with a comma"),
        ('valid-after="2026-01-01"', "not a time"),
        ('valid-after="20260101"', "local times are not accepted"),
        ('valid-after="20261301Z"', "not a valid date"),
        ('valid-before="2026010"', "not a time"),
        ('valid-after="20260101Z",valid-before="20250101Z"', "not after"),
        ('valid-after="20260101Z",valid-before="20260101Z"', "not after"),
        ('valid-after="20260101Z",valid-after="20270101Z"', 'more than one "valid-after"'),
    ],
)
def test_options_that_cannot_be_honoured_are_refused(tmp_path: Path, key: SigningKey, other_key: SigningKey,
                                                     options: str, message: str) -> None:
    # The bad line is refused even though another line would give a usable key.
    text = _line(other_key, "") + _line(key, options)
    with pytest.raises(KeyFileError, match="line 2: .*" + message.replace("(", r"\(")):
        load_trusted_keys(_file(tmp_path, text))


def test_cert_authority_for_another_namespace_is_left_out_not_refused(tmp_path: Path, key: SigningKey,
                                                                     other_key: SigningKey) -> None:
    """A shared file may hold a git signing CA; it says nothing about recordings."""
    text = _line(key, 'cert-authority,namespaces="git"', principals="*@example.com") + _line(other_key, "")
    assert [k.raw for k in load_trusted_keys(_file(tmp_path, text))] == [other_key.public.raw]


def test_quoted_principals_and_quoted_option_values_with_blanks(tmp_path: Path, key: SigningKey) -> None:
    text = f'"ops team@example.com,x@y" namespaces="a b,{SIGNATURE_NAMESPACE}" {key.public.openssh}\n'
    assert [k.raw for k in load_trusted_keys(_file(tmp_path, text))] == [key.public.raw]


def test_validity_times(tmp_path: Path, key: SigningKey) -> None:
    text = _line(key, 'valid-after="20260101Z",valid-before="202607011230UTC"')
    (k,) = load_trusted_keys(_file(tmp_path, text))
    assert k.valid_after == _ts("2026-01-01T00:00:00")
    assert k.valid_before == _ts("2026-07-01T12:30:00")
    us = 1_000_000
    assert not k.valid_at(_ts("2025-12-31T23:59:59") * us + 999_999)
    assert k.valid_at(_ts("2026-01-01T00:00:00") * us)  # both ends inclusive, to the second
    assert k.valid_at(_ts("2026-07-01T12:30:00") * us + 999_999)
    assert not k.valid_at(_ts("2026-07-01T12:30:01") * us)


@pytest.mark.parametrize("value", ["20260101", "202601011200", "20260101120000"])
def test_local_times_are_refused(tmp_path: Path, key: SigningKey, value: str) -> None:
    """ssh-keygen reads them in the verifying machine's zone: the verdict would depend on the machine."""
    with pytest.raises(KeyFileError, match="local times are not accepted"):
        load_trusted_keys(_file(tmp_path, _line(key, f'valid-after="{value}"')))


# --- agreement with OpenSSH ----------------------------------------------------------------------

CASES = [
    "",
    f'namespaces="{SIGNATURE_NAMESPACE}"',
    f'namespaces="file,{SIGNATURE_NAMESPACE}"',
    'namespaces="*@zsp"',
    'namespaces="git"',
    f'namespaces="*,!{SIGNATURE_NAMESPACE}"',
    'valid-after="20260101Z"',
    'valid-before="20260101Z"',
    'valid-after="20250101Z",valid-before="20260101Z"',
    'valid-after="202601011000Z"',
    'valid-before="20260101100000UTC"',
    'valid-after="20260101095959Z",valid-before="20260101100001Z"',
    f'VALID-AFTER="20251231Z",Namespaces="{SIGNATURE_NAMESPACE}"',
    "cert-authority",
    'cert-authority,namespaces="git"',
    'foo="bar"',
    "namespaces=git",
]
TIMES = ["20251231235959Z", "20260101000000Z", "20260101000001Z", "20260101095959Z", "20260101100000Z",
         "20260101100001Z"]


def test_trust_agrees_with_ssh_keygen_verify(tmp_path: Path, key: SigningKey, other_key: SigningKey,
                                             utc_plus_2: str) -> None:
    """For each options field and verify time: zsp trusts the key iff ``ssh-keygen -Y verify`` does."""
    key.save(tmp_path / "k")
    msg = tmp_path / "msg"
    msg.write_bytes(b"checkpoint")
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(tmp_path / "k"), "-n", SIGNATURE_NAMESPACE, str(msg)],
                   check=True, capture_output=True)
    env = dict(os.environ, TZ=utc_plus_2)
    disagreements = []
    for options in CASES:
        path = _file(tmp_path, _line(key, options))
        for at in TIMES:
            with open(msg, "rb") as stdin:
                ossh = subprocess.run(
                    ["ssh-keygen", "-Y", "verify", "-f", str(path), "-I", "ops@example.com", "-n",
                     SIGNATURE_NAMESPACE, "-s", str(msg) + ".sig", f"-Overify-time={at}"],
                    stdin=stdin, capture_output=True, env=env,
                )
            try:
                keys = load_trusted_keys(path)
            except KeyFileError:
                keys = []
            t_us = int(datetime.strptime(at, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC).timestamp()) * 1_000_000
            ours = any(k.raw == key.public.raw and k.valid_at(t_us) for k in keys)
            if ours != (ossh.returncode == 0):
                disagreements.append((options, at, ours, ossh.stderr.decode().strip()))
    assert not disagreements


# --- the verifier honours the windows at each checkpoint's signed time ----------------------------


def _recording(path: Path, key: SigningKey) -> tuple[bytes, int, int]:
    """A sealed recording whose checkpoints are signed a second or more apart; (data, start, a bound after it)."""
    clock = FakeClock(step_ns=10**9, wall_start_ns=_ts("2026-06-01T00:00:00") * 10**9)
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="root", term="xterm", cols=80, rows=24, host="bastion"),
        session_id=fixed_session_id(3),
        checkpoint_frames=4,
        coalesce_ms=0,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    for i in range(20):
        w.output(b"line %d\r\n" % i)
    w.close(0, "exit")
    start = _ts("2026-06-01T00:00:00")
    return path.read_bytes(), start, start + 60


def _fmt(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%d%H%M%SZ")


def test_verifier_checks_every_checkpoint_against_the_window(tmp_path: Path, key: SigningKey) -> None:
    data, start, end = _recording(tmp_path / "r.zsprec", key)

    def check(options: str):
        return verify(io.BytesIO(data), load_trusted_keys(_file(tmp_path, _line(key, options))))

    assert check(f'valid-after="{_fmt(start - 1)}",valid-before="{_fmt(end)}"').outcome is Outcome.VALID
    # Retired before the session: the first checkpoint (frame 1) is already out of the window.
    r = check(f'valid-before="{_fmt(start - 10)}"')
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNTRUSTED_SIGNER and r.bad_frame == 1
    assert "valid-after/valid-before" in r.detail
    r = check(f'valid-after="{_fmt(end + 10)}"')
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNTRUSTED_SIGNER and r.bad_frame == 1
    # Retired in the middle of the session: the first checkpoint signed after it is refused, not the seal only.
    bodies = [msgpack.unpackb(b) for b in split_frames(data)]
    ckpts = [i for i, b in enumerate(bodies) if b[0] == FrameKind.CHECKPOINT]
    walls = [bodies[i][3]["wall_us"] // 10**6 for i in ckpts]
    assert len(walls) > 3 and walls == sorted(walls) and walls[2] > walls[1]
    r = check(f'valid-before="{_fmt(walls[1])}"')
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.UNTRUSTED_SIGNER
    assert r.bad_frame == ckpts[2] and r.signed_frames == ckpts[1]


def test_any_entry_of_the_same_key_may_vouch(tmp_path: Path, key: SigningKey) -> None:
    data, start, _ = _recording(tmp_path / "r.zsprec", key)
    expired = _line(key, f'valid-before="{_fmt(start - 10)}"')
    for other in (_line(key, ""), _line(key, f'valid-after="{_fmt(start - 10)}"')):
        keys = load_trusted_keys(_file(tmp_path, expired + other))
        assert verify(io.BytesIO(data), keys).outcome is Outcome.VALID


def _zsp(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZSP_DATA=str(tmp_path / "no-data-dir"))
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_cli_refuses_a_file_with_an_option_it_cannot_honour(tmp_path: Path, key: SigningKey) -> None:
    _, start, _ = _recording(tmp_path / "r.zsprec", key)
    signers = _file(tmp_path, _line(key, "cert-authority"))
    p = _zsp("verify", "--signer", str(signers), str(tmp_path / "r.zsprec"), tmp_path=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and "line 1: cert-authority is not supported" in p.stderr
    signers.write_text(_line(key, f'valid-before="{_fmt(start - 10)}"'))
    p = _zsp("verify", "--signer", str(signers), str(tmp_path / "r.zsprec"), tmp_path=tmp_path)
    assert p.returncode == 1 and p.stdout.startswith("CORRUPT") and "untrusted-signer" in p.stdout
