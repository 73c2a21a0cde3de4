"""``zsp unseal``: reveal a recording's masked input with the escrow private key, as an audited act.

Masked input (what was typed at password prompts) is kept in the recording sealed to the escrow
public key (docs/FORMAT.md 3.5). Revealing it is rare and sensitive, so the order is fixed: the
recording is verified (a CORRUPT one is refused; of an INCOMPLETE one only the signed frames are
used), every box is opened in memory (a wrong key or an altered or moved box is an error and
nothing is shown), then a ``recording.unsealed`` audit event naming the admin is committed, and
only then is anything printed. Plaintext is printed with control characters escaped, so a
recorded escape sequence cannot drive the reviewer's terminal; ``--json`` gives the exact bytes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import itertools
import sys
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from recorder import EscrowError, EscrowPrivateKey, Event, Frame, FrameKind, Header, KeyFileError, open_sealed
from replay import Outcome, SourceError, load, printable

from ..audit import NewEvent
from ..exceptions import UsageError
from ._common import actor, add_as, data, emit_json
from .recording import _describe, _session_ref, _trusted, require_identity

__all__ = ["MaskedRun", "register", "unseal_frames"]


@dataclass(frozen=True, slots=True)
class MaskedRun:
    """The input withheld at one prompt, opened: the concatenation of its parts in order."""

    run: int
    frames: tuple[int, ...]
    """Frames of the ``input.masked`` events holding its parts."""
    t_us: int
    """Session time of its first part."""
    data: bytes


def unseal_frames(frames: list[Frame], key: EscrowPrivateKey, session_id: uuid.UUID) -> tuple[list[MaskedRun], int]:
    """Open every sealed ``input.masked`` event; returns the runs and the count of unsealed legacy events.

    Raises :class:`EscrowError` naming the frame of the first box that is malformed, sealed to
    another key, out of order, or does not open for its place (session, run, part).
    """
    parts: list[tuple[int, int, int, bytes]] = []  # (run, frame, t_us, plaintext)
    legacy = 0
    last: tuple[int, int] = (0, -1)  # (run, part) of the previous box
    for f in frames:
        ev = f.data
        if f.kind is not FrameKind.EVENT or not isinstance(ev, Event) or ev.type != "input.masked":
            continue
        if "sealed" not in ev.fields:
            legacy += 1  # written before escrow existed: only a byte count
            continue
        run, part, size, sealed, fp = (ev.fields.get(k) for k in ("run", "part", "bytes", "sealed", "escrow"))
        where = f"frame {f.seq}"
        if not (type(run) is int and type(part) is int and type(size) is int and type(sealed) is str):
            raise EscrowError(reason=f"{where}: input.masked event lacks run, part, bytes or sealed")
        if fp != key.public.fingerprint:
            raise EscrowError(reason=f"{where}: sealed to escrow key {fp}, not this key ({key.public.fingerprint})")
        expected = (run, last[1] + 1) if run == last[0] else (last[0] + 1, 0)
        if (run, part) != expected:
            raise EscrowError(reason=f"{where}: masked run {run} part {part} out of order (after run {last[0]})")
        last = (run, part)
        try:
            box = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise EscrowError(reason=f"{where}: sealed box is not valid base64") from None
        try:
            plain = open_sealed(key, box, session_id=session_id, run=run, part=part)
        except EscrowError as exc:
            raise EscrowError(reason=f"{where}: {exc.reason}") from None
        if len(plain) != size:
            raise EscrowError(reason=f"{where}: the box holds {len(plain)} bytes, the event says {size}")
        parts.append((run, f.seq, f.t_us, plain))
    runs = []
    for run, group in itertools.groupby(parts, key=lambda p: p[0]):
        items = list(group)
        runs.append(MaskedRun(run, tuple(p[1] for p in items), items[0][2], b"".join(p[3] for p in items)))
    return runs, legacy


def _load_key(name: str) -> EscrowPrivateKey:
    """``-`` reads the key from stdin, so it need never be written to the bastion's disk."""
    if name == "-":
        try:
            return EscrowPrivateKey.from_text(sys.stdin.read(4096))
        except ValueError as exc:
            raise UsageError(f"--escrow-key -: {exc}") from None
    try:
        return EscrowPrivateKey.load(Path(name))
    except KeyFileError as exc:
        raise UsageError(f"--escrow-key {exc}") from None


