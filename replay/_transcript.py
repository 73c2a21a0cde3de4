"""A plain-text transcript of a verified recording, for a ticket or a report.

Three parts (more for a session that transferred files): a header (who, where, under which
grant and reason, approved by whom, when, how it ended, and what verification found, with the
signer's fingerprint and the final chain head), the
commands typed with their times (offset from the start and UTC), the files transferred (SFTP,
scp: time, direction, size, sha256, path; only when there are any), the other changes it made to
files (remove, rename, mkdir, setstat...: the operation, the target's answer, the paths; only when
there are any), and the output as the terminal
showed it: the logical lines :class:`replay.Scanner` reports (escape sequences interpreted,
soft-wrapped rows joined), in order, then the lines still on the screen at the end.

Nothing recorded reaches the file unescaped: every line goes through :func:`replay.printable`, so
the transcript holds no control character at all (no ESC, no bidi override) and a hostile session
cannot rewrite the screen of whoever ``cat``s it. The price is that a backslash in the output
reads ``\\\\`` (the escape form stays unambiguous); the header says so.

The commands come before the output but are found in the same pass, so the output lines are
spooled (to memory, then a temporary file past a few MiB) until the commands are written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta

from recorder import Event, Frame, FrameKind, Header

from ._asciicast import command_label
from ._exceptions import ReplayError
from ._export_meta import ExportMeta
from ._file_ops import file_changes
from ._files import files
from ._printable import printable
from ._scan import Command, Scanner, TextLine
from ._verify import Outcome

__all__ = ["transcript"]

_SPOOL_BYTES = 8 << 20


def _clock(us: int) -> str:
    s, frac = divmod(us, 1_000_000)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{frac // 1000:03d}"


def _utc(meta: ExportMeta, us: int) -> str:
    when = meta.started_at + timedelta(microseconds=us)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _header(meta: ExportMeta) -> list[str]:
    def row(name: str, value: object) -> str:
        text = "-" if value is None or value == "" else printable(str(value))
        return f"{name + ':':<14}{text}"

    duration = meta.duration
    ended = None if duration is None else _utc(meta, duration // timedelta(microseconds=1))
    verdict = f"{meta.outcome.value}, signed by {meta.signer_fingerprint}, final chain head {meta.final_head or '-'}"
    lines = [
        "zsp session transcript",
        "======================",
        row("Session", meta.session_id),
        row("User", meta.user),
        row("Target", meta.target),
        row("Login", meta.login),
        row("Command", meta.command if meta.command else "(login shell)"),
        row("Grant", meta.grant_id),
        row("Reason", meta.reason),
        row("Approved by", ", ".join(meta.approved_by)),
        row("Started", _utc(meta, 0)),
        row("Ended", ended),
        row("Duration", None if duration is None else _clock(duration // timedelta(microseconds=1))),
        row("Exit status", meta.exit_status),
        row("End reason", meta.end_reason),
        row("Verification", verdict),
    ]
    if meta.outcome is not Outcome.VALID:
        lines.append(row("", f"incomplete: {meta.detail}" if meta.detail else "incomplete"))
        if meta.unsigned_frames:
            lines.append(
                row("", f"{meta.unsigned_frames} frame(s) after the last signature are not in this transcript")
            )
    if meta.redacted_frames:
        lines.append(row("Redacted", f"{meta.redacted_frames} frame(s): matching bytes replaced with '*'"))
    lines += [
        "",
        "Recorded text is escaped: control characters as \\xNN or \\uNNNN, a backslash as \\\\.",
        "",
    ]
    return [line.rstrip() + "\n" for line in lines]


def transcript(frames: Iterable[Frame], meta: ExportMeta) -> Iterator[str]:
    """The lines of the transcript (each ending in ``\\n``) of a verified frame stream, header
    frame first (``replay.verify_frames``, through ``replay.only_signed`` for signed frames only)."""
    it = iter(frames)
    first = next(it, None)
    if first is None or first.kind is not FrameKind.HEADER or not isinstance(first.data, Header):
        raise ReplayError("a transcript needs the recording's header frame first")
    header = first.data
    scanner = Scanner.for_header(header)
    commands: list[str] = []
    transferred: list[str] = []
    change_frames: list[Frame] = []
    lines = 0

    def command(t_us: int, label: str) -> None:
        commands.append(f"+{_clock(t_us)}  {_utc(meta, t_us)}  {label}\n")

    if header.command:
        command(first.t_us, printable(f"$ {header.command}"))
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8") as spool:

        def take(items: list[TextLine | Command]) -> None:
            nonlocal lines
            for item in items:
                if isinstance(item, TextLine):
                    spool.write(printable(item.text).rstrip() + "\n")
                    lines += 1
                else:
                    label = command_label(item) or f"[masked {item.masked_bytes} bytes]"
                    command(item.t_us, label)

        for frame in it:
            if (
                frame.kind is FrameKind.EVENT
                and isinstance(frame.data, Event)
                and frame.data.type in ("sftp.op", "sftp.reply")
                and frame.data.fields.get("op") not in ("read", "write")
            ):
                change_frames.append(frame)  # requests and replies only: file_changes pairs them
            elif (
                frame.kind is FrameKind.EVENT
                and isinstance(frame.data, Event)
                and frame.data.type in ("sftp.file", "sftp.file_incomplete")
            ):
                (f,) = files((frame,))
                state = "" if f.finished else " (cut: the session ended with it open)"
                transferred.append(
                    f"+{_clock(f.t_us)}  {_utc(meta, f.t_us)}  {f.direction} {f.size} bytes, "
                    f"sha256 {f.sha256 or '-'}{state}  {f.shown_path}\n"
                )
            take(scanner.feed(frame))
        take(scanner.finish())
        yield from _header(meta)
        yield "Commands\n"
        yield "--------\n"
        yield from commands if commands else ["(none typed)\n"]
        yield "\n"
        if transferred:
            yield "Files transferred\n"
            yield "-----------------\n"
            yield from transferred
            yield "\n"
        changes = file_changes(change_frames)
        if changes:
            yield "Other changes to files\n"
            yield "----------------------\n"
            for c in changes:
                detail = f" {printable(c.detail)}" if c.detail else ""
                yield f"+{_clock(c.t_us)}  {_utc(meta, c.t_us)}  {c.op}{detail} ({c.outcome})  {c.shown}\n"
            yield "\n"
        yield "Output\n"
        yield "------\n"
        spool.seek(0)
        yield from spool
        if not lines:
            yield "(no output)\n"
