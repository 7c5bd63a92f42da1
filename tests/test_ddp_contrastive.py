"""Contrastive losses over the global batch under DDP (2 gloo ranks on the CPU).

Known answer: with ``objective.gather: global`` the loss and every parameter's gradient after one DDP step equal
the one-process computation on the concatenated batch; ``gather: local`` (each rank's own negatives) does not.
End to end: a ``trainer=ddp_cpu`` run of 2 × B pairs and a one-process run of 2B pairs see the same data and give
the same loss curve."""

import functools
import os

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmrep.core.contract import DataSpec, ModalitySpec, shard
from mmrep.encoders.mlp import MLP
from mmrep.objectives.barlow_twins import BarlowTwins
from mmrep.objectives.clip import CLIP
from mmrep.objectives.mmcl import MMCL
from mmrep.objectives.mmcl_supervised import MMCLSupervised
from mmrep.objectives.siglip import SigLIP
from mmrep.objectives.vicreg import VICReg

WORLD = 2
CASES = {  # name: (objective, settings)
    "infonce_fresh": (MMCL, dict(loss="infonce", negatives="fresh", similarity="sq_euclidean")),
    "infonce_in_batch": (MMCL, dict(loss="infonce", negatives="in_batch", similarity="cosine", temperature=0.5)),
    "nt_xent": (MMCL, dict(loss="nt_xent", negatives="in_batch", temperature=0.3)),
    # the loss's own parameters (temperature, bias, heads) get the one-process gradient too
    "clip": (CLIP, dict(temperature=0.5)),
    "siglip": (SigLIP, dict(scale=3.0, bias=-2.0)),
    "vicreg": (VICReg, {}),
    "barlow_twins": (BarlowTwins, {}),
    "mmcl_supervised": (MMCLSupervised, dict(negatives="fresh", weight=0.5)),
}


def _model(gather: str, case: str):
    torch.manual_seed(0)  # the same initial weights in every process (DDP would broadcast rank 0's)
    spec = DataSpec(
        modalities={"x": ModalitySpec((6,)), "t": ModalitySpec((4,))},
        task="classification",
        num_classes=3,
        encoding_size=3,
    )
    factory = functools.partial(MLP, hidden=[8, 8], relative=False)
    objective, settings = CASES[case]
    return objective(data=spec, encoders={"x": factory, "t": factory}, gather=gather, **settings)


def _batch(n: int = 12) -> dict:
    gen = torch.Generator().manual_seed(1)
    views = lambda: {"x": torch.randn(n, 6, generator=gen), "t": torch.randn(n, 4, generator=gen)}  # noqa: E731
    return {**views(), "neg": views(), "y": torch.arange(n) % 3}


