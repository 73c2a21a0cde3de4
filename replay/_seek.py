"""Seeking: any moment of a recording on screen without replaying it from the start.

A :class:`SeekIndex` holds keyframes: snapshots of the emulated terminal (:meth:`Terminal.dump`)
taken every :data:`KEYFRAME_BYTES` of output and every :data:`KEYFRAME_US` of session time, each
with the frame it follows, its time, the chain head of that frame and the byte offset of the next
frame. To show time *t*, :class:`Seeker` loads the last keyframe at or before *t* and replays the
frames after it (at most about 32 KiB of output plus one frame), reading them straight from that offset.

The index is derived data, never evidence. It is built from frames the verifier proved and a
signature covered (:func:`replay.only_signed`); it is tied to the recording it came from by the
session id, the file's size, the verified chain head and frame counts, and to the emulator by a
fingerprint of its snapshot format; a cache that differs in any of these, or is malformed in any
way, is rebuilt, never trusted. Frames read after a keyframe are chained again from the keyframe's
head (one keyed blake3 each), so a recording rewritten after it was verified stops the seek with
:class:`replay.SourceError` instead of showing the new bytes. Frames after the last good
signature are never part of the index, so a seek never shows them.

On disk the index is one msgpack file (``DATA/cache/seek/<session-id>.seek``), written
atomically (mode 0600); without a writable cache directory it lives in memory only. A cache file
is read only if this user owns it and nobody else may write it: the keyframes' screens are not
proven by anything, so a cache planted by another account could show screens that never were.
(Whoever can write this user's files can do that too; they can also replace the program.)
"""

from __future__ import annotations

import bisect
import os
import tempfile
import uuid
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
from blake3 import blake3

from recorder import FormatViolation, Frame, FrameKind, Header, PublicKey, Resize, decode_body, parse_data

from ._exceptions import ReplayError, SourceError
from ._follow import Located, located_frames
from ._reader import iter_raw
from ._scan import had_pty
from ._signed import Withheld, only_signed
from ._terminal import Screen, Terminal
from ._typed import TypedTracker
from ._verify import VerificationReport

__all__ = [
    "INDEX_VERSION",
    "KEYFRAME_BYTES",
    "KEYFRAME_US",
    "IndexBuilder",
    "Keyframe",
    "Playhead",
    "SeekIndex",
    "Seeker",
    "build_index",
    "load_index",
    "save_index",
]

INDEX_VERSION = 3
KEYFRAME_BYTES = 32 * 1024
"""Output between keyframes: replaying this much costs a few ms even for escape-heavy output
(64 KiB put the p99 of a seek near 50 ms on a loaded machine; 32 KiB halves the replay part)."""
KEYFRAME_US = 10_000_000
"""Session time between keyframes, so that a quiet session is cut into steps too."""
STATE_PER_BYTE = 4
"""A keyframe is taken only once the output since the last one is at least a quarter of that
one's (compressed) state: keyframes hold at most about 4 bytes per byte of output. A 1000x500
screen of random letters and combining marks is 4 MB compressed; with keyframes every 32 KiB
regardless, 3.3 MB of ``ESC[H`` made a 409 MB cache (and as much memory in the player building
it); a small screen's state (a few KiB) never holds a keyframe back."""

MAX_CACHE_BYTES = 1 << 30
"""A cache file larger than this is not read (rebuilt instead)."""
MAX_STATE_BYTES = 64 << 20
"""Largest keyframe state decompressed (a 1000x500 terminal with both buffers fits); more is refused."""
_MAGIC = "zsp-seek"
_KINDS = {int(k): k for k in FrameKind}


def _emulator_tag() -> bytes:
    """Fingerprint of the emulator's snapshot format: a cache made by another emulator is rebuilt."""
    probe = Terminal(9, 3)
    probe.feed(b"ab\x1b[1;31mc\x1b[2;3Hd\xe4\xb8\xad\x1b[?1049he\r\n")
    return blake3(probe.dump()).digest()[:16]


_TAG: bytes | None = None


def emulator_tag() -> bytes:
    global _TAG
    if _TAG is None:
        _TAG = _emulator_tag()
    return _TAG


@dataclass(frozen=True, slots=True)
class Keyframe:
    """The terminal as it was right after frame ``frame``."""

    frame: int
    t_us: int
    offset: int
    """Byte offset of frame ``frame + 1``: where replay resumes."""
    head: bytes
    """Chain head of frame ``frame``: frames read after it must chain from it."""
    state: bytes
    """:meth:`Terminal.dump` of the screen, zlib-compressed (mostly blank cells: about 5x smaller)."""
    typed: Any
    """:meth:`TypedTracker.dump` (what was last typed)."""


