"""What a user may ask for: the targets and logins some policy rule lets them request.

``ssh zsp@bastion targets`` and ``zsp targets --as USER`` print this, so an operator who does not
know a target's name (or typed it wrong) can find it without an admin. Only what the policy
would admit is listed: a target nobody lets this user request stays out of sight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replay import printable

from .clock import format_duration
from .policy import AutoRule, BreakGlass, Policy, Rule

if TYPE_CHECKING:
    from .access import AccessService
    from .models import Target, User

__all__ = ["Requestable", "requestable", "requestable_lines"]


@dataclass(frozen=True, slots=True)
class Requestable:
    """One login on one target that the user may request, and how it would be granted."""

    target: str
    login: str
    default_login: bool
    """The login used when ``--login`` is left out."""
    ways: tuple[str, ...]
    """How a request is decided: ``rule ops: up to 4h, 1 approval``, ``auto ...``, ``break-glass ...``."""

    def line(self) -> str:
        default = " (default)" if self.default_login else ""
        # Names come from the store as an admin typed them: shown escaped, like every listing.
        target, login = printable(self.target), printable(self.login)
        return f"{target:<16} {login + default:<20} {printable('; '.join(self.ways))}"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "login": self.login, "default": self.default_login, "ways": list(self.ways)}


def _in_scope(policy: Policy, r: Rule | AutoRule | BreakGlass, user: User, target: Target, login: str) -> bool:
    return (
        policy.principal_matches(r.requesters, user)
        and policy.target_matches(r.targets, target)
        and policy.login_matches(r.logins, login)
    )


def requestable(policy: Policy, user: User, targets: list[Target]) -> list[Requestable]:
    out: list[Requestable] = []
    for t in targets:
        for login in t.logins:
            ways: list[str] = []
            rule = policy.request_rule(user, t, login)
            if rule is not None:
                n = rule.approvals
                ways.append(
                    f"rule {rule.name}: up to {format_duration(rule.max_duration)}, "
                    f"{n} approval{'' if n == 1 else 's'}"
                )
            for a in policy.auto_rules:
                if _in_scope(policy, a, user, t, login):
                    ways.append(f"auto-approved ({a.name}) up to {format_duration(a.max_duration)} in its hours")
            if policy.break_glass.enabled and _in_scope(policy, policy.break_glass, user, t, login):
                ways.append(f"break-glass up to {format_duration(policy.break_glass.max_duration)}")
            if ways:
                out.append(Requestable(t.name, login, login == t.default_login, tuple(ways)))
    return out


def requestable_lines(svc: AccessService, user: User) -> list[Requestable]:
    """What ``user`` may request, from the service's current policy and targets."""
    return requestable(svc.policy(), user, svc.targets())
