"""``zsp files``: the files a recorded session transferred (SFTP, scp), listed, as JSON, or
extracted, and the other changes it made to the target's files (remove, rename, mkdir, chmod...);
``--ops`` the whole operation log. Also the lists ``zsp play`` prints beside the screen.

Everything listed comes from frames a verified signature covers (``only_signed(verify_frames)``).
Paths are the operator's bytes: on the terminal they only ever appear through ``printable``
(``table`` applies it); JSON carries them exactly. ``--extract`` never writes to a path taken
from the recording: each file is named by its index and a sanitized basename, created new
(never overwriting) in the directory given, and only when its content hashes to its sha256.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from recorder import Event, Frame, FrameKind, PublicKey
from replay import (
    ContentMismatch,
    FileOp,
    SourceError,
    TransferredFile,
    file_changes,
    file_ops,
    files,
    only_signed,
    verify,
    verify_frames,
)

from ..exceptions import UsageError
from ..session_ref import SessionIndex
from ._common import data as _data
from ._common import table

__all__ = ["file_activity", "file_list", "print_changes", "print_files", "register", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_list(path: Path, trusted: list[PublicKey], *, content: bool = False) -> list[TransferredFile]:
    """The transferred files of the recording at ``path``, as far as signatures cover it."""
    with open(path, "rb") as f:
        return files(only_signed(verify_frames(f, trusted, source=str(path))), content=content)


def file_activity(
    path: Path, trusted: list[PublicKey], *, content: bool = False, every_op: bool = False
) -> tuple[list[TransferredFile], list[FileOp]]:
    """The transferred files and the other file operations of the recording at ``path``, in one
    verified pass: the changes (remove, rename, mkdir...), or with ``every_op`` every request but
    the per-chunk reads and writes. Only the request and reply events are held for the second
    list, not the frames in between."""
    kept: list[Frame] = []

    def tap(frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            ev = frame.data
            if (
                frame.kind is FrameKind.EVENT
                and isinstance(ev, Event)
                and ev.type in ("sftp.op", "sftp.reply")
                and ev.fields.get("op") not in ("read", "write")
            ):
                kept.append(frame)
            yield frame

    with open(path, "rb") as f:
        found = files(tap(only_signed(verify_frames(f, trusted, source=str(path)))), content=content)
    return found, (file_ops(kept) if every_op else file_changes(kept))


def safe_name(f: TransferredFile) -> str:
    """A file name for ``f`` that no recorded path can steer: ``NNN-basename``, the basename reduced
    to ASCII letters, digits, ``.``, ``_`` and ``-`` (no leading dot), at most 80 characters."""
    base = f.path.rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")[:80] or "file"
    return f"{f.index:03d}-{base}"


def _when(t_us: int) -> str:
    from .. import player

    return f"{player.format_time(t_us)}.{t_us // 1000 % 1000:03d}"


def _state(f: TransferredFile) -> str:
    if not f.finished:
        return "cut (session ended)"
    if f.content_complete:
        return "kept"
    if f.content_kept:
        return f"{f.content_kept} bytes kept"
    return "hash only"


def print_files(found: list[TransferredFile]) -> None:
    """The table of transferred files (paths escaped by ``table``)."""
    rows = [
        [_when(f.t_us), f.direction, str(f.size), f.sha256 or "-", _state(f), f.path]
        for f in found
    ]
    table(rows, ["TIME", "DIRECTION", "SIZE", "SHA256", "CONTENT", "PATH"])


def print_changes(ops: list[FileOp]) -> None:
    """The table of file operations: time, operation, the target's answer, details, path(s)."""
    rows = [[_when(o.t_us), o.op, o.outcome, o.detail or "-", o.text] for o in ops]  # table() escapes
    table(rows, ["TIME", "OPERATION", "OUTCOME", "DETAIL", "PATH"])


def _op_json(o: FileOp) -> dict[str, object]:
    out: dict[str, object] = {"op": o.op, "path": o.path, "outcome": o.outcome, "frame": o.frame, "t_us": o.t_us}
    if o.path_bytes is not None:
        out["path_b64"] = base64.b64encode(o.path_bytes).decode()
    if o.path2 or o.path2_bytes is not None:
        out["path2"] = o.path2
    if o.path2_bytes is not None:
        out["path2_b64"] = base64.b64encode(o.path2_bytes).decode()
    if o.detail:
        out["detail"] = o.detail
    return out