@dataclass(slots=True)
class SeekIndex:
    """Keyframes of one recording and what ties them to it. Grows while a live recording is followed."""

    session_id: str
    size: int
    """File size the index was made from (0 while following a live recording)."""
    head: bytes
    """Verified chain head of the last intact frame (the recording's final head when VALID)."""
    frames: int
    """Intact frames in the recording (the verification report's ``frames``)."""
    signed: int
    """The verification report's ``signed_frames``."""
    shown: int
    """Frames ``0 .. shown-1`` may be shown (signed, and released by :func:`replay.only_signed`):
    the index covers exactly these."""
    duration_us: int
    """Time of the last frame shown."""
    keyframes: list[Keyframe] = field(default_factory=list)
    onlcr: bool = False
    """The session had no terminal (an exec without a PTY): a newline is shown as CR LF, as the
    operator's terminal showed it (ONLCR); set from the header when the index is built."""
    _times: list[int] = field(default_factory=list)
    _seqs: list[int] = field(default_factory=list)

    def add(self, kf: Keyframe) -> None:
        self.keyframes.append(kf)
        self._times.append(kf.t_us)
        self._seqs.append(kf.frame)

    def before_time(self, t_us: int) -> int:
        """Position in :attr:`keyframes` of the last keyframe at or before ``t_us`` (0 if none is)."""
        if not self.keyframes:
            raise ReplayError("nothing of this recording is signed: nothing to show")
        return max(bisect.bisect_right(self._times, t_us) - 1, 0)

    def before_frame(self, seq: int) -> int:
        """Position of the last keyframe at or before frame ``seq``."""
        if not self.keyframes:
            raise ReplayError("nothing of this recording is signed: nothing to show")
        return max(bisect.bisect_right(self._seqs, seq) - 1, 0)

    def matches(self, report: VerificationReport, size: int) -> bool:
        """Whether this index was made from exactly the recording ``report`` describes."""
        return (
            report.header is not None
            and self.session_id == str(report.header.session_id)
            and self.size == size
            and report.head is not None
            and self.head == report.head
            and self.frames == report.frames
            and self.signed == report.signed_frames
        )


class Playhead:
    """A terminal at a point of the recording, able to move forward frame by frame (mutable)."""

    __slots__ = ("frame", "head", "offset", "onlcr", "t_us", "terminal", "typed")

    def __init__(self, terminal: Terminal, typed: TypedTracker, kf: Keyframe, *, onlcr: bool = False) -> None:
        self.terminal = terminal
        self.onlcr = onlcr
        self.typed = typed
        self.frame = kf.frame
        """The last frame applied."""
        self.t_us = kf.t_us
        self.offset = kf.offset
        self.head = kf.head

    def apply(self, frame: Frame) -> None:
        """Show ``frame`` on the terminal (output, resize) and note input; other kinds change nothing."""
        kind = frame.kind
        data = frame.data
        if kind is FrameKind.OUTPUT and isinstance(data, bytes):
            self.feed(data)
        elif kind is FrameKind.RESIZE and isinstance(data, Resize):
            if data.cols and data.rows:
                self.terminal.resize(data.cols, data.rows)
        self.passed(frame)

    def feed(self, data: bytes) -> None:
        """Show output bytes: a whole output frame's, or a part of one (a player feeding a costly
        frame in slices calls :meth:`passed` once the last is in)."""
        self.terminal.feed(data.replace(b"\n", b"\r\n") if self.onlcr else data)
        # Lines scrolled off are kept for whoever takes them (the search indexer); a player
        # does not, and they would pile up in memory and in every keyframe.
        self.terminal.take_lines()

    def passed(self, frame: Frame) -> None:
        """Move past ``frame`` without touching the terminal: note input, frame and time. For a
        terminal someone else applied the frame to (:meth:`IndexBuilder.add` with ``shown``)."""
        if frame.kind is not FrameKind.CHECKPOINT:
            self.typed.feed(frame)
        self.frame = frame.seq
        self.t_us = frame.t_us


def initial_terminal(header: Header) -> Terminal:
    """The terminal a session starts with: the header's size (80x24 if it had none)."""
    return Terminal(header.cols or 80, header.rows or 24)


