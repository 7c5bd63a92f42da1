"""MultiBench affect datasets: MOSEI, MOSI, MUStARD (sarcasm), UR-FUNNY (humor) (spec rus-alignment.md §6.1).

On disk (MultiBench's processed pickles, under ``<data_dir>/affect/``)::

    {"train" | "valid" | "test": {"vision": (N, T, d_v), "audio": (N, T, d_a), "text": (N, T, 300) GloVe,
                                  "labels": (N, 1, 1), ...}}

with T ≈ 50 steps, front-padded with zero rows. Loading follows the original exactly: samples whose text is all
zeros are dropped, ``-inf`` audio values become 0, vision and audio are z-scored per feature with statistics of the
train split over samples × its first 50 steps (padding included; text is left as is), then every modality is
cut from the sample's first non-zero text row, truncated to ``max_len`` = 50 steps and right-padded with zeros.
Each modality is a masked sequence ``{"x": (B, 50, d), "mask": (B, 50)}`` (mask True at real steps; the original's
mask was True at padding). Labels: MOSI/MOSEI regress the raw sentiment score (reported as the accuracy of its
sign, §3.1), sarcasm is ``label > 0``, humor the raw 0/1 label.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from mmrep.data.base import InMemorySplitDataModule, reject_bias, select_modalities
from mmrep.data.contract import DataSpec, ModalitySpec
from mmrep.errors import ConfigError

log = logging.getLogger(__name__)

MODALITIES = ("vision", "audio", "text")  # spec §6.1: modality 0, 1, 2
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}  # ours → the pickle's
SOURCE = ("the MultiBench affective-computing data (github.com/pliang279/MultiBench, 'Affective Computing'); "
          "place the processed pickle there or set dataset.path")
FORMAT = "a pickle {'train'|'valid'|'test': {'vision': (N,T,dv), 'audio': (N,T,da), 'text': (N,T,300), 'labels': (N,1,1)}}"
LABEL_RULES = ("regression", "positive", "raw")


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
        raise ConfigError(f"dataset.path: {path} is not a readable pickle ({type(err).__name__}); expected {FORMAT}, "
                          f"from {SOURCE}") from None
    for split in SPLIT_KEYS.values():
        if not isinstance(data, dict) or not isinstance(data.get(split), dict):
            raise ConfigError(f"dataset.path: {path} has no split {split!r}; expected {FORMAT}, from {SOURCE}")
        missing = [k for k in (*MODALITIES, "labels") if k not in data[split]]
        if missing:
            raise ConfigError(f"dataset.path: {path} split {split!r} lacks {missing}; expected {FORMAT}, from {SOURCE}")
    return data


def first_text_rows(text: np.ndarray) -> np.ndarray:
    """Index of each sample's first non-zero text row (N,); T for an all-zero sample."""
    nonzero = np.abs(text).sum(axis=2) != 0
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
    """(N,) targets from the pickle's labels: raw float score, ``label > 0`` or the raw integer label."""
    flat = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)[:, 0]
    if rule == "regression":
        return flat.astype(np.float32)
    if rule == "positive":
        return (flat > 0).astype(np.int64)
    return flat.astype(np.int64)


class AffectDataModule(InMemorySplitDataModule):
    """One MultiBench affect dataset with modalities ``vision``, ``audio``, ``text`` (spec §6.1).

    Args:
        path: the pickle (conf: ``${paths.data_dir}/affect/<name>/<file>.pkl``).
        features: ``{vision: d_v, audio: d_a, text: 300}`` the spec's feature sizes (checked against the file).
        label_rule: ``regression`` (MOSI/MOSEI), ``positive`` (sarcasm: label > 0) or ``raw`` (humor).
        num_classes: for the classification rules (2).
        modalities: a subset in the order wanted, e.g. ``[text, vision]`` (default all three).
        max_len: steps kept after the first text row (spec: 50). normalize: z-score vision and audio (spec: yes).
        batch_size: spec §3.3: 64. name: for messages.
    """

    def __init__(self, path: str, features: dict, label_rule: str = "regression", num_classes: int = 2,
                 modalities=None, max_len: int = 50, normalize: bool = True, batch_size: int = 64,
                 name: str = "affect", bias=None) -> None:
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
            modalities={m: ModalitySpec((self.max_len, self.features[m]), "sequence", masked=True,
                                        encoding_size=self.features[m]) for m in names},
            task="regression" if regression else "classification",
            num_classes=None if regression else int(num_classes),
            encoding_size=64,  # mmrep's shared width for contrastive objectives (not in the spec)
            deselected=deselected,
        )

    def load_splits(self) -> dict[str, dict]:
        raw = read_affect_pickle(self.path)
        splits = {ours: self._clean(raw[theirs], theirs) for ours, theirs in SPLIT_KEYS.items()}
        if self.normalize:  # vision, audio: per-feature stats of train × first 50 steps, padding included (§6.1)
            for m in ("vision", "audio"):
                window = splits["train"][m][:, : self.max_len].reshape(-1, self.features[m])
                mean, std = window.mean(axis=0), window.std(axis=0)
                std = np.where(std > 0, std, 1.0)  # the original divided by 0 for constant features
                for split in splits.values():
                    split[m] = (split[m] - mean) / std
        out = {}
        for name, split in splits.items():
            start = first_text_rows(split["text"])
            out[name] = {}
            for m in self.spec.names:
                x, mask = align_and_pad(split[m], start, self.max_len)
                out[name][m] = {"x": torch.from_numpy(x), "mask": torch.from_numpy(mask)}
            out[name]["y"] = torch.from_numpy(labels_from(split["labels"], self.label_rule))
            log.info("%s %s: %d samples", self.name, name, len(out[name]["y"]))
        return out

    def _clean(self, split: dict, key: str) -> dict[str, np.ndarray]:
        """Float arrays with the declared widths; all-zero-text samples dropped, -inf audio set to 0 (§6.1)."""
        arrays = {}
        for m in MODALITIES:
            x = np.asarray(split[m], dtype=np.float32)
            if x.ndim != 3 or x.shape[2] != self.features[m]:
                raise ConfigError(f"dataset.features.{m}: {self.path} split {key!r} has {m} of shape {x.shape}, "
                                  f"expected (N, T, {self.features[m]})")
            arrays[m] = x
        arrays["audio"] = np.where(np.isneginf(arrays["audio"]), 0.0, arrays["audio"]).astype(np.float32)
        arrays["labels"] = np.asarray(split["labels"])
        keep = np.abs(arrays["text"]).reshape(len(arrays["text"]), -1).sum(axis=1) != 0
        if (~keep).any():
            log.info("%s %s: dropping %d samples with all-zero text", self.name, key, int((~keep).sum()))
        return {k: v[keep] for k, v in arrays.items()}