def _json(f: TransferredFile, extracted: str | None) -> dict[str, object]:
    out: dict[str, object] = {
        "index": f.index,
        "path": f.path,
        "direction": f.direction,
        "size": f.size,
        "sha256": f.sha256,
        "content_kept": f.content_kept,
        "content_complete": f.content_complete,
        "finished": f.finished,
        "frame": f.frame,
        "t_us": f.t_us,
    }
    if f.path_bytes is not None:
        out["path_b64"] = base64.b64encode(f.path_bytes).decode()
    if f.hash_note:
        out["hash_note"] = f.hash_note
    if extracted is not None:
        out["extracted"] = extracted
    return out


def _extract(found: list[TransferredFile], target: Path) -> tuple[dict[int, str], int]:
    """Write the content of each complete file whose hash matches; (index -> name written, refused)."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--extract {target}: {exc.strerror or exc}") from None
    written: dict[int, str] = {}
    refused = 0
    for f in found:
        if not f.content_complete:
            print(f"zsp: file #{f.index}: the recording does not hold all of it, not extracted", file=sys.stderr)
            continue
        try:
            content = f.content()
        except ContentMismatch as exc:
            refused += 1
            print(f"zsp: refused: {exc}; nothing written", file=sys.stderr)
            continue
        name = safe_name(f)
        try:
            fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            refused += 1
            print(f"zsp: file #{f.index}: cannot create {target / name}: {exc.strerror or exc}", file=sys.stderr)
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        written[f.index] = name
    return written, refused


def cmd_files(args: argparse.Namespace) -> int:
    from .recording import _play_verdict, _session_ref, _trusted, require_identity

    trusted = _trusted(args)
    data = _data(args)
    index = SessionIndex(data) if data.root.exists() and "/" not in args.path else None
    ref = _session_ref(args, args.path, index)
    try:
        report = verify(ref.path, trusted)
        require_identity(ref, report)
        found, ops = file_activity(ref.path, trusted, content=args.extract is not None, every_op=args.ops)
    except SourceError as exc:
        raise UsageError(f"cannot read {ref.path}: {exc.reason}") from None
    written: dict[int, str] = {}
    refused = 0
    if args.extract is not None:
        written, refused = _extract(found, Path(args.extract))
    if args.json and args.ops:
        json.dump([_op_json(o) for o in ops], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.json:
        json.dump([_json(f, written.get(f.index)) for f in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.ops:
        if ops:
            print_changes(ops)
        else:
            print("no file operations", file=sys.stderr)
    else:
        if found:
            print_files(found)
        else:
            print("no files transferred", file=sys.stderr)
        if ops:
            print(f"\nother changes to files ({len(ops)}):")
            print_changes(ops)
    code = _play_verdict(report)
    return code or (1 if refused else 0)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "files",
        parents=[common],
        help="list the files a session transferred (SFTP, scp): time, direction, size, sha256, path",
        description="List the files a recorded session read or wrote through the bastion, from frames a "
        "verified signature covers. Paths are shown escaped; --json gives them exactly. --extract DIR writes "
        "the content of each file the recording holds in full into DIR, named NNN-BASENAME (sanitized, "
        "never a path from the recording, never overwriting), and refuses any whose content does not "
        "hash to its recorded sha256 (exit 1). After the files come the other changes the session made "
        "(remove, rename, mkdir, rmdir, setstat, symlink, link) with the target's answer; --ops lists every "
        "operation instead (with --json: a JSON array of them).",
    )
    p.add_argument("path", metavar="SESSION", help="session id, unique start or end of one, or a path with '/'")
    p.add_argument("--json", action="store_true", help="print a JSON array with exact values")
    p.add_argument(
        "--ops", action="store_true", help="every file operation (open, stat, rename...) with the target's answer"
    )
    p.add_argument("--extract", metavar="DIR", help="write the complete, hash-checked content of each file into DIR")
    p.add_argument("--signer", action="append", metavar="KEYFILE", help="trust this key (repeatable)")
    p.set_defaults(func=cmd_files)