class IndexBuilder:
    """Makes keyframes from signed, located frames given in order (a whole file or a live tail).

    It emulates the frames itself, or (``shown`` given to :meth:`add`) takes its keyframes from a
    terminal the caller has already applied each frame to: the search indexer's scanner
    (:func:`replay.index_recording`), so one emulation pass makes both the search rows and the
    seek index. That terminal must show what a player shows; where it would not (a resize to a
    zero size, which a player ignores and the scanner does not), :attr:`diverged` is set and no
    keyframe is added from then on: the index is incomplete and must not be used.
    """

    def __init__(self, index: SeekIndex, *, every_bytes: int = KEYFRAME_BYTES, every_us: int = KEYFRAME_US) -> None:
        self.index = index
        self.every_bytes = every_bytes
        self.every_us = every_us
        self._head: Playhead | None = None
        self._shared: Terminal | None = None
        self._since_bytes = 0
        self._since_t = 0
        self._last_state = 0
        self.diverged = False
        """The caller's terminal stopped showing what a player would: this index is incomplete."""

    def add(self, item: Located, shown: Terminal | None = None) -> None:
        """Take ``item`` into the index (keyframes as they fall due).

        ``shown``: the terminal the caller has just applied this frame to (the same one for every
        frame from the header on, or None for every frame): the builder then does not emulate the
        frame again, only notes it and dumps that terminal for its keyframes."""
        if self.diverged:
            return
        frame = item.frame
        if frame.kind is FrameKind.HEADER:
            if not isinstance(frame.data, Header):
                raise ReplayError("frame 0 is not a header")
            term = initial_terminal(frame.data) if shown is None else shown
            kf = Keyframe(0, frame.t_us, item.end, item.head, b"", None)
            self.index.onlcr = not had_pty(frame.data)
            self._shared = shown
            self._head = Playhead(term, TypedTracker(), kf, onlcr=self.index.onlcr)
            self._keyframe(item)
            return
        ph = self._head
        if ph is None:
            raise ReplayError("frames before the header")
        if shown is not self._shared:
            raise ReplayError("keyframes asked of another terminal than the header's")
        ph.offset = item.end
        ph.head = item.head
        if frame.kind is FrameKind.CHECKPOINT:
            # only_signed releases a checkpoint after the frames it signs: they may be shown now.
            self.index.shown = frame.seq
            return
        if shown is None:
            ph.apply(frame)
        else:
            data = frame.data
            if frame.kind is FrameKind.RESIZE and isinstance(data, Resize) and not (data.cols and data.rows):
                self.diverged = True  # Playhead.apply ignores this resize; the caller's terminal did not
                return
            ph.passed(frame)
        self.index.duration_us = frame.t_us
        if isinstance(frame.data, bytes):
            self._since_bytes += len(frame.data)
        if (
            self._since_bytes >= self.every_bytes or frame.t_us - self._since_t >= self.every_us
        ) and self._since_bytes * STATE_PER_BYTE >= self._last_state:
            self._keyframe(item)

    def _keyframe(self, item: Located) -> None:
        ph = self._head
        if ph is None:  # add() sets it before any keyframe
            raise ReplayError("no terminal yet")
        frame = item.frame
        state = zlib.compress(ph.terminal.dump(), 1)
        self._last_state = len(state)
        t = max(frame.t_us, self._since_t)  # never backwards, even for a --legacy-order recording
        self.index.add(Keyframe(frame.seq, t, item.end, item.head, state, ph.typed.dump()))
        self._since_bytes = 0
        self._since_t = t


def signed_located(items: Iterable[Located]) -> Generator[Located, None, Withheld]:
    """Located frames that :func:`replay.only_signed` releases, in order, with their places."""
    places: dict[int, Located] = {}

    def frames() -> Iterator[Frame]:
        for item in items:
            places[item.frame.seq] = item
            yield item.frame

    gen = only_signed(frames())
    while True:
        try:
            frame = next(gen)
        except StopIteration as end:
            withheld: Withheld = end.value
            return withheld
        yield places.pop(frame.seq)


