"""Evidence for people without an account on the bastion: signed exports of recorded sessions.

``zsp export`` writes one of four formats for the sessions it is given (:class:`ExportJob`):

* ``bundle``: a tar holding the recordings, the grants they ran under, an excerpt of the audit
  log with the checkpoint signatures that cover it, a manifest of every file's hashes signed in
  OpenSSH's SSHSIG format, ``SHA256SUMS`` and a standalone ``verify.py`` (docs/EXPORT.md);
* ``asciicast`` / ``asciicast3``: asciinema files, with an SSHSIG ``.sig`` beside them;
* ``text``: a plain transcript for a ticket, with its ``.sig``.

``--redact`` replaces matching bytes in every format; in a bundle the manifest lists each changed
frame with its original chain head, so a verifier proves that nothing else changed.

A bundle's manifest lists the files its sessions transferred (SFTP, scp) as the recordings give
them; ``--files`` adds their content, each checked against its recorded sha256 (:mod:`.transfers`).
"""

from __future__ import annotations

from .job import EXPORT_EVENT, FORMATS, ExportJob, Prepared, SelectedSession

__all__ = ["EXPORT_EVENT", "FORMATS", "ExportJob", "Prepared", "SelectedSession"]
