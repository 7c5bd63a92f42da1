"""Damaged data files end at load time in one line naming the file, split, key and count (mmrep.data.integrity), or
load correctly where the original repairs or drops such samples: never a diverged loss at step 0, an empty results
cell or a traceback."""

import json
import logging
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures import write_affect, write_avmnist, write_caption_uniqueness, write_causal3dident, write_mpi3d
from mmrep.bias.misalignment import MisalignmentBias
from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError
from mmrep.data.affect import AffectDataModule
from mmrep.data.avmnist import AVMNISTDataModule
from mmrep.data.base import InMemorySplitDataModule
from mmrep.data.caption_uniqueness import read_variants
from mmrep.data.causal3dident import Causal3DIdentDataModule
from mmrep.data.integrity import nonfinite_problem
from mmrep.data.mpi3d import MPI3DComplexDataModule
from mmrep.data.numeric import NumericDataModule
from mmrep.data.rus import DIGEST_KEY, cache_problem, cache_schema, params_digest
from mmrep.data.shapes_text import read_cache
from mmrep.objectives.losses import ensure_finite

MOSI = {"vision": 20, "audio": 5, "text": 300}


@pytest.fixture(scope="module")
def mosi_raw(tmp_path_factory):
    path = write_affect(tmp_path_factory.mktemp("mosi"), "mosi")
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _set(split, key, index, value):
    def damage(data):
        data[split][key][index] = value

    return damage


def _empty(split):
    def damage(data):
        data[split] = {k: v[:0] for k, v in data[split].items()}

    return damage


def _replace(split, key, value):
    def damage(data):
        data[split][key] = value(data[split][key]) if callable(value) else value

    return damage


# (damage, label rule, the message's pattern after "dataset.path: <file>"): what real downloads and preprocessing do
AFFECT_DAMAGE = {
    "nan in features": (
        _set("train", "vision", (3, -1, 0), np.nan),
        "regression",
        r", split 'train', key 'vision': 1 NaN value in 1 of 39 samples \(sample 3\); repair or re-create the file",
    ),
    "nan label in test": (
        _set("test", "labels", (2, 0, 0), np.nan),
        "regression",
        r", split 'test', key 'labels': 1 NaN value in 1 of 15 samples \(sample 2\)",
    ),
    "empty test split": (_empty("test"), "regression", r", split 'test': holds no samples"),
    "+inf audio (only -inf is the original's padding)": (
        _set("valid", "audio", (1, -1, 0), np.inf),
        "regression",
        r", split 'valid', key 'audio': 1 inf value in 1 of 15 samples \(sample 1\)",
    ),
    "nan text": (
        _set("train", "text", (0, -1, 5), np.nan),
        "regression",
        r", split 'train', key 'text': 1 NaN value in 1 of 39 samples \(sample 0\)",
    ),
    "nan and inf in many samples": (
        lambda d: (
            d["train"]["vision"].__setitem__((slice(4, 9), -1, 0), np.nan),
            d["train"]["vision"].__setitem__((9, -1, 1), -np.inf),
        ),
        "regression",
        r", split 'train', key 'vision': 5 NaN and 1 inf values in 6 of 39 samples \(samples 4, 5, 6, …\)",
    ),
    "a label short": (
        _replace("test", "labels", lambda y: y[:-1]),
        "regression",
        r", split 'test': keys hold different sample counts \{'vision': 16, 'audio': 16, 'text': 16, 'labels': 15\}",
    ),
    "labels as text": (
        _replace("valid", "labels", lambda y: y.astype(str)),
        "regression",
        r", split 'valid', key 'labels': holds <U\d+ values \(ndarray\); expected numbers",
    ),
    "labels without a value": (
        _replace("valid", "labels", lambda y: y[:, :0]),
        "regression",
        r", split 'valid', key 'labels': shape \(16, 0, 1\) holds no label per sample",
    ),
    "ragged features": (
        _replace("test", "audio", lambda x: [x[0], x[1][:10]] + list(x[2:])),
        "regression",
        r", split 'test', key 'audio': not a rectangular numeric array",
    ),
    "no time steps": (
        lambda d: d["test"].update({k: d["test"][k][:, :0] for k in ("vision", "audio", "text")}),
        "regression",
        r", split 'test': the modalities hold step counts T \{'vision': 0, 'audio': 0, 'text': 0\}; expected one T",
    ),
    "every text zero": (
        _replace("test", "text", np.zeros_like),
        "regression",
        r", split 'test', key 'text': all 16 samples have text summing to 0 \(MultiBench drops them\)",
    ),
    "modalities of different lengths": (
        _replace("test", "vision", lambda x: x[:, :40]),
        "regression",
        r", split 'test': the modalities hold step counts T \{'vision': 40, 'audio': 50, 'text': 50\}; expected one T",
    ),
    "humor label that is no class": (
        _set("test", "labels", (0, 0, 0), 3.0),
        "raw",
        r", split 'test', key 'labels': 1 of 15 labels are not classes 0..1 \(value 3; sample 0\)",
    ),
}


