"""``dataset=mpi3d_complex``: MPI3D-complex images with templated captions (arXiv:2504.10143;
crossmodal_mislaignment main_mpi3dreal.py, rendering_data/MPI3D/render_multimodal_mpi3d.py).

On-disk layout under ``dataset.data_dir`` (the original's, unchanged)::

    real3d_complicated_shapes_ordered.npz     key "images": (460800, 64, 64, 3) uint8, in factor-grid order
    train/ test/
        image_semantics.csv                   columns OBJ_COLOR, OBJ_SHAPE, OBJ_SIZE, CAMERA, BACKGROUND, H_AXIS, V_AXIS
        text_semantics_selection_{i}.csv      the selected factors' caption values (i = 0..4)
        text_semantics_perturbation_{i}.csv   all five factors' caption values, perturbed ones redrawn
        text_selection_{i}.txt, text_perturbation_{i}.txt    one caption per line
    vocab_{selection|perturbation}_{i}.json   written on first use from the training captions

The images are the public MPI3D ``real3d_complicated_shapes_ordered.npz``; the captions and factor tables come from
``python -m mmrep.data.mpi3d render-text --root <data_dir>`` (seeded, the templates of render_multimodal_mpi3d.py),
which also writes the original's 90/10 train/test split (permutation seed 42) when no ``image_semantics.csv``
exists. At run time the
test files are halved by position: the first half is "val" (probe fit), the second "test" (probe score).

Images are kept as the uint8 file (memory-mapped when the npz is uncompressed) and normalised per batch (/255,
then main_mpi3dreal.py's mean/std); captions are kept as token ids and one-hot encoded per batch.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmrep.bias.misalignment import MisalignmentBias
from mmrep.core.contract import Batch, DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.core.files import atomic_write
from mmrep.data.captions import read_caption_lines, render_text_main, token_ids, write_caption_files
from mmrep.data.factor_data import FactorDataModule, read_factor_table

log = logging.getLogger(__name__)

IMAGES = "real3d_complicated_shapes_ordered.npz"
SOURCE = (
    "the MPI3D 'real3d_complicated_shapes_ordered.npz' (github.com/rr-learning/disentanglement_dataset) with "
    "captions from `python -m mmrep.data.mpi3d render-text --root <data_dir>`"
)
GRID = (4, 4, 2, 3, 3, 40, 40)  # main_mpi3dreal.py: images reshape to this factor grid
# our factor name: the original's column name
COLUMNS = {
    "color": "OBJ_COLOR",
    "shape": "OBJ_SHAPE",
    "size": "OBJ_SIZE",
    "camera": "CAMERA",
    "background": "BACKGROUND",
    "horizontal": "H_AXIS",
    "vertical": "V_AXIS",
}
# render_multimodal_mpi3d.py's word tables (" beer-cup" keeps the original's leading space) and templates, as data
WORDS = {
    "color": ("yellow", "green", "olive", "red"),
    "shape": ("coffee-cup", "tennis-ball", "croissant", " beer-cup"),
    "size": ("small size", "large size"),
    "camera": ("top view", "center view", "bottom view"),
    "background": ("in a purple background", "in a sea-green background", "in a salmon background"),
}
# Templates by selection level; level 4 also captions every perturbation setting. {C}olor {S}hape si{Z}e {V}iew {B}ack
TEMPLATES = (
    ("An object colored {C}.", "It has a {C} appearance.", "Something with {C}."),
    ("A {S} that is {C}.", "The {C} {S}.", "An object shaped like a {S}, colored {C}."),
    ("A {Z} {S} in {C}.", "{C}, {Z}, {S}.", "The object is {Z}, shaped as a {S}, and colored {C}."),
    ("A {Z} {S} in {C}, seen from {V}.", "Viewed from {V}, a {C}, {Z} {S}.", "A {Z} {S} with {C}, perspective: {V}."),
    (
        "A {Z} {S} in {C}, viewed from {V}, {B}.",
        "From {V}, you see a {C}, {Z} {S}, {B}.",
        "A {Z} {S}, {C}, placed {B}, observed from {V}.",
    ),
)
SLOTS = {"color": "C", "shape": "S", "size": "Z", "camera": "V", "background": "B"}
SETTINGS = {  # render_multimodal_mpi3d.py's bias table (index = the original's --bias-id)
    "selection": [
        ("color",),
        ("color", "shape"),
        ("color", "shape", "size"),
        ("color", "shape", "size", "camera"),
        ("color", "shape", "size", "camera", "background"),
    ],
    "perturbation": [
        (),
        ("background",),
        ("camera", "background"),
        ("size", "camera", "background"),
        ("shape", "size", "camera", "background"),
    ],
}
MEAN = (0.00888889, 0.00888889, 0.00830382)  # main_mpi3dreal.py image normalisation
STD = (0.08381344, 0.07622504, 0.06356431)


def _expected(count: int | str) -> str:
    return f"an npz with key 'images' of shape ({count}, 64, 64, 3) uint8"


def images_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int | None]:
    """Shape, dtype and (for an uncompressed C-order member) the byte offset of the npz's ``images``, from the
    headers alone; a missing or unreadable file is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"dataset.data_dir: no such file {path}; expected {_expected('N')}, from {SOURCE}")
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("images.npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(member)
                header = member.tell()
            offset = None
            if info.compress_type == zipfile.ZIP_STORED and not fortran:
                with open(path, "rb") as fh:  # data start: local file header (30 bytes + name + extra), npy header
                    fh.seek(info.header_offset + 26)
                    name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
                offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(
            f"dataset.data_dir: {path} is not {_expected('N')} ({type(err).__name__}); from {SOURCE}"
        ) from None
    if len(shape) != 4 or shape[1:] != (64, 64, 3) or dtype != np.uint8:
        raise ConfigError(
            f"dataset.data_dir: {path} holds images {shape} {dtype}; expected {_expected('N')}, from {SOURCE}"
        )
    return shape, dtype, offset


def open_images(path: Path, count: int) -> np.ndarray:
    """The npz's ``images`` (count, 64, 64, 3) uint8: memory-mapped when stored uncompressed, else read whole."""
    shape, dtype, offset = images_header(path)
    if shape[0] != count:
        raise ConfigError(
            f"dataset.data_dir: {path} holds {shape[0]} images; expected {_expected(count)} "
            f"(the product of dataset.factor_sizes), from {SOURCE}"
        )
    if offset is not None:
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)
    with np.load(path, allow_pickle=False) as stored:
        return stored["images"]


