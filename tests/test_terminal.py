"""The replay terminal emulator (``replay.Terminal``): exact screens for what real programs send.

Each test feeds a byte string and compares the whole screen (or the part that matters) with what
xterm shows. Property tests are in tests/test_terminal_props.py; a differential test against pyte
is there too. No test here is timed: speed is measured by benchmarks/bench_replay.py.
"""

from __future__ import annotations

import msgpack
import pytest

from replay import DEFAULT_STYLE, ReplayError, Screen, Style, Terminal

ESC = b"\x1b"
CSI = b"\x1b["


def term(data: bytes, cols: int = 10, rows: int = 4) -> Terminal:
    t = Terminal(cols, rows)
    t.feed(data)
    return t


def lines(data: bytes, cols: int = 10, rows: int = 4) -> tuple[str, ...]:
    return term(data, cols, rows).screen().lines


# -- text, wrap, C0 -------------------------------------------------------------------------------


def test_plain_text_and_crlf() -> None:
    t = term(b"hello\r\nworld")
    assert t.screen().lines == ("hello", "world", "", "")
    assert t.cursor == (5, 1)


def test_lf_is_line_feed_only_and_cr_returns() -> None:
    assert lines(b"ab\ncd\rX") == ("ab", "X cd", "", "")


def test_vt_and_ff_are_line_feeds() -> None:
    assert lines(b"a\x0bb\x0cc") == ("a", " b", "  c", "")


def test_pending_wrap_then_wrap_marks_the_row() -> None:
    t = term(b"0123456789")
    assert t.cursor == (10, 0)  # pending wrap: x == cols
    assert not t.is_wrapped(0)
    t.feed(b"ab")
    assert t.screen().lines[:2] == ("0123456789", "ab")
    assert t.screen().wrapped == (True, False, False, False)
    assert t.cursor == (2, 1)


def test_cr_in_pending_wrap_cancels_the_wrap() -> None:
    t = term(b"0123456789\r\nab")
    assert t.screen().lines[:2] == ("0123456789", "ab")
    assert t.screen().wrapped == (False, False, False, False)


def test_autowrap_off_overwrites_the_last_column() -> None:
    assert lines(CSI + b"?7l0123456789abc") == ("012345678c", "", "", "")
    assert lines(CSI + b"?7l" + CSI + b"?7h0123456789abc")[:2] == ("0123456789", "abc")


def test_backspace_tab_and_tab_stops() -> None:
    assert lines(b"abc\x08\x08X") == ("aXc", "", "", "")
    assert lines(b"\x08\x08a") == ("a", "", "", "")
    assert lines(b"a\tb", cols=20) == ("a       b", "", "", "")
    assert lines(b"a\t\t\tb", cols=20)[0] == "a                  b"  # no stop after 16: last column
    # HTS at column 3, TBC 0 clears the one at 8, TBC 3 clears all
    assert lines(b"   " + ESC + b"H\r\tx", cols=20)[0] == "   x"
    assert lines(b"\t" + CSI + b"g\r\tx", cols=20)[0] == "                x"
    assert lines(CSI + b"3g\tx", cols=20)[0] == "                   x"


def test_cursor_forward_and_backward_tabulation() -> None:
    t = term(CSI + b"2Ix" + CSI + b"Zy" + CSI + b"9Zz", cols=30)
    assert t.screen().lines[0] == "z               y"  # y overwrote x: CBT from 17 goes to 16


def test_non_ascii_narrow_text_wraps_like_ascii() -> None:
    t = term("┌─Ελλάδα─┐ok".encode())
    assert t.screen().lines[:2] == ("┌─Ελλάδα─┐", "ok")
    assert t.screen().wrapped[0]


# At the pending-wrap position (cursor just past the last column) tmux, the oracle of the golden
# tests, keeps the pending wrap across LF, lands BS on the last column, counts CUB from the margin,
# and erases nothing with EL/ED 0/ECH; we do the same.


def test_backspace_from_pending_wrap() -> None:
    t = term(b"0123456789\x08X")
    assert t.screen().lines == ("012345678X", "", "", "")
    assert t.cursor == (10, 0)


def test_line_feed_keeps_a_pending_wrap() -> None:
    t = term(b"0123456789\nX")
    assert t.screen().lines == ("0123456789", "", "X", "")
    assert t.screen().wrapped == (False, True, False, False)
    assert t.cursor == (1, 2)


def test_cursor_back_from_pending_wrap() -> None:
    assert lines(b"0123456789" + CSI + b"DX") == ("012345678X", "", "", "")


