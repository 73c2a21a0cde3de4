"""The evidence bundle verifier: everything in a bundle checked offline, in a fixed order.

A bundle (docs/EXPORT.md) is a tar, or the directory it was extracted to. The checks run in
this order and the first failure is the verdict (CORRUPT, with the file and the reason):

1. the tar is safe to read (regular files under one top directory, nothing else);
2. ``manifest.json.sig`` is an SSHSIG for ``evidence@zsp`` by a trusted key;
3. the manifest is one this verifier knows, naming that key as its signer;
4. every file is listed in the manifest with its size, sha256 and blake3, and in SHA256SUMS;
5. ``allowed_signers`` holds exactly the manifest's keys;
6. every recording verifies (with its listed redactions) as the manifest says;
   (version 2) the manifest's ``transfers`` are exactly the recordings' signed file events, and
   every file in ``files/`` is the content of one of them, named as the rule says, hashing to
   the sha256 the recording gives it;
7. the audit excerpt's chain and checkpoints, its events, and each recording's ``session.end``;
8. ``sessions/`` and ``grants/`` agree with the manifest and the audit events.

Trust: without pinned keys the bundle's own allowed_signers is trusted, which proves only that
the bundle is consistent; the report says so (``trust``) and gives the signer's fingerprint to
compare out of band. With pinned keys (``zsp verify --allowed-signers FILE``) a bundle re-signed
by any other key is CORRUPT. Memory stays bounded: files are streamed, only the small ones
(manifest, excerpt, JSON) are read whole, within caps.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import msgpack
from blake3 import blake3

from recorder import (
    EVIDENCE_NAMESPACE,
    SIGNATURE_NAMESPACE,
    Checkpoint,
    Event,
    FormatViolation,
    FrameKind,
    Header,
    KeyFileError,
    PublicKey,
    SignatureError,
    checkpoint_message,
    decode_body,
    genesis,
    names_principal,
    parse_data,
    parse_trusted_keys,
    verify_sshsig,
)

from . import _verify
from ._bundle_transfers import (
    FILE_EVENTS,
    TRANSFER_CONTENT_LIMIT,
    TRANSFER_KEYS,
    transfer_content_name,
    transfer_entry,
    transfer_sha256sums,
)
from ._exceptions import SourceError
from ._verify import Outcome, VerificationReport

__all__ = ["BundleProblem", "BundleReport", "is_bundle", "verify_bundle"]

BUNDLE_FORMAT = "zsp-evidence-bundle"
EXCERPT_FORMAT = "zsp-audit-excerpt"
MAX_MEMBERS = 100_000
_MAX_SMALL = 64 << 20
"""Files read whole (manifest, excerpt, JSON, allowed_signers) are refused above this size."""
_REQUIRED = ("manifest.json", "manifest.json.sig", "allowed_signers", "SHA256SUMS")
_UNLISTED = frozenset({"manifest.json", "manifest.json.sig", "SHA256SUMS"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CORE = ("type", "code", "time_us", "actor", "via", "outcome", "target", "login", "grant_id", "session_id")


class BundleProblem(enum.Enum):
    """Why a bundle is CORRUPT; the value is the stable code ``--json`` prints."""

    UNSAFE_TAR = "unsafe-tar"
    MISSING_FILE = "missing-file"
    EXTRA_FILE = "extra-file"
    BAD_SIGNATURE = "bad-signature"
    UNTRUSTED_SIGNER = "untrusted-signer"
    UNKNOWN_VERSION = "unknown-version"
    MALFORMED = "malformed"
    HASH_MISMATCH = "hash-mismatch"
    SIGNERS_MISMATCH = "signers-mismatch"
    RECORDING = "recording"
    """A recording is CORRUPT, or not what the manifest says it is."""
    AUDIT = "audit"
    """The audit excerpt's chain, signatures or events do not check out."""
    SESSION_END = "session-end-mismatch"
    METADATA = "metadata-mismatch"
    """sessions/ or grants/ disagree with the manifest or the audit events."""
    TRANSFERS = "transfers-mismatch"
    """The manifest's transferred files, or files/, disagree with the recordings."""


@dataclass(frozen=True, slots=True)
class BundleReport:
    """The verdict on one evidence bundle."""

    source: str
    outcome: Outcome
    problem: BundleProblem | None = None
    detail: str = ""
    recordings: tuple[VerificationReport, ...] = ()
    """Each recording's own report, in manifest order (those checked before a failure)."""
    signer_fingerprint: str | None = None
    """The key that signed the manifest (``SHA256:...``), once its signature verified."""
    trust: str = "bundle"
    """``pinned``: keys given by the verifier; ``bundle``: the bundle's own allowed_signers (self-trust)."""
    export_id: str | None = None
    exported_at: str | None = None
    exported_by: str | None = None
    identity: str | None = None
    incomplete: tuple[str, ...] = ()
    """Sessions whose recording is INCOMPLETE (never sealed): intact as far as they go."""
    redacted: tuple[tuple[str, int], ...] = ()
    """``(session_id, frames)`` for each recording with redacted frames."""
    notes: tuple[str, ...] = ()
    """Facts a reader should see that do not make the bundle CORRUPT."""
    transfers: int = 0
    """Transferred files the manifest lists (each checked against its recording)."""
    transfer_content: int = 0
    """Of those, how many have their content in ``files/`` (each hashing to its recorded sha256)."""

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "kind": "bundle",
            "outcome": self.outcome.value,
            "problem": self.problem.value if self.problem else None,
            "detail": self.detail,
            "signer_fingerprint": self.signer_fingerprint,
            "trust": self.trust,
            "export_id": self.export_id,
            "exported_at": self.exported_at,
            "exported_by": self.exported_by,
            "identity": self.identity,
            "incomplete": list(self.incomplete),
            "redacted": [{"session_id": s, "frames": n} for s, n in self.redacted],
            "notes": list(self.notes),
            "transfers": self.transfers,
            "transfer_content": self.transfer_content,
            "recordings": [r.to_json() for r in self.recordings],
        }


