"""``dataset=caption_uniqueness``: image–caption pairs whose captions are rewritten with growing uniqueness U
(platonic-rep-unique perturbed/create_dataset.py), for measuring frozen vision and language models against each other
(``fit: false``).

Captions come from the variants file ``data.json`` (the experiment's layout): a list with one entry per image,
``{"Index - i": {"sentences": {"Caption 0 - 0%": original, "Caption k - P%": k-th rewrite, P = 10k}, "similarities":
[10 floats]}}``. For ``uniqueness=U`` every image's caption is its ``- U%`` variant (U = 0: the original), images in
``data.json`` order. Images come from

* a folder: ``<images>/<i>.<jpg|jpeg|png|webp>`` with ``i`` the entry's index, or
* Hugging Face ``datasets``: a ``save_to_disk`` folder, or a dataset name read offline from the local cache
  (``minhuh/prh``, revision ``wit_1024``, split ``train``, column ``image``: the experiment's 1,024 WIT pairs).

Modalities: ``image`` (3, S, S) uint8 (resized so the short side is S, centre-cropped; each vision model's own
processor normalises) and ``text`` (raw UTF-8 bytes; each language model tokenises). Every split is the whole set:
nothing is trained.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmrep.core.contract import DataSpec, ModalitySpec, encode_texts
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.data.base import InMemorySplitDataModule, reject_bias

log = logging.getLogger(__name__)

SOURCE = (
    "the caption variants of 'Understanding the Emergence of Multimodal Representation Alignment' "
    "(github.com/MeganTj/platonic-rep-unique, perturbed/data.json)"
)
LEVELS = tuple(range(0, 101, 10))  # create_dataset.py: U = 10 %, …, 100 % (0 = the original caption)
FORMAT = (
    'a JSON list of {"Index - i": {"sentences": {"Caption 0 - 0%": str, "Caption k - P%": str, ...}, '
    '"similarities": [...]}}'
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def read_variants(path: Path, uniqueness: int) -> tuple[list[int], list[str]]:
    """The entries' indices and their ``- U%`` captions, in file order; a clear ConfigError otherwise."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"dataset.data_json: no such file {path}; expected {FORMAT}, from {SOURCE}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"dataset.data_json: {path} is not readable JSON ({type(err).__name__}); expected {FORMAT}"
        ) from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"dataset.data_json: {path} holds no entries; expected {FORMAT}")
    indices, captions, suffix = [], [], f" - {uniqueness}%"
    for position, entry in enumerate(entries):
        try:
            ((key, body),) = entry.items()
            index = int(re.fullmatch(r"Index - (\d+)", key).group(1))
            caption = next(text for name, text in body["sentences"].items() if name.endswith(suffix))
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError("no caption text")
        except (AttributeError, ValueError, KeyError, TypeError, StopIteration):
            raise ConfigError(
                f"dataset.data_json: {path} entry {position} has no 'Index - i' key with a "
                f"non-empty 'Caption k - {uniqueness}%' sentence; expected {FORMAT}"
            ) from None
        indices.append(index)
        captions.append(str(caption))
    return indices, captions


def square(image: Image.Image, size: int) -> np.ndarray:
    """RGB, short side resized to ``size`` (bicubic), centre crop: (3, size, size) uint8."""
    image = image.convert("RGB")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def folder_images(folder: Path, indices: list[int]):
    """``<folder>/<i>.<ext>`` for each index, as PIL images."""
    for i in indices:
        path = next((folder / f"{i}{s}" for s in IMAGE_SUFFIXES if (folder / f"{i}{s}").is_file()), None)
        if path is None:
            raise ConfigError(
                f"dataset.images: no image for entry {i} in {folder}; expected {folder}/{i}.jpg (or "
                f".jpeg/.png/.webp), one per data.json entry"
            )
        try:
            with Image.open(path) as image:
                image.load()
                yield image
        except OSError as err:
            raise ConfigError(f"dataset.images: {path} is not a readable image ({type(err).__name__})") from None


