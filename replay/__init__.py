"""Reading and verifying zsp recordings.

``verify_frames`` streams a recording and yields frames once they are proven part of the chain;
its return value is the :class:`VerificationReport`. ``verify`` does the same for a whole file.
``only_signed`` holds frames back until a verified signature covers them (what a player shows).
``scan`` turns verified frames into lines of output and typed commands; ``SqliteSearchIndex``
(behind the ``SearchIndex`` protocol) searches them across sessions, filled by ``index_recording``.
``RecordingStorage`` (``LocalDirectory`` today) is where recordings are found and opened by
session id. ``printable`` is how every zsp tool shows untrusted text to a person (control
characters escaped).
``Terminal`` turns output bytes into ``Screen`` values (the replay terminal emulator); ``Seeker``
finds the screen at any moment from keyframes (``SeekIndex``, derived data, never evidence);
``Renderer`` draws a ``Screen`` on a real terminal with nothing but cursor moves, SGR and text;
``follow`` reads a recording that is still growing. ``files`` lists the files a session
transferred (SFTP, scp) as :class:`TransferredFile` values, their kept content checked by hash.
``asciicast`` and ``transcript`` turn verified frames and an :class:`ExportMeta` into asciinema
files (v2, v3) and plain-text transcripts for ``zsp export``.
Like :mod:`recorder`, this package never imports textual or asyncssh.
"""

from __future__ import annotations

from ._asciicast import CAST_VERSIONS, asciicast, command_label
from ._bundle import BundleProblem, BundleReport, is_bundle, verify_bundle
from ._bundle_transfers import (
    FILE_EVENTS,
    TRANSFER_CONTENT_LIMIT,
    TRANSFER_KEYS,
    transfer_content_name,
    transfer_entry,
    transfer_sha256sums,
)
from ._exceptions import ContentMismatch, QueryError, ReplayError, SearchIndexError, SourceError
from ._export_meta import ExportMeta, export_meta
from ._file_ops import CHANGE_OPS, FileOp, file_changes, file_ops
from ._files import PROTOCOL_EVENTS, SpooledFile, TransferredFile, files, spool_files
from ._follow import GrowingFile, Located, follow, located_frames
from ._indexer import index_recording, rows_of
from ._printable import printable
from ._reader import Preamble, Tail, TailKind, iter_raw, read_preamble
from ._redact import (
    MAX_REDACT_BYTES,
    REPLACEMENT,
    Redaction,
    RedactionError,
    RedactionResult,
    Writable,
    redact_recording,
)
from ._render import Renderer, safe_text, sgr
from ._scan import Command, Scanner, TextLine, keys_text, scan
from ._search import (
    Hit,
    HitKind,
    IndexedSession,
    Query,
    Row,
    SearchIndex,
    SqliteSearchIndex,
    parse_query,
)
from ._seek import (
    IndexBuilder,
    Keyframe,
    Playhead,
    Seeker,
    SeekIndex,
    build_index,
    load_index,
    save_index,
    signed_located,
)
from ._signed import MAX_PENDING_BYTES, Withheld, only_signed
from ._storage import SUFFIX, LocalDirectory, RecordingStorage, StoredRecording
from ._style import DEFAULT_STYLE, Style
from ._terminal import MAX_COLS, MAX_ROWS, Screen, Terminal, WorkBudget
from ._timing import Slicer, at_speed, cap_idle, output_steps
from ._transcript import transcript
from ._typed import TypedTracker
from ._verify import Outcome, Problem, RedactedFrame, VerificationReport, load, verify, verify_frames

__all__ = [
    "CAST_VERSIONS",
    "CHANGE_OPS",
    "DEFAULT_STYLE",
    "FILE_EVENTS",
    "MAX_COLS",
    "MAX_PENDING_BYTES",
    "MAX_REDACT_BYTES",
    "MAX_ROWS",
    "PROTOCOL_EVENTS",
    "REPLACEMENT",
    "SUFFIX",
    "TRANSFER_CONTENT_LIMIT",
    "TRANSFER_KEYS",
    "BundleProblem",
    "BundleReport",
    "Command",
    "ContentMismatch",
    "ExportMeta",
    "FileOp",
    "GrowingFile",
    "Hit",
    "HitKind",
    "IndexBuilder",
    "IndexedSession",
    "Keyframe",
    "LocalDirectory",
    "Located",
    "Outcome",
    "Playhead",
    "Preamble",
    "Problem",
    "Query",
    "QueryError",
    "RecordingStorage",
    "RedactedFrame",
    "Redaction",
    "RedactionError",
    "RedactionResult",
    "Renderer",
    "ReplayError",
    "Row",
    "Scanner",
    "Screen",
    "SearchIndex",
    "SearchIndexError",
    "SeekIndex",
    "Seeker",
    "Slicer",
    "SourceError",
    "SpooledFile",
    "SqliteSearchIndex",
    "StoredRecording",
    "Style",
    "Tail",
    "TailKind",
    "Terminal",
    "TextLine",
    "TransferredFile",
    "TypedTracker",
    "VerificationReport",
    "Withheld",
    "WorkBudget",
    "Writable",
    "asciicast",
    "at_speed",
    "build_index",
    "cap_idle",
    "command_label",
    "export_meta",
    "file_changes",
    "file_ops",
    "files",
    "follow",
    "index_recording",
    "is_bundle",
    "iter_raw",
    "keys_text",
    "load",
    "load_index",
    "located_frames",
    "only_signed",
    "output_steps",
    "parse_query",
    "printable",
    "read_preamble",
    "redact_recording",
    "rows_of",
    "safe_text",
    "save_index",
    "scan",
    "sgr",
    "signed_located",
    "spool_files",
    "transcript",
    "transfer_content_name",
    "transfer_entry",
    "transfer_sha256sums",
    "verify",
    "verify_bundle",
    "verify_frames",
]