def build_index(
    path: Path | str,
    trusted: Iterable[PublicKey],
    report: VerificationReport,
    *,
    legacy_order: bool = False,
    every_bytes: int = KEYFRAME_BYTES,
    every_us: int = KEYFRAME_US,
) -> SeekIndex:
    """Read and verify the recording again, emulating its signed frames; keyframes as it goes.

    ``report`` is the verification done when the recording was opened: the second pass must reach
    the same head and counts, or the file changed in between (:class:`replay.SourceError`).
    """
    name = str(path)
    if report.header is None:
        raise ReplayError(f"{name}: no verified header, nothing to index")
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    index = SeekIndex(
        str(report.header.session_id), size, report.head or b"", report.frames, report.signed_frames, 0, 0
    )
    builder = IndexBuilder(index, every_bytes=every_bytes, every_us=every_us)
    gen = located_frames(path, trusted, legacy_order=legacy_order)
    again: VerificationReport | None = None

    def items() -> Iterator[Located]:
        nonlocal again
        again = yield from gen

    released = signed_located(items())
    while True:
        try:
            builder.add(next(released))
        except StopIteration as end:
            withheld: Withheld = end.value
            break
    complete = withheld.overflow or index.shown == report.signed_frames
    if again is None or again.head != report.head or again.frames != report.frames or not complete:
        raise SourceError(source=name, reason="the recording changed after it was verified")
    return index


# --- the cache file ------------------------------------------------------------------------------


def save_index(index: SeekIndex, path: Path) -> bool:
    """Write ``index`` to ``path`` atomically; False (and nothing written) if the directory is not writable."""
    doc = {
        "format": _MAGIC,
        "version": INDEX_VERSION,
        "emulator": emulator_tag(),
        "session_id": index.session_id,
        "size": index.size,
        "head": index.head,
        "frames": index.frames,
        "signed": index.signed,
        "shown": index.shown,
        "duration_us": index.duration_us,
        "onlcr": index.onlcr,
        "keyframes": [[k.frame, k.t_us, k.offset, k.head, k.state, k.typed] for k in index.keyframes],
    }
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # screens of sessions: private
        fd, tmp = tempfile.mkstemp(prefix=".seek-", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgpack.packb(doc, use_bin_type=True))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # nothing more to clean up: the directory refused us
        return False
    return True


def _int(v: object, lo: int = 0, hi: int = 1 << 63) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError("not an integer in range")
    return v


