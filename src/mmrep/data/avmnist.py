"""AVMNIST with MFCC audio (arXiv:2502.16282; multimodal_alignment
datasets/avmnist/get_data.py::get_dataloader_mfcc): a handwritten digit image and a spoken digit.

On disk, under ``<data_dir>/avmnist/avmnist_mfcc/``::

    image/train_data.npy (60000, 784) or (60000, 28, 28)   image/test_data.npy (10000, ...)   pixel values 0..255
    audio/train_data.npy (60000, n_mfcc, n_frames)           audio/test_data.npy (10000, ...)  MFCC, e.g. 20 × 36
    train_labels.npy (60000,)                                test_labels.npy (10000,)          digits 0..9

Splits: train rows 0..55,000, validation rows 55,000..60,000, test = the test files. The image is scaled by 1/255
and cut into a 7×7 grid of 4×4 patches, each flattened to 16 values: ``(1, 7, 7, 16)``, 49 tokens for a ViT. The
audio is z-scored per MFCC coefficient (axis 1) with statistics of the 55,000 training rows over samples and frames
(axes 0 and 2). Axis order, verified against the original loader: axis 1 holds the coefficients and axis 2 the
frames, and the original's transformer reads axis 1 as the token axis — 20 tokens (coefficients) of 36 features
(frames), the "≤ 20 tokens × 36" of the original's AVMNIST audio transformer (multimodal_alignment
unimodals/common_models.py). ``audio_tokens: frames`` transposes to the usual frames-as-tokens layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.data.base import InMemorySplitDataModule, reject_bias, select_modalities
from mmrep.data.integrity import FIX, check_finite, check_labels, check_samples, numeric_array, where

FILES = (
    "image/train_data.npy",
    "image/test_data.npy",
    "audio/train_data.npy",
    "audio/test_data.npy",
    "train_labels.npy",
    "test_labels.npy",
)
SOURCE = "the AVMNIST data of MultiBench (github.com/pliang279/MultiBench, 'Multimedia'), MFCC variant"
N_TRAIN = 55_000  # get_dataloader_mfcc: rows 55,000..60,000 of the train files are the validation split


def image_patches(images: np.ndarray) -> np.ndarray:
    """(N, 784) or (N, 28, 28) pixels → (N, 1, 7, 7, 16): 4×4 patches in row-major grid order, each row-major."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), 7, 4, 7, 4) / 255.0
    return x.transpose(0, 1, 3, 2, 4).reshape(len(images), 1, 7, 7, 16)


