"""``dataset=shapes_text``: an offline rendered image–text dataset with known factors (the image–text default).

Each sample is a 32×32 RGB image of one object and a caption about it. Factors:

=============  ==========================================  =====================  ===============
factor         values                                      in the caption         kind
=============  ==========================================  =====================  ===============
color          red, green, blue, yellow                    if selected            semantic
shape          circle, square, triangle, cross             if selected            semantic
size           small, large                                if selected            semantic
background     dark, gray, light                           if selected            semantic
x, y           object centre in [0.3, 0.7] of the image    never                  image-specific
=============  ==========================================  =====================  ===============

Captions follow "Negate or Embrace" (arXiv:2504.10143; the original's
rendering_data/MPI3D/render_multimodal_mpi3d.py): one of three templates drawn uniformly, slots
filled only for the *selected* factors (``bias.theta``); *perturbed* factors (``bias.beta``) are redrawn uniformly
from their support with probability ``bias.change_prob`` (0.9, as render_multimodal_mpi3d.py) before captioning, so
the caption may name a wrong value. Tokens are one-hot over a vocabulary built from the training captions
(``pad, eos, unk`` first, then words by first occurrence), each caption followed by ``eos`` and right-padded.
Everything is drawn from ``seed`` (the original's captions were not seeded); arrays are cached under
``data/shapes_text/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mmrep.bias.misalignment import MisalignmentBias
from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import check_positive_ints
from mmrep.core.files import atomic_write
from mmrep.data.base import check_split_fractions
from mmrep.data.captions import build_vocabulary, token_ids, tokenize_all
from mmrep.data.factor_data import FactorDataModule
from mmrep.data.integrity import nonfinite_problem

log = logging.getLogger(__name__)

WORDS = {  # factor: words, in value order
    "color": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle", "cross"),
    "size": ("small", "large"),
    "background": ("dark", "gray", "light"),
}
FACTORS = (*WORDS, "x", "y")
RGB = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 0.95], [0.95, 0.9, 0.1]], np.float32)
BACKGROUND = np.array([0.1, 0.45, 0.8], np.float32)
RADIUS = (0.14, 0.24)  # small, large (fractions of the image side)
# one slot per factor; a template orders the selected slots and adds its own words
PHRASES = {"color": "{} colored", "shape": "{}", "size": "{} size", "background": "on a {} background"}
TEMPLATES = (
    ("a", ("size", "color", "shape", "background")),
    ("there is an object", ("shape", "color", "size", "background")),
    ("the picture shows", ("background", "size", "shape", "color")),
)
FORMAT_VERSION = 1


def render(factors: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, 6) factor rows [color, shape, size, background, x, y] → (N, 3, size, size) float32 images in [0, 1]."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    dx = xx[None] - factors[:, 4, None, None].astype(np.float32)
    dy = yy[None] - factors[:, 5, None, None].astype(np.float32)
    r = np.asarray(RADIUS, np.float32)[factors[:, 2].astype(int)][:, None, None]
    masks = np.stack(
        [
            dx**2 + dy**2 <= r**2,  # circle
            (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r),  # square
            (dy <= 0.8 * r) & (dy >= -r + 2 * np.abs(dx)),  # triangle (apex up)
            ((np.abs(dx) <= 0.3 * r) | (np.abs(dy) <= 0.3 * r)) & (np.abs(dx) <= r) & (np.abs(dy) <= r),  # cross
        ]
    )
    mask = masks[factors[:, 1].astype(int), np.arange(len(factors))]  # each sample's own shape
    background = BACKGROUND[factors[:, 3].astype(int)][:, None, None, None]
    color = RGB[factors[:, 0].astype(int)][:, :, None, None]
    images = np.where(mask[:, None], color, background)
    return images.astype(np.float32)


def caption(values: dict[str, int], template: int) -> str:
    """A caption naming ``values`` (factor → value index, selected factors only) with template ``template``."""
    opening, order = TEMPLATES[template]
    words = [PHRASES[f].format(WORDS[f][values[f]]) for f in order if f in values]
    return " ".join([opening, *words]) + " ."


CACHE_SHAPES = {"factors": (6,), "text_factors": (4,), "captions": (), "images": (3, 32, 32)}  # per sample


def read_cache(path: Path, n: int) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)`` from a cache file holding :func:`generate`'s arrays for ``n`` samples, finite; else
    ``(None, why not)`` (the caller regenerates it)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except Exception as err:  # noqa: BLE001 - damaged bytes raise many types (BadZipFile, EOFError, zlib.error, ...)
        return None, f"unreadable ({type(err).__name__})"
    for key, shape in CACHE_SHAPES.items():
        if key not in arrays or arrays[key].shape != (n, *shape):
            found = arrays[key].shape if key in arrays else "missing"
            return None, f"{key} is {found}, expected {(n, *shape)}"
    problem = nonfinite_problem(arrays["factors"]) or nonfinite_problem(arrays["images"])
    return (None, problem) if problem else (arrays, None)


def generate(n: int, selected, perturbed, change_prob: float, seed: int) -> dict[str, np.ndarray]:
    """``n`` samples: ``factors`` (n, 6) (true values; x, y float), ``text_factors`` (n, 4) (the caption's values,
    -1 where omitted), ``captions`` (n,) str, ``images`` (n, 3, 32, 32) float32."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    semantic = np.stack([rng.integers(len(w), size=n) for w in WORDS.values()], axis=1)
    position = rng.uniform(0.3, 0.7, size=(n, 2))
    factors = np.concatenate([semantic, position], axis=1)
    text = semantic.copy()
    for j in perturbed:  # redraw with probability change_prob from the full support (may equal the truth)
        redraw = rng.random(n) < change_prob
        text[redraw, j] = rng.integers(len(WORDS[FACTORS[j]]), size=int(redraw.sum()))
    names = list(WORDS)
    templates = rng.integers(len(TEMPLATES), size=n)
    captions = np.array([caption({names[j]: int(text[i, j]) for j in selected}, int(templates[i])) for i in range(n)])
    text[:, [j for j in range(len(names)) if j not in selected]] = -1
    return {"factors": factors, "text_factors": text, "captions": captions, "images": render(factors)}


