"""The SSH bastion: operators in with stock OpenSSH, recorded sessions out, grants enforced."""

from __future__ import annotations

from .control import SshHint, run_control
from .server import Bastion, Limits

__all__ = ["Bastion", "Limits", "SshHint", "run_control"]
