"""Zero standing privilege: users, targets, requests, approvals and time-boxed grants.

One service holds every rule, and both the local admin console (``zsp ... --as USER``) and the
bastion's SSH control commands call it, so the rules and the audit trail are the same whichever
way someone comes in.

Every operation is one store transaction: it first records expiries and lapses that are due
(so nothing acts on a stale state), then checks and makes its change, then appends the audit
events, and commits all of it together. Writers are serialised by the store, so two approvers at
once, or a revoke racing an approval, end in one well-defined state.
"""

from __future__ import annotations

import getpass
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from recorder import PublicKey, SigningKey
from replay import printable

from .anchors import AnchorSet
from .audit import AuditEvent, AuditLog, AuditReport, NewEvent
from .clock import Clock, format_duration, rfc3339
from .exceptions import (
    AccessDenied,
    Conflict,
    InvalidState,
    LocalTargetOff,
    NotFound,
    UsageError,
    WatchRefused,
    ZspError,
)
from .identity import InvalidName, canonical_name
from .models import (
    LOCAL_TARGET,
    AccessRequest,
    Flag,
    Hold,
    HoldState,
    RequestState,
    Review,
    Role,
    SessionRecord,
    Target,
    User,
    Watch,
    WatchEnd,
    owner_host,
)
from .policy import Policy
from .rules.model import Action
from .sinks import Sink, dispatch
from .store import SessionQuery, SessionRow, Store, Tx

if TYPE_CHECKING:
    from .rules.model import Rule

__all__ = ["AccessService", "Actor"]

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_MAX_REQUEST = timedelta(days=7)  # no 0/o, 1/l/i: read aloud, typed by hand
_HOLD_ID = re.compile(r"h-[0-9a-f]{8}")
_WATCH_ID = re.compile(r"w-[0-9a-f]{12}")
_HOLD_TEXT = 1024
"""A held command line is stored and audited up to this many characters (as a match's text)."""


# What a target may be called and hold. Its name and logins travel in SSH user names
# (LOGIN@TARGET@bastion) and all of it is shown to operators and reviewers: plain ASCII only.
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LOGIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9._:-]{1,253}")  # a DNS name, an IPv4 or an IPv6 address
_LABEL = re.compile(r"[A-Za-z0-9._:=/-]{1,64}")


def _check_target(target: Target) -> None:
    """Refuse a target whose name, host, logins or labels are not plain names (one clear line)."""
    checks = [("target name", target.name, _TARGET_NAME), ("host", target.host, _HOST)]
    checks += [("login", login, _LOGIN) for login in target.logins]
    checks += [("label", label, _LABEL) for label in target.labels]
    for what, value, pattern in checks:
        if not pattern.fullmatch(value):
            raise UsageError(f"{what} '{value}' is not allowed: use {pattern.pattern}")  # escaped where shown


def _check_text(text: str, what: str = "a reason") -> None:
    """Reasons (and review notes) are shown to others in their terminals: printable text only, and short."""
    if len(text) > 500 or any(unicodedata.category(c)[0] == "C" for c in text):
        raise UsageError(f"{what} must be at most 500 printable characters (no control characters)")


def _refused(req: AccessRequest, who: str, via: str, action: str, message: str) -> NewEvent:
    """The audit event of an action on ``req`` that the rules refused to ``who``."""
    return NewEvent(
        "access_request.refused",
        who,
        via,
        message,
        outcome="failure",
        target=req.target,
        login=req.login,
        grant_id=req.id,
        fields={"action": action, "requester": req.requester},
    )


class _Scope(TypedDict):
    target: str | None
    login: str | None
    grant_id: str | None
    session_id: str | None