class ShapesTextDataModule(FactorDataModule):
    """Rendered shapes with biased captions: modalities ``image`` (3, 32, 32) and ``text`` (L, V) one-hot tokens.

    Args:
        bias: which factors the captions mention (``theta``) and perturb (``beta``), by name or index into
            ``color, shape, size, background``; ``change_prob`` is the redraw probability (0.9, as
            render_multimodal_mpi3d.py).
        num_samples, splits: data size and train/val/test fractions (val fits the probes, test scores them).
        batch_size, seed, data_dir, cache: loaders, generation seed, cache folder.
    """

    SEMANTIC = tuple(WORDS)
    IMAGE_ONLY = ("x", "y")
    CONTINUOUS = frozenset(IMAGE_ONLY)
    SETTINGS = {  # the shape of the paper's MPI3D settings (render_multimodal_mpi3d.py) on these factors
        "selection": [
            ("color",),
            ("color", "shape"),
            ("color", "shape", "size"),
            ("color", "shape", "size", "background"),
        ],
        "perturbation": [(), ("background",), ("size", "background"), ("shape", "size", "background")],
    }

    def __init__(
        self,
        bias: MisalignmentBias | None = None,
        num_samples: int = 20_000,
        splits=(0.8, 0.1, 0.1),
        batch_size: int = 256,
        seed: int = 0,
        data_dir: str = "data/shapes_text",
        cache: bool = True,
        encoding_size: int | None = None,
    ) -> None:
        check_positive_ints("dataset", num_samples=num_samples, batch_size=batch_size)
        self.fractions = check_split_fractions(splits)
        super().__init__(bias, batch_size)
        self.num_samples, self.seed, self.data_dir, self.cache = int(num_samples), int(seed), Path(data_dir), cache
        self._cached: dict[str, np.ndarray] | None = None
        self.params = dict(
            num_samples=self.num_samples,
            seed=self.seed,
            selected=list(self.bias.selected),
            perturbed=list(self.bias.perturbed_selected),
            change_prob=self.bias.change_prob,
            format=FORMAT_VERSION,
        )
        arrays = self._arrays()
        n_train, n_val = (int(f * self.num_samples) for f in self.fractions[:2])
        self.bounds = {
            "train": (0, n_train),
            "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, self.num_samples),
        }
        self.tokens = tokenize_all(arrays["captions"])
        self.vocab = build_vocabulary(self.tokens[:n_train])
        self.vocab_size = len(self.vocab)
        self.length = max(map(len, self.tokens)) + 1  # + eos
        invariant = len(self.bias.invariant)
        self.spec = DataSpec(
            modalities={
                "image": ModalitySpec((3, 32, 32), "image"),
                "text": ModalitySpec((self.length, len(self.vocab)), "sequence"),
            },
            task="none",
            encoding_size=int(encoding_size) if encoding_size else max(3, invariant),  # paper: max(3, |I_θ \\ I_β|)
            latent_names=FACTORS,
        )

    # ---- generation and cache --------------------------------------------------------------------------------
    def _cache_path(self) -> Path:
        digest = hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        return self.data_dir / f"shapes_text_{digest}.npz"

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._cached is not None:
            return self._cached
        path = self._cache_path()
        if self.cache and path.is_file():
            arrays, problem = read_cache(path, self.num_samples)
            if arrays is not None:
                self._cached = arrays
                return arrays
            log.warning("shapes_text cache %s: %s; regenerating it", path, problem)
        arrays = generate(
            self.num_samples, self.bias.selected, self.bias.perturbed_selected, self.bias.change_prob, self.seed
        )
        if self.cache:
            with atomic_write(path, "wb") as fh:
                np.savez(fh, **arrays)
        self._cached = arrays
        return arrays

    def load_splits(self) -> dict[str, dict]:
        arrays = self._arrays()
        out = {}
        for split, (lo, hi) in self.bounds.items():
            factors = arrays["factors"][lo:hi]
            latents = {
                name: torch.from_numpy(factors[:, j : j + 1].astype(np.float32)) for j, name in enumerate(FACTORS)
            }
            out[split] = {
                "image": torch.from_numpy(arrays["images"][lo:hi]),
                "text": token_ids(self.tokens[lo:hi], self.vocab, self.length),
                "latents": latents,
            }
        return out
