"""Tampered evidence bundles are CORRUPT, each with its reason.

One bundle is exported from sessions recorded through the real bastion; each test rewrites its
tar in Python (tarfile) the way an attacker would. "Resealed" bundles go further: the attacker
also recomputes every hash, SHA256SUMS and allowed_signers and signs the manifest with a key of
their own, so the deeper checks (recordings, audit excerpt, session.end heads) must catch them,
and pinning the real key must catch the re-signing itself.
"""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path

import msgpack
import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import BundleProblem, Outcome, verify_bundle
from tests.bundle_forgery import read, reseal, write
from tests.export_helpers import prepare_data, zsp


@pytest.fixture(scope="module")
def original(reviewed_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    rv, _ = prepare_data(reviewed_template, root)
    path = root / "evidence.tar"
    r = zsp("export", "--data", str(rv.data.root), "--as", "carol", rv.ids["shell"], rv.ids["exec"], "-o", str(path))
    assert r.code == 0, r.err
    assert verify_bundle(path).outcome is Outcome.VALID
    return rv, path


@pytest.fixture(scope="module")
def forger() -> SigningKey:
    return SigningKey.generate(comment="mallory")






def flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)




def corrupt(path: Path, problem: BundleProblem, *words: str, **kw) -> None:
    report = verify_bundle(path, **kw)
    assert report.outcome is Outcome.CORRUPT, report
    assert report.problem is problem, (report.problem, report.detail)
    for w in words:
        assert w in report.detail, report.detail


def _real(rv) -> str:
    return rv.data.signing_key().public.openssh


def _rec(files: dict[str, bytes]) -> list[str]:
    return sorted(p for p in files if p.startswith("recordings/"))