@pytest.mark.parametrize("case", AFFECT_DAMAGE)
def test_damaged_multibench_files_stop_at_load_naming_file_split_key_and_count(tmp_path, mosi_raw, case):
    damage, rule, message = AFFECT_DAMAGE[case]
    data = pickle.loads(pickle.dumps(mosi_raw))
    if rule == "raw":  # humor's labels are 0/1
        for split in data.values():
            split["labels"] = (split["labels"] > 0).astype(np.float32)
    damage(data)
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps(data))
    dm = AffectDataModule(str(path), MOSI, label_rule=rule)
    with pytest.raises(ConfigError) as err:
        dm.setup()
    text = str(err.value)
    assert "\n" not in text
    assert re.match(rf"dataset\.path: {re.escape(str(path))}{message}", text), text


def test_samples_the_original_drops_or_repairs_load_with_one_warning(tmp_path, mosi_raw, caplog):
    data = pickle.loads(pickle.dumps(mosi_raw))
    data["train"]["text"][[5, 6]] = 0.0  # + the fixture's one zero text: MultiBench drops all three
    data["train"]["audio"][7, -3:, :] = -np.inf  # the original's -inf audio becomes 0
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps(data))
    dm = AffectDataModule(str(path), MOSI)
    with caplog.at_level(logging.WARNING, logger="mmrep.data.affect"):
        dm.setup()
    warnings = [r.getMessage() for r in caplog.records if "train" in r.getMessage()]
    assert warnings == ["affect train: dropping 3 of 40 samples whose text sums to 0, as MultiBench's get_data.py does"]
    assert len(dm.split("train")) == 37
    assert all(torch.isfinite(dm.split(s).data["audio"]["x"]).all() for s in ("train", "val", "test"))


AVMNIST_DAMAGE = {
    "nan audio": (
        "audio/train_data.npy",
        lambda a: a.__setitem__((5, 0, 0), np.nan),
        "audio/train_data.npy, split 'train', key 'audio': 1 NaN value in 1 of 60 samples (sample 5)",
    ),
    "inf pixel": (
        "image/test_data.npy",
        lambda a: a.__setitem__((0, 0), np.inf),
        "image/test_data.npy, split 'test', key 'image': 1 inf value in 1 of 20 samples (sample 0)",
    ),
    "label 12": (
        "test_labels.npy",
        lambda a: a.__setitem__(3, 12),
        "test_labels.npy, split 'test', key 'labels': 1 of 20 labels are not classes 0..9 (value 12; sample 3)",
    ),
}


