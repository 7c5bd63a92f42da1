"""Every option of every config group, and every experiment and hparams_search overlay, composes and builds.

In process (Hydra's compose API): a broken recipe fails here in seconds instead of in a user's sweep."""

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mmrep.core.configs import CONF_DIR
from mmrep.core.errors import ConfigError
from mmrep.pipeline import resolvers  # noqa: F401  (registers the configs' resolvers)
from mmrep.pipeline.build import build, instantiate, instantiate_group

CONF = Path(CONF_DIR)
# how an option of each group is selected, and the base overrides it needs to make sense
SELECT = {
    "encoder": "encoder@encoders.x={}",
    "optimizer": "optimizer@objective.optimizer={}",
    "scheduler": "scheduler@objective.scheduler={}",
}
VL = [
    "dataset=caption_uniqueness",
    "encoders.text.model=${paths.data_dir}/models/tiny_lm",  # the fixture's models
    "encoders.image.model=${paths.data_dir}/models/tiny_vit",
]
NEEDS = {
    ("objective", "unimodal"): ["dataset=rus"],
    ("objective", "mmcl_supervised"): ["dataset=rus"],  # needs labels
    ("paper_scale", "image_text"): ["dataset=shapes_text"],
    ("dataset", "caption_uniqueness"): VL,
    ("encoder", "hf_lm"): VL,
    ("encoder", "hf_vit"): VL,
    ("metric", "vl_alignment"): VL,
    ("experiment", "vl_uniqueness"): VL[1:],
}
# encoders for images and token sequences are tried on the toy dataset's modality of that kind
ENCODER_ON = {"resnet18": "image", "small_cnn": "image", "text_cnn2d": "tokens"}


def _options():
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir()):
        if group == "hydra":
            continue
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            yield group, option


