"""One session's rules over its bytes: the same code live in the bastion and in ``zsp rules test``.

(Skeleton: the rules engine helper fills this in; the signatures are the contract.)
"""

from __future__ import annotations

from recorder import Frame

from .model import Gate, Match, RuleSet, SessionFacts

__all__ = ["SessionRules"]


class SessionRules:
    """Feed it every frame of one session, in order, exactly as recorded; it says what fired."""

    def __init__(self, rules: RuleSet, facts: SessionFacts, *, cols: int, rows: int, pty: bool) -> None:
        self.rules = rules
        self.facts = facts

    def start(self) -> list[Match]:
        """Matches at the session's start: facts-only rules, and the exec command's (enforcing ones
        included: the bastion holds or refuses an exec before running it)."""
        raise NotImplementedError

    def gate(self, data: bytes, start: int = 0) -> Gate | None:
        """The first Enter in ``data`` at or after ``start`` whose command line matches an
        enforcing rule (hold, terminate), as it would be read if the chunk were recorded now.
        Pure: nothing is fed."""
        raise NotImplementedError

    def output(self, data: bytes, t_us: int) -> list[Match]:
        raise NotImplementedError

    def input(self, data: bytes, t_us: int) -> list[Match]:
        raise NotImplementedError

    def resize(self, cols: int, rows: int, t_us: int) -> list[Match]:
        raise NotImplementedError

    def masked(self, nbytes: int, run: int, t_us: int) -> list[Match]:
        """An ``input.masked`` event (a line typed at a password prompt) was recorded."""
        raise NotImplementedError

    def tick(self, t_us: int) -> list[Match]:
        """Time passed (duration rules)."""
        raise NotImplementedError

    def feed(self, frame: Frame) -> list[Match]:
        """One recorded frame (offline): dispatches to output/input/resize/masked."""
        raise NotImplementedError

    def finish(self, t_us: int) -> list[Match]:
        """The end: commands still waiting for their echo, the last partial output line."""
        raise NotImplementedError

    @property
    def suppressed(self) -> dict[str, int]:
        """Matches not reported per rule, past the per-session cap (enforcing ones never are)."""
        raise NotImplementedError