def hf_images(name: str, revision: str | None, split: str, cache_dir: str | None, count: int):
    """The ``image`` column of a Hugging Face dataset: a ``save_to_disk`` folder, or ``name`` from the local cache
    (offline; nothing is downloaded)."""
    how = (
        f"download it once on a machine with internet (datasets.load_dataset({name!r}, revision={revision!r}, "
        f"split={split!r}, cache_dir=...)) and point dataset.hf_cache_dir at that cache, or save it with "
        "save_to_disk and give that folder as dataset.hf_dataset, or export the images to a folder (dataset.images)"
    )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read when datasets is imported: never download
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "dataset.hf_dataset: needs the Hugging Face `datasets` package (pip install datasets); or "
            "export the images to a folder and set dataset.images"
        ) from None
    try:
        if Path(name).is_dir():
            table = datasets.load_from_disk(name)
            table = table[split] if isinstance(table, datasets.DatasetDict) else table
        else:
            table = datasets.load_dataset(name, revision=revision, split=split, cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types for a missing cache; all mean "not available offline"
        raise ConfigError(
            f"dataset.hf_dataset: {name!r} (revision {revision}, split {split}) is not available "
            f"offline ({type(err).__name__}); {how}"
        ) from None
    if "image" not in table.column_names or len(table) < count:
        raise ConfigError(
            f"dataset.hf_dataset: {name!r} needs an 'image' column with >= {count} rows (one per "
            f"data.json entry), has columns {table.column_names} and {len(table)} rows"
        )
    return (table[i]["image"] for i in range(count))


class CaptionUniquenessDataModule(InMemorySplitDataModule):
    """Images with their ``- U%`` captions: ``image`` (3, S, S) uint8 and ``text`` (UTF-8 bytes).

    Args:
        data_json: the caption variants file. uniqueness: U in 0, 10, …, 100.
        images: a folder of ``<i>.<ext>`` images (used when it exists); else ``hf_dataset`` (a dataset name read
        offline from the local
            cache / ``hf_cache_dir``, or a ``save_to_disk`` folder) with ``hf_revision``, ``hf_split``.
        image_size: S. batch_size: loader batches (frozen feature extraction batches on its own).
    """

    def __init__(
        self,
        data_json: str = "data/caption_uniqueness/data.json",
        uniqueness: int = 10,
        images: str | None = None,
        hf_dataset: str | None = None,
        hf_revision: str | None = "wit_1024",
        hf_split: str = "train",
        hf_cache_dir: str | None = None,
        image_size: int = 224,
        batch_size: int = 64,
        bias=None,
    ) -> None:
        reject_bias(bias, "caption_uniqueness")
        check_positive_ints("dataset", image_size=image_size, batch_size=batch_size)
        if uniqueness not in LEVELS:
            raise ConfigError(
                f"dataset.uniqueness: one of {list(LEVELS)} (percent of rewritten content), got {uniqueness!r}"
            )
        if images is None and hf_dataset is None:
            raise ConfigError(
                "dataset.images, dataset.hf_dataset: give a source of the images (a folder, or a "
                "Hugging Face dataset name / save_to_disk folder)"
            )
        super().__init__(batch_size, align_split="test")
        self.uniqueness, self.image_size = int(uniqueness), int(image_size)
        self.indices, self.captions = read_variants(Path(data_json), self.uniqueness)
        if images is not None and (Path(images).is_dir() or hf_dataset is None):
            folder = Path(images)
            if not folder.is_dir():
                raise ConfigError(f"dataset.images: no such folder {folder}; expected <i>.jpg per data.json entry")
            self._source = lambda: folder_images(folder, self.indices)
        else:
            if images is not None:
                log.info("no image folder %s; reading the images from the Hugging Face dataset %s", images, hf_dataset)
            self._source = lambda: hf_images(hf_dataset, hf_revision, hf_split, hf_cache_dir, len(self.indices))
        width = max(len(c.encode("utf-8")) for c in self.captions)
        self.spec = DataSpec(
            modalities={
                "image": ModalitySpec((3, self.image_size, self.image_size), "image"),
                "text": ModalitySpec((width,), "text", masked=True),
            }
        )

    def load_splits(self) -> dict[str, dict]:
        pixels = torch.from_numpy(np.stack([square(image, self.image_size) for image in self._source()]))
        if len(pixels) != len(self.captions):
            raise ConfigError(f"dataset: {len(pixels)} images for {len(self.captions)} captions")
        data = {"image": pixels, "text": encode_texts(self.captions)}
        return {split: data for split in ("train", "val", "test")}
