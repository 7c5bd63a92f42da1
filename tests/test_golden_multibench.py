"""Differential ("golden") tests: mmrep's MultiBench loaders against the outputs of the original pipeline.

The golden files under tests/golden/multibench/ hold what the original research code's loaders
(``datasets/affect/get_data.py::get_dataloader``, ``datasets/avmnist/get_data.py::get_dataloader_mfcc``, called
with the paper's arguments, unshuffled) returned on the fixtures written here with tests/fixtures.py; README.md
there says how they were produced. Only compact exact digests are stored: per sample and step the projection of
the features on a fixed seeded random vector (a shifted step, a wrong normalisation, a permuted feature or a wrong
truncation all change it; a row sum would add nothing and double the files), masks and labels in full, the
normalisation statistics; for AVMNIST per-batch digests, the first batch in full and the audio statistics. mmrep
is compared batch by batch (batches of 64, in order)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import mmrep.data.affect as affect
import mmrep.data.avmnist as avmnist
from fixtures import AFFECT, write_affect, write_avmnist

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "multibench"
BATCH = 64  # multimodal_alignment scripts/tune_real.sh; the golden batches are the original's, in order
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # mmrep's split → the original's loader
AFFECT_FIXTURE = {"sizes": (72, 70, 24), "steps": (60, 50, 60), "seed": 0, "edge_cases": True}
AVMNIST_FIXTURE = {
    "n_train": 60_000,
    "n_test": 10_000,
    "seed": 0,
    "image_dtype": np.uint8,
    "audio_dtype": np.float32,
}  # the original hard-codes 60,000 / 10,000 rows
DIGEST_SEED = 2024
TOL = {"rtol": 1e-4, "atol": 1e-4}  # float32 work, summation order differs
GOLDEN_CASES = {**{name: (name, True) for name in AFFECT}, "mosi_nonorm": ("mosi", False)}  # file: (dataset, normalize)


# ---- digests (the generator of the golden files computes them with these same functions) ----------------
def projection(width: int, rows: int | None = None) -> np.ndarray:
    """A fixed random float64 vector (width,), or matrix (rows, width), from DIGEST_SEED and the shape."""
    rng = np.random.default_rng([DIGEST_SEED, width, rows or 0])
    return rng.standard_normal(width if rows is None else (rows, width))


def sequence_digest(x: np.ndarray) -> np.ndarray:
    """(N, T, d) → (N, T) float32: per sample and step the projection on ``projection(d)``, computed in float64."""
    return (np.asarray(x, dtype=np.float64) @ projection(x.shape[2])).astype(np.float32)


def batch_digest(x: np.ndarray) -> np.ndarray:
    """One batch (B, ...) → (2,) float64: its sum and its projection on ``projection(features, BATCH)[:B]``
    (sample position and feature both weigh, so reordered samples or values change it)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.array([flat.sum(), (flat * projection(flat.shape[1], BATCH)[: len(x)]).sum()])


def batches(n: int) -> list[slice]:
    """The unshuffled batches of ``BATCH`` over ``n`` samples."""
    return [slice(i, min(i + BATCH, n)) for i in range(0, n, BATCH)]


# ---- comparisons --------------------------------------------------------------------------------------------
def shipped(name: str, **overrides) -> dict:
    """The ``dataset`` arguments of conf/dataset/<name>.yaml (without ``_target_``), with ``overrides``."""
    args = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "dataset" / f"{name}.yaml").dataset, resolve=False)
    args.pop("_target_")
    return {**args, **overrides}


