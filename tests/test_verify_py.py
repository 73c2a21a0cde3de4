"""The standalone verify.py (zsp_tui/evidence/verify_bundle.py) run as a responder runs it: by
``python3 -S`` with nothing on its path but blake3, msgpack and cryptography (no zsp), on bundles
built here to the letter of the bundle format (docs/EXPORT.md, COMMON10): real recordings from
RecordingWriter, a real hash-chained, signed audit log from FrameChain (as the audit log is
written), the manifest signed with recorder.sign_sshsig. Every kind of tamper is exit 1 with its
reason; a bundle that cannot be read is exit 2."""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from blake3 import blake3

from recorder import (
    EVIDENCE_NAMESPACE,
    FileSink,
    FrameChain,
    FrameKind,
    FsyncPolicy,
    Header,
    RecordingWriter,
    SessionMeta,
    SigningKey,
    sign_sshsig,
)
from replay import RedactionResult, redact_recording, verify
from tests.helpers import FakeClock, fixed_session_id
from tests.independent_verifier import standalone
from zsp_tui.audit import AuditLog

ROOT = Path(__file__).resolve().parent.parent
VERIFY_PY = ROOT / "zsp_tui" / "evidence" / "verify_bundle.py"
HOST = "evidence-host"
IDENTITY = f"zsp@{HOST}"
WALL0 = 1_790_000_000_000_000
GRANT = "0196a0c4-5000-7000-8000-00000000000a"
HOSTILE = "eve\x1b]0;pwned\x07\x1b[2J"


# --------------------------------------------------------------------------- a bundle, by the format


@dataclass
class Session:
    sid: str
    user: str
    grant_id: str | None
    path: Path
    head: bytes
    outcome: str


@dataclass
class Parts:
    """The members a bundle covers in its manifest, and the manifest's other fields."""

    export_id: str
    files: dict[str, bytes]
    manifest: dict[str, Any]
    sessions: list[Session] = field(default_factory=list)


def _record(path: Path, key: SigningKey, seed: int, user: str, grant_id: str | None, *, seal: bool = True) -> Session:
    clock = FakeClock()
    sid = fixed_session_id(seed)
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(
            user=user, target="srv", login="root", grant_id=grant_id, term="xterm", cols=80, rows=24, host=HOST
        ),
        session_id=sid,
        checkpoint_frames=4,
        coalesce_ms=0,
        fsync=FsyncPolicy.NEVER,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    w.output(b"$ vault read db\r\npassword: hunter")
    w.output(b"2\r\n$ ")
    w.input(b"exit\r")
    w.output(b"bye\r\n")
    if seal:
        info = w.close(0, "exit")
        return Session(str(sid), user, grant_id, path, info.head, "VALID")
    w.tick()
    w.flush()
    w.abandon()
    report = verify(path, [key.public])
    assert report.head is not None
    return Session(str(sid), user, grant_id, path, report.head, report.outcome.value)