def _loss_and_grads(model: MMCL, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    """One training step's loss (as logged) and the gradient that reaches the optimiser (DDP: the ranks' mean)."""
    loss = model.training_step(batch, 0)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.clone()
        if dist.is_initialized():  # what DDP's reducer does: average the ranks' gradients
            dist.all_reduce(g)
            g /= dist.get_world_size()
        grads[name] = g
    logged = float(loss.detach()) / (
        dist.get_world_size() if dist.is_initialized() and model.hparams.gather == "global" else 1
    )
    return logged, grads


def _rank(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    results = {}
    for gather in ("global", "local"):
        for case in CASES:
            model = _model(gather, case)
            results[gather, case] = _loss_and_grads(model, shard(_batch(), rank, WORLD))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = str(tmp / "rank0.pt")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_rank, args=(str(tmp / "init"), out), nprocs=WORLD, start_method="spawn", join=True)
    return torch.load(out)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.ddp
@pytest.mark.parametrize("case", list(CASES))
def test_global_gather_gives_the_one_process_loss_and_gradients(ddp_results, case):
    ref_loss, ref_grads = _loss_and_grads(_model("global", case), _batch())  # one process, all 12 pairs
    loss, grads = ddp_results["global", case]
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    scale = max(float(ref.norm()) for ref in ref_grads.values())  # a gradient that is 0 in exact arithmetic (Barlow
    for name, ref in ref_grads.items():  # Twins' last bias: a shift is standardised away) is float noise: absolute
        torch.testing.assert_close(grads[name], ref, rtol=1e-5, atol=1e-6 * scale, msg=f"{case}: {name}")
    # per-device negatives are another objective: its gradient is measurably different
    _, local = ddp_results["local", case]
    assert max(_relative(local[n], ref) for n, ref in ref_grads.items()) > 1e-2


def test_outside_ddp_the_gather_is_the_identity():
    from mmrep.objectives.distributed import gather_rows, world_size

    x, y = torch.randn(3, 2), torch.randn(5, 4)
    assert world_size() == 1 and all(a is b for a, b in zip(gather_rows(x, y), (x, y)))


def _gather_uneven(rank: int, init_file: str, out: str) -> None:
    from mmrep.objectives.distributed import gather_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    n = (3, 0)[rank]  # an empty shard on rank 1
    x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2).add(10 * rank).requires_grad_()
    y = torch.full((n, 3), float(rank))
    gx, gy = gather_rows(x, y)
    gx.sum().backward()
    if rank == 0:
        torch.save({"x": gx.detach(), "y": gy, "grad": x.grad}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
def test_gather_rows_handles_uneven_and_empty_shards(tmp_path):
    out = str(tmp_path / "out.pt")
    mp.start_processes(_gather_uneven, args=(str(tmp_path / "init"), out), nprocs=WORLD, start_method="spawn")
    got = torch.load(out)
    assert torch.equal(got["x"], torch.arange(6, dtype=torch.float32).reshape(3, 2))
    assert got["y"].shape == (3, 3) and torch.equal(got["grad"], torch.ones(3, 2))  # autograd through own rows


@pytest.mark.ddp
def test_a_ddp_run_and_a_one_process_run_of_the_same_global_batch_share_the_loss_curve(cli, tmp_path):
    """trainer=ddp_cpu, 2 ranks × 64 pairs vs one process × 128 pairs: the numeric stream shards each step's global
    batch, the loss contrasts the global batch, so the curves agree step by step (float sums in another order)."""
    common = [
        "trainer.max_steps=30",
        "dataset.steps_per_epoch=10",
        "dataset.n_val=256",
        "dataset.n_cond_samples=2000",
        "trainer.log_every_n_steps=1",
        "objective.scheduler.warmup_steps=5",
        "metric.identifiability.n_fit=256",
        "metric.identifiability.n_eval=256",
        "metric.identifiability.probes=[linear]",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "callbacks.lr_monitor=null",
        "cpu_threads=1",
    ]
    curves = {}
    for name, overrides in (("one", ["dataset.batch_size=128"]), ("two", ["trainer=ddp_cpu", "dataset.batch_size=64"])):
        res = cli([*overrides, *common, f"hydra.run.dir={tmp_path / name}"])
        assert res.returncode == 0, res.stderr[-3000:]
        curves[name] = pd.read_csv(tmp_path / name / "csv" / "metrics.csv")
    assert "2 devices × 64 samples = 128 samples per step" in (tmp_path / "two" / "train.log").read_text()
    # the log-mean-exp InfoNCE passes through 0, so differences are measured against the training curve's scale
    # (its largest |loss|): measured 2e-6 at most after 30 Adam steps, where that scale is 0.07
    scale = curves["one"]["train/loss"].abs().max()
    for column in ("train/loss", "val/loss"):
        one, two = (curves[k].dropna(subset=[column]).set_index("step")[column] for k in ("one", "two"))
        assert len(one) >= (30 if column == "train/loss" else 3) and list(one.index) == list(two.index), column
        assert (one - two).abs().max() <= 1e-4 * scale, (column, pd.concat([one, two], axis=1))
    assert curves["one"]["train/loss"].dropna().iloc[-1] < curves["one"]["train/loss"].dropna().iloc[0]  # it learned
    assert (tmp_path / "two" / "results.csv").is_file()  # one results table, written by rank 0
    # the same encoders at the end (the probes' held-out sets are drawn in chunks of dataset.batch_size, so the
    # two runs' R² rows are measured on different samples and are not compared here)
    weights = {
        k: torch.load(tmp_path / k / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for k in ("one", "two")
    }
    assert weights["one"].keys() == weights["two"].keys()
    for name, w in weights["one"].items():  # Adam's normalised steps amplify the sum-order noise: measured ≤ 3.4e-4
        assert _relative(weights["two"][name], w) < 2e-3, name
