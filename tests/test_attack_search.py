"""Adversarial review of what search can be made to miss. Each test is a session an operator can
produce from an ordinary shell; each is a strict xfail documenting a way to hide from
``zsp search`` (``zsp play`` still shows it all), until the scanner covers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder import SigningKey
from replay import SqliteSearchIndex, index_recording
from tests.search_helpers import Script

PROMPT = b"$ "


def _typed(s: Script, t: float, cmd: bytes, *, echo: bytes | None = None, out: bytes = b"") -> None:
    """``cmd`` typed key by key at a bash-like prompt (echoed as typed, or ``echo`` shown instead),
    then Enter, ``out``, and the next prompt."""
    for i, ch in enumerate(cmd):
        s.at(t + i * 0.01).key(bytes([ch]))
        if echo is None:
            s.out(bytes([ch]))
    if echo is not None:
        s.out(echo)
    s.at(t + 1).key(b"\r").out(b"\r\n" + out + PROMPT)


def _search(tmp_path: Path, key: SigningKey, s: Script, query: str) -> list[tuple[str, str]]:
    path = s.close()
    index = SqliteSearchIndex(tmp_path / "search.db")
    try:
        index_recording(index, path, [key.public])
        return [(h.kind.value, h.text) for h in index.search(query)]
    finally:
        index.close()


@pytest.mark.xfail(strict=True, reason="Enter on the alternate screen is never a command and the "
                   "alternate screen is never indexed: a shell run there is invisible to search")
def test_a_shell_on_the_alternate_screen_is_still_searchable(tmp_path: Path, key: SigningKey) -> None:
    s = Script(tmp_path / "alt.zsprec", key)
    s.at(0).out(PROMPT)
    _typed(s, 1, b"printf '\\e[?1049h'", out=b"\x1b[?1049h")  # or in .bashrc / PS1: no command at all
    _typed(s, 3, b"rm -rf /srv/app", out=b"removed '/srv/app/db'\r\n")
    _typed(s, 5, b"clear", out=b"\x1b[H\x1b[2J")
    hits = _search(tmp_path, key, s, "rm -rf /srv/app")
    assert hits, "neither the command nor its keys are searchable"


def test_output_scrolled_out_of_a_region_below_the_top_row_is_searchable(tmp_path: Path, key: SigningKey) -> None:
    s = Script(tmp_path / "region.zsprec", key)
    s.at(0).out(b"\x1b[2;24r\x1b[24;1H" + PROMPT)
    for i in range(40):
        _typed(s, 1 + 2 * i, b"cat part%d" % i, out=b"leaked-secret-%d\r\n" % i)
    hits = _search(tmp_path, key, s, "leaked-secret-3")
    assert ("output", "leaked-secret-3") in hits, hits


def test_keys_typed_under_a_decoy_echo_are_searchable(tmp_path: Path, key: SigningKey) -> None:
    s = Script(tmp_path / "decoy.zsprec", key)
    s.at(0).out(PROMPT)
    # e.g. `while read -rs l; do printf 'ls -la'; eval "$l"; done`: the screen shows a harmless line
    _typed(s, 1, b"rm -rf /srv/app", echo=b"ls -la", out=b"total 0\r\n")
    hits = _search(tmp_path, key, s, "rm -rf /srv/app")
    assert hits == [("command", "rm -rf /srv/app")], "the keys typed are not searchable, the decoy is"


@pytest.mark.xfail(strict=True, reason="rows are attributed to frames by where the cursor was between "
                   "frames: text written by a save-cursor / move / restore-cursor inside one frame keeps "
                   "the row's earlier writer, so the hit opens a moment before the text existed")
def test_a_line_written_behind_a_cursor_save_and_restore_lands_on_its_own_second(tmp_path: Path,
                                                                               key: SigningKey) -> None:
    s = Script(tmp_path / "decsc.zsprec", key)
    s.at(0).out(b"\x1b[24;1H" + PROMPT)
    frame = s.frame()
    s.at(3600).out(b"\x1b7\x1b[5;1Hwritten an hour later\x1b8")  # cursor back where it was
    for i in range(30):
        s.at(3700 + i).out(b"line %d\r\n" % i)
    path = s.close()
    index = SqliteSearchIndex(tmp_path / "search.db")
    try:
        index_recording(index, path, [key.public])
        (hit,) = index.search("written an hour later")
    finally:
        index.close()
    assert (hit.frame, hit.t_us) == (frame, 3600 * 1_000_000), (hit.frame, hit.t_us)
