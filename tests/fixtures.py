"""Small data sets written in the exact on-disk formats of the external datasets (as multimodal_alignment's
datasets/*/get_data.py, crossmodal_mislaignment's main_mpi3dreal.py / main_causal3dident.py and platonic-rep-unique's
perturbed/data.json read them).

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


def affect_split(
    rng, n: int, dv: int, da: int, labels: str, steps: int = 50, zero_text: int = 0, edge_cases: bool = False
) -> dict:
    """One MultiBench split: front-padded (N, T, d) float32 arrays, ``labels`` (N, 1, 1), ``id`` (N,) strings.

    Each sample's label shifts its features, so a model can learn something. ``zero_text`` samples get an
    all-zero text (the loader drops them); a few audio entries are -inf (the loader sets them to 0).
    ``edge_cases`` (N >= 8) adds the cases of :func:`add_affect_edge_cases` and lengths from 1 (T <= 50) or
    T - 49 (T > 50: text must start inside the first 50 steps, where the original loader looks for it)."""
    y = {
        "score": rng.uniform(-3, 3, n),
        "signed": rng.choice([-1.0, 1.0], n),
        "binary": rng.integers(0, 2, n).astype(float),
    }[labels]
    split = {k: np.zeros((n, steps, d), np.float32) for k, d in (("vision", dv), ("audio", da), ("text", 300))}
    low = max(1, steps - 49) if edge_cases else 5
    lengths = rng.integers(low, steps + 1, n)
    if edge_cases:
        lengths[:4] = (steps, low, steps - 20, steps - 25)  # unpadded, shortest, two with late text (below)
    for i, length in enumerate(lengths):
        for _k, x in split.items():
            x[i, steps - length :] = rng.normal(0.3 * y[i], 1.0, (length, x.shape[2]))
    split["audio"][0, -1, 0] = -np.inf
    for i in range(zero_text):
        split["text"][n - 1 - i] = 0.0
    if edge_cases:
        add_affect_edge_cases(split, lengths, y, labels, n - 1 - zero_text)
    split["labels"] = y.reshape(n, 1, 1).astype(np.float32)
    split["id"] = np.array([f"clip{i}" for i in range(n)])
    return split


def add_affect_edge_cases(split: dict, lengths: np.ndarray, y: np.ndarray, labels: str, signed_zero: int) -> None:
    """In place: text starting after vision/audio (an out-of-vocabulary first word: zero GloVe rows), a zero text
    row inside a sample, a first text row with a single non-zero entry, -inf audio in real steps, in the padding
    and after step 50, a text whose signed sum is 0 but not all zero (sample ``signed_zero``: the original drops
    it), and labels on the rules' edges (a 0 score or label; humor 0.7, whose raw integer is 0 but label > 0 is 1)."""
    steps = split["text"].shape[1]
    first = steps - lengths
    split["text"][2, first[2]] = 0.0  # sample 2: text starts one step after vision and audio
    split["text"][3, first[3] : first[3] + 2] = 0.0  # sample 3: two steps later, and a zero row inside
    split["text"][3, first[3] + 5] = 0.0
    split["text"][4, first[4], 1:] = 0.0  # sample 4: one non-zero entry in its first text row
    split["audio"][1, first[1], 1] = -np.inf
    split["audio"][2, 0, 2] = -np.inf  # in sample 2's front padding
    split["audio"][3, -1, 3] = -np.inf  # the last step (after step 50 when T > 50)
    split["text"][signed_zero] = 0.0
    split["text"][signed_zero, -1, :2] = (0.5, -0.5)
    y[1] = {"score": 0.0, "signed": 0.0, "binary": 1.0}[labels]
    y[5] = {"score": y[5], "signed": y[5], "binary": 0.7}[labels]


