"""``dataset=causal3dident``: Causal3DIdent renders with templated captions (spec numeric-misalignment §4).

On-disk layout under ``dataset.data_dir`` (the original's, unchanged)::

    latents_image.csv                          object_shape, object_xpos, object_ypos, object_zpos, object_alpharot,
                                               object_betarot, object_gammarot, object_color, spotlight_pos,
                                               spotlight_color, background_color (one row per image)
    latents_text_{selections|perturbations}_{i}.csv    the captions' factor values, with text_phrasing (i = 0..6)
    text/{selections|perturbations}_{i}/text_raw.txt   one caption per line
    images/{index:0Wd}.png                     W = ceil(log10(N)), e.g. 00000.png … 99999.png for N = 100,000
    vocab_{selections|perturbations}_{i}.json  written on first use from the training captions

Samples are split by index: the first 80 % train, the next 10 % val (probe fit), the last 10 % test (spec §4.2).
Images are read from their PNG files one batch at a time (``ToTensor`` then the spec's mean/std); captions are kept
as token ids and one-hot encoded per batch.

The original's perturbation setting 0 wrote the *object* hue into the background-colour caption (spec §4.1,
§6.9), so with the released files background_color is misaligned in that setting although its role here says
invariant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from mmrep.bias.misalignment import MisalignmentBias
from mmrep.data.captions import read_caption_lines, token_ids
from mmrep.data.contract import Batch, DataSpec, ModalitySpec
from mmrep.data.factor_data import FactorDataModule, read_factor_table
from mmrep.errors import ConfigError, check_positive_ints

SOURCE = ("the Causal3DIdent image–text release of 'Negate or Embrace' (github.com/YichaoCai1/crossmodal_mislaignment, "
          "rendering_data/Causal3DIdent)")
SEMANTIC = ("object_shape", "object_xpos", "object_ypos", "spotlight_pos", "object_color", "spotlight_color",
            "background_color")
ROTATIONS = ("object_alpharot", "object_betarot", "object_gammarot")
SETTINGS = {  # spec §4.1: cumulative selections; perturbations always caption everything
    "selection": [SEMANTIC[: i + 1] for i in range(len(SEMANTIC))],
    "perturbation": [SEMANTIC[len(SEMANTIC) - i :] for i in range(len(SEMANTIC))],  # ∅, {background}, … {xpos, …}
}
ENCODING_SIZES = {"selection": (3, 3, 4, 5, 5, 6, 7), "perturbation": (7, 6, 5, 5, 4, 3, 3)}  # spec §4.3
MEAN = (0.4327, 0.2689, 0.2839)  # spec §4.2 image normalisation
STD = (0.1201, 0.1457, 0.1082)


def image_path(root: Path, index: int, count: int) -> Path:
    """``images/{index:0Wd}.png`` with ``W = ceil(log10(count))`` (spec §4.2)."""
    return root / "images" / f"{index:0{max(1, math.ceil(math.log10(count)))}d}.png"


class Causal3DIdentDataModule(FactorDataModule):
    """Causal3DIdent with captions of one paper setting: ``image`` (3, H, W) and ``text`` (L, V) one-hot tokens.

    Args:
        bias: the paper setting (``bias.setting=selection_<i>`` / ``perturbation_<i>``, i = 0..6; the original's
            plural ``selections_<i>`` works too), or θ/β naming the semantic factors so that they equal one.
        data_dir: the folder of the layout above. batch_size, num_workers: loaders (spec: 256, 4).
        encoding_size: ``None`` = the paper's size for the setting (spec §4.3).
    """

    SEMANTIC = SEMANTIC
    IMAGE_ONLY = ROTATIONS
    TEXT_ONLY = ("text_phrasing",)
    CONTINUOUS = frozenset(("spotlight_pos", "object_color", "spotlight_color", "background_color", *ROTATIONS))
    SETTINGS = SETTINGS

    def __init__(self, bias: MisalignmentBias | None = None, data_dir: str = "data/causal3dident",
                 batch_size: int = 256, num_workers: int = 0, encoding_size: int | None = None) -> None:
        check_positive_ints("dataset", batch_size=batch_size)
        super().__init__(bias, batch_size, num_workers)
        kind, index = self.paper_setting("causal3dident")
        self.root, name = Path(data_dir), f"{kind}s_{index}"  # the files use the plural
        self.latents = read_factor_table(self.root / "latents_image.csv", [*SEMANTIC, *ROTATIONS], SOURCE)
        self.count = len(self.latents)
        text_latents = read_factor_table(self.root / f"latents_text_{name}.csv", ["text_phrasing"], SOURCE)
        captions = read_caption_lines(self.root / "text" / name / "text_raw.txt", "dataset.data_dir", SOURCE)
        for path, rows in ((self.root / f"latents_text_{name}.csv", len(text_latents)),
                           (self.root / "text" / name / "text_raw.txt", len(captions))):
            if rows != self.count:
                raise ConfigError(f"dataset.data_dir: {path} has {rows} rows but latents_image.csv has {self.count}; "
                                  f"both come from one render, from {SOURCE}")
        self.latents["text_phrasing"] = text_latents["text_phrasing"].to_numpy()
        self.bounds = (int(0.8 * self.count), int(0.9 * self.count))
        if not 0 < self.bounds[0] < self.bounds[1] < self.count:
            raise ConfigError(f"dataset.data_dir: {self.root} holds {self.count} samples; the 80/10/10 split needs at "
                              "least 10")
        missing = next((i for i in range(self.count) if not image_path(self.root, i, self.count).is_file()), None)
        if missing is not None:
            raise ConfigError(f"dataset.data_dir: no such file {image_path(self.root, missing, self.count)}; expected "
                              f"one RGB PNG per row of latents_image.csv, from {SOURCE}")
        self.image_size = self._read_images([0]).shape[1:3]
        self.use_vocabulary(self.root / f"vocab_{name}.json", captions[: self.bounds[0]])
        self.captions = captions
        self.length = max(map(len, captions)) + 1  # + eos; one text file holds every split (spec §4.2)
        self.spec = DataSpec(
            modalities={"image": ModalitySpec((3, *self.image_size), "image"),
                        "text": ModalitySpec((self.length, self.vocab_size), "sequence")},
            task="none",
            encoding_size=int(encoding_size) if encoding_size else ENCODING_SIZES[kind][index],
            latent_names=(*SEMANTIC, *ROTATIONS, "text_phrasing"),
        )
        self._mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(STD).view(1, 3, 1, 1)

    def _read_images(self, indices: Sequence[int]) -> np.ndarray:
        """(B, H, W, 3) uint8 from the PNG files; a missing or odd file is a one-line error naming it."""
        out = []
        for i in indices:
            path = image_path(self.root, int(i), self.count)
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except OSError as err:
                raise ConfigError(f"dataset.data_dir: {path} is not a readable image ({type(err).__name__}); from "
                                  f"{SOURCE}") from None
            if out and pixels.shape != out[0].shape:
                raise ConfigError(f"dataset.data_dir: {path} is {pixels.shape[1]}×{pixels.shape[0]}, other images are "
                                  f"{out[0].shape[1]}×{out[0].shape[0]}")
            out.append(pixels)
        return np.stack(out)

    def load_splits(self) -> dict[str, dict]:
        (train, val), out = self.bounds, {}
        for split, rows in (("train", slice(0, train)), ("val", slice(train, val)), ("test", slice(val, self.count))):
            part = self.latents.iloc[rows]
            out[split] = {
                "image": torch.arange(self.count)[rows],
                "text": token_ids(self.captions[rows], self.vocab, self.length),
                "latents": {f: torch.from_numpy(part[f].to_numpy(np.float32)[:, None]) for f in self.factor_roles()},
            }
        return out

    def decode_batch(self, batch: Batch) -> Batch:
        """Sample indices → normalised float images (B, 3, H, W); token ids → one-hot (spec §4.2)."""
        images = torch.from_numpy(self._read_images(batch["image"].tolist()))
        if tuple(images.shape[1:3]) != tuple(self.image_size):
            raise ConfigError(f"dataset.data_dir: images under {self.root / 'images'} differ in size: "
                              f"{tuple(images.shape[1:3])} vs {tuple(self.image_size)}")
        x = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return {**super().decode_batch(batch), "image": (x - self._mean) / self._std}
