"""One session's rules over its bytes: the same code live in the bastion and in ``zsp rules test``.

The bastion calls :meth:`SessionRules.output` for every output chunk and :meth:`SessionRules.input`
for every keystroke, so the hot paths are shaped by measurement (``benchmarks/bench_rules.py``):

* Output is not emulated as it passes. It is appended to a bounded window (the last
  :data:`MAX_WINDOW` bytes) that is fed to a :class:`replay.Scanner` only when the screen is
  needed: at the next input, resize, masked line, :meth:`~SessionRules.gate` or
  :meth:`~SessionRules.finish`. The emulator costs far more than the relay; bulk output must not
  pay for it. So command extraction sees at most the last 64 KiB of output between two keystrokes.
  And the emulator's work is bounded per session (:data:`SCAN_BURST`, :data:`SCAN_RATE`): output
  that would cost more (hostile sequences that rebuild a whole screen per few bytes) is skipped
  and counted, so that one session cannot stall the event loop every session shares.
* Output rules run on lines: bytes up to ``\\n``, a line longer than :data:`MAX_LINE` bytes cut
  into pieces of that size (each a line of its own), escape sequences and control characters
  removed, decoded as UTF-8 (errors replaced). A chunk's complete lines are cleaned in one go
  (``bytes.translate``, one ``re.sub`` when it holds an ESC, one ``decode``) and each output rule's
  regex, compiled with ``re.MULTILINE``, searches them all at once; only a line it finds is
  matched on its own. A chunk with no match costs a few C-speed passes and no Python per line.
* A rule whose users, targets or logins do not fit the session is dropped at the start; days,
  hours and ``min_duration`` are checked at each match (``started_at + t_us``).

Command rules that hold or terminate (``ENFORCING``) are decided only at :meth:`gate`, before the
Enter reaches the target; the others fire on the command lines the scanner resolves (text as the
screen showed it, and what the keys spell). Nothing fires twice for one Enter.

File rules are decided per SFTP request, before the relay sends it on (:meth:`SessionRules.file_verdict`);
offline, the ``sftp.op`` event the relay recorded for the request stands for it.

The same frames in the same order give the same matches: offline (``zsp rules test``) a recording's
frames are replayed through :meth:`SessionRules.gate` and :meth:`SessionRules.feed` exactly as
``docs/RULES.md`` describes.
"""

from __future__ import annotations

import importlib
import re
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from recorder import Event, Frame, FrameKind, Header, Resize
from replay import Command, Scanner, WorkBudget, keys_text

from ..clock import format_duration
from ..models import LOCAL_TARGET, Target
from ..policy import Policy, principal_matches
from .files import file_request, file_text
from .model import Action, FileOp, FileVerdict, Gate, Match, Rule, RuleSet, SessionFacts, Trigger

__all__ = [
    "MAX_LINE",
    "MAX_MATCHES",
    "MAX_TEXT",
    "MAX_WINDOW",
    "SessionRules",
    "facts_of_recording",
    "loaded_fields",
    "run_frames",
]

MAX_WINDOW = 64 * 1024
SCAN_BURST = 4_000_000
"""Cells of terminal-emulator work (``replay.Terminal.work``: rows rebuilt by erases, scrolls,
DECALN, ...) one session may spend at once to bring its screen up to date: about 45 ms here. A few
bytes can ask for a million cells (DECALN then ED 2 on 1000x500), and the screen is brought up
to date on the bastion's event loop, which every session shares."""
SCAN_RATE = 1_000_000
"""Cells of emulator work per second of session time the credit grows by (about 1% of a core).
Output over the credit is not emulated (counted in :attr:`SessionRules.skipped`): the screen
misses it, command lines are still matched on what their keys spell. Time is the session's
(frames' ``t_us``), so ``zsp rules test`` skips what the bastion skipped (up to the
microseconds between the bastion's clock and the recorded times, at the budget's edge)."""
"""Output kept for the scanner between two points where the screen is read (the last bytes)."""
MAX_LINE = 4096
"""Longest line of output matched (bytes); a longer one is cut into pieces of this size."""
MAX_MATCHES = 20
"""Matches reported per rule per session (enforcing ones are never held back); the rest are
counted in :attr:`SessionRules.suppressed`."""
MAX_TEXT = 1024
"""Longest :attr:`Match.text` (characters)."""

