"""The recorded SFTP proxy: the bastion's ``sftp`` subsystem relayed packet by packet to the target's.

Stock ``sftp`` and modern ``scp`` (OpenSSH 9+, which speaks SFTP) reach a target through zsp only
under a grant whose policy rule says ``file_transfer = true``. The bastion does not serve files
itself: it parses each SFTP v3 packet the operator sends, records what it asks for (an ``event``
frame in the session's chained recording), and only then forwards the packet, unchanged, to the
SFTP subsystem of the target over the session's certificate-authenticated upstream connection;
each reply is parsed, recorded and forwarded the same way. Fail closed: a packet whose event
cannot be queued for the recording is not relayed, and the session ends.

Real-time file rules (docs/RULES.md) see each request after it is recorded and before it is
relayed (``SessionGuard.file_request``): a request a rule denies or terminates on is answered here
with a ``permission denied`` status (recorded as an ``sftp.reply`` with ``by = "rule"``) and never
reaches the target; a terminating rule then ends the session, and nothing more is read.

What the recording holds (see docs/FORMAT.md, "File transfer events"):

- ``sftp.op`` per request (``op``: open, read, write, close, stat, readdir, rename, remove, ...)
  with its paths, handle, offset and length; ``sftp.reply`` per reply (status, handle, data
  length, names, attributes);
- ``sftp.data`` frames with the bytes of each file read or written (base64, at most
  ``_CHUNK`` bytes a frame) until the file's ``max_file_record_bytes`` is reached; beyond it only
  the hash is kept, and the ``sftp.file`` event says so;
- ``sftp.file`` when a file handle that moved data is closed: path, direction (upload, download),
  bytes, sha256 of the content in offset order, how much content the recording kept.

The whole-file sha256 is computed over the bytes as they cross at increasing offsets; stock
clients pipeline their requests but read and write each file front to back, and chunks that
arrive ahead of the gap are held (bounded) until it fills. A file accessed out of order or
rewritten in place gets no whole-file hash (``sha256`` empty, ``hash_note`` says why): every chunk
is still in the ``sftp.op`` events and, within the cap, in ``sftp.data``.

Paths and names are the peer's bytes: decoded as UTF-8 where they are, else escaped with
``backslashreplace`` and given exactly in ``*_b64`` fields. Nothing here prints them; whoever
shows them on a terminal escapes them (``replay.printable``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from recorder import RecordingFailed
from replay import printable

from ..rules.files import file_ops_of, path_text
from ..rules.model import Action

if TYPE_CHECKING:
    from .session import LiveSession

__all__ = ["DEFAULT_MAX_FILE_RECORD_BYTES", "SftpProtocolError", "proxy_sftp"]

DEFAULT_MAX_FILE_RECORD_BYTES = 16 << 20
"""Content of one file kept in the recording (``[bastion] max_file_record_bytes``); then hash only."""

_MAX_PACKET = 1 << 20
"""Largest SFTP packet relayed either way (OpenSSH's sftp-server allows 256 KiB)."""
_CHUNK = 3072
"""Content bytes per ``sftp.data`` frame: 4096 base64 characters, the format's field limit."""
_MAX_AHEAD = 8 << 20
"""Chunks held while waiting for a gap before them, per file; beyond: no whole-file hash."""
_TEXT = 1024
"""Characters of a path or name kept in a text field (the exact bytes go in ``*_b64``)."""
_EXACT = 3072
"""Bytes of a path kept exactly in ``*_b64`` (4096 base64 characters, the format's field limit)."""
_MAX_PENDING = 4096
"""Requests awaiting a reply; a client that pipelines more is cut off (bounded memory)."""

# SFTP v3 packet types (draft-ietf-secsh-filexfer-02) and OpenSSH's extensions.
_INIT, _VERSION = 1, 2
_OPS = {
    3: "open",
    4: "close",
    5: "read",
    6: "write",
    7: "lstat",
    8: "fstat",
    9: "setstat",
    10: "fsetstat",
    11: "opendir",
    12: "readdir",
    13: "remove",
    14: "mkdir",
    15: "rmdir",
    16: "realpath",
    17: "stat",
    18: "rename",
    19: "readlink",
    20: "symlink",
    200: "extended",
}
_REPLIES = {101: "status", 102: "handle", 103: "data", 104: "name", 105: "attrs", 201: "extended_reply"}
_PATH_OPS = {"lstat", "opendir", "remove", "rmdir", "realpath", "stat", "readlink", "setstat", "mkdir"}
_HANDLE_OPS = {"close", "fstat", "fsetstat", "readdir"}
_TWO_PATH_EXT = {"posix-rename@openssh.com", "hardlink@openssh.com"}
_PATH_EXT = {"statvfs@openssh.com", "expand-path@openssh.com", "lsetstat@openssh.com", "home-directory"}
_PFLAGS = {1: "read", 2: "write", 4: "append", 8: "creat", 16: "trunc", 32: "excl"}
_STATUS = {
    0: "ok",
    1: "eof",
    2: "no-such-file",
    3: "permission-denied",
    4: "failure",
    5: "bad-message",
    6: "no-connection",
    7: "connection-lost",
    8: "op-unsupported",
}


class SftpProtocolError(Exception):
    """A packet the proxy cannot parse: it is not relayed, and the transfer ends."""


class _Reader:
    """Fields of one SFTP packet body, in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SftpProtocolError("truncated SFTP packet")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.u32())

    def attrs(self) -> dict[str, int]:
        flags = self.u32()
        out: dict[str, int] = {}
        if flags & 0x1:
            out["size"] = self.u64()
        if flags & 0x2:
            out["uid"], out["gid"] = self.u32(), self.u32()
        if flags & 0x4:
            out["mode"] = self.u32()
        if flags & 0x8:
            out["atime"], out["mtime"] = self.u32(), self.u32()
        if flags & 0x80000000:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return out


def _text(raw: bytes, name: str) -> dict[str, str | bool]:
    """A path or name as event fields: text, and the exact bytes when they are not plain UTF-8
    or the text had to be cut."""
    try:
        text = raw.decode("utf-8")
        exact = len(text) <= _TEXT
    except UnicodeDecodeError:
        text, exact = raw.decode("utf-8", "backslashreplace"), False
    fields: dict[str, str | bool] = {name: text[:_TEXT]}
    if not exact:
        fields[name + "_b64"] = base64.b64encode(raw[:_EXACT]).decode()
        if len(raw) > _EXACT:
            fields[name + "_cut"] = True  # longer than any path a POSIX target accepts (4096)
    return fields


@dataclass(eq=False)
class _File:
    """One open file handle: what crossed, in order, for its hash and its recorded content."""

    path: bytes
    flags: int
    hasher: Any = field(default_factory=hashlib.sha256)
    next: int = 0
    ahead: dict[int, bytes] = field(default_factory=dict)
    ahead_bytes: int = 0
    exact: bool = True
    note: str = ""
    uploaded: int = 0
    downloaded: int = 0
    kept: int = 0
    capped: bool = False

    def chunk(self, offset: int, data: bytes) -> None:
        if not self.exact or not data:
            return
        if offset == self.next:
            self.hasher.update(data)
            self.next += len(data)
            while self.next in self.ahead:
                more = self.ahead.pop(self.next)
                self.ahead_bytes -= len(more)
                self.hasher.update(more)
                self.next += len(more)
        elif offset > self.next and offset not in self.ahead and self.ahead_bytes + len(data) <= _MAX_AHEAD:
            self.ahead[offset] = data
            self.ahead_bytes += len(data)
        else:
            self.exact = False
            self.note = f"accessed out of order at offset {offset}: no whole-file hash"
            self.ahead.clear()


@dataclass(eq=False)
class _Proxy:
    live: LiveSession
    cap: int
    on_file: Callable[[dict[str, Any]], None] | None = None
    files: dict[bytes, _File] = field(default_factory=dict)
    pending: dict[int, tuple[str, bytes, int, bytes]] = field(default_factory=dict)
    """Request id -> (op, handle or path, offset, path) until its reply."""

    def event(self, type: str, message: str, **fields: Any) -> None:
        """Queue one event frame; raises RecordingFailed (the packet is then not relayed)."""
        self.live.recorder.event(type, message, **fields)

    def content(self, f: _File, direction: str, offset: int, data: bytes) -> None:
        if f.capped or not data:
            return
        if f.kept + len(data) > self.cap:
            f.capped = True
            self.event(
                "sftp.data_capped",
                f"content of this file beyond {self.cap} bytes is not kept; its hash is",
                limit=self.cap,
                offset=offset,
                **_text(f.path, "path"),
            )
            return
        self.live.recorder.charge(len(data))  # content counts against the recording limit
        for i in range(0, len(data), _CHUNK):
            part = data[i : i + _CHUNK]
            self.event(
                "sftp.data",
                "",
                direction=direction,
                offset=offset + i,
                data=base64.b64encode(part).decode(),
                **_text(f.path, "path"),
            )
        f.kept += len(data)

    # --- requests, operator -> target -------------------------------------------------------

    def request(self, body: bytes) -> bytes | None:
        """Record one request; the reply to send the operator instead of relaying it (a file rule
        refused it), or None to relay it."""
        r = _Reader(body)
        kind = r.take(1)[0]
        if kind == _INIT:
            self.event("sftp.op", "init", op="init", version=r.u32())
            return None
        op = _OPS.get(kind)
        if op is None:
            raise SftpProtocolError(f"unknown SFTP request type {kind}")
        rid = r.u32()
        if len(self.pending) >= _MAX_PENDING:
            raise SftpProtocolError(f"more than {_MAX_PENDING} requests awaiting replies")
        fields: dict[str, Any] = {"op": op, "id": rid}
        paths: list[bytes] = []  # the paths file rules match (for fsetstat: its handle's)
        if op == "open":
            path = r.string()
            paths.append(path)
            flags = r.u32()
            fields.update(_text(path, "path"))
            fields["flags"] = ",".join(n for b, n in _PFLAGS.items() if flags & b)
            self.pending[rid] = (op, path, flags, path)
        elif op in _PATH_OPS:
            path = r.string()
            paths.append(path)
            fields.update(_text(path, "path"))
            if op in {"setstat", "mkdir"}:
                fields.update({f"attr_{k}": v for k, v in r.attrs().items()})
            self.pending[rid] = (op, path, 0, path)
        elif op in _HANDLE_OPS:
            handle = r.string()
            fields["handle"] = handle.hex()
            f = self.files.get(handle)
            if f is not None:
                fields.update(_text(f.path, "path"))
                paths.append(f.path)
            if op == "fsetstat":
                fields.update({f"attr_{k}": v for k, v in r.attrs().items()})
            self.pending[rid] = (op, handle, 0, f.path if f else b"")
        elif op in {"read", "write"}:
            handle, offset = r.string(), r.u64()
            f = self.files.get(handle)
            fields.update(handle=handle.hex(), offset=offset)
            if f is not None:
                fields.update(_text(f.path, "path"))
            if op == "read":
                fields["length"] = r.u32()
                self.pending[rid] = (op, handle, offset, f.path if f else b"")
            else:
                data = r.string()
                fields["length"] = len(data)
                self.event("sftp.op", op, **fields)
                if f is not None:
                    f.uploaded += len(data)
                    f.chunk(offset, data)
                    self.content(f, "upload", offset, data)
                self.pending[rid] = (op, handle, offset, f.path if f else b"")
                return None
        elif op in {"rename", "symlink"}:
            a, b = r.string(), r.string()
            paths += (a, b)
            fields.update(_text(a, "path"))
            fields.update(_text(b, "path2"))
            self.pending[rid] = (op, a, 0, a)
        else:  # extended
            name = r.string()
            fields["name"] = name.decode("utf-8", "backslashreplace")[:200]
            ext = fields["name"]
            if ext in _TWO_PATH_EXT:
                a, b = r.string(), r.string()
                paths += (a, b)
                fields.update(_text(a, "path"))
                fields.update(_text(b, "path2"))
            elif ext in _PATH_EXT:
                path = r.string()
                paths.append(path)
                fields.update(_text(path, "path"))
            elif ext in {"fstatvfs@openssh.com", "fsync@openssh.com"}:
                fields["handle"] = r.string().hex()
            elif ext == "copy-data":
                src, off, length, dst, doff = r.string(), r.u64(), r.u64(), r.string(), r.u64()
                fields.update(handle=src.hex(), offset=off, length=length, handle2=dst.hex(), offset2=doff)
                for h in (src, dst):  # a copy inside the target: no content crossed, no hash of it
                    if (g := self.files.get(h)) is not None:
                        g.exact, g.note = False, "copy-data inside the target: no whole-file hash"
            self.pending[rid] = ("extended", name, 0, b"")
        self.event("sftp.op", op, **fields)
        return self.rules(op, rid, fields, paths)

    def rules(self, op: str, rid: int, fields: dict[str, Any], paths: list[bytes]) -> bytes | None:
        """The session's file rules on a request just recorded: flagged (and so on) by the guard;
        refused (deny, terminate): its ``permission denied`` reply, recorded, to send back instead
        (a terminating rule has ended the session by then)."""
        guard = self.live.rules
        if guard is None:
            return None
        ops = file_ops_of(op, str(fields.get("flags", "")), str(fields.get("name", "")))
        if not ops:
            return None
        refused = guard.file_request(ops, tuple(path_text(p) for p in paths))
        if refused is None:
            return None
        rule = refused.rule
        self.pending.pop(rid, None)  # answered here: the target never sees it
        text = printable(f"refused by rule {rule.name}: {rule.shown_message}")[:500]
        reply: dict[str, Any] = {"reply": "status", "id": rid, "op": op}
        if paths:
            reply.update(_text(paths[0], "path"))
        self.event(
            "sftp.reply", "status", **reply, status="permission-denied", text=text, rule=rule.name, by="rule"
        )
        raw = text.encode()
        answer = struct.pack(">BII", 101, rid, 3) + struct.pack(">I", len(raw)) + raw + struct.pack(">I", 0)
        if Action.TERMINATE in rule.actions:
            guard.terminate(refused)
        return answer

    # --- replies, target -> operator --------------------------------------------------------

    def reply(self, body: bytes) -> None:
        """Record one reply (always relayed)."""
        r = _Reader(body)
        kind = r.take(1)[0]
        if kind == _VERSION:
            version = r.u32()
            exts = []
            while r.pos < len(body):
                exts.append(r.string().decode("utf-8", "backslashreplace"))
                r.string()
            self.event("sftp.reply", "version", reply="version", version=version, extensions=",".join(exts)[:2000])
            return
        reply = _REPLIES.get(kind)
        if reply is None:
            raise SftpProtocolError(f"unknown SFTP reply type {kind}")
        rid = r.u32()
        op, key, offset, path = self.pending.pop(rid, ("?", b"", 0, b""))
        fields: dict[str, Any] = {"reply": reply, "id": rid, "op": op}
        if path:
            fields.update(_text(path, "path"))
        if reply == "status":
            code = r.u32()
            fields["status"] = _STATUS.get(code, str(code))
            fields["text"] = r.string().decode("utf-8", "backslashreplace")[:500]
            if op == "close" and code == 0:
                self.closed(key)
        elif reply == "handle":
            handle = r.string()
            fields["handle"] = handle.hex()
            if op == "open":
                self.files[handle] = _File(path=key, flags=offset)
        elif reply == "data":
            data = r.string()
            fields["length"] = len(data)
            fields["offset"] = offset
            self.event("sftp.reply", reply, **fields)
            f = self.files.get(key) if op == "read" else None
            if f is not None:
                f.downloaded += len(data)
                f.chunk(offset, data)
                self.content(f, "download", offset, data)
            return
        elif reply == "name":
            count = r.u32()
            names: list[str] = []
            size = 2
            for _ in range(count):
                name = r.string().decode("utf-8", "backslashreplace")
                r.string()
                r.attrs()
                size += len(json.dumps(name)) + 2
                if size <= 4000:
                    names.append(name)
            fields["count"] = count
            fields["names"] = json.dumps(names)  # a JSON list: names may hold any character
            fields["names_truncated"] = len(names) < count
        elif reply == "attrs":
            fields.update({f"attr_{k}": v for k, v in r.attrs().items()})
        self.event("sftp.reply", reply, **fields)

    def closed(self, handle: bytes) -> None:
        f = self.files.pop(handle, None)
        if f is None or not (f.uploaded or f.downloaded):
            return
        exact = f.exact and not f.ahead
        if f.exact and f.ahead:
            f.note = "a gap before the last chunks never crossed: no whole-file hash"
        direction = "both" if f.uploaded and f.downloaded else "upload" if f.uploaded else "download"
        size = f.next if exact else max(f.uploaded, f.downloaded)
        sha = f.hasher.hexdigest() if exact else ""
        if f.capped:
            kept = f"content over the {self.cap}-byte cap: the first {f.kept} bytes are kept, the hash covers all"
        else:
            kept = "content kept in full"
        fields: dict[str, Any] = {
            "direction": direction,
            "size": size,
            "sha256": sha,
            "content_kept": f.kept,
            "content_complete": not f.capped and exact,
            "hash_note": f.note or None,
            **_text(f.path, "path"),
        }
        self.event("sftp.file", f"{direction} {size} bytes, sha256 {sha or '(none)'}; {kept}", **fields)
        if self.on_file is not None:
            self.on_file(fields)


async def _packet(reader: Any) -> bytes | None:
    """One length-prefixed SFTP packet body, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise SftpProtocolError("stream ended inside a packet length") from None
        return None
    (length,) = struct.unpack(">I", head)
    if not 1 <= length <= _MAX_PACKET:
        raise SftpProtocolError(f"SFTP packet of {length} bytes refused")
    try:
        return bytes(await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise SftpProtocolError("stream ended inside a packet") from None


async def proxy_sftp(
    live: LiveSession,
    upstream: asyncssh.SSHClientProcess[bytes],
    cap: int,
    on_file: Callable[[dict[str, Any]], None] | None = None,
) -> int | None:
    """Relay the operator's SFTP subsystem to ``upstream`` (the target's) until either side ends
    or the session is ended (expiry, revoke, rule); every packet is recorded before it is relayed.
    Returns 0 when the operator closed it cleanly, else None."""
    proxy = _Proxy(live, cap, on_file)
    client = live.process
    problem: list[str] = []

    async def pump(reader: Any, writer: Any, record: Callable[[bytes], bytes | None]) -> None:
        while True:
            body = await _packet(reader)
            if body is None:
                return
            answer = record(body)
            await live.recorder.drain()  # backpressure: the recording keeps pace with the relay
            if answer is not None:  # refused by a rule: answered here, never relayed
                client.stdout.write(struct.pack(">I", len(answer)) + answer)
                if live.ending.is_set():
                    return  # a terminating rule: the operator has its answer, nothing more is read
                continue
            if live.ending.is_set():
                return  # ended (a rule, a revocation) while this packet was recorded: not relayed
            writer.write(struct.pack(">I", len(body)) + body)

    async def guarded(coro: Any, side: str) -> None:
        try:
            await coro
        except RecordingFailed as exc:
            problem.append("recording")
            live.end("recording-failed", f"recording failed ({exc}); file transfer ended, nothing more relayed")
        except SftpProtocolError as exc:
            problem.append("protocol")
            with contextlib.suppress(RecordingFailed):
                proxy.event("sftp.error", f"{side}: {exc}", side=side)
            live.end("sftp-protocol", f"file transfer ended: {exc}")
        except (OSError, asyncssh.Error, ConnectionError) as exc:
            problem.append(side)
            with contextlib.suppress(RecordingFailed):
                proxy.event("sftp.error", f"{side}: {exc}", side=side)
        except Exception as exc:  # noqa: BLE001 -- a bug here ends the transfer; nothing unrecorded is relayed
            problem.append("internal")
            with contextlib.suppress(RecordingFailed):
                proxy.event("sftp.error", f"{side}: internal error {type(exc).__name__}: {exc}", side=side)
            live.end("sftp-error", "file transfer ended: internal error in the bastion's SFTP relay")

    up = asyncio.create_task(guarded(pump(client.stdin, upstream.stdin, proxy.request), "operator"))
    down = asyncio.create_task(guarded(pump(upstream.stdout, client.stdout, proxy.reply), "target"))
    ending = asyncio.create_task(live.ending.wait())
    try:
        done, _ = await asyncio.wait({up, down, ending}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and not problem:
            # The operator closed its side: let the target's last replies through, briefly.
            with contextlib.suppress(OSError, asyncssh.Error):
                upstream.stdin.write_eof()
            await asyncio.wait({down, ending}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down, ending):
            task.cancel()
        for task in (up, down, ending):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    with contextlib.suppress(RecordingFailed):
        for f in list(proxy.files.values()):
            if f.uploaded or f.downloaded:  # cut mid-file: say how far it got
                proxy.event(
                    "sftp.file_incomplete",
                    f"transfer cut after {max(f.uploaded, f.downloaded)} bytes",
                    uploaded=f.uploaded,
                    downloaded=f.downloaded,
                    content_kept=f.kept,
                    **_text(f.path, "path"),
                )
    if live.ending.is_set() or problem:
        return None
    return 0
