"""``dataset=causal3dident``: Causal3DIdent renders with templated captions (arXiv:2504.10143;
crossmodal_mislaignment main_causal3dident.py).

On-disk layout under ``dataset.data_dir`` (the original's, unchanged)::

    latents_image.csv                          object_shape, object_xpos, object_ypos, object_zpos, object_alpharot,
                                               object_betarot, object_gammarot, object_color, spotlight_pos,
                                               spotlight_color, background_color (one row per image)
    latents_text_{selections|perturbations}_{i}.csv    the captions' factor values, with text_phrasing (i = 0..6)
    text/{selections|perturbations}_{i}/text_raw.txt   one caption per line, no newline after the last (either is read)
    images/{index:0Wd}.png                     W = ceil(log10(N)), e.g. 00000.png … 99999.png for N = 100,000
    vocab_{selections|perturbations}_{i}.json  the original's vocabulary file: reused when it holds every caption word,
                                               else (re)built from the captions of all rows, in order of first
                                               occurrence, and written once the data has loaded

Captions are tokenised as the original's NLTK ``word_tokenize`` (mmrep.data.captions); the vocabulary and the padded
length come from all rows, as the original's dataset object holds them all before main_causal3dident.py splits it by
index: train = the first ``int(0.8 n)``, val (probe fit) = the next ``int(0.1 n)``, test = the rest
(main_causal3dident.py). Images are read from their PNG files one batch at a time (``ToTensor`` then
main_causal3dident.py's mean/std); captions are kept as token ids and one-hot encoded per batch.

``render-text`` writes the original generator's captions (its templates, phrasings and spotlight bins; checked
against its output by tests/test_golden_causal3dident.py). Its random draws are seeded numpy ``Generator`` streams,
not the original's global ``np.random`` sequence, so the files equal the original's only given the same caption
tables. The original's perturbation setting 0 wrote the *object* hue into the background-colour caption (the original's
generate_latents.py), so with the released files background_color is misaligned in that setting although its role here
says invariant; render-text uses the background hue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mmrep.bias.misalignment import MisalignmentBias
from mmrep.core.contract import Batch, DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.data.captions import read_caption_lines, render_text_main, token_ids, write_caption_files
from mmrep.data.factor_data import FactorDataModule, read_factor_table

SOURCE = (
    "the Causal3DIdent image–text release of 'Negate or Embrace' (github.com/YichaoCai1/crossmodal_mislaignment, "
    "rendering_data/Causal3DIdent)"
)
SEMANTIC = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "spotlight_pos",
    "object_color",
    "spotlight_color",
    "background_color",
)
ROTATIONS = ("object_alpharot", "object_betarot", "object_gammarot")
SETTINGS = {  # generate_latents.py: cumulative selections; perturbations always caption everything
    "selection": [SEMANTIC[: i + 1] for i in range(len(SEMANTIC))],
    "perturbation": [SEMANTIC[len(SEMANTIC) - i :] for i in range(len(SEMANTIC))],  # ∅, {background}, … {xpos, …}
}
ENCODING_SIZES = {"selection": (3, 3, 4, 5, 5, 6, 7), "perturbation": (7, 6, 5, 5, 4, 3, 3)}  # main_causal3dident.py
MEAN = (0.4327, 0.2689, 0.2839)  # main_causal3dident.py image normalisation
STD = (0.1201, 0.1457, 0.1082)


def split_bounds(count: int) -> tuple[int, int]:
    """``(train_end, val_end)`` of ``count`` samples split by index as main_causal3dident.py does: train = the first
    ``int(0.8 n)``, val = the next ``int(0.1 n)``, test = the rest (main_causal3dident.py; not ``int(0.9 n)``, which
    differs for e.g. n = 19)."""
    train = int(count * 0.8)
    return train, train + int(count * 0.1)


def image_path(root: Path, index: int, count: int) -> Path:
    """``images/{index:0Wd}.png`` with ``W = ceil(log10(count))`` (the original's renders)."""
    return root / "images" / f"{index:0{max(1, math.ceil(math.log10(count)))}d}.png"


class Causal3DIdentDataModule(FactorDataModule):
    """Causal3DIdent with captions of one paper setting: ``image`` (3, H, W) and ``text`` (L, V) one-hot tokens.

    Args:
        bias: the paper setting (``bias.setting=selection_<i>`` / ``perturbation_<i>``, i = 0..6; the original's
            plural ``selections_<i>`` works too), or θ/β naming the semantic factors so that they equal one.
        data_dir: the folder of the layout above. batch_size, num_workers: loaders (main_causal3dident.py: 256, 4).
        encoding_size: ``None`` = the paper's size for the setting (main_causal3dident.py).
    """

    SEMANTIC = SEMANTIC
    IMAGE_ONLY = ROTATIONS
    TEXT_ONLY = ("text_phrasing",)
    CONTINUOUS = frozenset(("spotlight_pos", "object_color", "spotlight_color", "background_color", *ROTATIONS))
    SETTINGS = SETTINGS

    def __init__(
        self,
        bias: MisalignmentBias | None = None,
        data_dir: str = "data/causal3dident",
        batch_size: int = 256,
        num_workers: int = 0,
        encoding_size: int | None = None,
    ) -> None:
        check_positive_ints("dataset", batch_size=batch_size)
        super().__init__(bias, batch_size, num_workers)
        kind, index = self.paper_setting("causal3dident")
        self.root, name = Path(data_dir), f"{kind}s_{index}"  # the files use the plural
        self.latents = read_factor_table(self.root / "latents_image.csv", [*SEMANTIC, *ROTATIONS], SOURCE)
        self.count = len(self.latents)
        text_latents = read_factor_table(self.root / f"latents_text_{name}.csv", ["text_phrasing"], SOURCE)
        captions = read_caption_lines(self.root / "text" / name / "text_raw.txt", "dataset.data_dir", SOURCE)
        for path, rows in (
            (self.root / f"latents_text_{name}.csv", len(text_latents)),
            (self.root / "text" / name / "text_raw.txt", len(captions)),
        ):
            if rows != self.count:
                raise ConfigError(
                    f"dataset.data_dir: {path} has {rows} rows but latents_image.csv has {self.count}; "
                    f"both come from one render, from {SOURCE}"
                )
        self.latents["text_phrasing"] = text_latents["text_phrasing"].to_numpy()
        self.bounds = split_bounds(self.count)
        if not 0 < self.bounds[0] < self.bounds[1] < self.count:
            raise ConfigError(
                f"dataset.data_dir: {self.root} holds {self.count} samples; the 80/10/10 split needs at least 10"
            )
        missing = next((i for i in range(self.count) if not image_path(self.root, i, self.count).is_file()), None)
        if missing is not None:
            raise ConfigError(
                f"dataset.data_dir: no such file {image_path(self.root, missing, self.count)}; expected "
                f"one RGB PNG per row of latents_image.csv, from {SOURCE}"
            )
        self.image_size = self._read_images([0]).shape[1:3]
        # the original (main_causal3dident.py) builds its vocabulary and length from the dataset object over all rows,
        # then splits
        self.use_vocabulary(self.root / f"vocab_{name}.json", captions)
        self.captions = captions
        self.length = max(map(len, captions)) + 1  # + eos
        self.spec = DataSpec(
            modalities={
                "image": ModalitySpec((3, *self.image_size), "image"),
                "text": ModalitySpec((self.length, self.vocab_size), "sequence"),
            },
            task="none",
            encoding_size=int(encoding_size) if encoding_size else ENCODING_SIZES[kind][index],
            latent_names=(*SEMANTIC, *ROTATIONS, "text_phrasing"),
        )
        self._mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(STD).view(1, 3, 1, 1)

    def _read_images(self, indices: Sequence[int], expected: tuple[int, ...] | None = None) -> np.ndarray:
        """(B, H, W, 3) uint8 from the PNG files; a missing or unreadable file, or one whose shape differs from
        ``expected`` (default: the first one read), is a one-line error naming it."""
        out = []
        for i in indices:
            path = image_path(self.root, int(i), self.count)
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except OSError as err:
                raise ConfigError(
                    f"dataset.data_dir: {path} is not a readable image ({type(err).__name__}); from {SOURCE}"
                ) from None
            expected = expected or pixels.shape
            if pixels.shape != expected:
                raise ConfigError(
                    f"dataset.data_dir: {path} is {pixels.shape[1]}×{pixels.shape[0]}, other images are "
                    f"{expected[1]}×{expected[0]}"
                )
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
        """Sample indices → normalised float images (B, 3, H, W); token ids → one-hot (main_causal3dident.py)."""
        images = torch.from_numpy(self._read_images(batch["image"].tolist(), (*self.image_size, 3)))
        x = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return {**super().decode_batch(batch), "image": (x - self._mean) / self._std}


# ---- render-text --------------------------------------------------------------------------------------------------
SHAPES = ("teapot", "hare", "dragon", "cow", "armadillo", "horse", "head")  # generate_text.py, by object_shape
XPOS, YPOS = ("left", "center", "right"), ("top", "mid", "bottom")
SPOTLIGHT_BINS = ("northwest", "northeast", "center", "southwest", "southeast")  # spotlight_pos in bins of 0.2
PALETTES = {"object_color": "TABLEAU_COLORS", "spotlight_color": "CSS4_COLORS", "background_color": "XKCD_COLORS"}
TEXT_COLUMNS = {  # the caption tables' columns per factor (the original's, "splotlight" sic)
    "object_shape": ("object_shape",),
    "object_xpos": ("object_xpos",),
    "object_ypos": ("object_ypos",),
    "spotlight_pos": ("spotlight_pos",),
    "object_color": ("object_color_name", "object_color_index"),
    "spotlight_color": ("splotlight_color_name", "splotlight_color_index"),
    "background_color": ("background_color_name", "background_color_index"),
}
# The original generator's wording (rendering_data/Causal3DIdent/generate_text.py), restated by parts: a
# caption of level L (0..6; perturbations use 6) and phrasing j (text_phrasing, 0..4) is OBJECT + SPOTLIGHT +
# BACKGROUND + ".", each part in the wording of the highest level key <= L (absent below its lowest key). {where} is
# the x position at level 1 and "{y}-{x}" from level 2; colours are palette names in double quotes.
OBJECT = {
    0: (
        "A {shape} is visible",
        "A {shape} is in the image",
        "The image shows a {shape}",
        "The picture is a {shape}",
        "There is an object in the form of a {shape}",
    ),
    1: (
        "A {shape} is visible, positioned at the {where} of the image",
        "A {shape} is at the {where} of the image",
        "The {where} of the image shows a {shape}",
        "At the {where} of the picture is a {shape}",
        "At the {where} of the image, there is an object in the form of a {shape}",
    ),
    4: (
        'A {shape} of "{color}" color is visible, positioned at the {where} of the image',
        'A "{color}" {shape} is at the {where} of the image',
        'The {where} of the image shows a "{color}" colored {shape}',
        'At the {where} of the picture is a {shape} in "{color}" color',
        'At the {where} of the image, there is a "{color}" object in the form of a {shape}',
    ),
}
SPOTLIGHT = {
    3: (
        ", with a spotlight shining from the {spos}",
        ", illuminated by a light from the {spos}",
        ", highlighted by a light source positioned at the {spos}",
        ", standing out under a light coming from the {spos}",
        ", with illumination from the {spos}",
    ),
    5: (
        ', under a "{light}" spotlight shining from the {spos}',
        ', illuminated by a "{light}" spotlight from the {spos}',
        ', highlighted by a "{light}" spotlight positioned at the {spos}',
        ', standing out under a "{light}" spotlight coming from the {spos}',
        ', with illumination from a "{light}" spotlight at the {spos}',
    ),
    6: (
        ', under a "{light}" spotlight shining from the {spos}',
        ', illuminated by a "{light}" spotlight from the {spos}',
        ', highlighted by a "{light}" spotlight positioned at the {spos}',
        ', bathed in a "{light}" spotlight coming from the {spos}',
        ', standing out under a "{light}" spotlight from the {spos}',
    ),
}
BACKGROUND = {
    6: (
        ', with a "{bg}" background',
        ', against a "{bg}" background',
        ', on a "{bg}" backdrop',
        ', with a "{bg}" background',
        ', against a "{bg}" background',
    ),
}
PHRASINGS = 5  # text_phrasing ∈ {0..4} (generate_latents.py; the paper says 6)


def palette(name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A matplotlib palette as (sorted names, candidate RGBs, each candidate's name index). Candidates are the distinct
    RGB values in the palette's order, named by the *last* name with that value, as the original's RGB → name map."""
    import matplotlib.colors as mcolors

    colors = getattr(mcolors, name)
    names = sorted(colors)
    by_rgb: dict[tuple[float, ...], str] = {}
    for color_name, hex_value in colors.items():
        by_rgb[mcolors.to_rgb(hex_value)] = color_name
    rgbs = np.array(list(by_rgb), np.float64)
    return names, rgbs, np.array([names.index(n) for n in by_rgb.values()])


def color_indices(hues: np.ndarray, palette_name: str) -> np.ndarray:
    """Each hue's colour index: ``hsv(h, 1, 1)`` snapped to the nearest palette RGB (Euclidean; first on ties), its
    position in the palette's sorted names (generate_latents.py)."""
    import matplotlib.colors as mcolors

    _, rgbs, index = palette(palette_name)
    rgb = mcolors.hsv_to_rgb(np.stack([hues, np.ones_like(hues), np.ones_like(hues)], axis=1))
    out = np.empty(len(hues), np.int64)
    for lo in range(0, len(hues), 4096):
        d = ((rgb[lo : lo + 4096, None, :] - rgbs[None]) ** 2).sum(-1)
        out[lo : lo + 4096] = index[d.argmin(1)]
    return out


def caption_values(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Caption factor values (shape, positions, spotlight_pos, the three hues) → the caption table's columns."""
    table = {f: values[f] for f in ("object_shape", "object_xpos", "object_ypos", "spotlight_pos")}
    for factor, palette_name in PALETTES.items():
        names = palette(palette_name)[0]
        index = color_indices(np.asarray(values[factor], np.float64), palette_name)
        table[TEXT_COLUMNS[factor][0]], table[TEXT_COLUMNS[factor][1]] = np.array(names)[index], index
    return pd.DataFrame(table)


def wording(part: dict[int, tuple[str, ...]], level: int, phrasing: int) -> str:
    """The phrasing-``phrasing`` template of caption ``part`` (OBJECT, SPOTLIGHT, BACKGROUND) at ``level``; "" below
    the part's first level."""
    keys = [k for k in part if k <= level]
    return part[max(keys)][phrasing] if keys else ""


def spotlight_word(position: float) -> str:
    """spotlight_pos → its word: [0, .2) northwest … [.8, 1] southeast, compared as the original does (so 0.6 is
    southwest although 0.6 / 0.2 < 3); outside [0, 1] (or NaN) the original writes "unknown position"
    (generate_text.py)."""
    if not 0.0 <= position <= 1.0:
        return "unknown position"
    for word, upper in zip(SPOTLIGHT_BINS, (0.2, 0.4, 0.6, 0.8)):
        if position < upper:
            return word
    return SPOTLIGHT_BINS[-1]


def caption(row, level: int, phrasing: int) -> str:
    """One caption of selection level ``level`` (0..6; perturbations use 6) from a caption-table row (a mapping with
    the original's columns; the ones the level does not mention may be absent)."""
    where = XPOS[int(row["object_xpos"])] if level >= 1 else None
    if level >= 2:
        where = f"{YPOS[int(row['object_ypos'])]}-{where}"
    slots = {
        "shape": SHAPES[int(row["object_shape"])],
        "where": where,
        "spos": spotlight_word(float(row["spotlight_pos"])) if level >= 3 else None,
        "color": row.get("object_color_name"),
        "light": row.get("splotlight_color_name"),
        "bg": row.get("background_color_name"),
    }
    return "".join(wording(part, level, phrasing) for part in (OBJECT, SPOTLIGHT, BACKGROUND)).format(**slots) + "."


def caption_table(values: dict[str, np.ndarray], phrasing: np.ndarray, factors: Sequence[str]) -> pd.DataFrame:
    """A setting's caption table, (N, columns) in the original's column order: the caption columns of ``factors``
    (colours as name and index, from the hues in ``values``) then ``text_phrasing``."""
    table = caption_values(values)
    table["text_phrasing"] = phrasing
    return table[[c for f in factors for c in TEXT_COLUMNS[f]] + ["text_phrasing"]]


def captions_of(table: pd.DataFrame, level: int) -> list[str]:
    """Each row's caption at selection level ``level`` (perturbations: 6) with the row's own text_phrasing."""
    return [caption(row, level, int(row["text_phrasing"])) for row in table.to_dict("records")]


def render_text(root: Path, seed: int = 0, change_prob: float = 1.0) -> list[Path]:
    """Write ``latents_text_{selections,perturbations}_{i}.csv`` and ``text/<setting>/text_raw.txt`` for i = 0..6 from
    ``latents_image.csv`` under ``root`` (generate_latents.py): selection ``i`` captions the first i + 1 factors with
    one phrasing per sample shared by all selections; perturbation ``i`` captions everything after redrawing each factor
    of its set (probability ``change_prob``, generate_latents.py: 1) from U[0, 1] (hues, spotlight_pos) or {0, 1, 2}
    (positions), with a fresh phrasing. Unlike the original, setting 0's background caption uses the background hue."""
    root, written = Path(root), []
    latents = read_factor_table(root / "latents_image.csv", SEMANTIC, SOURCE)
    n = len(latents)
    truth = {f: latents[f].to_numpy() for f in SEMANTIC}
    phrasing = np.random.default_rng(np.random.SeedSequence([seed, 0])).integers(PHRASINGS, size=n)
    for k, kind in enumerate(SETTINGS):
        for index, factors in enumerate(SETTINGS[kind]):
            rng = np.random.default_rng(np.random.SeedSequence([seed, k + 1, index]))
            values = {f: v.copy() for f, v in truth.items()}
            if kind == "perturbation":
                for f in factors:
                    redraw = rng.random(n) < change_prob
                    fresh = rng.integers(3, size=n) if f in ("object_xpos", "object_ypos") else rng.random(n)
                    values[f][redraw] = fresh[redraw]
            table = caption_table(
                values,
                phrasing if kind == "selection" else rng.integers(PHRASINGS, size=n),
                factors if kind == "selection" else SEMANTIC,
            )
            lines = captions_of(table, index if kind == "selection" else len(SEMANTIC) - 1)
            name = f"{kind}s_{index}"
            written += write_caption_files(
                root / f"latents_text_{name}.csv",
                table,
                root / "text" / name / "text_raw.txt",
                lines,
                trailing_newline=False,
            )  # the original's layout (generate_text.py)
    return written


def main(argv=None, prog: str | None = None) -> int:
    return render_text_main(
        argv,
        "causal3dident",
        "data/causal3dident",
        1.0,
        lambda args: render_text(args.root, args.seed, args.change_prob),
        prog=prog,
    )


if __name__ == "__main__":
    raise SystemExit(main())
