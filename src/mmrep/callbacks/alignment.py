"""``AlignmentCallback``: track layer-wise alignment between pairs of encoders during training."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from mmrep.core.contract import slice_input
from mmrep.core.errors import ConfigError
from mmrep.core.results import write_csv_atomic
from mmrep.metrics.alignment_metric import Alignment, encoder_pairs
from mmrep.metrics.common import heldout_inputs
from mmrep.metrics.features import layer_features


class AlignmentCallback(pl.Callback):
    """Every ``every_n_epochs`` training epochs, align encoder pairs on a fixed held-out set.

    The set (``datamodule.heldout("align", n)``) is drawn once at fit start. Under DDP each rank encodes its own
    shard and the layer features are gathered across ranks (``LightningModule.all_gather``), so the metrics always
    see all ``n`` samples in order. Logs ``align/<metric>`` (max over layer pairs; ``align/<a|b>/<metric>`` when
    several pairs are tracked) and, at the end of fit, writes one row per (epoch, pair, metric, aggregate) to
    ``<dirpath>/alignment_history.csv``.

    Args: as :class:`mmrep.metrics.alignment_metric.Alignment` (``pairs``: default every pair of the model's
    encoders), plus ``every_n_epochs`` and ``dirpath``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        metrics: str | Iterable[str] = ("mutual_knn", "unbiased_cka"),
        k: int = 100,
        q: float = 1.0,
        n: int = 512,
        pairs: Sequence[Sequence[str]] | None = None,
        include_output: bool = False,
        dirpath: str | None = None,
    ) -> None:
        if int(every_n_epochs) < 1:
            raise ConfigError(f"callbacks.alignment.every_n_epochs: must be >= 1, got {every_n_epochs}")
        self.alignment = Alignment(
            metrics,
            k,
            q,
            n,
            pairs=pairs,
            include_output=include_output,
            per_layer=False,
            config_key="callbacks.alignment",
        )
        self.every_n_epochs, self.dirpath = int(every_n_epochs), dirpath
        self.history: list[pd.DataFrame] = []
        self._shards: dict[str, object] = {}

    def check(self, model, datamodule) -> None:
        """Before training (mmrep's pipeline calls it): the pairs exist and the held-out set is large enough for the
        suite and for ``k`` (:meth:`Alignment.check`), so a bad setting does not wait for the first epoch's end."""
        self.alignment.check(model, datamodule)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = self.alignment.key
        self._pairs = encoder_pairs(pl_module, self.alignment.pairs, key)
        modalities = list(dict.fromkeys(m for pair in self._pairs for m in pair))
        inputs = heldout_inputs(trainer.datamodule, modalities, self.alignment.n, key)
        first = next(iter(inputs.values()))
        self._n = int((first if isinstance(first, torch.Tensor) else next(iter(first.values()))).shape[0])
        per_rank = math.ceil(self._n / trainer.world_size)
        # the last rank may hold fewer: it repeats its last sample, and rows past n are dropped after the gather
        rows = torch.arange(trainer.global_rank * per_rank, (trainer.global_rank + 1) * per_rank).clamp_max(self._n - 1)
        self._shards = {m: slice_input(x, rows) for m, x in inputs.items()}

    def _gathered_features(self, trainer, pl_module, modality: str) -> tuple[list[str], list[torch.Tensor]]:
        names, local = layer_features(
            pl_module.encoders[modality], [self._shards[modality]], self.alignment.include_output
        )
        if trainer.world_size == 1:
            return names, local
        # all_gather: (world, per_rank, d) in rank order → the original sample order
        return names, [pl_module.all_gather(h).reshape(-1, h.shape[1])[: self._n] for h in local]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        features = {m: self._gathered_features(trainer, pl_module, m) for m in self._shards}
        rows = self.alignment.compute(self._pairs, features)
        rows.insert(0, "epoch", trainer.current_epoch)
        rows.insert(1, "step", trainer.global_step)
        self.history.append(rows)
        best = rows[rows["aggregate"] == "max"]
        several = len(self._pairs) > 1
        pl_module.log_dict(
            {
                f"align/{p + '/' if several else ''}{m}": float(v)
                for p, m, v in zip(best["modality"], best["metric"], best["value"])
            },
            on_epoch=True,
        )

    def history_frame(self) -> pd.DataFrame:
        return pd.concat(self.history, ignore_index=True) if self.history else pd.DataFrame()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.dirpath and self.history:
            write_csv_atomic(self.history_frame(), Path(self.dirpath) / "alignment_history.csv")
