"""The DEC Special Graphics character set (``ESC ( 0``), as a ``str.translate`` table.

Programs that draw boxes without relying on UTF-8 (tmux's borders, top, ncurses with
``ACS_*``) select this set and send ASCII letters: ``lqqk`` is the top of a box. The mapping is
the one xterm uses (VT100 User Guide, table 3-9).
"""

from __future__ import annotations

__all__ = ["DEC_GRAPHICS"]

_DEC = {
    "`": "\u25c6",  # ◆
    "a": "\u2592",  # ▒
    "b": "\u2409",  # ␉
    "c": "\u240c",  # ␌
    "d": "\u240d",  # ␍
    "e": "\u240a",  # ␊
    "f": "\u00b0",  # °
    "g": "\u00b1",  # ±
    "h": "\u2424",  # ␤
    "i": "\u240b",  # ␋
    "j": "\u2518",  # ┘
    "k": "\u2510",  # ┐
    "l": "\u250c",  # ┌
    "m": "\u2514",  # └
    "n": "\u253c",  # ┼
    "o": "\u23ba",  # ⎺
    "p": "\u23bb",  # ⎻
    "q": "\u2500",  # ─
    "r": "\u23bc",  # ⎼
    "s": "\u23bd",  # ⎽
    "t": "\u251c",  # ├
    "u": "\u2524",  # ┤
    "v": "\u2534",  # ┴
    "w": "\u252c",  # ┬
    "x": "\u2502",  # │
    "y": "\u2264",  # ≤
    "z": "\u2265",  # ≥
    "{": "\u03c0",  # π
    "|": "\u2260",  # ≠
    "}": "\u00a3",  # £
    "~": "\u00b7",  # ·
}

DEC_GRAPHICS: dict[int, str] = str.maketrans(_DEC)
"""``text.translate(DEC_GRAPHICS)``: what a run of text shows with the DEC graphics set in GL."""
