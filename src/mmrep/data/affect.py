"""MultiBench affect datasets: MOSEI, MOSI, MUStARD (sarcasm), UR-FUNNY (humor) (arXiv:2502.16282;
multimodal_alignment datasets/affect/get_data.py).

On disk (MultiBench's processed pickles, under ``<data_dir>/affect/``)::

    {"train" | "valid" | "test": {"vision": (N, T, d_v), "audio": (N, T, d_a), "text": (N, T, 300) GloVe,
                                  "labels": (N, 1, 1), ...}}

with T ≈ 50 steps, front-padded with zero rows. Loading follows the original (``datasets/affect/get_data.py`` with
the paper's ``max_pad=True, norm_modal=[vision, audio]``; checked against it by tests/test_golden_multibench.py):

1. samples whose text sums to 0 are dropped (the signed sum, as the original: all-zero text, and also a text
   whose entries cancel); ``-inf`` audio values become 0;
2. with ``normalize``, every modality is first cut to its first ``max_len`` steps (the original's
   ``norm_with_stats`` does so before aligning; for T > ``max_len`` a sample aligned at step s keeps
   ``max_len - s`` steps), then vision and audio are z-scored per feature with statistics of the train split over
   samples × those steps (padding included; text is left as is);
3. every modality is cut from the sample's first non-zero text row, truncated to ``max_len`` = 50 steps and
   right-padded with zeros.

Each modality is a masked sequence ``{"x": (B, 50, d), "mask": (B, 50)}`` (mask True at real steps; the original's
mask was True at padding). Labels: MOSI/MOSEI regress the raw sentiment score as float32 (reported as the accuracy
of its sign, the original's training_structures/unimodal_supervised.py), sarcasm is ``label > 0``, humor the raw label
truncated to an integer (int64; a 0/1 label).

Deliberate differences from the original: a feature with zero train variance is centred, not divided by 0 (the
original gives nan/inf); a sample with no text in its first ``max_len`` steps (only possible with normalisation
and T > ``max_len``) is dropped with a warning, where the original exits; a file with NaN or infinite values
(other than -inf audio), labels that are no class, an empty split or ragged arrays stops at load with one line naming
the file, split, key and samples (:mod:`mmrep.data.integrity`), where the original trains on NaN or crashes.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.data.base import InMemorySplitDataModule, reject_bias, select_modalities
from mmrep.data.integrity import FIX, check_finite, check_labels, check_samples, numeric_array, where

log = logging.getLogger(__name__)

MODALITIES = ("vision", "audio", "text")  # datasets/affect/get_data.py: modality 0, 1, 2
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}  # ours → the pickle's
SOURCE = (
    "the MultiBench affective-computing data (github.com/pliang279/MultiBench, 'Affective Computing'); "
    "place the processed pickle there or set dataset.path"
)
FORMAT = (
    "a pickle {'train'|'valid'|'test': {'vision': (N,T,dv), 'audio': (N,T,da), 'text': (N,T,300), 'labels': (N,1,1)}}"
)
LABEL_RULES = ("regression", "positive", "raw")
NORMALISED = ("vision", "audio")  # datasets/affect/get_data.py: norm_modal; text is left as is


def check_file(path: Path) -> Path:
    """``path`` if it is a file, else the one-line error naming it, the format and the source."""
    if not path.is_file():
        raise ConfigError(f"dataset.path: no such file {path}; expected {FORMAT}, from {SOURCE}")
    return path


def read_affect_pickle(path: Path) -> dict:
    """The raw pickle, checked for the split and modality keys; a clear ConfigError when missing or malformed."""
    path = check_file(Path(path))
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise ConfigError(
            f"dataset.path: {path} is not a readable pickle ({type(err).__name__}); expected {FORMAT}, from {SOURCE}"
        ) from None
    for split in SPLIT_KEYS.values():
        if not isinstance(data, dict) or not isinstance(data.get(split), dict):
            raise ConfigError(f"dataset.path: {path} has no split {split!r}; expected {FORMAT}, from {SOURCE}")
        missing = [k for k in (*MODALITIES, "labels") if k not in data[split]]
        if missing:
            raise ConfigError(f"dataset.path: {path} split {split!r} lacks {missing}; expected {FORMAT}, from {SOURCE}")
    return data


def text_keep(text: np.ndarray) -> np.ndarray:
    """(N,) True where a sample's text (N, T, 300), in the file's dtype, has a non-zero signed sum: the original
    (``drop_entry``) drops ``text.sum() == 0``, which also drops a text whose entries cancel (get_data.py's
    cleaning)."""
    return np.asarray(text).reshape(len(text), -1).sum(axis=1) != 0


def first_steps(split: dict[str, np.ndarray], max_len: int) -> dict[str, np.ndarray]:
    """Every modality (N, T, d) cut to its first ``max_len`` steps (N, min(T, max_len), d); labels unchanged. The
    original's ``norm_with_stats`` does this before aligning at the first text row (get_data.py)."""
    return {k: v[:, :max_len] if k in MODALITIES else v for k, v in split.items()}


