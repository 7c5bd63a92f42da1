"""Logger factories that pick sensible modes for the machine they run on."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    """True when an API key is configured (env var or ~/.netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(offline: bool | str = "auto", **kwargs):
    """A ``WandbLogger``; ``offline="auto"`` goes offline when no API key is configured and ``WANDB_MODE`` is unset.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; upload them later with ``wandb sync``.
    """
    from pytorch_lightning.loggers import WandbLogger

    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") is None and not wandb_has_credentials()
        if offline:
            log.info("W&B: no API key configured, logging offline (sync later with `wandb sync`)")
    return WandbLogger(offline=bool(offline), **kwargs)
