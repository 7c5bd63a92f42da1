"""debug= overlays, the step-aware progress bar, quiet third-party logging, the config tree and ``--help``."""

import logging
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf, open_dict

from mmrep.callbacks.progress import StepAwareRichProgressBar, train_description
from mmrep.pipeline.console import CONFIG_TREE_FIELDS, print_config_tree, quiet_third_party

DATASETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "dataset").glob("*.yaml"))


# ---- debug= overlays ------------------------------------------------------------------------------------------
def test_debug_default_composes_small(compose, tmp_path):
    cfg = compose(["debug=default"], output_dir=tmp_path)
    assert cfg.task_name == "debug" and list(cfg.logger) == ["csv"]
    assert cfg.trainer.max_steps == 20 and cfg.trainer.limit_train_batches == 10 and cfg.trainer.limit_val_batches == 2
    assert cfg.dataset.batch_size == 64
    probes = cfg.metric.identifiability
    assert (probes.n_fit, probes.n_eval, probes.mlp_max_iter, probes.n_jobs) == (256, 256, 30, 1)
    assert "_target_" in probes  # the default composition's metric, only shrunk
    plain = compose([], output_dir=tmp_path)
    assert plain.task_name == "train" and plain.trainer.max_steps == 5000  # nothing leaks without debug=


@pytest.mark.parametrize("dataset", DATASETS)
def test_debug_default_adds_no_key_a_dataset_lacks(compose, tmp_path, dataset):
    """The overlay only sets keys every dataset's composition has (the datamodule would refuse another)."""
    plain = compose([f"dataset={dataset}"], output_dir=tmp_path)
    debug = compose([f"dataset={dataset}", "debug=default"], output_dir=tmp_path)
    assert set(debug.dataset) == set(plain.dataset)
    assert set(debug.objective) == set(plain.objective) and set(debug.encoders) == set(plain.encoders)
    assert debug.dataset.batch_size == 64 and debug.trainer.max_steps == 20


def test_debug_fdr_composes(compose, tmp_path):
    cfg = compose(["debug=fdr"], output_dir=tmp_path)
    assert cfg.trainer.fast_dev_run is True and cfg.callbacks.model_checkpoint is None and cfg.task_name == "debug"


def _run_dir(log_dir: Path) -> Path:
    runs = list((log_dir / "debug" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_debug_default_runs_in_seconds(cli, tmp_path):
    started = time.perf_counter()
    res = cli(["debug=default", f"paths.log_dir={tmp_path}"])
    elapsed = time.perf_counter() - started
    assert res.returncode == 0, res.stderr[-3000:]
    assert elapsed < 60, f"debug=default took {elapsed:.0f} s"  # ~10 s on 2 shared CPU cores
    run = _run_dir(tmp_path)  # outputs/debug/runs/<date>/
    assert (run / "results.csv").is_file() and (run / "csv" / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "Epoch 1/1" in res.stdout + res.stderr and "/-2" not in res.stdout + res.stderr


def test_debug_fdr_runs_without_checkpoints(run_inproc, tmp_path):
    results, _ = run_inproc(["debug=fdr", "callbacks.rich_progress_bar=null"], tmp_path)
    assert not results.empty and (tmp_path / "results.csv").is_file()
    assert not list(tmp_path.rglob("*.ckpt"))


def test_debug_default_on_rus(run_inproc, tmp_path):
    """Another dataset: only the trainer limits and the batch size apply (data in a scratch folder, fewer samples)."""
    results, _ = run_inproc(
        [
            "debug=default",
            "dataset=rus",
            f"paths.data_dir={tmp_path / 'data'}",
            "dataset.num_data=4096",
            "callbacks.rich_progress_bar=null",
        ],
        tmp_path,
    )
    assert not results.empty and (tmp_path / "checkpoints" / "last.ckpt").is_file()


# ---- progress bar -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        ((4, -1, 80, 300), "Epoch 4 · step  80/300"),  # step-based (max_epochs -1): no bogus "/-2"
        ((4, None, 4080, 5000), "Epoch 4 · step 4080/5000"),
        ((3, 50, 0, -1), "Epoch 3/49"),  # epoch-based: Lightning's label
        ((0, 2, 7, 20), "Epoch 0/1 · step  7/20"),  # both bounds (debug=default)
        ((4, -1, 123, -1), "Epoch 4"),  # unbounded
    ],
)
def test_train_description(args, expected):
    assert train_description(*args) == expected


def test_progress_bar_description_on_a_step_based_trainer():
    bar = StepAwareRichProgressBar()
    trainer = SimpleNamespace(max_epochs=-1, max_steps=5000, global_step=4000, current_epoch=4)
    bar._trainer = trainer  # what Lightning's setup() attaches
    text = bar._get_train_description(4)
    assert text.startswith("Epoch 4 · step 4000/5000") and "/-2" not in text
    assert len(text) >= len(bar.validation_description)  # padded like Lightning's, no flicker
    trainer.max_epochs, trainer.max_steps = 10, -1
    assert bar._get_train_description(3).strip() == "Epoch 3/9"


def test_callbacks_default_selects_the_step_aware_bar(compose, tmp_path):
    cfg = compose([], output_dir=tmp_path)
    assert cfg.callbacks.rich_progress_bar._target_ == "mmrep.callbacks.progress.StepAwareRichProgressBar"


# ---- quiet third-party logging --------------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_quiet_third_party_drops_the_litlogger_tip_only(tmp_path):
    import pytorch_lightning as pl
    from lightning_utilities.core import rank_zero as core

    quiet_third_party()
    quiet_third_party()  # idempotent
    logger = core.log  # the logger Lightning's rank_zero_info writes to
    collect = _Collect()
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        pl.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            accelerator="cpu",
            default_root_dir=tmp_path,
        )
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert not [m for m in collect.messages if "litlogger" in m]
    assert any("GPU available" in m for m in collect.messages)  # Lightning's other messages still print