class Audit:
    """An audit log written as zsp writes it (AuditLog: FrameChain, event maps, a checkpoint per
    transaction), kept in memory as rows (seq, body, head)."""

    def __init__(self, key: SigningKey) -> None:
        self.log_id = uuid.UUID("0196a0c4-5000-7000-8000-00000000a0d1")
        self.chain = FrameChain(self.log_id, key)
        self.rows: list[tuple[int, bytes, bytes]] = []
        self.key = key
        header = Header(
            session_id=self.log_id,
            user="zsp",
            target="audit",
            login="",
            grant_id=None,
            started_at_us=WALL0,
            term="",
            cols=0,
            rows=0,
            command=None,
            host=HOST,
            signer=key.public.openssh,
            signer_fingerprint=key.public.fingerprint,
            checkpoint_frames=256,
            checkpoint_ms=5000,
            coalesce_ms=0,
            extra={"log": "audit"},
        )
        self._add(FrameKind.HEADER, header.to_map())
        self.tx()

    def _add(self, kind: int, data: Any) -> None:
        seq = self.chain.seq
        _, body, head = self.chain.frame(kind, data, seq * 1000)
        self.rows.append((seq, body, head))

    def event(
        self, name: str, actor: str, *, session_id: str | None = None, grant_id: str | None = None, **fields: Any
    ) -> None:
        data = dict(fields)
        data.update(
            type=name,
            message=f"{actor}: {name}",
            code="ZSP0000I",
            time_us=WALL0 + self.chain.seq * 1_000_123,
            actor=actor,
            via="ssh",
            outcome="success",
            target=fields.get("target"),
            login=fields.get("login"),
            grant_id=grant_id,
            session_id=session_id,
        )
        self._add(FrameKind.EVENT, data)

    def tx(self) -> None:
        seq = self.chain.seq
        _, body, head = self.chain.checkpoint(seq * 1000, WALL0 + seq * 1_000_000)
        self.rows.append((seq, body, head))

    def excerpt(self, sids: set[str], grants: set[str]) -> tuple[bytes, list[int]]:
        """The excerpt of COMMON10: runs from each event of interest through the next checkpoint."""
        kinds = {seq: msgpack.unpackb(body) for seq, body, _ in self.rows}
        wanted = [
            s
            for s, (k, _, _, d) in kinds.items()
            if k == FrameKind.EVENT and (d.get("session_id") in sids or d.get("grant_id") in grants)
        ]
        runs: list[list[int]] = []
        for s in wanted:
            end = next(e for e in range(s, len(self.rows)) if kinds[e][0] == FrameKind.CHECKPOINT)
            if runs and s <= runs[-1][1] + 1:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([s, end])
        segments = [
            {"prev_head": self.rows[a - 1][2], "frames": [[self.rows[i][1], self.rows[i][2]] for i in range(a, b + 1)]}
            for a, b in runs
        ]
        ex = {
            "format": "zsp-audit-excerpt",
            "version": 1,
            "header": [self.rows[0][1], self.rows[0][2]],
            "segments": segments,
        }
        return msgpack.packb(ex, use_bin_type=True), wanted

    def jsonl(self, seqs: list[int]) -> bytes:
        """audit/events.jsonl as zsp writes it: AuditEvent.to_json() of each listed event."""
        lines = []
        for s in seqs:
            data = msgpack.unpackb(self.rows[s][1])[3]
            lines.append(json.dumps(AuditLog._event(s, data).to_json(), sort_keys=True))
        return ("\n".join(lines) + "\n").encode()


def _line(key: SigningKey, namespaces: str = "session-recording@zsp,evidence@zsp") -> str:
    return f'{IDENTITY} namespaces="{namespaces}" {key.public.openssh}'


