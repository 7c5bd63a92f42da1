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


def _hydra_run_names(task_name: str) -> tuple[str, str | None]:
    """(group, name) for W&B: in a multirun the group is ``<task>/<sweep dir>`` and each job is named by its number
    and overrides; a single run is grouped under its task."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return task_name, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return task_name, None
    overrides = ",".join(hc.overrides.task)
    return f"{task_name}/{Path(hc.sweep.dir).name}", f"{hc.job.num}:{overrides}" if overrides else str(hc.job.num)


def choice_tags() -> list[str]:
    """``group=option`` for the run's chosen config groups (``dataset=rus``, ``objective=unimodal``, ...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    return [f"{group}={option}" for group, option in choices.items()
            if option and not group.startswith("hydra") and "@" not in group and group not in ("paths", "callbacks")]


def wandb_logger(offline: bool | str = "auto", task_name: str = "train", group: str | None = None,
                 name: str | None = None, tags: list[str] | None = None, **kwargs):
    """A ``WandbLogger``; ``offline="auto"`` goes offline when no API key is configured and ``WANDB_MODE`` is unset.

    ``group``/``name`` default to the experiment (``task_name``) and, in a multirun, the sweep and the job, so every
    job of a sweep is its own W&B run and a sweep is one group; ``tags`` default to the chosen group options. Offline runs land in
    ``<save_dir>/wandb/offline-run-*``; upload them later with ``wandb sync``.
    """
    from pytorch_lightning.loggers import WandbLogger

    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") is None and not wandb_has_credentials()
        if offline:
            log.info("W&B: no API key configured, logging offline (sync later with `wandb sync`)")
    default_group, default_name = _hydra_run_names(task_name)
    return WandbLogger(offline=bool(offline), group=group or default_group, name=name or default_name,
                       tags=list(tags) if tags is not None else choice_tags(), **kwargs)
