"""Damaged data caught at load time, before any training: non-finite values, empty splits, ragged arrays and labels
outside the classes.

Every loader reads its files with these checks, so a damaged download or a preprocessing slip ends the run in one
line naming the config key, the file, the split, the key and how many values are wrong — not a diverged loss at step
0 blamed on the optimiser, nor an empty cell in ``results.csv``. :func:`check_splits` is the net under all of them:
:class:`~mmrep.data.base.InMemorySplitDataModule` runs it on the splits every loader returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mmrep.core.errors import ConfigError

FIX = "repair or re-create the file (the data must be finite)"
GENERATED_FIX = "the dataset's parameters (dataset.*) give non-finite values"


def where(key: str, origin: str, split: str | None = None, name: str | None = None) -> str:
    """``<key>: <origin>, split '<split>', key '<name>'`` — the head of every load-time message."""
    parts = [f"{key}: {origin}"]
    if split is not None:
        parts.append(f"split {split!r}")
    if name is not None:
        parts.append(f"key {name!r}")
    return ", ".join(parts)


def _first(ids: np.ndarray, limit: int = 3) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown + (", …" if len(ids) > limit else "")


def nonfinite_problem(values, sample_ids: Sequence[int] | np.ndarray | None = None) -> str | None:
    """None when every value of ``values`` (samples on axis 0) is finite, else what is wrong, e.g. ``3 NaN and 1
    inf values in 2 of 40 samples (samples 4, 17)``; ``sample_ids`` numbers the samples as the file does (default
    0..N-1). Integer and boolean arrays are always finite."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.float() if values.dtype == torch.bfloat16 else values  # numpy has no bfloat16
    array = np.asarray(values)
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = ~finite
    nan = int(np.isnan(array).sum())
    inf = int(bad.sum()) - nan
    counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
    rows = np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))
    ids = np.asarray(sample_ids)[rows] if sample_ids is not None else rows
    value = "values" if nan + inf > 1 else "value"
    return f"{counts} {value} in {len(rows)} of {len(array)} samples (sample{'s' * (len(rows) > 1)} {_first(ids)})"


def check_finite(values, head: str, sample_ids=None, fix: str = FIX) -> None:
    """ConfigError ``<head>: <n NaN …>; <fix>`` when ``values`` holds NaN or ±inf."""
    problem = nonfinite_problem(values, sample_ids)
    if problem:
        raise ConfigError(f"{head}: {problem}; {fix}")


def numeric_array(values, head: str) -> np.ndarray:
    """``values`` as a numeric (bool, integer or float) numpy array, else a ConfigError naming what it holds (text,
    objects, ragged lists)."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ConfigError(f"{head}: not a rectangular numeric array ({type(err).__name__})") from None
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{head}: holds {array.dtype} values ({type(values).__name__}); expected numbers")
    return array


def check_samples(arrays: Mapping[str, np.ndarray], head: str) -> int:
    """The common sample count N of ``arrays`` (axis 0), else a ConfigError listing each key's count; N = 0 is an
    empty split, also an error."""
    counts = {k: (len(v) if np.ndim(v) else 0) for k, v in arrays.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"{head}: keys hold different sample counts {counts}; each needs one entry per sample")
    n = next(iter(counts.values()), 0)
    if n == 0:
        raise ConfigError(f"{head}: holds no samples; every split needs at least one")
    return n


def check_labels(
    y, num_classes: int, head: str, sample_ids=None, fix: str = "fix the labels or dataset.num_classes"
) -> None:
    """Class labels must be integers in ``0..num_classes-1``: else a ConfigError with the count and first samples."""
    array = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    check_finite(array, head, sample_ids)
    bad = (array < 0) | (array >= num_classes) | (array != np.floor(array))
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))
        ids = np.asarray(sample_ids)[rows] if sample_ids is not None else rows
        values = np.unique(array[bad])
        raise ConfigError(
            f"{head}: {len(rows)} of {len(array)} labels are not classes 0..{num_classes - 1} (value"
            f"{'s' * (len(values) > 1)} {_first(values)}; sample{'s' * (len(rows) > 1)} {_first(ids)}); {fix}"
        )


def _tensors(entry, name: str):
    """``(dotted name, tensor)`` for every tensor of a split entry (a tensor or a dict of tensors)."""
    if isinstance(entry, Mapping):
        for key, value in entry.items():
            yield from _tensors(value, f"{name}.{key}")
    else:
        yield name, entry


def check_splits(splits: Mapping[str, Mapping[str, object]], key: str, origin: str, spec=None, fix: str = FIX) -> None:
    """The splits a loader returns (``{split: {key: tensor or dict of tensors}}``): each holds samples, every float
    tensor is finite and, for a classification ``spec``, ``y`` holds classes. ``key``/``origin`` name the config key
    and the file or generator the data came from (e.g. ``dataset.path``, ``/data/mosi.pkl``); ``fix`` ends a
    non-finite message."""
    for split, data in splits.items():
        tensors = dict(item for name, entry in data.items() for item in _tensors(entry, name))
        check_samples(tensors, where(key, origin, split))
        for name, tensor in tensors.items():
            check_finite(tensor, where(key, origin, split, name), fix=fix)
        if spec is not None and spec.task == "classification" and "y" in data:
            check_labels(data["y"], int(spec.num_classes), where(key, origin, split, "y"))
