"""Small data sets written in the exact on-disk formats of the external datasets (spec rus-alignment §6).

Same keys, dtypes, shapes, nesting and padding conventions as the real files, only fewer samples."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

AFFECT = {  # name: (folder, file, vision dim, audio dim, label kind)
    "mosei": ("mosei", "mosei_senti_data.pkl", 35, 74, "score"),
    "mosi": ("mosi", "mosi_data.pkl", 20, 5, "score"),
    "sarcasm": ("sarcasm", "sarcasm.pkl", 371, 81, "signed"),
    "humor": ("humor", "humor.pkl", 371, 81, "binary"),
}


def affect_split(rng, n: int, dv: int, da: int, labels: str, steps: int = 50, zero_text: int = 0) -> dict:
    """One MultiBench split: front-padded (N, T, d) float32 arrays, ``labels`` (N, 1, 1), ``id`` (N,) strings.

    Each sample's label shifts its features, so a model can learn something. ``zero_text`` samples get an
    all-zero text (the loader drops them); a few audio entries are -inf (the loader sets them to 0)."""
    y = {"score": rng.uniform(-3, 3, n), "signed": rng.choice([-1.0, 1.0], n),
         "binary": rng.integers(0, 2, n).astype(float)}[labels]
    split = {k: np.zeros((n, steps, d), np.float32) for k, d in (("vision", dv), ("audio", da), ("text", 300))}
    lengths = rng.integers(5, steps + 1, n)
    for i, length in enumerate(lengths):
        for k, x in split.items():
            x[i, steps - length :] = rng.normal(0.3 * y[i], 1.0, (length, x.shape[2]))
    split["audio"][0, -1, 0] = -np.inf
    for i in range(zero_text):
        split["text"][n - 1 - i] = 0.0
    split["labels"] = y.reshape(n, 1, 1).astype(np.float32)
    split["id"] = np.array([f"clip{i}" for i in range(n)])
    return split


def write_affect(data_dir: Path, name: str, sizes=(40, 16, 16), seed: int = 0) -> Path:
    """``<data_dir>/affect/<folder>/<file>.pkl`` as MultiBench ships it; returns the path."""
    folder, file, dv, da, labels = AFFECT[name]
    rng = np.random.default_rng(seed)
    data = {split: affect_split(rng, n, dv, da, labels, zero_text=1)
            for split, n in zip(("train", "valid", "test"), sizes)}
    path = Path(data_dir) / "affect" / folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def write_avmnist(data_dir: Path, n_train: int = 60, n_test: int = 20, n_mfcc: int = 20, n_frames: int = 36,
                  seed: int = 0) -> Path:
    """``<data_dir>/avmnist/avmnist_mfcc/``: image (N, 784) uint8-valued float, audio (N, n_mfcc, n_frames), labels."""
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "avmnist" / "avmnist_mfcc"
    for sub in ("image", "audio"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        image = rng.integers(0, 256, (n, 784)).astype(np.float64)
        image[:, :28] = labels[:, None] * 25  # the first pixel row encodes the digit
        audio = rng.normal(0, 1, (n, n_mfcc, n_frames)) * np.arange(1, n_mfcc + 1)[None, :, None] + labels[:, None, None]
        np.save(root / "image" / f"{split}_data.npy", image)
        np.save(root / "audio" / f"{split}_data.npy", audio)
        np.save(root / f"{split}_labels.npy", labels)
    return root


def write_all(data_dir: Path) -> None:
    for name in AFFECT:
        write_affect(data_dir, name)
    write_avmnist(data_dir)