def build_parts(
    tmp: Path, key: SigningKey, *, patterns: list[re.Pattern[bytes]] | None = None, incomplete: bool = False
) -> Parts:
    """Two sessions (one under a grant, one by a user with a hostile name), their audit events."""
    tmp.mkdir(parents=True, exist_ok=True)
    a = _record(tmp / "a.zsprec", key, 1, "alice", GRANT)
    b = _record(tmp / "b.zsprec", key, 2, HOSTILE, None, seal=not incomplete)
    audit = Audit(key)
    audit.event("user.create", "alice", user="carol")
    audit.tx()
    audit.event("access_request.create", "alice", grant_id=GRANT, target="srv", login="root", reason="INC-42 disk")
    audit.event("access_request.approve", "bob", grant_id=GRANT, target="srv", login="root")
    audit.tx()
    audit.event("target.create", "alice", target="db")
    audit.tx()
    audit.event("session.start", "alice", session_id=a.sid, grant_id=GRANT, target="srv", login="root")
    audit.event("session.start", HOSTILE, session_id=b.sid, target="srv", login="root")
    audit.tx()
    audit.event("session.end", "alice", session_id=a.sid, grant_id=GRANT, head=a.head.hex(), reason="exit")
    audit.event("user.login", "dave")
    if not incomplete:
        audit.event("session.end", HOSTILE, session_id=b.sid, head=b.head.hex(), reason="exit")
    audit.tx()
    audit.event("user.login", "dave")
    audit.tx()
    excerpt, seqs = audit.excerpt({a.sid, b.sid}, {GRANT})
    files: dict[str, bytes] = {
        "README.txt": b"Check with ssh-keygen -Y verify, sha256sum -c SHA256SUMS, then python3 verify.py.\n",
        "allowed_signers": (_line(key) + "\n").encode(),
        "verify.py": VERIFY_PY.read_bytes(),
        "audit/excerpt.zsplog": excerpt,
        "audit/events.jsonl": audit.jsonl(seqs),
    }
    recordings = []
    for s in sorted([a, b], key=lambda s: s.sid):
        data = s.path.read_bytes()
        redactions: list[dict[str, Any]] = []
        if patterns:
            out = io.BytesIO()
            result: RedactionResult = redact_recording(io.BytesIO(data), out, patterns, [key.public])
            data = out.getvalue()
            redactions = [r.to_json() for r in result.redactions]
        files[f"recordings/{s.sid}.zsprec"] = data
        report = verify(s.path, [key.public])
        ends = [q for q in seqs if msgpack.unpackb(audit.rows[q][1])[3].get("type") == "session.end"]
        end = [q for q in ends if msgpack.unpackb(audit.rows[q][1])[3].get("session_id") == s.sid]
        recordings.append(
            {
                "session_id": s.sid,
                "path": f"recordings/{s.sid}.zsprec",
                "outcome": s.outcome,
                "frames": report.frames,
                "signed_frames": report.signed_frames,
                "final_head": s.head.hex(),
                "signer_fingerprint": key.public.fingerprint,
                "session_end_seq": end[0] if end else None,
                "redactions": redactions,
            }
        )
        files[f"sessions/{s.sid}.json"] = _json(
            {
                "id": s.sid,
                "user": s.user,
                "target": "srv",
                "login": "root",
                "grant_id": s.grant_id,
                "command": None,
                "client": "127.0.0.1:40000",
                "started_at": "2026-09-21T12:00:00.000000Z",
                "ended_at": None if s.outcome != "VALID" else "2026-09-21T12:05:00.000000Z",
                "exit_status": 0,
                "end_reason": "exit",
                "head": s.head.hex(),
            }
        )
    files[f"grants/{GRANT}.json"] = _json(
        {
            "id": GRANT,
            "requester": "alice",
            "target": "srv",
            "login": "root",
            "reason": "INC-42 disk",
            "state": "expired",
            "approved": [{"by": "bob", "at": "2026-09-21T11:59:00.000000Z"}],
        }
    )
    export_id = "0196a0c4-5000-7000-8000-0000000e0001"
    manifest = {
        "format": "zsp-evidence-bundle",
        "version": 1,
        "export_id": export_id,
        "exported_at": "2026-09-21T13:00:00.000000Z",
        "exported_by": "carol",
        "via": "console",
        "zsp_version": "test",
        "host": HOST,
        "namespace": EVIDENCE_NAMESPACE,
        "identity": IDENTITY,
        "recordings": recordings,
        "audit": {
            "path": "audit/excerpt.zsplog",
            "log_id": str(audit.log_id),
            "signer_fingerprint": key.public.fingerprint,
            "events": seqs,
        },
        "redaction": {"patterns": len(patterns or []), "replacement": "*"},
    }
    return Parts(export_id, files, manifest, [a, b])


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode()


def finish(parts: Parts, key: SigningKey, *, signers: list[SigningKey] | None = None) -> dict[str, bytes]:
    """Every member: the manifest over the files (signed by ``key``), its signature, SHA256SUMS."""
    files = dict(parts.files)
    manifest = copy.deepcopy(parts.manifest)
    manifest["signer"] = {"key": key.public.openssh, "fingerprint": key.public.fingerprint}
    manifest["signers"] = sorted(
        ({"key": k.public.openssh, "fingerprint": k.public.fingerprint} for k in (signers or [key])),
        key=lambda k: k["fingerprint"],
    )
    manifest["files"] = [
        {
            "path": p,
            "size": len(d),
            "sha256": hashlib.sha256(d).hexdigest(),
            "blake3": blake3(d).hexdigest(),
        }
        for p, d in sorted(files.items())
    ]
    mbytes = (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()
    files["manifest.json"] = mbytes
    files["manifest.json.sig"] = sign_sshsig(key, mbytes, EVIDENCE_NAMESPACE).encode()
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {p}\n" for p, d in sorted(files.items()) if p != "SHA256SUMS"
    ).encode()
    return files


