"""``rules.toml``: parse and validate a rules file whole, with errors that name the line.

(Skeleton: the rules engine helper fills this in; the signatures are the contract.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .model import RuleSet

__all__ = ["DEFAULT_RULES_FILE", "RuleKeeper", "load_rules", "parse_rules", "shipped_names"]

DEFAULT_RULES_FILE = ""
"""The commented ``rules.toml`` that ``zsp init`` writes."""


def parse_rules(text: str, source: str) -> RuleSet:
    """The rule set of a rules file's text; :class:`zsp_tui.exceptions.RulesError` (with the
    line) on the first problem. ``source`` names the file in errors and in the result."""
    raise NotImplementedError


def load_rules(path: Path) -> RuleSet:
    """Read and parse ``path``; a missing file gives the shipped ``standard`` set."""
    raise NotImplementedError


def shipped_names() -> tuple[str, ...]:
    """Names of the shipped rule sets (``standard``, ``none``)."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Reload:
    """What :meth:`RuleKeeper.reload` found."""

    rules: RuleSet
    """The rules in force after the reload (the last good ones if the file is bad)."""
    changed: bool
    """A new good set was taken."""
    error: str | None
    """Why the file on disk was refused (reported once per distinct bad content); None if fine."""


class RuleKeeper:
    """The bastion's rules: the file's, re-read when it changes; a bad file is refused and the last
    good set stays in force, across restarts too (a copy is kept as ``rules.last-good.toml``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def reload(self) -> Reload:
        raise NotImplementedError
