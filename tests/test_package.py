"""mmrep as an installed package: a wheel holds the configs, and an installed mmrep trains from any folder with a
user's own configs and modules beside the shipped ones (``--config-dir`` + modules of the folder it runs from)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=default", "trainer.max_steps=4", "trainer.limit_train_batches=2", "trainer.max_epochs=2",
        "logger=none", "dataset.batch_size=16"]  # fmt: skip

USER_METRIC = '''import pandas as pd


def count_parameters(model, datamodule):
    """A user's metric: (model, datamodule) -> tidy rows."""
    n = sum(p.numel() for p in model.parameters())
    return pd.DataFrame([{"metric": "n_parameters", "target": "model", "value": float(n)}])
'''
USER_METRIC_CONFIG = """# a user's config group option, beside the shipped metric options
n_parameters:
  _target_: my_metrics.count_parameters
  _partial_: true
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project's wheel installed into a folder of its own (dependencies: this environment's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "whl"), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    wheel = next((tmp / "whl").glob("mmrep-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mmrep/conf/train.yaml" in names and "mmrep/conf/dataset/numeric.yaml" in names
    assert "mmrep/py.typed" in names
    assert "hydra_plugins/mmrep_optuna_sweeper/resumable.py" in names
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    return tmp / "site"


def run_installed(site: Path, cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MMREP_ROOT", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_trains_from_another_folder_with_user_configs_and_modules(installed, tmp_path):
    project = tmp_path / "my_project"
    (project / "conf" / "metric").mkdir(parents=True)
    (project / "my_metrics.py").write_text(USER_METRIC)
    (project / "conf" / "metric" / "n_parameters.yaml").write_text(USER_METRIC_CONFIG)
    out = tmp_path / "run"
    args = [*TINY, "metric=n_parameters", f"hydra.run.dir={out}"]
    res = run_installed(installed, project, [sys.executable, "-m", "mmrep.train", "--config-dir", "conf", *args])
    assert res.returncode == 0, res.stderr[-3000:]
    results = (out / "results.csv").read_text()
    assert "n_parameters" in results
    # the run used the installed package and its packaged configs, not this checkout
    config_sources = (out / ".hydra" / "hydra.yaml").read_text()
    assert str(installed / "mmrep" / "conf") in config_sources and str(ROOT / "conf") not in config_sources


def test_installed_console_script_from_another_folder(installed, tmp_path):
    """The wheel's ``mmrep`` script finds its commands (entry points) and the packaged configs from any folder; the
    test above trains from the wheel, so this one composes only."""
    script = installed / "bin" / "mmrep"
    assert script.is_file(), "the wheel installs no `mmrep` console script"
    help_text = run_installed(installed, tmp_path, [sys.executable, str(script), "train", "--help"])
    assert help_text.returncode == 0 and "dataset: " in help_text.stdout and "numeric" in help_text.stdout
    job = run_installed(installed, tmp_path, [sys.executable, str(script), "train", "dataset=rus", "--cfg", "job"])
    assert job.returncode == 0 and "redundancy:" in job.stdout, job.stderr[-2000:]
    studies = run_installed(installed, tmp_path, [sys.executable, str(script), "analyze"])
    assert studies.returncode == 0 and "uniqueness_objective" in studies.stdout
