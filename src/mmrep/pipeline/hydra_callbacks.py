"""Hydra callbacks (``hydra.callbacks``) that act before Hydra itself touches the disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mmrep.core.files import nearest_existing


def _check_creatable(folder: str, key: str) -> None:
    """Exit with one line when ``folder`` cannot be created or written (Hydra would raise a traceback)."""
    path = Path(folder)
    probe = nearest_existing(path)
    if probe.exists() and not probe.is_dir():
        reason = f"{probe} is a file, not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"{probe} is not writable"
    else:
        return
    print(
        f"mmrep: error: {key}: cannot create the output folder {path} ({reason}); set paths.log_dir (or "
        f"{key}) to a writable place",
        file=sys.stderr,
    )
    sys.exit(1)


class CheckOutputFolder(Callback):
    """A run or sweep whose output folder cannot be created fails with one line before anything starts."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_creatable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_creatable(config.hydra.sweep.dir, "hydra.sweep.dir")
