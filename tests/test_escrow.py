"""Masked input is escrowed, never lost: the adversary's ways of hiding commands behind "password
prompts" through the real bastion (local PTY, real sshd target with and without a PTY) and through
`zsp record`, the sealed-box construction, `zsp unseal` and the excessive-masking flag."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from recorder import (
    EscrowError,
    EscrowPrivateKey,
    EscrowPublicKey,
    Event,
    FileSink,
    FrameKind,
    KeyFileError,
    RecordingWriter,
    SessionMeta,
    SigningKey,
    load_trusted_keys,
    open_sealed,
    seal,
)
from replay import Outcome, load, verify
from tests.bastion_env import Env, make_env
from tests.helpers import exec_sh, read_until
from tests.independent_verifier import verify_file
from zsp_tui.config import load_settings
from zsp_tui.exceptions import ConfigError
from zsp_tui.masking import InputMasker, MaskedInput, MaskLimits

ZSP = [sys.executable, "-m", "zsp_tui"]


# --- helpers -------------------------------------------------------------------------------------


def wait_for(cond, timeout: float = 15.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")




def ended_session(env: Env):
    return wait_for(lambda: (s := env.svc.sessions()) and s[-1].ended_at and s[-1])


def frames_of(env: Env, path: str):
    frames, report = load(path, load_trusted_keys(env.data.allowed_signers_path))
    assert report.outcome is Outcome.VALID, report
    return frames


def masked(frames) -> list[Event]:
    return [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "input.masked"]


def escrow_key(env: Env) -> EscrowPrivateKey:
    return EscrowPrivateKey.load(env.data.escrow_private_path)


def typed_back(frames, key: EscrowPrivateKey) -> bytes:
    """Every byte the operator sent: recorded input and opened masked chunks, in frame order."""
    sid = frames[0].data.session_id
    out = b""
    for f in frames:
        if f.kind is FrameKind.INPUT:
            out += f.data
        elif f.kind is FrameKind.EVENT and f.data.type == "input.masked":
            fl = f.data.fields
            box = base64.b64decode(fl["sealed"])
            out += open_sealed(key, box, session_id=sid, run=fl["run"], part=fl["part"])
    return out


def clear_input(frames) -> bytes:
    return b"".join(f.data for f in frames if f.kind is FrameKind.INPUT)


def unseal(env: Env, session: str, *extra: str, key: Path | None = None, as_user: str = "alice"):
    argv = [*ZSP, "unseal", session, "--data", str(env.data.root), "--escrow-key",
            str(key or env.data.escrow_private_path), "--as", as_user, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def pty_client(env: Env, ssh_user: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username=ssh_user, key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    return client


def assert_escrowed(env: Env, sent: bytes, secrets: list[bytes], *, runs_at_least: int) -> None:
    """The adversary's session: every typed byte is recoverable, none of the hidden ones in clear,
    the session flagged (recording, audit log, zsp sessions), the recording VALID."""
    s = ended_session(env)
    frames = frames_of(env, s.path)
    key = escrow_key(env)
    assert typed_back(frames, key) == sent  # nothing disappeared, nothing reordered
    events = masked(frames)
    assert len({e.fields["run"] for e in events}) >= runs_at_least
    raw = Path(s.path).read_bytes()
    # The additive event fields keep a verifier written from FORMAT.md alone (no escrow knowledge) happy.
    signers = [k.openssh for k in load_trusted_keys(env.data.allowed_signers_path)]
    assert verify_file(raw, signers)[0] == "VALID"
    for secret in secrets:
        # Without the private key a reviewer sees only byte counts: not in clear input, nor anywhere in the file.
        assert secret not in clear_input(frames) and secret not in raw
    assert all(e.fields["escrow"] == key.public.fingerprint for e in events)
    excessive = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "input.masked.excessive"]
    assert len(excessive) == 1 and excessive[0].fields["max_runs"] == 3
    audit = [e for e in env.svc.audit_events() if e.event == "input.masked.excessive"]
    assert [e.session_id for e in audit] == [s.id] and audit[0].code == "ZSP2300W"
    listed = subprocess.run([*ZSP, "sessions", "--data", str(env.data.root), "--json"],
                            capture_output=True, text=True, check=True)
    assert [x["review_flags"] for x in json.loads(listed.stdout) if x["id"] == s.id] == [["masked-input-excessive"]]
    p = unseal(env, s.id, "--json")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    revealed = b"".join(base64.b64decode(r["data_b64"]) for r in shown["runs"])
    for secret in secrets:
        assert secret in revealed
    assert shown["excessive"] is True


# --- the adversary, through the real bastion ------------------------------------------------------


def test_stty_echo_toggling_on_local_hides_nothing(env: Env) -> None:
    """With echo off each command line looks like a password; toggling echo between them gave a
    fresh "prompt" each time. Every one is now escrowed and the session flagged."""
    env.grant()
    client = pty_client(env, "local")
    sent = b""

    def send(data: bytes) -> None:
        nonlocal sent
        sent += data
        chan.send(data)

    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        exec_sh(chan)
        sent = b"exec sh\r"  # sh reads lines in canonical mode: with echo off, that looks like a prompt
        send(b"stty -echo; echo RE''ADY\r")
        buf = read_until(chan, b"", b"READY")
        time.sleep(0.2)
        secrets = []
        for i in range(5):
            secret = f"touch /tmp/zsp-hidden-{i}-{uuid.uuid4().hex[:6]}".encode()
            secrets.append(secret)
            # The hidden command, then echo back on, wait for a line, echo off again.
            send(secret + f"; rm -f /tmp/zsp-hidden-{i}-*; stty echo; echo ON{i}; read x; stty -echo; echo OFF{i}\r".encode())
            buf = read_until(chan, buf, f"ON{i}".encode())
            time.sleep(0.2)
            send(b"\r")
            buf = read_until(chan, buf, f"OFF{i}".encode())
            time.sleep(0.2)
        send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    assert_escrowed(env, sent, secrets, runs_at_least=5)


@pytest.mark.parametrize("use_pty", [True, False], ids=["pty", "exec"])
def test_fake_prompts_on_a_remote_target_hide_nothing(remote_env: Env, use_pty: bool) -> None:
    """A prompt-looking line before each command, on a real sshd target: PS1 in a shell with echo
    off (PTY), or a read loop that prints "Password: " (plain exec, no PTY)."""
    env = remote_env
    env.grant("srv")
    client = pty_client(env, "srv")
    sent = b""
    secrets = [f"echo hidden-{i}-$((6*7)){i}".encode() for i in range(5)]
    try:
        chan = client.get_transport().open_session()
        if use_pty:
            chan.get_pty(term="xterm", width=80, height=24)
            chan.exec_command("sh -i")
            setup = b"stty -echo; PS1='Pass''word: '\r"
        else:
            chan.exec_command("while printf 'Password: '; IFS= read -r l; do eval \"$l\"; done")
            setup = b""
        enter = b"\r" if use_pty else b"\n"
        buf = b""
        if setup:
            sent += setup
            chan.send(setup)
        for i, secret in enumerate(secrets):
            buf = read_until(chan, buf, b"Password: ")
            sent += secret + enter
            chan.send(secret + enter)
            marker = f"hidden-{i}-42{i}".encode()
            buf = read_until(chan, buf, marker)
            buf = buf[buf.index(marker) + len(marker) :]
        buf = read_until(chan, buf, b"Password: ")
        sent += b"exit" + enter
        chan.send(b"exit" + enter)
        chan.recv_exit_status()
    finally:
        client.close()
    assert_escrowed(env, sent, secrets, runs_at_least=5)


def test_prompts_on_local_exec_mask_nothing(env: Env) -> None:
    """Without a PTY the local target has no echo state: a printed "Password: " masks nothing."""
    env.grant()
    script = "printf 'Password: '; read a; printf 'Password: '; read b; echo got $a $b"
    p = env.ssh("alice", "local", script, input="first-line\nsecond-line\n")
    assert p.returncode == 0 and "got first-line second-line" in p.stdout, p.stderr
    frames = frames_of(env, ended_session(env).path)
    assert masked(frames) == [] and clear_input(frames) == b"first-line\nsecond-line\n"


def test_a_real_password_stays_hidden_and_unseal_shows_it_escaped(remote_env: Env) -> None:
    """The everyday case is unchanged for reviewers (a count), and `zsp unseal` reveals it, escaped
    for the terminal, after writing its audit event; the session is not flagged."""
    env = remote_env
    env.grant("srv")
    client = pty_client(env, "srv")
    try:
        chan = client.get_transport().open_session()
        chan.get_pty(term="xterm", width=80, height=24)
        chan.exec_command("read -s -p 'Password: ' pw; echo; echo got ${#pw}")
        buf = read_until(chan, b"", b"Password: ")
        chan.send(b"hun\x1b[2Jter2\r")  # an escape sequence must not reach the reviewer's terminal raw
        read_until(chan, buf, b"got ")
        chan.recv_exit_status()
    finally:
        client.close()
    s = ended_session(env)
    frames = frames_of(env, s.path)
    assert b"hun" not in clear_input(frames)
    assert sum(e.fields["bytes"] for e in masked(frames)) == len(b"hun\x1b[2Jter2\r")
    assert not [e for e in env.svc.audit_events() if e.event == "input.masked.excessive"]
    before = len(env.svc.audit_events())
    p = unseal(env, s.id)
    assert p.returncode == 0, p.stderr
    assert "hun\\x1b[2Jter2\\r" in p.stdout and "\x1b" not in p.stdout
    audit = env.svc.audit_events()[before:]
    assert [(e.event, e.actor, e.outcome, e.session_id) for e in audit] == [
        ("recording.unsealed", "alice", "success", s.id)
    ]


# --- zsp unseal refuses what it cannot trust -------------------------------------------------------


def _password_session(env: Env) -> str:
    env.grant()
    client = pty_client(env, "local")
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        exec_sh(chan)
        buf = b""
        for i in range(2):
            chan.send(f"stty -echo; read p; stty echo; echo DO''NE{i}\r".encode())
            time.sleep(0.3)
            chan.send(f"pw-number-{i}\r".encode())
            buf = read_until(chan, buf, f"DONE{i}".encode())
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    return ended_session(env).id


def _forge(env: Env, src: str, dst: Path, *, session_id: uuid.UUID, swap: bool) -> None:
    """Rewrite a recording, signed with the bastion's own key, moving boxes between events or sessions."""
    frames = frames_of(env, src)
    events = [f.data for f in frames if f.kind is FrameKind.EVENT]
    boxes = [e.fields["sealed"] for e in events if e.type == "input.masked"]
    if swap:
        boxes = boxes[1:] + boxes[:1]
    h = frames[0].data
    w = RecordingWriter(FileSink(dst), SigningKey.load(env.data.signing_key_path),
                        SessionMeta(user=h.user, target=h.target, login=h.login), session_id=session_id)
    for f in frames[1:]:
        if f.kind is FrameKind.INPUT:
            w.input(f.data)
        elif f.kind is FrameKind.OUTPUT:
            w.output(f.data)
        elif f.kind is FrameKind.EVENT:
            fields = dict(f.data.fields)
            if f.data.type == "input.masked":
                fields["sealed"] = boxes.pop(0)
            w.event(f.data.type, f.data.message, **fields)
    w.close(0, "exit")


