"""The ``zsp`` command line.

Each subcommand is a small function taking parsed arguments and returning an exit status.
User mistakes (a missing file, an uninitialised data dir) become one ``zsp: error: ...`` line and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from replay import printable

from . import __version__
from .command_line import join_reason
from .commands import MODULES
from .exceptions import ZspError

__all__ = ["build_parser", "main"]


_CONSOLE_STOPS = frozenset({"--as", "--data", "-h", "--help"})
"""Console options that end a ``--reason`` besides the command's own."""


def _err(message: str) -> None:
    # Messages embed what the user typed or what a file held: one escaped line, never raw controls.
    print(f"zsp: error: {printable(message)}", file=sys.stderr)


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsp",
        description="Zero-standing-privilege SSH bastion with tamper-evident session recordings.",
    )
    parser.add_argument("--version", action="version", version=f"zsp {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        metavar="DIR",
        help="data directory (default: $ZSP_DATA, else $XDG_DATA_HOME/zsp, else ~/.local/share/zsp)",
    )
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # A reason is the rest of its words, as over ssh (command_line.py): no quotes needed.
    words = join_reason(list(sys.argv[1:] if argv is None else argv), _CONSOLE_STOPS)
    args = parser.parse_args(words)
    try:
        code: int = args.func(args)
    except ZspError as exc:
        _err(str(exc))
        return exc.exit_code
    except UnicodeEncodeError as exc:
        # An argument with bytes that are not UTF-8 (Python keeps them as surrogates) reached
        # something that stores text: refuse it in one line (the transaction rolled back).
        text = exc.object if isinstance(exc.object, str) else ""
        _err(f"not valid UTF-8 text, nothing was changed: {text[:200]}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Reader went away (`zsp verify ... | head`): stop quietly, as coreutils do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code
