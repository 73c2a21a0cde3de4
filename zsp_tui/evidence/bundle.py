"""The evidence bundle (docs/EXPORT.md): recordings, grants, audit excerpt, signed manifest.

One uncompressed POSIX tar under one top directory ``zsp-evidence-<export_id>/``, members in a
fixed order, every member a regular file (mode 0644, uid/gid 0, mtime = export time), so two
exports of the same evidence differ only where they must (id, time).

Memory stays bounded whatever the recordings' size: each recording is copied once (the bytes
present when the export began, so a live session growing meanwhile cannot change what was
verified), hashed while it is copied, verified from the copy (its transferred files read in the
same pass), redacted into a second copy if asked, and streamed into the tar. The finished tar is
verified by :func:`replay.verify_bundle` before it is handed out: zsp never gives out a bundle it
would itself call CORRUPT.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import replay
from recorder import EVIDENCE_NAMESPACE, SIGNATURE_NAMESPACE, FrameKind, Header, PublicKey, sign_sshsig
from replay import Outcome, Problem, VerificationReport

from .. import __version__
from ..clock import rfc3339
from ..commands._common import request_json
from ..exceptions import ExportRefused, UsageError
from ..models import AccessRequest, SessionRecord
from .audit import identity
from .excerpt import Excerpt, build_excerpt
from .files import Digests, HashingWriter, copy_prefix, digests_file, digests_of, temp_beside
from .job import ExportJob, Prepared, SelectedSession
from .redaction import redact, refuse_leftovers
from .transfers import SessionFiles, Transfers, collect, verify_with_files

__all__ = ["BUNDLE_FORMAT", "VERIFY_SOURCE", "prepare", "readme"]

BUNDLE_FORMAT = "zsp-evidence-bundle"
BUNDLE_VERSION = 2
"""Version 2 added ``transfers`` (the sessions' transferred files) and ``files/`` (their content)."""
VERIFY_SOURCE = Path(__file__).with_name("verify_bundle.py")
"""The standalone verifier shipped as ``verify.py`` (copied byte for byte)."""

_PLACEHOLDER_VERIFY = b'''#!/usr/bin/env python3
"""Placeholder: this zsp build has no standalone verifier yet. Use `zsp verify BUNDLE`."""
import sys

sys.exit("verify.py: not included in this build of zsp; check the bundle with `zsp verify` or ssh-keygen")
'''


@dataclass(frozen=True, slots=True)
class _Recording:
    session_id: str
    spool: Path
    digests: Digests
    report: VerificationReport
    redactions: tuple[Any, ...]
    record: SessionRecord | None
    grant: AccessRequest | None
    transfers: SessionFiles


def _json(obj: object) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _kind_name(kind: object) -> str:
    if isinstance(kind, str):
        return kind
    return "output" if kind == FrameKind.OUTPUT else "input"


def _copy_recording(s: SelectedSession, work: Path, n: int) -> tuple[Path, Digests]:
    """The recording's bytes as they are now, copied to ``work``."""
    spool = work / f"{n}.zsprec"
    try:
        with open(s.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return spool, copy_prefix(f, spool, size)
    except OSError as exc:
        raise UsageError(f"cannot read the recording {s.path}: {exc.strerror or exc}") from None


def _verified(
    s: SelectedSession, spool: Path, digests: Digests, trusted: Sequence[PublicKey], files_dir: Path, *, content: bool
) -> tuple[VerificationReport, Digests, SessionFiles]:
    """Verify the copy at ``spool`` and read its file events in the same pass (see
    :func:`verify_with_files`); refuse what is not evidence."""
    name = s.session_id or str(s.path)
    report, moved = verify_with_files(spool, trusted, files_dir, content=content)
    if report.outcome is Outcome.CORRUPT:
        where = "the preamble" if report.bad_frame is None else f"frame {report.bad_frame}"
        problem = report.problem.value if report.problem else "corrupt"
        raise ExportRefused(session_id=name, reason=f"recording is CORRUPT at {where}: {problem}: {report.detail}")
    if report.header is None or report.head is None:
        raise ExportRefused(session_id=name, reason="recording has no intact frames; there is nothing to export")
    if s.session_id is not None and str(report.header.session_id) != s.session_id:
        raise ExportRefused(
            session_id=name, reason=f"the file {s.path} is a recording of session {report.header.session_id}"
        )
    if report.problem is Problem.TORN and report.bad_offset is not None:
        # a frame still being written (a live session) or cut by a crash: not evidence, left out
        os.truncate(spool, report.bad_offset)
        shutil.rmtree(files_dir, ignore_errors=True)
        report, moved = verify_with_files(spool, trusted, files_dir, content=content)
        digests = digests_file(spool)
    return report, digests, moved


def _redact(
    job: ExportJob, spool: Path, trusted: Sequence[PublicKey], sid: str
) -> tuple[Path, Digests, tuple[Any, ...]]:
    out = spool.with_suffix(".redacted")
    with open(spool, "rb") as src, open(out, "xb") as raw:
        w = HashingWriter(raw)
        size = os.fstat(src.fileno()).st_size
        result = redact(src, w, job.patterns, trusted, size=size, session=sid, tmpdir=str(spool.parent))
    redactions = tuple(sorted(result.redactions, key=lambda r: r.frame))
    if not redactions:
        out.unlink()
        return spool, digests_file(spool), ()
    return out, w.digests(), redactions


def _session_json(sid: str, rec: SessionRecord | None, report: VerificationReport) -> dict[str, Any]:
    if rec is not None:
        return {
            "id": rec.id,
            "user": rec.user,
            "target": rec.target,
            "login": rec.login,
            "grant_id": rec.grant_id,
            "command": rec.command,
            "client": rec.client,
            "started_at": rfc3339(rec.started_at),
            "ended_at": rfc3339(rec.ended_at) if rec.ended_at else None,
            "exit_status": rec.exit_status,
            "end_reason": rec.end_reason,
            "head": rec.head,
        }
    # A recording named by path that the data dir's store does not list: what its header says.
    h = _header(report)
    return {
        "id": sid,
        "user": h.user,
        "target": h.target,
        "login": h.login,
        "grant_id": h.grant_id,
        "command": h.command,
        "client": None,
        "started_at": rfc3339(datetime.fromtimestamp(h.started_at_us / 1e6, UTC)),
        "ended_at": None,
        "exit_status": None,
        "end_reason": None,
        "head": None,
    }


def _allowed_signers(job: ExportJob, keys: Mapping[str, PublicKey]) -> tuple[bytes, list[PublicKey]]:
    """The bundle's allowed_signers: the manifest signer for both namespaces, every other key for
    recordings only, each with the validity window the data dir gives it."""
    principal = identity()
    windows = {k.raw: k for k in job.data.trusted_keys()}
    lines = ["# Keys that signed this evidence bundle (ssh-keygen ALLOWED SIGNERS format)."]
    out: list[PublicKey] = []
    for key in sorted(keys.values(), key=lambda k: k.fingerprint):
        w = windows.get(key.raw, key)
        ns = f"{SIGNATURE_NAMESPACE},{EVIDENCE_NAMESPACE}" if key.raw == job.key.public.raw else SIGNATURE_NAMESPACE
        opts = [f'namespaces="{ns}"']
        if w.valid_after is not None:
            opts.append(f'valid-after="{_ssh_time(w.valid_after)}"')
        if w.valid_before is not None:
            opts.append(f'valid-before="{_ssh_time(w.valid_before)}"')
        lines.append(f"{principal} {','.join(opts)} {key.openssh}")
        out.append(key)
    return ("\n".join(lines) + "\n").encode("ascii"), out


def _ssh_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%SZ")


def _grant_json(grant: AccessRequest, excerpt: Excerpt, now: datetime) -> dict[str, Any]:
    out = request_json(grant, now)
    out["approved"] = [
        {"by": ev.actor, "at": rfc3339(ev.time)}
        for ev in excerpt.events
        if ev.event == "access_request.approve" and ev.grant_id == grant.id
    ]
    return out


SED_FILES = r"""sed -n '/"path":/{N;s/.*"path": "\([^"]*\)",\n *"sha256": "\([0-9a-f]*\)",/\2  \1/p}'"""
"""Turns manifest.json's file entries into ``sha256sum -c`` lines with sed alone (the manifest is
written with ``indent=2, sort_keys=True``: each entry's ``"path"`` line is followed by its ``"sha256"``)."""


def readme(export_id: str, host: str, principal: str, sessions: Sequence[str]) -> bytes:
    top = f"zsp-evidence-{export_id}"
    listed = "\n".join(f"  - {sid}" for sid in sessions)
    return f"""zsp evidence bundle {export_id}
exported from {host}; {len(sessions)} recorded session(s):
{listed}

What is in it
  manifest.json        every other file's size, sha256 and blake3; the recordings' final chain heads;
                       the signing keys; who exported this and when
  manifest.json.sig    an OpenSSH signature (SSHSIG) over manifest.json, namespace {EVIDENCE_NAMESPACE}
  allowed_signers      the keys that signed this evidence (ssh-keygen format)
  SHA256SUMS           sha256 of every file (for sha256sum -c)
  recordings/          the session recordings (zsp format v1: hash-chained, signed at checkpoints)
  sessions/, grants/   what the bastion knew of each session and the access grant it ran under
  audit/               the audit events of these sessions and grants, with the signed chain around them
  files/               (zsp export --files) the content of files transferred in these sessions (SFTP,
                       scp), each named NNNN-DIRECTION-BASENAME, never by a path from the recording
  verify.py            a standalone verifier (Python 3 with blake3, msgpack and cryptography; no zsp)

How to check it (nothing but OpenSSH and coreutils for steps 1-3)
  1. Extract it and enter the directory:
       tar -xf BUNDLE.tar && cd {top}
  2. Check the signature over the manifest:
       ssh-keygen -Y verify -f allowed_signers -I {principal} -n {EVIDENCE_NAMESPACE} \\
           -s manifest.json.sig < manifest.json
     It must print: Good "{EVIDENCE_NAMESPACE}" signature for {principal} with ED25519 key SHA256:...
     The allowed_signers file came with the bundle: compare that SHA256 fingerprint with the one
     the bastion's operators give you out of band (or use your own copy of their allowed_signers
     file with -f). A bundle signed by any other key proves nothing.
  3. Check every file against the signed manifest (its "path" and "sha256" lines, taken with sed):
       {SED_FILES} \\
           manifest.json | sha256sum -c
     Every line must end in OK. (SHA256SUMS holds the same hashes for `sha256sum -c SHA256SUMS`,
     but it is not signed: only a check against manifest.json proves the files are the ones signed.
     verify.py is one of those files: run it in step 4 only after this step passed.)
     If there is a files/ directory (zsp export --files), check each transferred file in it
     against the sha256 it had when it crossed the bastion, as the signed manifest lists it:
       sed -n 's/^      "\\([0-9a-f]\\{{64\\}}  files\\/[^"]*\\)",\\{{0,1\\}}$/\\1/p' manifest.json | sha256sum -c
  4. Check the recordings' hash chains and signatures, and the audit excerpt:
       python3 verify.py            (pip install blake3 msgpack cryptography)
     or, with zsp installed:
       zsp verify BUNDLE.tar [--allowed-signers FILE]
     Both print VALID, INCOMPLETE (a recording that was never sealed: what is there is intact)
     or CORRUPT with the reason.

Transferred files: manifest.json's "transfers" lists every file these sessions read or wrote
through the bastion (time, direction, path as recorded, size, sha256, whether the recording keeps
its content). A file in files/ is checked by step 3 like every other file; its sha256 there is the
one its transfer entry gives, which the verifiers of step 4 check against the recording itself.
Never extract a transferred file anywhere it could be run or opened without care.

Redacted frames (if manifest.json lists any) were changed on export: their original chain heads
are kept, so the verifiers prove that every other byte is original; the redacted bytes themselves
are vouched for only by the exporter's signature.
""".encode()


def _member(top: str, path: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{top}/{path}")
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def prepare(job: ExportJob) -> list[Prepared]:
    """Write the bundle to a temp file beside ``job.output`` (the temp directory when it goes to
    stdout) and return it as one :class:`Prepared`."""
    temp = temp_beside(job.output, ".tar")
    try:
        with tempfile.TemporaryDirectory(prefix=".zsp-export-", dir=temp.parent) as work:
            sha, sids, frames, changed, refused = _build(job, temp, Path(work))
        refuse_leftovers(temp, job.patterns, bundle=True)
        _self_check(job, temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return [
        Prepared(
            temp=temp,
            final=job.output,
            sha256=sha,
            session_ids=sids,
            redacted_frames=frames,
            redacted_bytes=changed,
            refused_files=refused,
        )
    ]


def _build(job: ExportJob, temp: Path, work: Path) -> tuple[str, tuple[str, ...], int, int, tuple[str, ...]]:
    now = datetime.now(UTC)
    trusted = job.data.trusted_keys()
    svc = job.data.service()
    stored_grants: dict[str, AccessRequest] | None = None
    recs: dict[str, _Recording] = {}
    for n, s in enumerate(job.sessions):
        spool, digests = _copy_recording(s, work, n)
        # before redaction: the file events are read from the bytes verified, in the same pass
        report, digests, moved = _verified(s, spool, digests, trusted, work / f"files-{n}", content=job.include_files)
        sid = str(_header(report).session_id)
        if sid in recs:
            spool.unlink()
            continue
        redactions: tuple[Any, ...] = ()
        if job.patterns:
            spool, digests, redactions = _redact(job, spool, trusted, sid)
        record = s.record if s.record is not None else svc.session(sid)
        grant = s.grant
        if grant is None and record is not None and record.grant_id:
            if stored_grants is None:  # only for recordings named by path: read once
                stored_grants = {g.id: g for g in svc.requests()}
            grant = stored_grants.get(record.grant_id)
        recs[sid] = _Recording(sid, spool, digests, report, redactions, record, grant, moved)
    order = sorted(recs)
    transfers: Transfers = collect([recs[sid].transfers for sid in order], include=job.include_files)
    grants = {r.grant.id: r.grant for r in recs.values() if r.grant is not None}
    grant_ids = set(grants) | {g for r in recs.values() for g in [_grant_id(r)] if g}
    with svc.store.transaction(write=False) as tx:
        excerpt = build_excerpt(tx.audit_rows(), order, grant_ids)

    # keys: the manifest signer, every recording's signer, the audit log's signer
    keys: dict[str, PublicKey] = {job.key.public.openssh: PublicKey(raw=job.key.public.raw)}
    by_raw = {k.raw: k for k in trusted}
    for r in recs.values():
        k = PublicKey.from_openssh(_header(r.report).signer)
        keys[k.openssh] = PublicKey(raw=k.raw)
    if excerpt.signer:
        k = PublicKey.from_openssh(excerpt.signer)
        if k.raw not in by_raw and k.raw != job.key.public.raw:
            raise ExportRefused(
                session_id=None,
                reason=f"the audit log's signer {k.fingerprint} is not in allowed_signers",
            )
        keys[k.openssh] = PublicKey(raw=k.raw)
    signers_bytes, signer_keys = _allowed_signers(job, keys)

    end_seq: dict[str, int] = {}
    for ev in excerpt.events:
        if ev.event == "session.end" and ev.session_id in recs:
            end_seq.setdefault(ev.session_id, ev.seq)

    small: dict[str, bytes] = {}
    host = socket.gethostname()
    principal = identity()
    small["README.txt"] = readme(job.export_id, host, principal, order)
    small["allowed_signers"] = signers_bytes
    small["verify.py"] = VERIFY_SOURCE.read_bytes() if VERIFY_SOURCE.is_file() else _PLACEHOLDER_VERIFY
    for sid in order:
        small[f"sessions/{sid}.json"] = _json(_session_json(sid, recs[sid].record, recs[sid].report))
    for gid in sorted(grants):
        small[f"grants/{gid}.json"] = _json(_grant_json(grants[gid], excerpt, now))
    small["audit/excerpt.zsplog"] = excerpt.data
    small["audit/events.jsonl"] = "".join(
        json.dumps(ev.to_json(), sort_keys=True) + "\n" for ev in excerpt.events
    ).encode("ascii")
    files: dict[str, Digests] = {p: digests_of(b) for p, b in small.items()}
    for sid in order:
        files[f"recordings/{sid}.zsprec"] = recs[sid].digests
    for name, (_, d) in transfers.members.items():
        files[name] = d

    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "export_id": job.export_id,
        "exported_at": rfc3339(now),
        "exported_by": job.exporter,
        "via": job.via,
        "zsp_version": __version__,
        "host": host,
        "namespace": EVIDENCE_NAMESPACE,
        "identity": principal,
        "signer": {"key": job.key.public.openssh, "fingerprint": job.key.public.fingerprint},
        "signers": [{"key": k.openssh, "fingerprint": k.fingerprint} for k in signer_keys],
        "recordings": [_manifest_recording(recs[sid], end_seq.get(sid)) for sid in order],
        "audit": {
            "path": "audit/excerpt.zsplog",
            "log_id": excerpt.log_id,
            "signer_fingerprint": excerpt.signer_fingerprint or None,
            "events": [ev.seq for ev in excerpt.events],
        },
        "redaction": {"patterns": len(job.patterns), "replacement": "*"},
        "transfers": transfers.manifest(),
        "files": [
            {"path": p, "size": d.size, "sha256": d.sha256, "blake3": d.blake3} for p, d in sorted(files.items())
        ],
    }
    manifest_bytes = _json(manifest)
    signature = sign_sshsig(job.key, manifest_bytes, EVIDENCE_NAMESPACE).encode("ascii")
    sums = {p: d.sha256 for p, d in files.items()}
    sums["manifest.json"] = digests_of(manifest_bytes).sha256
    sums["manifest.json.sig"] = digests_of(signature).sha256
    sums_bytes = "".join(f"{h}  {p}\n" for p, h in sorted(sums.items())).encode("ascii")

    top = f"zsp-evidence-{job.export_id}"
    mtime = int(now.timestamp())
    head_members = [
        ("README.txt", small["README.txt"]),
        ("manifest.json", manifest_bytes),
        ("manifest.json.sig", signature),
        ("allowed_signers", signers_bytes),
        ("SHA256SUMS", sums_bytes),
        ("verify.py", small["verify.py"]),
    ]
    with open(temp, "wb") as raw:
        out = HashingWriter(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path, data in head_members:
                tar.addfile(_member(top, path, len(data), mtime), io.BytesIO(data))
            for sid in order:
                r = recs[sid]
                with open(r.spool, "rb") as f:
                    tar.addfile(_member(top, f"recordings/{sid}.zsprec", r.digests.size, mtime), f)
            for path in [p for p in small if p.startswith(("sessions/", "grants/", "audit/"))]:
                data = small[path]
                tar.addfile(_member(top, path, len(data), mtime), io.BytesIO(data))
            for name, (content, d) in transfers.members.items():
                with open(content, "rb") as f:
                    tar.addfile(_member(top, name, d.size, mtime), f)
        raw.flush()
        os.fsync(raw.fileno())
    changed = [x for r in recs.values() for x in r.redactions]
    return (
        out.digests().sha256,
        tuple(order),
        len(changed),
        sum(x.redacted_bytes for x in changed),
        transfers.refused,
    )


def _header(report: VerificationReport) -> Header:
    if report.header is None:
        raise ExportRefused(session_id=None, reason=f"{report.source}: recording has no header")
    return report.header


def _grant_id(r: _Recording) -> str | None:
    if r.record is not None:
        return r.record.grant_id
    return r.report.header.grant_id if r.report.header is not None else None


def _manifest_recording(r: _Recording, session_end_seq: int | None) -> dict[str, Any]:
    rep = r.report
    if rep.head is None:
        raise ExportRefused(session_id=r.session_id, reason="recording has no intact frames")
    return {
        "session_id": r.session_id,
        "path": f"recordings/{r.session_id}.zsprec",
        "outcome": rep.outcome.value,
        "frames": rep.frames,
        "signed_frames": rep.signed_frames,
        "final_head": rep.head.hex(),
        "signer_fingerprint": rep.signer_fingerprint,
        "session_end_seq": session_end_seq,
        "redactions": [
            {
                "frame": x.frame,
                "kind": _kind_name(x.kind),
                "length": x.length,
                "original_head": x.original_head.hex(),
                "redacted_bytes": x.redacted_bytes,
            }
            for x in r.redactions
        ],
    }


def _self_check(job: ExportJob, temp: Path) -> None:
    """Verify the finished bundle as a responder would: zsp never hands out one it calls CORRUPT."""
    report = replay.verify_bundle(temp, job.data.trusted_keys(), manifest_signers=[job.key.public])
    if report.outcome is Outcome.CORRUPT:
        raise ExportRefused(
            session_id=None, reason=f"the bundle built does not verify ({report.problem}: {report.detail})"
        )
