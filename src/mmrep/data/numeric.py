"""The numeric latent-variable simulation of "Negate or Embrace" as a LightningDataModule.

Original: arXiv:2504.10143; crossmodal_mislaignment main_numeric.py. Latents ``z = [s, m_x, m_t]``; the image view is
``x = g_x([s, m_x])`` and the text view is ``t = g_t([s̃[I_θ], m_t])`` where ``s̃`` is ``s`` with the perturbable
coordinates corrupted. The training stream is generated on the fly, step ``k``'s global batch from a generator seeded by
``(seed, k)`` and sharded over DDP ranks, so a run is reproducible, a resumed run sees the same data, and W devices of B
pairs see the data of one device of W·B pairs; held-out sets are fixed by the seed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.stats import wishart
from torch.utils.data import DataLoader, IterableDataset

from mmrep.bias.misalignment import MisalignmentBias, ResolvedBias
from mmrep.core.contract import Batch, DataSpec, ModalitySpec, shard
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.data.integrity import GENERATED_FIX, check_finite, where
from mmrep.data.mixing import invertible_mlp
from mmrep.data.seeding import seed_sequence, torch_generator


@dataclass
class LatentModel:
    """Distribution of ``(s, s̃, m_x, m_t)`` (main_numeric.py).

    Independent regime: ``s ~ N(0, margin_std² I)``, ``m_x, m_t ~ N(0, I)`` (main_numeric.py; the original code also
    scaled ``m_x, m_t`` by ``margin_std``: ``scale_modality_latents=True``, the same at σ = 1, every published run),
    noise ``ε ~ N(0, noise_std² I)``.
    Dependent regime: Gaussian with Wishart(df=n, I) covariances. The original drew ``Σ_a`` with the same seed as
    ``Σ_s`` and ``Σ_mt`` with the same seed as ``Σ_mx`` (the original's main_numeric.py); by default we draw all four
    independently, as the paper describes; ``share_covariances=True`` reproduces the original code.
    """

    bias: ResolvedBias
    n_modality: int = 5
    dependent: bool = False
    margin_std: float = 1.0
    seed: int = 0
    share_covariances: bool = False
    scale_modality_latents: bool = False

    def __post_init__(self) -> None:
        n_s, n_m = self.bias.n_semantics, self.n_modality
        self.chol: dict[str, torch.Tensor | None] = {"s": None, "a": None, "m_x": None, "m_t": None}
        if self.dependent:
            rng = np.random.default_rng(seed_sequence(self.seed, "covariance"))
            cov_s = wishart.rvs(df=n_s, scale=np.eye(n_s), random_state=rng)
            cov_a = cov_s if self.share_covariances else wishart.rvs(df=n_s, scale=np.eye(n_s), random_state=rng)
            cov_mx = wishart.rvs(df=n_m, scale=np.eye(n_m), random_state=rng)
            cov_mt = cov_mx if self.share_covariances else wishart.rvs(df=n_m, scale=np.eye(n_m), random_state=rng)
            for key, cov in {"s": cov_s, "a": cov_a, "m_x": cov_mx, "m_t": cov_mt}.items():
                self.chol[key] = torch.linalg.cholesky(torch.as_tensor(np.atleast_2d(cov), dtype=torch.float64)).float()
        mask = torch.zeros(n_s)
        mask[list(self.bias.perturbed)] = 1.0
        self.perturb_mask = mask

    def _gaussian(self, n: int, dim: int, key: str, std: float, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, dim, generator=gen, device=gen.device)
        chol = self.chol[key]
        return eps @ chol.to(gen.device).T if chol is not None else eps * std

    def sample(self, n: int, gen: torch.Generator) -> Batch:
        """``n`` i.i.d. latent draws: ``s`` (n, n_s), ``s_tilde`` (n, n_s), ``m_x``/``m_t`` (n, n_modality)."""
        n_s, n_m = self.bias.n_semantics, self.n_modality
        s = self._gaussian(n, n_s, "s", self.margin_std, gen)
        m_std = self.margin_std if self.scale_modality_latents else 1.0
        m_x = self._gaussian(n, n_m, "m_x", m_std, gen)
        m_t = self._gaussian(n, n_m, "m_t", m_std, gen)
        changed = torch.rand(n, n_s, generator=gen, device=gen.device) < self.bias.change_prob  # b ~ Bernoulli(p)
        noise = self._gaussian(n, n_s, "a", self.bias.noise_std, gen)
        s_tilde = s + self.perturb_mask.to(gen.device) * changed * noise
        return {"s": s, "s_tilde": s_tilde, "m_x": m_x, "m_t": m_t}


HELDOUT_PURPOSES = ("val", "probe_fit", "probe_eval", "shifted", "align")


class _TrainStream(IterableDataset):
    """``steps_per_epoch`` batches per epoch. Step k's global batch (``batch_size`` × world size pairs) is drawn from
    a generator seeded by (seed, k) and each DDP rank takes its shard, so a run on W devices of B pairs sees exactly
    the data of one device of W·B pairs (on the same device type)."""

    def __init__(self, datamodule: NumericDataModule) -> None:
        self.dm = datamodule

    def __len__(self) -> int:
        return self.dm.steps_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        trainer = self.dm.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = _rank_and_world(trainer)
        device = self.dm.stream_device()
        for j in range(self.dm.steps_per_epoch):
            gen = torch_generator(self.dm.seed, "train", start + j, 0, device=device)  # 0: the stream's first key
            batch = self.dm.generate(self.dm.batch_size * world, gen, with_latents=False)
            yield batch if world == 1 else shard(batch, rank, world)


def _rank_and_world(trainer) -> tuple[int, int]:
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class _FixedBatches(IterableDataset):
    """Precomputed batches, served as they are on every rank (an iterable: Lightning adds no sampler that would
    deal them out between ranks; the datamodule has sharded them already)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


class NumericDataModule(pl.LightningDataModule):
    """Paired views ``x`` (image) and ``t`` (text) of the latent model, mixed by frozen invertible MLPs.

    Batches are dicts: ``"x"`` (B, n_s + n_m), ``"t"`` (B, |I_θ| + n_m), ``"neg"`` (an independent draw of both
    views, the negatives of the original's loss, utils/losses.py) and, in held-out sets, ``"latents"``.

    Args:
        bias: the selection/perturbation bias (``bias=`` group); ``None`` means no bias.
        n_semantics, n_modality: latent block sizes (main_numeric.py defaults 10 and 5).
        dependent: Wishart-covariance (causally dependent) latents instead of independent ones.
        margin_std: σ of the semantic latents in the independent regime; ``scale_modality_latents`` also scales
            ``m_x, m_t`` by it, as the original code did (default N(0, I), see :class:`LatentModel`).
        batch_size: pairs per training step (main_numeric.py's 6144 at paper scale); each step also draws as many
            negatives.
        steps_per_epoch: length of one training epoch of the infinite stream (checkpoint/validation cadence).
        n_val: size of the fixed validation set (loss only). n_probe: default size of the probe fit/eval sets.
        device: ``auto`` generates the training stream on the training device (a CUDA generator on a GPU run:
            no CPU bottleneck at B = 6144; its draws differ from the CPU generator's), ``cpu`` always on the CPU.
    """

    def __init__(
        self,
        bias: MisalignmentBias | None = None,
        n_semantics: int = 10,
        n_modality: int = 5,
        dependent: bool = False,
        margin_std: float = 1.0,
        share_covariances: bool = False,
        scale_modality_latents: bool = False,
        mixing_layers: int = 3,
        mixing_slope: float = 0.2,
        cond_quantile: float = 0.001,
        n_cond_samples: int = 25_000,
        batch_size: int = 6144,
        steps_per_epoch: int = 1000,
        n_val: int = 4096,
        negatives: bool = True,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if device not in ("cpu", "auto"):
            raise ConfigError(f"dataset.device: cpu or auto (the training device), got {device!r}")
        self.device = device
        check_positive_ints(
            "dataset",
            n_semantics=n_semantics,
            n_modality=n_modality,
            mixing_layers=mixing_layers,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            n_val=n_val,
        )
        if not 0 < margin_std < float("inf"):  # also refuses NaN
            raise ConfigError(f"dataset.margin_std: must be a finite number > 0, got {margin_std}")
        self.bias = (bias or MisalignmentBias(name="none")).resolve(n_semantics)
        self.latent_model = LatentModel(
            self.bias,
            n_modality,
            dependent,
            margin_std,
            seed,
            share_covariances=share_covariances,
            scale_modality_latents=scale_modality_latents,
        )
        self.n_semantics, self.n_modality = n_semantics, n_modality
        self.batch_size, self.steps_per_epoch, self.n_val = batch_size, steps_per_epoch, n_val
        self.negatives, self.seed = negatives, seed
        self._mixing_kwargs = dict(
            n_layers=mixing_layers,
            negative_slope=mixing_slope,
            cond_quantile=cond_quantile,
            n_cond_samples=n_cond_samples,
        )
        self._mixing: dict[str, torch.nn.Module] | None = None
        self._mixing_devices: dict[torch.device, dict[str, torch.nn.Module]] = {}  # copies for non-CPU streams
        self._val: tuple[tuple[int, int], list[Batch]] | None = None  # ((rank, world), this rank's batches)
        self.spec = DataSpec(
            modalities={
                "x": ModalitySpec((n_semantics + n_modality,)),
                "t": ModalitySpec((len(self.bias.selected) + n_modality,)),
            },
            task="none",
            encoding_size=len(self.bias.invariant),  # |I_θ \ I_β|: main_numeric.py's --encoding-size 0
            latent_names=tuple(self.latent_names),
        )

    # ---- the contract every datamodule offers -------------------------------------------------------------
    @property
    def latent_names(self) -> list[str]:
        return [f"s_{i}" for i in range(self.n_semantics)] + ["m_x", "m_t"]

    # ---- generation ---------------------------------------------------------------------------------------
    @property
    def mixing(self) -> dict[str, torch.nn.Module]:
        """The frozen ``g_x`` and ``g_t`` (built on first use, deterministic in ``seed``)."""
        if self._mixing is None:
            self._mixing = {
                name: invertible_mlp(m.features, seed=seed_sequence(self.seed, f"mixing_{name}"), **self._mixing_kwargs)
                for name, m in self.spec.modalities.items()
            }
        return self._mixing

    def stream_device(self) -> torch.device:
        """Where the training stream is generated: the CPU, or with ``device: auto`` the trainer's device (no
        host-to-GPU copy and no CPU bottleneck at B = 6144). Held-out sets stay on the CPU generator."""
        trainer = getattr(self, "trainer", None)
        if self.device == "auto" and trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _mixing_on(self, device: torch.device) -> dict[str, torch.nn.Module]:
        if device.type == "cpu":
            return self.mixing
        if device not in self._mixing_devices:
            self._mixing_devices[device] = {k: copy.deepcopy(m).to(device) for k, m in self.mixing.items()}
        return self._mixing_devices[device]

    @torch.no_grad()
    def views(self, latents: Batch) -> Batch:
        """Observations ``x = g_x([s, m_x])`` and ``t = g_t([s̃[I_θ], m_t])`` of latent draws (on their device)."""
        z_x = torch.cat([latents["s"], latents["m_x"]], dim=1)
        z_t = torch.cat([latents["s_tilde"][:, list(self.bias.selected)], latents["m_t"]], dim=1)
        mixing = self._mixing_on(z_x.device)
        return {"x": mixing["x"](z_x), "t": mixing["t"](z_t)}

    def generate(self, n: int, gen: torch.Generator, *, with_latents: bool = True, shift=None) -> Batch:
        """One batch of ``n`` pairs (plus ``n`` independent negatives when ``negatives``).

        ``shift``: optional callable applied to ``s`` before mixing (an OOD marginal); the text's perturbation
        noise ``s̃ - s`` is kept."""
        latents = self.latent_model.sample(n, gen)
        if shift is not None:
            noise = latents["s_tilde"] - latents["s"]
            latents["s"] = shift(latents["s"], gen)
            latents["s_tilde"] = latents["s"] + noise
        batch = self.views(latents)
        if self.negatives:
            batch["neg"] = self.views(self.latent_model.sample(n, gen))
        if with_latents:
            batch["latents"] = latents
        return batch

    def heldout(self, purpose: str, n: int | None = None, chunk: int | None = None, shift=None) -> list[Batch]:
        """A fixed held-out set (``purpose`` in val/probe_fit/probe_eval/shifted/align) of ``n`` samples (default
        ``n_val``) in chunks; the same samples every call."""
        if purpose not in HELDOUT_PURPOSES:
            raise ValueError(f"heldout: unknown purpose {purpose!r}; dataset=numeric has {list(HELDOUT_PURPOSES)}")
        n = self.n_val if n is None else int(n)
        chunk = chunk or self.batch_size
        gen = torch_generator(self.seed, purpose)
        return [self.generate(min(chunk, n - i), gen, shift=shift) for i in range(0, n, chunk)]

    def heldout_size(self, purpose: str, n: int | None = None) -> int:
        """Generated sets have exactly the size asked for (default ``n_val``)."""
        if purpose not in HELDOUT_PURPOSES:
            raise ValueError(f"heldout: unknown purpose {purpose!r}; dataset=numeric has {list(HELDOUT_PURPOSES)}")
        return self.n_val if n is None else int(n)

    def probe_targets(self, latents: Batch) -> dict[str, torch.Tensor]:
        """Targets the identifiability probes predict, each (N, k): ``s_i`` (unperturbed), ``s_inv``,
        ``tilde_s_i`` (the text's perturbed value of selected semantic i; the original indexed by position,
        the original's main_numeric.py), ``m_x``, ``m_t``."""
        s, s_tilde = latents["s"], latents["s_tilde"]
        targets = {f"s_{i}": s[:, i : i + 1] for i in range(self.n_semantics)}
        targets["s_inv"] = s[:, list(self.bias.invariant)]
        for i in self.bias.perturbed_selected:
            targets[f"tilde_s_{i}"] = s_tilde[:, i : i + 1]
        targets["m_x"], targets["m_t"] = latents["m_x"], latents["m_t"]
        return targets

    # ---- Lightning hooks ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_TrainStream(self), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation set in global batches of ``batch_size`` × world size; each rank takes its shard of
        every batch (so the validation loss under DDP is the one-device loss of the same global batches)."""
        rank, world = _rank_and_world(getattr(self, "trainer", None))
        if self._val is None or self._val[0] != (rank, world):
            batches = self.heldout("val", self.n_val, chunk=self.batch_size * world)
            for batch in batches:  # generated once per run: a generator setting that gives NaN stops here
                for key in self.spec.names:
                    check_finite(
                        batch[key],
                        where("dataset", "the data NumericDataModule generated", "val", key),
                        fix=GENERATED_FIX,
                    )
            self._val = (
                (rank, world),
                [shard({k: v for k, v in b.items() if k != "latents"}, rank, world) for b in batches],
            )
        return DataLoader(_FixedBatches(self._val[1]), batch_size=None, num_workers=0)