def test_erase_from_pending_wrap_erases_nothing() -> None:
    assert lines(b"0123456789" + CSI + b"K")[0] == "0123456789"
    assert lines(b"0123456789" + CSI + b"J")[0] == "0123456789"
    assert lines(b"0123456789" + CSI + b"X")[0] == "0123456789"
    assert lines(b"0123456789" + CSI + b"1K")[0] == ""
    t = term(b"0123456789" + CSI + b"K\r\n")  # the line path and the token path agree
    assert t.screen().lines[0] == "0123456789"


def test_bel_nul_del_and_other_c0_are_ignored() -> None:
    t = term(b"a\x07\x00b\x7fc\x01\x1f")
    assert t.screen().lines[0] == "abc"


def test_c1_bytes_are_not_controls_in_utf8() -> None:
    # 0x9b alone is invalid UTF-8 (U+FFFD), not a CSI; U+009B encoded in UTF-8 is dropped.
    assert lines(b"a\x9b31mb") == ("a\ufffd31mb", "", "", "")
    assert lines(b"a\xc2\x9b31mb") == ("a31mb", "", "", "")
    t = term(b"\xc2\x9d0;title\x07x")
    assert t.title == ""


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert lines(b"a\xffb\xc3") == ("a\ufffdb", "", "", "")  # \xc3 waits for its continuation
    t = term(b"a\xc3")
    t.feed(b"\xa9")
    assert t.screen().lines[0] == "a\u00e9"


def test_so_si_and_dec_special_graphics() -> None:
    assert lines(ESC + b"(0lqqk" + ESC + b"(B x") == ("\u250c\u2500\u2500\u2510 x", "", "", "")
    assert lines(ESC + b")0a\x0eqx\x0fq") == ("a\u2500\u2502q", "", "", "")
    assert lines(ESC + b"(0jklmntuvwx")[0] == "\u2518\u2510\u250c\u2514\u253c\u251c\u2524\u2534\u252c\u2502"


# -- wide and combining characters --------------------------------------------------------------


def test_wide_characters_take_two_cells() -> None:
    t = term("中文x".encode())
    s = t.screen()
    assert s.lines[0] == "中文x"
    assert t.cursor == (5, 0)
    assert sum(len(text) for text, _ in s.runs[0]) == 10 - 2  # two placeholders contribute nothing


def test_wide_character_at_the_last_column_wraps_first() -> None:
    t = term("123456789中".encode())
    s = t.screen()
    assert s.lines[:2] == ("123456789", "中")
    assert s.wrapped[0]
    assert t.cursor == (2, 1)


def test_emoji_at_the_margin() -> None:
    t = term("12345678😀😀".encode())
    assert t.screen().lines[:2] == ("12345678😀", "😀")
    assert t.cursor == (2, 1)


def test_wide_character_without_autowrap_stays_on_the_row() -> None:
    assert lines(CSI + "?7l123456789中".encode())[:2] == ("12345678中", "")


def test_overwriting_half_a_wide_character_blanks_the_other_half() -> None:
    assert lines("中文".encode() + CSI + b"2GX") == (" X文", "", "", "")  # right half of 中
    assert lines("中文".encode() + CSI + b"3GX") == ("中X", "", "", "")  # left half of 文
    assert lines("中文".encode() + CSI + b"2G" + CSI + b"K") == ("", "", "", "")
    assert lines("中文".encode() + CSI + b"3G" + CSI + b"1K") == ("", "", "", "")


def test_combining_marks_attach_to_the_previous_cell() -> None:
    t = term(b"e\xcc\x81x")
    assert t.screen().lines[0] == "e\u0301x"
    assert t.cursor == (2, 0)
    t = term("中\u0301".encode())
    assert t.screen().lines[0] == "中\u0301"
    assert lines(b"\xcc\x81a") == ("a", "", "", "")  # nothing to attach to at column 0


def test_combining_marks_per_cell_are_capped() -> None:
    t = term(b"e" + b"\xcc\x81" * 1000)
    assert len(t.screen().lines[0]) <= 16


def test_combining_mark_split_across_feeds() -> None:
    t = term(b"e\xcc")
    t.feed(b"\x81")
    assert t.screen().lines[0] == "e\u0301"


# -- cursor motion -------------------------------------------------------------------------------


