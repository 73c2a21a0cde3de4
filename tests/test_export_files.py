"""Transferred files in the evidence bundle (issue 13): every bundle's signed manifest lists the
files its sessions moved; ``zsp export --files`` adds their hash-checked content under generated
names; ``zsp verify`` and the standalone verify.py check both against the recordings.

The session is stock OpenSSH ``sftp`` through the real bastion to a real sshd (tests/test_sftp.py's
environment), with ``max_file_record_bytes`` at 64 KiB so one upload is kept by hash only. Forged
bundles are rewritten with tarfile and re-signed with a key of the forger's own, as in
tests/test_export_tamper.py, and must be CORRUPT with the same reason in both verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import BundleProblem, Outcome, verify_bundle
from tests.bastion_env import Env
from tests.bundle_forgery import read, reseal, write
from tests.export_helpers import extract, members, zsp
from tests.independent_verifier import standalone
from tests.test_sftp import SFTP_POLICY, _env, sftp
from zsp_tui.bastion.export import export_argv

HOSTILE = "evil\x1b[2J\x1b]0;owned\x07\u202e.txt"
OLD_BUNDLE = Path(__file__).parent / "data" / "bundles" / "v1-sftp.tar"
"""A real bundle of an SFTP session (an upload and a download of report.csv), made by zsp at
e9f8a97, before bundles listed transferred files (manifest version 1)."""


@dataclass
class Moved:
    env: Env
    sid: str
    remote: Path
    bodies: dict[str, bytes]
    out: Path


@pytest.fixture(scope="module")
def moved(tmp_path_factory) -> Iterator[Moved]:
    """One SFTP session: report.csv, a file with a hostile name, big.bin (past the 64 KiB cap: hash
    only) uploaded, then report.csv downloaded back."""
    root = tmp_path_factory.mktemp("export-files")
    env = _env(root, SFTP_POLICY, "[bastion]\nmax_file_record_bytes = 65536\n")
    try:
        env.grant("srv")
        remote = root / "remote"
        remote.mkdir()
        bodies = {"report.csv": b"a,b\n1,2\n", HOSTILE: b"x\n", "big.bin": os.urandom(100_000)}
        for i, body in enumerate(bodies.values()):
            (root / f"src{i}").write_bytes(body)
        batch = "".join(f'put {root}/src{i} "{remote}/{name}"\n' for i, name in enumerate(bodies))
        batch += f"get {remote}/report.csv {root}/back.csv\n"
        p = sftp(env, batch)
        assert p.returncode == 0, p.stderr
        out = root / "out"
        out.mkdir()
        yield Moved(env, env.svc.sessions()[-1].id, remote, bodies, out)
    finally:
        env.stop()
        if env.sshd:
            env.sshd.stop()


def export(m: Moved, name: str, *args: str) -> tuple[Path, object]:
    path = m.out / name
    r = zsp("export", "--data", str(m.env.data.root), "--as", "alice", *args, "-o", str(path), "--force")
    return path, r


@pytest.fixture(scope="module")
def with_files(moved: Moved) -> Path:
    path, r = export(moved, "with-files.tar", moved.sid, "--files")
    assert r.code == 0, r.err
    return path


@pytest.fixture(scope="module")
def forger() -> SigningKey:
    return SigningKey.generate(comment="mallory")


def manifest_of(path: Path) -> dict:
    _, files = read(path)
    return json.loads(files["manifest.json"])


def both_verifiers(path: Path) -> tuple[object, object]:
    """zsp's verdict and the standalone verify.py's on the same bundle."""
    return verify_bundle(path), standalone.verify_bundle(str(path))


def corrupt(path: Path, problem: BundleProblem, *words: str) -> None:
    """CORRUPT in both verifiers, with the same problem code, the detail naming ``words``."""
    ours, theirs = both_verifiers(path)
    assert ours.outcome is Outcome.CORRUPT, ours
    assert ours.problem is problem, (ours.problem, ours.detail)
    for w in words:
        assert w in ours.detail, ours.detail
    assert (theirs.outcome, theirs.problem) == ("CORRUPT", problem.value), (theirs.problem, theirs.detail)


def forged(src: Path, dest: Path, key: SigningKey, change: Callable[[dict, dict[str, bytes]], None]) -> Path:
    """``src`` with ``change(manifest, files)`` applied, every hash recomputed and re-signed by ``key``."""
    top, files = read(src)
    m = json.loads(files["manifest.json"])
    real = [" ".join(ln.split()[-2:]) for ln in files["allowed_signers"].decode().splitlines() if ln[:1] not in "#"]
    change(m, files)
    reseal(files, key, m, recording_keys=real)
    return write(dest, top, files)


# --- listing and content -------------------------------------------------------------------------


def test_every_bundle_lists_the_transferred_files_in_its_signed_manifest(moved: Moved) -> None:
    path, r = export(moved, "plain.tar", moved.sid)
    assert r.code == 0, r.err
    raw = next(f for f in members(path) if f.name.endswith("/manifest.json"))
    with tarfile.open(path) as tar:
        text = tar.extractfile(raw).read()
    assert b"\x1b" not in text and b"\x07" not in text  # the hostile path is escaped JSON, never raw
    m = json.loads(text)
    assert m["version"] == 2
    t = m["transfers"]
    assert (t["content"], t["content_limit"], t["sha256sums"]) == (False, 1 << 30, [])
    got = [(e["direction"], e["recorded_path"], e["size"], e["sha256"], e["content_complete"]) for e in t["files"]]
    r_sha = hashlib.sha256(moved.bodies["report.csv"]).hexdigest()
    assert got == [
        ("upload", f"{moved.remote}/report.csv", 8, r_sha, True),
        ("upload", f"{moved.remote}/{HOSTILE}", 2, hashlib.sha256(b"x\n").hexdigest(), True),
        ("upload", f"{moved.remote}/big.bin", 100_000, hashlib.sha256(moved.bodies["big.bin"]).hexdigest(), False),
        ("download", f"{moved.remote}/report.csv", 8, r_sha, True),
    ]
    assert [e["index"] for e in t["files"]] == [0, 1, 2, 3]
    assert all(e["session_id"] == moved.sid and e["event"] == "sftp.file" for e in t["files"])
    assert all(e["time"].startswith("20") and e["time"].endswith("Z") for e in t["files"])
    assert all(e["content"] is None and "without --files" in e["content_note"] for e in t["files"])
    assert not [x for x in members(path) if "/files/" in x.name]
    # zsp files numbers and describes them the same way (the recording is the source of truth)
    listed = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "files", moved.sid, "--json", "--data", str(moved.env.data.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [(f["index"], f["path"], f["sha256"]) for f in json.loads(listed.stdout)] == [
        (e["index"], e["recorded_path"], e["sha256"]) for e in t["files"]
    ]
    ours, theirs = both_verifiers(path)
    assert ours.outcome is Outcome.VALID and (ours.transfers, ours.transfer_content) == (4, 0), ours
    assert theirs.outcome == "VALID" and (theirs.transfers, theirs.transfer_content) == (4, 0), theirs.detail


def test_files_puts_the_kept_content_in_under_generated_names(moved: Moved, with_files: Path) -> None:
    m = manifest_of(with_files)
    names = [e["content"] for e in m["transfers"]["files"]]
    assert names == [
        "files/0001-upload-report.csv",
        "files/0002-upload-evil_2J_0_owned_.txt",
        None,
        "files/0004-download-report.csv",
    ]
    capped = m["transfers"]["files"][2]
    assert capped["content_kept"] <= 65536 and not capped["content_complete"]
    assert f"keeps {capped['content_kept']} of its 100000 bytes: hash only" in capped["content_note"]
    _, files = read(with_files)
    assert files["files/0001-upload-report.csv"] == moved.bodies["report.csv"]
    assert files["files/0002-upload-evil_2J_0_owned_.txt"] == b"x\n"
    assert files["files/0004-download-report.csv"] == moved.bodies["report.csv"]
    assert sorted(p for p in files if p.startswith("files/")) == sorted(n for n in names if n)
    for e in m["transfers"]["files"]:  # each file listed in the manifest with its recorded sha256
        if e["content"]:
            (listing,) = [f for f in m["files"] if f["path"] == e["content"]]
            assert listing["sha256"] == e["sha256"] and listing["size"] == e["size"]
    v = zsp("verify", "--json", str(with_files))
    assert v.code == 0, v.out + v.err
    report = json.loads(v.out)
    report = report[0] if isinstance(report, list) else report
    assert (report["outcome"], report["transfers"], report["transfer_content"]) == ("VALID", 4, 3)
    human = zsp("verify", str(with_files))
    assert "4 transferred file(s) listed as the recordings give them; 3 with their content" in human.out
    events = [e for e in moved.env.data.service().audit_events() if e.event == "recording.export"]
    exported = [e for e in events if e.fields["file"] == str(with_files)]
    assert exported and exported[-1].fields["files"] is True


def test_a_responder_checks_them_with_ssh_keygen_and_sha256sum(moved: Moved, with_files: Path, tmp_path) -> None:
    top = extract(with_files, tmp_path / "x")
    m = json.loads((top / "manifest.json").read_text())
    with open(top / "manifest.json", "rb") as f:
        ok = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", "allowed_signers", "-I", m["identity"], "-n", "evidence@zsp",
             "-s", "manifest.json.sig"],
            stdin=f, cwd=top, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    assert ok.returncode == 0 and 'Good "evidence@zsp" signature' in ok.stdout, ok.stderr
    readme = (top / "README.txt").read_text()
    # step 3 of README.txt (every file against the signed manifest) covers files/ too
    from zsp_tui.evidence.bundle import SED_FILES

    step3 = subprocess.run(["bash", "-c", f"{SED_FILES} manifest.json | sha256sum -c"], cwd=top,
                           capture_output=True, text=True, timeout=20)  # fmt: skip
    assert step3.returncode == 0, step3.stdout + step3.stderr
    assert "files/0001-upload-report.csv: OK" in step3.stdout
    # the transferred files against the recorded sha256 the manifest carries: README.txt's one-liner
    (line,) = [ln.strip() for ln in readme.splitlines() if "files\\/" in ln]
    sums = subprocess.run(["bash", "-c", line], cwd=top, capture_output=True, text=True, timeout=20)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.splitlines() == [
        "files/0001-upload-report.csv: OK",
        "files/0002-upload-evil_2J_0_owned_.txt: OK",
        "files/0004-download-report.csv: OK",
    ]
    # the same by hand: sha256sum of the extracted file is the sha256 the recording gave it
    got = subprocess.run(["sha256sum", "files/0004-download-report.csv"], cwd=top, capture_output=True, text=True)
    assert got.stdout.split()[0] == m["transfers"]["files"][3]["sha256"]
    # a changed byte fails it
    (top / "files" / "0001-upload-report.csv").write_bytes(b"a,b\n1,3\n")
    sums = subprocess.run(["bash", "-c", line], cwd=top, capture_output=True, text=True, timeout=20)
    assert sums.returncode != 0 and "files/0001-upload-report.csv: FAILED" in sums.stdout
    # verify.py from the bundle, run as a responder runs it (its own copy, checked by step 3 above)
    (top / "files" / "0001-upload-report.csv").write_bytes(moved.bodies["report.csv"])
    py = subprocess.run([sys.executable, "verify.py"], cwd=top, capture_output=True, text=True, timeout=60)
    assert py.returncode == 0 and py.stdout.startswith("VALID"), py.stdout + py.stderr
    assert "4 transferred file(s) listed" in py.stdout


def test_the_ssh_export_path_takes_files(moved: Moved, tmp_path: Path) -> None:
    argv = export_argv(Path("/d"), "alice", f"export {moved.sid} --files")
    assert "--files" in argv and argv.index("--files") < argv.index("--")
    p = subprocess.run(
        [*moved.env.ssh_argv("alice", "zsp", "-T"), "export", moved.sid, "--files"],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    out = tmp_path / "remote.tar"
    out.write_bytes(p.stdout)
    report = verify_bundle(out)
    assert report.outcome is Outcome.VALID and report.transfer_content == 3, report
    assert next(e["content"] for e in manifest_of(out)["transfers"]["files"]) == "files/0001-upload-report.csv"


def test_files_is_for_bundles(moved: Moved) -> None:
    _, r = export(moved, "t.txt", moved.sid, "--format", "text", "--files")
    assert r.code == 2 and "--files is for bundles" in r.err


def test_the_content_limit_lists_files_past_it_by_hash_only(moved: Moved, monkeypatch) -> None:
    from zsp_tui.evidence import transfers

    monkeypatch.setattr(transfers, "TRANSFER_CONTENT_LIMIT", 10)  # room for report.csv (8) and not the next
    path, r = export(moved, "limited.tar", moved.sid, "--files")
    assert r.code == 0, r.err
    t = manifest_of(path)["transfers"]
    assert t["content_limit"] == 10
    assert [e["content"] for e in t["files"]] == [
        "files/0001-upload-report.csv",
        "files/0002-upload-evil_2J_0_owned_.txt",
        None,
        None,
    ]
    assert "over the bundle's content limit" in t["files"][3]["content_note"]
    assert verify_bundle(path).outcome is Outcome.VALID


async def test_the_review_app_dialog_exports_with_files(moved: Moved) -> None:
    from tests.test_export_remote import until
    from zsp_tui.tui import ReviewApp, ReviewContext
    from zsp_tui.tui.screens.export import EXPORT_DIR, ExportDialog

    app = ReviewApp(ReviewContext.open(moved.env.data, "alice", "ssh"))
    folder = moved.env.data.root / EXPORT_DIR
    async with app.run_test(size=(160, 40)) as pilot:
        app.open_replay(moved.sid)
        await until(pilot, lambda: type(app.screen).__name__ == "ReplayScreen", "replay")
        await pilot.pause(0.3)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExportDialog), "the export dialog")
        dialog = app.screen
        dialog.query_one("#files").value = True
        await pilot.pause(0.1)
        assert "--files" in str(dialog.query_one("#note").render())
        await pilot.click("#export")
        await until(pilot, lambda: folder.is_dir() and any(folder.glob("*.tar")), "the bundle")
        await until(pilot, lambda: not app.workers, "the export to finish")
    (bundle,) = folder.glob("*.tar")
    report = verify_bundle(bundle)
    assert report.outcome is Outcome.VALID and report.transfer_content == 3, report


# --- a faulty recording: content that does not match its hash ----------------------------------


def test_content_that_does_not_match_its_recorded_hash_is_left_out_and_said(moved: Moved, tmp_path: Path) -> None:
    env = moved.env
    rec = tmp_path / "faulty.zsprec"
    w = RecordingWriter(
        FileSink(rec, sync_dir=False),
        env.data.signing_key(),
        SessionMeta(user="alice", target="srv", login="srv", grant_id=None, term="", cols=80, rows=24, host="b"),
    )
    good, bad = b"the real content\n", b"other content\n"
    for name, body in (("/tmp/good.txt", good), ("/tmp/../../etc/passwd", bad)):
        w.event("sftp.data", "", path=name, direction="upload", offset=0, data=base64.b64encode(body).decode())
        w.event("sftp.file", "", path=name, direction="upload", size=len(good), sha256=hashlib.sha256(good).hexdigest(),
                content_kept=len(body), content_complete=True)  # fmt: skip
    w.close(0, "exit")
    path, r = export(moved, "faulty.tar", str(rec), "--files")
    assert r.code == 1, r.err
    assert "refused: transferred file 2 of session" in r.err and "does not hash to its recorded sha256" in r.err
    t = manifest_of(path)["transfers"]
    assert [e["content"] for e in t["files"]] == ["files/0001-upload-good.txt", None]
    assert "does not hash to its recorded sha256" in t["files"][1]["content_note"]
    assert t["files"][1]["recorded_path"] == "/tmp/../../etc/passwd"
    _, files = read(path)
    assert files["files/0001-upload-good.txt"] == good and not any("passwd" in p for p in files)
    ours, theirs = both_verifiers(path)
    assert ours.outcome is Outcome.VALID and theirs.outcome == "VALID"


# --- forged bundles --------------------------------------------------------------------------------


def test_an_altered_byte_is_caught(with_files: Path, forger, tmp_path: Path) -> None:
    top, files = read(with_files)
    files["files/0001-upload-report.csv"] = b"a,b\n1,3\n"
    corrupt(write(tmp_path / "a.tar", top, files), BundleProblem.HASH_MISMATCH, "files/0001-upload-report.csv")

    changed = b"a,b\n1,3\n"

    def alter(m: dict, files: dict[str, bytes]) -> None:
        files["files/0001-upload-report.csv"] = changed
        m["transfers"]["sha256sums"][0] = f"{hashlib.sha256(changed).hexdigest()}  files/0001-upload-report.csv"

    # re-hashed and re-signed: the file no longer has the sha256 the recording gives it
    corrupt(forged(with_files, tmp_path / "b.tar", forger, alter), BundleProblem.TRANSFERS, "does not hash")

    def alter_entry_too(m: dict, files: dict[str, bytes]) -> None:
        alter(m, files)
        m["transfers"]["files"][0]["sha256"] = hashlib.sha256(changed).hexdigest()

    # ... and the entry made to agree with it: the recording disagrees, naming the key and frame
    corrupt(forged(with_files, tmp_path / "c.tar", forger, alter_entry_too), BundleProblem.TRANSFERS,
            "transferred file 1: sha256", "frame")  # fmt: skip


def test_an_extra_file_is_caught(with_files: Path, forger, tmp_path: Path) -> None:
    top, files = read(with_files)
    files["files/0005-upload-extra"] = b"planted\n"
    corrupt(write(tmp_path / "a.tar", top, files), BundleProblem.EXTRA_FILE, "files/0005-upload-extra")
    resealed = forged(with_files, tmp_path / "b.tar", forger, lambda m, f: f.update({"files/0005-upload-extra": b"x"}))
    corrupt(resealed, BundleProblem.EXTRA_FILE, "not the content of a transferred file")


def test_a_missing_file_is_caught(with_files: Path, forger, tmp_path: Path) -> None:
    top, files = read(with_files)
    del files["files/0002-upload-evil_2J_0_owned_.txt"]
    corrupt(write(tmp_path / "a.tar", top, files), BundleProblem.MISSING_FILE, "files/0002")
    gone = forged(with_files, tmp_path / "b.tar", forger, lambda m, f: f.pop("files/0002-upload-evil_2J_0_owned_.txt"))
    corrupt(gone, BundleProblem.MISSING_FILE, "transferred file 2")

    def unlist(m: dict, files: dict[str, bytes]) -> None:  # the entry dropped as well: the count is off
        files.pop("files/0002-upload-evil_2J_0_owned_.txt")
        del m["transfers"]["files"][1]
        del m["transfers"]["sha256sums"][1]

    corrupt(forged(with_files, tmp_path / "c.tar", forger, unlist), BundleProblem.TRANSFERS,
            "lists 3 transferred file(s), the recordings hold 4")  # fmt: skip


def _with_member(src: Path, dest: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    top, files = read(src)
    write(dest, top, files)
    with tarfile.open(dest, "a") as tar:
        tar.addfile(info, io.BytesIO(data) if data else None)
    return dest


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("{top}/files/../../escaped.txt", tarfile.REGTYPE),
        ("/tmp/escaped.txt", tarfile.REGTYPE),
        ("{top}/files/0009-upload-link", tarfile.SYMTYPE),
        ("{top}/files/0009-upload-hard", tarfile.LNKTYPE),
    ],
)
def test_a_member_renamed_to_escape_is_unsafe(with_files: Path, tmp_path: Path, name: str, kind: bytes) -> None:
    top, _ = read(with_files)
    info = tarfile.TarInfo(name.format(top=top))
    info.type = kind
    data = b""
    if kind == tarfile.REGTYPE:
        data = b"escaped\n"
        info.size = len(data)
    else:
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else f"{top}/manifest.json"
    corrupt(_with_member(with_files, tmp_path / "x.tar", info, data), BundleProblem.UNSAFE_TAR)


def test_a_content_name_that_is_not_the_rule_is_caught(with_files: Path, forger, tmp_path: Path) -> None:
    def rename(m: dict, files: dict[str, bytes]) -> None:
        files["files/report.csv"] = files.pop("files/0001-upload-report.csv")
        m["transfers"]["files"][0]["content"] = "files/report.csv"
        m["transfers"]["sha256sums"][0] = m["transfers"]["sha256sums"][0].replace(
            "0001-upload-report.csv", "report.csv"
        )

    corrupt(forged(with_files, tmp_path / "a.tar", forger, rename), BundleProblem.TRANSFERS, "is not its name")


def test_duplicate_names_are_caught(with_files: Path, forger, tmp_path: Path) -> None:
    top, _files = read(with_files)
    info = tarfile.TarInfo(f"{top}/files/0001-upload-report.csv")
    info.size = 3
    corrupt(_with_member(with_files, tmp_path / "a.tar", info, b"dup"), BundleProblem.UNSAFE_TAR, "appears twice")

    def twice(m: dict, files: dict[str, bytes]) -> None:  # two entries naming one file
        m["transfers"]["files"][3]["content"] = "files/0001-upload-report.csv"
        files.pop("files/0004-download-report.csv")
        m["transfers"]["sha256sums"][2] = m["transfers"]["sha256sums"][0]

    corrupt(forged(with_files, tmp_path / "b.tar", forger, twice), BundleProblem.TRANSFERS, "transferred file 4")


def test_content_for_a_capped_file_is_caught(moved: Moved, with_files: Path, forger, tmp_path: Path) -> None:
    def plant(m: dict, files: dict[str, bytes]) -> None:  # the first 64 KiB the recording kept, passed off as all
        e = m["transfers"]["files"][2]
        e["content"], e["content_note"] = "files/0003-upload-big.bin", ""
        files["files/0003-upload-big.bin"] = moved.bodies["big.bin"][:65536]
        m["transfers"]["sha256sums"].insert(2, f"{e['sha256']}  files/0003-upload-big.bin")

    corrupt(forged(with_files, tmp_path / "a.tar", forger, plant), BundleProblem.TRANSFERS,
            "transferred file 3: the recording does not hold all of it")  # fmt: skip


def test_the_list_cannot_be_edited(with_files: Path, forger, tmp_path: Path) -> None:
    def path(m: dict, files: dict[str, bytes]) -> None:
        m["transfers"]["files"][1]["recorded_path"] = "/srv/harmless.txt"

    corrupt(forged(with_files, tmp_path / "a.tar", forger, path), BundleProblem.TRANSFERS, "recorded_path")

    def direction(m: dict, files: dict[str, bytes]) -> None:
        m["transfers"]["files"][3]["direction"] = "upload"

    corrupt(forged(with_files, tmp_path / "b.tar", forger, direction), BundleProblem.TRANSFERS, "direction")

    def dropped(m: dict, files: dict[str, bytes]) -> None:  # a file removed from the list: back to version 1
        m["version"] = 1
        del m["transfers"]
        for p in [p for p in files if p.startswith("files/")]:
            files.pop(p)

    report = verify_bundle(forged(with_files, tmp_path / "c.tar", forger, dropped))
    assert report.outcome is Outcome.VALID and report.trust == "bundle"  # self-consistent, and signed by...
    assert report.signer_fingerprint == forger.public.fingerprint  # ...someone else: pinning catches that
    assert any("4 transferred file(s) in the recordings are not listed" in n for n in report.notes)

    def limit(m: dict, files: dict[str, bytes]) -> None:
        m["transfers"]["content_limit"] = 4

    corrupt(forged(with_files, tmp_path / "d.tar", forger, limit), BundleProblem.MALFORMED, "content_limit")

    def off(m: dict, files: dict[str, bytes]) -> None:
        m["transfers"]["content"] = False

    corrupt(forged(with_files, tmp_path / "e.tar", forger, off), BundleProblem.TRANSFERS, "content is false")


# --- bundles made before this change ------------------------------------------------------------------


def test_a_version_1_bundle_still_verifies(tmp_path: Path) -> None:
    ours, theirs = both_verifiers(OLD_BUNDLE)
    assert ours.outcome is Outcome.VALID and theirs.outcome == "VALID", (ours.detail, theirs.detail)
    assert any("2 transferred file(s) in the recordings are not listed" in n for n in ours.notes)
    assert any("2 transferred file(s)" in n for n in theirs.notes)
    v = zsp("verify", str(OLD_BUNDLE))
    assert v.code == 0 and v.out.startswith("VALID"), v.out + v.err
    # and its own verify.py (the old one) agrees, run from the extracted bundle
    top = extract(OLD_BUNDLE, tmp_path / "x")
    py = subprocess.run([sys.executable, "verify.py"], cwd=top, capture_output=True, text=True, timeout=60)
    assert py.returncode == 0 and py.stdout.startswith("VALID"), py.stdout + py.stderr


# --- exact paths, cut files, unsigned tails ----------------------------------------------------------


def _writer(moved: Moved, path: Path) -> RecordingWriter:
    return RecordingWriter(
        FileSink(path, sync_dir=False),
        moved.env.data.signing_key(),
        SessionMeta(user="alice", target="srv", login="srv", grant_id=None, term="", cols=80, rows=24, host="b"),
    )


def test_a_path_that_is_not_utf8_and_a_cut_file_are_listed_exactly(moved: Moved, forger, tmp_path: Path) -> None:
    rec = tmp_path / "raw.zsprec"
    w = _writer(moved, rec)
    raw = b"/tmp/caf\xe9\x1b[31m.txt"  # as the bastion writes it: text with escapes, and the exact bytes
    fields = {"path": raw.decode("utf-8", "backslashreplace"), "path_b64": base64.b64encode(raw).decode()}
    body = b"bytes\n"
    w.event("sftp.data", "", direction="download", offset=0, data=base64.b64encode(body).decode(), **fields)
    w.event("sftp.file", "", direction="download", size=6, sha256=hashlib.sha256(body).hexdigest(), content_kept=6,
            content_complete=True, **fields)  # fmt: skip
    w.event("sftp.file_incomplete", "", path="/tmp/cut.bin", uploaded=10, downloaded=4, content_kept=10)
    w.close(0, "exit")
    path, r = export(moved, "raw.tar", str(rec), "--files")
    assert r.code == 0, r.err
    exact, cut = manifest_of(path)["transfers"]["files"]
    assert base64.b64decode(exact["recorded_path_b64"]) == raw and exact["recorded_path"] == fields["path"]
    assert exact["content"] == "files/0001-download-caf_xe9_31m.txt"
    assert (cut["event"], cut["direction"], cut["size"], cut["sha256"], cut["content_complete"]) == (
        "sftp.file_incomplete", "both", 10, "", False,
    )  # fmt: skip
    assert cut["content"] is None and "ended while the file was open" in cut["content_note"]
    _, files = read(path)
    assert files["files/0001-download-caf_xe9_31m.txt"] == body
    ours, theirs = both_verifiers(path)
    assert ours.outcome is Outcome.VALID and theirs.outcome == "VALID", (ours.detail, theirs.detail)

    def other_bytes(m: dict, files: dict[str, bytes]) -> None:
        m["transfers"]["files"][0]["recorded_path_b64"] = base64.b64encode(b"/tmp/cafe.txt").decode()

    corrupt(forged(path, tmp_path / "a.tar", forger, other_bytes), BundleProblem.TRANSFERS, "recorded_path_b64")


def test_only_signed_file_events_are_listed(moved: Moved, tmp_path: Path) -> None:
    """A session still running: a file closed after the last checkpoint is not evidence yet."""
    rec = tmp_path / "live.zsprec"
    now = [1_000_000_000]
    w = RecordingWriter(
        FileSink(rec, sync_dir=False),
        moved.env.data.signing_key(),
        SessionMeta(user="alice", target="srv", login="srv", grant_id=None, term="", cols=80, rows=24, host="b"),
        clock=lambda: now[0],
    )
    for name in ("/tmp/signed.txt", "/tmp/unsigned.txt"):
        w.event("sftp.file", "", path=name, direction="upload", size=0, sha256=hashlib.sha256(b"").hexdigest(),
                content_kept=0, content_complete=True)  # fmt: skip
        now[0] += 61_000_000_000
        if name == "/tmp/signed.txt":
            w.tick()  # a checkpoint falls due: the first file is signed, the second will not be
    w.flush()
    w.abandon()
    path, r = export(moved, "live.tar", str(rec), "--files")
    assert r.code == 0, r.err
    assert [e["recorded_path"] for e in manifest_of(path)["transfers"]["files"]] == ["/tmp/signed.txt"]
    ours, theirs = both_verifiers(path)
    assert ours.outcome is Outcome.INCOMPLETE and theirs.outcome == "INCOMPLETE", (ours.detail, theirs.detail)
    assert ours.transfers == 1 and theirs.transfers == 1


def test_redact_refuses_a_bundle_whose_files_still_match(moved: Moved) -> None:
    """--redact changes terminal bytes only; a transferred file's content is kept as it crossed, so
    a pattern that still matches it refuses the export (nothing is written)."""
    path, r = export(moved, "redacted.tar", moved.sid, "--files", "--redact", "1,2")
    assert r.code == 2 and "files/0001-upload-report.csv in the bundle" in r.err, r.err
    assert not path.exists()
    path, r = export(moved, "redacted.tar", moved.sid, "--redact", "1,2")  # without the content: nothing to hide
    assert r.code == 0 and "no --redact pattern matched" in r.err, r.err


def test_an_extracted_bundle_is_checked_the_same_way(with_files: Path, tmp_path: Path) -> None:
    top = extract(with_files, tmp_path / "x")
    ours, theirs = both_verifiers(top)
    assert ours.outcome is Outcome.VALID and theirs.outcome == "VALID" and ours.transfer_content == 3
    content = top / "files" / "0001-upload-report.csv"
    content.unlink()
    content.symlink_to("/etc/hostname")  # the content made a link to a file of the responder's machine
    corrupt(top, BundleProblem.UNSAFE_TAR, "files/0001-upload-report.csv")


def test_spool_files_gives_what_files_content_gives(moved: Moved, tmp_path: Path) -> None:
    """The exporter's on-disk assembly (replay.spool_files) and TransferredFile.content agree."""
    from recorder import load_trusted_keys
    from replay import files, only_signed, spool_files, verify_frames

    path = next(s.path for s in moved.env.svc.sessions() if s.id == moved.sid)
    trusted = load_trusted_keys(moved.env.data.allowed_signers_path)
    with open(path, "rb") as f:
        in_memory = files(only_signed(verify_frames(f, trusted, source=path)), content=True)
    spool = tmp_path / "spool"
    spool.mkdir()
    with open(path, "rb") as f:
        on_disk = spool_files(only_signed(verify_frames(f, trusted, source=path)), spool)
    assert [s.file for s in on_disk] == in_memory
    for s, f in zip(on_disk, in_memory, strict=True):
        if f.content_complete:
            assert s.content is not None and s.content.read_bytes() == f.content() and not s.mismatch
        else:
            assert s.content is None and "hash only" in s.note
    assert sorted(p.name for p in spool.iterdir()) == ["0.content", "1.content", "3.content"]  # no chunk logs left
