"""Golden (differential) test of the MPI3D-complex loader against the ORIGINAL pipeline.

tests/golden/mpi3d/ holds what the original code (github.com/YichaoCai1/crossmodal_mislaignment: ``datasets.py``
``MultimodalMPI3DRealComplex`` built as ``main_mpi3dreal.py`` builds it, NLTK 3.8.1 ``sent_tokenize`` +
``word_tokenize``; ``render_multimodal_mpi3d.py`` for the split) produced on the fixture of
``fixtures.write_mpi3d(seed=0)``: per paper setting the vocabulary, the token ids and sequence lengths of the
train / val / test splits, and per split the image labels and digests of the normalised images. How they were made
is in tests/golden/README.md. Here the same fixture is rewritten with the project's writer and loaded with mmrep's
datamodule; every output must equal the golden, and changing a rule (tokenisation, vocabulary order, split,
normalisation) must make the comparison fail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures import MPI3D_GRID, write_mpi3d
from mmrep.bias import MisalignmentBias
from mmrep.data import captions, mpi3d
from mmrep.data.mpi3d import MPI3DComplexDataModule

GOLDEN = Path(__file__).parent / "golden" / "mpi3d"
SETTINGS = [f"{kind}_{i}" for kind in ("selection", "perturbation") for i in range(5)]
SPLITS = ("train", "val", "test")
COLUMNS = ["OBJ_COLOR", "OBJ_SHAPE", "OBJ_SIZE", "CAMERA", "BACKGROUND", "H_AXIS", "V_AXIS"]


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((GOLDEN / "mpi3d_golden.json").read_text(encoding="utf-8"))
    with np.load(GOLDEN / "mpi3d_golden.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    projection = np.random.default_rng(meta["projection_seed"]).standard_normal((3 * 64 * 64, 4))
    return meta, arrays, projection


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mpi3d(tmp_path_factory.mktemp("data"), seed=0)  # the golden's fixture (meta["fixture"])


def fresh_copy(root: Path, tmp_path: Path) -> Path:
    """The fixture without any vocabulary file, so a patched rule really rebuilds the vocabulary."""
    return Path(shutil.copytree(root, tmp_path / "mpi3d_complex", ignore=shutil.ignore_patterns("vocab_*.json")))


def differences(root: Path, setting: str, golden) -> list[str]:
    """Load ``setting`` from ``root`` with mmrep and name every output that differs from the original's."""
    meta, arrays, projection = golden
    expected = meta["settings"][setting]
    dm = MPI3DComplexDataModule(MisalignmentBias(setting=setting), data_dir=str(root), factor_sizes=MPI3D_GRID)
    dm.setup()
    found = []
    if sorted(dm.vocab, key=dm.vocab.get) != expected["vocabulary"]:
        found.append("vocabulary")
    lengths = expected["max_sequence_length"]
    # deliberate: one length for all splits (the original pads each split to its own maximum; equal on this fixture)
    if dm.length != max(lengths.values()):
        found.append("sequence length")
    for split in SPLITS:
        batches = dm.heldout(split, chunk=256)  # in split order; the batches a model sees
        if sum(len(b["image"]) for b in batches) != expected["sizes"][split]:
            found.append(f"{split} size")
            continue
        text = torch.cat([b["text"] for b in batches])
        images = torch.cat([b["image"] for b in batches])
        labels = np.concatenate(
            [np.concatenate([b["latents"][f].numpy() for f in mpi3d.COLUMNS], axis=1) for b in batches]
        )
        if not torch.equal(text.sum(-1), torch.ones(text.shape[:2])):  # the vocabulary size is checked above
            found.append(f"{split} one-hot")
            continue
        ids, width = text.argmax(-1).numpy(), lengths["train" if split == "train" else "test"]
        want = arrays[f"ids_{setting}_{split}"]
        if ids.shape[1] < width or not np.array_equal(ids[:, :width], want) or ids[:, width:].any():
            found.append(f"{split} token ids")
        if not np.array_equal(labels, arrays[f"labels_{split}"]):
            found.append(f"{split} labels")
        flat = images.double().reshape(len(images), -1).numpy()
        if images.dtype != torch.float32 or images.shape[1:] != (3, 64, 64):
            found.append(f"{split} image dtype/shape")
        elif not (
            np.allclose(flat.reshape(-1, 3, 64 * 64).sum(-1), arrays[f"image_sums_{split}"], rtol=1e-7, atol=1e-6)
            and np.allclose(flat @ projection, arrays[f"image_proj_{split}"], rtol=1e-7, atol=1e-6)
        ):
            found.append(f"{split} images")
        if split == "train" and not np.allclose(images[0].numpy(), arrays["image_first_train"], rtol=0, atol=1e-6):
            found.append("first train image")
    return found