@pytest.mark.parametrize("case", AVMNIST_DAMAGE)
def test_damaged_avmnist_files_stop_at_load(tmp_path, case):
    root = write_avmnist(tmp_path)
    name, damage, message = AVMNIST_DAMAGE[case]
    array = np.load(root / name)
    damage(array)
    np.save(root / name, array)
    with pytest.raises(ConfigError) as err:
        AVMNISTDataModule(str(root), n_train=50).setup()
    assert str(err.value).startswith(f"dataset.root: {root}/{message}")


def test_an_empty_avmnist_test_file_and_a_truncated_one_are_one_line_errors(tmp_path):
    root = write_avmnist(tmp_path)
    for name, shape in (
        ("image/test_data.npy", (0, 784)),
        ("audio/test_data.npy", (0, 20, 36)),
        ("test_labels.npy", (0,)),
    ):
        np.save(root / name, np.zeros(shape))
    with pytest.raises(ConfigError, match=r"image/test_data.npy, split 'test', key 'image': holds no samples"):
        AVMNISTDataModule(str(root), n_train=50).setup()
    root = write_avmnist(tmp_path / "truncated")
    (root / "train_labels.npy").write_bytes((root / "train_labels.npy").read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"train_labels.npy is not a readable .npy array \(ValueError: [^\n]*\)$"):
        AVMNISTDataModule(str(root), n_train=50).setup()


def test_factor_tables_with_empty_text_or_infinite_cells_name_file_column_and_rows(tmp_path):
    root = write_causal3dident(tmp_path, n=20, size=16)
    table = pd.read_csv(root / "latents_image.csv")
    clean = table.copy()
    table.loc[[4, 9], "spotlight_pos"] = np.nan  # empty cells
    table.to_csv(root / "latents_image.csv", index=False)
    with pytest.raises(
        ConfigError,
        match=r"latents_image.csv, column 'spotlight_pos': 2 NaN values in 2 of 20 samples \(samples 4, 9\)",
    ):
        Causal3DIdentDataModule(data_dir=str(root))
    table = clean.copy()
    table["object_color"] = table["object_color"].astype(object)
    table.loc[7, "object_color"] = "inf"
    table.to_csv(root / "latents_image.csv", index=False)
    with pytest.raises(ConfigError, match=r"column 'object_color': 1 inf value in 1 of 20 samples \(sample 7\)"):
        Causal3DIdentDataModule(data_dir=str(root))
    table.loc[7, "object_color"] = "blue"
    table.to_csv(root / "latents_image.csv", index=False)
    with pytest.raises(ConfigError, match=r"column 'object_color': 1 non-numeric cells \(row 7: 'blue'\)"):
        Causal3DIdentDataModule(data_dir=str(root))
    clean.to_csv(root / "latents_image.csv", index=False)
    assert len(Causal3DIdentDataModule(data_dir=str(root)).heldout("test")[0]["image"]) == 2


def test_mpi3d_with_a_missing_factor_cell_or_no_training_captions_stops_at_load(tmp_path):
    root = write_mpi3d(tmp_path, grid=(4, 4, 2, 3, 3, 1, 1))
    bias = MisalignmentBias(setting="selection_0")
    semantics = root / "test" / "image_semantics.csv"
    table = pd.read_csv(semantics)
    table.iloc[3, 2] = np.nan
    table.to_csv(semantics, index=False)
    with pytest.raises(
        ConfigError, match=rf"{semantics}, column '{table.columns[2]}': 1 NaN value in 1 of \d+ samples \(sample 3\)"
    ):
        MPI3DComplexDataModule(bias, data_dir=str(root), factor_sizes=(4, 4, 2, 3, 3, 1, 1))
    table.iloc[3, 2] = 0.5
    table.to_csv(semantics, index=False)
    with pytest.raises(ConfigError, match=rf"column '{table.columns[2]}' holds non-integers"):
        MPI3DComplexDataModule(bias, data_dir=str(root), factor_sizes=(4, 4, 2, 3, 3, 1, 1))
    table.iloc[3, 2] = 0
    table.astype(int).to_csv(semantics, index=False)
    for name in ("text_selection_0.txt", "text_semantics_selection_0.csv"):
        lines = (root / "train" / name).read_text().splitlines()
        (root / "train" / name).write_text(lines[0] + "\n" if name.endswith(".csv") else "")
    (root / "train" / "image_semantics.csv").write_text(
        (root / "train" / "image_semantics.csv").read_text().splitlines()[0] + "\n"
    )
    with pytest.raises(ConfigError, match=r"train/text_selection_0.txt holds no captions; the train split needs"):
        MPI3DComplexDataModule(bias, data_dir=str(root), factor_sizes=(4, 4, 2, 3, 3, 1, 1))