def test_cursor_motion() -> None:
    t = Terminal(10, 5)
    t.feed(CSI + b"3;4H")
    assert t.cursor == (3, 2)
    t.feed(CSI + b"A")
    assert t.cursor == (3, 1)
    t.feed(CSI + b"2B")
    assert t.cursor == (3, 3)
    t.feed(CSI + b"3C")
    assert t.cursor == (6, 3)
    t.feed(CSI + b"10D")
    assert t.cursor == (0, 3)
    t.feed(CSI + b"7G")
    assert t.cursor == (6, 3)
    t.feed(CSI + b"2d")
    assert t.cursor == (6, 1)
    t.feed(CSI + b"2E")
    assert t.cursor == (0, 3)
    t.feed(CSI + b"5`")
    assert t.cursor == (4, 3)
    t.feed(CSI + b"F")
    assert t.cursor == (0, 2)
    t.feed(CSI + b"2;2f")
    assert t.cursor == (1, 1)
    t.feed(CSI + b"H")
    assert t.cursor == (0, 0)
    t.feed(CSI + b"0;0H")
    assert t.cursor == (0, 0)


def test_huge_and_odd_parameters_are_clamped() -> None:
    t = Terminal(10, 5)
    t.feed(CSI + b"99999999999999999999B" + CSI + b"99999999999999999999C")
    assert t.cursor == (9, 4)
    t.feed(CSI + b"99999999999999999999A")
    assert t.cursor == (9, 0)
    t.feed(CSI + b"-5;x;;3H")  # not a CSI at all: dropped up to the bad byte, the rest drawn
    assert t.screen().lines[0].endswith("-")


def test_unknown_ed_and_el_modes_do_nothing() -> None:
    # pyte 0.8.2 raises on these; any program can print them.
    assert lines(b"abc\r\ndef" + CSI + b"5J" + CSI + b"9K") == ("abc", "def", "", "")


def test_csi_with_ten_thousand_parameters() -> None:
    t = term(b"x" + CSI + b";".join([b"1"] * 10000) + b"m" + b"y")
    assert t.screen().lines[0] == "xy"
    t = term(b"x" + CSI + b"1;" * 20 + b"31my")
    assert t.screen().runs[0][1] == ("y", Style(fg=1, bold=True))


def test_esc_in_the_middle_of_a_csi_starts_over() -> None:
    assert lines(b"a" + CSI + b"12" + ESC + b"[2Cb") == ("a  b", "", "", "")


def test_control_inside_a_csi_abandons_it() -> None:
    assert lines(b"ab" + CSI + b"1\r2Cx") == ("2Cx", "", "", "")


# -- erasing, inserting, deleting ----------------------------------------------------------------

FILLED = b"abcdefghij\r\nklmnopqrst\r\nuvwxyz0123\r\n456789ABCD"


def test_erase_in_display() -> None:
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"J") == ("abcdefghij", "klmn", "", "")
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"0J") == ("abcdefghij", "klmn", "", "")
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"1J") == ("", "     pqrst", "uvwxyz0123", "456789ABCD")
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"2J") == ("", "", "", "")
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"3J") == ("abcdefghij", "klmnopqrst", "uvwxyz0123", "456789ABCD")


def test_erase_in_line() -> None:
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"K")[1] == "klmn"
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"1K")[1] == "     pqrst"
    assert lines(FILLED + CSI + b"2;5H" + CSI + b"2K")[1] == ""


def test_erase_insert_delete_characters() -> None:
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"3X")[0] == "ab   fghij"
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"2@")[0] == "ab  cdefgh"
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"@")[0] == "ab cdefghi"
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"3P")[0] == "abfghij"
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"99P")[0] == "ab"
    assert lines(FILLED + CSI + b"1;3H" + CSI + b"99@")[0] == "ab"


def test_insert_mode() -> None:
    assert lines(b"abcdef\r" + CSI + b"4hXY" + CSI + b"4lZ")[0] == "XYZbcdef"
    assert lines(b"0123456789\r" + CSI + b"4hXY")[0] == "XY01234567"


def test_erase_uses_the_background_colour() -> None:
    t = term(CSI + b"44m" + CSI + b"2K")
    assert t.screen().runs[0] == (("          ", Style(bg=4)),)


def test_insert_and_delete_lines_in_scroll_region() -> None:
    base = FILLED + CSI + b"2;3r"  # region: rows 2-3
    assert lines(base + CSI + b"2;1H" + CSI + b"L") == ("abcdefghij", "", "klmnopqrst", "456789ABCD")
    assert lines(base + CSI + b"2;1H" + CSI + b"M") == ("abcdefghij", "uvwxyz0123", "", "456789ABCD")
    # outside the region: from the cursor row to the bottom of the screen, as tmux does
    assert lines(base + CSI + b"4;1H" + CSI + b"L") == ("abcdefghij", "klmnopqrst", "uvwxyz0123", "")
    assert lines(base + CSI + b"1;1H" + CSI + b"M") == ("klmnopqrst", "uvwxyz0123", "456789ABCD", "")
    # the cursor stays where it was (tmux; VT510 would go to the left margin)
    t = term(base + CSI + b"2;5H" + CSI + b"L")
    assert t.cursor == (4, 1)
    assert lines(FILLED + CSI + b"2;1H" + CSI + b"2L") == ("abcdefghij", "", "", "klmnopqrst")
    assert lines(FILLED + CSI + b"2;1H" + CSI + b"2M") == ("abcdefghij", "456789ABCD", "", "")


