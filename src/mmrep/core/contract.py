"""The contract between datasets, encoders, objectives and metrics.

A **batch** is a dict. Its modality keys are exactly the datamodule's modalities (``spec.modalities``); each
modality's value is either a tensor ``(B, *shape)`` or a dict of tensors that all start with the batch dimension,
e.g. a padded sequence ``{"x": (B, T, F), "mask": (B, T) bool}`` (``mask`` is True at real tokens, False at
padding). Besides the modalities a batch may carry these reserved keys:

* ``"y"``       — the task target, ``(B,)`` class indices (int64) or ``(B,)``/``(B, k)`` regression values (float);
* ``"latents"`` — ground-truth generative factors, ``{name: (B, k)}`` (held-out sets of synthetic data);
* ``"neg"``     — an independent batch of the same modalities (fresh negatives for contrastive objectives).

No modality may use a reserved name. The datamodule publishes a :class:`DataSpec` (``datamodule.spec``) that the
objective receives whole, and offers ``heldout(purpose, n)``: fixed batches for metrics (``"train"``, ``"val"``,
``"test"`` splits; ``"align"`` = the alignment set; synthetic data add ``"probe_fit"``, ``"probe_eval"``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union, runtime_checkable

import torch

from mmrep.core.errors import ConfigError

RESERVED_KEYS = ("y", "latents", "neg")
TASKS = ("classification", "regression", "none")
Task = Literal["classification", "regression", "none"]
ModalityInput = Union[torch.Tensor, Mapping[str, torch.Tensor]]
Batch = dict  # {modality: ModalityInput, "y": Tensor, "latents": {name: Tensor}, "neg": Batch}


@dataclass(frozen=True)
class ModalitySpec:
    """What one modality looks like to an encoder.

    Args:
        shape: per-sample shape of the modality's tensor (its ``"x"`` entry when ``masked``), e.g. ``(12,)`` for
            a vector, ``(T, F)`` for a sequence of T tokens with F features, ``(C, H, W)`` for an image.
        kind: ``vector`` | ``sequence`` | ``image`` | ``text`` (what encoders may assume about the axes). A ``text``
            modality is raw UTF-8: masked ``{"x": (B, T) uint8 bytes, "mask": (B, T) bool}`` with ``shape = (T,)``,
            for encoders that bring their own tokenizer (see :func:`encode_texts`, :func:`decode_texts`).
        masked: the value is ``{"x": (B, *shape), "mask": (B, T) bool}`` instead of a bare tensor.
        encoding_size: this modality's own representation width, for objectives that give each modality its own
            space (unimodal: multimodal_alignment's
            unimodals/common_models.py uses E = the feature size); ``None`` = the dataset's shared default.
    """

    shape: tuple[int, ...]
    kind: str = "vector"
    masked: bool = False
    encoding_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.shape or any(s < 1 for s in self.shape):
            raise ValueError(f"ModalitySpec.shape: needs positive sizes, got {self.shape}")
        if self.kind not in ("vector", "sequence", "image", "text"):
            raise ValueError(f"ModalitySpec.kind: vector, sequence, image or text, got {self.kind!r}")
        if self.kind == "text" and (not self.masked or len(self.shape) != 1):
            raise ValueError(f"ModalitySpec: a text modality is masked UTF-8 bytes of shape (T,), got {self.shape}")

    @property
    def features(self) -> int:
        """Size of the last axis (a vector's width, a token's feature size)."""
        return self.shape[-1]

    @property
    def flat_size(self) -> int:
        """Number of values per sample (what a flattening encoder sees)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class DataSpec:
    """What a datamodule provides, handed whole to the objective.

    Args:
        modalities: ``{name: ModalitySpec}`` in the dataset's order (the first two are the default pair).
        task: ``classification`` (``y`` int64 in ``0..num_classes-1``), ``regression`` (``y`` float) or ``none``.
        num_classes: classes of a classification task (``None`` otherwise).
        target_dim: outputs of a regression task (1 for a scalar target).
        encoding_size: the default representation width (objective's ``encoding_size: null``).
        latent_names: ground-truth factors held-out batches carry under ``"latents"`` (synthetic data).
        deselected: modalities the dataset offers but this run left out (``dataset.modalities``); their
            ``encoders.<name>`` entries are not built. Any other encoder key that is not a modality is an error.
    """

    modalities: Mapping[str, ModalitySpec]
    task: Task = "none"
    num_classes: int | None = None
    target_dim: int = 1
    encoding_size: int | None = None
    latent_names: tuple[str, ...] = field(default=())
    deselected: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("DataSpec.modalities: a dataset needs at least one modality")
        clash = [m for m in self.modalities if m in RESERVED_KEYS]
        if clash:
            raise ValueError(f"DataSpec.modalities: {clash} are reserved batch keys {list(RESERVED_KEYS)}")
        if self.task not in TASKS:
            raise ValueError(f"DataSpec.task: one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(f"DataSpec.num_classes: a classification task needs >= 2 classes, got {self.num_classes}")

    @property
    def names(self) -> list[str]:
        return list(self.modalities)

    def check_modalities(self, names: Sequence[str], key: str) -> list[str]:
        """``names`` if all are modalities of this dataset, else ``ConfigError("<key>: ...")``."""
        names = list(names)
        unknown = [m for m in names if m not in self.modalities]
        if unknown:
            raise ConfigError(f"{key}: {unknown} not among the dataset's modalities {self.names}")
        return names

    def check_batch(self, batch: Batch) -> None:
        """Raise ``ValueError`` unless ``batch`` follows the contract: exactly this spec's modalities (each of its
        declared shape, masked ones as ``{"x", "mask"}``) plus reserved keys. Objectives call it on the first
        training batch, so a datamodule that drops or adds a key fails at once instead of silently."""
        keys = [k for k in batch if k not in RESERVED_KEYS]
        if sorted(keys) != sorted(self.modalities):
            raise ValueError(
                f"batch keys {sorted(batch)} do not match the dataset's modalities {self.names} "
                f"(+ reserved {list(RESERVED_KEYS)})"
            )
        for name, spec in self.modalities.items():
            value = batch[name]
            if spec.masked:
                if not isinstance(value, Mapping) or not {"x", "mask"} <= set(value):
                    raise ValueError(f"batch[{name!r}]: a masked modality is a dict with 'x' and 'mask'")
                value = value["x"]
            if not isinstance(value, torch.Tensor) or tuple(value.shape[1:]) != spec.shape:
                got = tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"batch[{name!r}]: per-sample shape {got}, the spec declares {spec.shape}")