def test_caption_variants_with_an_empty_caption_are_refused(tmp_path):
    root = write_caption_uniqueness(tmp_path, n=4)
    entries = json.loads((root / "data.json").read_text())
    entries[2]["Index - 2"]["sentences"]["Caption 1 - 10%"] = "  "
    (root / "data.json").write_text(json.dumps(entries))
    assert len(read_variants(root / "data.json", 20)[1]) == 4
    with pytest.raises(
        ConfigError, match=r"data.json entry 2 has no 'Index - i' key with a non-empty 'Caption k - 10%'"
    ):
        read_variants(root / "data.json", 10)


def test_generated_caches_with_non_finite_values_are_regenerated_not_trained_on(tmp_path):
    n = 8
    arrays = {
        "factors": np.zeros((n, 6)),
        "text_factors": np.zeros((n, 4), np.int64),
        "captions": np.array(["a ."] * n),
        "images": np.zeros((n, 3, 32, 32), np.float32),
    }
    arrays["images"][5, 0, 0, 0] = np.nan
    np.savez(tmp_path / "cache.npz", **arrays)
    assert read_cache(tmp_path / "cache.npz", n) == (None, "1 NaN value in 1 of 8 samples (sample 5)")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cache.npz").read_bytes()[:200])
    assert read_cache(tmp_path / "cut.npz", n)[1].startswith("unreadable (")
    assert read_cache(tmp_path / "cache.npz", n + 1)[1] == "factors is (8, 6), expected (9, 6)"
    params = {"num_data": 4, "num_classes": 4}
    rus = {k: np.zeros(shape, dtype) for k, (shape, dtype) in cache_schema(params).items()}
    rus[DIGEST_KEY] = np.array(params_digest(params))
    rus["x1"][2, 3] = np.inf
    assert cache_problem(rus, params) == "x1: 1 inf value in 1 of 4 samples (sample 2)"


class _Generated(InMemorySplitDataModule):
    """A generated dataset whose splits are given: the net under every loader (InMemorySplitDataModule.setup)."""

    def __init__(self, splits, task="classification"):
        super().__init__(batch_size=4)
        self.splits = splits
        self.spec = DataSpec({"x": ModalitySpec((2,))}, task=task, num_classes=3 if task == "classification" else None)

    def load_splits(self):
        return self.splits


def _splits(**damage):
    out = {
        s: {"x": torch.zeros(5, 2), "y": torch.arange(5) % 3, "latents": {"z": torch.zeros(5, 1)}}
        for s in ("train", "val", "test")
    }
    for split, (key, value) in damage.items():
        out[split][key] = value
    return out


@pytest.mark.parametrize(
    "splits, message",
    [
        (
            _splits(val=("x", torch.full((5, 2), float("nan")))),
            r"^dataset: the data _Generated generated, split 'val', key 'x': 10 NaN values in 5 of 5 samples "
            r"\(samples 0, 1, 2, …\); the dataset's parameters \(dataset\.\*\) give non-finite values$",
        ),
        (
            _splits(test=("latents", {"z": torch.tensor([[0.0], [1.0], [float("inf")], [0.0], [0.0]])})),
            r"split 'test', key 'latents.z': 1 inf value in 1 of 5 samples \(sample 2\)",
        ),
        (
            _splits(train=("y", torch.tensor([0, 1, 2, 3, -1]))),
            r"split 'train', key 'y': 2 of 5 labels are not classes 0..2 \(values -1, 3; samples 3, 4\)",
        ),
        (_splits(test=("x", torch.zeros(0, 2))), r"split 'test': keys hold different sample counts"),
        (
            {s: {"x": torch.zeros(0, 2), "y": torch.zeros(0, dtype=torch.long)} for s in ("train", "val", "test")},
            r"split 'train': holds no samples",
        ),
    ],
)
def test_every_in_memory_dataset_checks_its_splits_before_training(splits, message):
    with pytest.raises(ConfigError, match=message):
        _Generated(splits).setup()


