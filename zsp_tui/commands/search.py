"""``zsp search`` (find a command or a line of output across sessions) and ``zsp index``.

Words are what people type: ``zsp search rm -rf /srv/app`` needs no quoting or ``--``; a word
that starts with ``-`` and is not one of this command's options is a search word (``--`` ends
the options, for a word that is one). Recorded text is hostile: every line shown here passes
through :func:`replay.printable`; ``--json`` is exact.

``--flagged`` without words lists the moments real-time rules fired (the store's flags, written
as they fired, so no search index is needed); with words it searches the flagged sessions only.
Rule names and matched text come from rules files and sessions: escaped like recorded text.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from replay import Hit, QueryError, ReplayError, SearchIndexError, parse_query, printable

from ..clock import parse_since, rfc3339
from ..datadir import DataDir
from ..exceptions import UsageError, ZspError
from ..indexing import coverage, index_exists, index_location, index_one, open_index, recordings, warn
from ..models import Flag, SessionRecord
from ..session_ref import resolve_ref
from ._common import data, emit_json

__all__ = ["register"]

_BOLD = "\x1b[1;7m"
_PLAIN = "\x1b[0m"
_CONTEXT = 60
_SHOWN = 200


class _Options(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"zsp search: {message}")


def _options() -> argparse.ArgumentParser:
    """The options of ``zsp search``, parsed from anywhere among the query words."""
    p = _Options(prog="zsp search", add_help=False, allow_abbrev=False)
    p.add_argument("--data")
    p.add_argument("--user")
    p.add_argument("--target")
    p.add_argument("--since")
    p.add_argument("--session")
    p.add_argument("--commands-only", action="store_true")
    p.add_argument("--flagged", action="store_true")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    return p


def _split_words(words: list[str]) -> tuple[list[str], argparse.Namespace]:
    """(query words, options) of the words after ``zsp search``."""
    if "--" in words:
        cut = words.index("--")
        head, tail = words[:cut], words[cut + 1 :]
    else:
        head, tail = words, []
    opts, rest = _options().parse_known_args(head)
    return rest + tail, opts


def _play_ref(session_id: str, path: str | None) -> str:
    """How ``zsp play`` names a session's recording: its session id when the file is named by it."""
    if path is None or Path(path).name == f"{session_id}.zsprec":
        return shlex.quote(printable(session_id))
    return shlex.quote(printable(path))


def _play_command(hit: Hit, data_arg: str | None) -> str:
    """The command that opens the hit's moment (with the ``--data`` this search was given)."""
    return _play_at(hit.session_id, hit.path, hit.t_us, data_arg)


def _play_at(session_id: str, path: str | None, t_us: int, data_arg: str | None) -> str:
    where = f" --data {shlex.quote(printable(data_arg))}" if data_arg else ""
    return f"zsp play{where} {_play_ref(session_id, path)} --from {_from(t_us)}"


def _from(t_us: int) -> str:
    """Seconds from the start, rounded up to the millisecond (the moment after the hit's frame)."""
    return f"{math.ceil(t_us / 1000) / 1000:.3f}"


def _clock(us: int) -> str:
    s = us // 1_000_000
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _shown(hit: Hit, tty: bool) -> str:
    """The hit's text, escaped, cut around the first match, matches highlighted on a terminal."""
    text, spans = hit.text, list(hit.spans)
    lo = max(0, spans[0][0] - _CONTEXT) if spans else 0
    hi = min(len(text), lo + _SHOWN)
    out = ["…" if lo else ""]
    pos = lo
    for a, b in spans:
        a, b = max(a, pos), min(b, hi)
        if a >= b:
            continue
        out.append(printable(text[pos:a]))
        match = printable(text[a:b])
        out.append(f"{_BOLD}{match}{_PLAIN}" if tty else match)
        pos = b
    out.append(printable(text[pos:hi]))
    if hi < len(text):
        out.append("…")
    return "".join(out)


def _json(hit: Hit, data_arg: str | None) -> dict[str, Any]:
    return {
        "session_id": hit.session_id,
        "t": hit.t_us / 1e6,
        "frame": hit.frame,
        "kind": hit.kind.value,
        "text": hit.text,
        "blind": hit.blind,
        "user": hit.user,
        "target": hit.target,
        "login": hit.login,
        "started_at": rfc3339(datetime.fromtimestamp(hit.started_us / 1e6, UTC)),
        "outcome": hit.outcome,
        "spans": [list(s) for s in hit.spans],
        "path": hit.path,
        "play": _play_command(hit, data_arg),
    }


