"""Splitting a control command line as the operator meant it, after ssh has joined it.

OpenSSH sends the remote command as one string: the words the local shell produced, joined with
spaces. ``ssh zsp@b request db1 --for 30m --reason "INC-7 vacuum"`` arrives as
``request db1 --for 30m --reason INC-7 vacuum``, the quotes gone. So a reason is every word
after ``--reason`` up to the next option of the same command (or the end), joined by single
spaces. Quoting for the remote side (``--reason "'INC-7 vacuum'"``, or the whole command in
quotes) still works: the line is split with :func:`shlex.split` first. An apostrophe in a bare
reason (``--reason can't log in``) would unbalance shlex, so after ``--reason`` such a line is
split on whitespace instead.
"""

from __future__ import annotations

import io
import shlex

from .exceptions import UsageError

__all__ = ["REASON_STOPS", "join_reason", "split_command"]

REASON = "--reason"
NOTE = "--note"

REASON_STOPS: dict[str, frozenset[str]] = {
    "request": frozenset({"--login", "--for", "--break-glass", REASON}),
    "deny": frozenset({REASON}),
    "revoke": frozenset({REASON}),
    "review-mark": frozenset({NOTE, "--json"}),
}
"""Commands whose ``--reason`` (or :data:`_TAKES_WORDS`' option) takes the rest of the words, and
the options that end it."""
_TAKES_WORDS = {"review-mark": NOTE}
"""The option that takes the rest of the words, where it is not ``--reason``."""


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError as exc:
        first = exc
    # Unbalanced quotes. Take shell words up to --reason, then plain whitespace-separated words.
    stream = io.StringIO(command)
    lex = shlex.shlex(stream, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    words: list[str] = []
    try:
        while (tok := lex.get_token()) is not None:
            words.append(tok)
            if tok in (REASON, NOTE):
                rest = command[stream.tell() :]
                return words + rest.split()
    except ValueError:
        pass
    raise UsageError(f"cannot parse the command: {first}") from None


def split_command(command: str) -> list[str]:
    """The argv of a control command line, with a multi-word ``--reason`` joined into one word."""
    argv = _words(command)
    if argv and argv[0] == "zsp":
        argv = argv[1:]
    return join_reason(argv)


def join_reason(argv: list[str], more_stops: frozenset[str] = frozenset()) -> list[str]:
    """``argv`` (command first) with the words of ``--reason`` joined into one, up to the
    command's next option (or one of ``more_stops``: the console's ``--as``, ``--data``). The
    console uses it too, so a reason needs no quotes there either."""
    stops = REASON_STOPS.get(argv[0]) if argv else None
    if stops is None:
        return argv
    stops |= more_stops
    option = _TAKES_WORDS.get(argv[0], REASON)
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word != option and not word.startswith(option + "="):
            out.append(word)
            i += 1
            continue
        parts = [word.partition("=")[2]] if "=" in word else []
        i += 1
        while i < len(argv) and argv[i] not in stops and argv[i].partition("=")[0] not in stops:
            parts.append(argv[i])
            i += 1
        if not parts:
            out.append(option)  # no words: argparse reports "expected one argument"
        else:
            # One word, in the --opt=value form so a reason starting with "-" is not read as an option.
            out.append(f"{option}={' '.join(parts)}")
    return out
