"""Recognise the commands that stock ``scp`` and ``sftp`` clients run on the server side.

File transfer goes through zsp over SFTP only: the ``sftp`` subsystem (what ``sftp`` and modern
``scp`` request) is relayed and recorded operation by operation by bastion/sftp.py, under a grant
whose policy rule has ``file_transfer = true``. An exec request whose program is a file-transfer
server is still refused: ``scp -O`` (legacy mode) runs ``scp -t``/``scp -f``, and ``sftp -s PATH``
runs whatever ``PATH`` names; their binary protocols would run through a session channel that is
recorded byte for byte but replays as noise, with no per-file hashes.

What this refusal achieves, honestly: it stops stock clients from taking that unrecorded-as-files
path, and tells the operator which way works. It is not a boundary: a grant allows running any
command, and ``ssh host 'cat > f' < f`` moves a file too (recorded, like every byte of the
session). So the program is found the way a shell would find it, by its base name after
shell-style splitting, skipping ``NAME=value`` assignments and the ``env``/``exec``/``command``
wrappers; a command built to hide the program (``sh -c '...'``) is not chased.
"""

from __future__ import annotations

import os.path
import re
import shlex

__all__ = ["TRANSFER_PROGRAMS", "transfer_program"]

TRANSFER_PROGRAMS = frozenset({"scp", "sftp-server", "internal-sftp"})
"""Base names of the programs file-transfer clients run at the far end."""

_WRAPPERS = frozenset({"env", "exec", "command"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


def transfer_program(command: str | None) -> str | None:
    """The file-transfer program ``command`` runs (its base name), or None if it runs another."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: the shell will refuse it too; judge the plain words
        words = command.split()
    for word in words:
        if _ASSIGNMENT.fullmatch(word) or word.startswith("-"):
            continue  # VAR=value before the program; options of a wrapper (env -i)
        name = os.path.basename(word)
        if name in _WRAPPERS:
            continue
        return name if name in TRANSFER_PROGRAMS else None
    return None