def norm_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (d,) of (N, T, d) over samples × steps, padding included (get_data.py). A zero std
    becomes 1 (deliberate: the original divides by 0, giving nan/inf), so a constant feature is only centred."""
    mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1))
    return mean, np.where(std > 0, std, 1.0).astype(x.dtype)


def first_text_rows(text: np.ndarray) -> np.ndarray:
    """Index (N,) of each sample's first text row with a non-zero entry (the original's ``text.nonzero()[0][0]``);
    T for a sample with none."""
    nonzero = (text != 0).any(axis=2)
    return np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), text.shape[1])


def align_and_pad(x: np.ndarray, start: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start[i]:`` of each sample, truncated to ``max_len`` and right-padded with zeros; (N, max_len, d) and
    the (N, max_len) mask of real steps."""
    n, steps, dim = x.shape
    out = np.zeros((n, max_len, dim), dtype=np.float32)
    lengths = np.minimum(steps - start, max_len)
    for i in range(n):
        out[i, : lengths[i]] = x[i, start[i] : start[i] + lengths[i]]
    return out, np.arange(max_len)[None, :] < lengths[:, None]


def labels_from(raw: np.ndarray, rule: str) -> np.ndarray:
    """(N,) targets from the pickle's labels (N, 1, 1): the float32 score, ``label > 0`` or the raw label truncated
    to an integer (the original's ``.long()``), both int64 (get_data.py's label rules)."""
    flat = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)[:, 0]
    if rule == "regression":
        return flat.astype(np.float32)
    if rule == "positive":
        return (flat > 0).astype(np.int64)
    return flat.astype(np.int64)