def write_affect(
    data_dir: Path, name: str, sizes=(40, 16, 16), seed: int = 0, steps=(50, 50, 50), edge_cases: bool = False
) -> Path:
    """``<data_dir>/affect/<folder>/<file>.pkl`` as MultiBench ships it; returns the path. ``steps``: T of the
    train, valid and test splits; ``edge_cases``: see :func:`affect_split`."""
    folder, file, dv, da, labels = AFFECT[name]
    rng = np.random.default_rng(seed)
    data = {
        split: affect_split(rng, n, dv, da, labels, steps=t, zero_text=1, edge_cases=edge_cases)
        for split, n, t in zip(("train", "valid", "test"), sizes, steps)
    }
    path = Path(data_dir) / "affect" / folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def write_avmnist(
    data_dir: Path,
    n_train: int = 60,
    n_test: int = 20,
    n_mfcc: int = 20,
    n_frames: int = 36,
    seed: int = 0,
    image_dtype=np.float64,
    audio_dtype=np.float64,
) -> Path:
    """``<data_dir>/avmnist/avmnist_mfcc/``: image (N, 784) uint8-valued float, audio (N, n_mfcc, n_frames), labels.
    The original loader hard-codes 60,000 train and 10,000 test rows; at that size write ``image_dtype=np.uint8``,
    ``audio_dtype=np.float32`` (the loaders cast to float32 anyway) to keep the files small."""
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "avmnist" / "avmnist_mfcc"
    for sub in ("image", "audio"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    scale = np.arange(1, n_mfcc + 1, dtype=np.float32)[None, :, None]
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        image = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        image[:, :28] = labels[:, None] * 25  # the first pixel row encodes the digit
        audio = rng.standard_normal((n, n_mfcc, n_frames), dtype=np.float32) * scale + labels[:, None, None]
        np.save(root / "image" / f"{split}_data.npy", image.astype(image_dtype, copy=False))
        np.save(root / "audio" / f"{split}_data.npy", audio.astype(audio_dtype, copy=False))
        np.save(root / f"{split}_labels.npy", labels)
    return root


def write_all(data_dir: Path) -> None:
    for name in AFFECT:
        write_affect(data_dir, name)
    write_avmnist(data_dir)
    write_mpi3d(data_dir)
    write_causal3dident(data_dir)
    write_caption_uniqueness(data_dir)
    write_tiny_lm(Path(data_dir) / "models" / "tiny_lm")
    write_tiny_vit(Path(data_dir) / "models" / "tiny_vit")


MPI3D_GRID = (4, 4, 2, 3, 3, 2, 2)  # the real grid with 2 positions per axis: 1,152 images


def write_mpi3d(data_dir: Path, grid=MPI3D_GRID, compressed: bool = False, seed: int = 0) -> Path:
    """``<data_dir>/mpi3d_complex/``: the npz (key ``images``, (N, 64, 64, 3) uint8 in grid order) and every caption
    file of render-text. Each image's mean colour encodes its factors, so a short run can learn something."""
    from mmrep.data.mpi3d import IMAGES, render_text

    root = Path(data_dir) / "mpi3d_complex"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    factors = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1)
    base = 40 * factors[:, [0, 1, 4]] + 10 * factors[:, [2, 3, 5]] + 5 * factors[:, [6, 6, 6]]
    images = np.clip(base[:, None, None, :] + rng.integers(0, 20, (len(factors), 64, 64, 3)), 0, 255).astype(np.uint8)
    (np.savez_compressed if compressed else np.savez)(root / IMAGES, images=images)
    render_text(root, seed=seed, grid=grid)
    return root


def write_causal3dident(data_dir: Path, n: int = 60, size: int = 128, seed: int = 0) -> Path:
    """``<data_dir>/causal3dident/``: ``latents_image.csv`` (the 11 columns, drawn as crossmodal_mislaignment
    rendering_data/Causal3DIdent/generate_latents.py does),
    ``images/{i:0Wd}.png`` (flat colours from the hues, the object a square placed by its x/y position) and every
    caption file of ``python -m mmrep.data.causal3dident render-text``."""
    import colorsys

    import pandas as pd
    from PIL import Image

    from mmrep.data.causal3dident import image_path, render_text

    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "causal3dident"
    (root / "images").mkdir(parents=True, exist_ok=True)
    x, y, shape, pos = rng.integers(0, 3, n), rng.integers(0, 3, n), rng.integers(0, 7, n), rng.random(n)
    s_hue = (pos + rng.random(n)) / 2
    latents = pd.DataFrame(
        {
            "object_shape": shape,
            "object_xpos": x,
            "object_ypos": y,
            "object_zpos": np.zeros(n),
            "object_alpharot": rng.random(n),
            "object_betarot": rng.random(n),
            "object_gammarot": rng.random(n),
            "object_color": ((x + y) / 2 + rng.random(n)) / 3,
            "spotlight_pos": pos,
            "spotlight_color": s_hue,
            "background_color": (pos + s_hue + rng.random(n)) / 3,
        }
    )
    latents.to_csv(root / "latents_image.csv", index=False)
    for i, row in latents.iterrows():
        image = np.empty((size, size, 3), np.float64)
        image[:] = colorsys.hsv_to_rgb((row.background_color - 0.5) / 2 % 1, 0.6, 1)
        cx, cy, half = (
            int((0.25 + 0.25 * row.object_xpos) * size),
            int((0.25 + 0.25 * row.object_ypos) * size),
            size // 8,
        )
        image[cy - half : cy + half, cx - half : cx + half] = colorsys.hsv_to_rgb(row.object_color, 1, 1)
        Image.fromarray((255 * image).astype(np.uint8)).save(image_path(root, i, n))
    render_text(root, seed=seed)
    return root


