"""Audit anchors: every checkpoint head goes to the sinks, and `zsp audit verify --anchor` catches a
log cut back to an earlier checkpoint, which the chain alone cannot (real CLI, real SQLite, real UDP)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import msgpack
import pytest

from recorder import SigningKey, checkpoint_message
from tests.test_cli import no_traceback, zsp
from zsp_tui.anchors import Anchor, parse_anchor


def keypair(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return Path(f"{path}.pub")


@pytest.fixture
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


@pytest.fixture
def setup(data_dir: Path, tmp_path: Path, udp: socket.socket) -> Path:
    """A data dir with a JSON Lines and a syslog sink, and four transactions in its audit log."""
    assert zsp("init").returncode == 0
    jsonl = tmp_path / "audit.jsonl"
    (data_dir / "zsp.toml").write_text(f'[audit]\njsonl = "{jsonl}"\nsyslog = "udp://127.0.0.1:{udp.getsockname()[1]}"\n')
    for args in (
        ("user", "add", "alice", "--key", str(keypair(tmp_path, "alice")), "--role", "operator,admin"),
        ("user", "add", "bob", "--role", "approver", "--as", "alice"),
        ("user", "add", "carol", "--role", "operator", "--as", "alice"),
        ("user", "add", "dave", "--role", "operator", "--as", "alice"),
    ):
        p = zsp(*args)
        assert p.returncode == 0, p.stderr
    return jsonl


def _rows(data_dir: Path) -> list[tuple[int, bytes, bytes, str]]:
    with sqlite3.connect(data_dir / "zsp.db") as db:
        return db.execute("SELECT seq, body, head, event FROM audit ORDER BY seq").fetchall()


def _anchors(jsonl: Path) -> list[dict]:
    return [e for e in map(json.loads, jsonl.read_text().splitlines()) if e["event"] == "audit.anchor"]


def _cut_after(data_dir: Path, seq: int) -> None:
    with sqlite3.connect(data_dir / "zsp.db") as db:
        db.execute("DELETE FROM audit WHERE seq > ?", (seq,))


def test_every_checkpoint_is_sent_as_a_signed_anchor(setup: Path, data_dir: Path, udp: socket.socket) -> None:
    rows = _rows(data_dir)
    checkpoints = [r for r in rows if r[3] == "audit.checkpoint"]
    anchors = _anchors(setup)
    assert len(anchors) == len(checkpoints) >= 4
    key = SigningKey.load(data_dir / "keys" / "recording_ed25519")
    log_id = msgpack.unpackb(rows[0][1])[3]["session_id"]
    for a, (seq, body, _head, _ev) in zip(anchors, checkpoints, strict=True):
        assert a["code"] == "ZSP0002I" and a["seq"] == seq and a["index"] == seq - 1
        assert a["log_id"] == log_id
        assert a["head"] == rows[seq - 1][2].hex()  # the head the checkpoint signs
        assert msgpack.unpackb(body)[3]["sig"].hex() == a["signature"]
        assert a["signer_fingerprint"] == key.public.fingerprint
        anchor = parse_anchor(a)
        assert anchor.signed_by([key.public]) == key.public
    # Syslog gets them too (structured data carries the head).
    msgs = []
    while True:
        try:
            msgs.append(udp.recv(65536).decode())
        except TimeoutError:
            break
        if sum("audit.anchor" in m for m in msgs) == len(anchors):
            break
    assert sum(f'head="{anchors[-1]["head"]}"' in m for m in msgs) == 1
    # Anchors are not events of the log: `zsp audit --json` lists the events only.
    listed = [json.loads(x) for x in zsp("audit", "--json").stdout.splitlines()]
    assert [e for e in map(json.loads, setup.read_text().splitlines()) if e["event"] != "audit.anchor"] == listed

    p = zsp("audit", "verify", "--anchor", str(setup))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "audit log OK" in p.stdout and f"reaches the last of {len(anchors)} anchors" in p.stdout


def test_tail_cut_back_to_a_checkpoint_passes_alone_and_fails_with_anchors(setup: Path, data_dir: Path) -> None:
    rows = _rows(data_dir)
    checkpoints = [r[0] for r in rows if r[3] == "audit.checkpoint"]
    for keep in (checkpoints[-2], checkpoints[1], checkpoints[0]):
        _cut_after(data_dir, keep)
        # The chain alone cannot tell: a signed prefix is intact (docs/AUDIT.md says so).
        p = zsp("audit", "verify")
        assert p.returncode == 0 and "audit log OK" in p.stdout, p.stdout
        p = zsp("audit", "verify", "--anchor", str(setup))
        assert p.returncode == 1, p.stdout
        assert "audit log FAILED" in p.stdout and "CUT" in p.stdout and f"ends at frame {keep}" in p.stdout
        no_traceback(p)
        j = zsp("audit", "verify", "--anchor", str(setup), "--json")
        assert j.returncode == 1 and json.loads(j.stdout)["ok"] is False
    # The whole log deleted.
    _cut_after(data_dir, -1)
    p = zsp("audit", "verify", "--anchor", str(setup))
    assert p.returncode == 1 and "the log is empty" in p.stdout


def test_cut_and_written_again_is_caught(setup: Path, data_dir: Path) -> None:
    """After the cut the bastion goes on writing (and anchoring) a new tail: the old anchors still
    name other heads for those frames."""
    rows = _rows(data_dir)
    checkpoints = [r[0] for r in rows if r[3] == "audit.checkpoint"]
    _cut_after(data_dir, checkpoints[1])
    for name in ("erin", "frank", "grace", "heidi"):
        assert zsp("user", "add", name, "--role", "operator", "--as", "alice").returncode == 0
    assert len(_rows(data_dir)) > len(rows)  # longer than before: reaching the last anchor is not enough
    assert zsp("audit", "verify").returncode == 0
    p = zsp("audit", "verify", "--anchor", str(setup))
    assert p.returncode == 1 and "REWRITTEN" in p.stdout, p.stdout
    # Even with the sink file cut to before the rewrite's own anchors, the old anchors disagree.
    old = setup.read_text().splitlines()[: len(rows)]
    only_old = setup.with_name("old.jsonl")
    only_old.write_text("\n".join(old) + "\n")
    p = zsp("audit", "verify", "--anchor", str(only_old))
    assert p.returncode == 1 and "REWRITTEN" in p.stdout, p.stdout


def _rewrite_last_anchor(jsonl: Path, out: Path, change) -> None:
    lines = jsonl.read_text().splitlines()
    i = max(n for n, x in enumerate(lines) if json.loads(x)["event"] == "audit.anchor")
    obj = json.loads(lines[i])
    change(obj)
    lines[i] = json.dumps(obj)
    out.write_text("\n".join(lines) + "\n")


def test_forged_anchors_are_refused(setup: Path, data_dir: Path, tmp_path: Path, other_key: SigningKey) -> None:
    forged = tmp_path / "forged.jsonl"
    rows = _rows(data_dir)

    def bad_sig(o: dict) -> None:
        sig = bytearray.fromhex(o["signature"])
        sig[5] ^= 1
        o["signature"] = sig.hex()

    def other_signer(o: dict) -> None:
        # A well-formed anchor, truly signed, but by a key the data dir does not trust: it claims
        # a frame far beyond the log's end (what someone wanting to discredit the log would send).
        a = parse_anchor(o)
        index = a.index + 100
        o.update(index=index, signer_fingerprint=other_key.public.fingerprint,
                 signature=other_key.sign(checkpoint_message(a.log_id, index, a.head, a.wall_us)).hex())

    def names_real_signer(o: dict) -> None:
        other_signer(o)
        o["signer_fingerprint"] = SigningKey.load(data_dir / "keys" / "recording_ed25519").public.fingerprint

    def moved(o: dict) -> None:
        o["index"] -= 1  # a genuine signature over another index does not verify

    for change in (bad_sig, other_signer, names_real_signer, moved):
        _rewrite_last_anchor(setup, forged, change)
        p = zsp("audit", "verify", "--anchor", str(forged))
        assert p.returncode == 1, (change.__name__, p.stdout, p.stderr)
        assert "refused" in p.stdout and "does not verify" in p.stdout, (change.__name__, p.stdout)
        no_traceback(p)
    assert len(_rows(data_dir)) == len(rows)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no audit.anchor records"),
        ('{"event": "user.create", "seq": 2}\n', "no audit.anchor records"),
        ("not json\n", ":1: not a JSON object"),
        ('[1, 2]\n', ":1: not a JSON object"),
        ('{"event": "audit.anchor", "index": 1}\n', ":1: bad audit.anchor record: log_id"),
        ('{"event": "audit.anchor", "log_id": "0190f1a2-0000-7000-8000-000000000000", "index": true, '
         '"head": "00", "wall_us": 1, "signer_fingerprint": "SHA256:x", "signature": "00"}\n',
         ":1: bad audit.anchor record: index"),
    ],
)
def test_unreadable_anchor_files_are_usage_errors(setup: Path, tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "anchors.jsonl"
    f.write_text(content)
    p = zsp("audit", "verify", "--anchor", str(f))
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    no_traceback(p)
    p = zsp("audit", "verify", "--anchor", str(tmp_path / "missing.jsonl"))
    assert p.returncode == 2 and "No such file" in p.stderr


def test_anchors_of_another_log_are_not_proof(setup: Path, data_dir: Path, tmp_path: Path) -> None:
    """The log deleted and begun again (new log id, same key): the old anchors name the old log."""
    with sqlite3.connect(data_dir / "zsp.db") as db:
        db.execute("DELETE FROM audit")
        db.execute("DELETE FROM meta WHERE key LIKE 'audit_%'")
    assert zsp("user", "add", "mallory", "--role", "operator", "--as", "alice").returncode == 0
    old = tmp_path / "old.jsonl"
    old.write_text("".join(x + "\n" for x in setup.read_text().splitlines()
                           if json.loads(x).get("log_id") != _anchors(setup)[-1]["log_id"]))
    p = zsp("audit", "verify", "--anchor", str(old))
    assert p.returncode == 1 and "log replaced?" in p.stdout, p.stdout


def test_anchor_round_trip() -> None:
    a = Anchor(log_id=__import__("uuid").uuid4(), index=3, head=b"\x01" * 32, wall_us=5, signer_fingerprint="SHA256:x",
               signature=b"\x02" * 64)
    assert parse_anchor({"event": "audit.anchor", **a.fields()}) == a
