"""User names: one canonical spelling per person.

Names are ASCII (``[a-z][a-z0-9._-]{0,31}``). Whatever a caller types is folded with Unicode NFKC
and case-folding before lookup, so ``ALICE`` and fullwidth ``\uff41\uff4c\uff49\uff43\uff45`` name the same user,
and a Cyrillic look-alike (``\u0430lice``) can neither be created nor name anyone. Identity inside zsp is
the user's numeric id, never the spelling, so the two-person rule compares ids.
"""

from __future__ import annotations

import re
import unicodedata

from .exceptions import UsageError

__all__ = ["InvalidName", "canonical_name"]

_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")


class InvalidName(UsageError, ValueError):
    def __init__(self, raw: str) -> None:
        self.raw = raw
        UsageError.__init__(
            self, f"invalid name {raw!r}: use 1-32 ASCII letters, digits, '.', '_' or '-', starting with a letter"
        )


def canonical_name(raw: str) -> str:
    folded = unicodedata.normalize("NFKC", raw).casefold().strip()
    if not _NAME.fullmatch(folded):
        raise InvalidName(raw)
    return folded