@runtime_checkable
class MultimodalDataModule(Protocol):
    """What every mmrep dataset offers besides the LightningDataModule hooks."""

    spec: DataSpec

    def heldout(self, purpose: str, n: int | None = None) -> list[Batch]:
        """Fixed batches for metrics; the same every call (``purpose``: train/val/test/align/...)."""
        ...


# Every checkpoint a run writes stores the run's resolved config under this key (checked when a run resumes).
CHECKPOINT_CONFIG_KEY = "mmrep_config"


def heldout_size(datamodule, purpose: str, n: int | None = None) -> int:
    """How many samples ``datamodule.heldout(purpose, n)`` returns, known before training: the datamodule's own
    ``heldout_size`` when it has one (in-memory splits: ``min(n, len(split))``), else the batches counted."""
    if hasattr(datamodule, "heldout_size"):
        return int(datamodule.heldout_size(purpose, n))
    return sum(batch_size(b) for b in datamodule.heldout(purpose, n))


def require_samples(datamodule, purpose: str, n: int | None, at_least: int, key: str) -> int:
    """:func:`heldout_size`, or a ConfigError naming ``key`` when the set has fewer than ``at_least`` samples."""
    size = heldout_size(datamodule, purpose, n)
    if size < at_least:
        raise ConfigError(f"{key}: the {purpose} set has {size} samples; at least {at_least} are needed")
    return size


def batch_size(batch: Batch) -> int:
    """Number of samples in a batch (from ``y`` or the first modality)."""
    if "y" in batch:
        return int(batch["y"].shape[0])
    for key, value in batch.items():
        if key in RESERVED_KEYS:
            continue
        tensor = value if isinstance(value, torch.Tensor) else next(iter(value.values()))
        return int(tensor.shape[0])
    raise ValueError("batch holds no modality")


def concat_batches(batches: Sequence[Batch], keys: Sequence[str]) -> dict[str, ModalityInput]:
    """``{key: all samples of batches}`` for ``keys``; nested dict values are concatenated entry by entry."""

    def cat(values):
        first = values[0]
        if isinstance(first, torch.Tensor):
            return torch.cat(values)
        return {k: cat([v[k] for v in values]) for k in first}

    return {k: cat([b[k] for b in batches]) for k in keys}


def slice_input(value: ModalityInput, index) -> ModalityInput:
    """Rows ``index`` of a modality input (a tensor or a dict of tensors)."""
    if isinstance(value, torch.Tensor):
        return value[index]
    return {k: v[index] for k, v in value.items()}


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank ``rank``'s contiguous share of a global batch of ``world`` shares (sizes differ by at most one): the
    ranks' shards concatenated in rank order are the batch."""
    n = batch_size(batch)
    start, stop = rank * n // world, (rank + 1) * n // world
    return {k: slice_input(v, slice(start, stop)) for k, v in batch.items()}


def encode_texts(texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Strings → a ``text`` modality input: ``{"x": (N, T) uint8 UTF-8 bytes, right-padded with 0, "mask": (N, T)
    bool}`` with T the longest text's byte length (at least 1)."""
    encoded = [t.encode("utf-8") for t in texts]
    width = max([1, *map(len, encoded)])
    x = torch.zeros((len(encoded), width), dtype=torch.uint8)
    mask = torch.zeros((len(encoded), width), dtype=torch.bool)
    for i, raw in enumerate(encoded):
        x[i, : len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else x[i, :0]
        mask[i, : len(raw)] = True
    return {"x": x, "mask": mask}


def decode_texts(value: Mapping[str, torch.Tensor]) -> list[str]:
    """Inverse of :func:`encode_texts`."""
    x, mask = value["x"].cpu(), value["mask"].cpu()
    return [bytes(row[m].tolist()).decode("utf-8") for row, m in zip(x, mask)]
