"""asciicast v2 and v3, asciinema's file formats, of a verified recording.

Both are newline-delimited JSON: a header object, then one ``[time, code, data]`` array per
event (docs.asciinema.org/manual/asciicast/v2 and .../v3). v2 (asciinema 2.x) names the size
``width``/``height`` and times each event from the start of the session; v3 (asciinema 3.x, its
default since 2025) has a ``term`` object (``cols``, ``rows``, ``type``), times each event by
the interval since the previous one, and ends with an ``x`` (exit) event.

What a recording becomes:

* output frames: ``o`` events, through one incremental UTF-8 decoder (``errors="replace"``), so
  a character that SSH split across two packets (two frames) comes out whole in the second; a
  session without a PTY gets its newlines as a terminal's ONLCR showed them (``\\r\\n``), as
  ``zsp play`` shows it;
* input frames: ``i`` events only with ``include_input`` (their own decoder); masked input is
  never in them (the bastion sealed it to the escrow key);
* resize frames: ``r`` events, ``"COLSxROWS"``;
* markers (``m``): each command typed (:class:`replay.Scanner`, the command line as the screen
  showed it: ``$ ls -l``), the exec command of an ``ssh host CMD`` session, and each event the
  recording holds (``grant.warning: ...``, ``input.masked: ...``; a transferred file's
  ``sftp.file: upload N bytes, sha256 ...: PATH``); every label goes through
  :func:`replay.printable`, so a hostile command line cannot put a control character into a
  player's marker list;
* the seal: a marker ``exit N (reason)``, and in v3 the ``x`` event with the exit status.

Times are the recording's microseconds, written with integer arithmetic (never a float sum).
At a coarser ``resolution_us`` each event's *absolute* time is rounded and a v3 interval is the
difference of two rounded absolute times: the rounding error is carried into the next interval
instead of accumulating, so the intervals of a ten-hour session still add up exactly to its last
event's time. Events keep the recording's order; a marker resolved after its Enter (the echo came
later) is placed at the moment it was resolved, so times never go backwards.

Header strings (title, ``command``, ``TERM``) are escaped like markers; ``o``/``i`` data is the
session's bytes as decoded, JSON-escaped (``json.dumps``): a player interprets them as the
operator's terminal did, which is what the file is for. A ``zsp`` object in the header names the
session, its verification outcome, signer and final head (players ignore unknown keys).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

from recorder import Event, Frame, FrameKind, Header, Resize, Seal

from ._exceptions import ReplayError
from ._export_meta import ExportMeta
from ._file_ops import file_changes
from ._files import PROTOCOL_EVENTS, files
from ._printable import printable
from ._scan import Command, Scanner, had_pty, keys_text
from ._verify import Outcome

__all__ = ["CAST_VERSIONS", "asciicast", "command_label"]

CAST_VERSIONS = (2, 3)
_RESOLUTIONS = {1: 6, 10: 5, 100: 4, 1000: 3}
"""Allowed ``resolution_us`` and the decimals each is written with."""
_OUTPUT = FrameKind.OUTPUT
_INPUT = FrameKind.INPUT


def command_label(cmd: Command) -> str | None:
    """How a typed command is named (escaped); None for a masked run (its event says it)."""
    if cmd.blind:
        text = f"(typed, not echoed) {keys_text(cmd.keys)}"
    else:
        text = cmd.text
    if cmd.masked_bytes:
        if not text:
            return None
        text = f"{text} [masked {cmd.masked_bytes} bytes]"
    return printable(f"$ {text}".rstrip())


class _Clock:
    """Event times as text: absolute (v2) or intervals since the previous event (v3)."""

    __slots__ = ("_decimals", "_interval", "_prev", "_prev_rounded", "_quantum")

    def __init__(self, version: int, resolution_us: int) -> None:
        self._interval = version == 3
        self._quantum = resolution_us
        self._decimals = _RESOLUTIONS[resolution_us]
        self._prev = 0
        self._prev_rounded = 0

    @property
    def now(self) -> int:
        return self._prev

    def stamp(self, t_us: int) -> str:
        t = max(t_us, self._prev)  # never backwards (a marker resolved after its frame)
        self._prev = t
        q = self._quantum
        rounded = (t + q // 2) // q  # in units of the resolution, half up
        value = rounded - self._prev_rounded if self._interval else rounded
        self._prev_rounded = rounded
        return _seconds(value, self._decimals)


def _seconds(units: int, decimals: int) -> str:
    scale = 10**decimals
    return f"{units // scale}.{units % scale:0{decimals}d}"


_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json(value: Any) -> str:
    """Exact JSON, UTF-8 as is, except the characters some readers split lines at (NEL, U+2028,
    U+2029), written as ``\\u`` escapes so that one event is always one line for every reader."""
    text = json.dumps(value, ensure_ascii=False)
    return text if text.isascii() else text.translate(_LINE_BREAKS)


def _header(meta: ExportMeta, header: Header, version: int) -> dict[str, Any]:
    cols = header.cols or 80
    rows = header.rows or 24
    title = f"zsp session {meta.session_id}: {meta.user} on {meta.login}@{meta.target}"
    if meta.outcome is not Outcome.VALID:
        title += f" [{meta.outcome.value}]"
    if meta.redacted_frames:
        title += " [redacted]"
    obj: dict[str, Any]
    if version == 2:
        obj = {"version": 2, "width": cols, "height": rows}
    else:
        term: dict[str, Any] = {"cols": cols, "rows": rows}
        if header.term:
            term["type"] = printable(header.term)
        obj = {"version": 3, "term": term}
    obj["timestamp"] = header.started_at_us // 1_000_000
    if header.command:
        obj["command"] = printable(header.command)
    obj["title"] = printable(title)
    if version == 2 and header.term:
        obj["env"] = {"TERM": printable(header.term)}
    obj["zsp"] = {
        "session_id": meta.session_id,
        "outcome": meta.outcome.value,
        "detail": meta.detail,
        "signer_fingerprint": meta.signer_fingerprint,
        "final_head": meta.final_head,
        "grant_id": meta.grant_id,
        "frames": meta.frames,
        "signed_frames": meta.signed_frames,
        "redacted_frames": meta.redacted_frames,
    }
    return obj


def asciicast(
    frames: Iterable[Frame],
    meta: ExportMeta,
    *,
    version: int = 2,
    include_input: bool = False,
    resolution_us: int = 1,
) -> Iterator[str]:
    """The lines of the asciicast (each ending in ``\\n``) of a verified frame stream, header
    frame first (``replay.verify_frames``, through ``replay.only_signed`` for signed frames only).

    ``resolution_us``: 1 (the recording's microseconds, the default), 10, 100 or 1000."""
    if version not in CAST_VERSIONS:
        raise ValueError(f"asciicast version must be one of {CAST_VERSIONS}")
    if resolution_us not in _RESOLUTIONS:
        raise ValueError(f"resolution_us must be one of {sorted(_RESOLUTIONS)}")
    it = iter(frames)
    first = next(it, None)
    if first is None or first.kind is not FrameKind.HEADER or not isinstance(first.data, Header):
        raise ReplayError("an asciicast needs the recording's header frame first")
    header = first.data
    yield _json(_header(meta, header, version)) + "\n"

    clock = _Clock(version, resolution_us)

    def event(t_us: int, code: str, data: str) -> str:
        return f"[{clock.stamp(t_us)}, {_json(code)}, {_json(data)}]\n"

    def markers(items: list[Any]) -> Iterator[str]:
        for item in items:
            if isinstance(item, Command):
                label = command_label(item)
                if label is not None:
                    yield event(item.t_us, "m", label)

    out_text = codecs.getincrementaldecoder("utf-8")("replace")
    in_text = codecs.getincrementaldecoder("utf-8")("replace")
    scanner = Scanner.for_header(header)
    onlcr = not had_pty(header)
    if header.command:
        yield event(first.t_us, "m", printable(f"$ {header.command}"))
    seal: Seal | None = None
    end_t = 0
    for frame in it:
        kind = frame.kind
        data = frame.data
        if kind is _OUTPUT and isinstance(data, bytes):
            text = out_text.decode(data.replace(b"\n", b"\r\n") if onlcr else data)
            if text:
                yield event(frame.t_us, "o", text)
        elif kind is _INPUT and isinstance(data, bytes):
            if include_input:
                text = in_text.decode(data)
                if text:
                    yield event(frame.t_us, "i", text)
        elif kind is FrameKind.RESIZE and isinstance(data, Resize):
            if data.cols and data.rows:
                yield event(frame.t_us, "r", f"{data.cols}x{data.rows}")
        elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type == "sftp.op":
            for c in file_changes((frame,)):  # remove, rename, mkdir...: a marker each
                yield event(frame.t_us, "m", printable(f"sftp {c.op}: {c.text}"))
        elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type not in PROTOCOL_EVENTS:
            label = f"{data.type}: {data.message}" if data.message else data.type
            if data.type in ("sftp.file", "sftp.file_incomplete"):
                (f,) = files((frame,))
                label = f"{label}: {f.path_bytes.decode('utf-8', 'replace') if f.path_bytes is not None else f.path}"
            yield event(frame.t_us, "m", printable(label))
        elif kind is FrameKind.SEAL and isinstance(data, Seal):
            seal = data
            end_t = frame.t_us
        yield from markers(scanner.feed(frame))
    # A character cut off at the very end comes out as U+FFFD rather than vanishing.
    tail = out_text.decode(b"", final=True)
    if tail:
        yield event(clock.now, "o", tail)
    if include_input:
        tail = in_text.decode(b"", final=True)
        if tail:
            yield event(clock.now, "i", tail)
    yield from markers(scanner.finish())
    if seal is not None:
        status = "unknown" if seal.exit_status is None else str(seal.exit_status)
        yield event(end_t, "m", printable(f"exit {status} ({seal.reason})"))
        if version == 3 and seal.exit_status is not None:
            yield event(end_t, "x", str(seal.exit_status))
