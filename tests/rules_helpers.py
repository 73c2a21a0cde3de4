"""Recordings for rules tests, written by the real recorder (events included, as the bastion
writes them), and the facts and rule sets to run over them."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from recorder import FileSink, Frame, FrameKind, Header, RecordingWriter, SessionMeta, SigningKey
from replay import load
from zsp_tui.rules import Match, RuleSet, SessionFacts
from zsp_tui.rules.config import parse_rules
from zsp_tui.rules.engine import run_frames

PROMPT = b"user@db1:~$ "
WALL_START_NS = 1_790_000_000 * 10**9
"""2026-09-21T14:13:20Z: the wall clock of every recording made here (time-of-day tests)."""
STARTED = datetime.fromtimestamp(WALL_START_NS / 1e9, UTC)


class Rec:
    """A recording written frame by frame at chosen times (microseconds into the session)."""

    def __init__(
        self,
        path: Path,
        key: SigningKey,
        *,
        user: str = "alice",
        target: str = "db1",
        login: str = "postgres",
        command: str | None = None,
        term: str = "xterm",
        cols: int = 80,
        rows: int = 24,
        wall_start_ns: int = WALL_START_NS,
        session_id: uuid.UUID | None = None,
    ) -> None:
        self.path = path
        self.t_us = 0
        self._base = 10**12
        meta = SessionMeta(
            user=user,
            target=target,
            login=login,
            grant_id="r-1",
            term=term,
            cols=cols,
            rows=rows,
            command=command,
            host="bastion",
        )
        self.w = RecordingWriter(
            FileSink(path, sync_dir=False),
            key,
            meta,
            session_id=session_id,
            coalesce_ms=0,
            clock=lambda: self._base,
            wall_clock=lambda: wall_start_ns,
        )

    def _at(self, step_us: int) -> int:
        self.t_us += step_us
        return self._base + self.t_us * 1000

    def out(self, data: bytes, step_us: int = 1000) -> Rec:
        self.w.output(data, self._at(step_us))
        return self

    def key(self, data: bytes, step_us: int = 1000) -> Rec:
        self.w.input(data, self._at(step_us))
        return self

    def typed(self, text: bytes, step_us: int = 1000) -> Rec:
        """Each key echoed before the next, as a shell does."""
        for c in text:
            self.key(bytes([c]), step_us)
            self.out(bytes([c]), step_us)
        return self

    def command(self, text: bytes, output: bytes = b"") -> Rec:
        """A command typed key by key, its Enter, its output and the next prompt."""
        self.typed(text)
        self.key(b"\r")
        return self.out(b"\r\n" + output + PROMPT)

    def event(self, type: str, message: str = "", step_us: int = 1000, **fields: str | int | bool | None) -> Rec:
        self.w.event(type, message, self._at(step_us), **fields)
        return self

    def resize(self, cols: int, rows: int) -> Rec:
        self.w.resize(cols, rows, self._at(1000))
        return self

    def close(self, step_us: int = 1000) -> Path:
        self.w.close(0, "exit", self._at(step_us))
        return self.path


def frames_of(path: Path, key: SigningKey) -> tuple[Header, list[Frame]]:
    frames, report = load(path, [key.public])
    assert report.valid, report
    header = frames[0].data
    assert isinstance(header, Header)
    return header, [f for f in frames[1:] if f.kind not in (FrameKind.CHECKPOINT, FrameKind.SEAL)]


def facts(
    header: Header | None = None,
    *,
    user: str = "alice",
    roles: tuple[str, ...] = ("operator",),
    groups: tuple[str, ...] = (),
    target: str = "db1",
    labels: tuple[str, ...] = (),
    login: str = "postgres",
    started_at: datetime = STARTED,
    command: str | None = None,
) -> SessionFacts:
    if header is not None:
        user, target, login, command = header.user, header.target, header.login, header.command
        started_at = datetime.fromtimestamp(header.started_at_us / 1e6, UTC)
    return SessionFacts(
        user, frozenset(roles), frozenset(groups), target, frozenset(labels), login, started_at, command
    )


def ruleset(text: str, *, standard: bool = False) -> RuleSet:
    """A rule set of these rules (TOML ``[[rule]]`` tables), after the standard set if asked."""
    head = "" if standard else '[settings]\ndefaults = "none"\n'
    return parse_rules(head + text, "test-rules.toml")


def rule(name: str, severity: str, **keys: str | list[str]) -> str:
    """One ``[[rule]]`` table, its keys in the order given: a string is written as a TOML literal
    string (a regular expression needs no escaping), a list as a list of basic strings. The rule
    files of the file-rule tests (offline and live) are built from these."""
    lines = ["[[rule]]", f'name = "{name}"', f'severity = "{severity}"']
    for key, value in keys.items():
        shown = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f"'{value}'"
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


def file_rules(*rules: str) -> str:
    """A rules file's ``[[rule]]`` tables, one blank line between them."""
    return "\n".join(rules)


