"""The review app (Textual): browse, search and replay sessions, watch live ones, decide requests,
read the audit log. ``zsp review`` on the bastion host, ``ssh -t review@BASTION`` through it."""

from __future__ import annotations

from .app import ReviewApp
from .context import REVIEW_ROLES, Area, ReviewContext, Reviewer

__all__ = ["REVIEW_ROLES", "Area", "ReviewApp", "ReviewContext", "Reviewer"]