class _Corrupt(Exception):
    def __init__(self, problem: BundleProblem, detail: str) -> None:
        self.problem = problem
        self.detail = detail
        super().__init__(detail)


@dataclass
class _State:
    recordings: list[VerificationReport] = field(default_factory=list)
    signer: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    transfers: int = 0
    transfer_content: int = 0


# --- sources: a tar or a directory -----------------------------------------------------------


class _Source:
    """The bundle's files by path (relative to its top directory), each opened as a stream."""

    name: str
    sizes: dict[str, int]
    top: str | None

    def open(self, path: str) -> IO[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read_small(self, path: str) -> bytes:
        size = self.sizes[path]
        if size > _MAX_SMALL:
            raise _Corrupt(BundleProblem.MALFORMED, f"{path}: {size} bytes, too large")
        with self.open(path) as f:
            data = f.read(size + 1)  # its declared size: read(n) allocates n bytes up front
        if len(data) != size:
            raise _Corrupt(BundleProblem.MALFORMED, f"{path}: not the size it was listed with")
        return data


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {name!r}: not a plain relative path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {name!r}: '..', '.' or an empty part in its path")
    return p


class _TarSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self._file_size = path.stat().st_size
            self._tar = tarfile.open(path, mode="r:")
        except (OSError, tarfile.TarError) as exc:
            raise SourceError(source=str(path), reason=f"not a readable uncompressed tar file ({exc})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        self.sizes = {}
        self.top = None

    def scan(self) -> None:
        total = 0
        count = 0
        try:
            for m in self._tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"more than {MAX_MEMBERS} members")
                p = _safe_name(m.name)
                if not m.isreg():
                    what = "a link" if m.issym() or m.islnk() else "a directory" if m.isdir() else "not a regular file"
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {m.name!r} is {what}")
                if len(p.parts) < 2:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {m.name!r} is not inside the top directory")
                if self.top is None:
                    self.top = p.parts[0]
                elif p.parts[0] != self.top:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {m.name!r}: a second top directory")
                rel = "/".join(p.parts[1:])
                if rel in self._members:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"member {m.name!r} appears twice")
                total += m.size
                if total > self._file_size:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, "members claim more bytes than the file holds")
                self._members[rel] = m
                self.sizes[rel] = m.size
        except tarfile.TarError as exc:
            raise _Corrupt(BundleProblem.UNSAFE_TAR, f"tar structure: {exc}") from None
        self._check_tail()

    def _check_tail(self) -> None:
        """After the last member's data only end-of-archive zeros: Python's tarfile stops at a header
        it cannot read (a bad checksum), GNU tar skips it and extracts what follows, unchecked."""
        end = 0
        for m in self._members.values():
            end = max(end, m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
        with open(self.name, "rb") as f:
            f.seek(end)
            while chunk := f.read(1 << 20):
                if chunk.count(0) != len(chunk):
                    raise _Corrupt(
                        BundleProblem.UNSAFE_TAR,
                        "bytes other than zeros after the last member (a member tar would extract, hidden "
                        "after a header this verifier cannot read?)",
                    )

    def open(self, path: str) -> IO[bytes]:
        f = self._tar.extractfile(self._members[path])
        if f is None:  # only regular members are kept
            raise _Corrupt(BundleProblem.UNSAFE_TAR, f"{path}: not a regular file")
        return f

    def close(self) -> None:
        self._tar.close()


class _DirSource(_Source):
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.root = path
        self.sizes = {}
        self.top = None

    def scan(self) -> None:
        count = 0
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                count += 1
                if count > MAX_MEMBERS:
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"more than {MAX_MEMBERS} files")
                st = full.lstat()
                if stat.S_ISDIR(st.st_mode) and name in dirnames:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise _Corrupt(BundleProblem.UNSAFE_TAR, f"{rel} is not a regular file (a link or device)")
                _safe_name(rel)
                self.sizes[rel] = st.st_size

    def open(self, path: str) -> IO[bytes]:
        return open(self.root / path, "rb")


def is_bundle(path: Path) -> bool:
    """A tar file, or a directory holding ``manifest.json``: what ``zsp verify`` treats as a bundle."""
    try:
        if path.is_dir():
            return (path / "manifest.json").is_file()
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


# --- the checks ----------------------------------------------------------------------------


def _digests(src: _Source, path: str) -> tuple[int, str, str]:
    sha = hashlib.sha256()
    b3 = blake3()
    n = 0
    with src.open(path) as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            b3.update(chunk)
            n += len(chunk)
    return n, sha.hexdigest(), b3.hexdigest()


def _keys(data: bytes, source: str, namespace: str) -> list[PublicKey]:
    try:
        return parse_trusted_keys(data, source, namespace)
    except KeyFileError as exc:
        if "no ssh-ed25519 public key" in exc.reason:
            return []
        raise _Corrupt(BundleProblem.MALFORMED, f"allowed_signers: {exc.reason}") from None


