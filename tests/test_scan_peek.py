"""``Scanner.peek_enter``: what an Enter typed now would be read as, without feeding anything.

The live rules gate (zsp_tui/rules/engine.py) decides on a command line before its Enter is
recorded or sent; it must read the line exactly as the scanner will once the Enter is fed."""

from __future__ import annotations

import random

from recorder import Event, Frame, FrameKind
from replay import Command, Scanner, keys_text

PROMPT = b"user@host:~$ "


class Session:
    """A scanner driven frame by frame, with a shell-like echo."""

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self.scanner = Scanner(cols, rows)
        self.seq = 0
        self.commands: list[Command] = []

    def _feed(self, kind: FrameKind, data: object) -> None:
        self.seq += 1
        items = self.scanner.feed(Frame(self.seq, kind, self.seq * 1000, data))  # type: ignore[arg-type]
        self.commands += [i for i in items if isinstance(i, Command)]

    def out(self, data: bytes) -> None:
        self._feed(FrameKind.OUTPUT, data)

    def key(self, data: bytes) -> None:
        self._feed(FrameKind.INPUT, data)

    def typed(self, text: bytes) -> None:
        """Each key echoed before the next one, as a shell does."""
        for c in text:
            self.key(bytes([c]))
            self.out(bytes([c]))


def test_reads_the_echoed_line_like_the_scanner_does() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"ls -l /tmp")
    assert s.scanner.peek_enter(b"") == ("ls -l /tmp", b"ls -l /tmp")
    s.key(b"\r")
    assert [c.text for c in s.commands] == ["ls -l /tmp"]


def test_is_pure() -> None:
    """Peeking changes nothing: the commands, their keys and the screen are the same as without."""
    rnd = random.Random(7)
    for _ in range(30):
        a, b = Session(), Session()
        for s in (a, b):
            s.out(PROMPT)
        for step in range(12):
            choice = rnd.random()
            word = rnd.choice([b"ls", b"cat x", b"\x1b[A", b"\x7f", b"\x03", b"echo hi", b"\t"])
            if choice < 0.1:
                # the peek at every prefix, even one holding Enters and Ctrl-C
                for k in range(len(word) + 2):
                    a.scanner.peek_enter((word + b"\r" + word)[:k])
            for s in (a, b):
                if choice < 0.5:
                    s.typed(word)
                elif choice < 0.8:
                    s.key(word + b"\r")
                    s.out(b"\r\n" + PROMPT)
                else:
                    s.out(b"output %d\r\n" % step + PROMPT)
        assert [(c.text, c.keys) for c in a.commands] == [(c.text, c.keys) for c in b.commands]
        assert a.scanner.term.screen() == b.scanner.term.screen()
        assert a.scanner.finish() == b.scanner.finish()


def test_tab_completion_and_history_recall_are_read_off_the_screen() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"cat /etc/sha")
    s.key(b"\t")
    s.out(b"dow ")  # completed by the shell
    shown, keys = s.scanner.peek_enter(b"") or (None, b"")
    assert shown == "cat /etc/shadow" and keys == b"cat /etc/sha\t"
    assert keys_text(keys) == "cat /etc/sha"  # what the keys alone spell
    s.key(b"\r")
    s.out(b"\r\n" + PROMPT)
    s.key(b"\x1b[A")
    s.out(b"cat /etc/shadow")  # recalled
    assert s.scanner.peek_enter(b"") == ("cat /etc/shadow", b"\x1b[A")
    s.key(b"\r")
    assert [c.text for c in s.commands] == ["cat /etc/shadow", "cat /etc/shadow"]


def test_keys_not_yet_echoed_give_no_screen_line() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"echo ")
    # pasted in the same chunk as the Enter: the screen has not shown it
    assert s.scanner.peek_enter(b"one two") == (None, b"echo one two")
    # typed, not echoed yet (output has not come since the keystroke)
    s.key(b"x")
    assert s.scanner.peek_enter(b"") == (None, b"echo x")


def test_keys_after_an_enter_in_the_chunk_start_a_new_line() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"first")
    assert s.scanner.peek_enter(b"\rsecond") == (None, b"second")
    assert s.scanner.peek_enter(b" more\r\nthird") == (None, b"third")
    assert s.scanner.peek_enter(b"\r") == (None, b"")


def test_ctrl_c_abandons_the_line() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"rm -rf /tmp/x")
    assert s.scanner.peek_enter(b"\x03ls") == (None, b"ls")
    s.key(b"\x03")
    s.out(b"^C\r\n" + PROMPT)
    assert s.scanner.peek_enter(b"") == (None, b"")
    s.typed(b"pwd")
    assert s.scanner.peek_enter(b"") == ("pwd", b"pwd")


def test_the_alternate_screen_makes_no_command_line() -> None:
    s = Session()
    s.out(PROMPT)
    s.typed(b"less notes")
    s.key(b"\r")
    s.out(b"\r\n\x1b[?1049h\x1b[Hnotes\r\n:")
    assert s.scanner.peek_enter(b"/secret") is None
    s.key(b"q")
    s.out(b"\x1b[?1049l" + PROMPT)
    s.typed(b"id")
    assert s.scanner.peek_enter(b"") == ("id", b"id")


def test_an_enter_on_an_empty_line_reads_nothing() -> None:
    s = Session()
    s.out(PROMPT)
    assert s.scanner.peek_enter(b"") == (None, b"")


def test_masked_input_is_not_in_the_keys() -> None:
    s = Session()
    s.out(b"Password: ")
    s.seq += 1
    s.scanner.feed(Frame(s.seq, FrameKind.EVENT, 0, Event("input.masked", "", {"bytes": 8, "run": 1})))
    s.out(b"\r\n" + PROMPT)
    s.typed(b"id")
    assert s.scanner.peek_enter(b"") == ("id", b"id")


def test_keys_are_capped_like_a_command_s() -> None:
    from replay._scan import MAX_KEYS

    s = Session()
    s.out(PROMPT)
    s.key(b"x" * (MAX_KEYS - 10))
    shown, keys = s.scanner.peek_enter(b"y" * 100) or (None, b"")
    assert shown is None and len(keys) == MAX_KEYS and keys.endswith(b"y" * 10)
    s.key(b"y" * 100 + b"\r")
    s.scanner.finish()
