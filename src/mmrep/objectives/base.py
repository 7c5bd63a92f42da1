"""What every objective shares: per-modality encoders built from the data spec, ``encode``, and the optimiser and
learning-rate schedule as configs.

An objective is a ``LightningModule`` constructed as ``Objective(data=DataSpec, encoders={modality: factory},
optimizer=partial, scheduler=partial | None, ...)``. ``encoders`` are the ``encoders.<modality>`` configs
(``_partial_: true``); each is called as ``factory(modality_spec, encoding_size)``. ``optimizer`` is called with
the parameter groups (frozen parameters are left out); ``scheduler`` with the optimiser and — when it takes one —
``total_steps``, the trainer's estimated number of optimiser steps (so epoch-based runs need no ``max_steps``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from mmrep.core.contract import Batch, DataSpec
from mmrep.core.errors import ConfigError

EncoderFactory = Callable[..., nn.Module]


def default_optimizer(params, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


class Objective(pl.LightningModule):
    """Base of mmrep's objectives.

    Args:
        data: the datamodule's :class:`DataSpec`.
        encoders: ``{modality: encoder factory}`` (the ``encoders`` config). Every key must be a modality of the
            dataset; every modality the objective uses must have one.
        encoding_size: representation width (``objective.encoding_size``). When ``None``: each modality's own width
            (``ModalitySpec.encoding_size``) for objectives without a shared space (unimodal), else the dataset's
            default (``data.encoding_size``).
        optimizer: ``partial`` of a ``torch.optim`` class (``_partial_: true`` config); default Adam(lr=1e-3).
        scheduler: ``partial`` of a scheduler factory, or ``None`` for a constant learning rate.
        scheduler_interval: ``step`` or ``epoch`` (when the scheduler steps).
    """

    #: names the validation-loss row of results.csv (``metric=loss, target=<loss_name>``)
    loss_name = "loss"
    #: True when all encoders must map into one space (contrastive); False lets each modality keep its own width
    shared_space = True

    def __init__(
        self,
        data: DataSpec,
        encoders: Mapping[str, EncoderFactory],
        encoding_size: int | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        if not isinstance(data, DataSpec):
            raise TypeError(f"objective: data must be the datamodule's DataSpec, got {type(data).__name__}")
        unknown = [m for m in encoders if m not in data.modalities and m not in data.deselected]
        if unknown:
            raise ConfigError(f"encoders.{unknown[0]}: not a modality of this dataset; its modalities are {data.names}")
        encoders = {m: factory for m, factory in encoders.items() if m in data.modalities}
        if encoding_size is not None and int(encoding_size) < 1:
            raise ConfigError(f"objective.encoding_size: must be a positive integer, got {encoding_size!r}")
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(f"objective.scheduler_interval: 'step' or 'epoch', got {scheduler_interval!r}")
        self.data, self.encoder_factories = data, dict(encoders)
        self.encoding_size = None if encoding_size is None else int(encoding_size)  # objective.encoding_size
        self.optimizer_factory = optimizer or default_optimizer
        self.scheduler_factory, self.scheduler_interval = scheduler, scheduler_interval
        self._batch_checked = False
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        """Bad optimiser settings (``objective.optimizer.lr=abc``, a negative lr) fail at start-up, not at the first
        training step: numbers are checked by name, then the optimiser is built once on a stand-in parameter."""
        for name, value in getattr(self.optimizer_factory, "keywords", {}).items():
            if name in ("lr", "weight_decay", "momentum", "eps", "dampening") and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ConfigError(f"objective.optimizer.{name}: must be a number, got {value!r}")
        try:
            self.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"objective.optimizer: {err}") from None

    def encoding_size_for(self, modality: str) -> int:
        """The representation width of ``modality``: ``objective.encoding_size`` when set; else, without a shared
        space, the modality's own width; else the dataset's default."""
        size = self.encoding_size
        if size is None and not self.shared_space:
            size = self.data.modalities[modality].encoding_size
        size = size if size is not None else self.data.encoding_size
        if size is None or int(size) < 1:
            raise ConfigError(f"objective.encoding_size: the dataset has no default width for {modality!r}; set it")
        return int(size)

    def build_encoders(self, names: Sequence[str]) -> nn.ModuleDict:
        """One encoder per modality in ``names`` (in that order: it fixes the parameter initialisation)."""
        missing = [m for m in names if m not in self.encoder_factories]
        if missing:
            raise ConfigError(
                f"encoders.{missing[0]}: no encoder configured for modality {missing[0]!r} "
                f"(add encoder@encoders.{missing[0]}=<option>)"
            )
        encoders = {}
        for m in names:
            if not callable(self.encoder_factories[m]):
                raise ConfigError(
                    f"encoders.{m}: needs an encoder config with _target_ (e.g. encoder@encoders.{m}=mlp)"
                )
            try:
                encoders[m] = self.encoder_factories[m](self.data.modalities[m], self.encoding_size_for(m))
            except ConfigError as err:  # encoders say "encoder.<key>": name the modality's config node
                message = str(err)
                raise ConfigError(
                    f"encoders.{m}{message[len('encoder') :]}" if message.startswith("encoder") else message
                ) from None
            except TypeError as err:  # e.g. a value set for another encoder option left in encoders.<m>
                if "unexpected keyword argument" not in str(err):
                    raise
                raise ConfigError(
                    f"encoders.{m}: {err}; remove it (~encoders.{m}.<key>) or pick a matching encoder"
                ) from None
        return nn.ModuleDict(encoders)

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{modality: (B, encoding_size)}`` for each encoded modality present in ``batch``."""
        return {m: enc(batch[m]) for m, enc in self.encoders.items() if m in batch}

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        if not self._batch_checked:  # once: the datamodule keeps the contract (nothing dropped, nothing extra)
            self.data.check_batch(batch)
            self._batch_checked = True

    def prepare_for_evaluation(self) -> None:
        """Called after loading a checkpoint for ``fit: false`` (e.g. restore best-validation weights)."""

    # ---- optimisation ----------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups; the default is one group of every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        if not groups:
            raise ConfigError("objective: no trainable parameters (all encoders frozen?); run with fit=false")
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise ConfigError("objective.scheduler: needs a finite run (trainer.max_steps or trainer.max_epochs)")
            kwargs["total_steps"] = int(total)
        schedule = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": self.scheduler_interval}}
