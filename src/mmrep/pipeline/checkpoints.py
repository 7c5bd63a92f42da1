"""Checkpoints a run can trust: read with one-line errors, checked against the run before resuming, written on
SIGTERM, and resumed in place without losing the earlier curves."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mmrep.core.contract import CHECKPOINT_CONFIG_KEY
from mmrep.core.errors import ConfigError

log = logging.getLogger("mmrep.train")

# Config sections that define the data and the model: a resumed run must match its checkpoint here.
DEFINING = ("dataset", "bias", "encoders", "objective")
# ... except these, which change how the same world is served or optimised, not what it is.
NOT_DEFINING = (
    "dataset.batch_size",
    "dataset.steps_per_epoch",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.device",
    "dataset.data_dir",
    "dataset.cache",
    "objective.optimizer",
    "objective.scheduler",
    "objective.gather",
)


def read_checkpoint(ckpt_path) -> dict:
    """The checkpoint at ``ckpt_path`` (on the CPU); a missing, unreadable or non-Lightning file is a ConfigError."""
    path = Path(ckpt_path)
    if path.is_dir():
        raise ConfigError(f"ckpt_path: {path} is a directory; give a checkpoint file such as {path / 'last.ckpt'}")
    if not path.is_file():
        raise ConfigError(f"ckpt_path: no such checkpoint file {str(path)!r} (e.g. <run>/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
    ) as err:  # truncated, garbage, foreign pickles
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"ckpt_path: {path} is not a readable checkpoint (truncated or not a torch file: {first})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"ckpt_path: {path} is not a Lightning checkpoint (no state_dict); use a .ckpt that "
            "mmrep.train wrote under <run>/checkpoints/"
        )
    return checkpoint


def check_fits(model: torch.nn.Module, checkpoint: dict, ckpt_path) -> None:
    """The checkpoint's weights have this model's parameter names and shapes (else: from another model)."""
    stored, own = checkpoint["state_dict"], model.state_dict()
    missing, unexpected = sorted(own.keys() - stored.keys()), sorted(stored.keys() - own.keys())
    reshaped = [k for k in own.keys() & stored.keys() if tuple(own[k].shape) != tuple(stored[k].shape)]
    if missing or unexpected or reshaped:
        what = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"{reshaped[0]} has shape {tuple(stored[reshaped[0]].shape)}, "
            f"the model {tuple(own[reshaped[0]].shape)}"
        )
        raise ConfigError(
            f"ckpt_path: {ckpt_path} does not fit this run's objective/encoders ({what}); use a "
            "checkpoint of the same model"
        )


def _flatten(config, prefix: str = "") -> dict[str, object]:
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: config}


def stored_config(checkpoint: dict, ckpt_path) -> dict | None:
    """The resolved config of the run that wrote the checkpoint: stored inside it, else its run's ``.hydra``."""
    if CHECKPOINT_CONFIG_KEY in checkpoint:
        return checkpoint[CHECKPOINT_CONFIG_KEY]
    beside = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if not beside.is_file():
        return None
    saved, config = OmegaConf.load(beside), {}
    if not isinstance(saved, DictConfig):
        return None
    for key in DEFINING:  # resolved like a running config (${seed} …); Hydra's own resolvers are not available here
        try:
            config[key] = OmegaConf.to_container(saved.get(key), resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable interpolation: compare it as written
            config[key] = OmegaConf.to_container(saved.get(key), resolve=False)
    return config


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_differences(before: dict, now: dict, skip=()) -> list[str]:
    """``key (checkpoint X, now Y)`` for every flattened key whose value differs, except keys under ``skip``."""
    old, new = _flatten(before), _flatten(now)
    return [
        f"{k} (checkpoint {old.get(k, '<unset>')}, now {new.get(k, '<unset>')})"
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k) and not _under(k, skip)
    ]


def defining_differences(before: dict, now: dict) -> list[str]:
    """:func:`config_differences` of the data/model-defining keys."""
    return config_differences({k: before.get(k) for k in DEFINING}, {k: now.get(k) for k in DEFINING}, NOT_DEFINING)


def _first_four(differences: list[str]) -> str:
    return "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")


# Keys a run may change when it is started again in its own folder (resume: auto): where it runs, how many threads,
# how long it trains. Any other difference means the folder holds another run (e.g. another sweep trial's job).
RERUN_MAY_CHANGE = (
    "ckpt_path",
    "resume",
    "cpu_threads",
    "cpu_threads_used",
    "print_config",
    "paths",
    "trainer.max_steps",
    "trainer.max_epochs",
)


def resolved(cfg: DictConfig) -> dict:
    """The run's config as a plain dict, interpolations resolved."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


def check_same_run(cfg: DictConfig, checkpoint: dict, ckpt_path) -> None:
    """``resume: auto``: the checkpoint found in the run's folder was written by this very run (the same settings,
    the optimiser's included), not by another job that used the folder before."""
    before = checkpoint.get(CHECKPOINT_CONFIG_KEY)
    if before is None:  # written before checkpoints carried their config: the data/model check has to do
        return
    changed = config_differences(before, resolved(cfg), RERUN_MAY_CHANGE)
    if changed:
        raise ConfigError(f"ckpt_path: {ckpt_path} was written by a run with other settings: {_first_four(changed)}")


def check_resume(cfg: DictConfig, checkpoint: dict, ckpt_path) -> None:
    """Refuse to resume a checkpoint trained on other data or another model (``ckpt_strict: false`` allows it)."""
    before = stored_config(checkpoint, ckpt_path)
    if before is None:
        log.warning("ckpt_path: %s records no config; cannot check it matches this run's data and model", ckpt_path)
        return
    differences = defining_differences(before, resolved(cfg))
    if not differences:
        return
    if not cfg.get("ckpt_strict", True):
        log.warning(
            "resuming %s with different data/model settings (ckpt_strict=false): %s", ckpt_path, "; ".join(differences)
        )
        return
    raise ConfigError(
        f"ckpt_path: {ckpt_path} was trained with other data/model settings: {_first_four(differences)}. "
        "Resume with the checkpoint's settings, or set ckpt_strict=false to continue on purpose"
    )