class AffectDataModule(InMemorySplitDataModule):
    """One MultiBench affect dataset with modalities ``vision``, ``audio``, ``text`` (datasets/affect/get_data.py).

    Args:
        path: the pickle (conf: ``${paths.data_dir}/affect/<name>/<file>.pkl``).
        features: ``{vision: d_v, audio: d_a, text: 300}`` the original's feature sizes (checked against the
            file).
        label_rule: ``regression`` (MOSI/MOSEI), ``positive`` (sarcasm: label > 0) or ``raw`` (humor).
        num_classes: for the classification rules (2).
        modalities: a subset in the order wanted, e.g. ``[text, vision]`` (default all three).
        max_len: steps kept after the first text row (original: 50); with ``normalize`` also the window every sample is
            first cut to (the original's ``max_seq_len``). normalize: z-score vision and audio (original: yes).
        batch_size: the original's 64 (scripts/tune_real.sh). name: for messages.
    """

    def __init__(
        self,
        path: str,
        features: dict,
        label_rule: str = "regression",
        num_classes: int = 2,
        modalities=None,
        max_len: int = 50,
        normalize: bool = True,
        batch_size: int = 64,
        name: str = "affect",
        bias=None,
    ) -> None:
        if label_rule not in LABEL_RULES:
            raise ConfigError(f"dataset.label_rule: one of {list(LABEL_RULES)}, got {label_rule!r}")
        names, deselected = select_modalities(modalities, MODALITIES)
        if int(max_len) < 1 or int(batch_size) < 1:
            raise ConfigError(f"dataset.max_len, dataset.batch_size: must be positive, got {max_len}, {batch_size}")
        reject_bias(bias, name)
        self.path = Path(path)
        check_file(self.path)  # at start-up: no run directory, one line
        super().__init__(batch_size)
        self.name, self.label_rule, self.max_len, self.normalize = name, label_rule, int(max_len), normalize
        self.features = {m: int(features[m]) for m in MODALITIES}
        regression = label_rule == "regression"
        self.spec = DataSpec(
            modalities={
                m: ModalitySpec(
                    (self.max_len, self.features[m]), "sequence", masked=True, encoding_size=self.features[m]
                )
                for m in names
            },
            task="regression" if regression else "classification",
            num_classes=None if regression else int(num_classes),
            encoding_size=64,  # mmrep's shared width for contrastive objectives (not in the original)
            deselected=deselected,
        )

    def load_splits(self) -> dict[str, dict]:
        raw = read_affect_pickle(self.path)
        splits = {ours: self._clean(raw[theirs], theirs) for ours, theirs in SPLIT_KEYS.items()}
        if self.normalize:  # get_data.py: cut to max_len steps, then vision/audio z-scored with train stats
            splits = {name: first_steps(split, self.max_len) for name, split in splits.items()}
            for m in NORMALISED:
                mean, std = norm_stats(splits["train"][m])
                for split in splits.values():
                    split[m] = (split[m] - mean) / std
        out = {}
        for name, split in splits.items():
            start = first_text_rows(split["text"])
            split, start = self._drop_late_text(split, start, name)
            out[name] = {}
            for m in self.spec.names:
                x, mask = align_and_pad(split[m], start, self.max_len)
                out[name][m] = {"x": torch.from_numpy(x), "mask": torch.from_numpy(mask)}
            out[name]["y"] = torch.from_numpy(labels_from(split["labels"], self.label_rule))
            log.info("%s %s: %d samples", self.name, name, len(out[name]["y"]))
        return out

    def data_origin(self) -> tuple[str, str, str]:
        return "dataset.path", str(self.path), FIX

    def _clean(self, split: dict, key: str) -> dict[str, np.ndarray]:
        """Float arrays with the declared widths; samples whose text sums to 0 dropped with one warning, -inf audio set
        to 0 (get_data.py); then what the original would train on checked: one sample count and step count for all
        keys, finite values, labels that are classes (names the file's split ``key`` and sample numbers)."""
        head = lambda name=None: where("dataset.path", str(self.path), key, name)  # noqa: E731
        arrays = {}
        for m in MODALITIES:
            x = numeric_array(split[m], head(m))
            if x.ndim != 3 or x.shape[2] != self.features[m]:
                raise ConfigError(
                    f"dataset.features.{m}: {self.path} split {key!r} has {m} of shape {x.shape}, "
                    f"expected (N, T, {self.features[m]})"
                )
            arrays[m] = x
        labels = numeric_array(split["labels"], head("labels"))
        n = check_samples({**arrays, "labels": labels}, head())
        if labels.size == 0:
            raise ConfigError(f"{head('labels')}: shape {labels.shape} holds no label per sample; expected (N, 1, 1)")
        steps = {m: x.shape[1] for m, x in arrays.items()}
        if len(set(steps.values())) > 1 or 0 in steps.values():
            raise ConfigError(f"{head()}: the modalities hold step counts T {steps}; expected one T >= 1 for all")
        keep = text_keep(arrays["text"])  # in the file's dtype, as the original sums it
        if not keep.any():
            raise ConfigError(f"{head('text')}: all {n} samples have text summing to 0 (MultiBench drops them)")
        if not keep.all():
            log.warning(
                "%s %s: dropping %d of %d samples whose text sums to 0, as MultiBench's get_data.py does",
                self.name,
                key,
                int((~keep).sum()),
                n,
            )
        ids = np.flatnonzero(keep)  # the file's sample numbers, for the messages
        arrays = {m: np.asarray(x[keep], dtype=np.float32) for m, x in arrays.items()}
        arrays["audio"] = np.where(np.isneginf(arrays["audio"]), 0.0, arrays["audio"]).astype(np.float32)
        arrays["labels"] = labels[keep]
        for name, x in arrays.items():
            check_finite(x, head(name), ids)
        if self.label_rule == "raw":  # the other rules map every finite label to a class
            check_labels(labels_from(arrays["labels"], "raw"), self.spec.num_classes, head("labels"), ids)
        return arrays

    def _drop_late_text(self, split: dict, start: np.ndarray, name: str) -> tuple[dict, np.ndarray]:
        """Samples with no text row in the (cut) window dropped: only with normalisation and T > max_len (the
        original exits on them); the split and the starts of the kept samples."""
        late = start >= split["text"].shape[1]
        if not late.any():
            return split, start
        log.warning(
            "%s %s: dropping %d samples with no text in their first %d steps (dataset.max_len)",
            self.name,
            name,
            int(late.sum()),
            self.max_len,
        )
        return {k: v[~late] for k, v in split.items()}, start[~late]
