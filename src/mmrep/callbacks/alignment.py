"""``AlignmentCallback``: track layer-wise alignment between the two encoders during training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import pytorch_lightning as pl
import torch

from mmrep.encoders.features import layer_features
from mmrep.errors import ConfigError
from mmrep.metrics.alignment_metric import Alignment, encoder_pair, heldout_inputs
from mmrep.utils.results import write_csv_atomic


class AlignmentCallback(pl.Callback):
    """Every ``every_n_epochs`` training epochs, align the two encoders on a fixed held-out set.

    The set (``datamodule.heldout("align", n)``) is drawn once at fit start. Under DDP each rank encodes its own
    shard and the layer features are gathered across ranks, so the metrics always see all ``n`` samples in
    order. Logs ``align/<metric>`` (max over layer pairs) to the loggers and, at the end of fit, writes one row
    per (epoch, metric, aggregate) to ``<dirpath>/alignment_history.csv``.

    Args: as :class:`mmrep.metrics.alignment_metric.Alignment`, plus ``every_n_epochs`` and ``dirpath``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        metrics: str | Iterable[str] = ("mutual_knn", "unbiased_cka"),
        k: int = 100,
        q: float = 1.0,
        n: int = 512,
        modalities: Sequence[str] | None = None,
        include_output: bool = False,
        dirpath: str | None = None,
    ) -> None:
        if int(every_n_epochs) < 1:
            raise ConfigError(f"callbacks.alignment.every_n_epochs: must be >= 1, got {every_n_epochs}")
        self.alignment = Alignment(
            metrics, k, q, n, modalities=modalities, include_output=include_output, per_layer=False,
            config_key="callbacks.alignment",
        )
        self.every_n_epochs, self.dirpath = int(every_n_epochs), dirpath
        self.history: list[pd.DataFrame] = []
        self._shards: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = self.alignment.key
        self._pair, _, _ = encoder_pair(pl_module, self.alignment.modalities, key)
        inputs = heldout_inputs(trainer.datamodule, self._pair, self.alignment.n, key)
        self._n = len(inputs[self._pair[0]])  # the held-out split may hold fewer than n samples
        per_rank = math.ceil(self._n / trainer.world_size)
        start = trainer.global_rank * per_rank
        for m, samples in inputs.items():
            shard = samples[start : start + per_rank]
            pad = per_rank - shard.shape[0]  # the last rank may hold fewer; padded rows are dropped after gather
            self._shards[m] = torch.cat([shard, shard.new_zeros((pad, *shard.shape[1:]))]) if pad else shard

    def _gathered_features(self, trainer, pl_module, modality: str) -> tuple[list[str], list[torch.Tensor]]:
        names, local = layer_features(pl_module.encoders[modality], [self._shards[modality]], self.alignment.include_output)
        if trainer.world_size == 1:
            return names, local
        # all_gather: (world, per_rank, d) in rank order → the original sample order
        full = [pl_module.all_gather(h).reshape(-1, h.shape[1])[: self._n] for h in local]
        return names, full

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        a, b = (self._gathered_features(trainer, pl_module, m) for m in self._pair)
        rows = self.alignment.compute(self._pair, a, b)
        rows.insert(0, "epoch", trainer.current_epoch)
        rows.insert(1, "step", trainer.global_step)
        self.history.append(rows)
        best = rows[rows["aggregate"] == "max"]
        pl_module.log_dict({f"align/{m}": float(v) for m, v in zip(best["metric"], best["value"])}, on_epoch=True)

    def history_frame(self) -> pd.DataFrame:
        return pd.concat(self.history, ignore_index=True) if self.history else pd.DataFrame()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.dirpath and self.history:
            write_csv_atomic(self.history_frame(), Path(self.dirpath) / "alignment_history.csv")