def run(rules: RuleSet, path: Path, key: SigningKey, **kw: object) -> tuple[list[Match], dict[str, int]]:
    header, frames = frames_of(path, key)
    return run_frames(rules, facts(header, **kw), header, frames)  # type: ignore[arg-type]


def fired(matches: list[Match]) -> Counter[tuple[str, str]]:
    return Counter((m.rule.name, m.text) for m in matches)


class LiveRec(Rec):
    """A recording made as the bastion makes one with rules: the engine runs on the bytes as they
    pass (gate before input is recorded, matches written as ``rule.match`` event frames after the
    bytes that caused them; a held Enter is allowed or denied)."""

    def __init__(self, path: Path, key: SigningKey, rules: RuleSet, session_facts: SessionFacts | None = None,
                 **kw: object) -> None:
        super().__init__(path, key, **kw)  # type: ignore[arg-type]
        from zsp_tui.rules.engine import SessionRules, loaded_fields

        self.facts = session_facts or facts(self.w.header)
        self.engine = SessionRules(rules, self.facts, cols=self.w.header.cols, rows=self.w.header.rows,
                                   pty=bool(self.w.header.term or self.w.header.cols))
        self.holds = 0
        self.event("rules.loaded", "rules in force", **loaded_fields(rules, self.facts))
        self._flag(self.engine.start())

    def _flag(self, matches: list[Match], hold: str | None = None) -> None:
        for m in matches:
            extra = {"hold": hold} if hold else {}
            self.event("rule.match", f"rule {m.rule.name}", rule=m.rule.name, severity=m.rule.severity.value,
                       trigger=m.trigger.value, actions=m.rule.actions_text, text=m.text, **extra)

    def out(self, data: bytes, step_us: int = 1000) -> LiveRec:
        super().out(data, step_us)
        self._flag(self.engine.output(data, self.t_us))
        return self

    def key(self, data: bytes, step_us: int = 1000, *, allow: bool = True) -> LiveRec:
        while (gate := self.engine.gate(data, t_us=self.t_us + step_us)) is not None:
            before, enter, data = data[: gate.offset], data[gate.offset : gate.offset + gate.enter], \
                data[gate.offset + gate.enter :]
            if before:
                super().key(before, step_us)
                self._flag(self.engine.input(before, self.t_us))
            self.holds += 1
            hold = f"h-{self.holds:08x}"
            self._flag(list(gate.matches), hold)
            self.event("rule.hold", "held", id=hold)
            if allow:
                self.event("rule.hold.allow", "allowed", id=hold, by="bob")
                super().key(enter, step_us)
                self._flag(self.engine.input(enter, self.t_us))
            else:
                self.event("rule.hold.deny", "denied", id=hold, by="bob")
                super().key(b"\x15", step_us)
                self._flag(self.engine.input(b"\x15", self.t_us))
        if data:
            super().key(data, step_us)
            self._flag(self.engine.input(data, self.t_us))
        return self

    def close(self, step_us: int = 1000) -> Path:
        self.t_us += step_us
        self._flag(self.engine.finish(self.t_us))
        for name, n in self.engine.suppressed.items():
            self.event("rule.suppressed", f"{n} more", rule=name, count=n)
        return super().close(step_us)