@pytest.mark.parametrize("how", ["other-event", "other-session"])
def test_a_moved_box_does_not_open(env: Env, tmp_path: Path, how: str) -> None:
    sid = _password_session(env)
    src = env.svc.session(sid).path
    forged = tmp_path / f"forged-{how}.zsprec"
    other = uuid.UUID(sid) if how == "other-event" else uuid.uuid4()
    _forge(env, src, forged, session_id=other, swap=how == "other-event")
    assert verify(forged, load_trusted_keys(env.data.allowed_signers_path)).outcome is Outcome.VALID
    before = len(env.svc.audit_events())
    p = unseal(env, str(forged))
    assert p.returncode != 0 and p.stdout == ""
    assert "does not open" in p.stderr and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
    failed = env.svc.audit_events()[before:]
    assert [(e.event, e.outcome) for e in failed] == [("recording.unsealed", "failure")]


def test_unseal_refuses_a_wrong_key_a_non_admin_and_a_corrupt_recording(env: Env, tmp_path: Path) -> None:
    sid = _password_session(env)
    path = Path(env.svc.session(sid).path)
    other = EscrowPrivateKey.generate()
    other.save(tmp_path / "other", tmp_path / "other.pub")
    p = unseal(env, sid, key=tmp_path / "other")
    assert p.returncode != 0 and p.stdout == "" and "not this key" in p.stderr and "Traceback" not in p.stderr

    (tmp_path / "garbage").write_text("not a key\n")
    p = unseal(env, sid, key=tmp_path / "garbage")
    assert p.returncode != 0 and p.stdout == "" and "--escrow-key" in p.stderr

    before = len(env.svc.audit_events())
    p = unseal(env, sid, as_user="bob")  # an approver, not an admin
    assert p.returncode != 0 and p.stdout == "" and "not an admin" in p.stderr
    assert len(env.svc.audit_events()) == before

    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the seal checkpoint's stored head
    bad = tmp_path / "corrupt.zsprec"
    bad.write_bytes(bytes(data))
    p = unseal(env, str(bad))
    assert p.returncode != 0 and p.stdout == "" and "does not verify" in p.stderr

    key_text = env.data.escrow_private_path.read_text()  # the key can come on stdin, never touching disk
    argv = [*ZSP, "unseal", sid, "--data", str(env.data.root), "--escrow-key", "-", "--as", "alice", "--json"]
    p = subprocess.run(argv, input=key_text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    runs = json.loads(p.stdout)["runs"]
    assert [base64.b64decode(r["data_b64"]) for r in runs] == [b"pw-number-0\r", b"pw-number-1\r"]


def test_without_an_escrow_key_nothing_is_masked(tmp_path: Path) -> None:
    """Fail closed: hiding input without escrow is never allowed; it is recorded in clear, and said so."""
    env = make_env(tmp_path)
    env.data.escrow_public_path.unlink()
    env.start()
    try:
        env.grant()
        client = pty_client(env, "local")
        try:
            chan = client.invoke_shell(term="xterm", width=80, height=24)
            chan.set_combine_stderr(True)
            buf = read_until(chan, b"", b"recorded in clear")
            exec_sh(chan, buf)
            buf = b""
            chan.send(b"stty -echo; read p; stty echo; echo DO''NE\r")
            time.sleep(0.3)
            chan.send(b"visible-password\r")
            read_until(chan, buf, b"DONE")
            chan.send(b"exit\r")
            chan.recv_exit_status()
        finally:
            client.close()
        frames = frames_of(env, ended_session(env).path)
    finally:
        env.stop()
    assert masked(frames) == []
    assert b"visible-password\r" in clear_input(frames)
    # The first event after the session's rule set (rules.loaded), before any input.
    first = next(f for f in frames if f.kind is FrameKind.EVENT and not f.data.type.startswith("rules."))
    assert first.data.type == "input.escrow.missing"
    assert all(f.seq > first.seq for f in frames if f.kind is FrameKind.INPUT)
    assert "recorded in clear" in "".join(env.output)


# --- zsp record --------------------------------------------------------------------------------------


def test_zsp_record_escrows_and_flags_excessive_masking(tmp_path: Path) -> None:
    from tests.test_record_pty import Terminal

    data = tmp_path / "data"
    env = dict(os.environ, TERM="xterm", ZSP_DATA=str(data))
    subprocess.run([*ZSP, "init"], env=env, check=True, capture_output=True)
    (data / "zsp.toml").write_text("[masking]\nmax_runs = 1\n")
    out = tmp_path / "rec.zsprec"
    wrapper = (
        "import os, sys; fd = os.open(os.ttyname(0), os.O_RDWR);"
        "os.execvp(sys.executable, [sys.executable, '-m', 'zsp_tui'] + sys.argv[1:])"
    )
    script = 'for i in 1 2; do stty -echo; printf "Password $i: "; read pw; stty echo; echo "ok$i"; read go; done'
    term = Terminal([sys.executable, "-c", wrapper, "record", "-o", str(out), "--", "sh", "-c", script], env)
    for i, pw in ((1, b"first\r"), (2, b"second\r")):
        term.expect(f"Password {i}: ".encode())
        term.send(pw)
        term.expect(f"ok{i}".encode())
        term.send(b"go\r")  # typed with echo on: recorded in clear
    assert term.wait() == 0
    frames, report = load(out, load_trusted_keys(data / "allowed_signers"))
    assert report.outcome is Outcome.VALID
    key = EscrowPrivateKey.load(data / "keys" / "escrow_x25519")
    assert typed_back(frames, key) == b"first\rgo\rsecond\rgo\r" and clear_input(frames) == b"go\rgo\r"
    types = [f.data.type for f in frames if f.kind is FrameKind.EVENT]
    assert types.count("input.masked.excessive") == 1
    from zsp_tui.datadir import DataDir

    audit = [e for e in DataDir(data).service().audit_events() if e.event == "input.masked.excessive"]
    assert len(audit) == 1 and audit[0].session_id == str(frames[0].data.session_id)


# --- the construction and its pieces ----------------------------------------------------------------


def test_seal_opens_only_with_its_key_session_and_place() -> None:
    key, other = EscrowPrivateKey.generate(), EscrowPrivateKey.generate()
    sid = uuid.uuid4()
    box = seal(key.public, b"hunter2\r", session_id=sid, run=2, part=1)
    assert len(box) == len(b"hunter2\r") + 49 and box[0] == 1
    assert open_sealed(key, box, session_id=sid, run=2, part=1) == b"hunter2\r"
    assert seal(key.public, b"hunter2\r", session_id=sid, run=2, part=1) != box  # fresh ephemeral key
    for k, s, run, part in ((other, sid, 2, 1), (key, uuid.uuid4(), 2, 1), (key, sid, 1, 1), (key, sid, 2, 0)):
        with pytest.raises(EscrowError):
            open_sealed(k, box, session_id=s, run=run, part=part)
    for bad in (box[:-1], box[:48], bytes([2]) + box[1:], box[:40] + bytes([box[40] ^ 1]) + box[41:],
                box[:1] + bytes(32) + box[33:]):
        with pytest.raises(EscrowError):
            open_sealed(key, bad, session_id=sid, run=2, part=1)


def test_the_construction_matches_the_spec() -> None:
    """An independent reimplementation from docs/FORMAT.md 3.5 opens what zsp seals."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    sk = X25519PrivateKey.generate()
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sid = uuid.uuid4()
    box = seal(EscrowPublicKey(pk), b"pw\r", session_id=sid, run=3, part=7)
    eph = box[1:33]
    shared = sk.exchange(X25519PublicKey.from_public_bytes(eph))
    k = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + pk, info=b"zsp-escrow-v1 key").derive(shared)
    ad = b"zsp-escrow-v1 input\x00" + sid.bytes + (3).to_bytes(8, "big") + (7).to_bytes(8, "big")
    assert ChaCha20Poly1305(k).decrypt(bytes(12), box[33:], ad) == b"pw\r"


def test_key_files(tmp_path: Path) -> None:
    key = EscrowPrivateKey.generate(comment="zsp-escrow@test")
    key.save(tmp_path / "k", tmp_path / "k.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    line = (tmp_path / "k.pub").read_text()
    assert line.startswith("zsp-escrow-x25519 ") and line.endswith(" zsp-escrow@test\n") and line.count("\n") == 1
    assert EscrowPublicKey.load(tmp_path / "k.pub").raw == key.public.raw
    assert EscrowPrivateKey.load(tmp_path / "k").public.raw == key.public.raw
    assert key.public.fingerprint.startswith("SHA256:") and "=" not in key.public.fingerprint
    with pytest.raises(KeyFileError):
        key.save(tmp_path / "k", tmp_path / "k2.pub")  # never overwritten
    for text in ("", "zsp-escrow-x25519 AAAA\n", "ssh-ed25519 AAAA\n", "zsp-escrow-x25519 " + "A" * 44 + "\n"):
        (tmp_path / "bad.pub").write_text(text)
        with pytest.raises(KeyFileError):
            EscrowPublicKey.load(tmp_path / "bad.pub")
    with pytest.raises(KeyFileError):
        EscrowPrivateKey.load(tmp_path / "k.pub")  # a public key is not a private one


def test_init_creates_the_pair_once_and_says_to_move_the_private_half(tmp_path: Path) -> None:
    data = tmp_path / "d"
    p = subprocess.run([*ZSP, "init", "--data", str(data)], capture_output=True, text=True, check=True)
    assert "escrow key" in p.stdout and "move the escrow PRIVATE key off this machine" in p.stdout
    pub = (data / "keys" / "escrow_x25519.pub").read_text()
    (data / "keys" / "escrow_x25519").unlink()  # moved away, as told
    p = subprocess.run([*ZSP, "init", "--data", str(data)], capture_output=True, text=True, check=True)
    assert (data / "keys" / "escrow_x25519.pub").read_text() == pub  # never replaced
    assert not (data / "keys" / "escrow_x25519").exists() and "PRIVATE" not in p.stdout


def _gate(escrow: EscrowPublicKey | None, limits: MaskLimits | None = None):
    log: list[tuple[str, object]] = []
    echo_off = [False]
    gate = MaskedInput(InputMasker(lambda: echo_off[0]), escrow, uuid.uuid4(), limits or MaskLimits(),
                       event=lambda t, m, **f: log.append((t, f)), record_input=lambda b: log.append(("input", b)))
    return gate, log, echo_off


def test_masked_input_seals_every_withheld_chunk_and_flags_once() -> None:
    key = EscrowPrivateKey.generate()
    gate, log, echo_off = _gate(key.public)
    crossings = []
    for i in range(5):
        echo_off[0] = True
        crossings.append(gate.feed(b"pw"))  # a password typed in two chunks: one run, two parts
        crossings.append(gate.feed(f"{i}\rls\r".encode()))
        echo_off[0] = False
        crossings.append(gate.feed(b"x"))
    # The fourth run's first chunk crosses max_runs = 3, and that is reported once.
    assert [i for i, c in enumerate(crossings) if c is not None] == [9] and crossings[9].runs == 4
    parts = [f for t, f in log if t == "input.masked"]
    assert [(f["run"], f["part"], f["bytes"]) for f in parts[:2]] == [(1, 0, 2), (1, 1, 2)]
    assert [t for t, _ in log].count("input.masked.excessive") == 1
    assert b"".join(v for t, v in log if t == "input") == b"ls\rx" * 5


def test_masked_input_byte_limit_and_no_escrow() -> None:
    gate, log, echo_off = _gate(EscrowPrivateKey.generate().public, MaskLimits(max_runs=100, max_bytes=10))
    echo_off[0] = True
    assert gate.feed(b"0123456789") is None
    assert gate.feed(b"x") is not None  # 11 bytes > 10
    gate, log, echo_off = _gate(None)
    gate.start()
    echo_off[0] = True
    assert gate.feed(b"secret\r") is None
    assert log == [("input.escrow.missing", {}), ("input", b"secret\r")]


def test_masking_limits_in_zsp_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "zsp.toml"
    cfg.write_text("[masking]\nmax_runs = 5\nmax_bytes = 1000\n")
    assert load_settings(cfg).masking == MaskLimits(max_runs=5, max_bytes=1000)
    for bad in ("[masking]\nmax_runs = -1\n", "[masking]\nmax_runs = true\n", "[masking]\nruns = 3\n"):
        cfg.write_text(bad)
        with pytest.raises(ConfigError):
            load_settings(cfg)


def test_a_full_masked_chunk_fits_an_event_field_unclipped() -> None:
    """The writer clips strings longer than MAX_TEXT; a clipped box would be lost, so none may be."""
    from recorder._format import MAX_TEXT
    from zsp_tui.masking import MASK_BUDGET

    box = seal(EscrowPrivateKey.generate().public, b"x" * MASK_BUDGET, session_id=uuid.uuid4(), run=1, part=0)
    assert len(base64.b64encode(box)) <= MAX_TEXT


def test_unseal_escapes_for_the_terminal_unambiguously() -> None:
    from replay import printable

    assert printable(b"pw\r") == "pw\\r"
    assert printable(b"a\x1b]0;x\x07\x9b\x7f") == "a\\x1b]0;x\\x07\\x9b\\x7f"
    assert printable("é\u202e".encode()) == "é\\u202e"  # UTF-8 kept, a bidi override escaped
    assert printable(b"\\xff") == "\\\\xff" and printable(b"\xff") == "\\xff"  # typed text vs. a raw byte
    assert printable("\u009b".encode()) == "\\u009b"  # C1 CSI as a character, not the byte 0x9b


def test_masked_input_counts_against_the_recording_limit(tmp_path: Path) -> None:
    """A target that keeps prompting for passwords must not be a way to write past
    ``max_recording_bytes``: sealed input is recorded (bigger than typed) and counted."""
    env = make_env(tmp_path, with_sshd=True)
    env.configure("[bastion]\nmax_recording_bytes = 65536\n")
    env.start()
    sent = 0
    try:
        env.grant("srv")
        client = pty_client(env, "srv")
        try:
            chan = client.get_transport().open_session()
            chan.exec_command("while printf 'Password: '; IFS= read -r l; do :; done")
            buf = b""
            while sent < 600:
                try:
                    buf = read_until(chan, buf, b"Password: ", timeout=5)
                except AssertionError:
                    break  # the session ended: no more prompts
                buf = b""
                chan.send(b"s" * 250 + b"\n")
                sent += 1
        finally:
            client.close()
        s = ended_session(env)
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()
    assert s.end_reason == "recording-limit", (s.end_reason, sent)
    assert sent < 600
    frames = frames_of(env, s.path)
    assert len(masked(frames)) > 50 and b"s" * 250 not in clear_input(frames)  # the input was masked
    assert Path(s.path).stat().st_size < 3 * 65536  # the limit held, with framing overhead