def _trusted_now(entries: Sequence[PublicKey]) -> bool:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    return not entries or not all(k.bounded for k in entries) or any(k.valid_at(now_us) for k in entries)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Corrupt(BundleProblem.MALFORMED, f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Corrupt(BundleProblem.MALFORMED, f"{what} must be a list")
    return value


def _str(d: Mapping[str, Any], key: str, what: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise _Corrupt(BundleProblem.MALFORMED, f"{what}: {key} must be a string")
    return v


def _int(d: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if type(v) is not int:
        raise _Corrupt(BundleProblem.MALFORMED, f"{what}: {key} must be an integer")
    return v


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a JSON object repeats a key")
    return out


def _load_json(data: bytes | str, what: str, problem: BundleProblem = BundleProblem.MALFORMED) -> Any:
    """Strict JSON, as verify.py reads it: UTF-8, no object repeating a key (which value would count?),
    and no nesting so deep that the parser gives up (RecursionError) — each a CORRUPT verdict."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_json_pairs)
    except (UnicodeDecodeError, ValueError):
        raise _Corrupt(problem, f"{what} is not JSON (UTF-8, no repeated keys)") from None
    except RecursionError:
        raise _Corrupt(problem, f"{what} is not JSON this verifier reads: nested too deeply") from None


def _rfc3339_us(time_us: int) -> str:
    # the same expression as zsp's audit log (AuditLog._event + clock.rfc3339), so events.jsonl compares exactly
    return datetime.fromtimestamp(time_us / 1e6, UTC).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_json(seq: int, data: Mapping[str, Any]) -> dict[str, Any]:
    """An audit event frame's data as ``zsp audit --json`` prints it (``AuditEvent.to_json``)."""
    out: dict[str, Any] = {
        "event": str(data["type"]),
        "code": str(data["code"]),
        "time": _rfc3339_us(int(data["time_us"])),
        "seq": seq,
        "actor": str(data["actor"]),
        "via": str(data["via"]),
        "outcome": str(data["outcome"]),
        "target": data.get("target"),
        "login": data.get("login"),
        "grant_id": data.get("grant_id"),
        "session_id": data.get("session_id"),
        "message": str(data["message"]),
    }
    for k, v in data.items():
        if k not in _CORE and k != "message":
            out.setdefault(k, v)
    return out


def verify_bundle(
    path: Path,
    trusted: Sequence[PublicKey] | None = None,
    *,
    manifest_signers: Sequence[PublicKey] | None = None,
) -> BundleReport:
    """Verify an evidence bundle (a tar file or an extracted directory) offline.

    ``trusted``: keys trusted for recordings and the audit log (``session-recording@zsp``) and,
    unless ``manifest_signers`` is given, for the manifest (``evidence@zsp``). None: the bundle's
    own allowed_signers (``trust == "bundle"``). Raises :class:`SourceError` when ``path`` cannot
    be read at all or is not a tar/directory; every problem inside is a CORRUPT report.
    """
    path = Path(path)
    if path.is_dir():
        src: _TarSource | _DirSource = _DirSource(path)
    elif path.is_file() or path.exists():
        src = _TarSource(path)
    else:
        raise SourceError(source=str(path), reason="no such file or directory")
    pinned = trusted is not None or manifest_signers is not None
    st = _State()
    try:
        outcome, incomplete, redacted = _check(src, st, trusted, manifest_signers)
    except _Corrupt as exc:
        return _report(src, st, pinned, Outcome.CORRUPT, exc.problem, exc.detail)
    except OSError as exc:
        raise SourceError(source=src.name, reason=exc.strerror or str(exc)) from None
    finally:
        src.close()
    detail = ""
    if incomplete:
        detail = f"INCOMPLETE recording(s), intact as far as they go: {', '.join(incomplete)}"
    return _report(src, st, pinned, outcome, None, detail, tuple(incomplete), tuple(redacted))


def _report(
    src: _Source,
    st: _State,
    pinned: bool,
    outcome: Outcome,
    problem: BundleProblem | None,
    detail: str,
    incomplete: tuple[str, ...] = (),
    redacted: tuple[tuple[str, int], ...] = (),
) -> BundleReport:
    m = st.manifest if st.signer else {}

    def s(key: str) -> str | None:
        v = m.get(key)
        return v if isinstance(v, str) else None

    return BundleReport(
        source=src.name,
        outcome=outcome,
        problem=problem,
        detail=detail,
        recordings=tuple(st.recordings),
        signer_fingerprint=st.signer,
        trust="pinned" if pinned else "bundle",
        export_id=s("export_id"),
        exported_at=s("exported_at"),
        exported_by=s("exported_by"),
        identity=s("identity"),
        incomplete=incomplete,
        redacted=redacted,
        notes=tuple(st.notes),
        transfers=st.transfers,
        transfer_content=st.transfer_content,
    )


def _check(
    src: _TarSource | _DirSource,
    st: _State,
    trusted: Sequence[PublicKey] | None,
    manifest_signers: Sequence[PublicKey] | None,
) -> tuple[Outcome, list[str], list[tuple[str, int]]]:
    # 1. safe to read, and the four files every bundle has
    src.scan()
    for name in _REQUIRED:
        if name not in src.sizes:
            raise _Corrupt(BundleProblem.MISSING_FILE, f"{name} is missing")

    # 2. the manifest's signature, by a key trusted for evidence@zsp
    signers_bytes = src.read_small("allowed_signers")
    bundle_evidence = _keys(signers_bytes, "allowed_signers", EVIDENCE_NAMESPACE)
    bundle_recording = _keys(signers_bytes, "allowed_signers", SIGNATURE_NAMESPACE)
    if manifest_signers is not None:
        evidence_keys: Sequence[PublicKey] = manifest_signers
    elif trusted is not None:
        evidence_keys = trusted
    else:
        evidence_keys = bundle_evidence
    recording_keys: Sequence[PublicKey] = trusted if trusted is not None else bundle_recording
    manifest_bytes = src.read_small("manifest.json")
    try:
        signer = verify_sshsig(src.read_small("manifest.json.sig"), manifest_bytes, EVIDENCE_NAMESPACE)
    except SignatureError as exc:
        raise _Corrupt(BundleProblem.BAD_SIGNATURE, f"manifest.json.sig: {exc.reason}") from None
    entries = [k for k in evidence_keys if k.raw == signer.raw]
    whose = "the keys given" if (manifest_signers is not None or trusted is not None) else "allowed_signers"
    if not entries:
        raise _Corrupt(
            BundleProblem.UNTRUSTED_SIGNER,
            f"manifest.json is signed by {signer.fingerprint}, which {whose} do not trust for {EVIDENCE_NAMESPACE}",
        )
    if not _trusted_now(entries):
        raise _Corrupt(
            BundleProblem.UNTRUSTED_SIGNER,
            f"manifest signer {signer.fingerprint} is outside its valid-after/valid-before window",
        )
    st.signer = signer.fingerprint

    # 3. a manifest this verifier knows, naming that signer
    manifest = _obj(_load_json(manifest_bytes, "manifest.json"), "manifest.json")
    st.manifest = manifest
    if manifest.get("format") != BUNDLE_FORMAT:
        raise _Corrupt(BundleProblem.UNKNOWN_VERSION, f"manifest.json: format is not {BUNDLE_FORMAT!r}")
    if type(manifest.get("version")) is not int or manifest["version"] not in (1, 2):
        raise _Corrupt(BundleProblem.UNKNOWN_VERSION, f"manifest.json: unknown version {manifest.get('version')!r}")
    sig_entry = _obj(manifest.get("signer"), "manifest signer")
    if sig_entry.get("key") != signer.openssh or sig_entry.get("fingerprint") != signer.fingerprint:
        raise _Corrupt(BundleProblem.SIGNERS_MISMATCH, "manifest.json names another signer than the one who signed it")
    if manifest.get("namespace") != EVIDENCE_NAMESPACE:
        raise _Corrupt(BundleProblem.MALFORMED, f"manifest.json: namespace is not {EVIDENCE_NAMESPACE}")
    export_id = _str(manifest, "export_id", "manifest")
    if src.top is not None and src.top != f"zsp-evidence-{export_id}":
        raise _Corrupt(BundleProblem.MALFORMED, f"top directory {src.top!r} is not zsp-evidence-{export_id}")
    if manifest_signers is None and trusted is None:
        # ssh-keygen -Y verify -I IDENTITY: the identity must be a principal of the signer's line
        identity = _str(manifest, "identity", "manifest")
        if not names_principal(signers_bytes, EVIDENCE_NAMESPACE, signer, identity):
            raise _Corrupt(
                BundleProblem.SIGNERS_MISMATCH,
                f"allowed_signers does not name {identity} (the manifest's identity) for the manifest's signer",
            )

    # 4. every file listed once with the right hashes; SHA256SUMS the same
    listed: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(_list(manifest.get("files"), "manifest files")):
        e = _obj(entry, f"manifest files[{i}]")
        p = _str(e, "path", f"manifest files[{i}]")
        if p in listed:
            raise _Corrupt(BundleProblem.MALFORMED, f"manifest lists {p} twice")
        listed[p] = e
    members = set(src.sizes)
    for p in sorted(members - _UNLISTED - set(listed)):
        raise _Corrupt(BundleProblem.EXTRA_FILE, f"{p} is in the bundle but not in the manifest")
    for p in sorted(set(listed) - members):
        raise _Corrupt(BundleProblem.MISSING_FILE, f"{p} is in the manifest but not in the bundle")
    for p in sorted(set(listed) & _UNLISTED):
        raise _Corrupt(BundleProblem.MALFORMED, f"the manifest lists {p}, which it cannot cover")
    sha: dict[str, str] = {}
    for p in sorted(members):
        size, sha256, b3 = _digests(src, p)
        sha[p] = sha256
        listing = listed.get(p)
        if listing is None:
            continue
        if listing.get("size") != size or listing.get("sha256") != sha256 or listing.get("blake3") != b3:
            raise _Corrupt(BundleProblem.HASH_MISMATCH, f"{p} does not match its size and hashes in the manifest")
    sums: dict[str, str] = {}
    for n, line in enumerate(src.read_small("SHA256SUMS").decode("ascii", "replace").splitlines(), 1):
        h, sep, p = line.partition("  ")
        if not sep or len(h) != 64 or p in sums:
            raise _Corrupt(BundleProblem.MALFORMED, f"SHA256SUMS line {n} is not 'HEX  path' (or repeats a path)")
        sums[p] = h
    if set(sums) != members - {"SHA256SUMS"}:
        extra = sorted(set(sums) ^ (members - {"SHA256SUMS"}))
        raise _Corrupt(BundleProblem.HASH_MISMATCH, f"SHA256SUMS does not list exactly the bundle's files: {extra[:3]}")
    for p, h in sorted(sums.items()):
        if sha[p] != h:
            raise _Corrupt(BundleProblem.HASH_MISMATCH, f"{p} does not match its sha256 in SHA256SUMS")

    # 5. allowed_signers holds exactly the manifest's keys
    named = {
        (_str(_obj(k, "signers"), "key", "signers"), k.get("fingerprint"))
        for k in _list(manifest.get("signers"), "signers")
    }
    held = {(k.openssh, k.fingerprint) for k in [*bundle_evidence, *bundle_recording]}
    if named != held:
        raise _Corrupt(BundleProblem.SIGNERS_MISMATCH, "allowed_signers does not hold exactly the manifest's signers")

    # 6. the recordings
    recs = _list(manifest.get("recordings"), "manifest recordings")
    by_sid: dict[str, dict[str, Any]] = {}
    heads: dict[str, bytes] = {}
    incomplete: list[str] = []
    redacted: list[tuple[str, int]] = []
    file_events: dict[str, list[dict[str, Any]]] = {}
    for i, entry in enumerate(recs):
        r = _obj(entry, f"recordings[{i}]")
        sid = _str(r, "session_id", f"recordings[{i}]")
        if sid in by_sid:
            raise _Corrupt(BundleProblem.MALFORMED, f"the manifest lists session {sid} twice")
        by_sid[sid] = r
        report, file_events[sid] = _recording(src, r, sid, recording_keys)
        st.recordings.append(report)
        if report.head is not None:
            heads[sid] = report.head
        if report.outcome is Outcome.INCOMPLETE:
            incomplete.append(sid)
        if r.get("redactions"):
            redacted.append((sid, len(r["redactions"])))
    on_disk = {p for p in members if p.startswith("recordings/")}
    if on_disk != {f"recordings/{sid}.zsprec" for sid in by_sid}:
        raise _Corrupt(BundleProblem.EXTRA_FILE, "recordings/ does not hold exactly the manifest's recordings")
    _transfers(manifest, listed, members, file_events, st)

    # 8 (read first: the grants of the exported sessions decide which audit events must be there)
    sessions = _sessions(src, members, by_sid, st)
    grant_ids = {g for g in (s.get("grant_id") for s in sessions.values()) if isinstance(g, str)}
    for report in st.recordings:
        if report.header is not None and report.header.grant_id:
            grant_ids.add(report.header.grant_id)

    # 7. the audit excerpt, its events, and the session.end heads
    events = _audit(src, manifest, members, set(by_sid), grant_ids, recording_keys)
    for sid, r in by_sid.items():
        _session_end(sid, r, events, heads, st)

    # 8. sessions/ and grants/ against the manifest and the audit events
    _grants(src, members, grant_ids, events)
    return (Outcome.INCOMPLETE if incomplete else Outcome.VALID), incomplete, redacted


def _recording(
    src: _Source, r: Mapping[str, Any], sid: str, keys: Sequence[PublicKey]
) -> tuple[VerificationReport, list[dict[str, Any]]]:
    """Verify one recording as the manifest lists it; return its report and the manifest entries
    its signed file events make (:func:`transfer_entry`)."""
    path = f"recordings/{sid}.zsprec"
    what = f"recording {sid}"
    if r.get("path") != path or path not in src.sizes:
        raise _Corrupt(BundleProblem.MISSING_FILE, f"{what}: expected at {path}")
    redactions = _list(r.get("redactions", []), f"{what} redactions")
    kwargs: dict[str, Any] = {}
    if redactions:
        kwargs["redacted"] = _redacted_map(redactions, what)
    raw: list[tuple[int, int, str, dict[str, Any]]] = []
    with src.open(path) as f:
        gen = _verify.verify_frames(f, keys, source=path, **kwargs)
        try:
            while True:
                fr = next(gen)
                if fr.kind is FrameKind.EVENT and isinstance(fr.data, Event) and fr.data.type in FILE_EVENTS:
                    raw.append((fr.seq, fr.t_us, fr.data.type, fr.data.fields))
        except StopIteration as stop:
            report: VerificationReport = stop.value
    if report.outcome is Outcome.CORRUPT:
        where = "the preamble" if report.bad_frame is None else f"frame {report.bad_frame}"
        why = report.problem.value if report.problem else "corrupt"
        raise _Corrupt(BundleProblem.RECORDING, f"{path}: CORRUPT at {where}: {why}: {report.detail}")
    if report.header is None or str(report.header.session_id) != sid:
        raise _Corrupt(BundleProblem.RECORDING, f"{path} is not a recording of session {sid}")
    names = ("outcome", "frames", "signed_frames", "final_head", "signer_fingerprint")
    expect = (
        r.get("outcome"),
        r.get("frames"),
        r.get("signed_frames"),
        r.get("final_head"),
        r.get("signer_fingerprint"),
    )
    got = (
        report.outcome.value,
        report.frames,
        report.signed_frames,
        report.head.hex() if report.head else None,
        report.signer_fingerprint,
    )
    for name, e, g in zip(names, expect, got, strict=True):
        if e != g:
            raise _Corrupt(BundleProblem.RECORDING, f"{path}: {name} is {g!r}, the manifest says {e!r}")
    started = report.header.started_at_us
    signed = [x for x in raw if x[0] < report.signed_frames]  # what a signature covers is evidence
    return report, [transfer_entry(sid, started, i, *x) for i, x in enumerate(signed)]


def _transfers(
    manifest: Mapping[str, Any],
    listed: Mapping[str, Mapping[str, Any]],
    members: set[str],
    file_events: Mapping[str, list[dict[str, Any]]],
    st: _State,
) -> None:
    """Version 2: ``transfers.files`` is exactly the recordings' signed file events, in manifest
    order; each ``content`` is the one name the rule gives, a file of the bundle whose sha256 and
    size are the recorded ones; ``files/`` holds nothing else."""
    expected = [e for r in _list(manifest.get("recordings"), "recordings") for e in file_events[r["session_id"]]]
    in_files = {p for p in members if p.startswith("files/")}
    if manifest["version"] == 1:
        if "transfers" in manifest or in_files:
            raise _Corrupt(BundleProblem.MALFORMED, "a version 1 manifest with transferred files (version 2 has them)")
        if expected:
            st.notes.append(
                f"{len(expected)} transferred file(s) in the recordings are not listed: the bundle was made "
                "before bundles listed them (version 1); `zsp files` lists them from each recording"
            )
        return
    t = _obj(manifest.get("transfers"), "manifest transfers")
    include = t.get("content")
    limit = _int(t, "content_limit", "manifest transfers")
    if type(include) is not bool or limit is None or not 0 <= limit <= TRANSFER_CONTENT_LIMIT:
        raise _Corrupt(
            BundleProblem.MALFORMED, f"manifest transfers: content or content_limit (<= {TRANSFER_CONTENT_LIMIT})"
        )
    entries = _list(t.get("files"), "manifest transfers files")
    if len(entries) != len(expected):
        raise _Corrupt(
            BundleProblem.TRANSFERS,
            f"the manifest lists {len(entries)} transferred file(s), the recordings hold {len(expected)}",
        )
    named: set[str] = set()
    total = 0
    for n, (raw, want) in enumerate(zip(entries, expected, strict=True), 1):
        e = _obj(raw, f"transferred file {n}")
        if set(e) != TRANSFER_KEYS | {"content", "content_note"} or not isinstance(e.get("content_note"), str):
            raise _Corrupt(BundleProblem.MALFORMED, f"transferred file {n}: not the keys a transfer entry has")
        for key in sorted(TRANSFER_KEYS):
            if e[key] != want[key] or type(e[key]) is not type(want[key]):
                raise _Corrupt(
                    BundleProblem.TRANSFERS,
                    f"transferred file {n}: {key} is {e[key]!r} in the manifest, {want[key]!r} in "
                    f"recordings/{want['session_id']}.zsprec (frame {want['frame']})",
                )
        content = e["content"]
        if content is None:
            continue
        if not include:
            raise _Corrupt(BundleProblem.TRANSFERS, f"transferred file {n} has content, but content is false")
        if content != transfer_content_name(n, want):
            raise _Corrupt(
                BundleProblem.TRANSFERS,
                f"transferred file {n}: content {content!r} is not its name {transfer_content_name(n, want)!r}",
            )
        if not (want["event"] == "sftp.file" and want["content_complete"] and _HEX64.fullmatch(want["sha256"])):
            raise _Corrupt(
                BundleProblem.TRANSFERS,
                f"transferred file {n}: the recording does not hold all of it with a hash, yet {content} is given",
            )
        f = listed.get(content)
        if f is None or content not in members:
            raise _Corrupt(BundleProblem.MISSING_FILE, f"{content} (transferred file {n}) is not in the bundle")
        if f.get("sha256") != want["sha256"] or f.get("size") != want["size"]:
            raise _Corrupt(
                BundleProblem.TRANSFERS,
                f"{content} does not hash to the sha256 the recording gives transferred file {n}",
            )
        named.add(content)
        total += want["size"]
    for p in sorted(in_files - named):
        raise _Corrupt(BundleProblem.EXTRA_FILE, f"{p} is not the content of a transferred file the manifest lists")
    if total > limit:
        raise _Corrupt(BundleProblem.MALFORMED, f"files/ holds {total} bytes, over the content_limit {limit}")
    keys = {"content", "content_limit", "files", "sha256sums"}
    if t.get("sha256sums") != transfer_sha256sums(entries) or set(t) != keys:
        raise _Corrupt(BundleProblem.TRANSFERS, "manifest transfers sha256sums is not the list of files/ it holds")
    st.transfers = len(entries)
    st.transfer_content = len(named)


def _redacted_map(redactions: list[Any], what: str) -> dict[int, Any]:
    cls = getattr(_verify, "RedactedFrame", None)
    if cls is None:
        raise _Corrupt(BundleProblem.RECORDING, f"{what}: this zsp cannot check redacted frames")
    out: dict[int, Any] = {}
    for x in redactions:
        e = _obj(x, f"{what} redaction")
        frame = _int(e, "frame", f"{what} redaction")
        length = _int(e, "length", f"{what} redaction")
        count = _int(e, "redacted_bytes", f"{what} redaction")
        kind = {"output": FrameKind.OUTPUT, "input": FrameKind.INPUT}.get(str(e.get("kind")))
        head = e.get("original_head")
        if (
            frame is None
            or length is None
            or count is None
            or kind is None
            or not isinstance(head, str)
            or not _HEX64.fullmatch(head)
            or frame in out
            or not 0 < count <= length
        ):
            raise _Corrupt(BundleProblem.MALFORMED, f"{what}: a redaction entry is malformed")
        out[frame] = cls(original_head=bytes.fromhex(head), kind=kind, length=length)
    return out


def _frames(seg: Mapping[str, Any], n: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    prev = seg.get("prev_head")
    frames = seg.get("frames")
    if type(prev) is not bytes or len(prev) != 32 or type(frames) is not list or not frames:
        raise _Corrupt(BundleProblem.AUDIT, f"audit excerpt segment {n} is malformed")
    out: list[tuple[bytes, bytes]] = []
    for f in frames:
        if type(f) is not list or len(f) != 2 or type(f[0]) is not bytes or type(f[1]) is not bytes:
            raise _Corrupt(BundleProblem.AUDIT, f"audit excerpt segment {n}: a frame is not [body, head]")
        out.append((f[0], f[1]))
    return prev, out


def _audit(
    src: _Source,
    manifest: Mapping[str, Any],
    members: set[str],
    sids: set[str],
    grant_ids: set[str],
    keys: Sequence[PublicKey],
) -> dict[int, dict[str, Any]]:
    """Check the excerpt; return the listed events' data by seq."""
    audit = _obj(manifest.get("audit"), "manifest audit")
    path = audit.get("path")
    if path != "audit/excerpt.zsplog" or path not in members:
        raise _Corrupt(BundleProblem.MISSING_FILE, "audit/excerpt.zsplog is missing")
    try:
        ex = msgpack.unpackb(src.read_small(path), raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _Corrupt(BundleProblem.AUDIT, f"audit excerpt does not decode: {exc}") from None
    if not isinstance(ex, dict) or ex.get("format") != EXCERPT_FORMAT:
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt: not a zsp-audit-excerpt")
    if ex.get("version") != 1:
        raise _Corrupt(BundleProblem.UNKNOWN_VERSION, "audit excerpt: unknown version")

    # header: the log's frame 0, its head keyed by the log's genesis, signed by a trusted key
    hdr = ex.get("header")
    if hdr is None:  # the log was empty at export: then nothing can be listed
        if ex.get("segments") != [] or audit.get("events") != [] or audit.get("log_id") is not None:
            raise _Corrupt(BundleProblem.AUDIT, "audit excerpt has no header but claims events")
        return {}
    if type(hdr) is not list or len(hdr) != 2 or type(hdr[0]) is not bytes or type(hdr[1]) is not bytes:
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt header is malformed")
    try:
        kind, seq, _, data = decode_body(hdr[0])
        header = parse_data(kind, data) if kind == FrameKind.HEADER and seq == 0 else None
    except FormatViolation as exc:
        raise _Corrupt(BundleProblem.AUDIT, f"audit excerpt header: {exc.reason}") from None
    if not isinstance(header, Header):
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt header is not a header frame")
    log_id: uuid.UUID = header.session_id
    if blake3(hdr[0], key=genesis(log_id)).digest() != hdr[1]:
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt header does not match its chain head")
    try:
        signer = PublicKey.from_openssh(header.signer)
    except ValueError:
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt header: malformed signer") from None
    if audit.get("log_id") != str(log_id) or audit.get("signer_fingerprint") != signer.fingerprint:
        raise _Corrupt(BundleProblem.AUDIT, "the manifest names another audit log or signer than the excerpt's header")
    entries = [k for k in keys if k.raw == signer.raw]
    if not entries:
        raise _Corrupt(BundleProblem.UNTRUSTED_SIGNER, f"audit log signer {signer.fingerprint} is not trusted")
    windows = entries if all(k.bounded for k in entries) else []

    # segments: chained, consecutive, each ending in a checkpoint by that signer
    segments = ex.get("segments")
    if type(segments) is not list:
        raise _Corrupt(BundleProblem.AUDIT, "audit excerpt: segments must be a list")
    events: dict[int, dict[str, Any]] = {}
    last_seq = 0
    for n, seg_raw in enumerate(segments):
        prev, frames = _frames(seg_raw if isinstance(seg_raw, dict) else {}, n)
        h = prev
        first = True
        for body, stored in frames:
            where = f"audit excerpt segment {n}"
            if blake3(body, key=h).digest() != stored:
                raise _Corrupt(BundleProblem.AUDIT, f"{where}: a frame does not match its chain head (edited?)")
            try:
                kind, seq, _, data = decode_body(body)
                value = parse_data(kind, data)
            except FormatViolation as exc:
                raise _Corrupt(BundleProblem.AUDIT, f"{where}: {exc.reason}") from None
            if (first and seq <= last_seq) or (not first and seq != last_seq + 1):
                raise _Corrupt(BundleProblem.AUDIT, f"{where}: frame {seq} out of order (segments overlap or skip)")
            if isinstance(value, Checkpoint):
                if value.index != seq - 1:
                    raise _Corrupt(BundleProblem.AUDIT, f"audit frame {seq}: checkpoint names the wrong frame")
                if not signer.verify(value.signature, checkpoint_message(log_id, value.index, h, value.wall_us)):
                    raise _Corrupt(BundleProblem.AUDIT, f"audit frame {seq}: checkpoint signature does not verify")
                if windows and not any(k.valid_at(value.wall_us) for k in windows):
                    raise _Corrupt(
                        BundleProblem.UNTRUSTED_SIGNER, f"audit frame {seq}: signed outside the key's window"
                    )
            elif kind == FrameKind.EVENT:
                if not isinstance(data, dict):
                    raise _Corrupt(BundleProblem.AUDIT, f"audit frame {seq}: event data is not a map")
                events[seq] = data
            else:
                raise _Corrupt(BundleProblem.AUDIT, f"audit frame {seq}: not an event or checkpoint")
            h = stored
            last_seq = seq
            first = False
        if not isinstance(value, Checkpoint):
            raise _Corrupt(BundleProblem.AUDIT, f"audit excerpt segment {n} does not end with a checkpoint")

    # the listed events are there, and no event of these sessions or grants is left unlisted
    listed = _list(audit.get("events"), "manifest audit events")
    if any(type(s) is not int for s in listed) or listed != sorted(set(listed)):
        raise _Corrupt(BundleProblem.AUDIT, "manifest audit events are not sorted and distinct")
    for s in listed:
        if s not in events:
            raise _Corrupt(BundleProblem.AUDIT, f"audit event {s} is listed but not in the excerpt")
    for s, data in events.items():
        ours = data.get("session_id") in sids or data.get("grant_id") in grant_ids
        if ours and s not in listed:
            raise _Corrupt(
                BundleProblem.AUDIT, f"audit event {s} ({data.get('type')}) concerns this export but is not listed"
            )
    out = {s: events[s] for s in listed}

    # events.jsonl: exactly the listed events, decoded
    if "audit/events.jsonl" not in members:
        raise _Corrupt(BundleProblem.MISSING_FILE, "audit/events.jsonl is missing")
    lines = src.read_small("audit/events.jsonl").decode("utf-8", "replace").splitlines()
    if len(lines) != len(out):
        raise _Corrupt(BundleProblem.AUDIT, f"audit/events.jsonl has {len(lines)} lines for {len(out)} events")
    for line, (s, data) in zip(lines, out.items(), strict=True):
        try:
            got = json.loads(line, object_pairs_hook=_json_pairs)
            want = json.loads(json.dumps(event_json(s, data), sort_keys=True))
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            raise _Corrupt(BundleProblem.AUDIT, f"audit/events.jsonl: event {s} does not decode") from None
        except RecursionError:
            raise _Corrupt(BundleProblem.AUDIT, f"audit/events.jsonl: event {s} is nested too deeply") from None
        if got != want:
            raise _Corrupt(BundleProblem.AUDIT, f"audit/events.jsonl: event {s} differs from the signed excerpt")
    return out


def _session_end(
    sid: str, r: Mapping[str, Any], events: Mapping[int, Mapping[str, Any]], heads: Mapping[str, bytes], st: _State
) -> None:
    ends = [s for s, d in events.items() if d.get("type") == "session.end" and d.get("session_id") == sid]
    seq = _int(r, "session_end_seq", f"recording {sid}", optional=True)
    if seq is None:
        if ends:
            raise _Corrupt(BundleProblem.SESSION_END, f"session {sid}: its session.end (audit {ends[0]}) is not named")
        return
    if seq not in ends:
        raise _Corrupt(BundleProblem.SESSION_END, f"session {sid}: audit event {seq} is not its session.end")
    head = events[seq].get("head")
    if head is None:
        st.notes.append(f"session {sid}: the bastion recorded its end with no head (the recording failed)")
        return
    if r.get("outcome") == Outcome.VALID.value:
        if head != r.get("final_head") or head != heads[sid].hex():
            raise _Corrupt(
                BundleProblem.SESSION_END,
                f"session {sid}: the recording's final head is not the one its session.end (audit {seq}) names",
            )
    else:
        st.notes.append(f"session {sid}: its session.end names a sealed head, but the recording is INCOMPLETE")


def _sessions(
    src: _Source, members: set[str], by_sid: Mapping[str, Mapping[str, Any]], st: _State
) -> dict[str, dict[str, Any]]:
    files = {p for p in members if p.startswith("sessions/")}
    if files != {f"sessions/{sid}.json" for sid in by_sid}:
        raise _Corrupt(BundleProblem.METADATA, "sessions/ does not hold exactly one file per recording")
    out: dict[str, dict[str, Any]] = {}
    headers = {str(r.header.session_id): r.header for r in st.recordings if r.header is not None}
    for sid in by_sid:
        p = f"sessions/{sid}.json"
        s = _obj(_load_json(src.read_small(p), p, BundleProblem.METADATA), p)
        h = headers.get(sid)
        if (
            s.get("id") != sid
            or h is None
            or (s.get("user"), s.get("target"), s.get("login"))
            != (
                h.user,
                h.target,
                h.login,
            )
        ):
            raise _Corrupt(BundleProblem.METADATA, f"{p} does not describe the recorded session")
        out[sid] = s
    return out


def _grants(src: _Source, members: set[str], grant_ids: set[str], events: Mapping[int, Mapping[str, Any]]) -> None:
    created = {d.get("grant_id"): d for d in events.values() if d.get("type") == "access_request.create"}
    files = {p for p in members if p.startswith("grants/")}
    for p in sorted(files):
        gid = p[len("grants/") : -len(".json")] if p.endswith(".json") else ""
        if gid not in grant_ids:
            raise _Corrupt(BundleProblem.METADATA, f"{p} is not the grant of an exported session")
    for gid in sorted(grant_ids):
        p = f"grants/{gid}.json"
        if p not in files:
            if gid in created:
                raise _Corrupt(BundleProblem.METADATA, f"{p} is missing (its request is in the audit excerpt)")
            continue
        g = _obj(_load_json(src.read_small(p), p, BundleProblem.METADATA), p)
        if g.get("id") != gid:
            raise _Corrupt(BundleProblem.METADATA, f"{p} is about another grant")
        ev = created.get(gid)
        if ev is not None:
            mine = (g.get("requester"), g.get("target"), g.get("login"), g.get("reason"))
            theirs = (ev.get("actor"), ev.get("target"), ev.get("login"), ev.get("reason"))
            if mine != theirs:
                raise _Corrupt(BundleProblem.METADATA, f"{p} disagrees with its access_request.create audit event")
