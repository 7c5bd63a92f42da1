"""MPI3D-complex and Causal3DIdent loaders (crossmodal_mislaignment rendering_data/MPI3D/render_multimodal_mpi3d.py,
main_causal3dident.py), on fixtures in the exact on-disk formats (tests/fixtures.py), checked against per-sample
references written from the spec."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fixtures import MPI3D_GRID, write_causal3dident, write_mpi3d
from mmrep.bias import MisalignmentBias
from mmrep.core.errors import ConfigError
from mmrep.data import mpi3d
from mmrep.data.captions import tokenize
from mmrep.data.causal3dident import Causal3DIdentDataModule, image_path
from mmrep.data.mpi3d import MPI3DComplexDataModule, original_split, render_text

MPI3D_MEAN, MPI3D_STD = [0.00888889, 0.00888889, 0.00830382], [0.08381344, 0.07622504, 0.06356431]
COLUMNS = ["OBJ_COLOR", "OBJ_SHAPE", "OBJ_SIZE", "CAMERA", "BACKGROUND", "H_AXIS", "V_AXIS"]


@pytest.fixture(scope="module")
def mpi3d_root(tmp_path_factory):
    return write_mpi3d(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def c3d_root(tmp_path_factory):
    return write_causal3dident(tmp_path_factory.mktemp("data"))


def _mpi3d(root, setting, **kw):
    return MPI3DComplexDataModule(MisalignmentBias(setting=setting), data_dir=str(root), factor_sizes=MPI3D_GRID, **kw)


def _one_hot_reference(line: str, vocab: dict, length: int) -> np.ndarray:
    ids = [vocab.get(w, vocab["{unk}"]) for w in tokenize(line)] + [vocab["{eos}"]]
    ids += [vocab["{pad}"]] * (length - len(ids))
    return np.eye(len(vocab), dtype=np.float32)[ids]


def test_tokenizer_splits_as_nltk_word_tokenize():
    assert tokenize("From top view, you see a red, large size  beer-cup, in a sea-green background.") == [
        "From",
        "top",
        "view",
        ",",
        "you",
        "see",
        "a",
        "red",
        ",",
        "large",
        "size",
        "beer-cup",
        ",",
        "in",
        "a",
        "sea-green",
        "background",
        ".",
    ]
    # NLTK's quotes, ":" before a letter and "'s" (tests/test_golden_causal3dident.py checks every Causal3DIdent
    # caption)
    assert tokenize('A "tab:blue" teapot on a "xkcd:robin\'s egg" background, perspective: top view.') == [
        "A",
        "``",
        "tab",
        ":",
        "blue",
        "''",
        "teapot",
        "on",
        "a",
        "``",
        "xkcd",
        ":",
        "robin",
        "'s",
        "egg",
        "''",
        "background",
        ",",
        "perspective",
        ":",
        "top",
        "view",
        ".",
    ]


def test_mpi3d_batches_equal_a_per_sample_reference_of_the_files(mpi3d_root):
    dm = _mpi3d(mpi3d_root, "perturbation_2")
    dm.setup()
    with np.load(mpi3d_root / mpi3d.IMAGES) as stored:
        images = stored["images"].reshape(*MPI3D_GRID, 64, 64, 3)  # the original's grid indexing (main_mpi3dreal.py)
    assert isinstance(dm._images, np.memmap)  # an uncompressed npz is memory-mapped, not read whole
    test_rows = pd.read_csv(mpi3d_root / "test" / "image_semantics.csv")
    test_lines = (mpi3d_root / "test" / "text_perturbation_2.txt").read_text().splitlines()
    half = len(test_rows) // 2
    assert (len(dm.split("val")), len(dm.split("test"))) == (half, len(test_rows) - half)  # halved by position
    vocab = json.loads((mpi3d_root / "vocab_perturbation_2.json").read_text())["w2i"]
    for split, offset in (("val", 0), ("test", half)):
        batch = dm.split(split).__getitems__([0, 3, 5])
        for b, i in enumerate([0, 3, 5]):
            row = test_rows.iloc[offset + i]
            pixels = images[tuple(row[COLUMNS])].astype(np.float32) / 255.0
            expected = (pixels.transpose(2, 0, 1) - np.array(MPI3D_MEAN)[:, None, None]) / np.array(MPI3D_STD)[
                :, None, None
            ]
            np.testing.assert_allclose(batch["image"][b].numpy(), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(
                batch["text"][b].numpy(), _one_hot_reference(test_lines[offset + i], vocab, dm.length)
            )
            assert [int(batch["latents"][f][b, 0]) for f in dm.spec.latent_names] == row[COLUMNS].tolist()
    assert dm.factor_roles() == {
        "color": "invariant",
        "shape": "invariant",
        "size": "invariant",
        "camera": "perturbed",
        "background": "perturbed",
        "horizontal": "image-specific",
        "vertical": "image-specific",
    }
    assert dm.spec.encoding_size == 3 and dm.bias_label == "perturbation_2"


def test_compressed_npz_is_read_whole_with_the_same_batches(tmp_path, mpi3d_root):
    root = write_mpi3d(tmp_path, compressed=True)
    a, b = _mpi3d(mpi3d_root, "selection_1"), _mpi3d(root, "selection_1")
    a.setup(), b.setup()
    assert not isinstance(b._images, np.memmap)
    torch.testing.assert_close(a.heldout("probe_eval", 20)[0]["image"], b.heldout("probe_eval", 20)[0]["image"])


def test_vocabulary_in_the_original_json_layout_is_written_after_loading_and_reused(tmp_path):
    root = write_mpi3d(tmp_path)
    dm = _mpi3d(root, "selection_3")
    path = root / "vocab_selection_3.json"
    assert not path.exists()  # nothing is written before the data has loaded
    dm.setup()
    stored = json.loads(path.read_text())
    words = [w for line in (root / "train" / "text_selection_3.txt").read_text().splitlines() for w in tokenize(line)]
    expected = ["{pad}", "{eos}", "{unk}", *dict.fromkeys(words)]  # specials, then training words by first occurrence
    assert list(stored["w2i"]) == expected and stored["i2w"] == {str(i): w for i, w in enumerate(expected)}
    stamp = path.stat().st_mtime_ns
    _mpi3d(root, "selection_3").setup()
    assert path.stat().st_mtime_ns == stamp
    path.write_text('{"w2i": {"a": 0}}')
    with pytest.raises(ConfigError, match=f"^dataset.data_dir: {re.escape(str(path))} is not a vocabulary file"):
        _mpi3d(root, "selection_3")


def test_render_text_is_seeded_uses_the_spec_templates_and_the_original_split(tmp_path, mpi3d_root):
    train, test = original_split(MPI3D_GRID)
    order = np.arange(int(np.prod(MPI3D_GRID)))
    np.random.seed(42), np.random.shuffle(order)  # the original: np.random.seed(42); shuffle; cut at 90 %
    np.testing.assert_array_equal(np.concatenate([train, test]), order)
    assert len(train) == int(0.9 * len(order))
    rows = pd.read_csv(mpi3d_root / "train" / "image_semantics.csv")
    assert list(rows.columns) == COLUMNS
    np.testing.assert_array_equal(rows.to_numpy(), np.stack(np.unravel_index(train, MPI3D_GRID), axis=1))

    render_text(tmp_path / "a", seed=3, grid=MPI3D_GRID)
    render_text(tmp_path / "b", seed=3, grid=MPI3D_GRID)
    render_text(tmp_path / "c", seed=4, grid=MPI3D_GRID)
    same = [
        (tmp_path / "a" / "train" / f).read_text() == (tmp_path / "b" / "train" / f).read_text()
        for f in ("text_selection_2.txt", "text_perturbation_4.txt", "text_semantics_perturbation_4.csv")
    ]
    assert all(same)
    assert (tmp_path / "a/train/text_selection_2.txt").read_text() != (
        tmp_path / "c/train/text_selection_2.txt"
    ).read_text()

    words = {
        "OBJ_COLOR": ("yellow", "green", "olive", "red"),
        "OBJ_SHAPE": ("coffee-cup", "tennis-ball", "croissant", " beer-cup"),
        "OBJ_SIZE": ("small size", "large size"),
        "CAMERA": ("top view", "center view", "bottom view"),
        "BACKGROUND": ("in a purple background", "in a sea-green background", "in a salmon background"),
    }
    selection_1 = ("A {S} that is {C}.", "The {C} {S}.", "An object shaped like a {S}, colored {C}.")
    values = pd.read_csv(tmp_path / "a/train/text_semantics_selection_1.csv")
    assert list(values.columns) == ["OBJ_COLOR", "OBJ_SHAPE"]
    np.testing.assert_array_equal(values.to_numpy(), rows[["OBJ_COLOR", "OBJ_SHAPE"]].to_numpy())  # unperturbed
    lines = (tmp_path / "a/train/text_selection_1.txt").read_text().splitlines()
    used = set()
    for line, (c, s) in zip(lines, values.to_numpy()):
        options = [t.format(C=words["OBJ_COLOR"][c], S=words["OBJ_SHAPE"][s]) for t in selection_1]
        assert line in options
        used.add(options.index(line))
    assert used == {0, 1, 2}

    # perturbation 3 redraws size, camera, background with p = 0.9 from the full support: P(changed) = 0.9 (1 - 1/k)
    perturbed = pd.read_csv(tmp_path / "a/train/text_semantics_perturbation_3.csv")
    assert list(perturbed.columns) == COLUMNS[:5]
    for column, k in (("OBJ_COLOR", None), ("OBJ_SHAPE", None), ("OBJ_SIZE", 2), ("CAMERA", 3), ("BACKGROUND", 3)):
        changed = float((perturbed[column] != rows[column]).mean())
        assert changed == 0.0 if k is None else abs(changed - 0.9 * (1 - 1 / k)) < 0.06, (column, changed)


def command(main, argv, capsys) -> tuple[int, str, str]:
    """A command's ``main(argv)`` in process (argparse exits included): (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_text_command_line(tmp_path, capsys):
    root = write_mpi3d(tmp_path)
    before = (root / "test" / "text_selection_0.txt").read_text()
    code, out, _ = command(
        mpi3d.main, ["render-text", "--root", str(root), "--seed", "0", "--factor-sizes", *map(str, MPI3D_GRID)], capsys
    )
    assert code == 0 and "wrote 40 files" in out
    assert (root / "test" / "text_selection_0.txt").read_text() == before  # write_mpi3d used seed 0 too
    code, _, err = command(mpi3d.main, ["render-text", "--change-prob", "2"], capsys)
    assert code == 2 and "--change-prob: must lie in [0, 1]" in err


