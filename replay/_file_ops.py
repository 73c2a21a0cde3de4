"""Recorded file operations (SFTP, modern scp) that change the target's files without moving a
file's content through the bastion: remove, rename, mkdir, rmdir, setstat, symlink, hard link.

The transfers themselves are :func:`replay.files`; these are the rest of what a reviewer asks of
a file session ("what did they delete, rename, chmod?"). :func:`file_changes` pairs each
``sftp.op`` event of such an operation with the ``sftp.reply`` of the same request id, so each
change says whether the target did it (``ok``), refused it (the SFTP status: ``no-such-file``,
``permission-denied``...) or never answered (``no reply``: the session ended first).

:func:`file_ops` is the whole operation log (every request but the per-chunk reads and writes,
which :func:`replay.files` sums up per file): open, close, stat, readdir, realpath... with their
outcomes, for ``zsp files --ops``.

Paths are the peer's bytes: hostile text, shown only through :func:`replay.printable`
(:attr:`FileOp.shown`). Frames should be verified and signed (``only_signed(verify_frames(...))``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from recorder import Event, Frame, FrameKind

from ._printable import printable

__all__ = ["CHANGE_OPS", "FileOp", "file_changes", "file_ops"]

CHANGE_OPS = frozenset({"remove", "rename", "mkdir", "rmdir", "setstat", "fsetstat", "symlink"})
"""SFTP requests that change the target's files but carry no content."""
_CHANGE_EXTENSIONS = {
    "posix-rename@openssh.com": "rename",
    "hardlink@openssh.com": "link",
    "lsetstat@openssh.com": "setstat",
}
"""OpenSSH's extensions that change files, and the operation each is shown as."""
_CHUNK_OPS = frozenset({"read", "write"})
_NO_REPLY = "no reply"


@dataclass(frozen=True, slots=True)
class FileOp:
    """One SFTP request and what the target answered."""

    frame: int
    """The frame of the request's ``sftp.op`` event (``zsp play --from`` points at it)."""
    t_us: int
    """Its time: microseconds since the session started."""
    op: str
    """``remove``, ``rename``, ``mkdir``, ``rmdir``, ``setstat``, ``fsetstat``, ``symlink``,
    ``link`` (and for :func:`file_ops` also ``open``, ``close``, ``stat``, ``readdir``...)."""
    path: str
    """The (first) path as the client sent it, decoded as UTF-8 (exact unless ``path_bytes``)."""
    path_bytes: bytes | None
    """The exact bytes of ``path`` when they are not UTF-8 or too long for ``path``."""
    path2: str = ""
    """The second path: a rename's new name, a symlink's or link's other end."""
    path2_bytes: bytes | None = None
    outcome: str = _NO_REPLY
    """``ok``, the SFTP status the target answered (``no-such-file``, ``permission-denied``,
    ``failure``...), ``refused by rule NAME`` when a real-time rule kept it from the target,
    ``handle``/``attrs``/``name``/``data`` for requests answered with those, or ``no reply``."""
    detail: str = ""
    """For setstat and open: the attributes or flags the client asked for (``mode=0o600``,
    ``write,creat,trunc``)."""

    @property
    def text(self) -> str:
        """``PATH`` or ``PATH -> PATH2`` unescaped (hostile): for a caller that escapes whatever it
        shows (a table, ``zsp_tui.tui.text.plain``)."""
        first = _decoded(self.path, self.path_bytes)
        if not (self.path2 or self.path2_bytes):
            return first
        return f"{first} -> {_decoded(self.path2, self.path2_bytes)}"

    @property
    def shown(self) -> str:
        """:attr:`text` as one line, control characters escaped: safe to print as it is."""
        return printable(self.text)


def _decoded(text: str, exact: bytes | None) -> str:
    return exact.decode("utf-8", "backslashreplace") if exact is not None else text


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _exact(fields: dict[str, Any], name: str) -> bytes | None:
    raw = fields.get(f"{name}_b64")
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def _detail(op: str, fields: dict[str, Any]) -> str:
    if op == "open":
        return _str(fields.get("flags"))
    attrs = []
    for key in sorted(fields):
        if not key.startswith("attr_"):
            continue
        value = fields[key]
        name = key[len("attr_") :]
        if name == "mode" and isinstance(value, int):
            attrs.append(f"mode={value & 0o7777:#o}")
        else:
            attrs.append(f"{name}={value}")
    return " ".join(attrs)


def _scan(frames: Iterable[Frame], *, changes_only: bool) -> list[FileOp]:
    out: list[FileOp] = []
    waiting: dict[int, int] = {}  # request id -> its index in ``out``
    for frame in frames:
        if frame.kind is not FrameKind.EVENT or not isinstance(frame.data, Event):
            continue
        ev = frame.data
        f = ev.fields
        rid = f.get("id")
        if ev.type == "sftp.reply":
            if not isinstance(rid, int) or rid not in waiting:
                continue
            at = waiting.pop(rid)
            reply = _str(f.get("reply"))
            outcome = _str(f.get("status")) if reply == "status" else reply
            if f.get("by") == "rule":  # the bastion answered it: a rule refused it (docs/RULES.md, deny)
                outcome = f"refused by rule {_str(f.get('rule'))}"
            out[at] = replace(out[at], outcome=outcome or "?")
            continue
        if ev.type != "sftp.op":
            continue
        op = _str(f.get("op"))
        if op == "extended":
            op = _CHANGE_EXTENSIONS.get(_str(f.get("name")), "" if changes_only else _str(f.get("name")) or "extended")
        if not op or op == "init" or op in _CHUNK_OPS:
            continue
        if changes_only and op not in CHANGE_OPS and op != "link":
            continue
        if isinstance(rid, int):
            waiting[rid] = len(out)  # a reused id replaces the older request: its reply is the newer's
        out.append(
            FileOp(
                frame=frame.seq,
                t_us=frame.t_us,
                op=op,
                path=_str(f.get("path")),
                path_bytes=_exact(f, "path"),
                path2=_str(f.get("path2")),
                path2_bytes=_exact(f, "path2"),
                detail=_detail(op, f),
            )
        )
    return out


def file_changes(frames: Iterable[Frame]) -> list[FileOp]:
    """The requests that changed (or tried to change) the target's files without moving content:
    remove, rename, mkdir, rmdir, setstat, symlink, hard link; each with the target's answer."""
    return _scan(frames, changes_only=True)


def file_ops(frames: Iterable[Frame]) -> list[FileOp]:
    """Every SFTP request but the per-chunk reads and writes, with the target's answer."""
    return _scan(frames, changes_only=False)
