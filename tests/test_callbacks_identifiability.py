"""callbacks=identifiability: the paper's identifiability probes during training, as curves and a history table."""

import pandas as pd


def test_numeric_run_logs_probe_curves_and_writes_the_history(run_inproc, tiny, tmp_path):
    results, _ = run_inproc(
        [
            "callbacks=identifiability",
            "callbacks.identifiability.n_fit=256",
            "callbacks.identifiability.n_eval=256",
            "callbacks.rich_progress_bar=null",
            *tiny,
        ],
        tmp_path / "run",
    )
    history = pd.read_csv(tmp_path / "run" / "identifiability_history.csv")
    assert sorted(history.epoch.unique()) == [0, 1] and sorted(history.step.unique()) == [20, 40]  # 40 steps, 20/epoch
    assert (
        set(history.modality) == {"x", "t"}
        and {"s_inv", "m_x"} <= set(history.target)
        and set(history.probe) == {"linear"}
    )
    last = history[history.epoch == 1].set_index(["modality", "target"]).value
    final = results[(results.metric == "r2") & (results.probe == "linear")].set_index(["modality", "target"]).value
    assert (last - final.reindex(last.index)).abs().max() < 0.05  # the last check saw (almost) the final model
    curves = pd.read_csv(next((tmp_path / "run").rglob("metrics.csv")))
    assert "probe/x/s_inv" in curves.columns and curves["probe/x/s_inv"].notna().sum() == 2


def test_without_latents_the_callback_says_so(cli, tmp_path):
    res = cli(
        [
            "dataset=toy",
            "objective=unimodal",
            "metric=task",
            "callbacks=identifiability",
            "trainer.max_epochs=1",
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ]
    )
    assert res.returncode == 1
    assert "callbacks.identifiability: dataset ToyDataModule has no latents or factors to probe" in res.stderr