_ENTER = re.compile(rb"[\r\n]")
_ESCAPES = re.compile(
    rb"\x1b(?:"
    rb"\[[0-?]{0,256}[ -/]{0,16}[@-~]"  # CSI: colours, cursor movement, erasing
    rb"|[\]PX^_][^\x07\x1b\n\r]{0,4096}(?:\x07|\x1b\\)?"  # OSC (titles, links), DCS, SOS, PM, APC
    rb"|[ -/]{0,16}[0-~]"  # two-byte escapes
    rb")?"  # a lone ESC goes too
)
"""Escape sequences, bounded; none crosses a line break, so cleaning lines one by one or together
gives the same text."""
_DELETE = b"\x00\x7f"
"""Bytes removed from output lines besides escape sequences: NUL and DEL (padding a terminal never
shows). Other control characters stay in the text (shown escaped); CR ends a line as LF does."""
_BLOCK = 2048
"""Every aligned block of this many bytes holding a newline proves no line is longer than
:data:`MAX_LINE` (a longer line would cover a whole block)."""
_DURATION_RETRY = 1_000_000
"""How long a due duration rule whose days or hours do not hold waits before it is tried again (µs)."""
_OUTPUT = FrameKind.OUTPUT
_INPUT = FrameKind.INPUT


def _clean(raw: bytes) -> str:
    """Output bytes as text, line structure kept: escape sequences, NUL and DEL removed, CR a line
    break (``progress 10%\\rprogress 20%`` is two lines, as the terminal showed them in turn)."""
    if b"\x1b" in raw:
        raw = _ESCAPES.sub(b"", raw)
    if b"\x00" in raw or b"\x7f" in raw:
        raw = raw.translate(None, _DELETE)
    return raw.replace(b"\r", b"\n").decode("utf-8", "replace")


def _junk(raw: bytes, end: int) -> bool:
    """Whether cleaning removes anything from ``raw[:end]`` (three memchr scans, no copy)."""
    return raw.find(b"\x1b", 0, end) >= 0 or raw.find(b"\x00", 0, end) >= 0 or raw.find(b"\x7f", 0, end) >= 0


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class _Output:
    """An output rule, with its pattern compiled for searching many lines at once, and its sieve."""

    __slots__ = ("literal", "many", "rule", "sieve")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        pattern = rule.output
        if pattern is None:  # pragma: no cover - only output rules are wrapped
            raise ValueError("not an output rule")
        self.many = re.compile(pattern.pattern, pattern.flags | re.MULTILINE)
        self.literal = _literal(pattern)
        self.sieve = (
            # junk between any two bytes: cleaning removes it from inside a UTF-8 character too
            None if self.literal is None else re.compile(_JUNK.join(re.escape(bytes([b])) for b in self.literal))
        )

    def may_match(self, buf: bytes, end: int, junk: bool) -> bool:
        """Whether some line of ``buf[:end]`` may match: the literal is in it as it is, or (if
        cleaning removes anything from it) broken up by what cleaning removes. No copies."""
        if self.literal is None or self.sieve is None:
            return True
        if junk:
            return self.sieve.search(buf, 0, end) is not None
        return buf.find(self.literal, 0, end) >= 0


_JUNK = (
    rb"(?:\x1b(?:\[[0-?]{0,256}[ -/]{0,16}[@-~]|[\]PX^_][^\x07\x1b\n\r]{0,4096}(?:\x07|\x1b\\)?|[ -/]{0,16}[0-~])?"
    rb"|[\x00\x7f])*"
)
"""What cleaning removes (an escape sequence as _ESCAPES reads it, NUL, DEL), any number of
times: allowed between the characters of a sieve's literal."""
_PARSER: Any = importlib.import_module("re._parser")
_LITERAL = _PARSER.LITERAL