def test_missing_or_malformed_mpi3d_files_are_one_line_errors_and_write_nothing(tmp_path, cli):
    root = write_mpi3d(tmp_path)
    (root / mpi3d.IMAGES).unlink()
    result = cli(
        [
            "dataset=mpi3d_complex",
            f"paths.data_dir={tmp_path}",
            f"dataset.factor_sizes=[{','.join(map(str, MPI3D_GRID))}]",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ]
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert (
        f"no such file {root / mpi3d.IMAGES}" in lines[0] and "key 'images' of shape (N, 64, 64, 3) uint8" in lines[0]
    )
    assert "rr-learning/disentanglement_dataset" in lines[0]
    assert not (tmp_path / "run").exists() and not list(root.glob("vocab_*.json"))
    result = cli(
        ["dataset=causal3dident", f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and not (tmp_path / "run").exists(), result.stderr[-2000:]
    assert f"no such file {tmp_path / 'causal3dident' / 'latents_image.csv'}; expected a CSV" in lines[0]
    assert "rendering_data/Causal3DIdent" in lines[0]

    np.savez(root / mpi3d.IMAGES, images=np.zeros((10, 64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"holds 10 images; expected an npz with key 'images' of shape \(1152, 64"):
        _mpi3d(root, "selection_0").setup()
    np.savez(root / mpi3d.IMAGES, images=np.zeros((10, 64, 64), np.float32))
    with pytest.raises(ConfigError, match=r"holds images \(10, 64, 64\) float32; expected"):
        _mpi3d(root, "selection_0")
    (root / mpi3d.IMAGES).write_bytes(b"truncated")
    with pytest.raises(
        ConfigError, match=r"is not an npz with key .images. of shape \(N, 64, 64, 3\) uint8 \(BadZipFile\)"
    ):
        _mpi3d(root, "selection_0")
    np.savez(root / mpi3d.IMAGES, images=np.zeros((1152, 64, 64, 3), np.uint8))
    table = pd.read_csv(root / "train" / "image_semantics.csv")
    table.drop(columns="CAMERA").to_csv(root / "train" / "image_semantics.csv", index=False)
    with pytest.raises(ConfigError, match=r"image_semantics.csv has columns .* lacking \['CAMERA'\]"):
        _mpi3d(root, "selection_0")
    table.iloc[:-1].to_csv(root / "train" / "image_semantics.csv", index=False)
    with pytest.raises(ConfigError, match=r"has 1035 rows but its split has 1036 captions"):
        _mpi3d(root, "selection_0")
    (root / "test" / "text_perturbation_1.txt").unlink()
    with pytest.raises(
        ConfigError, match=r"no such file .*test/text_perturbation_1.txt; expected one caption per line"
    ):
        _mpi3d(root, "perturbation_1")


def test_causal3dident_batches_equal_a_per_sample_reference(c3d_root):
    dm = Causal3DIdentDataModule(MisalignmentBias(setting="perturbations_5"), data_dir=str(c3d_root))
    dm.setup()
    n = 60
    assert (len(dm.split("train")), len(dm.split("val")), len(dm.split("test"))) == (48, 6, 6)  # 80/10/10 by index
    assert image_path(c3d_root, 7, n).name == "07.png" and image_path(c3d_root, 7, 100_000).name == "00007.png"
    latents = pd.read_csv(c3d_root / "latents_image.csv")
    text = pd.read_csv(c3d_root / "latents_text_perturbations_5.csv")
    lines = (c3d_root / "text" / "perturbations_5" / "text_raw.txt").read_text().splitlines()
    vocab = json.loads((c3d_root / "vocab_perturbations_5.json").read_text())["w2i"]
    batch = dm.split("val").__getitems__([0, 4])
    for b, i in enumerate([48, 52]):
        pixels = np.asarray(Image.open(c3d_root / "images" / f"{i:02d}.png").convert("RGB"), np.float32) / 255.0
        mean, std = np.array([0.4327, 0.2689, 0.2839]), np.array([0.1201, 0.1457, 0.1082])
        expected = (pixels.transpose(2, 0, 1) - mean[:, None, None]) / std[:, None, None]
        np.testing.assert_allclose(batch["image"][b].numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batch["text"][b].numpy(), _one_hot_reference(lines[i], vocab, dm.length))
        assert float(batch["latents"]["background_color"][b, 0]) == pytest.approx(latents.background_color[i])
        assert int(batch["latents"]["text_phrasing"][b, 0]) == text.text_phrasing[i]
    roles = dm.factor_roles()
    assert [f for f, r in roles.items() if r == "perturbed"] == [
        "object_ypos",
        "spotlight_pos",
        "object_color",
        "spotlight_color",
        "background_color",
    ]
    assert roles["object_xpos"] == "invariant" and roles["text_phrasing"] == "text-specific"
    assert dm.factor_kinds()["object_color"] == "continuous" and dm.factor_kinds()["object_ypos"] == "discrete"
    assert dm.spec.encoding_size == 3 and dm.spec.modalities["image"].shape == (3, 128, 128)  # original sizes


def test_causal3dident_settings_encoding_sizes_and_errors(c3d_root, tmp_path):
    sizes = [
        Causal3DIdentDataModule(MisalignmentBias(setting=f"selection_{i}"), data_dir=str(c3d_root)).spec.encoding_size
        for i in range(7)
    ]
    assert sizes == [3, 3, 4, 5, 5, 6, 7]
    dm = Causal3DIdentDataModule(MisalignmentBias(theta=["object_shape", "object_xpos"]), data_dir=str(c3d_root))
    assert dm.bias_label == "selection_1"
    with pytest.raises(ConfigError, match=r"^bias: dataset=causal3dident has captions only for the paper's settings"):
        Causal3DIdentDataModule(MisalignmentBias(theta=["object_xpos"]), data_dir=str(c3d_root))
    root = write_causal3dident(tmp_path, n=20, size=16)
    image_path(root, 13, 20).unlink()
    with pytest.raises(ConfigError, match=r"no such file .*images/13.png; expected one RGB PNG per row"):
        Causal3DIdentDataModule(data_dir=str(root))
    image_path(root, 13, 20).write_bytes(b"not a png")
    dm = Causal3DIdentDataModule(data_dir=str(root))
    with pytest.raises(ConfigError, match=r"images/13.png is not a readable image"):
        dm.heldout("train")
    lines = (root / "text" / "selections_6" / "text_raw.txt").read_text().splitlines()
    (root / "text" / "selections_6" / "text_raw.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ConfigError, match=r"text_raw.txt has 19 rows but latents_image.csv has 20"):
        Causal3DIdentDataModule(data_dir=str(root))


@pytest.mark.parametrize("dataset, setting", [("mpi3d_complex", "perturbation_3"), ("causal3dident", "selection_2")])
def test_end_to_end_rows_carry_factor_role_and_setting(run_inproc, tmp_path, dataset, setting):
    data = tmp_path / "data"
    write_mpi3d(data) if dataset == "mpi3d_complex" else write_causal3dident(data)
    results, _ = run_inproc(
        [
            f"dataset={dataset}",
            f"bias.setting={setting}",
            f"paths.data_dir={data}",
            f"dataset.factor_sizes=[{','.join(map(str, MPI3D_GRID))}]" if dataset == "mpi3d_complex" else "seed=0",
            "dataset.batch_size=32",
            "trainer.max_epochs=1",
            "metric.factors.probes=[linear]",
            "callbacks.rich_progress_bar=null",
            "logger=none",
        ],
        tmp_path / "run",
    )
    rows = results[results.metric.isin(["mcc", "r2"])]
    assert set(rows.modality) == {"image", "text"} and set(rows.setting) == {setting}
    roles = rows.drop_duplicates("target").set_index("target").role
    if dataset == "mpi3d_complex":
        assert roles.to_dict() == {
            "color": "invariant",
            "shape": "invariant",
            "size": "perturbed",
            "camera": "perturbed",
            "background": "perturbed",
            "horizontal": "image-specific",
            "vertical": "image-specific",
        }
    else:
        assert roles["object_ypos"] == "invariant" and roles["spotlight_pos"] == "omitted"
        assert set(rows[rows.target == "object_color"].metric) == {"r2"}


def test_perturbation_sweep_tables_beside_the_paper(cli, tmp_path, capsys):
    from mmrep.analysis import factors

    data, sweep = tmp_path / "data", tmp_path / "sweep"
    write_mpi3d(data)
    res = cli(
        [
            "-m",
            "experiment=mpi3d_perturbation",
            "bias.setting=perturbation_1,perturbation_3",
            "seed=0",
            f"paths.data_dir={data}",
            f"dataset.factor_sizes=[{','.join(map(str, MPI3D_GRID))}]",
            "encoder@encoders.image=small_cnn",
            "dataset.num_workers=0",
            "dataset.batch_size=64",
            "trainer.max_steps=3",
            "metric.factors.probes=[linear]",
            "callbacks.rich_progress_bar=null",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert factors.main([str(sweep), "--probe", "linear", "--paper", "mpi3d_complex"]) == 0
    table = pd.read_csv(sweep / "factors.csv")
    assert set(table.setting) == {"perturbation_1", "perturbation_3"}
    text = (sweep / "factors_image_vs_paper.md").read_text()
    assert "perturbation_3" in text and "selection_0" not in text
    size_row = next(line for line in text.splitlines() if line.lstrip("| ").startswith("size "))
    ours = table.set_index(["modality", "factor", "setting"])["mean"]["image", "size", "perturbation_3"]
    assert f"{ours:.2f} (0.00)" in size_row and "(0.87)" in size_row  # paper Fig. 5: size .87 at id 1, .00 at id 3
    assert (sweep / "factors_text_vs_paper.md").is_file() and "ours (linear probe) (paper" in capsys.readouterr().out
    assert factors.main([str(sweep), "--probe", "linear", "--paper", "causal3dident"]) == 1  # not its factors
    assert "is one of the paper's causal3dident settings" in capsys.readouterr().err


def _nearest_color_reference(hue: float, palette_name: str) -> str:
    """The original's loop (rendering_data/Causal3DIdent/generate_latents.py): hsv(h, 1, 1), nearest RGB of the
    palette's RGB → name map, first on ties."""
    import colorsys

    import matplotlib.colors as mcolors

    rgb_to_name = {mcolors.to_rgb(v): k for k, v in getattr(mcolors, palette_name).items()}
    target, best, best_d = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0)), None, np.inf
    for rgb in rgb_to_name:
        d = np.linalg.norm(np.array(rgb) - target)
        if d < best_d:
            best, best_d = rgb, d
    return rgb_to_name[best]


def test_causal3dident_render_text_names_colours_as_the_original_and_perturbs_its_factors(c3d_root):
    from mmrep.data.causal3dident import PALETTES, SHAPES, color_indices, palette

    hues = np.linspace(0, 1, 97)
    for palette_name in PALETTES.values():
        names = palette(palette_name)[0]
        assert [names[i] for i in color_indices(hues, palette_name)] == [
            _nearest_color_reference(h, palette_name) for h in hues
        ]
    latents = pd.read_csv(c3d_root / "latents_image.csv")
    sel = pd.read_csv(c3d_root / "latents_text_selections_4.csv")
    assert list(sel.columns) == [
        "object_shape",
        "object_xpos",
        "object_ypos",
        "spotlight_pos",
        "object_color_name",
        "object_color_index",
        "text_phrasing",
    ]
    assert list(sel.object_color_name) == [_nearest_color_reference(h, "TABLEAU_COLORS") for h in latents.object_color]
    lines = (c3d_root / "text" / "selections_4" / "text_raw.txt").read_text().splitlines()
    for line, row in zip(lines, sel.itertuples()):  # the original's wording: tests/test_golden_causal3dident.py
        assert f'"{row.object_color_name}"' in line and SHAPES[row.object_shape] in line
    assert (
        pd.read_csv(c3d_root / "latents_text_selections_0.csv").text_phrasing == sel.text_phrasing
    ).all()  # drawn once
    pert = pd.read_csv(c3d_root / "latents_text_perturbations_5.csv")
    assert (pert.object_xpos == latents.object_xpos).all() and (pert.object_shape == latents.object_shape).all()
    assert (pert.spotlight_pos != latents.spotlight_pos).all()  # redrawn with probability 1 (generate_latents.py)
    unperturbed = pd.read_csv(c3d_root / "latents_text_perturbations_0.csv")
    expected = [_nearest_color_reference(h, "XKCD_COLORS") for h in latents.background_color]
    # the background hue, not the object's (the original's generate_latents.py wrote the object hue here)
    assert list(unperturbed.background_color_name) == expected


def test_causal3dident_render_text_command_line_is_seeded(c3d_root, tmp_path, capsys):
    import shutil

    from mmrep.data import causal3dident

    copy = tmp_path / "c3d"
    shutil.copytree(c3d_root, copy, ignore=shutil.ignore_patterns("images", "vocab_*"))
    code, out, _ = command(causal3dident.main, ["render-text", "--root", str(copy), "--seed", "0"], capsys)
    assert code == 0 and "wrote 28 files" in out
    for name in ("text/perturbations_3/text_raw.txt", "latents_text_selections_6.csv"):
        assert (copy / name).read_text() == (c3d_root / name).read_text()  # the fixture used seed 0 too
    code, _, err = command(causal3dident.main, ["render-text", "--root", str(tmp_path / "none")], capsys)
    assert code == 2 and "no such file" in err and "latents_image.csv" in err
