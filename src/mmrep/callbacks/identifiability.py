"""``IdentifiabilityCallback`` (``callbacks=identifiability``): the paper's identification probes
(``metric=identifiability`` / ``metric=factors``) during training, like an online linear probe — so a run shows
*when* the invariant block (or a factor) becomes identified, not only that it did."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl

from mmrep.core.errors import ConfigError
from mmrep.core.results import write_csv_atomic
from mmrep.metrics.factors import FactorProbes
from mmrep.metrics.identifiability import Identifiability


class IdentifiabilityCallback(pl.Callback):
    """Every ``every_n_epochs`` training epochs, probe each modality's representation for every latent (numeric:
    R² per latent block, crossmodal_mislaignment main_numeric.py) or factor (image–text: MCC / R² per factor,
    main_mpi3dreal.py) on fixed held-out sets.

    Logs ``probe/<modality>/<target>`` (the first probe kind's score) and, at the end of fit, writes one row per
    (epoch, step, modality, target, probe) to ``<dirpath>/identifiability_history.csv``. The probes run on rank 0
    on the whole held-out sets (every rank holds the full model under DDP, so nothing needs gathering); the other
    ranks go on and wait at their next synchronisation.

    Args:
        every_n_epochs: how often. probes: ``linear`` and/or ``mlp`` (linear: fast enough to run often).
        n_fit, n_eval: held-out samples to fit / score the probes. dirpath: where the history table goes.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        probes: Sequence[str] = ("linear",),
        n_fit: int = 4096,
        n_eval: int = 4096,
        dirpath: str | None = None,
    ) -> None:
        if int(every_n_epochs) < 1:
            raise ConfigError(f"callbacks.identifiability.every_n_epochs: must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.dirpath = int(every_n_epochs), dirpath
        self.options = dict(probes=list(probes), n_fit=int(n_fit), n_eval=int(n_eval))
        self.history: list[pd.DataFrame] = []
        self.probe = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if hasattr(datamodule, "factor_roles"):
            self.probe = FactorProbes(**self.options)
        elif hasattr(datamodule, "probe_targets"):
            self.probe = Identifiability(**self.options, mlp_max_iter=1000)
        else:
            raise ConfigError(
                f"callbacks.identifiability: dataset {type(datamodule).__name__} has no latents or "
                "factors to probe (use it with dataset=numeric, rus or an image–text dataset)"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        try:
            rows = self.probe(pl_module, trainer.datamodule)
        finally:
            pl_module.train(was_training)
        rows.insert(0, "epoch", trainer.current_epoch)
        rows.insert(1, "step", trainer.global_step)
        self.history.append(rows)
        first = rows[rows["probe"] == self.options["probes"][0]]
        pl_module.log_dict(
            {f"probe/{m}/{t}": float(v) for m, t, v in zip(first["modality"], first["target"], first["value"])},
            on_epoch=True,
            rank_zero_only=True,
        )

    def history_frame(self) -> pd.DataFrame:
        return pd.concat(self.history, ignore_index=True) if self.history else pd.DataFrame()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.dirpath and self.history:
            write_csv_atomic(self.history_frame(), Path(self.dirpath) / "identifiability_history.csv")