def mfcc_stats(train_audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (1, n_mfcc, 1) of the training rows' audio (N, n_mfcc, n_frames) per coefficient, over samples
    and frames (get_dataloader_mfcc). A zero std becomes 1 (deliberate: the original divides by 0, giving nan/inf)."""
    mean = train_audio.mean(axis=(0, 2), keepdims=True)
    std = train_audio.std(axis=(0, 2), keepdims=True)
    return mean, np.where(std > 0, std, 1.0).astype(train_audio.dtype)


class AVMNISTDataModule(InMemorySplitDataModule):
    """AVMNIST: modalities ``image`` (1, 7, 7, 16) patches and ``audio`` (n_mfcc, n_frames) MFCC tokens; 10 classes.

    Args:
        root: the ``avmnist_mfcc`` folder (conf: ``${paths.data_dir}/avmnist/avmnist_mfcc``).
        audio_tokens: ``mfcc`` (the original: coefficients are the tokens) or ``frames`` (transposed).
        n_train: training rows of the train files (the rest validate; original: 55,000). batch_size: original 64.
        modalities: a subset/order of ``[image, audio]``.
    """

    MODALITIES = ("image", "audio")

    def __init__(
        self,
        root: str,
        audio_tokens: str = "mfcc",
        n_train: int = N_TRAIN,
        batch_size: int = 64,
        modalities=None,
        bias=None,
    ) -> None:
        if audio_tokens not in ("mfcc", "frames"):
            raise ConfigError(f"dataset.audio_tokens: 'mfcc' or 'frames', got {audio_tokens!r}")
        names, deselected = select_modalities(modalities, self.MODALITIES)
        reject_bias(bias, "avmnist")
        self.root = Path(root)
        missing = [f for f in FILES if not (self.root / f).is_file()]
        if missing:
            raise ConfigError(
                f"dataset.root: {self.root / missing[0]} not found; expected the .npy files {list(FILES)} "
                f"under {self.root}, from {SOURCE}"
            )
        super().__init__(batch_size)
        self.audio_tokens, self.n_train = audio_tokens, int(n_train)
        audio = np.load(self.root / "audio/test_data.npy", mmap_mode="r")
        if audio.ndim != 3:
            raise ConfigError(
                f"dataset.root: {self.root / 'audio/test_data.npy'} has shape {audio.shape}; "
                "expected (N, n_mfcc, n_frames)"
            )
        shape = tuple(audio.shape[1:]) if audio_tokens == "mfcc" else tuple(audio.shape[1:][::-1])
        self.spec = DataSpec(
            modalities={
                m: s
                for m, s in {
                    "image": ModalitySpec((1, 7, 7, 16), "image", encoding_size=16),
                    "audio": ModalitySpec(shape, "sequence", encoding_size=shape[-1]),
                }.items()
                if m in names
            },
            task="classification",
            num_classes=10,
            encoding_size=64,  # mmrep's shared width for contrastive objectives (not in the original)
            deselected=deselected,
        )

    def data_origin(self) -> tuple[str, str, str]:
        return "dataset.root", str(self.root), FIX

    def _load(self, name: str, split: str, key: str) -> np.ndarray:
        """One .npy file as a numeric array with samples, finite values (labels: digits 0..9), else one line."""
        path = self.root / name
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            first = (str(err).splitlines() or [""])[0]
            raise ConfigError(
                f"dataset.root: {path} is not a readable .npy array ({type(err).__name__}: {first})"
            ) from None
        head = where("dataset.root", str(path), split, key)
        array = numeric_array(array, head)
        check_samples({key: array}, head)
        if key == "labels":
            check_labels(array.reshape(len(array), -1), 10, head, fix="AVMNIST labels are the digits 0..9")
        else:
            check_finite(array, head)
        return array

    def load_splits(self) -> dict[str, dict]:
        image = {s: self._load(f"image/{s}_data.npy", s, "image") for s in ("train", "test")}
        audio = {s: self._load(f"audio/{s}_data.npy", s, "audio").astype(np.float32) for s in ("train", "test")}
        labels = {s: self._load(f"{s}_labels.npy", s, "labels").astype(np.int64).reshape(-1) for s in ("train", "test")}
        for s in ("train", "test"):
            if (
                not (len(image[s]) == len(audio[s]) == len(labels[s]))
                or image[s].size != len(image[s]) * 784
                or audio[s].shape[1:] != audio["test"].shape[1:]
            ):
                raise ConfigError(
                    f"dataset.root: {self.root} {s} files disagree: image {image[s].shape}, "
                    f"audio {audio[s].shape}, labels {labels[s].shape} (expected N × 784 pixels, N labels and "
                    f"audio (N, {', '.join(map(str, audio['test'].shape[1:]))}) as in audio/test_data.npy)"
                )
        if not 0 < self.n_train < len(labels["train"]):
            raise ConfigError(f"dataset.n_train: must be in 1..{len(labels['train']) - 1}, got {self.n_train}")
        mean, std = mfcc_stats(audio["train"][: self.n_train])  # get_dataloader_mfcc: per coefficient, train rows only
        rows = {
            "train": ("train", slice(0, self.n_train)),
            "val": ("train", slice(self.n_train, None)),
            "test": ("test", slice(None)),
        }
        out = {}
        for split, (source, index) in rows.items():
            a = (audio[source][index] - mean) / std
            if self.audio_tokens == "frames":
                a = a.transpose(0, 2, 1)
            arrays = {"image": image_patches(image[source][index]), "audio": np.ascontiguousarray(a, dtype=np.float32)}
            out[split] = {m: torch.from_numpy(arrays[m]) for m in self.spec.names}
            out[split]["y"] = torch.from_numpy(labels[source][index])
        return out
