"""``zsp migrate --to URL``: move an embedded (SQLite) deployment's state into PostgreSQL.

Every table is copied as it is stored, in dependency order, in one PostgreSQL transaction:
users with their ids (the sequence then moves past the highest id SQLite ever gave out, removed
users' too, so an id is never reused), keys, targets, requests, approvals, sessions, flags, holds,
and the audit log frame for frame, byte for byte, so its chain and signatures carry on unbroken
and the next event appended on PostgreSQL extends the same chain. Before that transaction
commits, the row counts and the whole audit chain are verified on the target; any failure rolls
it back and nothing is left behind. The target must be empty: migrate never merges.

Recordings are not part of the state: they stay in ``DATA/recordings``. Copying them to an
S3-compatible bucket is the recordings half of the migration (``--recordings-to s3://...``), which
plugs in at :func:`_migrate_recordings`; until then they are listed as left in place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..config import check_store_url, redact_url
from ..datadir import DataDir
from ..exceptions import Conflict, UsageError
from ..store.base import ID_TABLES, TABLES, Tx
from ._common import data, emit_json, say

__all__ = ["MigrationReport", "migrate_state", "register"]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What ``migrate_state`` copied, as verified on the target."""

    where: str
    """The target, password redacted."""
    rows: dict[str, int]
    """Rows copied per table, in copy order (``meta``: without the schema version)."""
    audit_frames: int
    """Frames of the audit chain, verified on the target (0 for an empty log)."""
    audit_detail: str
    recordings: int
    """Recording files left in the data dir's ``recordings`` (not copied by the state migration)."""


def _meta_rows(tx: Tx) -> tuple[list[str], list[tuple[object, ...]]]:
    columns, rows = tx.dump_rows("meta")
    key = columns.index("key")
    return columns, [r for r in rows if r[key] != "schema_version"]  # the target keeps its own


def _state_rows(tx: Tx, table: str) -> int:
    if table == "meta":
        return len(_meta_rows(tx)[1])
    return tx.count_rows(table)


def migrate_state(d: DataDir, url: str) -> MigrationReport:
    """Copy the SQLite store of ``d`` into the empty PostgreSQL database at ``url`` and verify it
    there (counts, audit chain) before committing. Conflict if the target is not empty; nothing is
    written then, nor when anything fails."""
    from ..audit import AuditLog
    from ..store.postgres import PostgresStore, empty_problem
    from ..store.sqlite import SqliteStore

    where = redact_url(url)
    d.require()
    if d.settings().store_url is not None:
        raise UsageError(
            f"{d.root} already keeps its state in {redact_url(d.settings().store_url or '')}: "
            "migrate copies an embedded (SQLite) deployment"
        )
    problem = empty_problem(url)  # before the schema is made there: a refused target stays as it was
    if problem is not None:
        raise Conflict(f"store {where}: {problem}; nothing was written")
    key = d.signing_key()
    trusted = d.trusted_keys() or [key.public]
    audit = AuditLog(key)
    source = SqliteStore(d.db_path)
    try:
        with source.transaction(write=False) as src:
            before = audit.verify(src, trusted)
            if src.audit_tail() is not None and not before.ok:
                raise Conflict(f"the audit log of {d.root} does not verify ({before.detail}); nothing was written")
            target = PostgresStore(url)
            try:
                with target.transaction() as dst:
                    # Under the writers' lock: nobody filled it since the check above.
                    full = [t for t in TABLES if _state_rows(dst, t)]
                    if full:
                        raise Conflict(f"store {where}: it is not empty ({', '.join(full)}); nothing was written")
                    rows: dict[str, int] = {}
                    for table in TABLES:
                        if table == "meta":
                            columns, meta = _meta_rows(src)
                            rows[table] = dst.load_rows(table, columns, meta)
                            continue
                        columns, it = src.dump_rows(table)
                        missing = sorted(set(columns) - set(dst.table_columns(table)))
                        if missing:
                            raise Conflict(f"store {where}: table {table} has no column {', '.join(missing)}")
                        rows[table] = dst.load_rows(table, columns, it)
                    for table in ID_TABLES:
                        dst.raise_id_floor(table, src.id_high_water(table))
                    for table in TABLES:
                        expected, got = _state_rows(src, table), _state_rows(dst, table)
                        if got != expected or rows[table] != expected:
                            raise Conflict(f"store {where}: {table} has {got} rows after the copy, not {expected}")
                    if dst.audit_tail() != src.audit_tail():
                        raise Conflict(f"store {where}: the audit log's last frame differs after the copy")
                    after = audit.verify(dst, trusted)
                    if dst.audit_tail() is not None and not after.ok:
                        raise Conflict(f"store {where}: the copied audit log does not verify ({after.detail})")
            finally:
                target.close()
    finally:
        source.close()
    recordings = sum(1 for p in d.recordings.rglob("*") if p.is_file()) if d.recordings.is_dir() else 0
    return MigrationReport(
        where=where,
        rows=rows,
        audit_frames=after.events if rows["audit"] else 0,
        audit_detail=after.detail,
        recordings=recordings,
    )


def _migrate_recordings(args: argparse.Namespace, d: DataDir, report: MigrationReport) -> None:
    """The recordings half of the migration: the hook where ``--recordings-to s3://...`` uploads
    ``DATA/recordings`` to the bucket and marks each session ``uploaded`` (object storage,
    zsp_tui/objstore). Not built yet: the recordings stay in the data dir, and the summary says so."""


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        url = check_store_url(args.to)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    d = data(args)
    report = migrate_state(d, url)
    _migrate_recordings(args, d, report)
    if args.json:
        emit_json(
            {
                "to": report.where,
                "rows": report.rows,
                "audit_frames": report.audit_frames,
                "audit_verified": True,
                "recordings_left_in": str(d.recordings),
                "recordings": report.recordings,
            }
        )
        return 0
    say(f"copied the state of {d.root} into {report.where}:")
    for table, n in report.rows.items():
        say(f"  {table:<10} {n:>8} rows")
    if report.audit_frames:
        say(f"audit log verified on the target: {report.audit_frames} frames, {report.audit_detail}")
    say(f"recordings: {report.recordings} file(s) stay in {d.recordings} (not copied)")
    say(f"To switch over, stop the bastion and set this line in the [store] section of {d.config_path}")
    say("(or ZSP_DATABASE_URL in the service's environment):")
    say(f'  url = "{report.where}"' + ("   # with its password" if report.where != url else ""))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy this embedded (SQLite) deployment's state into an empty PostgreSQL database",
        description=(
            "Copy users, keys, targets, requests, grants, sessions, flags, holds and the audit log "
            "(its chain unbroken) into an empty PostgreSQL database, verify it there, and print the "
            "zsp.toml line that switches this data dir over. Stop the bastion first. Recordings stay "
            "in the data dir."
        ),
    )
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (empty)")
    p.add_argument("--json", action="store_true", help="what was copied, as JSON")
    p.set_defaults(func=cmd_migrate)
