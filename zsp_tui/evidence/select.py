"""Which sessions an export covers: named ones (id, unique prefix or path) and filtered ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..clock import parse_since
from ..datadir import DataDir
from ..exceptions import UsageError
from ..session_ref import SessionIndex, SessionRefError, resolve_ref
from .job import SelectedSession

__all__ = ["select_sessions"]

MAX_SESSIONS = 10_000
"""More than this in one export is refused: split it (a bundle is one file, built in one go)."""


def select_sessions(
    d: DataDir,
    refs: Sequence[str],
    *,
    user: str | None = None,
    target: str | None = None,
    since: str | None = None,
) -> tuple[SelectedSession, ...]:
    """The sessions named by ``refs`` plus those matching every given filter, each once, in the
    order named, then by start time. Nothing selected is a :class:`UsageError`."""
    if since and not (user or target):
        raise UsageError("--since selects with --user or --target; name sessions or add a filter")
    svc = d.service()
    records = {s.id: s for s in svc.sessions()}
    grants = {r.id: r for r in svc.requests()}
    index = SessionIndex(d) if refs else None
    chosen: dict[str, SelectedSession] = {}
    for ref in refs:
        try:
            found = resolve_ref(d, ref, index)
        except SessionRefError as exc:
            raise UsageError(str(exc)) from None
        sid = found.session_id
        key = sid if sid is not None else str(found.path.absolute())
        if key in chosen:
            continue
        if sid is None and not found.path.is_file():
            raise UsageError(f"{ref}: no such recording file")
        rec = records.get(sid) if sid else None
        grant = grants.get(rec.grant_id) if rec is not None and rec.grant_id else None
        chosen[key] = SelectedSession(sid, found.path, rec, grant)
    if user or target:
        when: datetime | None = None
        if since:
            try:
                when = parse_since(since, svc.clock.now())
            except ValueError as exc:
                raise UsageError(f"--since: {exc}") from None
        for rec in svc.sessions(user=user, target=target, since=when):
            if rec.id not in chosen:
                grant = grants.get(rec.grant_id) if rec.grant_id else None
                # A local file: an uploaded recording's verified download.
                chosen[rec.id] = SelectedSession(rec.id, d.recording_path(rec), rec, grant)
    if not chosen:
        raise UsageError("no sessions selected: name sessions, or use --user/--target (`zsp sessions` lists them)")
    if len(chosen) > MAX_SESSIONS:
        raise UsageError(f"{len(chosen)} sessions selected; export at most {MAX_SESSIONS} at once")
    return tuple(chosen.values())
