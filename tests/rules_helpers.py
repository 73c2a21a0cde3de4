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
"""2026-09-21T21:33:20Z: the wall clock of every recording made here (time-of-day tests)."""
STARTED = datetime.fromtimestamp(WALL_START_NS / 1e9, UTC)


class Rec:
    """A recording written frame by frame at chosen times (microseconds into the session)."""

    def __init__(self, path: Path, key: SigningKey, *, user: str = "alice", target: str = "db1",
                 login: str = "postgres", command: str | None = None, term: str = "xterm",
                 cols: int = 80, rows: int = 24, wall_start_ns: int = WALL_START_NS,
                 session_id: uuid.UUID | None = None) -> None:
        self.path = path
        self.t_us = 0
        self._base = 10**12
        meta = SessionMeta(user=user, target=target, login=login, grant_id="r-1", term=term, cols=cols, rows=rows,
                           command=command, host="bastion")
        self.w = RecordingWriter(FileSink(path, sync_dir=False), key, meta, session_id=session_id,
                                 coalesce_ms=0, clock=lambda: self._base, wall_clock=lambda: wall_start_ns)

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


def facts(header: Header | None = None, *, user: str = "alice", roles: tuple[str, ...] = ("operator",),
          groups: tuple[str, ...] = (), target: str = "db1", labels: tuple[str, ...] = (), login: str = "postgres",
          started_at: datetime = STARTED, command: str | None = None) -> SessionFacts:
    if header is not None:
        user, target, login, command = header.user, header.target, header.login, header.command
        started_at = datetime.fromtimestamp(header.started_at_us / 1e6, UTC)
    return SessionFacts(user, frozenset(roles), frozenset(groups), target, frozenset(labels), login, started_at,
                        command)


def ruleset(text: str, *, standard: bool = False) -> RuleSet:
    """A rule set of these rules (TOML ``[[rule]]`` tables), after the standard set if asked."""
    head = "" if standard else '[settings]\ndefaults = "none"\n'
    return parse_rules(head + text, "test-rules.toml")


def run(rules: RuleSet, path: Path, key: SigningKey, **kw: object) -> tuple[list[Match], dict[str, int]]:
    header, frames = frames_of(path, key)
    return run_frames(rules, facts(header, **kw), header, frames)  # type: ignore[arg-type]


def fired(matches: list[Match]) -> Counter[tuple[str, str]]:
    return Counter((m.rule.name, m.text) for m in matches)
