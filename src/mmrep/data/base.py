"""A datamodule base for datasets held in memory as train/val/test splits.

Subclasses implement :meth:`InMemorySplitDataModule.load_splits` (and publish a ``spec``); the base gives the
loaders, ``heldout(purpose, n)``, train-statistics normalisation and whole-batch indexing (no per-sample collate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmrep.core.contract import Batch, DataSpec, slice_input
from mmrep.core.errors import ConfigError
from mmrep.data.integrity import GENERATED_FIX, check_splits

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SplitDataset(Dataset):
    """One split: ``{key: tensor or dict of tensors}``, every tensor with the samples on axis 0.

    ``__getitems__`` returns the whole batch dict at once, so a ``DataLoader`` with ``collate_fn=lambda b: b``
    yields batches by fancy indexing instead of stacking samples one by one. ``decode`` (optional) turns a gathered
    batch of stored values into model inputs, e.g. uint8 image indices into normalised float images, or token ids
    into one-hot tokens, so compact storage is expanded one batch at a time."""

    def __init__(self, data: Mapping[str, object], decode: Callable[[Batch], Batch] | None = None) -> None:
        self.data, self.decode = dict(data), decode
        sizes = {
            k: len(v) if isinstance(v, torch.Tensor) else len(next(iter(v.values()))) for k, v in self.data.items()
        }
        if len(set(sizes.values())) != 1:
            raise ValueError(f"SplitDataset: entries hold different sample counts {sizes}")
        self.size = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Batch:
        if self.decode is not None:
            return {k: slice_input(v, 0) for k, v in self.__getitems__([i]).items()}
        return {k: slice_input(v, i) for k, v in self.data.items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: slice_input(v, idx) for k, v in self.data.items()}
        return self.decode(batch) if self.decode is not None else batch


def _whole_batch(batch):
    return batch


def select_modalities(modalities, available) -> tuple[list[str], tuple[str, ...]]:
    """``dataset.modalities`` (``None``: all of ``available``) checked: the chosen names in the order given and
    the deselected ones (``DataSpec.deselected``)."""
    names = list(modalities) if modalities else list(available)
    if any(m not in available for m in names) or len(set(names)) != len(names):
        raise ConfigError(f"dataset.modalities: pick distinct names from {list(available)}, got {names}")
    return names, tuple(m for m in available if m not in names)


def reject_bias(bias, dataset: str) -> None:
    """Datasets without latents to select or perturb accept only ``bias=none``."""
    if bias is not None and not getattr(bias, "is_identity", True):
        raise ConfigError(f"bias: dataset={dataset} has no latent selection/perturbation; use bias=none")


def check_split_fractions(splits) -> tuple[float, float, float]:
    """``dataset.splits`` as three positive train/val/test fractions summing to 1, else ConfigError."""
    fractions = tuple(float(s) for s in splits)
    if len(fractions) != 3 or any(s <= 0 for s in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"dataset.splits: need three positive train/val/test fractions summing to 1, got {list(fractions)}"
        )
    return fractions


def train_statistics(x: np.ndarray, train_index, axis=0, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``x[train_index]`` over ``axis`` (None: all values), for normalising every split with the
    training split's statistics. A std <= ``eps`` becomes 1, so constant features map to 0 instead of NaN."""
    train = x[train_index]
    mean, std = train.mean(axis=axis), train.std(axis=axis)
    return mean, np.where(std > eps, std, 1.0)


class InMemorySplitDataModule(pl.LightningDataModule):
    """Base for datasets that fit in memory as train/val/test splits.

    Subclasses set ``self.spec`` (a :class:`DataSpec`) in ``__init__`` and implement :meth:`load_splits`, which
    returns ``{"train" | "val" | "test": {key: tensor or dict of tensors}}`` (modalities plus ``y``), already
    normalised (see :func:`train_statistics`). Loading happens once, in ``setup()``.

    Args:
        batch_size: training and evaluation batch size.
        align_split: the split whose first ``n`` samples ``heldout("align", n)`` returns (multimodal_alignment
        scripts/get_alignment.py: test).
        num_workers: DataLoader workers (0: in the main process; the tensors are already in memory).
    """

    spec: DataSpec

    def __init__(self, batch_size: int, align_split: str = "test", num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size, self.align_split, self.num_workers = int(batch_size), align_split, int(num_workers)
        self._splits: dict[str, SplitDataset] | None = None
        self._warned: set[tuple[str, int]] = set()

    def load_splits(self) -> dict[str, Mapping[str, object]]:
        raise NotImplementedError

    decode_batch: Callable[[Batch], Batch] | None = None
    """Optional: expands a batch of stored values into model inputs (see :class:`SplitDataset`)."""

    def data_origin(self) -> tuple[str, str, str]:
        """``(config key, origin, fix)`` for load-time errors about the data (:mod:`mmrep.data.integrity`): the key
        and file a user would change, e.g. ``("dataset.path", "/data/mosi.pkl", "repair or re-create the file")``.
        This default suits generated data; datasets read from files override it."""
        name = type(self).__name__
        return "dataset", f"the data {name} generated", GENERATED_FIX

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once and check them (:func:`~mmrep.data.integrity.check_splits`: samples in every split,
        finite values, labels that are classes) before any training."""
        if self._splits is None:
            splits = self.load_splits()
            missing = [s for s in SPLITS if s not in splits]
            if missing:
                raise ValueError(f"{type(self).__name__}.load_splits: missing splits {missing}")
            key, origin, fix = self.data_origin()
            check_splits({name: splits[name] for name in SPLITS}, key, origin, getattr(self, "spec", None), fix)
            self._splits = {name: SplitDataset(splits[name], self.decode_batch) for name in SPLITS}

    def split(self, name: str) -> SplitDataset:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {list(SPLITS)}")
        self.setup()
        return self._splits[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.split(name),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=_whole_batch,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def heldout_size(self, purpose: str, n: int | None = None) -> int:
        """The number of samples :meth:`heldout` returns for ``purpose`` and ``n`` (loads the data once)."""
        name = self.align_split if purpose == "align" else purpose
        if name not in SPLITS:
            raise ValueError(f"heldout: unknown purpose {purpose!r}; use align or one of {list(SPLITS)}")
        size = len(self.split(name))
        return size if n is None else min(int(n), size)

    def heldout(self, purpose: str, n: int | None = None, chunk: int | None = None) -> list[Batch]:
        """Fixed batches in split order: ``align`` = the first ``n`` samples of ``align_split``;
        ``train``/``val``/``test`` = that split (its first ``n`` when given). A split smaller than ``n`` is used
        whole (like the original's "first batch" of a small split)."""
        name = self.align_split if purpose == "align" else purpose
        if name not in SPLITS:
            raise ValueError(f"heldout: unknown purpose {purpose!r}; use align or one of {list(SPLITS)}")
        data = self.split(name)
        n = len(data) if n is None else int(n)
        if n > len(data):
            if (purpose, n) not in self._warned:  # once per request, not on every call
                self._warned.add((purpose, n))
                log.warning(
                    "asked for %d %s samples for %s; the split has %d, using all of them", n, name, purpose, len(data)
                )
            n = len(data)
        chunk = chunk or self.batch_size
        return [data.__getitems__(list(range(i, min(n, i + chunk)))) for i in range(0, n, chunk)]