def read_table(path: Path, columns: Sequence[str], rows: int | None = None) -> pd.DataFrame:
    """An integer CSV with at least ``columns`` (and ``rows`` rows), else a one-line ConfigError."""
    table = read_factor_table(path, columns, SOURCE, integer=True)
    if rows is not None and len(table) != rows:
        raise ConfigError(
            f"dataset.data_dir: {path} has {len(table)} rows but its split has {rows} captions; "
            f"regenerate the captions with `python -m mmrep.data.mpi3d render-text`"
        )
    return table


class MPI3DComplexDataModule(FactorDataModule):
    """MPI3D-complex with captions of one paper setting: ``image`` (3, 64, 64) and ``text`` (L, V) one-hot tokens.

    Args:
        bias: the paper setting (``bias.setting=selection_<i>`` / ``perturbation_<i>``, i = 0..4, or θ/β naming
            factors ``color, shape, size, camera, background`` that equal one); captions exist only for those.
        data_dir: the folder of the layout above. factor_sizes: the npz's factor grid (the real file's by default;
            smaller only for subsets of the grid, e.g. test fixtures).
        batch_size, num_workers: loaders (main_mpi3dreal.py: 256, 4). encoding_size: ``None`` = max(3, |unbiased
            factors|).
    """

    SEMANTIC = tuple(WORDS)
    IMAGE_ONLY = ("horizontal", "vertical")
    SETTINGS = SETTINGS

    def __init__(
        self,
        bias: MisalignmentBias | None = None,
        data_dir: str = "data/mpi3d_complex",
        factor_sizes: Sequence[int] = GRID,
        batch_size: int = 256,
        num_workers: int = 0,
        encoding_size: int | None = None,
    ) -> None:
        check_positive_ints("dataset", batch_size=batch_size)
        super().__init__(bias, batch_size, num_workers)
        self.kind, self.index = self.paper_setting("mpi3d_complex")
        self.root, self.grid = Path(data_dir), tuple(int(s) for s in factor_sizes)
        if len(self.grid) != 7 or any(s < 1 for s in self.grid) or self.grid[:5] != GRID[:5]:
            raise ConfigError(
                f"dataset.factor_sizes: 7 positive sizes starting {list(GRID[:5])} (the caption factors), "
                f"got {list(self.grid)}"
            )
        name = f"{self.kind}_{self.index}"
        images_header(self.root / IMAGES)  # fail before any work when the image file is missing or unreadable
        self.captions = {
            split: read_caption_lines(self.root / split / f"text_{name}.txt", "dataset.data_dir", SOURCE)
            for split in ("train", "test")
        }
        self.factors = {
            split: read_table(
                self.root / split / "image_semantics.csv", list(COLUMNS.values()), len(self.captions[split])
            )
            for split in ("train", "test")
        }
        text_columns = [COLUMNS[f] for f in (SETTINGS["selection"][self.index] if self.kind == "selection" else WORDS)]
        for split in ("train", "test"):
            read_table(self.root / split / f"text_semantics_{name}.csv", text_columns, len(self.captions[split]))
        if not self.captions["train"]:
            raise ConfigError(
                f"dataset.data_dir: {self.root / 'train' / f'text_{name}.txt'} holds no captions; the train split "
                f"needs at least one, from {SOURCE}"
            )
        if len(self.captions["test"]) < 2:
            raise ConfigError(
                f"dataset.data_dir: {self.root / 'test'} has {len(self.captions['test'])} captions; "
                "the test files are halved into val and test, so they need at least 2"
            )
        self.use_vocabulary(self.root / f"vocab_{name}.json", self.captions["train"])
        # the original (main_mpi3dreal.py) pads each split to its own maximum; one length for all splits keeps the
        # text encoder's input size fixed
        self.length = max(len(c) for split in self.captions.values() for c in split) + 1
        self.spec = DataSpec(
            modalities={
                "image": ModalitySpec((3, 64, 64), "image"),
                "text": ModalitySpec((self.length, self.vocab_size), "sequence"),
            },
            task="none",
            encoding_size=int(encoding_size) if encoding_size else max(3, len(self.bias.invariant)),  # as the paper
            latent_names=tuple(COLUMNS),
        )
        self._images: np.ndarray | None = None
        self._mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(STD).view(1, 3, 1, 1)

    def load_splits(self) -> dict[str, dict]:
        self._images = open_images(self.root / IMAGES, int(np.prod(self.grid)))
        half = len(self.captions["test"]) // 2
        parts = {"train": ("train", slice(None)), "val": ("test", slice(0, half)), "test": ("test", slice(half, None))}
        out = {}
        for name, (split, rows) in parts.items():
            table = self.factors[split].iloc[rows]
            values = table[list(COLUMNS.values())].to_numpy()
            bad = (values < 0) | (values >= np.array(self.grid))
            if bad.any():
                row, col = map(int, np.argwhere(bad)[0])
                raise ConfigError(
                    f"dataset.data_dir: {self.root / split / 'image_semantics.csv'} row {row} has "
                    f"{list(COLUMNS.values())[col]} = {values[row, col]} outside the factor grid "
                    f"{list(self.grid)} (dataset.factor_sizes)"
                )
            tokens = self.captions[split][rows]
            out[name] = {
                "image": torch.from_numpy(np.ravel_multi_index(values.T, self.grid)),
                "text": token_ids(tokens, self.vocab, self.length),
                "latents": {
                    f: torch.from_numpy(values[:, j : j + 1].astype(np.float32)) for j, f in enumerate(COLUMNS)
                },
            }
        return out

    def decode_batch(self, batch: Batch) -> Batch:
        """Image indices → normalised float images (B, 3, 64, 64); token ids → one-hot (main_mpi3dreal.py)."""
        index = batch["image"].numpy()
        order = np.argsort(index)  # sorted reads from the memory map, put back in batch order
        images = np.empty((len(index), 64, 64, 3), np.uint8)
        images[order] = self._images[index[order]]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return {**super().decode_batch(batch), "image": (x - self._mean) / self._std}