@pytest.mark.parametrize("group, option", list(_options()))
def test_every_option_composes_and_builds(compose, group, option, tmp_path, external_data):
    override = SELECT.get(group, group + "={}").format(option)
    needs = NEEDS.get((group, option), [])
    if (group, option) in NEEDS and group == "encoder":
        override = ""  # the dataset's own choice is this encoder
    elif group == "encoder" and option in ENCODER_ON:
        override, needs = f"encoder@encoders.{ENCODER_ON[option]}={option}", ["dataset=toy"]
    cfg = compose([o for o in (override, *needs) if o] + [f"paths.data_dir={external_data}"], output_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    datamodule, model = build(cfg)
    assert set(model.encoders) <= set(datamodule.spec.modalities) and len(model.encoders) >= 1
    for encoder in model.encoders.values():
        assert sum(p.numel() for p in encoder.parameters()) > 0
    assert set(instantiate_group(cfg.metric)) == set(cfg.metric)
    assert set(instantiate_group(cfg.callbacks)) == set(k for k, v in cfg.callbacks.items() if v is not None)
    assert set(instantiate_group(cfg.logger)) == set(cfg.logger)
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        instantiate(cfg.trainer)


def test_dataset_defaults_pick_encoders_bias_metric_and_trainer(compose):
    numeric = compose([])
    assert set(numeric.encoders) == {"x", "t"} and numeric.bias.name == "selection_perturbation"
    assert list(numeric.metric) == ["identifiability"] and numeric.trainer.max_steps == 5000
    rus = compose(["dataset=rus"])
    assert set(rus.encoders) == {"x0", "x1"} and rus.encoders.x1.width == 12 and rus.bias.name == "none"
    assert rus.trainer.max_epochs == 50 and rus.trainer.max_steps == -1 and rus.trainer.gradient_clip_val is None
    toy = compose(["dataset=toy"])
    assert toy.encoders.tokens._target_.endswith("Transformer") and toy.encoders.image._target_.endswith("MLP")
    # one modality's encoder on the command line; choices and values win over the dataset's defaults
    cfg = compose(
        [
            "dataset=toy",
            "encoder@encoders.vector=transformer",
            "encoders.image.hidden=[8]",
            "bias=none",
            "trainer.max_epochs=3",
        ]
    )
    assert cfg.encoders.vector._target_.endswith("Transformer") and list(cfg.encoders.image.hidden) == [8]
    assert cfg.trainer.max_epochs == 3
    # an experiment overlay sets one modality's depth; the sweep is a plain override
    exp = compose(["experiment=rus_alignment_small"])
    assert exp.encoders.x0.depth == 1 and exp.objective.param_groups.x0.lr == 5e-3
    sweep = compose(["experiment=rus_alignment_small", "encoders.x1.depth=3"])
    assert sweep.encoders.x1.depth == 3 and sweep.encoders.x0.depth == 1


@pytest.mark.parametrize(
    "overlay", [f"{g}={p.stem}" for g in ("experiment", "hparams_search") for p in sorted((CONF / g).glob("*.yaml"))]
)
def test_sweep_parameters_name_existing_keys(overlay):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[overlay], return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    assert params, f"{overlay} sweeps nothing"
    for key in params:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{overlay}: sweeps unknown key {key}"


def _readme_commands() -> list[list[str]]:
    """The override lists of every ``mmrep train`` / ``python -m mmrep.train`` command in the README and the docs
    pages (sweep lists → first value); the guides' commands use their own configs and run in tests/test_docs.py."""
    import re
    import shlex

    pages = [CONF.parent / "README.md", *sorted((CONF.parent / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages).replace("\\\n", " ")
    commands = []
    for match in re.finditer(r"(?:python -m mmrep\.train|mmrep train)([^`\n]*)", text):
        if "--config-dir" in match.group(1):
            continue
        args = shlex.split(match.group(1).split("#")[0])
        overrides = []
        for arg in args:
            if arg in ("-m", "--cfg", "job") or "=" not in arg:
                continue
            key, value = arg.split("=", 1)
            value = re.sub(r"<[^>]+>", "placeholder", value)  # <date>, <run>
            sweep = re.fullmatch(r"(?:range|choice)\(([^,)]+)[,)].*", value)  # range(1,11), choice(a,b)
            if sweep:
                value = sweep.group(1).strip()
            elif "," in value and not value.startswith(("[", "{", "'", '"')) and "(" not in value:
                value = value.split(",")[0]  # a sweep list: compose its first value
            overrides.append(f"{key}={value}")
        if overrides not in commands:  # pages repeat commands: compose each once
            commands.append(overrides)
    return commands


def test_every_readme_command_composes_and_builds(compose, tmp_path, external_data):
    commands = _readme_commands()
    assert len(commands) >= 25
    built = set()
    for overrides in commands:
        cfg = compose([*overrides, f"paths.data_dir={external_data}"], output_dir=tmp_path)
        # what build() reads: a command that differs from an earlier one elsewhere (trainer, metric, seed…) only
        # composes; it builds the same modules
        defining = OmegaConf.to_yaml({k: cfg.get(k) for k in ("dataset", "bias", "encoders", "objective")})
        if defining in built:
            continue
        built.add(defining)
        try:
            build(cfg)
        except ConfigError as err:  # pretrained models are not on this machine: that error, and only that one
            assert re.search(r"^encoders\.\w+\.model: '[\w./-]+' has no local (model|tokenizer) files", str(err)), err


# Every objective takes a few training steps on a dataset it fits. A new conf/objective/<name>.yaml fails
# test_every_objective_trains_a_few_steps until it is listed here: objective → the datasets it trains on.
PAIRED = ["numeric", "rus", "mosi", "shapes_text"]  # a dataset of each family: numeric, RUS, MultiBench, image–text
LABELLED = ["rus", "mosi", "toy"]
TRAIN_ON = {
    "frozen": ["toy"],  # nothing to train: fitting is refused with one line
    "mmcl": PAIRED,
    "unimodal": ["rus", "toy"],
    "clip": PAIRED,
    "siglip": PAIRED,
    "vicreg": PAIRED,
    "barlow_twins": PAIRED,
    "mmcl_supervised": LABELLED,  # needs labels (numeric and shapes_text have none: refused with one line)
}
NOTHING_TO_TRAIN = {"frozen"}
# each dataset small enough for a case of about a second
SMALL = {
    "numeric": [
        "dataset.batch_size=16",
        "dataset.n_val=32",
        "dataset.n_cond_samples=2000",
        "dataset.steps_per_epoch=3",
        "encoders.x.hidden=[8]",
        "encoders.t.hidden=[8]",
    ],
    "rus": ["dataset.num_data=300", "dataset.batch_size=16"],
    "toy": ["dataset.num_samples=120", "dataset.batch_size=16", "encoders.tokens.depth=1"],
    "mosi": ["dataset.batch_size=16"],  # the fixture's MultiBench pickle (tests/fixtures.py)
    "shapes_text": ["dataset.num_samples=120", "dataset.batch_size=16"],
}


def _objective_cases():
    for objective in sorted(p.stem for p in (CONF / "objective").glob("*.yaml")):
        for dataset in TRAIN_ON.get(objective, [None]):
            yield objective, dataset


@pytest.mark.parametrize("objective, dataset", list(_objective_cases()))
def test_every_objective_trains_a_few_steps(compose, external_data, tmp_path, objective, dataset):
    """Three optimiser steps of the shipped config on a small dataset: a finite loss, parameters that moved."""
    import warnings

    import pytorch_lightning as pl

    if dataset is None:
        pytest.fail(
            f"conf/objective/{objective}.yaml has no dataset to train on: add it to TRAIN_ON in tests/test_compose.py"
        )
    cfg = compose(
        [
            f"objective={objective}",
            f"dataset={dataset}",
            *SMALL[dataset],
            f"paths.data_dir={external_data if dataset == 'mosi' else tmp_path}",
        ],
        output_dir=tmp_path,
    )
    datamodule, model = build(cfg)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    if objective in NOTHING_TO_TRAIN:
        with pytest.raises(ConfigError, match=f"^objective={objective}: nothing to train"):
            trainer.fit(model, datamodule=datamodule)
        return
    if hasattr(model, "check_data"):
        model.check_data(datamodule, trainer.world_size)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few batches, no workers: Lightning's advice
        trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 3
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss), f"objective={objective} dataset={dataset}: loss {loss}"
    moved = [name for name, p in model.named_parameters() if name in before and not torch.equal(p, before[name])]
    assert moved, f"objective={objective} dataset={dataset}: no parameter changed in 3 steps"
