"""``metric=accuracy``: classification accuracy of each modality's classifier on each split."""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from mmrep.errors import ConfigError


class Accuracy:
    """Accuracy of ``model.logits(batch)[modality]`` against ``batch["y"]`` on ``datamodule.heldout(split)``.

    Rows: ``metric="accuracy", modality, split, value, n`` (spec rus-alignment §3.1: train, valid, test from the
    best-validation weights)."""

    def __init__(self, splits: Iterable[str] = ("train", "valid", "test")) -> None:
        self.splits = list(splits)
        if not self.splits:
            raise ConfigError("metric.accuracy.splits: needs at least one split")

    @torch.no_grad()
    def __call__(self, model, datamodule) -> pd.DataFrame:
        if not hasattr(model, "logits"):
            raise ConfigError(f"metric=accuracy: objective {type(model).__name__} has no classifier heads")
        was_training = model.training
        model.eval()
        rows = []
        try:
            for split in self.splits:
                correct: dict[str, int] = {}
                total = 0
                for batch in datamodule.heldout(split):
                    batch = {k: v.to(model.device) for k, v in batch.items()}
                    for m, z in model.logits(batch).items():
                        correct[m] = correct.get(m, 0) + int((z.argmax(1) == batch["y"]).sum())
                    total += batch["y"].shape[0]
                rows += [{"metric": "accuracy", "modality": m, "split": split, "value": c / total, "n": total}
                         for m, c in correct.items()]
        finally:
            model.train(was_training)
        return pd.DataFrame(rows)