def _session_scope(record: SessionRecord | None, session_id: str | None = None) -> _Scope:
    """The audit scope of an event about a session (its target, login, grant and id), for
    ``NewEvent(..., **_session_scope(record))``; all None but ``session_id`` when the record is
    not known (a refusal naming no live session, a watch whose session row is gone)."""
    if record is None:
        return _Scope(target=None, login=None, grant_id=None, session_id=session_id)
    return _Scope(target=record.target, login=record.login, grant_id=record.grant_id, session_id=record.id)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting and from where. ``name`` is None for the console before any admin exists."""

    name: str | None
    via: str = "console"


@dataclass
class _Unit:
    tx: Tx
    now: datetime
    events: list[NewEvent] = field(default_factory=list)
    policy: Policy | None = None
    """The policy this operation decides by, loaded (and any change of it committed) beforehand."""

    def audit(self, event: NewEvent) -> None:
        self.events.append(event)


class AccessService:
    def __init__(
        self,
        store: Store,
        key: SigningKey,
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        sinks: Sequence[Sink] = (),
        local_target: bool = False,
        local_login: str | None = None,
    ) -> None:
        self.store = store
        self.audit_log = AuditLog(key)
        self._policy = policy
        self.clock = clock
        self.sinks = tuple(sinks)
        self.local_target = local_target
        self.local_login = local_login or getpass.getuser()

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _unit(self, *, policy: bool = False) -> Iterator[_Unit]:
        # Expiries and lapses that are due are committed on their own first, so an operation
        # that then fails (and rolls back) still leaves them recorded. So is a change of the
        # policy file (``policy=True``): a refusal it causes must follow it in the log, not
        # precede it, and the operation then decides by exactly the policy whose change is logged.
        loaded: Policy | None = None
        problem: ZspError | None = None
        with self.store.transaction() as tx:
            sweep = _Unit(tx, self.clock.now())
            self._sweep(sweep)
            if policy:
                # Read inside the write transaction, so two processes noting a change are serialised.
                try:
                    loaded = self._policy()
                except ZspError as exc:  # an invalid policy file: raised once the sweep is committed
                    problem = exc
                else:
                    self._note_policy(sweep, loaded)
            swept = self.audit_log.append(tx, sweep.events, sweep.now)
        dispatch(self.sinks, swept)
        if problem is not None:
            raise problem
        try:
            with self.store.transaction() as tx:
                unit = _Unit(tx, self.clock.now(), policy=loaded)
                self._sweep(unit)
                yield unit
                written = self.audit_log.append(tx, unit.events, unit.now)
        except AccessDenied as exc:
            # The change was rolled back; the refusal itself is still worth an audit event.
            if exc.event is not None:
                with self.store.transaction() as tx:
                    written = self.audit_log.append(tx, [exc.event], self.clock.now())
                dispatch(self.sinks, written)
            raise
        dispatch(self.sinks, written)

    def _sweep(self, u: _Unit) -> list[AccessRequest]:
        """Record every expiry and lapse that is due (idempotent; the sweeper calls it too)."""
        done = []
        for r in u.tx.due_requests(u.now):
            if r.state is RequestState.APPROVED:
                if u.tx.update_request(
                    r.id, RequestState.APPROVED, state=RequestState.EXPIRED, ended_at=r.ends_at, ended_by="system"
                ):
                    u.audit(
                        NewEvent(
                            "grant.expire",
                            "system",
                            "system",
                            f"grant {r.id} expired",
                            target=r.target,
                            login=r.login,
                            grant_id=r.id,
                            fields={"requester": r.requester, "ended_at": rfc3339(r.ends_at or u.now)},
                        )
                    )
                    done.append(r)
            elif u.tx.update_request(r.id, RequestState.PENDING, state=RequestState.LAPSED, decided_at=r.lapses_at):
                u.audit(
                    NewEvent(
                        "access_request.lapse",
                        "system",
                        "system",
                        f"request {r.id} lapsed unanswered",
                        target=r.target,
                        login=r.login,
                        grant_id=r.id,
                        fields={"requester": r.requester},
                    )
                )
                done.append(r)
        return done

    def sweep(self) -> list[AccessRequest]:
        with self._unit() as u:
            return self._sweep(u)

    def policy(self, u: _Unit | None = None) -> Policy:
        """The policy in force: the one ``u`` was opened with (``_unit(policy=True)``), else the file now."""
        if u is not None and u.policy is not None:
            return u.policy
        p = self._policy()
        if u is not None:
            self._note_policy(u, p)
        return p

    @staticmethod
    def _note_policy(u: _Unit, p: Policy) -> None:
        """Audit a policy file whose digest differs from the last one used."""
        old = u.tx.get_meta("policy_digest")
        if old != p.digest:
            u.tx.set_meta("policy_digest", p.digest)
            u.audit(
                NewEvent(
                    "policy.change",
                    "console",
                    "console",
                    "policy file loaded" if old is None else "policy file changed",
                    fields={"old_sha256": old or "", "new_sha256": p.digest, "path": p.source},
                )
            )

    @staticmethod
    def _user(tx: Tx, name: str) -> User:
        try:
            canon = canonical_name(name)
        except InvalidName:
            raise NotFound(kind="user", name=name) from None
        user = tx.get_user(canon)
        if user is None:
            raise NotFound(kind="user", name=name)
        return user

    def _actor(self, u: _Unit, actor: Actor) -> User:
        if actor.name is None:
            raise UsageError("say who you are: --as USER")
        return self._user(u.tx, actor.name)

    def _admin(self, u: _Unit, actor: Actor) -> str:
        """The acting admin's name; before any admin exists, the console may bootstrap."""
        if actor.name is None:
            if any(Role.ADMIN in x.roles for x in u.tx.list_users()):
                raise UsageError("an admin exists: say which admin you are with --as USER")
            return "console"
        user = self._actor(u, actor)
        if Role.ADMIN not in user.roles:
            raise AccessDenied(f"{user.name} is not an admin")
        return user.name

    def _target(self, tx: Tx, name: str) -> Target:
        if name == LOCAL_TARGET and self.local_target:
            return Target(
                name=LOCAL_TARGET,
                host="",
                port=0,
                logins=(self.local_login,),
                host_key="",
                labels=frozenset({"builtin"}),
                builtin=True,
            )
        if name == LOCAL_TARGET:
            raise LocalTargetOff()
        t = tx.get_target(name)
        if t is None:
            raise NotFound(kind="target", name=name)
        return t

    def _request(self, tx: Tx, request_id: str) -> AccessRequest:
        r = tx.get_request(request_id.strip().lower())
        if r is None:
            raise NotFound(kind="request", name=request_id)
        return r

    # --- users ----------------------------------------------------------------------------

    def add_user(self, actor: Actor, name: str, roles: frozenset[Role], keys: Sequence[str] = ()) -> User:
        canon = canonical_name(name)
        parsed = [self._parse_key(k) for k in keys]
        with self._unit() as u:
            by = self._admin(u, actor)
            user = u.tx.add_user(canon, roles, u.now)
            for key in parsed:
                u.tx.add_key(user.id, key.openssh, key.fingerprint, key.comment, u.now)
            u.audit(
                NewEvent(
                    "user.create",
                    by,
                    actor.via,
                    f"user {canon} created",
                    fields={
                        "user": canon,
                        "roles": ",".join(sorted(roles)),
                        "keys": len(parsed),
                        "bootstrap": actor.name is None,
                    },
                )
            )
            for key in parsed:
                u.audit(
                    NewEvent(
                        "user.key.add",
                        by,
                        actor.via,
                        f"key {key.fingerprint} added to {canon}",
                        fields={"user": canon, "fingerprint": key.fingerprint},
                    )
                )
            return u.tx.get_user(canon) or user

    def remove_user(self, actor: Actor, name: str) -> None:
        with self._unit() as u:
            by = self._admin(u, actor)
            user = self._user(u.tx, name)
            if actor.name is not None and user.name == canonical_name(actor.name):
                raise AccessDenied("an admin cannot remove themselves; ask another admin")
            # Their access goes with them, in the same transaction: pending requests are cancelled,
            # active grants revoked (the bastion then ends their sessions).
            for r in u.tx.list_requests((RequestState.PENDING, RequestState.APPROVED)):
                if r.requester_id != user.id:
                    continue
                if r.state is RequestState.PENDING:
                    self._transition(
                        u,
                        r,
                        RequestState.CANCELLED,
                        "access_request.cancel",
                        by,
                        actor.via,
                        f"{r.id} cancelled: user removed",
                        decided_at=u.now,
                        ended_by=by,
                        note="user removed",
                    )
                else:
                    self._transition(
                        u,
                        r,
                        RequestState.REVOKED,
                        "grant.revoke",
                        by,
                        actor.via,
                        f"{r.id} revoked: user removed",
                        ended_at=u.now,
                        ended_by=by,
                        note="user removed",
                    )
            u.tx.remove_user(user.name)
            u.audit(NewEvent("user.delete", by, actor.via, f"user {user.name} removed", fields={"user": user.name}))

    @staticmethod
    def _parse_key(line: str) -> PublicKey:
        try:
            return PublicKey.from_openssh(line)
        except ValueError as exc:
            raise UsageError(f"not an ssh-ed25519 public key: {exc}") from None

    def add_key(self, actor: Actor, name: str, key_line: str) -> PublicKey:
        key = self._parse_key(key_line)
        with self._unit() as u:
            by = self._admin(u, actor)
            user = self._user(u.tx, name)
            u.tx.add_key(user.id, key.openssh, key.fingerprint, key.comment, u.now)
            u.audit(
                NewEvent(
                    "user.key.add",
                    by,
                    actor.via,
                    f"key {key.fingerprint} added to {user.name}",
                    fields={"user": user.name, "fingerprint": key.fingerprint},
                )
            )
        return key

    def remove_key(self, actor: Actor, name: str, fingerprint: str) -> None:
        with self._unit() as u:
            by = self._admin(u, actor)
            user = self._user(u.tx, name)
            if not u.tx.remove_key(user.id, fingerprint):
                raise NotFound(kind="key", name=f"{fingerprint} of {user.name}")
            u.audit(
                NewEvent(
                    "user.key.remove",
                    by,
                    actor.via,
                    f"key {fingerprint} removed from {user.name}",
                    fields={"user": user.name, "fingerprint": fingerprint},
                )
            )

    def users(self) -> list[User]:
        with self.store.transaction(write=False) as tx:
            return tx.list_users()

    def user_by_key(self, fingerprint: str) -> User | None:
        with self.store.transaction(write=False) as tx:
            return tx.user_by_key(fingerprint)

    def change_mark(self) -> int:
        """The audit log's last sequence number: every change of users, keys, grants or policy
        writes an event, so while it stands still nothing changed (one cheap read)."""
        with self.store.transaction(write=False) as tx:
            tail = tx.audit_tail()
            return tail[0] if tail is not None else 0

    # --- targets --------------------------------------------------------------------------

    def add_target(self, actor: Actor, target: Target) -> None:
        if target.name == LOCAL_TARGET:
            raise Conflict("`local` is the built-in target; pick another name")
        _check_target(target)
        with self._unit() as u:
            by = self._admin(u, actor)
            u.tx.add_target(target, u.now)
            u.audit(
                NewEvent(
                    "target.create",
                    by,
                    actor.via,
                    f"target {target.name} added",
                    target=target.name,
                    fields={
                        "host": target.host,
                        "port": target.port,
                        "logins": ",".join(target.logins),
                        "host_key": target.host_key,
                        "labels": ",".join(sorted(target.labels)),
                        "auth": "static-key" if target.client_key else "certificate",
                    },
                )
            )

    def remove_target(self, actor: Actor, name: str) -> None:
        with self._unit() as u:
            by = self._admin(u, actor)
            if not u.tx.remove_target(name):
                raise NotFound(kind="target", name=name)
            u.audit(NewEvent("target.delete", by, actor.via, f"target {name} removed", target=name))

    def targets(self) -> list[Target]:
        with self.store.transaction(write=False) as tx:
            out = tx.list_targets()
            if self.local_target:
                out.insert(0, self._target(tx, LOCAL_TARGET))
            return out

    def target(self, name: str) -> Target:
        with self.store.transaction(write=False) as tx:
            return self._target(tx, name)

    # --- requests and grants --------------------------------------------------------------

    def request(
        self,
        actor: Actor,
        target_name: str,
        login: str | None,
        duration: timedelta,
        reason: str,
        *,
        break_glass: bool = False,
    ) -> AccessRequest:
        reason = reason.strip()
        _check_text(reason)
        if duration > _MAX_REQUEST:
            raise UsageError(f"no grant can last longer than {format_duration(_MAX_REQUEST)}")
        with self._unit(policy=True) as u:
            user = self._actor(u, actor)
            policy = self.policy(u)
            target = self._target(u.tx, target_name)
            login = login or target.default_login
            if login not in target.logins:
                raise UsageError(f"{target.name} has no login {login!r} (logins: {', '.join(target.logins)})")
            for r in u.tx.list_requests((RequestState.PENDING, RequestState.APPROVED)):
                if r.requester_id == user.id and r.target == target.name and r.login == login:
                    what = "an active grant" if r.state is RequestState.APPROVED else "a pending request"
                    raise Conflict(f"you already have {what} for {login}@{target.name}: {r.id}")

            def refuse(why: str) -> AccessDenied:
                return AccessDenied(
                    why,
                    event=NewEvent(
                        "access_request.refused",
                        user.name,
                        actor.via,
                        why,
                        outcome="failure",
                        target=target.name,
                        login=login,
                    ),
                )

            if break_glass:
                bg = policy.break_glass
                if not policy.break_glass_allows(user, target, login):
                    raise refuse(f"break-glass is not allowed for {user.name} on {login}@{target.name}")
                if duration > bg.max_duration:
                    raise refuse(f"break-glass lasts at most {format_duration(bg.max_duration)}")
                if not reason:
                    raise refuse("break-glass needs a reason (--reason)")
                approvers: tuple[str, ...] = ()
                rule_name, needed, auto = "break-glass", 0, "break-glass"
                window_end: datetime | None = None
            elif (auto_rule := policy.auto_rule(user, target, login, duration, u.now)) is not None:
                if auto_rule.require_reason and not reason:
                    raise refuse("a reason is required (--reason)")
                approvers = ()
                rule_name, needed, auto = auto_rule.name, 0, f"policy:{auto_rule.name}"
                window_end = auto_rule.closes_at(u.now)
            else:
                rule = policy.request_rule(user, target, login)
                if rule is None:
                    raise refuse(f"no policy rule lets {user.name} request {login}@{target.name}")
                if duration > rule.max_duration:
                    raise refuse(
                        f"{format_duration(duration)} is longer than the {format_duration(rule.max_duration)} "
                        f"rule {rule.name!r} allows"
                    )
                if rule.require_reason and not reason:
                    raise refuse("a reason is required (--reason)")
                if rule.ticket_pattern is not None and not rule.ticket_pattern.search(reason):
                    raise refuse(f"the reason must name a ticket matching {rule.ticket_pattern.pattern!r}")
                rule_name, needed, approvers, auto = rule.name, rule.approvals, rule.approvers, None

            req = AccessRequest(
                id=self._new_id(u.tx),
                requester=user.name,
                requester_id=user.id,
                target=target.name,
                login=login,
                duration=duration,
                reason=reason,
                state=RequestState.PENDING,
                approvals_needed=needed,
                approver_patterns=approvers,
                rule=rule_name,
                created_at=u.now,
                lapses_at=u.now + policy.request_timeout,
                break_glass=break_glass,
            )
            u.tx.insert_request(req)
            u.audit(
                NewEvent(
                    "access_request.create",
                    user.name,
                    actor.via,
                    f"{user.name} requests {login}@{target.name} for {format_duration(duration)}",
                    target=target.name,
                    login=login,
                    grant_id=req.id,
                    fields={
                        "reason": reason,
                        "duration_s": int(duration.total_seconds()),
                        "rule": rule_name,
                        "approvals_needed": needed,
                        "break_glass": break_glass,
                    },
                )
            )
            if auto is not None:
                req = self._grant(u, req, auto, actor.via, until=window_end)
            return req

    @staticmethod
    def _transition(
        u: _Unit, req: AccessRequest, to: RequestState, event: str, by: str, via: str, message: str, **changes: Any
    ) -> AccessRequest:
        """Move ``req`` to ``to`` (only from the state it was read in) and audit it, in one step."""
        if not u.tx.update_request(req.id, req.state, state=to, **changes):
            raise InvalidState(request_id=req.id, state=req.state.value, action=to.value)
        fields: dict[str, Any] = {"requester": req.requester}
        if changes.get("note"):
            fields["reason"] = changes["note"]
        u.audit(NewEvent(event, by, via, message, target=req.target, login=req.login, grant_id=req.id, fields=fields))
        return replace(req, state=to, **changes)

    def _new_id(self, tx: Tx) -> str:
        while True:
            rid = "r-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
            if tx.get_request(rid) is None:
                return rid

    def _grant(
        self, u: _Unit, req: AccessRequest, by: str, via: str, *, until: datetime | None = None
    ) -> AccessRequest:
        """Start the grant now; it ends after the requested duration, or at ``until`` if sooner
        (the end of the auto-approval window that granted it)."""
        ends = u.now + req.duration
        cut = until is not None and until < ends
        if until is not None and cut:
            ends = until
        if not u.tx.update_request(
            req.id, RequestState.PENDING, state=RequestState.APPROVED, decided_at=u.now, starts_at=u.now, ends_at=ends
        ):
            raise InvalidState(request_id=req.id, state=req.state.value, action="approve")
        if by.startswith("policy:") or by == "break-glass":
            u.tx.add_approval(req.id, by, u.now)
        granted = replace(req, state=RequestState.APPROVED, decided_at=u.now, starts_at=u.now, ends_at=ends)
        event = "grant.break_glass" if req.break_glass else "grant.start"
        u.audit(
            NewEvent(
                event,
                req.requester if req.break_glass else by,
                via,
                f"{'BREAK-GLASS ' if req.break_glass else ''}grant {req.id}: {req.requester} may use "
                f"{req.login}@{req.target} until {rfc3339(ends)}"
                + (f" (the end of rule {req.rule!r}'s window)" if cut else ""),
                target=req.target,
                login=req.login,
                grant_id=req.id,
                fields={
                    "requester": req.requester,
                    "starts_at": rfc3339(u.now),
                    "ends_at": rfc3339(ends),
                    "approved_by": by,
                    "needs_review": req.break_glass,
                    "cut_to_window": cut,
                },
            )
        )
        return granted

    def approve(self, actor: Actor, request_id: str) -> AccessRequest:
        with self._unit(policy=True) as u:
            approver = self._actor(u, actor)
            req = self._request(u.tx, request_id)
            policy = self.policy(u)
            if req.requester_id == approver.id:
                raise AccessDenied(
                    f"{approver.name} cannot approve their own request {req.id}",
                    request_id=req.id,
                    event=_refused(req, approver.name, actor.via, "approve", f"self-approval of {req.id} refused"),
                )
            if req.state is not RequestState.PENDING:
                raise InvalidState(request_id=req.id, state=req.state.value, action="approve")
            if not policy.principal_matches(req.approver_patterns, approver):
                raise AccessDenied(
                    f"{approver.name} may not approve {req.id} (approvers: "
                    f"{', '.join(req.approver_patterns) or 'none'})",
                    request_id=req.id,
                    event=_refused(
                        req, approver.name, actor.via, "approve", f"{approver.name} is not an approver of {req.id}"
                    ),
                )
            if not u.tx.add_approval(req.id, approver.name, u.now):
                raise Conflict(f"{approver.name} has already approved {req.id}")
            count = len(req.approvals) + 1
            u.audit(
                NewEvent(
                    "access_request.approve",
                    approver.name,
                    actor.via,
                    f"{approver.name} approves {req.id} ({count}/{req.approvals_needed})",
                    target=req.target,
                    login=req.login,
                    grant_id=req.id,
                    fields={"requester": req.requester, "approvals": count, "approvals_needed": req.approvals_needed},
                )
            )
            req = replace(req, approvals=(*req.approvals, approver.name))
            if count >= req.approvals_needed:
                req = self._grant(u, req, ",".join(req.approvals), actor.via)
            return req

    def deny(self, actor: Actor, request_id: str, reason: str) -> AccessRequest:
        _check_text(reason)
        with self._unit(policy=True) as u:
            user = self._actor(u, actor)
            req = self._request(u.tx, request_id)
            policy = self.policy(u)
            if req.requester_id == user.id:
                raise AccessDenied(
                    f"to withdraw your own request, cancel it: zsp cancel {req.id}",
                    request_id=req.id,
                    event=_refused(req, user.name, actor.via, "deny", f"{user.name} tried to deny their own {req.id}"),
                )
            if req.state is not RequestState.PENDING:
                raise InvalidState(request_id=req.id, state=req.state.value, action="deny")
            if not (policy.principal_matches(req.approver_patterns, user) or Role.ADMIN in user.roles):
                raise AccessDenied(
                    f"{user.name} may not deny {req.id}",
                    request_id=req.id,
                    event=_refused(req, user.name, actor.via, "deny", f"{user.name} is not an approver of {req.id}"),
                )
            return self._transition(
                u,
                req,
                RequestState.DENIED,
                "access_request.deny",
                user.name,
                actor.via,
                f"{user.name} denies {req.id}: {reason}",
                decided_at=u.now,
                ended_by=user.name,
                note=reason,
            )

    def cancel(self, actor: Actor, request_id: str) -> AccessRequest:
        with self._unit() as u:
            user = self._actor(u, actor)
            req = self._request(u.tx, request_id)
            if req.requester_id != user.id:
                raise AccessDenied(
                    f"only {req.requester} can cancel {req.id}",
                    request_id=req.id,
                    event=_refused(req, user.name, actor.via, "cancel", f"{user.name} may not cancel {req.id}"),
                )
            if req.state is not RequestState.PENDING:
                raise InvalidState(request_id=req.id, state=req.state.value, action="cancel")
            return self._transition(
                u,
                req,
                RequestState.CANCELLED,
                "access_request.cancel",
                user.name,
                actor.via,
                f"{user.name} cancels {req.id}",
                decided_at=u.now,
                ended_by=user.name,
            )

    def revoke(self, actor: Actor, request_id: str, reason: str = "") -> AccessRequest:
        _check_text(reason)
        with self._unit(policy=True) as u:
            user = self._actor(u, actor)
            req = self._request(u.tx, request_id)
            policy = self.policy(u)
            allowed = (
                req.requester_id == user.id
                or Role.ADMIN in user.roles
                or policy.principal_matches(req.approver_patterns, user)
            )
            if not allowed:
                raise AccessDenied(
                    f"{user.name} may not revoke {req.id}",
                    request_id=req.id,
                    event=_refused(req, user.name, actor.via, "revoke", f"{user.name} may not revoke {req.id}"),
                )
            # An expired grant with sessions still live (the wall clock stepped forward: the bastion
            # ends sessions on its monotonic deadline) can still be revoked, which ends them.
            live = req.state is RequestState.EXPIRED and any(s.grant_id == req.id for s in u.tx.unended_sessions())
            if req.state is not RequestState.APPROVED and not live:
                hint = "; pending requests are denied or cancelled" if req.state is RequestState.PENDING else ""
                raise AccessDenied(f"cannot revoke {req.id}: it is {req.state.value}{hint}", request_id=req.id)
            message = f"{user.name} revokes {req.id}" + (f": {reason}" if reason else "")
            return self._transition(
                u,
                req,
                RequestState.REVOKED,
                "grant.revoke",
                user.name,
                actor.via,
                message,
                ended_at=u.now,
                ended_by=user.name,
                note=reason,
            )

    def requests(self, *, active_only: bool = False) -> list[AccessRequest]:
        with self._unit() as u:
            rows = u.tx.list_requests((RequestState.APPROVED,) if active_only else None)
        if active_only:
            return [r for r in rows if r.active(u.now)]
        return rows

    def standing_grants(self, request_ids: Iterable[str]) -> dict[str, AccessRequest]:
        """Of these grants (those of live sessions), the ones nobody ended: approved, or expired
        (by the clock, which the bastion judges on its own monotonic deadlines); not revoked.
        Read without a write transaction (the bastion asks four times a second)."""
        out: dict[str, AccessRequest] = {}
        with self.store.transaction(write=False) as tx:
            for rid in set(request_ids):
                r = tx.get_request(rid)
                if r is not None and r.state in (RequestState.APPROVED, RequestState.EXPIRED):
                    out[rid] = r
        return out

    def get(self, request_id: str) -> AccessRequest:
        with self.store.transaction(write=False) as tx:
            return self._request(tx, request_id)

    def active_grant(self, user: User, target: str, login: str) -> AccessRequest | None:
        """The grant that lets ``user`` open ``login@target`` now, if any (what the bastion asks)."""
        with self._unit() as u:
            for r in u.tx.list_requests((RequestState.APPROVED,)):
                if r.requester_id == user.id and r.target == target and r.login == login and r.active(u.now):
                    return r
        return None

    # --- sessions and logins (the bastion reports them) --------------------------------------

    def record_event(self, event: NewEvent) -> None:
        """Append one event on its own (logins, refusals, upstream errors)."""
        with self._unit() as u:
            u.audit(event)

    def record_admin_event(self, actor: Actor, event: NewEvent) -> None:
        """Append an event for an act only an admin may do (``zsp unseal``), as the checked admin."""
        with self._unit() as u:
            u.audit(replace(event, actor=self._admin(u, actor), via=actor.via))

    def record_export(self, actor: Actor, events: list[NewEvent]) -> str:
        """Append the ``recording.export`` events of one export as the exporter, checked again now:
        a reviewer or an admin (roles read in this transaction), or ``console`` in a data dir that
        has no users at all. Returns the name the events carry."""
        with self._unit() as u:
            name = self._exporter(u, actor)
            for ev in events:
                u.audit(replace(ev, actor=name, via=actor.via))
        return name

    def exporter(self, actor: Actor) -> str:
        """Who may export, without writing anything (AccessDenied / NotFound otherwise)."""
        with self.store.transaction(write=False) as tx:
            return self._exporter(_Unit(tx, self.clock.now()), actor)

    def _exporter(self, u: _Unit, actor: Actor) -> str:
        if actor.name is None:
            if u.tx.list_users():
                raise UsageError("say which reviewer or admin you are with --as USER")
            return "console"
        user = self._actor(u, actor)
        if not (user.has(Role.REVIEWER) or user.has(Role.ADMIN)):
            raise AccessDenied(f"{user.name} may not export recordings (needs the reviewer or admin role)")
        return user.name

    def rule_matched(self, record: SessionRecord, flag: Flag, *, notify: bool) -> None:
        """One rule match in a live session: the ``rule.match`` audit event and the session's flag
        (listed by ``zsp sessions --flagged``) commit together. ``notify``: the rule asked for the
        sinks to be told at once; the webhook sink sends such events whatever its event filter."""
        with self._unit() as u:
            u.tx.add_flag(flag)
            u.audit(
                NewEvent(
                    "rule.match",
                    record.user,
                    "rule",
                    # escaped: matched text may quote output or a file name, with any control character
                    f"rule {flag.rule} ({flag.severity}) matched {flag.trigger}: {printable(flag.text)}",
                    outcome="flagged",
                    **_session_scope(record),
                    fields={
                        "rule": flag.rule,
                        "severity": flag.severity,
                        "trigger": flag.trigger,
                        "actions": flag.actions,
                        "text": flag.text,
                        "t_us": flag.t_us,
                        "notify": notify,
                    },
                )
            )

    # --- real-time rules: held commands, terminations ----------------------------------------

    def _hold(self, tx: Tx, hold_id: str) -> Hold:
        hid = hold_id.strip().lower()
        hold = tx.get_hold(hid) if _HOLD_ID.fullmatch(hid) else None
        if hold is None:
            raise NotFound(kind="hold", name=hold_id)
        return hold

    @staticmethod
    def _hold_fields(hold: Hold, **more: Any) -> dict[str, Any]:
        return {
            "hold": hold.id,
            "rule": hold.rule,
            "severity": hold.severity,
            "command": hold.command,
            "requester": hold.user,
            **more,
        }

    def create_hold(self, record: SessionRecord, rule: Rule, command: str, timeout: timedelta, t_us: int = 0) -> Hold:
        """Hold ``command`` (the line at Enter) of ``record``'s session by ``rule``: a pending
        :class:`Hold` (``h-`` and 8 hex digits) that times out after ``timeout``, and its
        ``rule.hold`` audit event, in one transaction."""
        with self._unit() as u:
            while True:
                hid = "h-" + secrets.token_hex(4)
                if u.tx.get_hold(hid) is None:
                    break
            hold = Hold(
                id=hid,
                session_id=record.id,
                grant_id=record.grant_id,
                user=record.user,
                target=record.target,
                login=record.login,
                rule=rule.name,
                severity=rule.severity.value,
                command=command[:_HOLD_TEXT],
                state=HoldState.PENDING,
                created_at=u.now,
                expires_at=u.now + timeout,
            )
            u.tx.insert_hold(hold)
            u.audit(
                NewEvent(
                    "rule.hold",
                    record.user,
                    "rule",
                    f"rule {rule.name} ({hold.severity}) held a command of {record.user} on "
                    f"{record.login}@{record.target} for approval: {hold.command}",
                    outcome="held",
                    **_session_scope(record),
                    fields=self._hold_fields(
                        hold,
                        expires_at=rfc3339(hold.expires_at),
                        t_us=t_us,
                        notify=Action.NOTIFY in rule.actions,
                    ),
                )
            )
            return hold

    def _hold_refused(self, hold: Hold, who: str, via: str, action: str, message: str) -> AccessDenied:
        """A refused decision on ``hold``: the error, carrying its ``access_request.refused`` event
        (``action`` is ``hold.allow`` or ``hold.deny``; the hold is named in ``hold``)."""
        return AccessDenied(
            message,
            event=NewEvent(
                "access_request.refused",
                who,
                via,
                message,
                outcome="failure",
                target=hold.target,
                login=hold.login,
                grant_id=hold.grant_id,
                session_id=hold.session_id,
                fields={"action": action, "requester": hold.user, "hold": hold.id, "rule": hold.rule},
            ),
        )

    def _decide_hold(self, actor: Actor, hold_id: str, allow: bool, reason: str) -> Hold:
        action = "allow" if allow else "deny"
        with self._unit() as u:
            user = self._actor(u, actor)
            hold = self._hold(u.tx, hold_id)
            if hold.user == user.name:
                # The two-person rule: admins too. The operator cannot wave their own command through.
                raise self._hold_refused(
                    hold,
                    user.name,
                    actor.via,
                    f"hold.{action}",
                    f"{user.name} cannot {action} their own held command {hold.id}: an approver or admin must",
                )
            if not (user.has(Role.APPROVER) or user.has(Role.ADMIN)):
                raise self._hold_refused(
                    hold,
                    user.name,
                    actor.via,
                    f"hold.{action}",
                    f"{user.name} may not {action} held commands (needs the approver or admin role)",
                )
            if hold.state is HoldState.PENDING and u.now >= hold.expires_at:
                raise AccessDenied(f"cannot {action} {hold.id}: it timed out (a timeout denies)", request_id=hold.id)
            state = HoldState.ALLOWED if allow else HoldState.DENIED
            if hold.state is not HoldState.PENDING or not u.tx.decide_hold(hold.id, state, user.name, u.now, reason):
                now = u.tx.get_hold(hold.id) or hold
                raise InvalidState(request_id=hold.id, state=now.state.value, action=action)
            decided = replace(hold, state=state, decided_at=u.now, decided_by=user.name, note=reason)
            verb = "allows" if allow else "denies"
            u.audit(
                NewEvent(
                    "rule.hold.allow" if allow else "rule.hold.deny",
                    user.name,
                    actor.via,
                    f"{user.name} {verb} {hold.id} of {hold.user} (rule {hold.rule}): {hold.command}"
                    + (f"; reason: {reason}" if reason else ""),
                    outcome="success" if allow else "denied",
                    target=hold.target,
                    login=hold.login,
                    grant_id=hold.grant_id,
                    session_id=hold.session_id,
                    fields=self._hold_fields(hold, by=user.name, **({} if allow else {"reason": reason})),
                )
            )
            return decided

    def allow_hold(self, actor: Actor, hold_id: str) -> Hold:
        """Let a held command through: an approver or admin who is not the session's user."""
        return self._decide_hold(actor, hold_id, True, "")

    def deny_hold(self, actor: Actor, hold_id: str, reason: str = "") -> Hold:
        """Refuse a held command (the line is cleared, never sent); same deciders as :meth:`allow_hold`."""
        reason = reason.strip()
        _check_text(reason)
        return self._decide_hold(actor, hold_id, False, reason)

    def _end_hold(self, hold_id: str, state: HoldState, why: str) -> Hold | None:
        with self._unit() as u:
            hold = self._hold(u.tx, hold_id)
            if not u.tx.decide_hold(hold.id, state, "system", u.now, why):
                return None
            u.audit(
                NewEvent(
                    "rule.hold.deny",
                    "system",
                    "system",
                    f"{hold.id} of {hold.user} (rule {hold.rule}) {state.value}: {why}; the command was not sent",
                    outcome="denied",
                    target=hold.target,
                    login=hold.login,
                    grant_id=hold.grant_id,
                    session_id=hold.session_id,
                    fields=self._hold_fields(hold, by="system", reason=why, state=state.value),
                )
            )
            return replace(hold, state=state, decided_at=u.now, decided_by="system", note=why)

    def expire_hold(self, hold_id: str) -> Hold | None:
        """Nobody decided in time: the hold is ``expired`` (a timeout denies), audited as
        ``rule.hold.deny`` with reason ``timeout``. None if it was decided meanwhile."""
        return self._end_hold(hold_id, HoldState.EXPIRED, "timeout")

    def cancel_hold(self, hold_id: str, why: str) -> Hold | None:
        """The session ended while its command waited: ``cancelled``, audited as ``rule.hold.deny``
        (``state: cancelled``). None if it was decided meanwhile."""
        return self._end_hold(hold_id, HoldState.CANCELLED, why)

    def cancel_stale_holds(self, why: str) -> list[Hold]:
        """Cancel every pending hold (a bastion starting: no session of its data dir is live, so
        none of them can still be waiting)."""
        with self.store.transaction(write=False) as tx:
            stale = tx.list_holds((HoldState.PENDING,))
        return [done for h in stale if (done := self.cancel_hold(h.id, why)) is not None]

    def hold(self, hold_id: str) -> Hold:
        """One hold as it is now (the waiting relay polls this)."""
        with self.store.transaction(write=False) as tx:
            return self._hold(tx, hold_id)

    def holds(self, *, pending_only: bool = True) -> list[Hold]:
        """Holds oldest first; only those still waiting (and not yet timed out) if ``pending_only``."""
        now = self.clock.now()
        with self.store.transaction(write=False) as tx:
            if not pending_only:
                return tx.list_holds()
            return [h for h in tx.list_holds((HoldState.PENDING,)) if h.expires_at > now]

    def rule_terminated(self, record: SessionRecord, rule: Rule, text: str) -> AccessRequest | None:
        """``rule`` ends ``record``'s session: the ``rule.terminate`` audit event and a system
        revocation of its grant (``ended_by`` ``rule:NAME``) commit together. Returns the revoked
        grant, None if it was no longer active (expired or revoked meanwhile: nothing to revoke)."""
        by = f"rule:{rule.name}"
        text = text[:_HOLD_TEXT]
        with self._unit() as u:
            u.audit(
                NewEvent(
                    "rule.terminate",
                    record.user,
                    "rule",
                    f"rule {rule.name} ({rule.severity.value}) ended session {record.id} of {record.user} on "
                    f"{record.login}@{record.target} and revoked its grant: {printable(text)}",
                    outcome="terminated",
                    **_session_scope(record),
                    fields={"rule": rule.name, "severity": rule.severity.value, "text": text},
                )
            )
            req = u.tx.get_request(record.grant_id) if record.grant_id else None
            if req is None or req.state is not RequestState.APPROVED:
                return None
            return self._transition(
                u,
                req,
                RequestState.REVOKED,
                "grant.revoke",
                by,
                "rule",
                f"{req.id} revoked by rule {rule.name}: it ended session {record.id}",
                ended_at=u.now,
                ended_by=by,
                note=f"rule {rule.name}",
            )

    def session_started(self, record: SessionRecord, via: str = "ssh", *, max_live: int | None = None) -> bool:
        """Store a session that starts; with ``max_live``, only if its user has fewer live
        sessions than that in the store (counted and inserted in one write transaction, so
        bastions and workers sharing the store cannot together pass the cap). False: refused."""
        with self._unit() as u:
            if max_live is not None and u.tx.live_sessions(record.user) >= max_live:
                return False
            u.tx.session_start(record)
            u.audit(
                NewEvent(
                    "session.start",
                    record.user,
                    via,
                    f"{record.user} opened {record.login}@{record.target}"
                    + (f": {record.command}" if record.command else ""),
                    **_session_scope(record),
                    fields={"client": record.client, "recording": record.path, "command": record.command},
                )
            )
        return True

    def session_ended(
        self,
        record: SessionRecord,
        exit_status: int | None,
        reason: str,
        head: str | None,
        frames: int | None = None,
        via: str = "ssh",
        *,
        upload: str | None = None,
    ) -> None:
        """Store a session's end; ``upload`` (``"pending"``) marks its recording for upload to
        object storage in the same transaction."""
        with self._unit() as u:
            u.tx.session_end(record.id, u.now, exit_status, reason, head)
            if upload is not None:
                u.tx.set_upload(record.id, upload)
            u.audit(
                NewEvent(
                    "session.end",
                    record.user,
                    via,
                    f"session {record.id} of {record.user} on {record.login}@{record.target} ended: {reason}",
                    outcome="success" if head else "failure",
                    **_session_scope(record),
                    fields={
                        "exit_status": exit_status,
                        "reason": reason,
                        "head": head,
                        "frames": frames,
                        "recording": record.path,
                    },
                )
            )

    def sessions(
        self, *, user: str | None = None, target: str | None = None, since: datetime | None = None
    ) -> list[SessionRecord]:
        with self.store.transaction(write=False) as tx:
            return tx.list_sessions(user=user, target=target, since=since)

    def unended_sessions(self) -> list[SessionRecord]:
        with self.store.transaction(write=False) as tx:
            return tx.unended_sessions()

    def session_interrupted(
        self, record: SessionRecord, last_seen: datetime | None, found: dict[str, Any], via: str = "ssh"
    ) -> bool:
        """Close a session whose recorder died with it (a killed bastion): ``interrupted``.

        ``found`` says what verifying its recording showed (intact and signed frames, the last
        intact head) and whether recovery sealed it (``sealed``, ``sealed_head``, ``sealed_frames``)
        or why not (``not_sealed``), so the audit log pins how far it reached. Ends it at
        ``last_seen`` (its last recorded moment) where known. Returns False if the session had
        meanwhile been ended by someone else.
        """
        if found.get("sealed") is True:
            how = "its recording was sealed at restart with reason interrupted"
        else:
            how = f"its recording was left unsealed: {found.get('not_sealed') or 'not examined'}"
        with self._unit() as u:
            current = u.tx.get_session(record.id)
            if current is None or current.ended_at is not None:
                return False
            u.tx.session_end(record.id, last_seen or u.now, None, "interrupted", None)
            u.audit(
                NewEvent(
                    "session.interrupted",
                    record.user,
                    via,
                    f"session {record.id} of {record.user} on {record.login}@{record.target} was interrupted "
                    f"(its recorder stopped without sealing it; found at restart; {how})",
                    outcome="failure",
                    **_session_scope(record),
                    fields={"recording": record.path, "owner": record.owner, **found},
                )
            )
        return True

    # --- moderated sessions: who watches them ------------------------------------------------
    # One place for every way in (ssh -t zsp@BASTION watch, the review app's Live screen, over
    # ssh or on the console): the rules, the store's watch row and the audit events commit
    # together. The bastion that owns the session reads the open watches and gates its input.

    def join_watch(
        self, actor: Actor, session_id: str, *, client: str, here: str | None = None, served_by: str = ""
    ) -> Watch:
        """``actor`` starts watching moderated session ``session_id`` (from ``client``): the session
        must be live, moderated by its grant's rule under the policy now, not ``actor``'s own
        (admins neither), and ``actor`` among its moderators; with ``here`` (this host's name),
        recorded on this host (its recording is followed from the data dir). Audited as
        ``session.watch.start``; a refusal raises :class:`WatchRefused`, audited as
        ``session.watch.refused``. ``served_by``: the process showing the view (``serve:HOST:PID``),
        in both events (which worker served it)."""
        sid = session_id.strip()
        with self._unit(policy=True) as u:
            user = self._actor(u, actor)
            record = u.tx.get_session(sid) if sid and len(sid) <= 64 else None

            def refuse(why: str) -> WatchRefused:
                return WatchRefused(
                    session_id=sid,
                    reason=why,
                    event=NewEvent(
                        "session.watch.refused",
                        user.name,
                        actor.via,
                        f"watch {printable(sid)[:64]} refused: {why}",
                        outcome="failure",
                        **_session_scope(record),
                        fields={
                            "reason": why,
                            "requested_session": printable(sid)[:64],
                            "client": client,
                            "bastion": served_by,
                        },
                    ),
                )

            if record is None or record.ended_at is not None:
                raise refuse(f"no live session {printable(sid)[:64]!r}")
            grant = u.tx.get_request(record.grant_id) if record.grant_id else None
            policy = self.policy(u)
            moderators = () if grant is None or grant.break_glass else policy.moderated_by(grant.rule)
            if not moderators:
                raise refuse(f"session {record.id} is not moderated (its rule has no moderation)")
            if record.user == user.name:
                raise refuse("nobody moderates their own session (admins neither)")
            if not policy.principal_matches(moderators, user):
                raise refuse(f"{user.name} is not among this session's moderators ({', '.join(moderators)})")
            host = owner_host(record.owner)
            if here is not None and host is not None and host != here:
                raise refuse(f"session {record.id} runs on bastion {host}; watch it there")
            while True:
                wid = "w-" + secrets.token_hex(6)
                if u.tx.get_watch(wid) is None:
                    break
            watch = Watch(wid, record.id, user.name, client, actor.via, since=u.now, seen_at=u.now)
            u.tx.insert_watch(watch)
            u.audit(
                NewEvent(
                    "session.watch.start",
                    user.name,
                    actor.via,
                    f"{user.name} watches session {record.id} of {record.user}",
                    **_session_scope(record),
                    fields={
                        "client": client,
                        "watch": wid,
                        "moderators": ", ".join(moderators),
                        "bastion": served_by,
                        "owner": record.owner,
                    },
                )
            )
            return watch

    def beat_watch(self, watch_id: str) -> bool:
        """The watcher is still there (every second); False once the watch has ended (left,
        terminated, lost or its session over): the view should stop. Not audited."""
        with self.store.transaction() as tx:
            return tx.beat_watch(watch_id, self.clock.now())

    def _end_watch(self, u: _Unit, watch: Watch, how: WatchEnd) -> bool:
        if not u.tx.leave_watch(watch.id, u.now, how):
            return False
        record = u.tx.get_session(watch.session_id)
        u.audit(
            NewEvent(
                "session.watch.end",
                watch.user,
                watch.via,
                f"{watch.user} stopped watching session {watch.session_id} ({how.value})",
                outcome="success",
                **_session_scope(record, watch.session_id),
                fields={"since": rfc3339(watch.since), "how": how.value, "client": watch.client, "watch": watch.id},
            )
        )
        return True

    def _watch(self, tx: Tx, watch_id: str) -> Watch:
        watch = tx.get_watch(watch_id) if _WATCH_ID.fullmatch(watch_id) else None
        if watch is None:
            raise NotFound(kind="watch", name=watch_id)
        return watch

    def leave_watch(self, watch_id: str, how: WatchEnd = WatchEnd.LEFT) -> Watch | None:
        """End an open watch ``how`` (the watcher left, its session ended, or, from the owning
        bastion, its heartbeat stopped: ``lost``); audited as ``session.watch.end`` naming the
        moderator. None if it had ended already (each watch ends once)."""
        with self._unit() as u:
            watch = self._watch(u.tx, watch_id)
            if not self._end_watch(u, watch, how):
                return None
            return replace(watch, left_at=u.now, how=how)

    def end_watches(self, session_id: str, how: WatchEnd = WatchEnd.SESSION_ENDED) -> list[Watch]:
        """End every open watch of ``session_id`` (its session is over); those this call ended."""
        with self._unit() as u:
            return [
                replace(w, left_at=u.now, how=how)
                for w in u.tx.list_watches([session_id])
                if self._end_watch(u, w, how)
            ]

    def terminate_watch(self, actor: Actor, watch_id: str) -> Watch:
        """The moderator of ``watch_id`` ends the session they watch: the watch ends
        ``terminated`` (the owning bastion ends the session, reason ``moderator-terminated``, on
        reading it). Audited as ``session.moderation.terminate`` and ``session.watch.end``."""
        with self._unit() as u:
            user = self._actor(u, actor)
            watch = self._watch(u.tx, watch_id)
            if watch.user != user.name:
                raise AccessDenied(f"{user.name} cannot end the session through {watch.user}'s watch")
            record = u.tx.get_session(watch.session_id)
            if record is None or record.ended_at is not None or not watch.open:
                raise AccessDenied(f"session {watch.session_id} is no longer watched by {user.name}: nothing to end")
            message = f"moderator {user.name} ended this session"
            u.audit(
                NewEvent(
                    "session.moderation.terminate",
                    user.name,
                    actor.via,
                    message,
                    outcome="failure",
                    **_session_scope(record),
                    fields={"watch": watch.id, "operator": record.user},
                )
            )
            self._end_watch(u, watch, WatchEnd.TERMINATED)
            return replace(watch, left_at=u.now, how=WatchEnd.TERMINATED)

    def moderators_of(self, records: Sequence[SessionRecord]) -> dict[str, tuple[str, ...]]:
        """The moderators each of ``records`` needs (its grant's rule under the policy now), for
        the moderated ones only: what the review app's Live screen marks."""
        policy = self._policy()
        out: dict[str, tuple[str, ...]] = {}
        with self.store.transaction(write=False) as tx:
            for r in records:
                grant = tx.get_request(r.grant_id) if r.grant_id else None
                if grant is not None and not grant.break_glass and (mods := policy.moderated_by(grant.rule)):
                    out[r.id] = mods
        return out

    def watches(self, session_ids: Sequence[str], *, open_only: bool = True) -> list[Watch]:
        """The watches of ``session_ids`` (open ones only by default), oldest first."""
        with self.store.transaction(write=False) as tx:
            return tx.list_watches(session_ids, open_only=open_only)

    # --- signed reviews -----------------------------------------------------------------------

    def attest_review(
        self, actor: Actor, session_id: str, *, head: str, outcome: str, frames: int, note: str = ""
    ) -> Review:
        """Record that ``actor`` reviewed ``session_id``, whose recording they verified to end at
        ``head`` (``outcome``: VALID, or INCOMPLETE for an interrupted one), as a ``session.review``
        event in the audit chain, signed by its checkpoint (exports carry it in their excerpt).

        Only a reviewer, never of their own session (admins too), only a session that ended, and
        only at the head the store recorded at its end when it sealed; once per reviewer.
        A refusal is audited (``session.review.refused``)."""
        note = note.strip()
        _check_text(note, what="a review note")
        with self._unit() as u:
            user = self._actor(u, actor)
            record = u.tx.get_session(session_id)
            if record is None:
                raise NotFound(kind="session", name=session_id)

            def refused(message: str) -> AccessDenied:
                return AccessDenied(
                    message,
                    event=NewEvent(
                        "session.review.refused",
                        user.name,
                        actor.via,
                        message,
                        outcome="failure",
                        **_session_scope(record),
                        fields={"operator": record.user},
                    ),
                )

            if record.user == user.name:
                raise refused(f"{user.name} cannot attest a review of their own session {record.id}")
            if not user.has(Role.REVIEWER):
                raise refused(f"{user.name} may not attest reviews (needs the reviewer role)")
            if record.ended_at is None:
                raise refused(f"session {record.id} is still live: review it once it has ended")
            if record.head is not None and record.head != head:
                raise refused(
                    f"the recording reviewed ends at {head[:16]}..., not at the head recorded when session "
                    f"{record.id} ended ({record.head[:16]}...): not this session's recording"
                )
            for earlier in self._reviews(u.tx).get(record.id, ()):
                if earlier.reviewer == user.name:
                    raise Conflict(f"{user.name} already attested a review of {record.id} ({rfc3339(earlier.at)})")
            u.audit(
                NewEvent(
                    "session.review",
                    user.name,
                    actor.via,
                    f"{user.name} reviewed session {record.id} of {record.user} ({outcome}, head {head[:16]}...)"
                    + (f": {note}" if note else ""),
                    **_session_scope(record),
                    fields={"operator": record.user, "head": head, "verdict": outcome, "frames": frames, "note": note},
                )
            )
            at = u.now
        return Review(record.id, user.name, at, head, outcome, frames, note)

    def reviews(self) -> dict[str, list[Review]]:
        """Every attested review, by session id, oldest first (from the ``session.review`` events;
        unverified here: ``zsp audit verify`` checks the chain they are in)."""
        with self.store.transaction(write=False) as tx:
            return self._reviews(tx)

    def _reviews(self, tx: Tx) -> dict[str, list[Review]]:
        # Every one, read through the audit log's event index: the once-per-reviewer check must
        # not miss an attestation older than some page.
        out: dict[str, list[Review]] = {}
        for ev in reversed(self.audit_log.newest(tx, limit=2**62, event_prefix="session.review")):
            if ev.event == "session.review" and ev.session_id:
                out.setdefault(ev.session_id, []).append(Review.from_event(ev))
        return out

    def session(self, session_id: str) -> SessionRecord | None:
        with self.store.transaction(write=False) as tx:
            return tx.get_session(session_id)

    # --- audit ----------------------------------------------------------------------------

    def audit_events(self, since: datetime | None = None) -> list[AuditEvent]:
        with self.store.transaction(write=False) as tx:
            return list(self.audit_log.events(tx, since))

    def audit_newest(
        self,
        *,
        before: int | None = None,
        limit: int = 200,
        actor: str = "",
        event_prefix: str = "",
        since: datetime | None = None,
    ) -> list[AuditEvent]:
        """A page of the audit log, newest first, filtered (:meth:`AuditLog.newest`)."""
        with self.store.transaction(write=False) as tx:
            return self.audit_log.newest(
                tx, before=before, limit=limit, actor=actor, event_prefix=event_prefix, since=since
            )

    def sessions_count(self, q: SessionQuery) -> int:
        """How many sessions match ``q`` (the review app's count line)."""
        with self.store.transaction(write=False) as tx:
            return tx.count_sessions(q)

    def sessions_page(self, q: SessionQuery, offset: int, limit: int) -> list[SessionRow]:
        """One page of the sessions matching ``q``, in its order, with each grant's reason."""
        with self.store.transaction(write=False) as tx:
            return tx.page_sessions(q, offset, limit)

    def audit_verify(self, trusted: list[PublicKey], anchors: AnchorSet | None = None) -> AuditReport:
        with self.store.transaction(write=False) as tx:
            return self.audit_log.verify(tx, trusted, anchors)

    # --- flagged moments (real-time rules), read side -------------------------------------

    def flags(
        self, *, session_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Flag]:
        """The moments rules fired, oldest first (``zsp search --flagged``): only those of
        ``session_id``, at or after ``since``; ``limit``: the newest ``limit`` of them (still
        oldest first)."""
        with self.store.transaction(write=False) as tx:
            found = tx.list_flags(session_id=session_id, since=since)
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return found

    def flagged_sessions(
        self, *, user: str | None = None, target: str | None = None, since: datetime | None = None
    ) -> list[SessionRecord]:
        """Sessions in which a rule fired (``SessionRecord.flags > 0``), oldest first, filtered as
        :meth:`sessions`."""
        return [s for s in self.sessions(user=user, target=target, since=since) if s.flags > 0]
