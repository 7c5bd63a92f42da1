"""Steps per second of the numeric paper-scale training step (B = 6144, 7-layer encoders, fresh negatives), and on
CUDA the GPU utilisation sampled during training.

    python benchmarks/bench_numeric_step.py [--steps 50] [--trainer gpu]

Composes ``paper_scale=numeric trainer=<trainer>`` with ``trainer.max_steps=<steps>`` and no metrics, times
``trainer.fit`` after a 5-step warm-up run, and prints steps/s (plus mean/max ``nvidia-smi`` utilisation on CUDA).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time

import torch
from hydra import compose, initialize_config_dir

from mmrep.core.configs import CONF_DIR
from mmrep.pipeline import resolvers  # noqa: F401  (registers the configs' resolvers)
from mmrep.pipeline.build import build, instantiate


def utilisation_sampler(samples: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
        )
        if out.returncode == 0 and out.stdout.strip():
            samples.append(int(out.stdout.split()[0]))


def fit(trainer_name: str, steps: int, folder: str) -> float:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "paper_scale=numeric",
                f"trainer={trainer_name}",
                f"trainer.max_steps={steps}",
                "logger=none",
                "callbacks=none",
                "metric=identifiability",
                f"paths.output_dir={folder}",
                "+trainer.enable_checkpointing=false",
                "+trainer.limit_val_batches=0",
                "+trainer.enable_progress_bar=false",
            ],
        )
    datamodule, model = build(cfg)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--trainer", default="gpu" if torch.cuda.is_available() else "default")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench_step_")
    fit(args.trainer, 5, folder)  # warm-up: mixing networks, kernels, allocator
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=utilisation_sampler, args=(samples, stop), daemon=True)
    if torch.cuda.is_available() and shutil.which("nvidia-smi"):
        sampler.start()
    seconds = fit(args.trainer, args.steps, folder)
    stop.set()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    line = f"{device}: {args.steps} steps in {seconds:.1f} s = {args.steps / seconds:.2f} steps/s (B = 6144)"
    if samples:
        line += f"; GPU utilisation mean {sum(samples) / len(samples):.0f} %, max {max(samples)} %"
    print(line)


if __name__ == "__main__":
    main()
