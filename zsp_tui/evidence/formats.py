"""asciicast v2/v3 and text transcripts of exported sessions, each with an SSHSIG ``.sig``.

For each selected session: verify the recording (a CORRUPT one is refused, naming the session
and the problem; an INCOMPLETE one is exported and says so), apply ``--redact`` (a redacted copy
of the recording, re-verified with its redactions listed), then write the file from the frames a
verified signature covers, as :func:`replay.asciicast` / :func:`replay.transcript` render them,
to a temp file beside its final name, and sign it (``.sig``, namespace ``evidence@zsp``). Nothing
is in place until ``zsp export`` has audited every file (:mod:`.run`).

The recording is read twice: a verification pass first (the file's header needs the verdict,
and a CORRUPT recording must not leave a half-written file), then the rendering pass, which
verifies again as it reads (a file changed in between is refused) and exports no frame past the
last signature the first pass saw (a live session's newer frames wait for the next export).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from recorder import Frame, PublicKey
from replay import (
    ExportMeta,
    Outcome,
    SourceError,
    VerificationReport,
    asciicast,
    export_meta,
    only_signed,
    printable,
    transcript,
    verify,
    verify_frames,
)

from ..exceptions import ExportRefused, UsageError
from .files import temp_beside
from .job import ExportJob, Prepared, SelectedSession
from .redaction import recording_texts, redact, refuse_values
from .sign import sign_beside

__all__ = ["SUFFIXES", "prepare"]

SUFFIXES = {"asciicast": ".cast", "asciicast3": ".cast", "text": ".txt"}


def prepare(job: ExportJob) -> list[Prepared]:
    """One file per session (temp files beside their final names), each with its ``.sig``."""
    if job.format not in SUFFIXES:
        raise UsageError(f"--format {job.format}: not an asciicast or text format")
    trusted = job.data.trusted_keys()
    prepared: list[Prepared] = []
    names: set[Path] = set()
    try:
        for sel in job.sessions:
            prepared.append(_one(job, sel, trusted, names))
    except BaseException:
        for p in prepared:
            p.discard()
        raise
    return prepared


def _label(sel: SelectedSession) -> str:
    return sel.session_id or str(sel.path)


def _final(job: ExportJob, sid: str, names: set[Path]) -> Path | None:
    """Where the file goes: ``-o FILE`` for one session, ``DIR/<session_id>.cast|.txt`` for several."""
    if job.output is None:
        return None
    if not job.output.is_dir():  # one session, named file (several need a directory: the CLI checks)
        final = job.output
    else:
        final = job.output / f"{sid}{SUFFIXES[job.format]}"
    if final in names:
        raise UsageError(f"session {sid} is selected twice (by id and by path); name it once")
    for path in (final, final.with_name(final.name + ".sig")):  # the signature is output too
        if (path.exists() or path.is_symlink()) and not job.force:
            raise UsageError(f"{printable(str(path))} exists; pass --force to replace it")
    names.add(final)
    return final


def _refuse_corrupt(sel: SelectedSession, report: VerificationReport) -> None:
    if report.outcome is Outcome.CORRUPT:
        problem = report.problem.value if report.problem else "corrupt"
        where = "" if report.bad_frame is None else f" at frame {report.bad_frame}"
        name = _label(sel)
        if sel.session_id is None and report.header is not None:  # named by path: say which session it holds
            name = f"{report.header.session_id} ({sel.path})"
        raise ExportRefused(session_id=name, reason=f"the recording is CORRUPT ({problem}{where}: {report.detail})")
    if report.header is None:
        raise ExportRefused(session_id=_label(sel), reason="the recording has no header (empty file)")
    if not report.signed_frames:
        raise ExportRefused(session_id=_label(sel), reason="no frame of the recording is signed yet: nothing to export")
    if sel.session_id is not None and str(report.header.session_id) != sel.session_id:
        raise ExportRefused(
            session_id=_label(sel),
            reason=f"the file {sel.path} holds session {report.header.session_id}, not this one (wrong-session)",
        )


def _meta(sel: SelectedSession, report: VerificationReport, redacted_frames: int) -> ExportMeta:
    rec, grant = sel.record, sel.grant
    return export_meta(
        report,
        reason=grant.reason if grant is not None else None,
        approved_by=grant.approvals if grant is not None else (),
        ended_at=rec.ended_at if rec is not None else None,
        exit_status=rec.exit_status if rec is not None else None,
        end_reason=rec.end_reason if rec is not None else None,
        redacted_frames=redacted_frames,
    )


def _capture(gen: Generator[Frame, None, VerificationReport], out: list[VerificationReport]) -> Iterator[Frame]:
    out.append((yield from gen))


def _render(job: ExportJob, frames: Iterable[Frame], meta: ExportMeta) -> Iterator[str]:
    if job.format == "text":
        return transcript(frames, meta)
    version = 3 if job.format == "asciicast3" else 2
    return asciicast(frames, meta, version=version, include_input=job.include_input)


def _one(job: ExportJob, sel: SelectedSession, trusted: list[PublicKey], names: set[Path]) -> Prepared:
    with tempfile.TemporaryFile() as spool:
        try:
            source: BinaryIO = open(sel.path, "rb")
        except OSError as exc:
            raise ExportRefused(session_id=_label(sel), reason=f"cannot read {sel.path}: {exc.strerror}") from None
        with source:
            redacted: dict[int, Any] | None = None
            changed = 0
            if job.patterns:
                report, redacted, changed = _redact(sel, source, spool, trusted, job)
                reader: BinaryIO = spool
            else:
                try:
                    report = verify(source, trusted)
                except SourceError as exc:
                    raise ExportRefused(session_id=_label(sel), reason=exc.reason) from None
                reader = source
            _refuse_corrupt(sel, report)
            if report.header is None:  # _refuse_corrupt says so; this tells mypy
                raise ExportRefused(session_id=_label(sel), reason="no header")
            sid = str(report.header.session_id)
            meta = _meta(sel, report, len(redacted or ()))
            final = _final(job, sid, names)
            if job.patterns:  # what the rendering quotes from the header, events and store, unredactable
                reader.seek(0)
                texts = itertools.chain(recording_texts(reader), _strings_of(meta))
                refuse_values(job.patterns, texts, f"session {sid}'s metadata (header, events, grant)")
            reader.seek(0)
            second: list[VerificationReport] = []
            gen = _verify_again(reader, trusted, str(sel.path), redacted)
            limit = report.signed_frames
            frames = (f for f in only_signed(_capture(gen, second)) if f.seq < limit)
            temp = temp_beside(final, SUFFIXES[job.format])
            try:
                digest = _write(temp, _render(job, frames, meta))
                if not second or second[0].outcome is Outcome.CORRUPT:
                    detail = second[0].detail if second else "not read to its end"
                    raise ExportRefused(
                        session_id=sid, reason=f"the recording changed while it was exported ({detail})"
                    )
                signature = None if final is None else sign_beside(job, temp)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
    return Prepared(
        temp=temp,
        final=final,
        sha256=digest,
        session_ids=(sid,),
        signature=signature,
        redacted_frames=len(redacted or ()),
        redacted_bytes=changed,
    )


def _verify_again(
    reader: BinaryIO, trusted: list[PublicKey], source: str, redacted: dict[int, Any] | None
) -> Generator[Frame, None, VerificationReport]:
    if redacted is None:
        return verify_frames(reader, trusted, source=source)
    return verify_frames(reader, trusted, source=source, redacted=redacted)


def _redact(
    sel: SelectedSession, source: BinaryIO, spool: IO[bytes], trusted: list[PublicKey], job: ExportJob
) -> tuple[VerificationReport, dict[int, Any], int]:
    """A redacted copy of the recording in ``spool``; the original's report and the redacted
    frames as ``verify_frames(redacted=...)`` takes them."""
    size = os.fstat(source.fileno()).st_size
    result = redact(source, spool, job.patterns, trusted, size=size, session=_label(sel))
    spool.flush()
    return result.report, dict(result.redacted), sum(r.redacted_bytes for r in result.redactions)


def _write(temp: Path, lines: Iterable[str]) -> str:
    """Write the lines (UTF-8) to ``temp``, fsync it, and return its sha256."""
    h = hashlib.sha256()
    with open(temp, "wb") as f:
        buf: list[bytes] = []
        size = 0
        for line in lines:
            b = line.encode("utf-8")
            buf.append(b)
            size += len(b)
            if size >= 1 << 20:
                chunk = b"".join(buf)
                h.update(chunk)
                f.write(chunk)
                buf, size = [], 0
        chunk = b"".join(buf)
        h.update(chunk)
        f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def _strings_of(meta: ExportMeta) -> Iterator[str]:
    for value in dataclasses.asdict(meta).values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, str))