# ---- render-text --------------------------------------------------------------------------------------------------
def original_split(grid: Sequence[int] = GRID, train_ratio: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The original's train/test image indices: ``np.random.seed(42)``, shuffle all, cut at ``train_ratio``."""
    indices = np.arange(int(np.prod(grid)))
    np.random.RandomState(42).shuffle(indices)
    cut = int(train_ratio * len(indices))
    return indices[:cut], indices[cut:]


def caption_setting(
    factors: np.ndarray, kind: str, index: int, rng: np.random.Generator, change_prob: float = 0.9
) -> tuple[list[str], pd.DataFrame]:
    """Captions and caption factor values of one setting for (N, 5+) factor rows (render_multimodal_mpi3d.py).

    Selection ``i`` names the factors of ``SETTINGS["selection"][i]`` with a level-``i`` template; perturbation ``i``
    names all five with a level-4 template after redrawing each factor of ``SETTINGS["perturbation"][i]`` uniformly
    from its support with probability ``change_prob`` (the redraw may equal the truth)."""
    names = list(WORDS)
    selected = SETTINGS["selection"][index] if kind == "selection" else tuple(names)
    perturbed = SETTINGS["perturbation"][index] if kind == "perturbation" else ()
    values = {f: factors[:, names.index(f)].astype(np.int64).copy() for f in selected}
    for f in perturbed:
        redraw = rng.random(len(factors)) <= change_prob
        values[f][redraw] = rng.integers(len(WORDS[f]), size=int(redraw.sum()))
    templates = TEMPLATES[index if kind == "selection" else 4]
    choice = rng.integers(len(templates), size=len(factors))
    words = {SLOTS[f]: np.array(WORDS[f], dtype=object)[values[f]] for f in selected}
    captions = [templates[t].format(**{slot: w[i] for slot, w in words.items()}) for i, t in enumerate(choice)]
    return captions, pd.DataFrame({COLUMNS[f]: values[f] for f in selected})


def render_text(
    root: Path, seed: int = 0, change_prob: float = 0.9, grid: Sequence[int] = GRID, train_ratio: float = 0.9
) -> list[Path]:
    """Write every setting's caption and caption-factor files for ``train/`` and ``test/`` under ``root``; the
    factor tables (``image_semantics.csv``) are read when present, else written from :func:`original_split`.
    Deterministic in ``seed`` (each file has its own stream). Returns the written paths."""
    root, written = Path(root), []
    tables = {}
    for split in ("train", "test"):
        path = root / split / "image_semantics.csv"
        if path.is_file():
            tables[split] = read_table(path, list(COLUMNS.values()))
    if len(tables) < 2:
        for split, indices in zip(("train", "test"), original_split(grid, train_ratio)):
            tables[split] = pd.DataFrame(
                np.stack(np.unravel_index(indices, grid), axis=1), columns=list(COLUMNS.values())
            )
            with atomic_write(root / split / "image_semantics.csv") as fh:
                tables[split].to_csv(fh, index=False)
            written.append(root / split / "image_semantics.csv")
    for s, split in enumerate(("train", "test")):
        factors = tables[split][list(COLUMNS.values())].to_numpy()
        for k, kind in enumerate(SETTINGS):
            for index in range(len(SETTINGS[kind])):
                rng = np.random.default_rng(np.random.SeedSequence([seed, s, k, index]))
                captions, values = caption_setting(factors, kind, index, rng, change_prob)
                written += write_caption_files(
                    root / split / f"text_semantics_{kind}_{index}.csv",
                    values,
                    root / split / f"text_{kind}_{index}.txt",
                    captions,
                )
    return written


def main(argv=None, prog: str | None = None) -> int:
    def factor_sizes(parser):
        parser.add_argument("--factor-sizes", type=int, nargs=7, default=list(GRID), metavar="N")

    return render_text_main(
        argv,
        "mpi3d",
        "data/mpi3d_complex",
        0.9,
        lambda args: render_text(args.root, args.seed, args.change_prob, args.factor_sizes),
        factor_sizes,
        prog=prog,
    )


if __name__ == "__main__":
    raise SystemExit(main())
