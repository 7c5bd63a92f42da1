"""The study's storage as every process of a sweep must see it, and the sweeper's one-line exit."""

from __future__ import annotations

import sys
from pathlib import Path


def sweep_error(message: str) -> None:
    """End the sweep with one line (the sweeper runs outside any job's error handling)."""
    print(f"mmrep: error: {message}", file=sys.stderr)
    sys.exit(1)


def anchored_storage(storage):
    """A relative ``sqlite:///path`` made absolute (the launch folder) with its folder created; others unchanged."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return storage
    path = Path(storage[len("sqlite:///") :])
    if str(path) in ("", ":memory:"):
        return storage
    path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        sweep_error(f"hydra.sweeper.storage: cannot create {path.parent} for the study database ({err.strerror})")
    return f"sqlite:///{path}"
