"""How stored rows become models, the same for every store (SQLite, PostgreSQL).

Both stores keep the same tables and columns (times as RFC 3339 text, lists and sets as JSON), so
turning a row into a model, and a session query into its WHERE clause, is written once here; each
store supplies only what its SQL dialect spells differently (the placeholder, the LIKE operator,
how a column named ``user`` is quoted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..clock import parse_time, rfc3339
from ..models import (
    AccessRequest,
    Flag,
    Hold,
    HoldState,
    RequestState,
    Role,
    SessionRecord,
    Target,
    User,
    UserKey,
    Watch,
    WatchEnd,
)
from .base import SessionQuery, SessionState

__all__ = [
    "HOLD_COLUMNS",
    "REQUEST_COLUMNS",
    "SESSION_COLUMNS",
    "SEVERITY_RANK",
    "TIME_COLUMNS",
    "WATCH_COLUMNS",
    "flag_from_row",
    "hold_from_row",
    "like_pattern",
    "request_from_row",
    "session_from_row",
    "session_where",
    "target_from_row",
    "time_or_none",
    "time_text",
    "user_from_row",
    "watch_from_row",
]

REQUEST_COLUMNS = (
    "id requester_id requester target login duration_s reason state approvals_needed approver_patterns "
    "rule break_glass created_at lapses_at decided_at starts_at ends_at ended_at ended_by note"
).split()
TIME_COLUMNS = frozenset({"created_at", "lapses_at", "decided_at", "starts_at", "ends_at", "ended_at"})
"""Request columns that hold times (``update_request`` turns datetimes into RFC 3339 text)."""
SESSION_COLUMNS = (
    "id user target login grant_id command client path started_at ended_at exit_status "
    "end_reason head owner flags flag_severity upload object_key sha256"
).split()
"""The columns :func:`session_from_row` reads, in order (a store quotes ``user`` as it must)."""
HOLD_COLUMNS = (
    "id session_id grant_id user target login rule severity command state created_at expires_at "
    "decided_at decided_by note"
).split()
WATCH_COLUMNS = "id session_id user client via since seen_at left_at how".split()
SEVERITY_RANK = (
    "CASE {} WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 "
    "WHEN 'info' THEN 0 ELSE -1 END"
)
"""A rule severity's rank in SQL (``{}``: the expression ranked); NULL (no match yet) ranks below
``info``, so a session whose only matches are ``info`` says so."""


def time_text(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339(dt)


def time_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching it literally anywhere (``ESCAPE '\\'``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def session_where(q: SessionQuery, *, param: str, like: str, user: str) -> tuple[str, list[str]]:
    """The WHERE clause of ``q`` over ``sessions s`` (with its leading keyword, or empty) and its
    arguments. ``param``: the placeholder (``?``, ``%s``); ``like``: the operator that folds ASCII
    case only (SQLite's ``LIKE``, PostgreSQL's ``ILIKE`` under the C collation); ``user``: the
    column ``user`` as the dialect quotes it."""
    where: list[str] = []
    args: list[str] = []
    if q.flagged:
        where.append("s.flags > 0")
    if q.state is SessionState.LIVE:
        where.append("s.ended_at IS NULL")
    elif q.state is SessionState.ENDED:
        where.append("s.ended_at IS NOT NULL")
    text = q.text.strip()
    if text:
        pattern = like_pattern(text)
        text_columns = ("s.id", f"s.{user}", "s.target", "s.login", "s.command", "s.grant_id")
        # The reason through a subquery, matched once per request rather than joined per session.
        columns = " OR ".join(f"{c} {like} {param} ESCAPE '\\'" for c in text_columns)
        reason = f"s.grant_id IN (SELECT id FROM requests WHERE reason {like} {param} ESCAPE '\\')"  # noqa: S608 - the dialect's fixed words
        where.append(f"({columns} OR {reason})")
        args.extend([pattern] * (len(text_columns) + 1))
    return (" WHERE " + " AND ".join(where) if where else ""), args


def session_from_row(row: Sequence[Any]) -> SessionRecord:
    """A session from the :data:`SESSION_COLUMNS` of a row (extra trailing columns ignored)."""
    (sid, user, target, login, grant_id, command, client, path, started, ended, status, reason, head, owner) = row[:14]
    flags, fsev, upload, object_key, sha256 = row[14:19]
    return SessionRecord(
        id=sid,
        user=user,
        target=target,
        login=login,
        grant_id=grant_id,
        command=command,
        client=client,
        path=path,
        started_at=parse_time(started),
        ended_at=time_or_none(ended),
        exit_status=status,
        end_reason=reason,
        head=head,
        owner=owner,
        flags=int(flags),
        flag_severity=fsev,
        upload=upload,
        object_key=object_key,
        sha256=sha256,
    )


def hold_from_row(row: Sequence[Any]) -> Hold:
    """A held command from the :data:`HOLD_COLUMNS` of a row."""
    values = dict(zip(HOLD_COLUMNS, row, strict=True))
    return Hold(
        id=values["id"],
        session_id=values["session_id"],
        grant_id=values["grant_id"],
        user=values["user"],
        target=values["target"],
        login=values["login"],
        rule=values["rule"],
        severity=values["severity"],
        command=values["command"],
        state=HoldState(values["state"]),
        created_at=parse_time(values["created_at"]),
        expires_at=parse_time(values["expires_at"]),
        decided_at=time_or_none(values["decided_at"]),
        decided_by=values["decided_by"],
        note=values["note"],
    )


def flag_from_row(row: Sequence[Any]) -> Flag:
    """A rule match from (session_id, at, t_us, rule, severity, trigger, actions, text)."""
    sid, at, t_us, rule, severity, trigger, actions, text = row
    return Flag(sid, parse_time(at), int(t_us), rule, severity, trigger, actions, text)


def target_from_row(row: Sequence[Any] | None) -> Target | None:
    """A target from (name, host, port, logins, host_key, labels, client_key), or None."""
    if row is None:
        return None
    name, host, port, logins, host_key, labels, client_key = row
    return Target(
        name=name,
        host=host,
        port=port,
        logins=tuple(json.loads(logins)),
        host_key=host_key,
        labels=frozenset(json.loads(labels)),
        client_key=client_key,
    )


def user_from_row(row: Sequence[Any], keys: Iterable[Sequence[Any]]) -> User:
    """A user from (id, name, roles, created_at) and its keys' (fingerprint, key, comment, added_at)."""
    uid, name, roles, created = row
    return User(
        id=uid,
        name=name,
        roles=frozenset(Role(r) for r in json.loads(roles)),
        keys=tuple(UserKey(fingerprint=f, key=k, comment=c, added_at=parse_time(a)) for f, k, c, a in keys),
        created_at=parse_time(created),
    )


