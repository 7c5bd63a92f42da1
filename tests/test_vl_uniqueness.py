"""The vision–language uniqueness experiment (arXiv:2502.16282; platonic-rep-unique) on generated data and tiny
randomly initialised models saved as local folders (tests/fixtures.py): data layout, frozen extractors against direct
references, bits per byte, the feature cache, the alignment settings, offline errors and the sweep + analysis end to
end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fixtures import write_caption_uniqueness, write_tiny_lm, write_tiny_vit
from mmrep.core.contract import ModalitySpec, decode_texts, encode_texts
from mmrep.core.errors import ConfigError
from mmrep.data.caption_uniqueness import CaptionUniquenessDataModule, read_variants
from mmrep.encoders.hf import HFCausalLM, HFVisionTransformer
from mmrep.metrics.alignment import mutual_knn, remove_outliers


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    root = tmp_path_factory.mktemp("vl")
    return {
        "data": write_caption_uniqueness(root),
        "lm": write_tiny_lm(root / "lm"),
        "vit": write_tiny_vit(root / "vit"),
        "root": root,
    }


def _dm(vl, uniqueness=30, **kw):
    return CaptionUniquenessDataModule(
        str(vl["data"] / "data.json"), uniqueness, images=str(vl["data"] / "images"), image_size=32, **kw
    )


def test_variants_pick_the_u_percent_caption_in_file_order(vl, tmp_path):
    entries = json.loads((vl["data"] / "data.json").read_text())
    indices, captions = read_variants(vl["data"] / "data.json", 100)
    assert indices == list(range(24)) and captions[5] == entries[5]["Index - 5"]["sentences"]["Caption 10 - 100%"]
    assert read_variants(vl["data"] / "data.json", 10)[1][0] == entries[0]["Index - 0"]["sentences"]["Caption 1 - 10%"]
    assert read_variants(vl["data"] / "data.json", 0)[1][0] == entries[0]["Index - 0"]["sentences"]["Caption 0 - 0%"]
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps([{"Index - 0": {"sentences": {"Caption 0 - 0%": "x"}}}]))
    with pytest.raises(
        ConfigError, match=r"^dataset.data_json: .* entry 0 has no 'Index - i' key with a non-empty 'Caption k - 40%'"
    ):
        read_variants(bad, 40)
    with pytest.raises(ConfigError, match=r"^dataset.data_json: no such file .*nothing.json; expected a JSON list"):
        read_variants(tmp_path / "nothing.json", 40)
    with pytest.raises(ConfigError, match=r"^dataset.uniqueness: one of \[0, 10, .*100\]"):
        _dm(vl, uniqueness=35)


def test_dataset_images_texts_and_the_hf_save_to_disk_source(vl, tmp_path):
    dm = _dm(vl)
    dm.setup()
    batch = dm.heldout("align")[0]
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (24, 3, 32, 32)
    with Image.open(vl["data"] / "images" / "7.png") as image:
        reference = np.asarray(
            image.convert("RGB").resize(
                (round(image.width * 32 / min(image.size)), round(image.height * 32 / min(image.size))), Image.BICUBIC
            )
        )
    h, w = reference.shape[:2]
    crop = reference[(h - 32) // 2 : (h - 32) // 2 + 32, (w - 32) // 2 : (w - 32) // 2 + 32]
    np.testing.assert_array_equal(batch["image"][7].numpy(), crop.transpose(2, 0, 1))
    assert decode_texts(batch["text"]) == read_variants(vl["data"] / "data.json", 30)[1]
    datasets = pytest.importorskip("datasets")
    images = [Image.open(vl["data"] / "images" / f"{i}.png").convert("RGB") for i in range(24)]
    datasets.Dataset.from_dict({"image": images}).save_to_disk(str(tmp_path / "prh"))
    hf = CaptionUniquenessDataModule(str(vl["data"] / "data.json"), 30, hf_dataset=str(tmp_path / "prh"), image_size=32)
    torch.testing.assert_close(hf.heldout("align")[0]["image"], batch["image"])
    missing = CaptionUniquenessDataModule(
        str(vl["data"] / "data.json"),
        30,
        hf_dataset="nobody/no-such-set",
        hf_cache_dir=str(tmp_path / "cache"),
        image_size=32,
    )
    with pytest.raises(ConfigError, match=r"^dataset.hf_dataset: 'nobody/no-such-set' .* is not available offline"):
        missing.setup()


def test_language_model_features_and_bits_per_byte_equal_direct_references(vl):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["a red dog on the beach .", "the cat .", "a big old car at night on the street ."]
    x = encode_texts(texts)
    spec = ModalitySpec((x["x"].shape[1],), "text", masked=True)
    encoder = HFCausalLM(spec, 1, str(vl["lm"]), dtype="float32")
    layers = encoder.layer_features(x)
    assert list(layers) == ["hidden0", "hidden1", "hidden2"]  # embedding output + 2 blocks (platonic-rep-unique: L + 1)
    model = AutoModelForCausalLM.from_pretrained(str(vl["lm"])).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(vl["lm"]))
    longest = tokenizer(texts[2], return_tensors="pt")["input_ids"]  # the longest text is never padded
    with torch.no_grad():
        out = model(longest, output_hidden_states=True)
    for i, h in enumerate(out.hidden_states):
        torch.testing.assert_close(layers[f"hidden{i}"][2], h[0].mean(0), rtol=1e-4, atol=1e-5)
    ids = encoder.tokenizer(texts, padding="longest")["input_ids"]
    assert ids[1][0] == tokenizer.eos_token_id and ids[1][-1] != tokenizer.eos_token_id  # left padding with eos
    bpb = encoder.bits_per_byte(x)
    nats = torch.nn.functional.cross_entropy(out.logits[0, :-1], longest[0, 1:], reduction="sum")
    assert float(bpb[2]) == pytest.approx(float(nats) * math.log2(math.e) / len(texts[2].encode()), rel=1e-4)


def test_vision_features_are_the_cls_token_of_every_block(vl):
    from transformers import AutoImageProcessor, AutoModel

    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    encoder = HFVisionTransformer(ModalitySpec((3, 40, 40), "image"), 1, str(vl["vit"]), dtype="float32", batch_size=2)
    layers = encoder.layer_features(images)
    assert list(layers) == ["block1", "block2"]
    processor, model = AutoImageProcessor.from_pretrained(str(vl["vit"])), AutoModel.from_pretrained(str(vl["vit"]))
    pixels = processor(images=[im.numpy() for im in images], return_tensors="pt", input_data_format="channels_first")
    with torch.no_grad():
        hidden = model(**pixels, output_hidden_states=True).hidden_states
    for i in (1, 2):
        torch.testing.assert_close(layers[f"block{i}"], hidden[i][:, 0], rtol=1e-4, atol=1e-5)


def test_feature_cache_is_keyed_by_the_inputs_and_skips_the_model(vl, tmp_path, monkeypatch):
    spec = ModalitySpec((3, 32, 32), "image")
    encoder = HFVisionTransformer(spec, 1, str(vl["vit"]), dtype="float32", feature_cache=str(tmp_path))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    first = encoder.layer_features(images)
    assert len(list(tmp_path.glob("*_cls_*.pt"))) == 1
    monkeypatch.setattr(encoder.vit, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model ran")))
    cached = encoder.layer_features(images)  # same inputs: read from disk, the model does not run
    torch.testing.assert_close(cached["block2"], first["block2"])
    with pytest.raises(AssertionError, match="model ran"):
        encoder.layer_features(images.flip(0))  # other inputs (another U, other images): another key


def test_vl_alignment_is_mutual_knn_max_over_layer_pairs_with_all_layers_and_one_clamp_per_model(vl, tmp_path):
    from mmrep.metrics.alignment_metric import Alignment
    from mmrep.objectives.frozen import FrozenEncoders

    dm = _dm(vl)
    dm.setup()
    factories = {
        "text": lambda s, d: HFCausalLM(s, d, str(vl["lm"]), dtype="float32"),
        "image": lambda s, d: HFVisionTransformer(s, d, str(vl["vit"]), dtype="float32"),
    }
    model = FrozenEncoders(dm.spec, factories, encoding_size=1)
    metric = Alignment(
        metrics=["mutual_knn"],
        k=10,
        q=0.95,
        exact_quantile=False,
        n=24,
        pairs=[["image", "text"]],
        concat_layers=True,
        clamp="encoder",
        per_layer=False,
    )
    rows = metric(model, dm)
    batch = dm.heldout("align")[0]

    def reference_layers(encoder, x):  # the platonic code: stack [N, L, D], clamp once, layer -1 = all flattened
        stacked = torch.stack(list(encoder.layer_features(x).values()), dim=1)
        clamped = remove_outliers(stacked.flatten(1), 0.95, exact=False).view_as(stacked)
        return [clamped.flatten(1), *clamped.unbind(1)]

    a, b = (
        reference_layers(model.encoders["image"], batch["image"]),
        reference_layers(model.encoders["text"], batch["text"]),
    )
    best = max([0.0] + [mutual_knn(x, y, k=10) for x in a for y in b])
    got = rows[(rows.metric == "mutual_knn") & (rows["aggregate"] == "max")]
    assert float(got.value.iloc[0]) == pytest.approx(best, abs=1e-6)


def test_missing_model_is_one_line_naming_it_and_how_to_get_it(vl, cli, tmp_path):
    result = cli(
        [
            "dataset=caption_uniqueness",
            f"paths.data_dir={vl['data'].parent}",
            f"dataset.images={vl['data'] / 'images'}",
            "encoders.text.model=huggyllama/llama-7b",
            f"encoders.image.model={vl['vit']}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ],
        env_extra={"HF_HOME": str(tmp_path / "hf")},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and not (tmp_path / "run").exists(), result.stderr[-2000:]
    assert lines[-1].startswith("mmrep: error: encoders.text.model: 'huggyllama/llama-7b' has no local model files")
    assert "huggingface-cli download huggyllama/llama-7b" in lines[-1] and "local_files_only" in lines[-1]


def test_uniqueness_sweep_and_analysis_end_to_end(vl, cli, tmp_path, capsys):
    from mmrep.analysis import vl_uniqueness

    lm2 = write_tiny_lm(tmp_path / "lm2")  # a second (differently initialised) LM
    sweep = tmp_path / "sweep"
    res = cli(
        [
            "-m",
            "experiment=vl_uniqueness",
            "dataset.uniqueness=0,50,100",
            f"encoders.text.model={vl['lm']},{lm2}",
            f"encoders.image.model={vl['vit']}",
            f"paths.data_dir={vl['root']}",
            f"dataset.images={vl['data'] / 'images'}",
            "dataset.image_size=32",
            "metric.alignment.n=24",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((vl["root"] / "features").glob("*_cls_*.pt"))) == 1  # the vision model ran once for all U
    assert vl_uniqueness.main([str(sweep)]) == 0
    runs = pd.read_csv(sweep / "vl_runs.csv")
    assert len(runs) == 6 and set(runs.uniqueness) == {0, 50, 100} and runs.alignment.between(0, 1).all()
    assert (runs.lm_performance < 0).all() and set(runs.family) == {"other"}
    rho = pd.read_csv(sweep / "vl_rho_uniqueness.csv")
    assert rho["models"].tolist() == [1] and -1 <= rho["mean"].iloc[0] <= 1
    trend = pd.read_csv(sweep / "vl_performance.csv")
    assert set(trend.uniqueness) == {0, 50, 100} and {"rho", "slope"} <= set(trend.columns)
    assert "Spearman ρ(U, alignment)" in capsys.readouterr().out
    assert (sweep / "vl_alignment_vs_U.png").stat().st_size > 0 and (
        sweep / "vl_alignment_vs_performance.png"
    ).is_file()


def test_vision_families_follow_the_spec_groups():
    from mmrep.analysis.vl_uniqueness import vision_family

    assert [
        vision_family(n)
        for n in (
            "facebook/dinov2-base",
            "facebook/vit-mae-huge",
            "google/vit-base-patch16-224-in21k",
            "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
            "vit_base_patch16_clip_224.laion2b_ft_in12k",
        )
    ] == ["DINOv2", "MAE", "ImageNet-21k", "CLIP", "CLIP (IN-12k fine-tuned)"]