def cmd_search(args: argparse.Namespace) -> int:
    words, opts = _split_words(list(args.words))
    for name in ("data", "user", "target", "since", "limit", "session"):
        if getattr(opts, name) is not None:
            setattr(args, name, getattr(opts, name))
    args.json = args.json or opts.json
    args.commands_only = args.commands_only or opts.commands_only
    args.flagged = args.flagged or opts.flagged
    if args.flagged and not words:
        return _flagged_moments(args)
    try:
        query = parse_query(words)
    except QueryError as exc:
        raise UsageError(f"{exc.reason} (usage: zsp search WORD... [--user U] [--target T] [--since 7d])") from None
    limit, since, d, session_id = _common(args)
    flagged_ids: set[str] | None = None
    if args.flagged:
        flagged_ids = {s.id for s in d.service().flagged_sessions(user=args.user, target=args.target, since=since)}
    if not index_exists(d):
        warn("nothing is indexed yet: sessions are indexed as they end (`zsp index` indexes recordings made elsewhere)")
        if args.json:
            emit_json([])
        return 1
    try:
        index = open_index(d)
        try:
            hits = index.search(
                query,
                user=args.user,
                target=args.target,
                since_us=int(since.timestamp() * 1e6) if since else None,
                commands_only=args.commands_only,
                limit=limit,
                session_id=session_id,
                session_ids=flagged_ids,
            )
            _warn_stale(d, index)
        finally:
            index.close()
    except SearchIndexError as exc:
        raise UsageError(f"{exc}; `zsp index --rebuild` rebuilds it from the recordings") from None
    if args.json:
        emit_json([_json(h, args.data) for h in hits])
        return 0 if hits else 1
    tty = sys.stdout.isatty()
    for h in hits:
        started = datetime.fromtimestamp(h.started_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
        kind = "command(blind)" if h.blind else h.kind.value
        flag = "" if h.outcome == "VALID" else f" [{h.outcome}]"
        print(
            f"{printable(h.session_id[-8:])}  {started}Z +{_clock(h.t_us)}  {printable(h.user)}  "
            f"{printable(h.login)}@{printable(h.target)}  {kind}{flag}  {_shown(h, tty)}"
        )
        print(f"    {_play_command(h, args.data)}")
    if not hits:
        print("no match", file=sys.stderr)
    elif len(hits) == limit:
        print(f"zsp search: the first {limit} hits; there may be more (--limit N)", file=sys.stderr)
    return 0 if hits else 1


# --- flagged moments -------------------------------------------------------------------------


def _flag_json(f: Flag, s: SessionRecord | None, data_arg: str | None) -> dict[str, Any]:
    return {
        "session_id": f.session_id,
        "at": rfc3339(f.at),
        "t": f.t_us / 1e6,
        "rule": f.rule,
        "severity": f.severity,
        "trigger": f.trigger,
        "actions": f.actions,
        "text": f.text,
        "user": s.user if s else None,
        "target": s.target if s else None,
        "login": s.login if s else None,
        "started_at": rfc3339(s.started_at) if s else None,
        "path": s.path if s else None,
        "play": _play_at(f.session_id, s.path if s else None, f.t_us, data_arg),
    }


def _flag_line(f: Flag, s: SessionRecord | None) -> str:
    """One flagged moment, every stored value escaped (rule names and matched text are hostile)."""
    who = f"{printable(s.user)}  {printable(s.login)}@{printable(s.target)}" if s else "?  ?@?"
    text = f.text if len(f.text) <= _SHOWN else f.text[:_SHOWN] + "…"
    return (
        f"{printable(f.session_id[-8:])}  {f.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z +{_clock(f.t_us)}  {who}  "
        f"{printable(f.rule)} ({printable(f.severity)}, {printable(f.trigger)})  {printable(text)}"
    )


def _common(args: argparse.Namespace) -> tuple[int, datetime | None, DataDir, str | None]:
    """What both kinds of search take alike: ``--limit``, ``--since``, the data dir, ``--session``."""
    limit = 50 if args.limit is None else args.limit
    if not 1 <= limit <= 100_000:
        raise UsageError("--limit must be between 1 and 100000")
    try:
        since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    d = data(args)
    if not d.root.is_dir():
        raise UsageError(f"no data directory {d.root} (--data DIR or $ZSP_DATA names it)")
    session_id: str | None = None
    if args.session is not None:
        ref = resolve_ref(d, args.session)
        if ref.session_id is None:
            raise UsageError(f"--session {args.session}: name a session of the data dir by its id (or part of it)")
        session_id = ref.session_id
    return limit, since, d, session_id


def _flagged_moments(args: argparse.Namespace) -> int:
    """``zsp search --flagged`` without words: the moments rules fired, newest last."""
    if args.commands_only:
        raise UsageError("--commands-only needs words to search (zsp search --flagged WORD...)")
    limit, since, d, session_id = _common(args)
    svc = d.service()
    sessions = {s.id: s for s in svc.sessions()}
    found = [
        f
        for f in svc.flags(session_id=session_id, since=since)
        if (args.user is None or (f.session_id in sessions and sessions[f.session_id].user == args.user))
        and (args.target is None or (f.session_id in sessions and sessions[f.session_id].target == args.target))
    ]
    shown = found[-limit:]
    if args.json:
        emit_json([_flag_json(f, sessions.get(f.session_id), args.data) for f in shown])
        return 0 if shown else 1
    for f in shown:
        s = sessions.get(f.session_id)
        print(_flag_line(f, s))
        print(f"    {_play_at(f.session_id, s.path if s else None, f.t_us, args.data)}")
    if not shown:
        print("no flagged moments", file=sys.stderr)
    elif len(found) > len(shown):
        print(f"zsp search: the newest {len(shown)} of {len(found)} flagged moments (--limit N)", file=sys.stderr)
    return 0 if shown else 1


def _warn_stale(d: DataDir, index: Any) -> None:
    try:
        cov = coverage(d, index)
    except (ReplayError, OSError) as exc:
        warn(f"could not check which recordings are indexed: {exc}")
        return
    if cov.stale:
        warn(
            f"{len(cov.stale)} of {cov.total} recordings are not in the search index or changed since "
            "(results may be missing): `zsp index` brings them in"
        )


# --- index -----------------------------------------------------------------------------------


class _Progress:
    """sessions done/total and MB/s: a bar redrawn in place on a terminal, else a line every few seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.bytes = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def step(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = width * self.done // max(1, self.total)
            bar = "#" * filled + "-" * (width - filled)
            print(f"\r[{bar}] {self.done}/{self.total} sessions  {self._rate():.1f} MB/s", end="", file=sys.stderr)
        elif not self.tty and now - self._last > 5:
            self._last = now
            print(f"zsp index: {self.done}/{self.total} sessions, {self._rate():.1f} MB/s", file=sys.stderr)

    def _rate(self) -> float:
        return self.bytes / 1e6 / max(1e-6, time.monotonic() - self.start)

    def end(self) -> None:
        if self.tty and self.total:
            print(file=sys.stderr)


def cmd_index(args: argparse.Namespace) -> int:
    d = data(args)
    if not d.root.exists():
        raise UsageError(f"no data directory {d.root}; run `zsp init` first")
    try:
        index = open_index(d)
    except SearchIndexError as exc:
        raise UsageError(str(exc)) from None
    failed = 0
    try:
        files = recordings(d)[0]
        if args.rebuild:
            index.clear()
            todo = sorted(files)
        else:
            cov = coverage(d, index)
            todo = sorted(cov.stale + cov.live)  # live ones as far as they are signed now
            # (an uploaded recording whose download was removed stays: it is in the bucket)
            gone = [p for p in index.sessions() if not Path(p).exists() and Path(p) not in files]
            for p in gone:  # derived data follows the recordings
                index.remove(p)
            if gone:
                print(f"zsp index: {len(gone)} recording(s) no longer on disk dropped from the index", file=sys.stderr)
        progress = _Progress(len(todo))
        problems: list[str] = []
        for path in todo:
            try:
                s = index_one(d, path, index, live=files.get(path, False))  # an uploaded one: downloaded
                size = s.size
            except (ReplayError, ZspError, OSError) as exc:
                failed += 1
                problems.append(f"could not index {path}: {exc}")
                progress.step(0)
                continue
            if s.outcome not in ("VALID", "INCOMPLETE", "LIVE"):
                where = f" at frame {s.bad_frame}" if s.bad_frame is not None else ""
                problems.append(f"{s.outcome} {path}: {s.problem or ''}{where} (indexed as far as it is signed)")
            progress.step(size)
        progress.end()
    finally:
        index.close()
    for line in problems:
        print(f"zsp index: {printable(line)}", file=sys.stderr)
    print(
        f"zsp index: {progress.done - failed} recording(s) indexed"
        f"{', ' + str(failed) + ' failed' if failed else ''} ({progress.bytes / 1e6:.3f} MB, "
        f"{progress._rate():.1f} MB/s); index {printable(index_location(d))}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "search",
        parents=[common],
        help="search every session's commands and output",
        description="Search the commands and lines of output of every recorded session, newest first. "
        "Words match as typed, punctuation included (rm -rf /srv/app); a quoted part is a phrase. "
        "Each hit prints the command that opens that moment: zsp play SESSION --from T.",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="WORD", help="words to find (all of them)")
    p.add_argument("--user", help="sessions of this zsp user only")
    p.add_argument("--target", help="sessions on this target only")
    p.add_argument("--since", metavar="T", help="sessions started since T: 7d, 12h, 30m or an ISO date/time")
    p.add_argument("--session", metavar="SESSION", help="within this session only (its id, or a unique start or end)")
    p.add_argument("--commands-only", action="store_true", help="commands only, not output")
    p.add_argument(
        "--flagged",
        action="store_true",
        help="without words: the moments real-time rules fired (newest last), each with the zsp play command "
        "that opens it; with words: search only the sessions in which a rule fired",
    )
    p.add_argument("--limit", type=int, metavar="N", help="at most N hits (default 50)")
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "index",
        parents=[common],
        help="bring the search index up to date with the recordings",
        description="Index every recording of the data dir that is not in the search index or changed since. "
        "The bastion and zsp record index sessions as they end; this catches up and repairs.",
    )
    p.add_argument("--rebuild", action="store_true", help="drop the index and rebuild it from the recordings alone")
    p.set_defaults(func=cmd_index)