def test_scroll_up_down_and_reverse_index_in_region() -> None:
    base = FILLED + CSI + b"2;3r"
    assert lines(base + CSI + b"S") == ("abcdefghij", "uvwxyz0123", "", "456789ABCD")
    assert lines(base + CSI + b"T") == ("abcdefghij", "", "klmnopqrst", "456789ABCD")
    assert lines(base + CSI + b"2;1H" + ESC + b"M") == ("abcdefghij", "", "klmnopqrst", "456789ABCD")
    assert lines(base + CSI + b"3;1H\n") == ("abcdefghij", "uvwxyz0123", "", "456789ABCD")
    assert lines(base + CSI + b"3;1H" + ESC + b"D") == ("abcdefghij", "uvwxyz0123", "", "456789ABCD")
    assert lines(base + CSI + b"3;5H" + ESC + b"EX") == ("abcdefghij", "uvwxyz0123", "X", "456789ABCD")
    # RI at the top of the screen scrolls the whole screen down
    assert lines(FILLED + CSI + b"H" + ESC + b"M") == ("", "abcdefghij", "klmnopqrst", "uvwxyz0123")


def test_decstbm_homes_the_cursor_and_rejects_empty_regions() -> None:
    t = term(b"abc" + CSI + b"2;3r")
    assert t.cursor == (0, 0)
    t.feed(CSI + b"3;3r" + CSI + b"5;2r")  # invalid: ignored
    t.feed(CSI + b"4;1H\n")  # bottom of the screen, outside the region (2-3): no scroll
    assert t.screen().lines[0] == "abc"


def test_origin_mode() -> None:
    t = term(CSI + b"2;3r" + CSI + b"?6h" + CSI + b"1;1HX" + CSI + b"9;1HY")
    assert t.screen().lines == ("", "X", "Y", "")
    t.feed(CSI + b"?6l")
    assert t.cursor == (0, 0)


def test_repeat_last_character() -> None:
    assert lines(b"ab" + CSI + b"3b") == ("abbbb", "", "", "")
    assert lines(CSI + b"3bx") == ("x", "", "", "")  # nothing printed yet: nothing repeated
    assert lines(b"a" + CSI + b"99999b", cols=5, rows=2) == ("aaaaa", "a")


# -- save/restore, alternate screen, reset --------------------------------------------------------


def test_decsc_decrc_restore_position_style_and_origin() -> None:
    t = term(CSI + b"2;3H" + CSI + b"31m" + ESC + b"7" + CSI + b"0m" + CSI + b"H" + ESC + b"8X")
    assert t.screen().runs[1][1] == ("X", Style(fg=1))
    assert t.cursor == (3, 1)
    t = term(CSI + b"2;3H" + CSI + b"s" + CSI + b"H" + CSI + b"uX")
    assert t.screen().lines[1] == "  X"


def test_alternate_screen_1049_saves_and_restores_main_screen_and_cursor() -> None:
    t = term(b"main\r\nscreen" + CSI + b"?1049h")
    s = t.screen()
    assert s.alternate and s.lines == ("", "", "", "")
    assert t.alternate
    t.feed(CSI + b"H" + b"vim stuff" + CSI + b"3;1Hmore")
    assert t.screen().lines == ("vim stuff", "", "more", "")
    t.feed(CSI + b"?1049l")
    s = t.screen()
    assert not s.alternate
    assert s.lines == ("main", "screen", "", "")
    assert s.cursor == (6, 1)
    t.feed(CSI + b"?1049h")  # entering again clears what the last visit left
    assert t.screen().lines == ("", "", "", "")


def test_alternate_screen_47_and_1047() -> None:
    t = term(b"main" + CSI + b"?47hALT" + CSI + b"?47l")
    assert t.screen().lines[0] == "main"
    t.feed(CSI + b"?47h")
    assert t.screen().lines[0] == "    ALT"  # 47 does not clear
    t.feed(CSI + b"?47l" + CSI + b"?1047h")
    assert t.screen().lines[0] == ""


def test_alternate_screen_never_reported_to_take_lines() -> None:
    t = Terminal(10, 3)
    t.feed(CSI + b"?1049h" + b"".join(b"alt%d\r\n" % i for i in range(10)) + CSI + b"2J" + CSI + b"?1049l")
    assert t.take_lines() == []
    assert t.scrolled == 0


