"""What a file rule sees of an SFTP request: its :class:`~.model.FileOp` and its paths as text.

One mapping for both sides, so ``zsp rules test`` finds what fired live: the bastion's SFTP relay
(``zsp_tui.bastion.sftp``) asks with the request's fields as it records them in its ``sftp.op``
event, and the offline run reads them back from that event (:func:`file_request`).

Paths are the client's bytes: decoded as UTF-8 for matching only, a bad byte as U+FFFD (the
recording keeps them exactly). The text of a match quotes them as decoded, control characters
kept: whoever shows it escapes it (``replay.printable``), as for any matched text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from .model import FileOp

__all__ = ["file_ops_of", "file_request", "file_text", "path_text"]

_SIMPLE = {
    "remove": FileOp.REMOVE,
    "rename": FileOp.RENAME,
    "symlink": FileOp.SYMLINK,
    "mkdir": FileOp.MKDIR,
    "rmdir": FileOp.RMDIR,
    "setstat": FileOp.SETSTAT,
    "fsetstat": FileOp.SETSTAT,
    "opendir": FileOp.LIST,
}
_EXTENDED = {
    "posix-rename@openssh.com": FileOp.RENAME,
    "hardlink@openssh.com": FileOp.LINK,
    "lsetstat@openssh.com": FileOp.SETSTAT,
}
_WRITING = frozenset({"write", "append", "creat", "trunc"})
"""Open flags that make an open an upload (``excl`` only comes with ``creat``)."""


def file_ops_of(op: str, flags: str = "", name: str = "") -> tuple[FileOp, ...]:
    """The file operations of an SFTP request as recorded: ``op`` (``open``, ``remove``, ...),
    an open's ``flags`` (comma-joined: ``read,write,creat``), an extended request's ``name``.
    Empty: a request no file rule looks at (stat, read and write of a handle, close...)."""
    if op == "open":
        given = set(flags.split(",")) if flags else set()
        ops: list[FileOp] = []
        if "read" in given or not given & _WRITING:
            ops.append(FileOp.READ)  # an open with no flag at all opens for reading
        if given & _WRITING:
            ops.append(FileOp.WRITE)
        return tuple(ops)
    if op == "extended":
        found = _EXTENDED.get(name)
        return (found,) if found is not None else ()
    found = _SIMPLE.get(op)
    return (found,) if found is not None else ()


def path_text(raw: bytes) -> str:
    """A path as rules match it: UTF-8, a bad byte as U+FFFD."""
    return raw.decode("utf-8", "replace")


def _recorded_path(fields: Mapping[str, object], name: str) -> str | None:
    exact = fields.get(name + "_b64")
    if isinstance(exact, str):
        try:
            return path_text(base64.b64decode(exact, validate=True))
        except (binascii.Error, ValueError):
            pass  # not what the bastion writes: fall back to the text
    text = fields.get(name)
    return text if isinstance(text, str) else None


def file_request(fields: Mapping[str, object]) -> tuple[tuple[FileOp, ...], tuple[str, ...]]:
    """The file operations and paths of a recorded ``sftp.op`` event (offline: ``zsp rules test``).

    The path is read from its exact bytes (``path_b64``) when the text had to be escaped or cut;
    a path longer than those keep (3 KiB: ``_cut``) is tested on the part recorded."""
    op, flags, name = fields.get("op"), fields.get("flags"), fields.get("name")
    ops = file_ops_of(
        op if isinstance(op, str) else "",
        flags if isinstance(flags, str) else "",
        name if isinstance(name, str) else "",
    )
    if not ops:
        return (), ()
    paths = tuple(p for p in (_recorded_path(fields, "path"), _recorded_path(fields, "path2")) if p is not None)
    return ops, paths


def file_text(ops: tuple[FileOp, ...], paths: tuple[str, ...]) -> str:
    """A file match's text: ``write /root/.ssh/authorized_keys``, ``rename /a -> /b``."""
    what = ",".join(op.value for op in ops)
    return f"{what} {' -> '.join(paths)}" if paths else what
