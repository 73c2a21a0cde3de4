"""Real-time rules: notice risky activity while a session runs, and flag, notify, warn, hold or stop it.

``rules.toml`` in the data directory (``docs/RULES.md``) is parsed by :mod:`.config`; a session's
bytes are matched by :class:`.engine.SessionRules`, the same code live in the bastion and offline
in ``zsp rules test``, so what a test run reports is what would have fired.
"""

from __future__ import annotations

from .model import Action, FileOp, FileVerdict, Gate, Match, Rule, RuleSet, SessionFacts, Severity, Trigger

__all__ = [
    "Action",
    "FileOp",
    "FileVerdict",
    "Gate",
    "Match",
    "Rule",
    "RuleSet",
    "SessionFacts",
    "Severity",
    "Trigger",
]