def load_golden(case: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{case}.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def compare_affect(golden: dict, dm) -> None:
    """AssertionError naming split, batch and field unless ``dm``'s splits equal the original's, batch by batch:
    sizes, per modality the digests and masks (the original's is True at padding, mmrep's at real steps), labels
    (values and dtype; the original's regression target is (B, 1)); and the train statistics."""
    for ours, theirs in SPLITS.items():
        data = dm.split(ours).data
        sizes = golden[f"{theirs}/batch_sizes"]
        assert len(data["y"]) == sizes.sum(), f"{ours}: {len(data['y'])} samples, the original {sizes.sum()}"
        digests = {m: sequence_digest(data[m]["x"].numpy()) for m in affect.MODALITIES}
        labels = golden[f"{theirs}/labels"]
        for b, rows in enumerate(batches(len(data["y"]))):
            assert rows.stop - rows.start == sizes[b], f"{ours} batch {b}: size"
            for m in affect.MODALITIES:
                where = f"{ours} batch {b} {m}"
                np.testing.assert_array_equal(
                    data[m]["mask"][rows].numpy(), ~golden[f"{theirs}/{m}/pad_mask"][rows], err_msg=f"{where} mask"
                )
                np.testing.assert_allclose(
                    digests[m][rows], golden[f"{theirs}/{m}/proj"][rows], **TOL, err_msg=f"{where} projection"
                )
            y = data["y"][rows].numpy()
            assert y.dtype == labels.dtype, f"{ours} batch {b}: labels {y.dtype}, the original {labels.dtype}"
            np.testing.assert_array_equal(y, labels[rows].reshape(len(y)), err_msg=f"{ours} batch {b} labels")
    if dm.normalize:
        train = affect.first_steps(dm._clean(affect.read_affect_pickle(dm.path)["train"], "train"), dm.max_len)
        for m in affect.NORMALISED:
            for got, key in zip(affect.norm_stats(train[m]), ("mean", "std")):
                np.testing.assert_allclose(
                    got, golden[f"stats/{m}/{key}"], rtol=1e-5, atol=1e-6, err_msg=f"train statistics {m} {key}"
                )


def affect_module(tmp_path: Path, case: str):
    """The fixture of ``case`` written with the project's writer and loaded with the shipped arguments."""
    name, normalize = GOLDEN_CASES[case]
    path = write_affect(tmp_path, name, **AFFECT_FIXTURE)
    dm = affect.AffectDataModule(**shipped(name, path=str(path), normalize=normalize))
    dm.setup()
    return dm


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_affect_loader_matches_the_original(tmp_path, case):
    dm = affect_module(tmp_path, case)
    compare_affect(load_golden(case), dm)
    first = next(iter(dm.val_dataloader()))  # the unshuffled loader yields the batches compared above
    np.testing.assert_array_equal(first["text"]["x"].numpy(), dm.split("val").data["text"]["x"][:BATCH].numpy())


def test_affect_fixture_exercises_the_rules(tmp_path):
    """The golden fixture holds what the comparison must see: T = 60 > 50, text starting after vision/audio,
    -inf audio, a dropped all-zero and a dropped cancelling text, 0 and 0.7 labels."""
    import pickle

    raw = pickle.load(open(write_affect(tmp_path, "humor", **AFFECT_FIXTURE), "rb"))
    train = raw["train"]
    assert train["text"].shape[1] == 60 and raw["valid"]["text"].shape[1] == 50
    text_start = affect.first_text_rows(train["text"])
    assert (affect.first_text_rows(train["vision"]) < text_start).sum() >= 2
    assert np.isneginf(train["audio"]).sum() >= 4
    signed = train["text"].reshape(len(text_start), -1).sum(1)
    assert ((signed == 0) & (np.abs(train["text"]).reshape(len(text_start), -1).sum(1) > 0)).sum() == 1
    assert {0.0, 1.0} < set(train["labels"].ravel().round(4)) and np.isclose(train["labels"].ravel(), 0.7).any()
    assert (text_start < 10).any() and (text_start > 40).any()  # long samples lose steps to the 50-step window


def _real_steps_stats(x):
    real = np.where(x != 0, x, np.nan)
    return np.nanmean(real, (0, 1)), np.nanstd(real, (0, 1))


def _rolled_mask(align_and_pad):
    return lambda x, start, max_len: (lambda out: (out[0], np.roll(out[1], 1, 1)))(align_and_pad(x, start, max_len))


MUTATIONS = {  # name: (function of mmrep.data.affect, its replacement given the original); each must be caught
    "labels: humor raw -> label > 0": ("labels_from", lambda f: lambda raw, rule: f(raw, "positive")),
    "drop: absolute text sum": ("text_keep", lambda f: lambda t: np.abs(t).reshape(len(t), -1).sum(1) != 0),
    "window: align from the full T": ("first_steps", lambda f: lambda split, max_len: split),
    "alignment start one step late": ("first_text_rows", lambda f: lambda t: np.minimum(f(t) + 1, t.shape[1])),
    "statistics over real steps only": ("norm_stats", lambda f: _real_steps_stats),
    "mask shifted by one step": ("align_and_pad", _rolled_mask),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_golden_comparison_catches_a_changed_rule(tmp_path, monkeypatch, mutation):
    attr, make = MUTATIONS[mutation]
    monkeypatch.setattr(affect, attr, make(getattr(affect, attr)))
    with pytest.raises(AssertionError):
        compare_affect(load_golden("humor"), affect_module(tmp_path, "humor"))


def test_constant_features_stay_finite_where_the_original_divides_by_zero(tmp_path, caplog):
    """Deliberate difference: a feature with zero train variance is centred (the original gives nan/inf); a sample
    with no text in its first 50 steps is dropped with a warning (the original exits)."""
    import pickle

    path = write_affect(tmp_path, "mosi", sizes=(20, 8, 8), steps=(60, 50, 50), edge_cases=True)
    raw = pickle.load(open(path, "rb"))
    for split in raw.values():
        split["vision"][:, :, 3] = 2.5  # constant, padding included
    raw["train"]["text"][0, :50] = 0.0  # sample 0 (unpadded): its text begins after the 50-step window
    raw["train"]["text"][0, 55] = 1.0
    pickle.dump(raw, open(path, "wb"))
    with caplog.at_level(logging.WARNING, logger="mmrep.data.affect"):
        dm = affect.AffectDataModule(**shipped("mosi", path=str(path)))
        dm.setup()
    assert "dropping 1 samples with no text in their first 50 steps" in caplog.text
    vision = dm.split("train").data["vision"]
    assert np.isfinite(vision["x"].numpy()).all()
    np.testing.assert_allclose(vision["x"][..., 3][vision["mask"]].numpy(), 0.0, atol=1e-6)
    assert len(dm.split("train")) == 20 - 3  # the all-zero text, the cancelling one and the late one


# ---- AVMNIST ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def avmnist_module(tmp_path_factory):
    """The 60,000 + 10,000-row fixture (about 220 MB, removed afterwards) loaded with the shipped arguments."""
    import shutil

    folder = tmp_path_factory.mktemp("avmnist")
    dm = avmnist.AVMNISTDataModule(**shipped("avmnist", root=str(write_avmnist(folder, **AVMNIST_FIXTURE))))
    dm.setup()
    yield dm
    shutil.rmtree(folder)


def compare_avmnist(golden: dict, dm) -> None:
    """AssertionError unless ``dm`` equals the original: per split every batch's digests and sizes, the labels
    in full, the first train batch in full, the audio statistics."""
    for ours, theirs in SPLITS.items():
        data = {k: v.numpy() for k, v in dm.split(ours).data.items()}
        np.testing.assert_array_equal(data["y"], golden[f"{theirs}/labels"], err_msg=f"{ours} labels")
        assert data["y"].dtype == golden[f"{theirs}/labels"].dtype
        rows = batches(len(data["y"]))
        assert len(rows) == len(golden[f"{theirs}/image_digest"]), f"{ours}: number of batches"
        for m in ("image", "audio"):
            assert data[m].shape[1:] == tuple(golden[f"{m}_shape"]) and data[m].dtype == np.float32, m
            got = np.stack([batch_digest(data[m][r]) for r in rows])
            np.testing.assert_allclose(got, golden[f"{theirs}/{m}_digest"], **TOL, err_msg=f"{ours} {m} batch digests")
    train = dm.split("train").data
    np.testing.assert_allclose(
        train["image"][:BATCH].numpy(),
        golden["first/image_x255"] / np.float32(255),
        rtol=1e-6,
        err_msg="first train batch: image",
    )
    np.testing.assert_allclose(
        train["audio"][:BATCH].numpy(), golden["first/audio"], **TOL, err_msg="first train batch: audio"
    )
    audio = np.load(dm.root / "audio" / "train_data.npy").astype(np.float32)[: dm.n_train]
    for got, key in zip(avmnist.mfcc_stats(audio), ("mean", "std")):
        np.testing.assert_allclose(got.ravel(), golden[f"stats/audio/{key}"], rtol=1e-5, err_msg=f"audio {key}")


def test_avmnist_loader_matches_the_original(avmnist_module):
    compare_avmnist(load_golden("avmnist"), avmnist_module)


def test_avmnist_golden_comparison_catches_a_changed_rule(avmnist_module, monkeypatch):
    """A one-row shift of the validation split (train rows 55,001.. instead of 55,000..) must fail."""
    val = avmnist_module.split("val")
    monkeypatch.setattr(val, "data", {k: v.roll(1, 0) for k, v in val.data.items()})
    with pytest.raises(AssertionError):
        compare_avmnist(load_golden("avmnist"), avmnist_module)