def test_flipped_byte_in_a_recording(original, forger, tmp_path: Path) -> None:
    rv, path = original
    top, files = read(path)
    rec = _rec(files)[0]
    files[rec] = flip(files[rec], len(files[rec]) // 2)
    corrupt(write(tmp_path / "a.tar", top, files), BundleProblem.HASH_MISMATCH, rec)
    # re-hashed and re-signed by a forger: the recording's own chain still catches it
    reseal(files, forger, recording_keys=[_real(rv)])
    corrupt(write(tmp_path / "b.tar", top, files), BundleProblem.RECORDING, rec, "hash-mismatch")


def test_flipped_byte_in_the_manifest_or_its_signature(original, tmp_path: Path) -> None:
    _, path = original
    top, files = read(path)
    edited = dict(files, **{"manifest.json": files["manifest.json"].replace(b'"carol"', b'"carom"')})
    corrupt(write(tmp_path / "m.tar", top, edited), BundleProblem.BAD_SIGNATURE, "manifest.json.sig", "does not verify")
    sig = files["manifest.json.sig"]
    other = b"A" if sig[100:101] != b"A" else b"B"  # another base64 digit: the armor still decodes
    edited = dict(files, **{"manifest.json.sig": sig[:100] + other + sig[101:]})
    corrupt(write(tmp_path / "s.tar", top, edited), BundleProblem.BAD_SIGNATURE, "manifest.json.sig")
    # through the command: exit 1, the reason on one line
    r = zsp("verify", str(tmp_path / "m.tar"))
    assert r.code == 1 and r.out.startswith("CORRUPT") and "bad-signature" in r.out


def test_file_added_removed_or_swapped(original, forger, tmp_path: Path) -> None:
    rv, path = original
    top, files = read(path)
    corrupt(
        write(tmp_path / "add.tar", top, dict(files, **{"notes.txt": b"trust me\n"})),
        BundleProblem.EXTRA_FILE,
        "notes.txt",
    )
    session_json = next(p for p in files if p.startswith("sessions/"))
    removed = {p: d for p, d in files.items() if p != session_json}
    corrupt(write(tmp_path / "rm.tar", top, removed), BundleProblem.MISSING_FILE, session_json)
    a, b = _rec(files)
    swapped = dict(files, **{a: files[b], b: files[a]})
    corrupt(write(tmp_path / "swap.tar", top, swapped), BundleProblem.HASH_MISMATCH)
    reseal(swapped, forger, recording_keys=[_real(rv)])
    corrupt(write(tmp_path / "swap2.tar", top, swapped), BundleProblem.RECORDING, "is not a recording of session")


def test_allowed_signers_swapped(original, forger, tmp_path: Path) -> None:
    rv, path = original
    top, files = read(path)
    other = dict(files, **{"allowed_signers": f'zsp@x namespaces="evidence@zsp" {forger.public.openssh}\n'.encode()})
    corrupt(write(tmp_path / "k.tar", top, other), BundleProblem.UNTRUSTED_SIGNER, "manifest.json is signed by")
    # the forger also re-signs the manifest: consistent in itself, so only trust tells it apart
    reseal(files, forger, recording_keys=[_real(rv)])
    forged = write(tmp_path / "k2.tar", top, files)
    loose = zsp("verify", str(forged))
    assert loose.code == 0 and loose.out.startswith("VALID"), loose.out
    assert (
        forger.public.fingerprint in loose.out and "trusted ONLY because the bundle's own allowed_signers" in loose.out
    )
    assert rv.data.signing_key().public.fingerprint not in loose.out
    pin = tmp_path / "real_signers"
    pin.write_text(f'zsp@h namespaces="session-recording@zsp,evidence@zsp" {_real(rv)}\n')
    pinned = zsp("verify", "--allowed-signers", str(pin), str(forged))
    assert pinned.code == 1 and pinned.out.startswith("CORRUPT") and "untrusted-signer" in pinned.out
    assert forger.public.fingerprint in pinned.out
    corrupt(forged, BundleProblem.UNTRUSTED_SIGNER, forger.public.fingerprint, trusted=[rv.data.signing_key().public])


def test_audit_excerpt_or_events_edited(original, forger, tmp_path: Path) -> None:
    rv, path = original
    top, files = read(path)
    # an event's actor changed inside the excerpt (same length, so msgpack still decodes)
    excerpt = files["audit/excerpt.zsplog"]
    at = excerpt.index(b"carol") if b"carol" in excerpt else excerpt.index(b"alice")
    edited = dict(files, **{"audit/excerpt.zsplog": excerpt[:at] + b"eve" + excerpt[at + 3 :]})
    corrupt(write(tmp_path / "e0.tar", top, edited), BundleProblem.HASH_MISMATCH, "audit/excerpt.zsplog")
    reseal(edited, forger, recording_keys=[_real(rv)])
    corrupt(write(tmp_path / "e1.tar", top, edited), BundleProblem.AUDIT, "does not match its chain head")
    # a frame dropped from a segment (the chain around it breaks)
    ex = msgpack.unpackb(excerpt)
    ex["segments"][0]["frames"].pop(0)
    dropped = dict(files, **{"audit/excerpt.zsplog": msgpack.packb(ex, use_bin_type=True)})
    reseal(dropped, forger, recording_keys=[_real(rv)])
    corrupt(write(tmp_path / "e2.tar", top, dropped), BundleProblem.AUDIT)
    # the readable copy edited: it must equal the signed excerpt
    lines = files["audit/events.jsonl"].decode().splitlines()
    ev = json.loads(lines[0])
    ev["actor"] = "nobody"
    lines[0] = json.dumps(ev, sort_keys=True)
    readable = dict(files, **{"audit/events.jsonl": ("\n".join(lines) + "\n").encode()})
    corrupt(write(tmp_path / "j0.tar", top, readable), BundleProblem.HASH_MISMATCH, "audit/events.jsonl")
    reseal(readable, forger, recording_keys=[_real(rv)])
    corrupt(
        write(tmp_path / "j1.tar", top, readable),
        BundleProblem.AUDIT,
        "events.jsonl",
        "differs from the signed excerpt",
    )
    # an event of these sessions left out of the manifest's list (hidden)
    m = json.loads(files["manifest.json"])
    m["audit"]["events"].pop()
    hidden = dict(files)
    reseal(hidden, forger, recording_keys=[_real(rv)], manifest=m)
    corrupt(write(tmp_path / "h.tar", top, hidden), BundleProblem.AUDIT)


def test_session_end_head_not_matching(original, forger, tmp_path: Path) -> None:
    """A forged recording of the same session, sealed by the forger's key (trusted by the bundle's
    own allowed_signers): every file checks out except against the bastion's signed session.end."""
    rv, path = original
    top, files = read(path)
    m = json.loads(files["manifest.json"])
    entry = next(x for x in m["recordings"] if x["session_id"] == rv.ids["exec"])
    rec = tmp_path / "forged.zsprec"
    w = RecordingWriter(
        FileSink(rec),
        forger,
        SessionMeta(
            user="alice", target="local", login=rv.svc.session(rv.ids["exec"]).login, command="echo hello-exec; exit 3"
        ),
        session_id=uuid.UUID(rv.ids["exec"]),
    )
    w.output(b"nothing to see\r\n")
    info = w.close(0, "exit")
    files[entry["path"]] = rec.read_bytes()
    entry.update(
        frames=info.frames,
        signed_frames=info.frames - 1,
        final_head=info.head_hex,
        signer_fingerprint=forger.public.fingerprint,
    )
    reseal(files, forger, recording_keys=[_real(rv)], manifest=m)
    report = verify_bundle(write(tmp_path / "end.tar", top, files))
    assert report.problem is BundleProblem.SESSION_END, report
    assert rv.ids["exec"] in report.detail and "session.end" in report.detail


def test_unknown_version(original, forger, tmp_path: Path) -> None:
    rv, path = original
    top, files = read(path)
    m = json.loads(files["manifest.json"])
    m["version"] = 3
    reseal(files, forger, recording_keys=[_real(rv)], manifest=m)
    corrupt(write(tmp_path / "v.tar", top, files), BundleProblem.UNKNOWN_VERSION, "unknown version 3")


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "absolute", "second-top"])
def test_unsafe_tar(original, tmp_path: Path, kind: str) -> None:
    _, path = original
    top, files = read(path)
    if kind == "dotdot":
        info = tarfile.TarInfo(f"{top}/../escape.txt")
        info.size = 0
    elif kind == "symlink":
        info = tarfile.TarInfo(f"{top}/recordings/link.zsprec")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
    elif kind == "absolute":
        info = tarfile.TarInfo("/tmp/zsp-evidence-x/README.txt")
        info.size = 0
    else:
        info = tarfile.TarInfo("elsewhere/README.txt")
        info.size = 0
    bad = write(tmp_path / f"{kind}.tar", top, files, [info])
    corrupt(bad, BundleProblem.UNSAFE_TAR)
    r = zsp("verify", str(bad))
    assert r.code == 1 and "unsafe-tar" in r.out