def test_cursor_visibility() -> None:
    assert not term(CSI + b"?25l").screen().cursor_visible
    assert term(CSI + b"?25l" + CSI + b"?25h").screen().cursor_visible


def test_ris_resets_everything_but_the_title() -> None:
    t = term(ESC + b"]2;t\x07" + CSI + b"31m" + CSI + b"?1049hxx" + CSI + b"2;3r" + ESC + b"c")
    s = t.screen()
    assert s.lines == ("", "", "", "")
    assert not s.alternate
    assert s.cursor == (0, 0)
    assert s.title == "t"
    t.feed(b"a")
    assert s.runs[0][0][1] == DEFAULT_STYLE


def test_decaln_fills_the_screen() -> None:
    assert lines(ESC + b"#8", cols=3, rows=2) == ("EEE", "EEE")


@pytest.mark.parametrize(
    "between",
    [
        b"",  # DECALN twice: the second skips every row and must leave the same screen
        CSI + b"2;2H" + CSI + b"31mab",  # text in another colour
        CSI + b"1;1H" + CSI + b"44m" + CSI + b"K",  # a coloured erase of a whole row
        CSI + b"3;1H" + CSI + b"2@",  # insert characters
        CSI + b"2J",  # erase the screen
        CSI + b"2S",  # scroll up: new blank rows at the bottom
        CSI + b"?1049h" + b"alt" + CSI + b"?1049l",  # the alternate screen and back
        b"\n\n\n\n",  # line feeds at the bottom: the screen scrolls
    ],
)
def test_decaln_after_any_change_fills_every_row_again_in_the_default_style(between: bytes) -> None:
    t = term(ESC + b"#8" + between + ESC + b"#8", cols=5, rows=3)
    s = t.screen()
    assert s.lines == ("EEEEE",) * 3
    assert all(run == (("EEEEE", DEFAULT_STYLE),) for run in s.runs)
    assert s.cursor == (0, 0)


def test_decaln_then_a_resize_fills_the_new_width() -> None:
    t = term(ESC + b"#8", cols=5, rows=2)
    t.resize(7, 2)
    t.feed(ESC + b"#8")
    assert t.screen().lines == ("EEEEEEE",) * 2


# -- SGR -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sgr", "style"),
    [
        (b"1", Style(bold=True)),
        (
            b"2;3;4;5;7;8;9",
            Style(dim=True, italic=True, underline=True, blink=True, reverse=True, hidden=True, strike=True),
        ),
        (b"1;22", DEFAULT_STYLE),
        (b"4;24;7;27;9;29;3;23;5;25;8;28", DEFAULT_STYLE),
        (b"21", Style(underline=True)),
        (b"31;42", Style(fg=1, bg=2)),
        (b"91;102", Style(fg=9, bg=10)),
        (b"31;39;41;49", DEFAULT_STYLE),
        (b"38;5;196", Style(fg=196)),
        (b"48;5;17", Style(bg=17)),
        (b"38;2;255;128;0", Style(fg=0x1000000 | 0xFF8000)),
        (b"48;2;1;2;3", Style(bg=0x1000000 | 0x010203)),
        (b"38:5:196", Style(fg=196)),
        (b"38:2::255:128:0", Style(fg=0x1000000 | 0xFF8000)),
        (b"38:2:255:128:0", Style(fg=0x1000000 | 0xFF8000)),
        (b"48:2:0:1:2:3", Style(bg=0x1000000 | 0x010203)),
        (b"4:3", Style(underline=True)),
        (b"4:0", DEFAULT_STYLE),
        (b"1;38;5;300;4", Style(bold=True, underline=True)),  # bad index: colour ignored
        (b"38;2;300;0;0", DEFAULT_STYLE),
        (b"38;5", DEFAULT_STYLE),
        (b"1;0;3", Style(italic=True)),
        (b"1;;3", Style(italic=True)),  # an empty parameter is 0
        (b"", DEFAULT_STYLE),
        (b"53;73;999;12", DEFAULT_STYLE),  # unknown: ignored
        (b"58;5;3;1", Style(bold=True)),  # underline colour: consumed, ignored
    ],
)
def test_sgr(sgr: bytes, style: Style) -> None:
    t = term(CSI + b"7m" + CSI + b"0m" + CSI + sgr + b"mX" + CSI + b"0;7mY")
    assert t.screen().runs[0][0] == ("X", style)


def test_runs_cover_every_column() -> None:
    t = term(b"ab" + CSI + b"31mcd" + CSI + b"0m" + "中".encode())
    runs = t.screen().runs[0]
    assert runs == (("ab", DEFAULT_STYLE), ("cd", Style(fg=1)), ("中    ", DEFAULT_STYLE))