def test_clean_splits_load_and_integer_data_count_as_finite():
    dm = _Generated(_splits())
    dm.setup()
    assert len(dm.split("test")) == 5
    half = torch.tensor([[1.0], [float("inf")]], dtype=torch.bfloat16)
    assert nonfinite_problem(half) == "1 inf value in 1 of 2 samples (sample 1)"
    assert nonfinite_problem(np.arange(4)) is None and nonfinite_problem(np.array([[1.0, np.nan]])) == (
        "1 NaN value in 1 of 1 samples (sample 0)"
    )


def test_numeric_refuses_a_non_finite_margin():
    for value in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ConfigError, match=r"^dataset.margin_std: must be a finite number > 0"):
            NumericDataModule(margin_std=value)


ISSUE = ["objective=mmcl", "logger=none", "callbacks.rich_progress_bar=null", "trainer.max_epochs=1"]


def test_the_issues_damaged_files_end_a_run_in_one_line_before_training(cli, tmp_path, mosi_raw):
    """NaN features (was: 'non-finite training loss … lower objective.optimizer.lr'), a NaN test label (was: exit 0
    with empty MAE / Pearson cells) and an empty test split (was: a traceback in affect.text_keep)."""
    cases = {
        "features": (_set("train", "vision", (3, -1, 0), np.nan), "split 'train', key 'vision': 1 NaN value"),
        "label": (_set("test", "labels", (2, 0, 0), np.nan), "split 'test', key 'labels': 1 NaN value"),
        "empty": (_empty("test"), "split 'test': holds no samples"),
    }
    for name, (damage, message) in cases.items():
        data = pickle.loads(pickle.dumps(mosi_raw))
        damage(data)
        path = tmp_path / name / "affect" / "mosi" / "mosi_data.pkl"
        path.parent.mkdir(parents=True)
        path.write_bytes(pickle.dumps(data))
        out = tmp_path / f"run_{name}"
        res = cli(["dataset=mosi", f"paths.data_dir={tmp_path / name}", f"hydra.run.dir={out}", *ISSUE])
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        lines = [line for line in res.stderr.splitlines() if line.startswith("mmrep: error:")]
        assert lines == [lines[0]] and lines[0].startswith(f"mmrep: error: dataset.path: {path}, {message}"), lines
        assert not out.exists()  # nothing half-written


def test_a_non_finite_loss_from_non_finite_inputs_blames_the_data_not_the_optimiser():
    """The last line of defence, for data no loader checked (a user's own datamodule, a stream)."""
    nan = torch.tensor(float("nan"))
    batch = {
        "x": torch.ones(4, 2),
        "vision": {"x": torch.tensor([[1.0, float("inf")]]), "mask": torch.ones(1, 2).bool()},
    }
    with pytest.raises(
        FloatingPointError, match=r"^non-finite training loss \(nan\) at step 0; the batch's input vision.x holds "
    ):
        ensure_finite(nan, 0, "lower objective.optimizer.lr", batch)
    with pytest.raises(FloatingPointError, match=r"at step 7; lower objective.optimizer.lr$"):
        ensure_finite(nan, 7, "lower objective.optimizer.lr", {"x": torch.ones(2)})
    ensure_finite(torch.tensor(1.0), 0, "unused", batch)
