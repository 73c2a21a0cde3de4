"""One recorded session: relay bytes between the operator and the target, record every one.

The relay never lets a byte through unrecorded: output is handed to the recorder before it is
written to the operator, input before it is written to the target, and a recorder failure ends
the session at once (``fail closed``); typed input goes to the target only once it is on disk.
One line typed at a password prompt is withheld from the recording (:mod:`zsp_tui.masking`): on
``local`` the PTY's echo flag tells; on SSH targets, whose terminal modes are not visible, output
whose last line looks like a password prompt. An ``input.masked`` event says how many bytes and
holds them sealed to the escrow key; without an escrow key nothing is withheld. A session that
masks more than a password needs gets an ``input.masked.excessive`` event and audit event.

Real-time rules (:mod:`.rules`) see what the recorder is given, right after it is given it; typed
input is gated at Enter before it is recorded, so a held or terminating command line's Enter is
neither recorded nor sent until the rule's action allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from recorder import AsyncRecorder, EscrowPublicKey, RecordingFailed
from replay import printable

from ..audit import NewEvent
from ..exceptions import ZspError
from ..masking import InputMasker, MaskedInput, MaskLimits
from .limits import window_size
from .upstream import Reader, Upstream

if TYPE_CHECKING:
    from ..models import AccessRequest, SessionRecord
    from .moderation import Moderation
    from .rules import SessionGuard

__all__ = ["LiveSession", "relay"]

_READ = 65536


@dataclass(eq=False)
class LiveSession:
    """What the bastion's watcher needs to know about a running session."""

    record: SessionRecord
    grant: AccessRequest
    process: asyncssh.SSHServerProcess[bytes]
    recorder: AsyncRecorder
    ending: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = "exit"
    warned: set[int] = field(default_factory=set)
    conn: asyncssh.SSHServerConnection | None = None
    """The operator's connection (a closed channel no longer knows it)."""
    escrow: EscrowPublicKey | None = None
    """Masked input is sealed to this key; None: nothing is masked (recorded in clear)."""
    mask_limits: MaskLimits = field(default_factory=MaskLimits)
    audit: Callable[[NewEvent], Awaitable[None]] | None = None
    """Where the session's own audit events go (excessive masking)."""
    rules: SessionGuard | None = None
    """The session's real-time rules; None: no rules are in force."""
    moderation: Moderation | None = None
    """Its moderators (``moderation = "watch"``); None: not moderated."""

    def end(self, reason: str, message: str | None = None) -> None:
        """Ask the relay to stop (idempotent); ``message`` is shown to the operator."""
        if self.ending.is_set():
            return
        self.reason = reason
        if message:
            self.notify(message)
        self.ending.set()

    def notify(self, message: str) -> None:
        """An in-band line to the operator (warnings, why the session ends); not recorded as output.
        Escaped: it may quote a target's error message, and a hostile target must not drive the
        operator's terminal through it."""
        with contextlib.suppress(OSError, asyncssh.Error):
            self.process.stderr.write(f"\r\n[zsp] {printable(message)}\r\n".encode())


async def relay(live: LiveSession, upstream: Upstream, *, pty: bool, local: bool) -> int | None:
    """Run the session until it ends; returns the exit status (None if unknown).

    The upstream is closed on every way out (exit, end, failure, cancellation): a session that
    ended must not keep its PTY, its target connection or its remote command.
    """
    try:
        return await _relay(live, upstream, pty=pty, local=local)
    finally:
        await upstream.close()


