"""What the loggers receive: W&B tags from the chosen group options, a results table and summary values;
TensorBoard scalars of the results (logger=tensorboard)."""

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from mmrep.core.configs import CONF_DIR
from mmrep.pipeline import resolvers  # noqa: F401  (registers the configs' resolvers)
from mmrep.pipeline.loggers import choice_tags, log_results, result_key


def test_wandb_tags_are_the_chosen_group_options():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=["dataset=rus", "objective=unimodal", "metric=accuracy"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    try:
        tags = choice_tags()
    finally:
        HydraConfig.instance().cfg = None
    assert {"dataset=rus", "objective=unimodal", "metric=accuracy", "bias=none", "trainer=default"} <= set(tags)
    assert not [t for t in tags if t.startswith("hydra") or "@" in t]


def test_results_go_to_a_table_and_one_summary_value_per_row():
    class FakeWandb:
        def __init__(self):
            self.tables, self.experiment = {}, type("Run", (), {"summary": {}})()

        def log_table(self, key, dataframe):
            self.tables[key] = dataframe

    rows = pd.DataFrame(
        [
            {"metric": "r2", "probe": "mlp", "modality": "x", "target": "s_inv", "value": 0.9, "split": "probe_eval"},
            {
                "metric": "mutual_knn",
                "probe": None,
                "modality": "x0|x1",
                "target": None,
                "value": 0.4,
                "aggregate": "max",
                "split": "align",
            },
        ]
    )
    logger = FakeWandb()
    log_results([logger], rows)
    assert logger.tables["results"].shape == rows.shape
    assert logger.experiment.summary == {
        "results/r2/mlp/x/s_inv/probe_eval": 0.9,
        "results/mutual_knn/x0|x1/max/align": 0.4,
    }
    assert result_key(rows.iloc[0]) == "r2/mlp/x/s_inv/probe_eval"


def test_tensorboard_logger_writes_curves_and_results(run_inproc, tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_inproc([*tiny, "logger=tensorboard", "callbacks.rich_progress_bar=null"], tmp_path / "run")
    files = sorted((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    tags = {tag for f in files for tag in EventAccumulator(str(f)).Reload().Tags()["scalars"]}
    assert "val/loss" in tags and "results/r2/linear/x/s_inv/probe_eval" in tags  # curves and final results
