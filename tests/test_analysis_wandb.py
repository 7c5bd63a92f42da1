"""``--wandb`` on the analysis commands: the tables and figures an analysis writes become one W&B run of
``job_type="analysis"`` in the group of the sweep's runs (offline here: no network, no API key)."""

import json
import struct

import pandas as pd
import pytest
import wandb

from mmrep.analysis import numeric
from mmrep.analysis.publish import publish_to_wandb, sweep_group
from test_analysis_numeric import _run

SWEEP_NAME = "2024-01-01_00-00-00"


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No credentials, W&B's own folders under tmp_path."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def _numeric_sweep(root, **config):
    """A two-job numeric multirun ``<root>/numeric_selection/multiruns/<date>/{0,1}`` (task numeric_selection)."""
    sweep = root / "numeric_selection" / "multiruns" / SWEEP_NAME
    for job, theta in enumerate((967, 55)):
        _run(sweep, str(job), theta=theta, seed=0, config={"task_name": "numeric_selection", **config})
    return sweep


def _records(path):
    """The protobuf records of a ``run-*.wandb`` file: a 7-byte W&B header, then LevelDB-log chunks in 32 KiB
    blocks."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunk, records = path.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def test_numeric_wandb_logs_table_and_heatmap_offline_in_the_sweep_group(tmp_path, monkeypatch, capsys, wandb_env):
    sweep = _numeric_sweep(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")

    assert numeric.main([str(sweep), "--wandb"]) == 0
    (run_dir,) = sorted((sweep / "wandb").glob("offline-run-*"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"logged to W&B: numeric_selection/{SWEEP_NAME} ({run_dir})"
    assert (sweep / "identification.csv").exists() and (sweep / "identification_x_mlp.png").exists()

    (image,) = (run_dir / "files" / "media" / "images").rglob("identification_x_mlp*.png")
    assert image.stat().st_size > 10_000
    (table,) = (run_dir / "files" / "media" / "table").rglob("identification*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == list(pd.read_csv(sweep / "identification.csv").columns)
    assert len(content["data"]) == 2 * 12 and content["data"][0][3] is None  # std of one seed: NaN → empty

    records = _records(next(run_dir.glob("run-*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.job_type, run.display_name, list(run.tags), run.project) == (
        f"numeric_selection/{SWEEP_NAME}",
        "analysis",
        "analysis:numeric",
        ["analysis=numeric"],
        "mmrep",
    )
    logged = {
        "/".join((item.key or "/".join(item.nested_key)).split("/")[:2])
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }
    assert {"tables/identification", "figures/identification_x_mlp"} <= logged


def test_sweep_group_is_the_group_the_runs_used(tmp_path):
    sweep = _numeric_sweep(tmp_path)
    assert sweep_group(sweep) == f"numeric_selection/{SWEEP_NAME}"
    assert sweep_group(sweep / "0") == "numeric_selection"  # a single run: its task
    _run(tmp_path / "plain", "run", theta=967, seed=0)  # no task_name in the config: train's default
    assert sweep_group(tmp_path / "plain" / "run") == "train"
    grouped = _numeric_sweep(tmp_path / "explicit", **{"logger.wandb.group": "my-group"})
    assert sweep_group(grouped) == "my-group"  # logger.wandb.group=... on the command line
    with pytest.raises(FileNotFoundError):
        sweep_group(tmp_path / "empty")


class _FakeRun:
    disabled = offline = False
    url = "https://wandb.ai/me/proj/runs/x"

    def __init__(self, kwargs, tmp):
        self.kwargs, self.dir, self.logged = kwargs, str(tmp / "run-x" / "files"), {}

    def log(self, data):
        self.logged.update(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_project_tags_and_auto_offline_are_passed_to_wandb_init(tmp_path, monkeypatch, wandb_env):
    sweep = _numeric_sweep(tmp_path, **{"logger.wandb.project": "my-project"})
    runs = []

    def fake_init(**kwargs):
        runs.append(_FakeRun(kwargs, tmp_path))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setattr(wandb, "Image", lambda path: ("image", path))
    monkeypatch.setattr(wandb, "Table", lambda dataframe: dataframe)
    frame = pd.DataFrame({"setting": [(0, 1), (2,)], "value": [0.5, float("nan")]})
    figure = tmp_path / "fig.png"
    assert publish_to_wandb(sweep, {"t": frame}, [figure], "numeric") == tmp_path / "run-x"
    (run,) = runs
    assert {k: run.kwargs[k] for k in ("project", "group", "job_type", "name", "tags", "mode", "dir")} == {
        "project": "my-project",
        "group": f"numeric_selection/{SWEEP_NAME}",
        "job_type": "analysis",
        "name": "analysis:numeric",
        "tags": ["analysis=numeric"],
        "mode": "offline",
        "dir": str(sweep),
    }
    assert run.logged["figures/fig"] == ("image", str(figure))
    assert run.logged["tables/t"].to_dict("list") == {"setting": ["(0, 1)", "(2,)"], "value": [0.5, None]}

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key: not forced offline ("auto" as for training runs)
    publish_to_wandb(sweep, {}, [], "numeric")
    assert runs[-1].kwargs["mode"] is None


def test_a_wandb_error_is_one_line_and_a_nonzero_exit(tmp_path, monkeypatch, capsys, wandb_env):
    sweep = _numeric_sweep(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")

    def no_key(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "init", no_key)
    assert numeric.main([str(sweep), "--wandb"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "mmrep.analysis.numeric: error: W&B: api_key not configured (no-tty). call wandb.login(key=[your_api_key]); "
        "set WANDB_API_KEY or WANDB_MODE=offline"
    ]
    assert "logged to W&B" not in captured.out
    assert (sweep / "identification.csv").exists() and (sweep / "identification_x_mlp.png").exists()
    assert not (sweep / "wandb").exists()


@pytest.mark.parametrize(
    "module",
    ["numeric", "rus", "factors", "multibench", "vl_uniqueness", "uniqueness_objective", "misalignment_alignment"],
)
def test_every_analysis_command_has_a_wandb_flag(module, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"mmrep.analysis.{module}").main(["--help"])
    assert "--wandb" in capsys.readouterr().out
