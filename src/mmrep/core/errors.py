"""The exceptions a run ends with: bad user input (:class:`ConfigError`, naming the config key or file), metrics
that failed after training, and SIGTERM."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """Raised at start-up when a config value (or an input file) cannot work.

    The message always starts with the config key, e.g. ``bias.theta: index 12 out of range 0..9``.
    """


def check_positive_ints(prefix: str, **values) -> None:
    """Raise ``ConfigError("<prefix>.<name>: must be a positive integer, got ...")`` for the first value that is
    not an integer >= 1 (Python or numpy)."""
    import numpy as np

    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{prefix}.{name}: must be a positive integer, got {value!r}")


class MetricsFailed(RuntimeError):
    """Some metrics failed after training; the others' rows and the checkpoints were kept (the message says where)."""


class Terminated(Exception):
    """The run received SIGTERM; a resumable checkpoint was written to ``path``."""

    def __init__(self, step: int, path: Path | None) -> None:
        resume = f"; resume with ckpt_path={path}" if path else ""
        super().__init__(f"terminated by SIGTERM at step {step}{resume}")
        self.step, self.path = step, path
