"""Real-time rules in the bastion: the rules file kept current, and each session's rules in its relay.

:class:`LiveRules` owns ``rules.toml`` for the running bastion (:class:`~zsp_tui.rules.config.RuleKeeper`:
read at start, again on every watcher tick; a bad file is refused, said on stderr and in the audit
log once per distinct content, and the last good rules stay in force). A session keeps the rule set
it started with.

:class:`SessionGuard` is one session's :class:`~zsp_tui.rules.engine.SessionRules` wired into the
relay (:mod:`.session`). It is fed exactly what the recorder is given, in the same order (output
chunks, typed input after masking, resizes, ``input.masked`` events), so ``zsp rules test`` over the
recording reports what fired live. What the engine reports is acted on here:

- every match: a ``rule.match`` event frame in the recording at once, then the ``rule.match`` audit
  event and the flag row (:meth:`AccessService.rule_matched`) from a per-session queue, off the
  relay's path: an audit write that fails prints a warning and stalls nothing;
- ``warn``: a line in the operator's terminal (escaped);
- ``hold``: the bytes before the Enter are recorded and sent, the Enter is not; a :class:`Hold` is
  stored, the operator told, and no more input is read until an approver decides (polled every
  :data:`POLL_S`, sooner when this bastion's own ``allow``/``deny`` command wakes it) or the rule
  set's ``hold_timeout`` passes (denied). Allowed: the Enter is recorded and sent; denied: Ctrl-U
  (clears the line) instead. The session ending meanwhile cancels the hold;
- ``terminate``: a ``rule.terminate`` frame, the session ends (reason ``rule``) and its grant is
  revoked by ``rule:NAME``;
- file rules (an SFTP session): each request is put to :meth:`SessionGuard.file_request` by the
  relay (:mod:`.sftp`) after it is recorded and before it is sent on; ``deny`` and ``terminate``
  answer it ``permission denied`` instead (terminate then ends the session as above).

Hot path: ``output()`` is one engine call per chunk (a bytes append; line matching only when the
set has output rules, see the engine), and typed input is gated only when the set has enforcing
command rules. Nothing here allocates per chunk unless a rule fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, TypeVarTuple

from recorder import RecordingFailed
from replay import printable

from ..audit import NewEvent
from ..clock import format_duration
from ..exceptions import ZspError
from ..models import Flag, Hold, HoldState, SessionRecord
from ..rules.config import Reload, RuleKeeper
from ..rules.engine import SessionRules, loaded_fields
from ..rules.model import Action, FileOp, Gate, Match, Rule, RuleSet, SessionFacts, Trigger

if TYPE_CHECKING:
    from ..access import AccessService
    from ..policy import Policy
    from .control import SshHint
    from .session import LiveSession

__all__ = ["POLL_S", "LiveRules", "SessionGuard", "session_facts"]

T = TypeVar("T")
_Args = TypeVarTuple("_Args")

POLL_S = 0.25
"""How often a held command's relay reads its hold's state (an approver may decide anywhere)."""

CLEAR_LINE = b"\x05\x15"
"""Sent (and recorded) instead of a denied line's Enter: Ctrl-E Ctrl-U. Ctrl-U alone kills only
what is left of the cursor in readline, zsh and fish: a line whose cursor was moved back before
the Enter would keep its tail, to run at the next Enter. Ctrl-E moves to the end first; in a
terminal's own line editing (canonical mode: ``sh``, ``read``) Ctrl-E is a character of the line
and Ctrl-U (VKILL) erases the whole line, Ctrl-E with it."""

_DRAIN_S = 5.0
"""At a session's end, how long its queued audit writes may take before it is sealed anyway."""

_STORE_ERRORS = (sqlite3.Error, OSError, ZspError)


class Host(Protocol):
    """What the rules need of the bastion: its service, its database lanes, background tasks."""

    svc: AccessService

    async def db(self, fn: Callable[[*_Args], T], *args: *_Args, lane: str = "") -> T: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


def _warn(message: str) -> None:
    print(f"zsp: warning: {printable(message)}", file=sys.stderr, flush=True)