# -- OSC and other strings: consumed ---------------------------------------------------------------


def test_title_from_osc_0_and_2_without_control_characters() -> None:
    assert term(ESC + b"]0;hello\x07").title == "hello"
    assert term(ESC + b"]2;a\x01b\x7fc\xc2\x9bd" + ESC + b"\\").title == "abcd"
    assert term(ESC + b"]2;" + b"x" * 1000 + b"\x07").title == "x" * 256
    t = term(ESC + b"]1;icon\x07" + ESC + b"]2;win\x07" + ESC + b"]0;")  # unterminated: not yet set
    assert t.title == "win"
    assert t.screen().title == "win"


@pytest.mark.parametrize(
    "sequence",
    [
        ESC + b"]52;c;aGVsbG8=\x07",  # clipboard write
        ESC + b"]52;c;aGVsbG8=" + ESC + b"\\",
        ESC + b"]8;;http://evil/\x07link" + ESC + b"]8;;\x07",
        ESC + b"]4;1;rgb:ff/00/00\x07",
        CSI + b"6n",  # DSR
        CSI + b"c",
        CSI + b">c",
        CSI + b"=c",
        ESC + b"P$qm" + ESC + b"\\",  # DECRQSS
        ESC + b"P1$r0m" + ESC + b"\\",
        ESC + b"_Gf=100;AAAA" + ESC + b"\\",  # APC (kitty graphics)
        ESC + b"^privacy" + ESC + b"\\",
        ESC + b"Xsos" + ESC + b"\\",
        CSI + b"8;50;100t",
        CSI + b"?1000h" + CSI + b"?1006h" + CSI + b"?2004h",
        CSI + b">1u" + CSI + b"?u" + CSI + b"2 q" + CSI + b">4;1m",
        ESC + b"=" + ESC + b">" + ESC + b"%G" + ESC + b"N",
    ],
)
def test_queries_strings_and_modes_are_consumed_leaving_no_trace(sequence: bytes) -> None:
    t = term(b"a" + sequence + b"b")
    s = t.screen()
    assert s.lines == ("ab" if b"link" not in sequence else "alinkb", "", "", "")
    assert all(style == DEFAULT_STYLE for row in s.runs for _, style in row)
    assert s.title == ""
    assert not s.alternate


def test_string_split_across_feeds() -> None:
    t = term(b"a" + ESC + b"]52;c;aGVs")
    t.feed(b"bG8=" + ESC)
    t.feed(b"\\b")
    assert t.screen().lines[0] == "ab"


def test_unterminated_string_is_abandoned_after_the_cap() -> None:
    t = Terminal(80, 4)
    t.feed(ESC + b"]52;c;" + b"A" * 20000)
    t.feed(b"\r\n" + b"visible")
    assert "visible" in t.screen().lines
    t = Terminal(80, 4)
    t.feed(ESC + b"P" + b"q" * 100)
    t.feed(b"\x18after")  # CAN aborts a string
    assert t.screen().lines[0] == "after"


def test_esc_ends_a_string_and_starts_a_sequence() -> None:
    assert lines(b"a" + ESC + b"]0;t" + CSI + b"31mb")[0] == "ab"
    assert term(b"a" + ESC + b"]0;t" + CSI + b"31mb").screen().runs[0][1] == ("b", Style(fg=1))


# -- resize --------------------------------------------------------------------------------------


def test_resize_grow_keeps_content_top_left() -> None:
    t = term(b"abc\r\ndef", cols=4, rows=2)
    t.resize(6, 3)
    s = t.screen()
    assert (s.cols, s.rows) == (6, 3)
    assert s.lines == ("abc", "def", "")
    assert s.cursor == (3, 1)
    assert [sum(len(x) for x, _ in row) for row in s.runs] == [6, 6, 6]


def test_resize_shrink_scrolls_lines_off_the_top_like_xterm() -> None:
    t = term(b"l1\r\nl2\r\nl3\r\nl4", cols=4, rows=4)
    t.resize(3, 2)
    assert t.screen().lines == ("l3", "l4")
    assert t.cursor == (2, 1)
    assert t.take_lines() == ["l1", "l2"]
    assert t.scrolled == 2


def test_resize_shrink_drops_rows_below_the_cursor_first() -> None:
    t = term(b"l1\r\nl2" + CSI + b"4;1Hl4" + CSI + b"2;1H", cols=4, rows=4)
    t.resize(4, 2)
    assert t.screen().lines == ("l1", "l2")
    assert t.take_lines() == []


