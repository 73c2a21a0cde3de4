"""``zsp`` subcommands, one module per area. Each module has ``register(sub, common)``."""

from __future__ import annotations

from . import (
    access,
    admin,
    audit,
    export,
    files,
    holds,
    migrate,
    recording,
    review,
    reviews,
    rules,
    search,
    serve,
    sessions,
    storage,
    targets,
    unseal,
)

__all__ = ["MODULES"]

MODULES = (
    serve,
    sessions,
    recording,
    admin,
    access,
    holds,
    audit,
    targets,
    unseal,
    search,
    review,
    export,
    files,
    rules,
    migrate,
    storage,
    reviews,
)