ORDER = ("README.txt", "manifest.json", "manifest.json.sig", "allowed_signers", "SHA256SUMS", "verify.py")


def write_tar(members: dict[str, bytes], export_id: str, path: Path, *, top: str | None = None) -> Path:
    top = top or f"zsp-evidence-{export_id}"
    names = [n for n in ORDER if n in members] + sorted(n for n in members if n not in ORDER)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = (
                len(members[name]), 0o644, 1_790_000_000, 0, 0, "", ""
            )  # fmt: skip
            tar.addfile(info, io.BytesIO(members[name]))
    return path


# --------------------------------------------------------------------------- running verify.py


@pytest.fixture(scope="module")
def pypath(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only symlinks to blake3, msgpack, cryptography and cffi: verify.py's world."""
    d = tmp_path_factory.mktemp("pypath")
    for name in ("blake3", "msgpack", "cryptography", "cffi", "_cffi_backend"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        src = origin.parent if origin.name == "__init__.py" else origin
        (d / src.name).symlink_to(src)
    return d


def run(
    pypath: Path, *args: str | Path, script: Path = VERIFY_PY, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(pypath), "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-S", str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or pypath,
        timeout=60,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> Iterator[tuple[Path, Parts, dict[str, bytes]]]:
    tmp = tmp_path_factory.mktemp("verify-py")
    parts = build_parts(tmp / "rec", key)
    members = finish(parts, key)
    yield tmp, parts, members


def _tar(world: tuple[Path, Parts, dict[str, bytes]], name: str, members: dict[str, bytes], **kw: Any) -> Path:
    tmp, parts, _ = world
    return write_tar(members, parts.export_id, tmp / f"{name}.tar", **kw)


def test_verify_py_runs_without_zsp(pypath: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-S", "-c", "import blake3, msgpack, cryptography\nimport zsp_tui"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(pypath)},
        cwd=pypath,
    )
    assert p.returncode == 1 and "No module named 'zsp_tui'" in p.stderr, p.stderr


def test_verify_py_is_python_3_9_and_imports_nothing_of_zsp() -> None:
    """A responder's Python may be old: the grammar is 3.9's, and only the stdlib and the three
    packages are imported (the suite's Python is newer, so this is checked on the source)."""
    import ast

    tree = ast.parse(VERIFY_PY.read_text(), feature_version=(3, 9))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"blake3", "msgpack", "cryptography"}
    # 3.10+ names that 3.9's stdlib lacks
    code = VERIFY_PY.read_text()
    assert not re.search(r"^[^#\n]*(strict=True|datetime\.UTC|from datetime import .*\bUTC\b)", code, re.M)


def test_a_valid_bundle_from_the_tar_and_from_its_directory(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey
) -> None:
    tmp, parts, members = world
    tar = _tar(world, "valid", members)
    p = run(pypath, tar)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"VALID  {tar}") and key.public.fingerprint in p.stdout
    assert "trusted ONLY because the bundle's own allowed_signers" in p.stdout
    # the hostile user name is shown escaped, never raw
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "eve\\x1b]0;pwned\\x07\\x1b[2J" in p.stdout
    # extracted with stock tar, run with no argument: the script checks its own directory
    dest = tmp / "extracted"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True)
    top = dest / f"zsp-evidence-{parts.export_id}"
    p = run(pypath, script=top / "verify.py", cwd=tmp)
    assert p.returncode == 0, p.stdout + p.stderr
    # pinned: the bastion's key from elsewhere
    pinned = tmp / "pinned_signers"
    pinned.write_text(_line(key) + "\n")
    p = run(pypath, "--json", "--allowed-signers", pinned, tar)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert (report["outcome"], report["trust"], report["signer_fingerprint"]) == (
        "VALID",
        "pinned",
        key.public.fingerprint,
    )
    assert [r["outcome"] for r in report["recordings"]] == ["VALID", "VALID"]
    assert report["recordings"][0]["head"] == parts.manifest["recordings"][0]["final_head"]


