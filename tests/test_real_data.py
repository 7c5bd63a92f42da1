"""The external datasets (multimodal_alignment datasets/*/get_data.py): loaders against per-sample references, on
fixtures in the exact on-disk formats; missing/malformed files; every dataset end to end."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures import AFFECT, write_affect, write_avmnist
from mmrep.core.errors import ConfigError
from mmrep.data.affect import AffectDataModule
from mmrep.data.avmnist import AVMNISTDataModule

FEATURES = {name: {"vision": dv, "audio": da, "text": 300} for name, (_, _, dv, da, _) in AFFECT.items()}
RULES = {"mosei": "regression", "mosi": "regression", "sarcasm": "positive", "humor": "raw"}
QUIET = ["callbacks.rich_progress_bar=null", "logger=none", "trainer.max_epochs=1"]
SMALL = ["metric.alignment.k=5", "metric.alignment.n=16", "metric.alignment.metrics=[mutual_knn,unbiased_cka]"]


def affect_reference(raw: dict, split: str, max_len: int = 50) -> dict:
    """multimodal_alignment datasets/affect/get_data.py and the original loader by hand, sample by sample: drop samples
    whose text sums to 0 (signed),
    -inf audio → 0, cut every modality to its first 50 steps, z-score vision/audio with train statistics over
    samples × those steps, cut from the first text row with a non-zero entry (a sample with none in the window is
    dropped: the original exits), truncate, right-pad."""

    def clean(part):
        keep = [i for i in range(len(part["text"])) if part["text"][i].sum() != 0]
        out = {k: np.array(part[k], dtype=np.float64)[keep][:, :max_len] for k in ("vision", "audio", "text")}
        out["audio"][np.isneginf(out["audio"])] = 0.0
        out["labels"] = np.asarray(part["labels"])[keep]
        return out

    train, part = clean(raw["train"]), clean(raw[split])
    for m in ("vision", "audio"):
        window = train[m].reshape(-1, train[m].shape[2])
        std = window.std(0)
        part[m] = (part[m] - window.mean(0)) / np.where(std > 0, std, 1.0)
    result = {m: [] for m in ("vision", "audio", "text", "mask", "labels")}
    for i in range(len(part["text"])):
        start = next((t for t in range(part["text"].shape[1]) if (part["text"][i, t] != 0).any()), None)
        if start is None:
            continue
        length = min(part["text"].shape[1] - start, max_len)
        for m in ("vision", "audio", "text"):
            x = np.zeros((max_len, part[m].shape[2]))
            x[:length] = part[m][i, start : start + length]
            result[m].append(x)
        result["mask"].append(np.arange(max_len) < length)
        result["labels"].append(part["labels"][i].reshape(-1)[0])
    return {k: np.stack(v) for k, v in result.items()}


@pytest.mark.parametrize("edge_cases", [False, True])
@pytest.mark.parametrize("name", list(AFFECT))
def test_affect_loader_matches_the_spec_reference(tmp_path, name, edge_cases):
    steps = (60, 50, 60) if edge_cases else (50, 50, 50)  # T > 50: the 50-step window cuts before the alignment
    path = write_affect(tmp_path, name, sizes=(30, 12, 12), steps=steps, edge_cases=edge_cases)
    dm = AffectDataModule(str(path), FEATURES[name], RULES[name], name=name)
    dm.setup()
    raw = pickle.load(open(path, "rb"))
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        ref = affect_reference(raw, theirs)
        data = dm.split(ours).data
        dropped = 2 if edge_cases else 1  # the all-zero text (and the text whose entries cancel)
        assert len(data["y"]) == len(ref["labels"]) == len(raw[theirs]["labels"]) - dropped
        for m in ("vision", "audio", "text"):
            np.testing.assert_allclose(data[m]["x"].numpy(), ref[m], atol=1e-4)
            np.testing.assert_array_equal(data[m]["mask"].numpy(), ref["mask"])
        expected = {
            "regression": ref["labels"].astype(np.float32),
            "positive": (ref["labels"] > 0).astype(np.int64),
            "raw": ref["labels"].astype(np.int64),
        }[RULES[name]]
        np.testing.assert_array_equal(data["y"].numpy(), expected)
    assert dm.spec.task == ("regression" if name in ("mosei", "mosi") else "classification")
    assert dm.spec.modalities["vision"].shape == (50, FEATURES[name]["vision"])
    assert np.isfinite(dm.split("train").data["audio"]["x"].numpy()).all()  # -inf audio was set to 0


def test_affect_truncates_long_sequences_and_picks_modalities(tmp_path):
    path = write_affect(tmp_path, "mosi", sizes=(20, 8, 8))
    # normalize=False: aligned from the full T (with normalisation the original first cuts to max_len steps)
    dm = AffectDataModule(str(path), FEATURES["mosi"], max_len=10, modalities=["text", "vision"], normalize=False)
    dm.setup()
    data = dm.split("train").data
    assert set(data) == {"text", "vision", "y"} and data["text"]["x"].shape[1:] == (10, 300)
    raw = pickle.load(open(path, "rb"))["train"]
    i = next(i for i in range(20) if (np.abs(raw["text"][i]).sum(1) != 0).sum() > 10)  # a sample longer than 10
    start = int((np.abs(raw["text"][i]).sum(1) != 0).argmax())
    np.testing.assert_allclose(data["text"]["x"][i].numpy(), raw["text"][i, start : start + 10])
    assert data["text"]["mask"][i].all()
    assert dm.spec.deselected == ("audio",)


def test_affect_missing_and_malformed_files_name_path_format_and_source(tmp_path):
    missing = tmp_path / "affect" / "mosei" / "mosei_senti_data.pkl"
    with pytest.raises(ConfigError, match="^dataset.path: no such file .*mosei_senti_data.pkl.*'valid'.*MultiBench"):
        AffectDataModule(str(missing), FEATURES["mosei"])
    missing.parent.mkdir(parents=True)
    missing.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="not a readable pickle"):
        AffectDataModule(str(missing), FEATURES["mosei"]).setup()
    pickle.dump({"valid": {}, "test": {}}, open(missing, "wb"))
    with pytest.raises(ConfigError, match="no split 'train'"):
        AffectDataModule(str(missing), FEATURES["mosei"]).setup()
    pickle.dump({"train": {"vision": 0}, "valid": {}, "test": {}}, open(missing, "wb"))
    with pytest.raises(ConfigError, match=r"split 'train' lacks \['audio', 'text', 'labels'\]"):
        AffectDataModule(str(missing), FEATURES["mosei"]).setup()
    path = write_affect(tmp_path / "other", "mosi")
    with pytest.raises(ConfigError, match="^dataset.features.vision"):
        AffectDataModule(str(path), FEATURES["mosei"]).setup()  # mosi's 20 vision features are not mosei's 35


def test_avmnist_patches_audio_normalisation_and_splits(tmp_path):
    root = write_avmnist(tmp_path, n_train=50, n_test=10)
    dm = AVMNISTDataModule(str(root), n_train=40)
    dm.setup()
    sizes = {s: len(dm.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 40, "val": 10, "test": 10}
    pixels = np.load(root / "image" / "train_data.npy").reshape(50, 28, 28) / 255.0
    patches = dm.split("train").data["image"].numpy()
    assert patches.shape == (40, 1, 7, 7, 16)
    for r, c in ((0, 0), (5, 13), (27, 27), (12, 3)):  # pixel (r, c) is value (r%4)*4 + c%4 of patch (r//4, c//4)
        np.testing.assert_allclose(patches[:, 0, r // 4, c // 4, (r % 4) * 4 + c % 4], pixels[:40, r, c], rtol=1e-6)
    audio = np.load(root / "audio" / "train_data.npy")
    mean, std = audio[:40].mean(axis=(0, 2)), audio[:40].std(axis=(0, 2))  # per coefficient, train rows only
    expected = (audio[40:] - mean[None, :, None]) / std[None, :, None]
    np.testing.assert_allclose(dm.split("val").data["audio"].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert dm.spec.modalities["audio"].shape == (20, 36)  # 20 coefficient tokens of 36 frames (the original)
    frames = AVMNISTDataModule(str(root), n_train=40, audio_tokens="frames")
    assert frames.spec.modalities["audio"].shape == (36, 20)
    np.testing.assert_array_equal(dm.split("test").data["y"].numpy(), np.load(root / "test_labels.npy"))
    (root / "audio" / "test_data.npy").unlink()
    with pytest.raises(ConfigError, match="^dataset.root: .*audio/test_data.npy not found.*MultiBench"):
        AVMNISTDataModule(str(root))


# ---- end to end ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*AFFECT, "avmnist"])
def test_every_real_dataset_trains_with_unimodal_and_mmcl(run_inproc, external_data, tmp_path, name):
    extra = ["dataset.n_train=50", "trainer.max_epochs=2"] if name == "avmnist" else []
    unimodal, _ = run_inproc(
        [
            f"dataset={name}",
            "objective=unimodal",
            "metric=task_alignment",
            *SMALL,
            *QUIET,
            *extra,
            f"paths.data_dir={external_data}",
        ],
        tmp_path / "unimodal",
    )
    task = unimodal[unimodal.metric.isin(["accuracy", "sign_accuracy"])]
    assert set(task.split) == {"train", "val", "test"} and task.value.between(0, 1).all()
    pairs = {"image|audio"} if name == "avmnist" else {"vision|audio", "vision|text", "audio|text"}
    assert set(unimodal.dropna(subset=["aggregate"]).modality) == pairs
    mmcl, _ = run_inproc(
        [f"dataset={name}", "objective=mmcl", *SMALL, *QUIET, *extra, f"paths.data_dir={external_data}"],
        tmp_path / "mmcl",
    )
    probe = mmcl[mmcl.probe == "linear"]  # the default metric: linear probes + alignment
    assert set(probe.split) == {"val", "test"} and len(mmcl.dropna(subset=["aggregate"]).modality.unique()) == 1
    assert mmcl[mmcl.metric == "loss"].target.tolist() == ["contrastive"]


def test_the_card_example_trains_with_data_and_fails_in_one_line_without(cli, external_data, tmp_path):
    out = tmp_path / "run"
    res = cli(
        ["dataset=mosei", "objective=mmcl", f"paths.data_dir={external_data}", f"hydra.run.dir={out}", *SMALL, *QUIET]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert {"sign_accuracy", "mae", "pearson"} <= set(results[results.probe == "linear"].metric)
    res = cli(
        [
            "dataset=mosei",
            "objective=mmcl",
            f"paths.data_dir={tmp_path / 'nodata'}",
            f"hydra.run.dir={tmp_path / 'missing'}",
        ]
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    line = [l for l in res.stderr.splitlines() if l.startswith("mmrep: error:")]
    assert len(line) == 1 and f"{tmp_path / 'nodata'}/affect/mosei/mosei_senti_data.pkl" in line[0]
    assert "MultiBench" in line[0] and "'valid'" in line[0] and not (tmp_path / "missing").exists()
    # a malformed file is found when the data are loaded (inside fit): still one line and no run directory
    bad = tmp_path / "bad" / "affect" / "mosei" / "mosei_senti_data.pkl"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a pickle")
    res = cli(
        ["dataset=mosei", "objective=mmcl", f"paths.data_dir={tmp_path / 'bad'}", f"hydra.run.dir={tmp_path / 'r2'}"]
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "mmrep: error: dataset.path:" in res.stderr and "not a readable pickle" in res.stderr
    assert not (tmp_path / "r2").exists()


def test_multibench_experiment_and_table1_analysis(cli, external_data, tmp_path, capsys):
    """A reduced scripts/tune_real.sh sweep (depths 1-2 × seeds 2, 22 on the MOSI fixture) and the
    scripts/evaluate_multiseed.py analysis: plumbing and shapes, not the paper's numbers."""
    from mmrep.analysis import multibench

    sweep = tmp_path / "sweep"
    res = cli(
        [
            "-m",
            "experiment=multibench_alignment",
            "dataset=mosi",
            "pair=vision_text",
            "enc_depth=1,2",
            "seed=2,22",
            "trainer.max_epochs=1",
            "metric.alignment.n=16",
            "metric.alignment.k=5",
            "callbacks.rich_progress_bar=null",
            f"paths.data_dir={external_data}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert multibench.main([str(sweep), "--n", "16"]) == 0
    summary = pd.read_csv(sweep / "multibench_alignment.csv")
    assert set(zip(summary.fixed, summary.varied)) == {("vision", "text"), ("text", "vision")}
    assert set(summary.split) == {"train", "test"} and (summary.n_models == 4).all()
    assert set(summary.performance) == {"sign_accuracy"} and set(summary.metric) == {"unbiased_cka"}
    runs = pd.read_csv(sweep / "multibench_runs.csv")
    assert len(runs) == 2 * 2 * 4 and runs.alignment.between(-1, 1).all() and runs.performance.between(0, 1).all()
    # the best fixed model is the run with the highest validation performance of that modality
    val = {
        str(run): pd.read_csv(sweep / str(run) / "results.csv")
        .query("metric == 'sign_accuracy' and modality == 'text' and split == 'val' and probe != probe")
        .value.iloc[0]
        for run in runs.run.unique()
    }
    best = runs[runs.fixed == "text"].best_fixed_run.unique()
    assert len(best) == 1 and val[str(best[0])] == max(val.values())
    assert "Table 1" in capsys.readouterr().out
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sweep / "0" / ".hydra" / "config.yaml")  # MOSI 0-2's shipped (lr, wd), tune_real.sh
    assert list(cfg.dataset.modalities) == ["vision", "text"] and cfg.objective.param_groups.text.lr == 1e-4


def test_multibench_grid_picks_each_modalitys_best_setting(cli, external_data, tmp_path, capsys):
    from mmrep.analysis import multibench

    sweep = tmp_path / "grid"
    res = cli(
        [
            "-m",
            "experiment=multibench_grid",
            "dataset=sarcasm",
            "pair=audio_text",
            "objective.optimizer.lr=1e-3,1e-5",
            "objective.optimizer.weight_decay=0.0",
            "enc_depth=1,2",
            "trainer.max_epochs=1",
            "callbacks.rich_progress_bar=null",
            f"paths.data_dir={external_data}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert multibench.main(["--tune", str(sweep)]) == 0
    best = pd.read_csv(sweep / "tuned.csv").set_index("modality")
    assert set(best.index) == {"audio", "text"} and (best.n_depths == 2).all()
    rows = []
    for run in sweep.iterdir():
        if (run / "results.csv").exists():
            from omegaconf import OmegaConf

            lr = OmegaConf.load(run / ".hydra" / "config.yaml").objective.optimizer.lr
            df = pd.read_csv(run / "results.csv").query("split == 'val' and metric == 'accuracy'")
            rows += [(m, lr, v) for m, v in zip(df.modality, df.value)]
    means = pd.DataFrame(rows, columns=["modality", "lr", "value"]).groupby(["modality", "lr"]).value.mean()
    for m in ("audio", "text"):
        assert best.loc[m, "score"] == pytest.approx(means[m].max()) and best.loc[m, "lr"] == means[m].idxmax()
    assert "objective.param_groups=" in capsys.readouterr().out


# unimodals/common_models.py: (vision, audio, text) features, CLS; AVMNIST: image 16 × 49 tokens, audio 36, CLS
SPEC_TABLE = {
    "mosei": ((35, 74, 300), False),
    "mosi": ((20, 5, 300), False),
    "sarcasm": ((371, 81, 300), True),
    "humor": ((371, 81, 300), True),
}


@pytest.mark.parametrize("name", [*SPEC_TABLE, "avmnist"])
def test_encoder_defaults_reproduce_the_spec_table(compose, external_data, tmp_path, name):
    from mmrep.pipeline.build import build

    _, model = build(
        compose([f"dataset={name}", "objective=unimodal", f"paths.data_dir={external_data}"], output_dir=tmp_path)
    )
    if name == "avmnist":
        expected = {"image": (16, 49, True), "audio": (36, None, True)}
    else:
        features, cls = SPEC_TABLE[name]
        expected = {m: (f, 50, cls) for m, f in zip(("vision", "audio", "text"), features)}
    for m, (width, positions, cls) in expected.items():
        enc = model.encoders[m]
        assert enc.proj.out_features == width and isinstance(
            enc.out, torch.nn.Identity
        )  # E = n_features, no projection
        assert (enc.cls is not None) == cls and len(enc.layers) == 1
        assert positions is None or enc.pos.shape[1] == positions + int(cls)  # max_seq_length 50 (+ CLS)
        layer = enc.layers[0]
        assert layer.self_attn.num_heads == 1 and layer.linear1.out_features == width and not layer.norm_first
        assert model.heads[m].in_features == width  # head Linear(E, classes | 1)
    outputs = 1 if name in ("mosei", "mosi") else (10 if name == "avmnist" else 2)
    assert all(h.out_features == outputs for h in model.heads.values())