def test_resize_cuts_wide_character_in_half() -> None:
    t = term("ab中".encode(), cols=4, rows=1)
    t.resize(3, 1)
    assert t.screen().lines == ("ab",)
    assert t.cursor == (2, 0)


def test_resize_resets_the_scroll_region_and_clamps() -> None:
    t = term(CSI + b"2;3r" + CSI + b"4;4H", cols=4, rows=4)
    t.resize(2, 2)
    assert t.cursor == (1, 1)
    t.feed(b"\n\nx")
    assert t.screen().lines[1] == " x"


def test_resize_on_the_alternate_screen_resizes_both() -> None:
    t = term(b"main" + CSI + b"?1049h" + CSI + b"Halt", cols=6, rows=3)
    t.resize(3, 2)
    assert t.screen().lines == ("alt", "")
    t.feed(CSI + b"?1049l")
    assert t.screen().lines == ("mai", "")


def test_sizes_are_clamped() -> None:
    t = Terminal(0, 100000)
    assert (t.cols, t.rows) == (1, 500)
    t.resize(5000, -3)
    assert (t.cols, t.rows) == (1000, 1)


# -- take_lines and scrolled --------------------------------------------------------------------


def test_take_lines_reports_scrolled_rows_joined_across_soft_wraps() -> None:
    t = Terminal(5, 2)
    t.feed(b"one\r\n\r\n0123456789ab\r\nlast")
    # "0123456789ab" is one logical line; its last row is still on screen: held back
    assert t.take_lines() == ["one"]
    assert t.screen().lines == ("ab", "last")
    assert t.scrolled == 4  # one, blank, 01234, 56789
    assert t.take_lines(end=True) == ["0123456789"]
    t.feed(b"\r\n")
    assert t.take_lines() == ["ab"]


def test_take_lines_reports_the_screen_erased_as_a_whole() -> None:
    t = Terminal(10, 3)
    t.feed(b"a\r\n\r\nb" + CSI + b"H" + CSI + b"2J")
    assert t.take_lines() == ["a", "b"]
    t.feed(b"c" + CSI + b"H" + CSI + b"J")  # ED 0 from home erases everything too
    assert t.take_lines() == ["c"]
    t.feed(b"d" + ESC + b"c")
    assert t.take_lines() == ["d"]
    t.feed(b"e" + CSI + b"3J")  # ED 3: the scrollback only; the screen stays
    assert t.take_lines() == []


def test_take_lines_reports_rows_scrolled_out_of_a_region_below_the_top() -> None:
    # A pinned header must not hide what scrolls under it from the index (the attack review).
    t = Terminal(10, 4)
    t.feed(b"keep" + CSI + b"2;4r" + CSI + b"4;1H" + b"x\r\ny\r\nz\r\n")
    assert t.take_lines() == ["x"]
    assert t.scrolled == 0  # whole-screen scrolls only: the header row did not move
    assert t.screen().lines[0] == "keep"


def test_take_lines_reports_scrolls_of_a_region_at_the_top() -> None:
    # tmux keeps its status line out of the region: what scrolls off row 0 is still output
    t = Terminal(10, 4)
    t.feed(CSI + b"1;3r" + CSI + b"4;1Hstatus" + CSI + b"3;1H" + b"a\r\nb\r\nc\r\n")
    assert t.take_lines() == ["a"]
    assert t.screen().lines == ("b", "c", "", "status")


def test_take_lines_is_capped() -> None:
    from replay._terminal import MAX_TAKEN

    t = Terminal(10, 1)
    t.feed(b"".join(b"%d\r\n" % i for i in range(MAX_TAKEN + 10)))
    taken = t.take_lines()
    assert len(taken) == MAX_TAKEN
    assert taken[0] == "10"
    assert t.dropped_lines == 10


def test_line_and_is_wrapped_match_the_screen() -> None:
    t = term(b"0123456789abc\r\n" + "中x".encode())
    s = t.screen()
    for y in range(t.rows):
        assert t.line(y) == s.lines[y]
        assert t.is_wrapped(y) == s.wrapped[y]


def test_screen_is_a_value() -> None:
    t = term(b"abc")
    s = t.screen()
    t.feed(b"\rxyz")
    assert s.lines[0] == "abc"
    assert isinstance(s, Screen)
    hash(s)


# -- dump / load ---------------------------------------------------------------------------------

BUSY = (
    b"prompt$ ls\r\n"
    + CSI
    + b"1;34mdir"
    + CSI
    + b"0m  file\r\n"
    + "中文 e\u0301 😀\r\n".encode()
    + ESC
    + b"(0lqk"
    + ESC
    + b"(B"
    + CSI
    + b"?1049h"
    + CSI
    + b"2;3r"
    + CSI
    + b"44mvim"
    + ESC
    + b"7"
    + ESC
    + b"]2;title\x07"
    + CSI
    + b"?25l"
    + b"\xe4\xb8"  # half a character
)