def cmd_unseal(args: argparse.Namespace) -> int:
    key = _load_key(args.escrow_key)
    d = data(args)
    d.require()  # unsealing is audited: no audit log, no unsealing
    trusted = _trusted(args)
    ref = _session_ref(args, args.session)
    path = ref.path
    try:
        frames, report = load(path, trusted)
    except SourceError as exc:
        raise UsageError(f"cannot read {args.session}: {exc.reason}") from None
    if report.outcome is Outcome.CORRUPT or report.header is None:
        print(f"zsp: {printable(_describe(report))}", file=sys.stderr)
        raise UsageError("the recording does not verify; nothing was unsealed")
    require_identity(ref, report)
    if report.outcome is Outcome.INCOMPLETE:
        print(f"zsp: {printable(_describe(report))}", file=sys.stderr)
        frames = frames[: report.signed_frames]  # only what a signature covers
    if not frames:
        raise UsageError("no frame of the recording is signed; nothing was unsealed")
    header = frames[0].data
    if not isinstance(header, Header):
        raise UsageError("the recording has no header; nothing was unsealed")
    sid = header.session_id
    svc = d.service()
    event = NewEvent(
        "recording.unsealed",
        "",
        "console",
        "",
        target=header.target,
        login=header.login,
        grant_id=header.grant_id,
        session_id=str(sid),
    )
    try:
        runs, legacy = unseal_frames(frames, key, sid)
    except EscrowError as exc:
        svc.record_admin_event(
            actor(args),
            _with(event, f"unsealing {sid} failed: {exc.reason}", outcome="failure", escrow=key.public.fingerprint),
        )
        raise UsageError(f"cannot unseal {sid}: {exc.reason}") from None
    masked_bytes = sum(len(r.data) for r in runs)
    svc.record_admin_event(
        actor(args),
        _with(
            event,
            f"masked input of session {sid} revealed: {len(runs)} runs, {masked_bytes} bytes",
            escrow=key.public.fingerprint,
            runs=len(runs),
            bytes=masked_bytes,
            recording=str(path),
        ),
    )
    flags = [f.seq for f in frames if isinstance(f.data, Event) and f.data.type == "input.masked.excessive"]
    if args.json:
        emit_json(
            {
                "session_id": str(sid),
                "outcome": report.outcome.value,
                "excessive": bool(flags),
                "unescrowed_events": legacy,
                "runs": [
                    {
                        "run": r.run,
                        "frames": list(r.frames),
                        "t_us": r.t_us,
                        "time": _wall(header, r.t_us),
                        "bytes": len(r.data),
                        "data_b64": base64.b64encode(r.data).decode(),
                        "text": printable(r.data),
                    }
                    for r in runs
                ],
            }
        )
        return 0
    out = io.StringIO()
    who = printable(f"{header.user}->{header.login}@{header.target}")  # header fields are the file's
    out.write(f"session {sid}  {who}  {report.outcome.value}\n")
    out.write(f"{len(runs)} masked run{'' if len(runs) == 1 else 's'}, {masked_bytes} bytes")
    out.write(f"; flagged excessive at frame {flags[0]}\n" if flags else "\n")
    if legacy:
        out.write(f"{legacy} masked events predate escrow (byte counts only; nothing to unseal)\n")
    for r in runs:
        where = f"frame {r.frames[0]}" if len(r.frames) == 1 else f"frames {r.frames[0]}-{r.frames[-1]}"
        out.write(f"run {r.run:<3} {_wall(header, r.t_us)}  {where:<16} {len(r.data):>4} bytes  {printable(r.data)}\n")
    sys.stdout.write(out.getvalue())
    return 0


def _with(event: NewEvent, message: str, outcome: str = "success", **fields: str | int) -> NewEvent:
    return replace(event, message=message, outcome=outcome, fields=dict(fields))


def _wall(header: Header, t_us: int) -> str:
    return datetime.fromtimestamp((header.started_at_us + t_us) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "unseal",
        parents=[common],
        help="reveal a recording's masked input with the escrow private key (audited)",
        description="Verify the recording, open every sealed input.masked event with the escrow private "
        "key, write a recording.unsealed audit event naming you, then print each masked run.",
    )
    p.add_argument("session", metavar="SESSION", help="session id or recording file")
    p.add_argument("--escrow-key", required=True, metavar="FILE", help="escrow private key file, or - for stdin")
    p.add_argument("--signer", action="append", metavar="KEYFILE", help="also trust this signer (as zsp verify)")
    p.add_argument("--json", action="store_true", help="exact bytes (base64) and escaped text, as JSON")
    add_as(p, help="the admin unsealing (audited as that user)")
    p.set_defaults(func=cmd_unseal)
