"""zsp: the application (CLI, bastion, grants, store, audit log, reviewer TUI)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