def test_dump_load_round_trip_keeps_everything() -> None:
    t = term(BUSY, cols=12, rows=5)
    d = t.dump()
    u = Terminal.load(d)
    assert u.dump() == d
    assert u.screen() == t.screen()
    for more in (b"\xad!", CSI + b"?1049l" + b"x", ESC + b"8y\r\n\n\n\n\nz"):
        a, b = Terminal.load(d), Terminal.load(d)
        a.feed(more)
        b_ref = term(BUSY, cols=12, rows=5)
        b_ref.feed(more)
        assert a.screen() == b_ref.screen()
        del b


def test_dump_load_keeps_a_pending_escape_and_string() -> None:
    for cut in (CSI + b"3", ESC, ESC + b"(", ESC + b"]0;ti"):
        t = term(b"ab" + cut)
        u = Terminal.load(t.dump())
        for x in (t, u):
            x.feed(b"1Ctle\x07z")
        assert u.screen() == t.screen()


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"not msgpack at all",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"v": 2}),
        msgpack.packb({"v": 1}),
        msgpack.packb({"v": 1, "size": [10**9, 10**9]}),
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xdb\xff\xff\xff\xff",  # a string claiming 4 GB
        b"\x91" * 100000,  # deeply nested
    ],
)
def test_load_rejects_garbage_with_replay_error(garbage: bytes) -> None:
    with pytest.raises(ReplayError):
        Terminal.load(garbage)


def test_load_rejects_each_field_tampered() -> None:
    good = msgpack.unpackb(term(BUSY, cols=12, rows=5).dump())
    bad_values: list[object] = [None, -1, 10**6, "x", [], [1], {"a": 1}, True, b"\x1b", 2**63, -(2**63)]
    for key in good:
        for bad in bad_values:
            state = dict(good)
            state[key] = bad
            try:
                Terminal.load(msgpack.packb(state))
            except ReplayError:
                continue


def test_load_rejects_control_characters_and_broken_wide_cells() -> None:
    good = msgpack.unpackb(term(b"abc", cols=3, rows=1).dump())
    for row in ("a\x1bc", "ab\x9b", ["a", "", "c"], "ab中", ["中", "x", "c"], ["a", "b", "c" * 17], "abcd"):
        state = dict(good)
        state["main"] = [[[row, [0, 3]]], [False]]
        with pytest.raises(ReplayError):
            Terminal.load(msgpack.packb(state))
    state = dict(good)
    state["title"] = "a\x07b"
    with pytest.raises(ReplayError):
        Terminal.load(msgpack.packb(state))


def test_a_cursor_saved_before_a_shrink_survives_dump_and_load() -> None:
    # Found by the seek index: the saved cursor (DECSC) kept its place beyond the new size, and
    # load() refused the terminal's own dump, so seeks fell back to an earlier keyframe.
    t = Terminal(40, 12)
    t.feed(b"\x1b[5;30H\x1b7")
    t.resize(10, 3)
    u = Terminal.load(t.dump())
    assert u.dump() == t.dump()
    for term in (t, u):
        term.resize(40, 12)
        term.feed(b"\x1b8X")
    assert t.screen() == u.screen() and u.cursor == (30, 4)


def test_a_bounded_feed_stops_after_its_budget_and_says_what_it_spent_and_dropped() -> None:
    """``Terminal.work`` counts cells rebuilt by whole-row operations; within a ``WorkBudget``'s
    credit a feed stops one operation past it and drops the rest of its bytes."""
    from replay import WorkBudget

    t = Terminal(10, 4)
    costly = (ESC + b"#8" + CSI + b"2J") * 10  # each pair rebuilds 2 x 4 rows of 10 cells
    budget = WorkBudget(100, 0)
    data = costly + b"tail"
    start = t.work
    dropped = budget.run(t, 0, lambda: t.feed(data), len(data))
    spent = t.work - start
    assert 100 <= spent <= 100 + 80  # one operation past the budget at most (40 cells, 4 rows looked at)
    assert dropped > len(b"tail")  # the remaining pairs and the tail: not interpreted
    assert "tail" not in "".join(t.screen().lines)
    t.feed(costly + b"tail")  # outside the budget: no bound
    assert t.work - start - spent >= 9 * 80 and "tail" in t.screen().lines[0]
    assert budget.run(t, 0, lambda: t.feed(data), len(data)) == len(data)  # no credit left: all skipped