async def _relay(live: LiveSession, upstream: Upstream, *, pty: bool, local: bool) -> int | None:
    process = live.process
    rec = live.recorder
    guard = live.rules
    record_input: Callable[[bytes], None] = rec.input
    record_event: Callable[..., None] = rec.event
    if guard is not None:
        # The rules see exactly what is recorded, in the same order (zsp rules test agrees).
        def record_input(data: bytes) -> None:
            rec.input(data)
            guard.input(data)

        def record_event(type: str, message: str, **fields: Any) -> None:
            rec.event(type, message, **fields)
            if type == "input.masked":
                guard.masked(int(fields["bytes"]), int(fields["run"]))

    masker = InputMasker(lambda: upstream.echo_off if local else None)
    masked = MaskedInput(
        masker,
        live.escrow,
        uuid.UUID(live.record.id),
        live.mask_limits,
        event=record_event,
        record_input=record_input,
        charge=rec.charge,
    )
    masked.start()
    if live.escrow is None and pty:
        live.notify("no escrow key on the bastion: what you type at password prompts is recorded in clear")

    async def flag_excessive(message: str, fields: dict[str, int]) -> None:
        if live.audit is None:
            return
        r = live.record
        # The recording already holds the event; a failing audit write must not stall the input relay.
        try:
            await live.audit(
                NewEvent(
                    "input.masked.excessive",
                    r.user,
                    "ssh",
                    message,
                    target=r.target,
                    login=r.login,
                    grant_id=r.grant_id,
                    session_id=r.id,
                    fields=dict(fields),
                )
            )
        except (sqlite3.Error, OSError, ZspError) as exc:
            print(f"zsp: warning: session {r.id}: audit of excessive masking failed: {exc}", file=sys.stderr)

    async def send(data: bytes) -> None:
        crossed = masked.feed(data)  # withheld bytes are sealed to the escrow key, never dropped
        if crossed is not None:
            await flag_excessive(crossed.message, crossed.fields())
        # Fail closed: typed input reaches the target only once it is on disk.
        await rec.synced()
        await upstream.write(data)

    gating = guard is not None and guard.gating
    moderation = live.moderation

    async def to_target() -> None:
        while True:
            if moderation is not None:
                # No moderator watching: input is held (not read, so not lost) until one joins
                # again or the grace runs out and the session ends.
                await moderation.present.wait()
            try:
                data = await process.stdin.read(_READ)
            except asyncssh.TerminalSizeChanged as exc:
                cols, rows = window_size(exc.width, exc.height)
                upstream.resize(cols, rows)
                rec.resize(cols, rows)
                if guard is not None:
                    guard.resize(cols, rows)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            if not data:
                # No more input (ssh -tt ... < /dev/null, or a closed stdin). The session goes on
                # until the target ends it or the channel closes, as with sshd.
                if not pty:
                    upstream.write_eof()
                return
            if moderation is not None:
                await moderation.present.wait()  # read just as the last moderator left: held too
            # A line typed at a password prompt is never gated: rules see what is recorded, and a
            # hold would put the password into the hold, the audit log and the approver's screen.
            if gating and guard is not None and not masker.hiding():
                # Held lines wait here: no more input is read until the hold is decided.
                if not await guard.relay_input(data, send):
                    return  # terminated by a rule
            else:
                await send(data)

    async def to_operator(fd: int, read: Reader) -> None:
        writer = process.stderr if fd == 2 else process.stdout
        seen = guard.output if guard is not None else None
        while data := await read():
            rec.output(data)  # recorded before the operator sees it
            if seen is not None:
                seen(data)
            if not local:
                masker.saw_output(data)
            await rec.drain()
            writer.write(data)
            await writer.drain()

    async def operator_gone() -> None:
        await process.channel.wait_closed()
        live.end("client-closed")

    async def all_output() -> None:
        await asyncio.gather(*(to_operator(fd, r) for fd, r in upstream.readers()))

    def input_failed(task: asyncio.Task[None]) -> None:
        # The input relay stopping on an unexpected error (a bug in a rule's handling, say) must end
        # the session, not leave it without input. Expected endings are handled where they happen.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, RecordingFailed | OSError | asyncssh.Error):
            live.end("error", f"input relay failed ({exc!r}); session ended")

    out_task = asyncio.create_task(all_output())
    in_task = asyncio.create_task(to_target())
    in_task.add_done_callback(input_failed)
    end_task = asyncio.create_task(live.ending.wait())
    gone_task = asyncio.create_task(operator_gone())
    try:
        done, _ = await asyncio.wait({out_task, end_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done:
            out_task.result()  # re-raises a recording or channel failure
    except RecordingFailed as exc:
        live.end("recording-failed", f"recording failed ({exc.reason}); session ended")
    except (OSError, asyncssh.Error):
        live.end("client-closed")
    finally:
        for task in (in_task, end_task, out_task, gone_task):
            task.cancel()
        for task in (in_task, end_task, out_task, gone_task):
            with contextlib.suppress(asyncio.CancelledError, RecordingFailed, OSError, asyncssh.Error):
                await task
    if not live.ending.is_set():
        # The target closed its output; it may still be running (exec >&-). Wait for it to exit,
        # but still end it at once on expiry, revocation or recording failure.
        exited = asyncio.create_task(upstream.wait())
        ending = asyncio.create_task(live.ending.wait())
        waiting: set[asyncio.Task[Any]] = {exited, ending}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        ending.cancel()
        if exited in done:
            return exited.result()
        exited.cancel()
    await upstream.close()
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(upstream.wait(), 2)
    return None
