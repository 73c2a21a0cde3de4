"""Reading and verifying zsp recordings.

``verify_frames`` streams a recording and yields frames once they are proven part of the chain;
its return value is the :class:`VerificationReport`. ``verify`` does the same for a whole file.
``only_signed`` holds frames back until a verified signature covers them (what a player shows).
``printable`` is how every zsp tool shows untrusted text to a person (control characters escaped).
``Terminal`` turns output bytes into ``Screen`` values (the replay terminal emulator).
Like :mod:`recorder`, this package never imports textual or asyncssh.
"""

from __future__ import annotations

from ._exceptions import ReplayError, SourceError
from ._printable import printable
from ._reader import Preamble, Tail, TailKind, iter_raw, read_preamble
from ._signed import MAX_PENDING_BYTES, Withheld, only_signed
from ._style import DEFAULT_STYLE, Style
from ._terminal import Screen, Terminal
from ._timing import at_speed, cap_idle, output_steps
from ._verify import Outcome, Problem, VerificationReport, load, verify, verify_frames

__all__ = [
    "DEFAULT_STYLE",
    "MAX_PENDING_BYTES",
    "Outcome",
    "Preamble",
    "Problem",
    "ReplayError",
    "Screen",
    "SourceError",
    "Style",
    "Tail",
    "TailKind",
    "Terminal",
    "VerificationReport",
    "Withheld",
    "at_speed",
    "cap_idle",
    "iter_raw",
    "load",
    "only_signed",
    "output_steps",
    "printable",
    "read_preamble",
    "verify",
    "verify_frames",
]