def request_from_row(row: Sequence[Any], approvals: Iterable[str]) -> AccessRequest:
    """A request from the :data:`REQUEST_COLUMNS` of a row and its approvers, in order."""
    r = dict(zip(REQUEST_COLUMNS, row, strict=True))
    return AccessRequest(
        id=r["id"],
        requester=r["requester"],
        requester_id=r["requester_id"],
        target=r["target"],
        login=r["login"],
        duration=timedelta(seconds=r["duration_s"]),
        reason=r["reason"],
        state=RequestState(r["state"]),
        approvals_needed=r["approvals_needed"],
        approver_patterns=tuple(json.loads(r["approver_patterns"])),
        rule=r["rule"],
        created_at=parse_time(r["created_at"]),
        lapses_at=parse_time(r["lapses_at"]),
        break_glass=bool(r["break_glass"]),
        approvals=tuple(approvals),
        decided_at=time_or_none(r["decided_at"]),
        starts_at=time_or_none(r["starts_at"]),
        ends_at=time_or_none(r["ends_at"]),
        ended_at=time_or_none(r["ended_at"]),
        ended_by=r["ended_by"],
        note=r["note"],
    )


def watch_from_row(row: Sequence[Any]) -> Watch:
    """A moderator's watch from the :data:`WATCH_COLUMNS` of a row."""
    values = dict(zip(WATCH_COLUMNS, row, strict=True))
    return Watch(
        id=values["id"],
        session_id=values["session_id"],
        user=values["user"],
        client=values["client"],
        via=values["via"],
        since=parse_time(values["since"]),
        seen_at=parse_time(values["seen_at"]),
        left_at=time_or_none(values["left_at"]),
        how=None if values["how"] is None else WatchEnd(values["how"]),
    )
