"""``zsp export --format bundle`` and ``zsp verify BUNDLE`` end to end: sessions recorded through the
real bastion to a real sshd (the review template), exported, then checked with zsp, with stock
``ssh-keygen -Y verify`` and ``sha256sum -c``, and against the audit log."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.export_helpers import extract, members, prepare_data, zsp, zsp_process


@pytest.fixture(scope="module")
def exp(reviewed_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    rv, live = prepare_data(reviewed_template, root)
    out = root / "out"
    out.mkdir()
    return rv, live, out


def _export(rv, *args: str, who: str = "carol"):
    return zsp("export", "--data", str(rv.data.root), "--as", who, *args)


def _exports(rv) -> list[dict]:
    with rv.data.service().store.transaction(write=False) as tx:
        return [json.loads(line) for line in _audit_json(rv, tx)]


def _audit_json(rv, tx):
    from zsp_tui.audit import AuditLog

    for ev in AuditLog(rv.data.signing_key()).events(tx):
        if ev.event == "recording.export":
            yield json.dumps(ev.to_json())


def _readme_step(top: Path, number: str) -> str:
    """The command lines of one numbered step of the bundle's README.txt, joined as a shell reads them."""
    lines = (top / "README.txt").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(number))
    cmd: list[str] = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("       "):
            break
        cmd.append(ln.strip())
    return "\n".join(cmd).replace("\\\n", " ")


@pytest.fixture(scope="module")
def bundle(exp):
    """One bundle of alice's shell on the sshd target and her exec session, exported by id."""
    rv, _, out = exp
    path = out / "two.tar"
    r = _export(rv, rv.ids["shell"], rv.ids["exec"], "-o", str(path))
    assert r.code == 0, r.err
    return path, r