def load_index(path: Path) -> SeekIndex | None:
    """The index stored at ``path``, or None if it is missing, unreadable, malformed in any way, not
    owned by this user or writable by others."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_CACHE_BYTES or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                # Someone else's file, or one others may write: they could plant screens in it.
                return None
            raw = f.read()
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        return _parse_index(doc)
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException, RecursionError):
        return None


def _parse_index(doc: object) -> SeekIndex:
    if not isinstance(doc, dict) or doc.get("format") != _MAGIC or doc.get("version") != INDEX_VERSION:
        raise ValueError("not a seek index of this version")
    if doc.get("emulator") != emulator_tag():
        raise ValueError("made by another emulator")
    sid = doc["session_id"]
    if not isinstance(sid, str):
        raise ValueError("session id")
    uuid.UUID(sid)
    head = doc["head"]
    if not isinstance(head, bytes) or len(head) != 32:
        raise ValueError("head")
    index = SeekIndex(
        sid,
        _int(doc["size"]),
        head,
        _int(doc["frames"]),
        _int(doc["signed"]),
        _int(doc["shown"]),
        _int(doc["duration_us"]),
    )
    onlcr = doc["onlcr"]
    if not isinstance(onlcr, bool):
        raise ValueError("onlcr")
    index.onlcr = onlcr
    kfs = doc["keyframes"]
    if not isinstance(kfs, list) or not kfs:
        raise ValueError("keyframes")
    last_seq, last_t, last_off = -1, 0, 0
    for k in kfs:
        if not isinstance(k, list) or len(k) != 6:
            raise ValueError("keyframe")
        seq, t, off = _int(k[0]), _int(k[1]), _int(k[2], 8, index.size)
        kh, state = k[3], k[4]
        if seq <= last_seq or t < last_t or off <= last_off or seq >= max(index.shown, 1):
            raise ValueError("keyframes out of order")
        if not isinstance(kh, bytes) or len(kh) != 32 or not isinstance(state, bytes):
            raise ValueError("keyframe fields")
        TypedTracker.load(k[5])  # checked now, so a seek never meets a bad one
        index.add(Keyframe(seq, t, off, kh, state, k[5]))
        last_seq, last_t, last_off = seq, t, off
    if index.keyframes[0].frame != 0:
        raise ValueError("first keyframe is not the header")
    return index


def _inflate(state: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(state, MAX_STATE_BYTES)
    if d.unconsumed_tail or not d.eof:
        raise ValueError("keyframe state is too large or truncated")
    return out


# --- seeking -------------------------------------------------------------------------------------


class Seeker:
    """Screens at any time or frame of one verified recording, through its :class:`SeekIndex`.

    ``index`` may grow while the Seeker is used (a live recording followed by an IndexBuilder):
    only frames below ``index.shown`` are ever read.
    """

    def __init__(self, path: Path | str, index: SeekIndex) -> None:
        self.path = Path(path)
        self.index = index

    @classmethod
    def open(
        cls,
        path: Path | str,
        trusted: Iterable[PublicKey],
        report: VerificationReport,
        *,
        cache: Path | None = None,
        legacy_order: bool = False,
        every_bytes: int = KEYFRAME_BYTES,
        every_us: int = KEYFRAME_US,
    ) -> Seeker:
        """A Seeker for the verified recording at ``path``: its index from ``cache`` if that
        matches ``report`` and this file exactly, else built now (and saved to ``cache``)."""
        name = str(path)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
        index = load_index(cache) if cache is not None else None
        if index is None or not index.matches(report, size):
            index = build_index(
                path, trusted, report, legacy_order=legacy_order, every_bytes=every_bytes, every_us=every_us
            )
            if cache is not None:
                save_index(index, cache)
        return cls(path, index)

    @property
    def duration_us(self) -> int:
        return self.index.duration_us

    def _start(self, i: int) -> Playhead:
        """A playhead at keyframe ``i``, or at an earlier one if its state does not load (a damaged
        cache, or a snapshot the emulator refuses): slower, never wrong."""
        while True:
            kf = self.index.keyframes[i]
            try:
                state = Terminal.load(_inflate(kf.state))
                return Playhead(state, TypedTracker.load(kf.typed), kf, onlcr=self.index.onlcr)
            except (ReplayError, ValueError, zlib.error) as exc:
                if i == 0:
                    raise ReplayError(f"the first keyframe does not load: {exc}") from None
                i -= 1

    def playhead_at(self, t_us: int) -> Playhead:
        """The terminal after every shown frame with time <= ``t_us`` (the header's state before any)."""
        ph = self._start(self.index.before_time(t_us))
        for frame, end, head in self.frames_after(ph):
            if frame.t_us > t_us:
                break
            ph.apply(frame)
            ph.offset, ph.head = end, head
        return ph

    def playhead_at_frame(self, seq: int) -> Playhead:
        """The terminal after frame ``seq`` (clamped to the frames shown)."""
        seq = min(seq, self.index.shown - 1)
        ph = self._start(self.index.before_frame(seq))
        for frame, end, head in self.frames_after(ph):
            if frame.seq > seq:
                break
            ph.apply(frame)
            ph.offset, ph.head = end, head
        return ph

    def screen_at(self, t_us: int) -> tuple[Screen, int]:
        """The screen at time ``t_us`` and the last frame applied."""
        ph = self.playhead_at(t_us)
        return ph.terminal.screen(), ph.frame

    def frame_at(self, seq: int) -> tuple[Screen, int]:
        ph = self.playhead_at_frame(seq)
        return ph.terminal.screen(), ph.frame

    def frames_after(self, ph: Playhead) -> Iterator[tuple[Frame, int, bytes]]:
        """Frames after the playhead's, up to the last shown one: ``(frame, end offset, head)``.

        Each is chained again from the previous head; a frame that does not chain, or is not the
        one expected, raises :class:`replay.SourceError` (the file changed after verification).
        """
        name = str(self.path)
        seq = ph.frame + 1
        if seq >= self.index.shown:
            return
        try:
            f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
        changed = SourceError(source=name, reason="the recording changed after it was verified")
        with f:
            f.seek(ph.offset)
            head = ph.head
            for _index, offset, body, stored in iter_raw(f, ph.offset):
                if seq >= self.index.shown:
                    return
                if blake3(body, key=head).digest() != stored:
                    raise changed
                try:
                    kind, fseq, t, data = decode_body(body)
                    if fseq != seq:
                        raise changed
                    value = data if type(data) is bytes else parse_data(kind, data)
                except FormatViolation:
                    raise changed from None
                head = stored
                yield Frame(seq, _KINDS[kind], t, value), offset + 4 + len(body) + len(stored), stored
                seq += 1
            if seq < self.index.shown:
                raise changed
