"""Build a run from its config: the bias, the datamodule and the objective (``hydra.utils.instantiate`` with
one-line errors for bad keys), and the record of the CPU threads it uses."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as _hydra_instantiate
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from mmrep.core.contract import MultimodalDataModule
from mmrep.core.errors import ConfigError

UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '(\w+)'")


def unknown_key_error(err: TypeError, key: str, target) -> ConfigError | None:
    """``<key>.<arg>: not a parameter of <target>`` for a TypeError about an unexpected keyword (a typo'd or
    ``+``-added key), else None."""
    match = UNEXPECTED_ARGUMENT.search(str(err))
    if match is None:
        return None
    if isinstance(target, str):
        from hydra._internal.utils import _locate  # Hydra's own lookup of a _target_ path

        target = _locate(target)
    name = getattr(target, "__name__", str(target).rsplit(".", 1)[-1])
    try:
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
        known = f" (its parameters: {', '.join(params)})"
    except (TypeError, ValueError):
        known = ""
    return ConfigError(f"{key}.{match.group(1)}: not a parameter of {name}{known}")


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that surfaces our ConfigError (Hydra wraps it) with its one-line message, and
    turns an unknown key of the node (``+dataset.batchsize=8``) into a ConfigError naming it."""
    try:
        return _hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            if isinstance(cause, TypeError) and OmegaConf.is_config(config):
                typo = unknown_key_error(cause, config._get_full_key(None), config.get("_target_"))
                if typo is not None:
                    raise typo from None
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def instantiate_group(section: DictConfig | None) -> dict[str, object]:
    """``{name: object}`` for each entry of a ``name: {_target_: ...}`` section (metric, callbacks, logger)."""
    return {
        str(name): instantiate(c, _convert_="all")
        for name, c in (section or {}).items()
        if c is not None and "_target_" in c
    }


def build(cfg: DictConfig):
    """Instantiate bias, datamodule and objective from ``cfg`` (no training). Raises ConfigError on bad input.

    The objective receives the datamodule's whole ``spec`` and the ``encoders`` map (one factory per modality)."""
    bias = instantiate(cfg.bias, _convert_="all") if cfg.get("bias") else None
    datamodule = instantiate(cfg.dataset, bias=bias, _convert_="all")
    if not isinstance(datamodule, MultimodalDataModule):
        raise ConfigError(
            f"dataset: {type(datamodule).__name__} does not follow the datamodule contract "
            "(a `spec: DataSpec` and `heldout(purpose, n)`; see README, Contracts)"
        )
    encoders = instantiate(cfg.get("encoders") or {}, _convert_="all")
    objective = instantiate(cfg.objective, _partial_=True, _convert_="all")  # the DataSpec must reach it as is
    try:
        model = objective(data=datamodule.spec, encoders=encoders)
    except TypeError as err:
        raise unknown_key_error(err, "objective", objective.func) or err from None
    compile_encoders(model, cfg.get("compile_encoders"))
    return datamodule, model


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_encoders(model, mode: str | None) -> None:
    """``torch.compile`` each encoder in place (its state-dict keys and checkpoints unchanged); ``None``: eager."""
    if mode is None:
        return
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_encoders: null or one of {list(COMPILE_MODES)}, got {mode!r}")
    for encoder in getattr(model, "encoders", {}).values():
        encoder.compile(mode=mode)


def record_threads(cfg: DictConfig, count: int) -> None:
    """``cpu_threads_used`` in the run's config (the checkpoints', the loggers' and ``.hydra/config.yaml``)."""
    with open_dict(cfg):
        cfg.cpu_threads_used = int(count)
    saved = Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"
    # DDP ranks share the folder: rank 0 writes
    if HydraConfig.initialized() and saved.is_file() and getattr(rank_zero_only, "rank", 0) == 0:
        OmegaConf.save(cfg, saved)


@contextmanager
def session(cfg: DictConfig) -> Iterator[None]:
    """One run's process-wide state: everything seeded from ``seed``; this process takes its share of the cores
    while the run lasts (the count is recorded with the run's config: results at one seed differ slightly between
    thread counts); at the end the loggers are finished (a sweep's next job starts its own W&B run) and the cores
    given back, whatever happened."""
    import pytorch_lightning as pl

    from mmrep.core import threads
    from mmrep.pipeline.loggers import finish_loggers

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        record_threads(cfg, threads.apply(cfg.get("cpu_threads", "auto")))
        yield
    finally:
        finish_loggers()
        threads.release()