def test_the_stock_openssh_signature_is_what_verify_py_checks(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey
) -> None:
    """An SSHSIG made by ssh-keygen itself passes verify.py's check; one for another namespace fails."""
    tmp, _, members = world
    signer = SigningKey.generate()
    keyfile = tmp / "id_ed25519"
    signer.save(keyfile)
    msg = tmp / "manifest.json"
    msg.write_bytes(members["manifest.json"])
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(keyfile), "-n", EVIDENCE_NAMESPACE, str(msg)], check=True
    )
    armored = (tmp / "manifest.json.sig").read_bytes()
    assert standalone.verify_sshsig(armored, msg.read_bytes(), EVIDENCE_NAMESPACE) == signer.public.raw
    with pytest.raises(ValueError, match="does not verify"):
        standalone.verify_sshsig(armored, msg.read_bytes() + b" ", EVIDENCE_NAMESPACE)
    other = dict(members, **{"manifest.json.sig": sign_sshsig(key, members["manifest.json"], "file").encode()})
    p = run(pypath, _tar(world, "ns", other))
    assert p.returncode == 1 and "bad-signature" in p.stdout and "namespace 'file'" in p.stdout, p.stdout


def _flip(data: bytes, at: int | None = None) -> bytes:
    b = bytearray(data)
    b[len(b) // 2 if at is None else at] ^= 0x01
    return bytes(b)


def _resign(
    world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey, edit: Callable[[Parts], None]
) -> dict[str, bytes]:
    """A bundle changed by whoever holds the signing key: the manifest is made and signed anew."""
    _, parts, _ = world
    p = copy.deepcopy(parts)
    edit(p)
    return finish(p, key)


def _edit_json_line(files: dict[str, bytes]) -> None:
    lines = files["audit/events.jsonl"].decode().splitlines()
    ev = json.loads(lines[0])
    ev["actor"] = "mallory"
    lines[0] = json.dumps(ev, sort_keys=True)
    files["audit/events.jsonl"] = ("\n".join(lines) + "\n").encode()


def _edit_excerpt(files: dict[str, bytes]) -> None:
    ex = msgpack.unpackb(files["audit/excerpt.zsplog"])
    frames = ex["segments"][0]["frames"]
    body = msgpack.unpackb(frames[0][0])
    body[3]["reason"] = "INC-43 nothing to see"
    frames[0][0] = msgpack.packb(body, use_bin_type=True)
    files["audit/excerpt.zsplog"] = msgpack.packb(ex, use_bin_type=True)


def _edited(members: dict[str, bytes], edit: Callable[[dict[str, bytes]], None]) -> dict[str, bytes]:
    out = dict(members)
    edit(out)
    return out


def _hide_event(parts: Parts) -> None:
    parts.manifest["audit"]["events"] = parts.manifest["audit"]["events"][1:]
    files = parts.files
    files["audit/events.jsonl"] = b"".join(files["audit/events.jsonl"].splitlines(keepends=True)[1:])


def _rec(parts: Parts) -> str:
    return f"recordings/{parts.sessions[0].sid}.zsprec"


TAMPERS: dict[str, tuple[Callable[[dict[str, bytes], Parts], dict[str, bytes]], str]] = {
    # (edit of the finished members, expected words in the report)
    "recording byte": (lambda m, p: {**m, _rec(p): _flip(m[_rec(p)])}, "hash-mismatch"),
    "manifest byte": (
        lambda m, p: {**m, "manifest.json": m["manifest.json"].replace(b'"carol"', b'"carla"')},
        "bad-signature",
    ),
    "signature byte": (
        lambda m, p: {**m, "manifest.json.sig": m["manifest.json.sig"].replace(b"A", b"B", 1)},
        "bad-signature",
    ),
    "file added": (lambda m, p: {**m, "notes.txt": b"trust me\n"}, "extra-file: notes.txt"),
    "file removed": (lambda m, p: {k: v for k, v in m.items() if not k.startswith("grants/")}, "missing-file"),
    "files swapped": (
        lambda m, p: {
            **m,
            f"sessions/{p.sessions[0].sid}.json": m[f"sessions/{p.sessions[1].sid}.json"],
            f"sessions/{p.sessions[1].sid}.json": m[f"sessions/{p.sessions[0].sid}.json"],
        },
        "hash-mismatch",
    ),
    "events.jsonl edited": (lambda m, p: _edited(m, _edit_json_line), "hash-mismatch: audit/events.jsonl"),
    "excerpt edited": (lambda m, p: _edited(m, _edit_excerpt), "hash-mismatch: audit/excerpt.zsplog"),
    "SHA256SUMS edited": (lambda m, p: {**m, "SHA256SUMS": m["SHA256SUMS"][:-1] + b"x\n"}, "SHA256SUMS"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_each_tamper_is_corrupt_with_its_reason(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], name: str
) -> None:
    _, parts, members = world
    edit, expected = TAMPERS[name]
    p = run(pypath, _tar(world, "t-" + name.replace(" ", "-"), edit(dict(members), parts)))
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.startswith("CORRUPT") and expected in p.stdout, p.stdout


def test_an_allowed_signers_swapped_for_another_key(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey, other_key: SigningKey
) -> None:
    tmp, parts, members = world
    swapped = {**members, "allowed_signers": (_line(other_key) + "\n").encode()}
    p = run(pypath, _tar(world, "swap", swapped))
    assert p.returncode == 1 and "untrusted-signer" in p.stdout, p.stdout
    # the whole bundle re-signed by another key is consistent, but not the bastion's: pinning says so
    forged_parts = copy.deepcopy(parts)
    forged_parts.files["allowed_signers"] = (_line(other_key) + "\n").encode()
    forged = _tar(world, "forged", finish(forged_parts, other_key))
    p = run(pypath, forged)
    assert p.returncode == 1 and "recording" in p.stdout and "untrusted-signer" in p.stdout, p.stdout
    pinned = tmp / "pinned"
    pinned.write_text(_line(key) + "\n")
    p = run(pypath, "--allowed-signers", pinned, forged)
    assert p.returncode == 1 and "untrusted-signer" in p.stdout and other_key.public.fingerprint in p.stdout, p.stdout


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("excerpt edited", lambda p: _edit_excerpt(p.files), "audit: audit excerpt segment 0: a frame does not match"),
        ("events.jsonl edited", lambda p: _edit_json_line(p.files), "differs from the signed excerpt"),
        ("event hidden", _hide_event, "concerns this export but is not listed"),
        (
            "session.end head",
            lambda p: p.manifest["recordings"][0].__setitem__("session_end_seq", p.manifest["audit"]["events"][0]),
            "session-end-mismatch",
        ),
        (
            "grant reason",
            lambda p: p.files.__setitem__(
                f"grants/{GRANT}.json", p.files[f"grants/{GRANT}.json"].replace(b"INC-42", b"INC-99")
            ),
            "metadata-mismatch",
        ),
        (
            "manifest outcome",
            lambda p: p.manifest["recordings"][1].__setitem__("frames", 3),
            "recording",
        ),
    ],
)
def test_deeper_tampers_by_whoever_holds_the_key(
    pypath: Path,
    world: tuple[Path, Parts, dict[str, bytes]],
    key: SigningKey,
    name: str,
    edit: Callable[[Parts], None],
    expected: str,
) -> None:
    """Re-signed after the edit, so the hashes hold: the chain, signature and cross checks catch it."""
    p = run(pypath, _tar(world, "k-" + name.replace(" ", "-"), _resign(world, key, edit)))
    assert p.returncode == 1 and p.stdout.startswith("CORRUPT") and expected in p.stdout, p.stdout