def _literal(pattern: re.Pattern[str]) -> bytes | None:
    """The longest run of literal characters at the top level of ``pattern``, UTF-8 encoded: every
    match contains it (``PRIVATE KEY`` in ``-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----``).

    A block of output where it is not found, as it is or broken up by what cleaning removes
    (``PRIV\\x1b[0mATE``, a NUL), holds no line the pattern matches: one C-speed scan decides,
    with no decoding or escape removal (bytes ``in`` when the block has nothing to remove, else a
    regex that allows it between the characters). None (every block is cleaned and searched) for
    a pattern without such a run, or one matched case-insensitively (Unicode case folding is not
    bytes')."""
    if pattern.flags & re.IGNORECASE:
        return None
    try:
        items = list(_PARSER.parse(pattern.pattern, pattern.flags & re.VERBOSE).data)
    except (re.error, RecursionError, ValueError, TypeError):
        return None
    runs: list[list[int]] = [[]]
    for op, arg in items:
        if op is _LITERAL and isinstance(arg, int):
            runs[-1].append(arg)
        elif runs[-1]:
            runs.append([])
    # Any tail of a run is required too. The scan for a tail costs a try at each occurrence of its
    # first character: start at a rare one (an upper-case letter in output that is mostly lower
    # case, digits and punctuation), then take the longest (3 characters at least, when there is).
    tails = [run[i:] for run in runs for i in range(len(run))]
    if not tails:
        return None
    best = min(tails, key=lambda t: (len(t) < 3, _commonness(t[0]), -len(t)))
    if any(c in (0x00, 0x0A, 0x0D, 0x1B, 0x7F) or 0xD800 <= c < 0xE000 for c in best):
        return None  # a character cleaning removes or breaks lines at: no line holds it
    return "".join(map(chr, best)).encode("utf-8")


def _commonness(c: int) -> int:
    """How often a character starts nothing in terminal output, roughly: 0 rare ... 3 everywhere."""
    if 0x41 <= c <= 0x5A or c > 0x7F:
        return 0
    if chr(c) in "!#%&()*+<>?@[]^`{|}~\"$'":
        return 1
    if 0x61 <= c <= 0x7A:
        return 2
    return 3  # digits, space, - _ . , : ; / = and controls