def test_round_trip_by_id(exp, bundle, tmp_path: Path) -> None:
    rv, _, _ = exp
    path, r = bundle
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"exported 2 session(s) as bundle: {path} sha256 {sha}" in r.err

    # stock OpenSSH and coreutils, in the extracted directory, as README.txt says
    top = extract(path, tmp_path / "x")
    manifest = json.loads((top / "manifest.json").read_text())
    ident = manifest["identity"]
    with open(top / "manifest.json", "rb") as f:
        ok = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                "allowed_signers",
                "-I",
                ident,
                "-n",
                "evidence@zsp",
                "-s",
                "manifest.json.sig",
            ],
            stdin=f,
            cwd=top,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert ok.returncode == 0, ok.stderr
    assert f'Good "evidence@zsp" signature for {ident}' in ok.stdout
    assert rv.data.signing_key().public.fingerprint in ok.stdout
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True, timeout=20)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == len(members(path)) - 1
    assert f"ssh-keygen -Y verify -f allowed_signers -I {ident} -n evidence@zsp" in (top / "README.txt").read_text()
    # step 3 of README.txt, pasted as printed: every file against the SIGNED manifest, with sed and coreutils
    step3 = _readme_step(top, "3.")
    checked = subprocess.run(["bash", "-c", step3], cwd=top, capture_output=True, text=True, timeout=20)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(manifest["files"])
    # a forger who edits a recording and writes SHA256SUMS again passes `sha256sum -c SHA256SUMS`,
    # but not the check against the signed manifest
    forge = extract(path, tmp_path / "forge")
    rec = forge / manifest["recordings"][0]["path"]
    rec.write_bytes(rec.read_bytes().replace(b"DONE", b"D0NE"))
    names = sorted(str(p.relative_to(forge)) for p in forge.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    forged = subprocess.run(["sha256sum", *names], cwd=forge, capture_output=True, text=True, check=True).stdout
    (forge / "SHA256SUMS").write_text(forged)
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=forge, capture_output=True).returncode == 0
    caught = subprocess.run(["bash", "-c", step3], cwd=forge, capture_output=True, text=True, timeout=20)
    assert caught.returncode != 0 and f"{manifest['recordings'][0]['path']}: FAILED" in caught.stdout

    # the manifest: who, what, the final heads the bastion recorded at the end of each session
    assert manifest["format"] == "zsp-evidence-bundle" and manifest["version"] == 2
    assert manifest["transfers"] == {"content": False, "content_limit": 1 << 30, "files": [], "sha256sums": []}
    assert manifest["exported_by"] == "carol" and manifest["via"] == "console"
    assert top.name == f"zsp-evidence-{manifest['export_id']}"
    sessions = {s.id: s for s in rv.svc.sessions()}
    recs = manifest["recordings"]
    assert [x["session_id"] for x in recs] == sorted([rv.ids["shell"], rv.ids["exec"]])
    for x in recs:
        assert x["outcome"] == "VALID" and x["redactions"] == []
        assert x["final_head"] == sessions[x["session_id"]].head
        assert x["session_end_seq"] in manifest["audit"]["events"]
    grant = json.loads((top / "grants" / f"{sessions[rv.ids['shell']].grant_id}.json").read_text())
    assert grant["requester"] == "alice" and grant["approved"][0]["by"] == "bob"
    events = [json.loads(line) for line in (top / "audit" / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == manifest["audit"]["events"]
    assert {"access_request.create", "access_request.approve", "session.start", "session.end"} <= {
        e["event"] for e in events
    }

    # the tar itself: one top directory, regular files 0644, the documented order
    names = [m.name.split("/", 1)[1] for m in members(path)]
    assert names[:6] == [
        "README.txt",
        "manifest.json",
        "manifest.json.sig",
        "allowed_signers",
        "SHA256SUMS",
        "verify.py",
    ]
    assert names[-2:] == ["audit/excerpt.zsplog", "audit/events.jsonl"]
    assert all(m.isreg() and m.mode == 0o644 and m.uid == 0 for m in members(path))

    # zsp verify, in a process with no data dir at all
    v = zsp_process("verify", str(path), cwd=tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout.startswith(f"VALID       {path}")
    assert "trusted ONLY because the bundle's own allowed_signers" in v.stdout
    assert rv.data.signing_key().public.fingerprint in v.stdout
    # ...and its extracted directory, pinned to the bastion's key, as JSON
    pin = tmp_path / "pinned_signers"
    pin.write_text(f'zsp@h namespaces="session-recording@zsp,evidence@zsp" {rv.data.signing_key().public.openssh}\n')
    j = zsp_process("verify", "--json", "--allowed-signers", str(pin), str(top), cwd=tmp_path)
    assert j.returncode == 0, j.stdout + j.stderr
    (rep,) = json.loads(j.stdout)
    assert rep["outcome"] == "VALID" and rep["trust"] == "pinned" and len(rep["recordings"]) == 2

    # the audit log names the export: one event per session, with the file's sha256 and the exporter
    mine = [e for e in _exports(rv) if e["export_id"] == manifest["export_id"]]
    assert sorted(e["session_id"] for e in mine) == sorted([rv.ids["shell"], rv.ids["exec"]])
    for e in mine:
        assert (e["actor"], e["code"], e["sha256"], e["file"], e["sessions"], e["format"]) == (
            "carol",
            "ZSP2302I",
            sha,
            str(path),
            2,
            "bundle",
        )
        assert e["redacted"] is False


def test_prefix_and_user(exp) -> None:
    rv, live, out = exp
    r = _export(rv, rv.ids["local"][:13], "-o", str(out / "prefix.tar"))
    assert r.code == 0, r.err
    v = zsp("verify", str(out / "prefix.tar"))
    assert v.code == 0 and "1 recording(s): VALID " + rv.ids["local"] in v.out
    r = _export(rv, "--user", "alice", "-o", str(out / "alice.tar"))
    assert r.code == 0, r.err
    with tarfile.open(out / "alice.tar") as tar:
        top = tar.getnames()[0].split("/")[0]
        manifest = json.load(tar.extractfile(f"{top}/manifest.json"))
    assert sorted(x["session_id"] for x in manifest["recordings"]) == sorted(rv.ids.values())
    assert live not in json.dumps(manifest)


def test_incomplete_session_exported_as_incomplete(exp) -> None:
    rv, live, out = exp
    path = out / "live.tar"
    r = _export(rv, live, "-o", str(path))
    assert r.code == 0, r.err
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        (rec,) = json.load(tar.extractfile(f"{top}/manifest.json"))["recordings"]
    assert rec["outcome"] == "INCOMPLETE" and rec["session_end_seq"] is None and rec["frames"] > 1
    v = zsp("verify", str(path))
    assert v.code == 1
    assert v.out.startswith(f"INCOMPLETE  {path}") and f"INCOMPLETE {live}" in v.out


def test_refusals_leave_nothing(exp, monkeypatch) -> None:
    rv, _, out = exp
    before = sorted(out.iterdir())
    # an operator who is not a reviewer
    r = _export(rv, rv.ids["exec"], "-o", str(out / "dave.tar"), who="dave")
    assert r.code == 1 and "dave may not export recordings" in r.err
    # nothing selected
    r = _export(rv, "--user", "nobody", "-o", str(out / "none.tar"))
    assert r.code == 2 and "no sessions selected" in r.err
    # an existing file, without --force
    r = _export(rv, rv.ids["exec"], "-o", str(before[0]))
    assert r.code == 2 and "exists; pass --force" in r.err
    # a CORRUPT recording (a copy with one byte flipped, named by path)
    bad = out.parent / "bad.zsprec"
    data = bytearray(Path(rv.svc.session(rv.ids["exec"]).path).read_bytes())
    data[200] ^= 1
    bad.write_bytes(bytes(data))
    r = _export(rv, str(bad), "-o", str(out / "bad.tar"))
    assert r.code == 1 and "CORRUPT" in r.err and "nothing was written" in r.err
    # the audit event cannot be written (the database fails inside the real transaction)
    from zsp_tui.store import sqlite as store_sqlite

    def failing(self, rows):
        raise sqlite3.OperationalError("disk I/O error")

    count = len(_exports(rv))
    monkeypatch.setattr(store_sqlite._SqliteTx, "audit_append", failing)
    r = _export(rv, rv.ids["exec"], "-o", str(out / "unaudited.tar"))
    monkeypatch.undo()
    assert r.code == 1 and "audit event could not be written" in r.err
    assert len(_exports(rv)) == count
    assert sorted(out.iterdir()) == before  # no bundle, no temp file, no .sig
    # --force replaces, and the grant approver with --as is audited as who they are
    r = _export(rv, rv.ids["exec"], "-o", str(before[0]), "--force")
    assert r.code == 0, r.err
    assert zsp("verify", str(before[0])).code == 0


def test_large_recording_exported_in_bounded_memory(exp, tmp_path: Path) -> None:
    """A 24 MiB recording goes through export (copy, verify, hash, tar, self-check) without ever
    being held in memory: the peak of Python allocations stays far below its size."""
    import tracemalloc
    import uuid as _uuid

    from recorder import FileSink, RecordingWriter, SessionMeta

    rv, _, out = exp
    big = tmp_path / "big.zsprec"
    w = RecordingWriter(
        FileSink(big),
        rv.data.signing_key(),
        SessionMeta(user="alice", target="local", login="alice"),
        session_id=_uuid.UUID(int=0x01A22E28_0000_7000_8000_000000000001),
    )
    chunk = bytes(range(256)) * 256  # 64 KiB
    for i in range(384):
        w.output(chunk, at_ns=1_000_000 * (i + 1))
    w.close(0, "exit")
    assert big.stat().st_size > 24 << 20
    tracemalloc.start()
    try:
        r = _export(rv, str(big), "-o", str(out / "big.tar"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.code == 0, r.err
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert zsp("verify", str(out / "big.tar")).code == 0


def test_console_export_from_a_data_dir_without_users(tmp_path: Path) -> None:
    """`zsp record` alone: no users, nothing audited yet. The exporter is `console`, the excerpt is
    empty, and the export itself starts the audit log."""
    import uuid as _uuid

    from recorder import FileSink, RecordingWriter, SessionMeta
    from zsp_tui.datadir import DataDir

    d = DataDir(tmp_path / "data")
    d.init()
    rec = tmp_path / "mine.zsprec"
    w = RecordingWriter(
        FileSink(rec),
        d.signing_key(),
        SessionMeta(user="me", target="local", login="me"),
        session_id=_uuid.UUID(int=0x01A22E28_0000_7000_8000_0000000000AA),
    )
    w.output(b"hello\r\n", at_ns=1_000_000)
    w.close(0, "exit")
    r = zsp("export", "--data", str(d.root), str(rec), "-o", str(tmp_path / "mine.tar"))
    assert r.code == 0, r.err
    v = zsp("verify", "--json", str(tmp_path / "mine.tar"))
    (rep,) = json.loads(v.out)
    assert v.code == 0 and rep["exported_by"] == "console", rep
    # the standalone verify.py agrees on an excerpt of an empty log (it said CORRUPT once)
    script = Path(__file__).resolve().parents[1] / "zsp_tui" / "evidence" / "verify_bundle.py"
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "mine.tar")], capture_output=True, text=True)
    assert alone.returncode == 0 and alone.stdout.startswith("VALID"), alone.stdout + alone.stderr
    with d.service().store.transaction(write=False) as tx:
        from zsp_tui.audit import AuditLog

        (ev,) = [e for e in AuditLog(d.signing_key()).events(tx) if e.event == "recording.export"]
    assert ev.actor == "console" and ev.session_id == str(_uuid.UUID(int=0x01A22E28_0000_7000_8000_0000000000AA))