def test_redacted_bundle_and_a_redaction_touching_an_unlisted_frame(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey
) -> None:
    tmp, _, _ = world
    parts = build_parts(tmp / "red", key, patterns=[re.compile(rb"hunter2")])
    tar = write_tar(finish(parts, key), parts.export_id, tmp / "redacted.tar")
    p = run(pypath, "--json", tar)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    listed = [e["frame"] for e in parts.manifest["recordings"][0]["redactions"]]
    assert listed == [2, 3] and report["recordings"][0]["redacted_frames"] == listed
    assert b"hunter" not in parts.files[_rec(parts)]
    p = run(pypath, tar)
    assert "redacted frames 2, 3" in p.stdout
    # one more frame changed, not listed: re-signed, so only the chain can tell
    frames = _split(parts.files[_rec(parts)])
    body = msgpack.unpackb(frames[5][1])
    assert body[0] == FrameKind.OUTPUT
    body[3] = b"*" * len(body[3])
    frames[5] = (b"", msgpack.packb(body, use_bin_type=True), frames[5][2])
    parts.files[_rec(parts)] = b"ZSPREC\x00\x01" + b"".join(len(b).to_bytes(4, "big") + b + h for _, b, h in frames)
    p = run(pypath, write_tar(finish(parts, key), parts.export_id, tmp / "overredacted.tar"))
    assert p.returncode == 1 and "CORRUPT at frame 5: hash-mismatch" in p.stdout, p.stdout