class LiveRules:
    """The rules in force in this bastion, and the hold waiters to wake on a local decision."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keeper = RuleKeeper(path, settle=0.5)  # an edit being written is not taken half-way
        self.current: RuleSet | None = None
        self._waiters: set[asyncio.Event] = set()
        self._groups: dict[str, frozenset[str]] = {}
        """The last readable policy's groups (a policy file broken meanwhile must not drop
        everyone out of ``group:`` rules)."""

    # --- the rules file -----------------------------------------------------------------------

    def load(self) -> list[NewEvent]:
        """Read the rules at start. Raises :class:`~zsp_tui.exceptions.RulesError` when there is
        nothing usable (a bad file and no last good copy); returns the audit events to write."""
        return self.took(self.keeper.reload())

    def took(self, r: Reload) -> list[NewEvent]:
        """Apply a reload's outcome: the rules for new sessions, a stderr line for a refused file,
        and the ``rules.load`` / ``rules.invalid`` audit events to write."""
        self.current = r.rules
        events: list[NewEvent] = []
        if r.error is not None:
            print(
                f"zsp: error: rules file refused, the last good rules stay in force "
                f"({r.rules.source}, sha256 {r.rules.digest[:12]}): {printable(r.error)}",
                file=sys.stderr,
                flush=True,
            )
            events.append(
                NewEvent(
                    "rules.invalid",
                    "system",
                    "system",
                    f"rules file {self.path} refused: {r.error}; the last good rules stay in force",
                    outcome="failure",
                    fields={
                        "path": str(self.path),
                        "error": r.error,
                        "kept_sha256": r.rules.digest,
                        "kept_source": r.rules.source,
                    },
                )
            )
        if r.changed:
            rs = r.rules
            events.append(
                NewEvent(
                    "rules.load",
                    "system",
                    "system",
                    f"rules loaded from {rs.source}: {len(rs.rules)} rule(s), shipped set {rs.defaults}",
                    fields={
                        "path": str(self.path),
                        "source": rs.source,
                        "sha256": rs.digest,
                        "rules": len(rs.rules),
                        "defaults": rs.defaults,
                        "disabled": ",".join(sorted(rs.disabled)),
                        "hold_timeout_s": int(rs.hold_timeout.total_seconds()),
                    },
                )
            )
        return events

    # --- sessions -----------------------------------------------------------------------------

    def groups_of(self, user: str, policy: Callable[[], Policy]) -> frozenset[str]:
        """The policy groups ``user`` is in (the last readable policy's if the file is broken now)."""
        try:
            self._groups = dict(policy().groups)
        except ZspError as exc:
            _warn(f"policy unreadable for rule facts, using its last good groups: {exc}")
        return frozenset(g for g, members in self._groups.items() if user in members)

    def guard(
        self,
        host: Host,
        live: LiveSession,
        facts: SessionFacts,
        *,
        cols: int,
        rows: int,
        pty: bool,
        t0_ns: int,
        hint: SshHint,
    ) -> SessionGuard:
        """A session's rules, with the set in force now (kept for the session's whole life)."""
        rules = self.current
        if rules is None:
            raise RuntimeError("rules not loaded")
        engine = SessionRules(rules, facts, cols=cols, rows=rows, pty=pty)
        return SessionGuard(self, host, live, rules, engine, facts, t0_ns, hint, pty=pty)

    # --- waking held relays -------------------------------------------------------------------

    def poke(self) -> None:
        """A hold may have been decided through this bastion: every waiting relay reads its hold now."""
        for ev in self._waiters:
            ev.set()


class SessionGuard:
    """One session's rules in the relay (see the module docstring)."""

    def __init__(
        self,
        owner: LiveRules,
        host: Host,
        live: LiveSession,
        rules: RuleSet,
        engine: SessionRules,
        facts: SessionFacts,
        t0_ns: int,
        hint: SshHint,
        *,
        pty: bool,
    ) -> None:
        self.owner = owner
        self.host = host
        self.live = live
        self.rules = rules
        self.engine = engine
        self.facts = facts
        self.hint = hint
        self._t0 = t0_ns
        self.gating = any(r.enforcing and r.trigger is Trigger.COMMAND for r in rules.rules)
        """Typed input is gated at Enter only when some rule could hold or terminate it."""
        self.pty = pty
        self._line_open = False
        """Without a PTY: bytes of the line in progress have been sent already (an earlier chunk
        did not end with an Enter)."""
        self.terminated = False
        self.holding: Hold | None = None
        """The hold the relay waits on now, if any."""
        self._jobs: deque[tuple[Callable[..., Any], tuple[Any, ...], str]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._cancelling: asyncio.Task[None] | None = None
        self._told_skipped = False

    # --- what the recorder is given, the engine sees --------------------------------------

    def t_us(self) -> int:
        return (time.monotonic_ns() - self._t0) // 1000

    def output(self, data: bytes) -> None:
        """A chunk of output, just recorded (the hot path: one call, nothing allocated unless fired)."""
        matches = self.engine.output(data, (time.monotonic_ns() - self._t0) // 1000)
        if matches:
            self.fire(matches)

    def input(self, data: bytes) -> None:
        matches = self.engine.input(data, (time.monotonic_ns() - self._t0) // 1000)
        if matches:
            self.fire(matches)

    def resize(self, cols: int, rows: int) -> None:
        matches = self.engine.resize(cols, rows, self.t_us())
        if matches:
            self.fire(matches)

    def masked(self, nbytes: int, run: int) -> None:
        matches = self.engine.masked(nbytes, run, self.t_us())
        if matches:
            self.fire(matches)

    def file_request(self, ops: tuple[FileOp, ...], paths: tuple[str, ...]) -> Match | None:
        """An SFTP request, recorded and not yet relayed (:mod:`.sftp`): what matched is recorded,
        audited and warned of; returns the match that refuses it (deny or terminate: the relay
        answers ``permission denied`` and, for terminate, calls :meth:`terminate`), None to relay it."""
        verdict = self.engine.file_verdict(ops, paths, self.t_us())
        if verdict.matches:
            self.fire(verdict.matches, enforced=True)
        return verdict.refused

    def tick(self) -> None:
        """Time passed (the watcher calls this every tick): duration rules."""
        if self.terminated:
            return
        matches = self.engine.tick(self.t_us())
        if matches:
            self.fire(matches)
        if self.engine.skipped and not self._told_skipped:
            # Once per session: the reviewer learns that the screen the command rules read is incomplete.
            self._told_skipped = True
            self._event(
                "rules.scan.skipped",
                "output too costly to emulate was skipped by the command rules' screen "
                "(their typed keys are still matched)",
                chars=self.engine.skipped,
            )

    # --- acting on matches ------------------------------------------------------------------

    def _event(self, type: str, message: str, **fields: str | int | bool | None) -> None:
        self.live.recorder.event(type, message, **fields)

    def fire(self, matches: Iterable[Match], hold: Hold | None = None, enforced: bool = False) -> None:
        """Record, audit (queued) and act on ``matches``. ``hold``: the hold made for them (its id
        goes in the frames); ``enforced``: they came from the gate, whose hold or termination the
        caller carries out."""
        terminate: Match | None = None
        for m in matches:
            rule = m.rule
            fields: dict[str, str | int | bool | None] = {
                "rule": rule.name,
                "severity": rule.severity.value,
                "trigger": m.trigger.value,
                "actions": rule.actions_text,
                "text": m.text,
            }
            if hold is not None and Action.HOLD in rule.actions:
                fields["hold"] = hold.id
            self._event("rule.match", f"rule {rule.name} ({rule.severity.value}) matched {m.trigger.value}", **fields)
            r = self.live.record
            flag = Flag(
                session_id=r.id,
                at=self.host.svc.clock.now(),
                t_us=m.t_us,
                rule=rule.name,
                severity=rule.severity.value,
                trigger=m.trigger.value,
                actions=rule.actions_text,
                text=m.text,
            )
            self.later(self.host.svc.rule_matched, r, flag, notify=Action.NOTIFY in rule.actions)
            if Action.WARN in rule.actions:
                self.live.notify(f"rule {rule.name} ({rule.severity.value}): {rule.shown_message}")
            if Action.TERMINATE in rule.actions and terminate is None:
                terminate = m
        if terminate is not None and not enforced:
            self.terminate(terminate)

    def terminate(self, m: Match) -> None:
        """End the session now (reason ``rule``) and revoke its grant (queued, by ``rule:NAME``)."""
        if self.terminated:
            return
        self.terminated = True
        rule = m.rule
        with contextlib.suppress(RecordingFailed):  # the session ends anyway
            self._event(
                "rule.terminate",
                f"rule {rule.name} ({rule.severity.value}) ended the session: {rule.shown_message}",
                rule=rule.name,
                severity=rule.severity.value,
                text=m.text,
            )
        self.live.end(
            "rule",
            f"rule {rule.name} ({rule.severity.value}): {rule.shown_message}; session ended, its grant revoked",
        )
        self.later(self.host.svc.rule_terminated, self.live.record, rule, m.text)

    # --- audit off the relay's path -----------------------------------------------------------

    def later(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run a store call in this session's turn of the database thread, in order, without
        waiting for it (a failure prints a warning: the recording already holds the event)."""
        call = (lambda: fn(*args, **kwargs)) if kwargs else fn
        self._jobs.append((call, () if kwargs else args, getattr(fn, "__name__", "store call")))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        lane = self.live.record.user
        while self._jobs:
            fn, args, name = self._jobs.popleft()
            try:
                await self.host.db(fn, *args, lane=lane)
            except _STORE_ERRORS as exc:
                _warn(f"session {self.live.record.id}: {name} failed: {exc}")

    # --- holding at Enter ---------------------------------------------------------------------

    async def relay_input(self, data: bytes, send: Callable[[bytes], Awaitable[None]]) -> bool:
        """Send ``data`` (through ``send``, which records then writes) up to each Enter an
        enforcing rule matches, and act there. False once the session ends (stop reading).

        With a PTY the bytes before a held Enter are sent (the operator sees their line) and a
        denied line is cleared (:data:`CLEAR_LINE`). Without one nothing can clear a line that
        reached the program's stdin (a shell reading a script would run it at EOF), so the held
        line's bytes of this chunk wait with its Enter and a denied line is never sent; if part of
        it went in an earlier chunk, a denial ends the session instead."""
        while data:
            g = self.engine.gate(data, t_us=self.t_us())
            if g is None:
                await send(data)
                self._line_open = data[-1:] not in (b"\r", b"\n")
                return True
            cut = g.offset
            if not self.pty:
                cut = max(data.rfind(b"\r", 0, g.offset), data.rfind(b"\n", 0, g.offset)) + 1
                if cut:
                    self._line_open = False
            if cut:
                await send(data[:cut])
            line = data[cut : g.offset + g.enter]
            data = data[g.offset + g.enter :]
            allowed = await self.enforce(g)
            if allowed is None:
                return False
            if allowed:
                await send(line)
            elif self.pty:
                await send(CLEAR_LINE)
            elif self._line_open:
                self.live.end("denied", "the held line was partly sent already and cannot be cleared; session ended")
                return False
            self._line_open = False
        return True

    async def enforce(self, g: Gate) -> bool | None:
        """Terminate (None) or hold the command at this gate: True once allowed, False if denied."""
        if g.terminates:
            self.fire(g.matches, enforced=True)
            self.terminate(next(m for m in g.matches if Action.TERMINATE in m.rule.actions))
            return None
        held = next(m for m in g.matches if Action.HOLD in m.rule.actions)
        return await self.hold(held.rule, g.text, g.matches)

    async def hold(self, rule: Rule, text: str, matches: Iterable[Match]) -> bool:
        """Hold ``text`` by ``rule`` until someone decides; True if allowed."""
        r = self.live.record
        svc = self.host.svc
        timeout = self.rules.hold_timeout
        matches = tuple(matches)
        t = matches[0].t_us if matches else self.t_us()
        try:
            hold = await self.host.db(svc.create_hold, r, rule, text, timeout, t, lane=r.user)
        except _STORE_ERRORS as exc:
            # Nobody could approve a hold that was never stored: fail closed, the line is not sent.
            self.fire(matches)
            _warn(f"session {r.id}: cannot store the hold of rule {rule.name}: {exc}")
            self._event("rule.hold.deny", f"hold by rule {rule.name} could not be stored", by="system", reason="error")
            self.live.notify(f"held by rule {rule.name}, but the hold could not be stored: the line was not sent")
            return False
        self.fire(matches, hold=hold, enforced=True)
        how = self.hint.control(f"allow {hold.id}", self.hint.approver)
        self.live.notify(
            f"held by rule {rule.name}: waiting for approval ({how}); times out in {format_duration(timeout)}"
        )
        decided = await self.wait(hold)
        by = decided.decided_by or "system"
        if decided.state is HoldState.ALLOWED:
            self._event("rule.hold.allow", f"{hold.id} allowed by {by}", id=hold.id, by=by)
            self.live.notify(f"{hold.id} allowed by {by}")
            return True
        reason = decided.note or decided.state.value
        self._event("rule.hold.deny", f"{hold.id} {decided.state.value} by {by}", id=hold.id, by=by, reason=reason)
        if decided.state is HoldState.EXPIRED:
            self.live.notify(
                f"{hold.id} timed out: nobody decided in {format_duration(timeout)}; the line was not sent"
            )
        else:
            self.live.notify(
                f"{hold.id} denied by {by}" + (f": {decided.note}" if decided.note else "") + "; the line was not sent"
            )
        return False

    async def wait(self, hold: Hold) -> Hold:
        """Wait for ``hold`` to be decided, or time it out. Cancelled (the session ends): the hold
        is cancelled in the store, and its ``rule.hold.deny`` frame written if the recording works."""
        svc = self.host.svc
        lane = self.live.record.user
        wake = asyncio.Event()
        self.owner._waiters.add(wake)
        self.holding = hold
        decided: Hold | None = None
        try:
            while True:
                try:
                    now_hold = await self.host.db(svc.hold, hold.id, lane=lane)
                except _STORE_ERRORS as exc:
                    _warn(f"session {self.live.record.id}: cannot read {hold.id}: {exc}")
                    now_hold = hold
                if now_hold.state is not HoldState.PENDING:
                    decided = now_hold
                    return decided
                left = (hold.expires_at - svc.clock.now()).total_seconds()
                if left <= 0:
                    try:
                        expired = await self.host.db(svc.expire_hold, hold.id, lane=lane)
                    except _STORE_ERRORS as exc:
                        _warn(f"session {self.live.record.id}: cannot record the timeout of {hold.id}: {exc}")
                        expired = replace(hold, state=HoldState.EXPIRED, decided_by="system", note="timeout")
                    if expired is not None:
                        decided = expired
                        return decided
                    continue  # decided just now: read it
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(POLL_S, left)):  # not wait_for (3.11 drops cancels)
                        await wake.wait()
        finally:
            self.owner._waiters.discard(wake)
            self.holding = None
            if decided is None:
                self._cancel(hold)

    def _cancel(self, hold: Hold) -> None:
        why = f"session ended ({self.live.reason})"
        with contextlib.suppress(RecordingFailed):
            self._event("rule.hold.deny", f"{hold.id} cancelled: {why}", id=hold.id, by="system", reason=why)

        async def cancel() -> None:
            try:
                await self.host.db(self.host.svc.cancel_hold, hold.id, why, lane=self.live.record.user)
            except _STORE_ERRORS as exc:
                _warn(f"session {self.live.record.id}: cannot cancel {hold.id}: {exc}")

        self._cancelling = asyncio.get_running_loop().create_task(cancel())

    # --- start and end ------------------------------------------------------------------------

    def loaded(self) -> None:
        """The ``rules.loaded`` frame: which rule set, and the facts it decides by."""
        self._event(
            "rules.loaded",
            f"{len(self.rules.rules)} rule(s) from {self.rules.source}",
            **loaded_fields(self.rules, self.facts),
        )

    async def start(self) -> bool:
        """Rules at the start: facts rules, and an exec command's. False: the session must not go
        on (terminated, or the exec command held and not allowed)."""
        matches = self.engine.start()
        if not matches:
            return True
        enforcing = [m for m in matches if m.rule.enforcing]
        rest = [m for m in matches if not m.rule.enforcing]
        if rest:
            self.fire(rest)
        if not enforcing:
            return True
        term = [m for m in enforcing if Action.TERMINATE in m.rule.actions]
        if term:
            self.fire(enforcing, enforced=True)
            self.terminate(term[0])
            return False
        held = enforcing[0]
        allowed = await self.hold(held.rule, held.text, enforcing)
        if not allowed:
            self.live.end("denied", f"the command was held by rule {held.rule.name} and not allowed; it did not run")
        return allowed

    async def close(self) -> None:
        """At the session's end, before its recording is sealed: the last matches, a
        ``rule.suppressed`` frame if the per-rule cap dropped any, and the queued audit writes."""
        with contextlib.suppress(RecordingFailed):
            matches = self.engine.finish(self.t_us())
            if matches:
                self.fire(matches, enforced=True)  # recorded and audited; the session is ending anyway
            suppressed = self.engine.suppressed
            if suppressed:
                total = sum(suppressed.values())
                self._event(
                    "rule.suppressed",
                    f"{total} further match(es) not reported (at most 20 per rule and session)",
                    total=total,
                    rules=",".join(f"{name}={n}" for name, n in sorted(suppressed.items())),
                )
        pending = [t for t in (self._worker, self._cancelling) if t is not None]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=_DRAIN_S)
            if late:
                _warn(f"session {self.live.record.id}: rule audit writes still queued at its end")


def session_facts(
    record: SessionRecord, roles: Iterable[str], groups: frozenset[str], labels: Iterable[str]
) -> SessionFacts:
    return SessionFacts(
        user=record.user,
        roles=frozenset(str(r) for r in roles),
        groups=groups,
        target=record.target,
        labels=frozenset(labels),
        login=record.login,
        started_at=record.started_at,
        command=record.command,
    )
