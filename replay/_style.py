"""Cell attributes (:class:`Style`) and how SGR parameters change them (:func:`apply_sgr`).

A :class:`Style` is a frozen value; the emulator interns styles so that a row of cells holds
references to a handful of objects and comparing two cells' styles is usually an identity check.
Colours: ``None`` is the terminal's default, ``0``-``255`` a palette index (30-37 map to 0-7,
90-97 to 8-15), and ``TRUECOLOR | 0xRRGGBB`` a 24-bit colour.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["DEFAULT_STYLE", "TRUECOLOR", "Style", "apply_sgr"]

TRUECOLOR = 0x1000000
"""Flag bit of a 24-bit colour: ``TRUECOLOR | 0xRRGGBB``."""


@dataclass(frozen=True, slots=True)
class Style:
    """Attributes of a cell. Hashable; the emulator interns them (one object per distinct style)."""

    fg: int | None = None
    """Foreground: None (default), 0-255 (palette index) or ``TRUECOLOR | 0xRRGGBB``."""
    bg: int | None = None
    """Background, encoded as ``fg``."""
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    blink: bool = False
    reverse: bool = False
    hidden: bool = False
    """SGR 8 (conceal)."""
    strike: bool = False


DEFAULT_STYLE = Style()

_FLAG_ON = {
    1: "bold",
    2: "dim",
    3: "italic",
    4: "underline",
    5: "blink",
    6: "blink",
    7: "reverse",
    8: "hidden",
    9: "strike",
    21: "underline",  # double underline (xterm); drawn as an underline
}
_FLAG_OFF: dict[int, tuple[str, ...]] = {
    22: ("bold", "dim"),
    23: ("italic",),
    24: ("underline",),
    25: ("blink",),
    27: ("reverse",),
    28: ("hidden",),
    29: ("strike",),
}
_MAX_GROUPS = 32
"""SGR parameters beyond this many are ignored (a hostile CSI may carry thousands)."""


def _num(text: str) -> int | None:
    """A parameter's value; None if empty or not a number. Huge values saturate (no big ints)."""
    if not text:
        return None
    if not text.isdigit() or not text.isascii():
        return None
    text = text.lstrip("0")
    if len(text) > 6:
        return 999999
    return int(text) if text else 0


def _extended(values: list[int | None], colon: bool) -> tuple[int | None, int, bool]:
    """Decode the colour after 38/48: ``(colour, values consumed, valid)``.

    ``values`` follows the 38/48 code: ``5, n`` or ``2, r, g, b`` (``;`` form), or with ``:``
    subparameters ``5:n``, ``2:r:g:b`` or ``2:cs:r:g:b`` (the ITU form with a colour-space id).
    """
    if not values:
        return None, 0, False
    kind = values[0]
    if kind == 5:
        if len(values) < 2 or values[1] is None or values[1] > 255:
            return None, min(len(values), 2), False
        return values[1], 2, True
    if kind == 2:
        if colon and len(values) >= 5:
            rgb = values[2:5]
            used = 5
        else:
            rgb = values[1:4]
            used = 4
        if len(rgb) < 3:
            return None, len(values), False
        r, g, b = ((v or 0) for v in rgb)
        if r > 255 or g > 255 or b > 255:
            return None, used, False
        return TRUECOLOR | (r << 16) | (g << 8) | b, used, True
    return None, 1, False


def apply_sgr(style: Style, params: str) -> Style:
    """``style`` after ``CSI params m``. Unknown or malformed parameters are ignored."""
    if not params:
        return DEFAULT_STYLE
    changes: dict[str, object] = {}
    groups = params.split(";", _MAX_GROUPS)[:_MAX_GROUPS]
    i = 0
    n = len(groups)
    while i < n:
        group = groups[i]
        i += 1
        if ":" in group:
            parts = group.split(":", 8)[:8]
            code = _num(parts[0])
            subs = [_num(p) for p in parts[1:]]
            if code in (38, 48, 58):
                colour, _, ok = _extended(subs, colon=True)
                if ok and code != 58:
                    changes["fg" if code == 38 else "bg"] = colour
            elif code == 4:
                changes["underline"] = bool(subs and subs[0])
            continue
        code = _num(group)
        if code is None:
            code = 0 if not group else -1
        if code == 0:
            style = DEFAULT_STYLE
            changes.clear()
        elif 30 <= code <= 37:
            changes["fg"] = code - 30
        elif 40 <= code <= 47:
            changes["bg"] = code - 40
        elif 90 <= code <= 97:
            changes["fg"] = code - 90 + 8
        elif 100 <= code <= 107:
            changes["bg"] = code - 100 + 8
        elif code == 39:
            changes["fg"] = None
        elif code == 49:
            changes["bg"] = None
        elif code in _FLAG_ON:
            changes[_FLAG_ON[code]] = True
        elif code in _FLAG_OFF:
            for name in _FLAG_OFF[code]:
                changes[name] = False
        elif code in (38, 48, 58):
            colour, used, ok = _extended([_num(g) for g in groups[i : i + 5]], colon=False)
            i += used
            if ok and code != 58:
                changes["fg" if code == 38 else "bg"] = colour
    if not changes:
        return style
    return replace(style, **changes)  # type: ignore[arg-type]
