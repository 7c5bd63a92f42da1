"""hydra/launcher=slurm (hydra-submitit-launcher): composes, and its keys become the sbatch options a cluster
would get — checked through submitit's own sbatch writer, no cluster needed."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mmrep.core.configs import CONF_DIR
from mmrep.pipeline import resolvers  # noqa: F401  (registers the configs' resolvers)

submitit = pytest.importorskip("submitit")


def _sbatch(overrides, tmp_path, monkeypatch) -> str:
    """The sbatch script submitit writes for the composed launcher config (the plugin's parameter mapping)."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    launcher["tasks_per_node"] = cfg.hydra.launcher.tasks_per_node  # the one interpolation needing its node
    launcher["submitit_folder"] = str(tmp_path / ".submitit" / "%j")
    launcher.pop("_target_")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    init_keys = {"submitit_folder", "max_num_timeout"}  # executor constructor arguments in the plugin
    params = {k if k in base else f"slurm_{k}": v for k, v in launcher.items() if k not in init_keys}
    monkeypatch.setattr("submitit.slurm.slurm.shutil.which", lambda name: f"/usr/bin/{name}")  # no srun here
    executor = submitit.AutoExecutor(
        folder=launcher["submitit_folder"], cluster="slurm", slurm_max_num_timeout=launcher["max_num_timeout"]
    )
    executor.update_parameters(**params)
    return executor._executor._make_submission_file_text("python -m mmrep.train", "uid")


def test_slurm_launcher_keys_become_sbatch_options(tmp_path, monkeypatch):
    text = _sbatch(
        [
            "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.account=lab",
            "+hydra.launcher.additional_parameters.constraint=a100",
        ],
        tmp_path,
        monkeypatch,
    )
    for option in (
        "--partition=gpu",
        "--nodes=2",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--account=lab",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--time=1440",
        "--constraint=a100",
    ):
        assert f"#SBATCH {option}\n" in text, text
    assert "srun" in text  # one task per GPU, started by srun: what Lightning's SLURM environment expects


def test_slurm_defaults_one_gpu_one_task(tmp_path, monkeypatch):
    text = _sbatch([], tmp_path, monkeypatch)
    assert "#SBATCH --nodes=1\n" in text and "#SBATCH --ntasks-per-node=1\n" in text and "--partition" not in text