class SessionRules:
    """Feed it every frame of one session, in order, exactly as recorded; it says what fired.

    Live, the bastion calls :meth:`gate` with each chunk of input before recording it, then
    :meth:`input`; :meth:`output` with each chunk of output; :meth:`resize`, :meth:`masked` and
    :meth:`tick` as those happen; :meth:`file_verdict` with each SFTP request before it is
    relayed; :meth:`start` first and :meth:`finish` last. Offline, :meth:`feed` takes recorded
    frames. Every method but :meth:`gate` and :meth:`file_verdict` returns the matches it found
    (in order); :meth:`gate` is pure."""

    def __init__(self, rules: RuleSet, facts: SessionFacts, *, cols: int, rows: int, pty: bool) -> None:
        self.rules = rules
        self.facts = facts
        started = facts.started_at
        self._started = started if started.tzinfo is not None else started.replace(tzinfo=UTC)
        live = [r for r in rules.rules if _facts_fit(r, facts)]
        self._commands = [r for r in live if r.trigger is Trigger.COMMAND and not r.enforcing]
        self._gates = [r for r in live if r.trigger is Trigger.COMMAND and r.enforcing]
        self._outputs = [_Output(r) for r in live if r.trigger is Trigger.OUTPUT]
        self._sessions = [r for r in live if r.trigger is Trigger.SESSION]
        self._files = [r for r in live if r.trigger is Trigger.FILE]
        self._durations = sorted(
            (r for r in live if r.trigger is Trigger.DURATION), key=lambda r: r.min_duration or timedelta()
        )
        self._next_due = self._due_at()
        self._counts: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._stash: list[Match] = []
        """Matches found while :meth:`gate` caught the screen up (returned by the next call)."""
        self._scanner = Scanner(cols, rows, pty=pty) if self._commands or self._gates else None
        self._window: deque[bytes] = deque()
        """Output not yet fed to the scanner, as it came (at least its last MAX_WINDOW bytes)."""
        self._window_bytes = 0
        self._window_t = 0
        self._seq = 0
        self._after_cr = False
        self._awaiting = False
        """An Enter was typed and the output after it has not all been fed: its command line may be
        waiting for its echo (:meth:`tick` feeds the window then)."""
        self._carry = bytearray()
        """The output line in progress (at most MAX_LINE bytes: longer, it is cut)."""
        self._carry_t = 0
        self._t = 0
        self._finished = False
        self._budget = WorkBudget(SCAN_BURST, SCAN_RATE / 1_000_000)  # per microsecond of session time
        self.skipped = 0
        """Characters of output not emulated for command rules: over the emulator budget
        (:data:`SCAN_BURST`, :data:`SCAN_RATE`)."""

    # --- the session's start and end ------------------------------------------------------------

    def start(self) -> list[Match]:
        """Matches at the session's start: facts-only rules, and the exec command's (enforcing ones
        included: the bastion holds or refuses an exec before running it)."""
        out: list[Match] = []
        for rule in self._sessions:
            if self._when_fits(rule, 0):
                self._report(rule, Trigger.SESSION, self._facts_text(), 0, out)
        command = self.facts.command
        if command is not None:
            for rule in (*self._gates, *self._commands):
                text = _command_match(rule, (command,), command)
                if text is not None and self._when_fits(rule, 0):
                    self._report(rule, Trigger.COMMAND, text, 0, out)
        return out

    def finish(self, t_us: int) -> list[Match]:
        """The end: commands still waiting for their echo, the last partial output line."""
        out = self._begin(t_us)
        if self._finished:
            return out
        self._finished = True
        if self._scanner is not None:
            self._catch_up(out)
            self._commands_of(self._scanner.finish(), out)
        if self._outputs and self._carry:
            last = bytes(self._carry)
            self._block(last, self._candidates(last, len(last)), self._carry_t, out)
            self._carry.clear()
        return out

    @property
    def suppressed(self) -> dict[str, int]:
        """Matches not reported per rule, past the per-session cap (enforcing ones never are)."""
        return dict(self._suppressed)

    # --- frames -------------------------------------------------------------------------------

    def gate(self, data: bytes, start: int = 0, *, t_us: int | None = None) -> Gate | None:
        """The first Enter in ``data`` at or after ``start`` whose command line matches an
        enforcing rule (hold, terminate), as it would be read if the chunk were recorded now.
        Pure for the input: the chunk is not fed (the output received so far is brought to the
        screen first, as any call would; matches that resolves come with the next call). ``t_us``:
        when the chunk came (for days and hours; default: the last time seen).

        At each Enter (CR, LF, or CR LF as one) on the main screen the candidates are the line as
        the screen shows it (only if the screen has caught up: no keys before this Enter in the
        chunk, output since the last keystroke) and what the line's keys spell; a rule matches if
        its pattern matches any of them (fail safe)."""
        scanner = self._scanner
        if not self._gates or scanner is None or self._finished:
            return None
        at = self._t if t_us is None else t_us
        n = len(data)
        i = start
        caught_up = False
        while i < n:
            m = _ENTER.search(data, i)
            if m is None:
                return None
            j = m.start()
            if data[j] == 10 and (data[j - 1] == 13 if j > 0 else self._after_cr):
                i = j + 1
                continue  # the LF of a CR LF
            enter = 2 if data[j] == 13 and j + 1 < n and data[j + 1] == 10 else 1
            if not caught_up:
                self._catch_up(self._stash)  # the screen as it is now (nothing typed is fed)
                caught_up = True
            peek = scanner.peek_enter(data[:j])
            if peek is None:
                return None  # the alternate screen: no Enter of this chunk makes a command line
            shown, line_keys = peek
            typed = keys_text(line_keys)
            candidates = tuple(c for c in (shown, typed) if c)
            raw_keys = line_keys.decode("utf-8", "replace")
            matches = tuple(
                Match(rule, Trigger.COMMAND, _cut(text), at)
                for rule in self._gates
                if (text := _command_match(rule, candidates, raw_keys)) is not None and self._when_fits(rule, at)
            )
            if matches:
                return Gate(j, enter, _cut(shown or typed), matches)
            i = j + enter
        return None

    def output(self, data: bytes, t_us: int) -> list[Match]:
        out = self._begin(t_us)
        if self._scanner is not None and data:
            window = self._window
            window.append(data if type(data) is bytes else bytes(data))  # kept, never copied
            self._window_bytes += len(data)
            while self._window_bytes - len(window[0]) >= MAX_WINDOW:
                self._window_bytes -= len(window.popleft())
            self._window_t = t_us
        if self._outputs:
            self._output_lines(data, t_us, out)
        return out

    def input(self, data: bytes, t_us: int) -> list[Match]:
        out = self._begin(t_us)
        scanner = self._scanner
        if scanner is not None and data:
            self._catch_up(out)
            self._after_cr = not scanner.term.alternate and data.endswith(b"\r")
            self._awaiting = self._awaiting or b"\r" in data or b"\n" in data
            self._commands_of(scanner.feed(self._frame(_INPUT, t_us, data)), out)
        return out

    def resize(self, cols: int, rows: int, t_us: int) -> list[Match]:
        out = self._begin(t_us)
        if self._scanner is not None:
            self._catch_up(out)
            self._commands_of(self._scanner.feed(self._frame(FrameKind.RESIZE, t_us, Resize(cols, rows))), out)
        return out

    def masked(self, nbytes: int, run: int, t_us: int) -> list[Match]:
        """An ``input.masked`` event (a line typed at a password prompt) was recorded."""
        out = self._begin(t_us)
        if self._scanner is not None:
            self._catch_up(out)
            event = Event("input.masked", "", {"bytes": nbytes, "run": run})
            self._commands_of(self._scanner.feed(self._frame(FrameKind.EVENT, t_us, event)), out)
        return out

    def tick(self, t_us: int) -> list[Match]:
        """Time passed: duration rules, and command lines waiting for their echo (after an Enter,
        the output window is fed to the scanner until a newline came; the bastion ticks about once a
        second, so a command is flagged soon after its echo even if nothing more is typed)."""
        out = self._begin(t_us)
        if self._awaiting:
            self._catch_up(out)
        return out

    def file_op(self, ops: tuple[FileOp, ...], paths: tuple[str, ...], t_us: int) -> list[Match]:
        """An SFTP request (its file operations, its paths as text), before it is relayed: the
        matches to report. :meth:`file_verdict` says whether it may be relayed."""
        return list(self.file_verdict(ops, paths, t_us).matches)

    def file_verdict(self, ops: tuple[FileOp, ...], paths: tuple[str, ...], t_us: int) -> FileVerdict:
        """The file rules on an SFTP request: each rule whose ``file_ops`` include one of ``ops``
        (any, without ``file_ops``) and whose ``path`` is found in one of ``paths``, in rule
        order. A rule past its cap of reports still refuses (deny, terminate); a terminating
        match is always reported."""
        out = self._begin(t_us)
        refused: Match | None = None
        denied: Match | None = None
        if ops and self._files and not self._finished:
            text: str | None = None
            for rule in self._files:
                if rule.file_ops is not None and not rule.file_ops.intersection(ops):
                    continue
                pattern = rule.path
                if pattern is not None and not any(pattern.search(p) for p in paths):
                    continue
                if not self._when_fits(rule, t_us):
                    continue
                if text is None:
                    text = _cut(file_text(ops, paths))
                m = Match(rule, Trigger.FILE, text, t_us)
                if self._reportable(rule):
                    out.append(m)
                if Action.TERMINATE in rule.actions and refused is None:
                    refused = m
                elif Action.DENY in rule.actions and denied is None:
                    denied = m
        return FileVerdict(tuple(out), refused or denied)

    def feed(self, frame: Frame) -> list[Match]:
        """One recorded frame (offline): dispatches to output/input/resize/masked and to
        :meth:`file_op` (an ``sftp.op`` event: the request as the relay recorded it)."""
        kind, data, t = frame.kind, frame.data, frame.t_us
        if kind is _OUTPUT and isinstance(data, bytes):
            return self.output(data, t)
        if kind is _INPUT and isinstance(data, bytes):
            return self.input(data, t)
        if kind is FrameKind.RESIZE and isinstance(data, Resize):
            return self.resize(data.cols, data.rows, t)
        if kind is FrameKind.EVENT and isinstance(data, Event) and data.type == "sftp.op":
            ops, paths = file_request(data.fields)
            return self.file_op(ops, paths, t) if ops else self.tick(t)
        if kind is FrameKind.EVENT and isinstance(data, Event) and data.type == "input.masked":
            n, run = data.fields.get("bytes"), data.fields.get("run")
            return self.masked(n if isinstance(n, int) else 0, run if isinstance(run, int) else 0, t)
        if kind is FrameKind.HEADER:
            return []
        return self.tick(t)

    # --- internals ----------------------------------------------------------------------------

    def _begin(self, t_us: int) -> list[Match]:
        """What every call returns first: matches found by an earlier :meth:`gate`, and duration
        rules that came due."""
        if t_us > self._t:
            self._t = t_us
        out = self._stash
        if out:
            self._stash = []
        else:
            out = []
        if t_us >= self._next_due:
            self._durations_due(t_us, out)
        return out

    def _frame(self, kind: FrameKind, t_us: int, data: bytes | Resize | Event) -> Frame:
        self._seq += 1
        return Frame(self._seq, kind, t_us, data)

    def _catch_up(self, out: list[Match]) -> None:
        """Feed the output window to the scanner (the screen is about to be read)."""
        scanner = self._scanner
        if scanner is None or not self._window:
            return
        data = b"".join(self._window)[-MAX_WINDOW:]
        self._window.clear()
        self._window_bytes = 0
        if b"\n" in data:
            self._awaiting = False
        t = self._window_t
        self.skipped += self._budget.run(
            scanner.term, t, lambda: self._commands_of(scanner.feed(self._frame(_OUTPUT, t, data)), out), len(data)
        )

    def _commands_of(self, items: Iterable[object], out: list[Match]) -> None:
        """Non-enforcing command rules over the command lines the scanner resolved."""
        if not self._commands:
            return
        for item in items:
            if not isinstance(item, Command) or not (item.text or item.keys):
                continue
            typed = keys_text(item.keys)
            candidates = tuple(c for c in (item.text, typed) if c)
            raw_keys = item.keys.decode("utf-8", "replace")
            for rule in self._commands:
                text = _command_match(rule, candidates, raw_keys)
                if text is not None and self._when_fits(rule, item.t_us):
                    self._report(rule, Trigger.COMMAND, text, item.t_us, out)

    def _output_lines(self, data: bytes, t_us: int, out: list[Match]) -> None:
        nl = data.rfind(b"\n")
        carry = self._carry
        if nl < 0:
            if not carry:
                self._carry_t = t_us
            carry += data
            if len(carry) >= MAX_LINE:
                cut = len(carry) - len(carry) % MAX_LINE
                piece = bytes(carry[:cut])
                self._block(piece, self._candidates(piece, cut), t_us, out)
                del carry[:cut]
            return
        # The complete lines are carry + data[:nl]. Which rules may match is decided without
        # joining them: in data[:nl] as it is, and across the join (a match lies in one piece of a
        # line, at most MAX_LINE bytes, and the carry is shorter than that).
        outputs = self._candidates(data, nl)
        if carry and len(outputs) < len(self._outputs):
            head = bytes(carry) + data[: min(nl, MAX_LINE)]
            outputs |= self._candidates(head, len(head))
        if outputs:
            self._block(bytes(carry) + data[:nl] if carry else data[:nl], outputs, t_us, out)
        carry.clear()
        carry += data[nl + 1 :]
        self._carry_t = t_us
        if len(carry) >= MAX_LINE:
            cut = len(carry) - len(carry) % MAX_LINE
            piece = bytes(carry[:cut])
            self._block(piece, self._candidates(piece, cut), t_us, out)
            del carry[:cut]

    def _candidates(self, buf: bytes, end: int) -> set[int]:
        """The output rules (by index) whose sieve passes ``buf[:end]``."""
        junk = _junk(buf, end)
        return {k for k, o in enumerate(self._outputs) if o.may_match(buf, end, junk)}

    def _block(self, block: bytes, candidates: set[int], t_us: int, out: list[Match]) -> None:
        """Complete lines of output (``\\n``-separated raw bytes): the candidate output rules are
        searched in its lines, cut and cleaned."""
        if not candidates:
            return
        outputs = [o for k, o in enumerate(self._outputs) if k in candidates]
        if len(block) > MAX_LINE and _may_be_long(block):
            block = b"\n".join(_pieces(line) for line in block.split(b"\n"))
        self._lines(block, outputs, t_us, out)

    def _lines(self, block: bytes, outputs: list[_Output], t_us: int, out: list[Match]) -> None:
        """Output rules over complete lines (``\\n``-separated, none longer than MAX_LINE), reported
        in line order (then rule order)."""
        text = _clean(block)
        hits: list[tuple[int, int, str, Rule]] = []
        for k, o in enumerate(outputs):
            rule, many, pattern = o.rule, o.many, o.rule.output
            pos = 0
            while (m := many.search(text, pos)) is not None:
                a = text.rfind("\n", 0, m.start()) + 1
                b = text.find("\n", m.start())
                if b < 0:
                    b = len(text)
                line = text[a:b]
                if line and pattern is not None and pattern.search(line):
                    hits.append((a, k, line, rule))
                pos = b + 1
                if pos > len(text):
                    break
        if len(hits) > 1:
            hits.sort(key=lambda h: (h[0], h[1]))
        for _, _, line, rule in hits:
            if self._when_fits(rule, t_us):
                self._report(rule, Trigger.OUTPUT, line, t_us, out)

    def _durations_due(self, t_us: int, out: list[Match]) -> None:
        left = []
        retry = False
        for rule in self._durations:
            if rule.min_duration is None or t_us < rule.min_duration // timedelta(microseconds=1):
                left.append(rule)
            elif self._when_fits(rule, t_us):
                self._report(rule, Trigger.DURATION, f"session running for {format_duration(rule.min_duration)}",
                             t_us, out)
            else:
                left.append(rule)
                retry = True
        self._durations = left
        self._next_due = self._due_at()
        if retry:
            self._next_due = min(self._next_due, t_us + _DURATION_RETRY)

    def _due_at(self) -> int:
        due = [r.min_duration // timedelta(microseconds=1) for r in self._durations if r.min_duration is not None]
        return min(due) if due else 1 << 62

    def _when_fits(self, rule: Rule, t_us: int) -> bool:
        """Days, hours and min_duration at ``t_us`` into the session."""
        if rule.min_duration is not None and t_us < rule.min_duration // timedelta(microseconds=1):
            return False
        if rule.days is None and rule.hours is None:
            return True
        local = (self._started + timedelta(microseconds=t_us)).astimezone(rule.timezone)
        if rule.days is not None and local.weekday() not in rule.days:
            return False
        if rule.hours is not None:
            start, end = rule.hours
            now = local.time().replace(tzinfo=None)
            return start <= now < end if start < end else (now >= start or now < end)
        return True

    def _report(self, rule: Rule, trigger: Trigger, text: str, t_us: int, out: list[Match]) -> None:
        if self._reportable(rule):
            out.append(Match(rule, trigger, _cut(text), t_us))

    def _reportable(self, rule: Rule) -> bool:
        """Whether a match of ``rule`` is reported: under its cap (counted), or enforcing."""
        if rule.enforcing:
            return True
        n = self._counts.get(rule.name, 0)
        if n >= MAX_MATCHES:
            self._suppressed[rule.name] = self._suppressed.get(rule.name, 0) + 1
            return False
        self._counts[rule.name] = n + 1
        return True

    def _facts_text(self) -> str:
        f = self.facts
        parts = [f"roles: {', '.join(sorted(f.roles)) or '-'}"]
        if f.groups:
            parts.append(f"groups: {', '.join(sorted(f.groups))}")
        parts.append(f"labels: {', '.join(sorted(f.labels)) or '-'}")
        return f"{f.user} as {f.login}@{f.target} ({'; '.join(parts)})"


def _command_match(rule: Rule, candidates: tuple[str, ...], raw_keys: str) -> str | None:
    """The candidate a command rule matches (its ``keys`` pattern against the raw keys), or None."""
    if rule.keys is not None and not rule.keys.search(raw_keys):
        return None
    if rule.command is None:
        return candidates[0] if candidates else raw_keys
    for c in candidates:
        if rule.command.search(c):
            return c
    return None


def _facts_fit(rule: Rule, facts: SessionFacts) -> bool:
    """The conditions fixed for a whole session: users, targets, logins."""
    if rule.users and not principal_matches(rule.users, facts.user, facts.roles, facts.groups):
        return False
    if rule.targets:
        target = Target(
            name=facts.target, host="", port=0, logins=(), host_key="", labels=facts.labels,
            builtin=facts.target == LOCAL_TARGET,
        )
        if not Policy.target_matches(rule.targets, target):
            return False
    return not (rule.logins and not Policy.login_matches(rule.logins, facts.login))


def _may_be_long(block: bytes) -> bool:
    """Whether ``block`` may hold a line longer than MAX_LINE: some whole aligned block of _BLOCK
    bytes has no newline (a line of 2 * _BLOCK - 1 bytes or more covers one). A few C-speed finds
    per 64 KiB, no copies."""
    return any(block.find(b"\n", k, k + _BLOCK) < 0 for k in range(0, len(block) - _BLOCK + 1, _BLOCK))


def _pieces(line: bytes) -> bytes:
    """A line cut into MAX_LINE-byte pieces, newline-separated."""
    if len(line) <= MAX_LINE:
        return line
    return b"\n".join(line[k : k + MAX_LINE] for k in range(0, len(line), MAX_LINE))



def run_frames(
    rules: RuleSet, facts: SessionFacts, header: Header, frames: Iterable[Frame]
) -> tuple[list[Match], dict[str, int]]:
    """What ``rules`` would have matched in a recorded session (its frames after the header, in
    order), run as the bastion runs them live: each INPUT frame is gated first (every Enter in it,
    as the relay asks before recording it), then fed; every other frame is fed; the end is the last
    frame's time. Returns the matches in order and the suppressed counts."""
    # A session had a terminal if its header names a TERM or a size (replay's had_pty).
    engine = SessionRules(rules, facts, cols=header.cols, rows=header.rows, pty=bool(header.term or header.cols))
    found = engine.start()
    t = 0
    for frame in frames:
        t = max(t, frame.t_us)
        data = frame.data
        if frame.kind is _INPUT and isinstance(data, bytes):
            pos = 0
            while (gate := engine.gate(data, pos, t_us=frame.t_us)) is not None:
                found.extend(gate.matches)
                pos = gate.offset + gate.enter
        found.extend(engine.feed(frame))
    found.extend(engine.finish(t))
    return found, engine.suppressed


def loaded_fields(rules: RuleSet, facts: SessionFacts) -> dict[str, str | int]:
    """The fields of the ``rules.loaded`` event frame a session's recording starts with: the rule
    set (its digest, how many rules) and the facts the rules saw besides the header's (roles,
    groups, labels, comma-joined), so ``zsp rules test`` runs with the same facts later."""
    return {
        "ruleset": rules.digest,
        "rules": len(rules.rules),
        "roles": ",".join(sorted(facts.roles)),
        "groups": ",".join(sorted(facts.groups)),
        "labels": ",".join(sorted(facts.labels)),
    }


def facts_of_recording(
    header: Header,
    loaded: Mapping[str, object] | None,
    *,
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    labels: Iterable[str] = (),
) -> SessionFacts:
    """A recorded session's facts: who, where and when from its header; roles, groups and labels
    from its ``rules.loaded`` event's fields when it has one (``loaded``), else as given (what the
    store says now)."""

    def field(name: str, default: Iterable[str]) -> frozenset[str]:
        value = loaded.get(name) if loaded is not None else None
        if isinstance(value, str):
            return frozenset(v for v in value.split(",") if v)
        return frozenset(default)

    return SessionFacts(
        user=header.user,
        roles=field("roles", roles),
        groups=field("groups", groups),
        target=header.target,
        labels=field("labels", labels),
        login=header.login,
        started_at=datetime.fromtimestamp(header.started_at_us / 1e6, UTC),
        command=header.command,
    )