def _split(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos : pos + 4], data[pos + 4 : pos + 4 + n], data[pos + 4 + n : pos + 36 + n]))
        pos += 36 + n
    return out


def test_an_incomplete_recording_is_exit_1_and_named(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey
) -> None:
    tmp, _, _ = world
    parts = build_parts(tmp / "inc", key, incomplete=True)
    p = run(pypath, write_tar(finish(parts, key), parts.export_id, tmp / "incomplete.tar"))
    assert p.returncode == 1 and p.stdout.startswith("INCOMPLETE"), p.stdout + p.stderr
    assert parts.sessions[1].sid in p.stdout


def test_unsafe_tars(pypath: Path, world: tuple[Path, Parts, dict[str, bytes]]) -> None:
    _, parts, members = world
    two_tops = _tar(world, "two-tops", members)
    with tarfile.open(two_tops, "a", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("elsewhere/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    link = _tar(world, "link", members)
    with tarfile.open(link, "a", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"zsp-evidence-{parts.export_id}/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    dotdot = _tar(world, "dotdot", {**members, "../../escape": b"x"})
    for path, why in ((two_tops, "a second top directory"), (link, "is a link"), (dotdot, "'..'")):
        p = run(pypath, path)
        assert p.returncode == 1 and "unsafe-tar" in p.stdout and why in p.stdout, p.stdout
    p = run(pypath, _tar(world, "top-name", members, top="zsp-evidence-other"))
    assert p.returncode == 1 and "top directory" in p.stdout, p.stdout


def test_unreadable_input_is_exit_2(pypath: Path, world: tuple[Path, Parts, dict[str, bytes]]) -> None:
    tmp, _, _ = world
    garbage = tmp / "garbage.tar"
    garbage.write_bytes(b"not a tar at all\n" * 10)
    empty_dir = tmp / "empty-dir"
    empty_dir.mkdir(exist_ok=True)
    for target in (tmp / "missing.tar", garbage, empty_dir):
        p = run(pypath, target)
        assert p.returncode == 2 and p.stdout == "" and "ERROR" in p.stderr, (target, p.stdout, p.stderr)
    p = run(pypath, "--json", garbage)
    assert p.returncode == 2 and json.loads(p.stdout)["outcome"] == "ERROR"
    bad = tmp / "bad_signers"
    bad.write_text(f"{IDENTITY} cert-authority {base64.b64encode(b'x').decode()}\n")
    p = run(pypath, "--allowed-signers", bad, garbage)
    assert p.returncode == 2 and "--allowed-signers" in p.stderr


# --------------------------------------------------------------------------- allowed_signers


@pytest.mark.parametrize(
    ("options", "namespace", "outcome"),
    [
        ('namespaces="session-recording@zsp,evidence@zsp"', EVIDENCE_NAMESPACE, "trusted"),
        ('namespaces="session-recording@zsp"', EVIDENCE_NAMESPACE, "left out"),
        ('namespaces="*,!evidence@zsp"', EVIDENCE_NAMESPACE, "left out"),
        ('namespaces="evid?nce@*"', EVIDENCE_NAMESPACE, "trusted"),
        ('valid-after="20260101Z",valid-before="20270101000000Z"', EVIDENCE_NAMESPACE, "window"),
        ('valid-after="20260101"', EVIDENCE_NAMESPACE, "refused: local times"),
        ("cert-authority", EVIDENCE_NAMESPACE, "refused: cert-authority"),
        ("no-touch-required", EVIDENCE_NAMESPACE, "refused: unknown option"),
        ("namespaces=evidence@zsp", EVIDENCE_NAMESPACE, "refused: double quotes"),
        ('namespaces="a",namespaces="b"', EVIDENCE_NAMESPACE, "refused: more than one"),
        ('valid-after="20270101Z",valid-before="20260101Z"', EVIDENCE_NAMESPACE, "refused: not after"),
    ],
)
def test_allowed_signers_options(key: SigningKey, options: str, namespace: str, outcome: str) -> None:
    line = f"{IDENTITY},backup@* {options} {key.public.openssh} a comment\n"
    text = "# header\n\nzsp@old ssh-rsa AAAAB3NzaC1yc2E= skipped\n" + line
    if outcome.startswith("refused"):
        with pytest.raises(ValueError, match=re.escape(outcome.split(": ", 1)[1])) as e:
            standalone.parse_allowed_signers(text, namespace)
        assert str(e.value).startswith("line 4:")
        return
    keys = standalone.parse_allowed_signers(text, namespace)
    if outcome == "left out":
        assert keys == []
        return
    (k,) = keys
    assert k.raw == key.public.raw and standalone.match_pattern_list(IDENTITY, k.principals) == 1
    if outcome == "window":
        assert (k.valid_after, k.valid_before) == (1767225600, 1798761600)
        assert k.valid_at(1798761600 * 10**6) and not k.valid_at((1798761600 + 1) * 10**6)
        assert not k.valid_at(1767225599 * 10**6)


def test_a_manifest_key_outside_its_window_is_untrusted(
    pypath: Path, world: tuple[Path, Parts, dict[str, bytes]], key: SigningKey
) -> None:
    """ssh-keygen -Y verify checks valid-before at the time of verification, and so does verify.py."""
    _, parts, _ = world
    p2 = copy.deepcopy(parts)
    p2.files["allowed_signers"] = (
        f'{IDENTITY} namespaces="session-recording@zsp,evidence@zsp",valid-before="20200101Z" {key.public.openssh}\n'
    ).encode()
    p = run(pypath, _tar(world, "expired", finish(p2, key)))
    assert p.returncode == 1 and "untrusted-signer" in p.stdout and "valid-after/valid-before" in p.stdout, p.stdout


# --------------------------------------------------------------------------- a real export


def test_a_redacted_zsp_export_verifies_with_verify_py_and_zsp_verify(
    pypath: Path, reviewed_template: Any, tmp_path: Path
) -> None:
    """``zsp export --redact`` of a session recorded through the real bastion: verify.py (no zsp on
    its path), run from the extracted bundle, and ``zsp verify`` agree: VALID, the same frames
    redacted, and the secret gone from every byte of the bundle's recording."""
    from tests.export_helpers import extract, zsp
    from tests.tui_helpers import copy_reviewed

    rv = copy_reviewed(reviewed_template, tmp_path)
    sid = rv.ids["shell"]
    tar = tmp_path / "redacted.tar"
    r = zsp("export", "--data", str(rv.data.root), "--as", "carol", sid, "--redact", "web-[0-9a-f]+", "-o", str(tar))
    assert r.code == 0, r.err
    top = extract(tar, tmp_path / "x")
    assert (top / "verify.py").read_bytes() == VERIFY_PY.read_bytes()
    assert b"web-7f" not in (top / "recordings" / f"{sid}.zsprec").read_bytes()
    p = run(pypath, "--json", script=top / "verify.py", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    mine = json.loads(p.stdout)
    listed = [x["frame"] for x in json.loads((top / "manifest.json").read_text())["recordings"][0]["redactions"]]
    assert listed and mine["recordings"][0]["redacted_frames"] == listed
    z = zsp("verify", "--json", str(tar))
    assert z.code == 0, z.out + z.err
    (theirs,) = json.loads(z.out)
    assert theirs["outcome"] == mine["outcome"] == "VALID"
    assert theirs["recordings"][0]["redacted_frames"] == listed
    assert theirs["recordings"][0]["head"] == mine["recordings"][0]["head"]
