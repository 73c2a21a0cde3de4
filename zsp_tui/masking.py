"""Which typed bytes may be stored: passwords are withheld, commands never are.

Shared by the bastion and ``zsp record``. At most one line is withheld per password prompt: the
bytes up to and including the first Enter, and never more than :data:`MASK_BUDGET`. Whatever
follows in the same chunk, and every later line until a new prompt, is recorded.

Where the terminal's modes are visible (a local PTY), a prompt is echo off in canonical mode, the
way ``read -s``, ``sudo`` and ``passwd`` read a password; a shell left in ``stty -echo`` gets one
masked line per episode, then is recorded until echo comes back on. Where they are not (an SSH
target), a prompt is output whose last line looks like one. An operator can fake either, but only
to hide one line, in plain sight of the recorded output and of the ``input.masked`` event.

Withheld never means lost: :class:`MaskedInput` seals every withheld chunk to the installation's
escrow public key (:mod:`recorder._escrow`) inside the ``input.masked`` event, so the recording
still proves what was typed, and only the holder of the escrow private key (kept off the
bastion) can read it. Without an escrow key nothing is withheld: input is recorded in clear and
an ``input.escrow.missing`` event says so. A session that masks more than a password needs
(:class:`MaskLimits`) gets one ``input.masked.excessive`` event and is flagged for review; it goes
on masking, since every masked byte is escrowed anyway and a real password should stay hidden.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from recorder import EscrowPublicKey, seal

__all__ = ["MASK_BUDGET", "Excessive", "InputMasker", "MaskLimits", "MaskedInput"]

MASK_BUDGET = 256
_BLANK = b" \t\n\r\f\v"
"""What ``\\s`` matches in a bytes pattern."""
_PROMPT = re.compile(rb"(?i)(pass(word|phrase)|\bpin\b|secret|verification code)[^\n]{0,60}:\s*$")


class InputMasker:
    """``echo_off()`` returns the terminal's state: True/False where known, None where not."""

    def __init__(self, echo_off: Callable[[], bool | None]) -> None:
        self._echo_off = echo_off
        self._tail = b""
        self._armed = False
        self._used = 0  # bytes withheld in this episode
        self._spent = False  # this echo-off episode already had its masked line
        self.runs = 0
        """Masked runs so far: a run is what one prompt withholds (one line at most, in chunks)."""

    def saw_output(self, data: bytes) -> None:
        """Watch output for prompts (only used where the terminal's modes are not visible)."""
        self._tail = tail = (self._tail + data)[-200:]
        # _PROMPT can only match a last line whose last non-blank byte is ':' (it ends in
        # ``:\s*$``); checking that first spares the regex on almost every chunk (an echoed key).
        if not tail.rstrip(_BLANK).endswith(b":"):
            return
        if _PROMPT.search(tail.rsplit(b"\n", 1)[-1]):
            self._armed = True
            self._used = 0

    def _active(self) -> bool:
        state = self._echo_off()
        if state is None:
            return self._armed
        if not state:
            self._spent = False
            self._used = 0
            return False
        return not self._spent

    def hiding(self) -> bool:
        """Whether input typed now would be withheld (a password prompt is waiting for its line)."""
        return self._active()

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``(withheld, recorded)`` parts of a chunk of input, in that order."""
        if not self._active():
            return b"", data
        room = MASK_BUDGET - self._used
        ends = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
        line_end = min(ends) + 1 if ends else len(data)
        cut = min(line_end, room)
        if self._used == 0 and cut:
            self.runs += 1
        self._used += cut
        if (ends and cut == line_end) or self._used >= MASK_BUDGET:
            self._armed = False
            self._spent = True
            self._tail = b""
        return data[:cut], data[cut:]


@dataclass(frozen=True, slots=True)
class MaskLimits:
    """More masked input than a password needs flags the session (``[masking]`` in zsp.toml)."""

    max_runs: int = 3
    """Masked runs (prompts answered) a session may have before it is flagged."""
    max_bytes: int = 512
    """Masked bytes a session may have before it is flagged."""


@dataclass(frozen=True, slots=True)
class Excessive:
    """A session just went over its :class:`MaskLimits` (reported once per session)."""

    runs: int
    bytes: int
    limits: MaskLimits

    @property
    def message(self) -> str:
        return (
            f"excessive masked input: {self.runs} masked runs, {self.bytes} bytes "
            f"(limits {self.limits.max_runs} runs, {self.limits.max_bytes} bytes); all of it is escrowed"
        )

    def fields(self) -> dict[str, int]:
        return {
            "runs": self.runs,
            "bytes": self.bytes,
            "max_runs": self.limits.max_runs,
            "max_bytes": self.limits.max_bytes,
        }


class MaskedInput:
    """Records one session's typed input: withheld chunks are sealed to the escrow key, never dropped.

    ``event(type, message, **fields)`` and ``record_input(bytes)`` are the recorder's methods (the
    bastion's :class:`recorder.AsyncRecorder` or ``zsp record``'s writer). Each withheld chunk
    becomes one ``input.masked`` event, written before the chunk is relayed, carrying its length,
    its run (1, 2, ... per prompt) and part (0, 1, ... within the run), the sealed box (base64) and
    the escrow key's fingerprint. ``docs/FORMAT.md`` section 3.5 has the exact layout.
    """

    def __init__(
        self,
        masker: InputMasker,
        escrow: EscrowPublicKey | None,
        session_id: uuid.UUID,
        limits: MaskLimits,
        *,
        event: Callable[..., None],
        record_input: Callable[[bytes], None],
        charge: Callable[[int], None] | None = None,
    ) -> None:
        """``charge(n)``: count ``n`` bytes against the session's recording limit (sealed input is
        recorded too, bigger than typed: it must not be a way around the limit)."""
        self._charge = charge
        self._masker = masker
        self._escrow = escrow
        self._sid = session_id
        self.limits = limits
        self._event = event
        self._input = record_input
        self._run = 0
        self._part = 0
        self.masked_bytes = 0
        self.flagged = False

    @property
    def runs(self) -> int:
        return self._run

    def start(self) -> None:
        """Say in the recording, before any input, when masking is off for want of an escrow key."""
        if self._escrow is None:
            self._event(
                "input.escrow.missing",
                "no escrow public key: nothing is masked, input typed at password prompts is recorded in clear",
            )

    def feed(self, data: bytes) -> Excessive | None:
        """Record one chunk of input; returns the :class:`Excessive` report the first time it applies."""
        if self._escrow is None:  # fail closed: hiding without escrow is never allowed
            self._input(data)
            return None
        hidden, shown = self._masker.split(data)
        crossed: Excessive | None = None
        if hidden:
            if self._masker.runs != self._run:
                self._run, self._part = self._masker.runs, 0
            box = seal(self._escrow, hidden, session_id=self._sid, run=self._run, part=self._part)
            sealed = base64.b64encode(box).decode("ascii")
            if self._charge is not None:
                self._charge(len(sealed))
            self._event(
                "input.masked",
                "input withheld: typed at a password prompt (sealed to the escrow key)",
                bytes=len(hidden),
                run=self._run,
                part=self._part,
                sealed=sealed,
                escrow=self._escrow.fingerprint,
            )
            self._part += 1
            self.masked_bytes += len(hidden)
            over = self._run > self.limits.max_runs or self.masked_bytes > self.limits.max_bytes
            if over and not self.flagged:
                self.flagged = True
                crossed = Excessive(self._run, self.masked_bytes, self.limits)
                self._event("input.masked.excessive", crossed.message, **crossed.fields())
        if shown:
            self._input(shown)
        return crossed