def test_quiet_third_party_silences_alembic_info():
    quiet_third_party()
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.WARNING)


# ---- config tree ----------------------------------------------------------------------------------------------
def test_print_config_tree_orders_groups_and_saves(compose, tmp_path, capsys):
    cfg = compose([], output_dir=tmp_path)
    path = print_config_tree(cfg)
    assert path == tmp_path / "config_tree.log"
    text = path.read_text()
    heads = [m.group(1) for m in re.finditer(r"^[├└]── (\w+)", text, flags=re.M)]
    assert heads[: len(CONFIG_TREE_FIELDS)] == list(CONFIG_TREE_FIELDS)
    assert {"seed", "task_name", "fit"} <= set(heads[len(CONFIG_TREE_FIELDS) :])  # then the rest
    assert "${" not in text and f"seed: {cfg.seed}" in text  # resolved (dataset.seed: ${seed})
    assert "\x1b[" not in text  # plain text
    assert "CONFIG" in capsys.readouterr().out  # printed on stdout


def test_print_config_tree_switch(compose, tmp_path, capsys):
    cfg = compose([], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.print_config = False
    assert print_config_tree(cfg) is None
    assert not (tmp_path / "config_tree.log").exists() and capsys.readouterr().err == ""
    cfg.print_config = True
    out = tmp_path / "elsewhere"
    assert print_config_tree(cfg, fields=("trainer", "dataset"), output_dir=out) == out / "config_tree.log"
    heads = re.findall(r"^[├└]── (\w+)", (out / "config_tree.log").read_text(), flags=re.M)
    assert heads[:2] == ["trainer", "dataset"]


def test_print_config_tree_shows_unresolvable_values_as_written(tmp_path, capsys):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path), "x": "${hydra:runtime.output_dir}"}, "a": "???"})
    text = print_config_tree(cfg).read_text()
    assert "${hydra:runtime.output_dir}" in text and "a: ???" in text


# ---- --help ---------------------------------------------------------------------------------------------------
def test_help_lists_groups_keys_and_examples(cli):
    res = cli(["--help"])
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    datasets = re.search(r"^dataset: (.*)$", out, flags=re.M)
    assert datasets and {"numeric", "rus"} <= set(datasets.group(1).split(", "))
    assert re.search(r"^debug: default, fdr$", out, flags=re.M)
    for key in (
        "seed",
        "cpu_threads",
        "fit",
        "ckpt_path",
        "ckpt_strict",
        "optimized_metric",
        "compile_encoders",
        "paper_scale",
        "experiment",
        "hparams_search",
        "debug",
    ):
        assert re.search(rf"^{key} ", out, flags=re.M), key
    assert "-m experiment=numeric_selection" in out and "dataset=rus objective=unimodal metric=accuracy" in out
