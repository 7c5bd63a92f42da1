"""A small synthetic dataset with three heterogeneous modalities, generated offline in seconds.

It exercises every part of the modality contract: an image-like tensor, a padded token sequence with a mask and a
plain vector, all views of one class label ``y`` (classification). Use it to try an encoder or an objective, and as
the worked example of "adding a dataset" (README):

* ``image``  (1, 8, 8): a bright 3×3 square in the class's region of the image, jittered, plus Gaussian noise;
* ``tokens`` ``{"x": (T, V), "mask": (T,)}``: 4..T one-hot tokens over V symbols, class c favouring symbols
  {2c, 2c+1} (probability ``token_signal``), zero-padded after the sequence's length (mask False there);
* ``vector`` (D,): a fixed random class centre plus unit Gaussian noise.

With ``task=regression`` the target is a signed score ``y = c − (C − 1)/2 + N(0, 0.1²)`` (float) instead of the
class ``c``, like the sentiment scores of MOSI/MOSEI.

Image and vector are standardised with train-split statistics (:func:`mmrep.data.base.train_statistics`).
"""

from __future__ import annotations

import numpy as np
import torch

from mmrep.core.contract import DataSpec, ModalitySpec, slice_input
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.data.base import (
    InMemorySplitDataModule,
    check_split_fractions,
    reject_bias,
    select_modalities,
    train_statistics,
)


def generate_toy(
    n: int,
    num_classes: int = 3,
    seq_len: int = 12,
    vocab: int = 6,
    vector_dim: int = 4,
    token_signal: float = 0.6,
    noise: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``n`` samples as arrays: ``image`` (n, 1, 8, 8), ``tokens`` (n, T, V), ``mask`` (n, T) bool, ``vector`` (n, D),
    ``y`` (n,) int64. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(num_classes, size=n)
    # image: class c puts its square on row band c (of num_classes bands), column jittered
    image = rng.normal(0.0, noise, size=(n, 1, 8, 8)).astype(np.float32)
    band = 8 // num_classes if num_classes <= 8 else 1
    rows = np.clip(y * band + rng.integers(0, max(1, band - 2) + 1, size=n), 0, 5)
    cols = rng.integers(0, 6, size=n)
    for i in range(n):
        image[i, 0, rows[i] : rows[i] + 3, cols[i] : cols[i] + 3] += 1.0
    # tokens: symbols from a class-favoured pair with probability token_signal, else uniform
    lengths = rng.integers(4, seq_len + 1, size=n)
    favoured = (2 * y[:, None] + rng.integers(0, 2, size=(n, seq_len))) % vocab
    uniform = rng.integers(0, vocab, size=(n, seq_len))
    symbols = np.where(rng.random((n, seq_len)) < token_signal, favoured, uniform)
    mask = np.arange(seq_len)[None, :] < lengths[:, None]
    tokens = np.eye(vocab, dtype=np.float32)[symbols] * mask[..., None]
    # vector: class centres
    centres = rng.normal(0.0, 1.5, size=(num_classes, vector_dim))
    vector = (centres[y] + rng.normal(0.0, 1.0, size=(n, vector_dim))).astype(np.float32)
    return {"image": image, "tokens": tokens, "mask": mask, "vector": vector, "y": y.astype(np.int64)}


class ToyDataModule(InMemorySplitDataModule):
    """Three heterogeneous modalities of one label (see the module docstring); splits by position after shuffling.

    Args:
        num_samples: total samples. num_classes: labels (2..8). seq_len, vocab: the token sequence's T and V.
        vector_dim: D. token_signal, noise: how informative the tokens and the image are.
        splits: train/val/test fractions. batch_size: loaders. modalities: a subset, e.g. [image, tokens].
        encoding_size: the default representation width. task: classification or regression.
        seed: generation and split.
    """

    MODALITIES = ("image", "tokens", "vector")

    def __init__(
        self,
        num_samples: int = 3000,
        num_classes: int = 3,
        seq_len: int = 12,
        vocab: int = 6,
        vector_dim: int = 4,
        token_signal: float = 0.6,
        noise: float = 0.5,
        splits=(0.7, 0.15, 0.15),
        batch_size: int = 128,
        modalities=None,
        encoding_size: int = 16,
        task: str = "classification",
        seed: int = 0,
        bias=None,
    ) -> None:
        check_positive_ints(
            "dataset",
            num_samples=num_samples,
            seq_len=seq_len,
            vocab=vocab,
            vector_dim=vector_dim,
            batch_size=batch_size,
            encoding_size=encoding_size,
        )
        if not 2 <= num_classes <= 8:
            raise ConfigError(f"dataset.num_classes: must be in 2..8, got {num_classes}")
        if seq_len < 4:
            raise ConfigError(f"dataset.seq_len: sequences are 4..seq_len tokens long, got {seq_len}")
        splits = check_split_fractions(splits)
        names, deselected = select_modalities(modalities, self.MODALITIES)
        if task not in ("classification", "regression"):
            raise ConfigError(f"dataset.task: 'classification' or 'regression', got {task!r}")
        reject_bias(bias, "toy")
        super().__init__(batch_size)
        self.generator = dict(
            num_classes=int(num_classes),
            seq_len=int(seq_len),
            vocab=int(vocab),
            vector_dim=int(vector_dim),
            token_signal=float(token_signal),
            noise=float(noise),
        )
        self.num_samples, self.fractions, self.seed = int(num_samples), splits, int(seed)
        shapes = {
            "image": ModalitySpec((1, 8, 8), kind="image"),
            "tokens": ModalitySpec((seq_len, vocab), kind="sequence", masked=True),
            "vector": ModalitySpec((vector_dim,)),
        }
        self.spec = DataSpec(
            modalities={m: shapes[m] for m in names},
            task=task,
            num_classes=int(num_classes) if task == "classification" else None,
            encoding_size=int(encoding_size),
            deselected=deselected,
        )

    def load_splits(self) -> dict[str, dict]:
        arrays = generate_toy(self.num_samples, seed=self.seed, **self.generator)
        order = np.random.default_rng([self.seed, 1]).permutation(self.num_samples)
        n_train = int(self.fractions[0] * self.num_samples)
        n_val = int(self.fractions[1] * self.num_samples)
        index = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        image_mean, image_std = train_statistics(
            arrays["image"].reshape(self.num_samples, -1), index["train"], axis=None
        )
        vector_mean, vector_std = train_statistics(arrays["vector"], index["train"])
        image = (arrays["image"] - image_mean) / image_std
        vector = (arrays["vector"] - vector_mean) / vector_std
        full = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "tokens": {"x": torch.from_numpy(arrays["tokens"]), "mask": torch.from_numpy(arrays["mask"])},
            "vector": torch.from_numpy(vector.astype(np.float32)),
        }
        full = {m: full[m] for m in self.spec.names}
        y = arrays["y"]
        if self.spec.task == "regression":
            noise = np.random.default_rng([self.seed, 2]).normal(0.0, 0.1, size=y.shape)
            y = (y - (self.generator["num_classes"] - 1) / 2 + noise).astype(np.float32)
        full["y"] = torch.from_numpy(y)
        return {
            split: {k: slice_input(v, torch.from_numpy(rows)) for k, v in full.items()} for split, rows in index.items()
        }