VL_WORDS = (
    "a",
    "red",
    "blue",
    "green",
    "dog",
    "cat",
    "house",
    "tree",
    "on",
    "the",
    "beach",
    "street",
    "at",
    "night",
    "day",
    "snowy",
    "old",
    "small",
    "big",
    "car",
)


def write_caption_uniqueness(data_dir: Path, n: int = 24, seed: int = 0) -> Path:
    """``<data_dir>/caption_uniqueness/``: ``data.json`` in the variants layout (platonic-rep-unique
    perturbed/create_dataset.py: per entry
    ``{"Index - i": {"sentences": {"Caption 0 - 0%": ..., "Caption k - P%": ...}, "similarities": [...]}}``, each
    rewrite swapping more words) and ``images/<i>.png`` (sizes vary; colour and a bar encode the original caption's
    words)."""
    import json

    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "caption_uniqueness"
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        words = list(rng.choice(VL_WORDS, 6))
        sentences = {"Caption 0 - 0%": " ".join(words) + "."}
        for k in range(1, 11):
            words[rng.integers(6)] = str(rng.choice(VL_WORDS))
            sentences[f"Caption {k} - {10 * k}%"] = " ".join(words) + "."
        entries.append({f"Index - {i}": {"sentences": sentences, "similarities": list(np.linspace(0.9, 0.4, 10))}})
        size = (40 + 4 * (i % 3), 32 + 2 * (i % 5))
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        first = VL_WORDS.index(sentences["Caption 0 - 0%"].split()[0].rstrip("."))
        pixels[:] = (12 * first, 255 - 12 * first, 40 * (i % 6))
        pixels[:, : 2 * (1 + VL_WORDS.index(sentences["Caption 0 - 0%"].split()[1].rstrip(".")))] = 255
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
    (root / "data.json").write_text(json.dumps(entries))
    return root


def write_tiny_lm(folder: Path) -> Path:
    """A randomly initialised 2-layer GPT-2 and a word-level tokenizer, saved as a local model folder (no weights
    are downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "</s>", ".", *VL_WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>").save_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return Path(folder)


def write_tiny_vit(folder: Path) -> Path:
    """A randomly initialised 2-block ViT (32×32, patches of 8) and its image processor, as a local model folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def write_fake_run(
    run: Path,
    config: dict | None = None,
    results=None,
    overrides=None,
    choices: dict | None = None,
) -> Path:
    """A run folder as ``mmrep train`` leaves it, without training: ``.hydra/config.yaml`` (``config``),
    ``.hydra/overrides.yaml`` (``overrides``: a list of ``key=value`` strings or a dict, written when given),
    ``.hydra/hydra.yaml`` with ``hydra.runtime.choices`` (``choices``, when given) and ``results.csv`` (``results``:
    a DataFrame or a list of row dicts; none written when None). Returns ``run``."""
    import pandas as pd
    from omegaconf import OmegaConf

    run = Path(run)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config or {}), run / ".hydra" / "config.yaml")
    if overrides is not None:
        items = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides)
        OmegaConf.save(OmegaConf.create(items), run / ".hydra" / "overrides.yaml")
    if choices is not None:
        OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run / ".hydra" / "hydra.yaml")
    if results is not None:
        (results if isinstance(results, pd.DataFrame) else pd.DataFrame(list(results))).to_csv(
            run / "results.csv", index=False
        )
    return run
