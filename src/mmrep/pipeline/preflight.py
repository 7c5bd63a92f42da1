"""Checks of a composed run config that fail before any work: unknown top-level keys, a non-integer seed, a
trainer that cannot run here. Each failure is a ConfigError naming the key."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mmrep.core.configs import CONF_DIR
from mmrep.core.errors import ConfigError

log = logging.getLogger("mmrep.train")


def config_dirs() -> tuple[Path, ...]:
    """The config folders of this run: mmrep's own and, under Hydra, every file source of its search path (a user's
    ``--config-dir``, ``hydra.searchpath``)."""
    dirs = [Path(CONF_DIR)]
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.schema == "file" and Path(source.path).is_dir() and Path(source.path) not in dirs:
                dirs.append(Path(source.path))
    return tuple(dirs)


def known_top_level_keys() -> frozenset[str]:
    """Every top-level key some config file of this run's search path can set (:func:`_top_level_keys`)."""
    return frozenset().union(*(_top_level_keys(d) for d in config_dirs()))


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=8)
def _top_level_keys(conf_dir: Path) -> frozenset[str]:
    """Every top-level key some config file can set: ``train.yaml``'s keys and groups, the top-level keys of the
    ``@package _global_`` overlays (experiments, searches, datasets that pick encoders, ...) and the packages that
    ``group@package`` defaults entries target. Derived from the config files so a new overlay needs no list to
    maintain."""
    keys = {"hydra", "cpu_threads_used"}  # cpu_threads_used: recorded by the run itself
    for path in conf_dir.rglob("*.yaml"):
        if path.relative_to(conf_dir).parts[0] == "hydra":
            continue
        text = path.read_text()
        header = re.search(r"^#\s*@package\s+(\S+)", text, re.M)
        if path.name == "train.yaml" or (header and header.group(1) == "_global_"):
            node = yaml.load(text, Loader=_YAML_LOADER) or {}  # PyYAML's C loader: 10x OmegaConf.load
            keys.update(str(k) for k in node if k != "defaults")
            for entry in node.get("defaults") or []:
                if isinstance(entry, dict):
                    for k in entry:
                        group, _, package = re.sub(r"^(override|optional)\s+", "", str(k)).lstrip("/").partition("@")
                        keys.add((package or group).split(".")[0].split("/")[0])
        elif header and header.group(1) not in ("_group_", "_here_"):
            keys.add(header.group(1).split(".")[0])
    return frozenset(keys)


def check_top_level_keys(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """An unknown top-level key (``+seeed=3``) fails, with the closest known key and the override that added it."""
    known = known_top_level_keys()
    for key in map(str, cfg.keys()):
        if key in known:
            continue
        source = next((o for o in overrides if re.match(rf"^\+{{1,2}}{re.escape(str(key))}\b", o)), None)
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        origin = f" (from {source})" if source else ""
        raise ConfigError(
            f"{key}: unknown top-level key{origin}{hint} Known keys: {', '.join(sorted(known - {'hydra'}))}"
        )


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: must be an integer in [0, 2^32), got {seed!r}")


def check_trainer(trainer: DictConfig) -> None:
    """A trainer that cannot start here fails with the key to change (Lightning's own errors are multi-line)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not _cuda_available():
        raise ConfigError(
            f"trainer.accelerator: {accelerator} asked for, but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use trainer=default (CPU) or run on a GPU node"
        )
    for key in ("max_steps", "max_epochs"):
        value = trainer.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ConfigError(f"trainer.{key}: must be -1 (no limit) or a non-negative integer, got {value!r}")
    if trainer.get("max_steps") == 0 or trainer.get("max_epochs") == 0:
        raise ConfigError("trainer.max_steps/max_epochs: 0 trains nothing; use fit=false to only measure")


def fit_short_runs(cfg: DictConfig) -> None:
    """A step-based run shorter than one epoch of a streamed dataset (``trainer.max_steps`` below
    ``dataset.steps_per_epoch``) would end before its first validation — no validation loss, no best checkpoint:
    the epoch is shortened to the run."""
    steps, per_epoch = cfg.trainer.get("max_steps"), OmegaConf.select(cfg, "dataset.steps_per_epoch", default=None)
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(per_epoch, int) and isinstance(limit, int) and not isinstance(limit, bool):
        per_epoch = min(per_epoch, limit)  # an int limit shortens the epoch itself (debug=default)
    if cfg.get("fit", True) and isinstance(steps, int) and isinstance(per_epoch, int) and 0 < steps < per_epoch:
        log.info(
            "trainer.max_steps=%d is below dataset.steps_per_epoch=%d: one epoch of %d steps", steps, per_epoch, steps
        )
        cfg.dataset.steps_per_epoch = steps


def check(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """All start-up checks of a composed ``train.yaml`` config."""
    check_top_level_keys(cfg, overrides)
    check_seed(cfg.get("seed"))
    check_trainer(cfg.trainer)


def task_overrides() -> list[str]:
    """The command line's overrides of this run (empty outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _cuda_available() -> bool:
    import torch  # only when a GPU trainer is asked for: the other checks answer without torch

    return torch.cuda.is_available()