@pytest.mark.parametrize("setting", SETTINGS)
def test_mpi3d_loader_equals_the_original(root, golden, setting):
    assert differences(root, setting, golden) == []


def test_split_equals_the_original_renderer(root, golden):
    meta, arrays, _ = golden
    for split in ("train", "test"):  # the fixture's factor tables = the original renderer's, row by row
        table = pd.read_csv(root / split / "image_semantics.csv")
        assert list(table.columns) == COLUMNS
        np.testing.assert_array_equal(np.ravel_multi_index(table.to_numpy().T, MPI3D_GRID), arrays[f"split_{split}"])
    train, test = mpi3d.original_split(MPI3D_GRID)
    np.testing.assert_array_equal(train, arrays["split_train"])
    np.testing.assert_array_equal(test, arrays["split_test"])
    full = meta["full_grid_split"]  # the real 460,800-image grid: sizes and digests of the original's permutation
    train, test = mpi3d.original_split(mpi3d.GRID)
    assert (len(train), len(test)) == (full["train_size"], full["test_size"])
    assert train[:8].tolist() == full["train_head"] and test[:8].tolist() == full["test_head"]
    assert hashlib.sha256(train.astype("<i8").tobytes()).hexdigest() == full["train_sha256_int64"]
    assert hashlib.sha256(test.astype("<i8").tobytes()).hexdigest() == full["test_sha256_int64"]


# ---- the comparison catches a changed rule ------------------------------------------------------------------------
def test_a_changed_tokeniser_fails(root, golden, tmp_path, monkeypatch):
    monkeypatch.setattr(captions, "tokenize", str.split)  # punctuation stays on the words
    found = differences(fresh_copy(root, tmp_path), "perturbation_2", golden)
    assert "vocabulary" in found and "train token ids" in found and "sequence length" in found


def test_a_changed_vocabulary_order_fails(root, golden, tmp_path, monkeypatch):
    def sorted_vocabulary(lines):  # the same words, alphabetical instead of by first occurrence
        words = sorted({w for line in lines for w in line})
        return {w: i for i, w in enumerate([*captions.SPECIALS, *words])}

    monkeypatch.setattr(captions, "build_vocabulary", sorted_vocabulary)
    found = differences(fresh_copy(root, tmp_path), "selection_4", golden)
    assert found == ["vocabulary", "train token ids", "val token ids", "test token ids"]


def test_a_changed_split_fails(golden, tmp_path, monkeypatch):
    def other_split(grid=mpi3d.GRID, train_ratio=0.9):  # seed 0 instead of 42
        indices = np.random.RandomState(0).permutation(int(np.prod(grid)))
        cut = int(train_ratio * len(indices))
        return indices[:cut], indices[cut:]

    monkeypatch.setattr(mpi3d, "original_split", other_split)
    found = differences(write_mpi3d(tmp_path, seed=0), "selection_4", golden)
    assert {"train labels", "val labels", "test labels", "train images", "first train image"} <= set(found)


def test_a_changed_normalisation_fails(root, golden, tmp_path, monkeypatch):
    monkeypatch.setattr(mpi3d, "MEAN", (0.00888889, 0.00888889, 0.00888889))  # blue mean off by 0.0006
    found = differences(fresh_copy(root, tmp_path), "selection_4", golden)
    assert found == ["train images", "first train image", "val images", "test images"]
