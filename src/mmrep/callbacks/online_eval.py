"""Online evaluation during training: how good each representation is *now*, without waiting for the metrics at
the end (``callbacks=online_eval``, or one of ``callbacks=online_probe``, ``online_knn``, ``rankme``).

* :class:`OnlineLinearProbe` — a linear head per modality trained beside the objective on stop-gradient
  embeddings of the training batches, with its own optimiser, scored on the validation batches (solo-learn's online
  linear evaluation: da Costa et al. 2022, JMLR; arXiv:2108.01775);
* :class:`OnlineKNN` — a weighted k-nearest-neighbour classifier (or regressor) on cosine similarity, train
  embeddings as the bank and validation embeddings as queries (the kNN monitor of Wu et al. 2018,
  arXiv:1805.01978);
* :class:`RankMeCallback` — the effective rank of the validation embeddings (Garrido et al. 2023,
  arXiv:2210.02885): a dimensional-collapse monitor that needs no labels.

The probe and the kNN need the dataset's task labels (``batch["y"]``, ``spec.task`` classification or
regression); RankMe works on any dataset. Everything is logged under ``online/``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchmetrics
from torch import nn

from mmrep.core.contract import DataSpec, require_samples
from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_on_device, eval_mode, require_heldout
from mmrep.metrics.rankme import rankme

LABELLED_TASKS = ("classification", "regression")
PROBE_SEED = 0  # the probes' initialisation: the same on every rank, and it leaves the run's random stream alone


def _require_labels(model, datamodule, key: str, what: str) -> DataSpec:
    """The run's :class:`DataSpec` (the datamodule's, else the objective's) when it has a labelled task and the
    objective has encoders, else ConfigError."""
    spec = getattr(datamodule, "spec", None) or getattr(model, "data", None)
    task = getattr(spec, "task", "none")
    if task not in LABELLED_TASKS:
        name = type(datamodule).__name__
        raise ConfigError(
            f"{key}: dataset {name} has no task labels (task={task!r}); {what} needs a classification or regression "
            "task (callbacks=rankme monitors the representations without labels)"
        )
    _require_encoders(model, key)
    return spec


def _require_encoders(model, key: str) -> None:
    if not getattr(model, "encoders", None) or not hasattr(model, "encode"):
        raise ConfigError(f"{key}: objective {type(model).__name__} has no encoders to evaluate")


def _positive_int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _ddp_world(trainer: pl.Trainer) -> int:
    """The number of ranks whose probes must stay identical (1 outside DDP)."""
    if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
        return dist.get_world_size()
    return 1


def _r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination, uniform average over the target's columns; ``pred``, ``target`` (N, t)."""
    if target.shape[1] == 1:
        pred, target = pred[:, 0], target[:, 0]
    return float(torchmetrics.functional.r2_score(pred, target))


# ---- the online linear probe ------------------------------------------------------------------------------------
class OnlineLinearProbe(pl.Callback):
    """A linear probe per modality trained during training on stop-gradient embeddings (solo-learn's online linear
    evaluation, da Costa et al. 2022, JMLR; arXiv:2108.01775).

    Every ``every_n_steps``-th training batch, after the objective's own step: ``h = pl_module.encode(batch)``
    ({modality: (B, d)}) under ``torch.no_grad()`` with the model in eval mode (no batch-norm statistics updated, no
    dropout randomness drawn: the run trains exactly as without the callback), then one step of the callback's own
    Adam on ``nn.Linear(d, num_classes)`` with cross-entropy against ``batch["y"]`` (B,) (classification) or
    ``nn.Linear(d, target_dim)`` with MSE against ``y`` (B,)/(B, target_dim) (regression). The encoders never see
    the probe's gradient, and the objective's optimiser never sees the probe's parameters. Under DDP the probe
    gradients are averaged over the ranks before each step, so every rank holds the same probe.

    The probes are built at the first training batch, on the embeddings' device, with widths read from the
    embeddings (so any encoder works, whatever its output width). Their weights and optimiser state are the
    callback's ``state_dict`` (a resumed run continues the same probes).

    Logs ``online/probe_loss_<modality>`` (each probe step) and, at each validation epoch end (not the sanity
    check), ``online/probe_acc_<modality>`` (classification) or ``online/probe_mse_<modality>`` and
    ``online/probe_r2_<modality>`` (regression) over the validation batches, synced over the DDP ranks.

    Args:
        lr: the probe optimiser's learning rate (Adam).
        every_n_steps: train the probe on every n-th training batch.
    """

    key = "callbacks.online_probe"

    def __init__(self, lr: float = 1e-3, every_n_steps: int = 1) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"{self.key}.lr: must be a number > 0, got {lr!r}")
        self.lr = float(lr)
        self.every_n_steps = _positive_int(f"{self.key}.every_n_steps", every_n_steps)
        self.classify: bool | None = None
        self.outputs: int | None = None
        self.probe: nn.ModuleDict | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scores: nn.ModuleDict | None = None
        self._pending: Mapping | None = None
        self._seen = False

    # ---- set-up --------------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check(pl_module, trainer.datamodule)

    def check(self, model, datamodule) -> None:
        """Refuse a dataset without task labels or an objective without encoders (ConfigError); also run at
        :meth:`setup`, callable before training like a metric's ``check``."""
        spec = _require_labels(model, datamodule, self.key, "the online probe")
        self.classify = spec.task == "classification"
        self.outputs = int(spec.num_classes) if self.classify else int(spec.target_dim)

    def build(self, widths: Mapping[str, int], device: torch.device | str) -> None:
        """The probes ``{modality: nn.Linear(width, outputs)}`` on ``device``, their Adam and their validation
        scores; a state waiting from :meth:`load_state_dict` is loaded into them."""
        with torch.random.fork_rng(devices=[]):  # created on the CPU from a fixed seed, then moved
            torch.manual_seed(PROBE_SEED)
            probe = nn.ModuleDict({m: nn.Linear(int(d), self.outputs) for m, d in widths.items()})
        self.probe = probe.to(device)
        self.optimizer = torch.optim.Adam(self.probe.parameters(), lr=self.lr)
        if self.classify:
            make = lambda: torchmetrics.classification.MulticlassAccuracy(self.outputs, average="micro")
            self.scores = nn.ModuleDict({f"acc_{m}": make() for m in widths})
        else:
            self.scores = nn.ModuleDict(
                {
                    f"{s}_{m}": torchmetrics.MeanSquaredError() if s == "mse" else torchmetrics.R2Score()
                    for m in widths
                    for s in ("mse", "r2")
                }
            )
        self.scores.to(device)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state_dict(pending)

    # ---- training ------------------------------------------------------------------------------------------------
    def _target(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` as the probe's target for outputs ``out``: class indices (B,) or values shaped like ``out``."""
        return y.long() if self.classify else y.reshape(out.shape).to(out.dtype)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = self._target(out, y)
        return F.cross_entropy(out, target) if self.classify else F.mse_loss(out, target)

    def train_step(self, pl_module: pl.LightningModule, batch: Mapping, world: int = 1) -> dict[str, torch.Tensor]:
        """One probe step on ``batch``; ``{modality: loss}`` (detached scalars). ``world`` > 1: average the probe
        gradients over the DDP ranks first."""
        with torch.no_grad(), eval_mode(pl_module):
            h = {m: z.detach().to(torch.float32) for m, z in pl_module.encode(batch).items()}  # (B, d) each
        if self.probe is None:
            self.build({m: z.shape[1] for m, z in h.items()}, next(iter(h.values())).device)
        with torch.enable_grad():
            self.optimizer.zero_grad(set_to_none=True)
            losses = {m: self._loss(self.probe[m](h[m]), batch["y"]) for m in self.probe if m in h}
            sum(losses.values()).backward()
        if world > 1:
            self._average_gradients(world)
        self.optimizer.step()
        return {m: loss.detach() for m, loss in losses.items()}

    def _average_gradients(self, world: int) -> None:
        params = [p for p in self.probe.parameters() if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # one all-reduce for every probe
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.grad.numel()].view_as(p.grad))
            offset += p.grad.numel()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int):
        if batch_idx % self.every_n_steps:
            return
        losses = self.train_step(pl_module, batch, _ddp_world(trainer))
        n = int(batch["y"].shape[0])
        for m, loss in losses.items():
            pl_module.log(f"online/probe_loss_{m}", loss, on_step=True, on_epoch=False, batch_size=n)

    # ---- validation ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scores is not None:
            for score in self.scores.values():
                score.reset()
        self._seen = False

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking or self.probe is None:
            return
        with torch.no_grad(), eval_mode(pl_module):
            h = pl_module.encode(batch)
            for m, linear in self.probe.items():
                if m not in h:
                    continue
                out = linear(h[m].to(torch.float32))  # (B, outputs)
                target = self._target(out, batch["y"])
                if self.classify:
                    self.scores[f"acc_{m}"].update(out, target)
                else:
                    flat = (lambda t: t[:, 0]) if self.outputs == 1 else (lambda t: t)
                    self.scores[f"mse_{m}"].update(out, target)
                    self.scores[f"r2_{m}"].update(flat(out), flat(target))
        self._seen = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.scores is None or not self._seen:
            return
        for name, score in self.scores.items():
            value = score.compute()  # torchmetrics gathers the ranks' states
            score.reset()
            pl_module.log(f"online/probe_{name}", value.to(torch.float32), on_epoch=True, sync_dist=True)

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.probe is None:
            return dict(self._pending) if self._pending is not None else {}
        return {"probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the probes and their optimiser state; before the probes exist (a resumed run restores the
        callbacks before the first batch) the state waits for :meth:`build`."""
        if not state_dict:
            return
        if self.probe is None:
            self._pending = state_dict
            return
        self.probe.load_state_dict(state_dict["probe"])
        self.optimizer.load_state_dict(state_dict["optimizer"])  # its tensors follow the probe's device


# ---- monitors on the held-out sets ------------------------------------------------------------------------------
class _HeldoutMonitor(pl.Callback):
    """Runs :meth:`measure` at the end of every ``every_n_epochs``-th validation epoch (not the sanity check).

    Every rank holds the whole model and the same fixed held-out sets, so every rank computes the same values: no
    gathering, and a monitored ``online/...`` value is known to every rank."""

    key = "callbacks.online"

    def __init__(self, every_n_epochs: int) -> None:
        self.every_n_epochs = _positive_int(f"{self.key}.every_n_epochs", every_n_epochs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check(pl_module, trainer.datamodule)

    def check(self, model, datamodule) -> None:
        """ConfigError when the monitor cannot work on this run (run at :meth:`setup`; callable before training)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with torch.no_grad():
            values = self.measure(trainer.datamodule, pl_module)
        for name, value in values.items():
            pl_module.log(name, value, on_epoch=True, sync_dist=True)  # equal on every rank: the mean is the value

    def measure(self, datamodule, pl_module: pl.LightningModule) -> dict[str, float]:
        raise NotImplementedError


def knn_classify(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted kNN votes (Wu et al. 2018, arXiv:1805.01978; as solo-learn's kNN): each query's k most
    cosine-similar bank rows vote for their class with weight ``exp(sim / temperature)``.

    Shapes: ``query`` (q, d), ``bank`` (N, d), ``bank_labels`` (N,) int → votes (q, num_classes); the prediction is
    ``votes.argmax(1)`` (the lowest class on a tie)."""
    bank = F.normalize(bank.to(torch.float32), dim=1)
    labels = bank_labels.long()
    votes = []
    for start in range(0, query.shape[0], chunk):  # a (chunk, N) similarity matrix at a time
        q = F.normalize(query[start : start + chunk].to(torch.float32), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (c, k)
        weights = (sim / temperature).exp()
        votes.append(torch.zeros(q.shape[0], num_classes, device=q.device).scatter_add_(1, labels[idx], weights))
    return torch.cat(votes)


def knn_regress(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_targets: torch.Tensor,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> torch.Tensor:
    """Similarity-weighted kNN regression: the mean of the k most cosine-similar bank rows' targets, weighted by
    ``exp(sim / temperature)`` normalised over the k (the classifier's weights; positive even for negative
    similarities).

    Shapes: ``query`` (q, d), ``bank`` (N, d), ``bank_targets`` (N,) or (N, t) → predictions (q, t)."""
    bank = F.normalize(bank.to(torch.float32), dim=1)
    targets = bank_targets.to(torch.float32).reshape(bank.shape[0], -1)  # (N, t)
    preds = []
    for start in range(0, query.shape[0], chunk):
        q = F.normalize(query[start : start + chunk].to(torch.float32), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (c, k)
        weights = (sim / temperature).softmax(dim=1)  # exp(sim/T) / Σ_k exp(sim/T)
        preds.append((weights.unsqueeze(2) * targets[idx]).sum(1))  # (c, t)
    return torch.cat(preds)


class OnlineKNN(_HeldoutMonitor):
    """A weighted kNN on the current embeddings (Wu et al. 2018, arXiv:1805.01978; solo-learn's kNN monitor).

    At the end of every ``every_n_epochs``-th validation epoch: the bank is the embeddings of
    ``datamodule.heldout("train", n_bank)`` (N, d) with their labels, the queries those of
    ``heldout("val", n_query)`` (q, d); similarity is cosine. Classification: the k nearest vote with weights
    ``exp(sim / temperature)`` (:func:`knn_classify`) → ``online/knn_acc_<modality>``. Regression: the
    weighted mean of the k nearest targets (:func:`knn_regress`) → ``online/knn_r2_<modality>``.

    Args:
        k: neighbours (1 <= k < bank size: a k as large as the bank makes every train sample a neighbour of every
            query; refused before training). temperature: of the vote weights.
        n_bank, n_query: train / validation samples (the splits' first n). every_n_epochs: how often.
    """

    key = "callbacks.online_knn"

    def __init__(
        self,
        k: int = 20,
        temperature: float = 0.07,
        n_bank: int = 4096,
        n_query: int = 2048,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(every_n_epochs)
        self.k = _positive_int(f"{self.key}.k", k)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"{self.key}.temperature: must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.n_bank = _positive_int(f"{self.key}.n_bank", n_bank, 2)
        self.n_query = _positive_int(f"{self.key}.n_query", n_query)
        self.spec: DataSpec | None = None

    def check(self, model, datamodule) -> None:
        """Refuse a dataset without labels, an objective without encoders and a ``k`` the bank cannot serve."""
        self.spec = _require_labels(model, datamodule, self.key, "the online kNN")
        require_heldout(datamodule, self.key)
        bank = require_samples(datamodule, "train", self.n_bank, 2, f"{self.key}.n_bank")
        if self.k >= bank:  # every bank sample would vote for every query: no neighbourhood, the bank's average
            raise ConfigError(
                f"{self.key}.k: must be below the bank's size, {bank} train samples (n_bank={self.n_bank}), got "
                f"{self.k}: with k >= the bank every train sample is a neighbour of every query, so the vote ignores "
                f"which samples are near; lower {self.key}.k or use a bigger bank ({self.key}.n_bank / dataset)"
            )
        at_least = 2 if self.spec.task == "regression" else 1  # an R² needs two queries
        require_samples(datamodule, "val", self.n_query, at_least, f"{self.key}.n_query")

    def measure(self, datamodule, pl_module: pl.LightningModule) -> dict[str, float]:
        bank_batches = datamodule.heldout("train", self.n_bank)
        query_batches = datamodule.heldout("val", self.n_query)
        bank, query = encode_on_device(pl_module, bank_batches), encode_on_device(pl_module, query_batches)
        device = pl_module.device
        y_bank = torch.cat([b["y"] for b in bank_batches]).to(device)
        y_query = torch.cat([b["y"] for b in query_batches]).to(device)
        values = {}
        for m, z in bank.items():
            if self.spec.task == "classification":
                votes = knn_classify(query[m], z, y_bank, self.k, self.temperature, int(self.spec.num_classes))
                values[f"online/knn_acc_{m}"] = float((votes.argmax(1) == y_query.long()).float().mean())
            else:
                pred = knn_regress(query[m], z, y_bank, self.k, self.temperature)  # (q, t)
                values[f"online/knn_r2_{m}"] = _r2(pred, y_query.to(torch.float32).reshape(pred.shape))
        return values


class RankMeCallback(_HeldoutMonitor):
    """RankMe (Garrido et al. 2023, arXiv:2210.02885) of each modality's embeddings of ``heldout("val", n)``
    (n, d), at the end of every ``every_n_epochs``-th validation epoch → ``online/rankme_<modality>``.

    The collapse monitor: close to ``min(n, d)`` for embeddings that use every direction, 1 for a collapse onto
    one. Needs no labels (any dataset). See :func:`mmrep.metrics.rankme.rankme`.

    Args:
        n: validation samples (the split's first n; RankMe is at most min(n, d)). every_n_epochs: how often.
    """

    key = "callbacks.rankme"

    def __init__(self, n: int = 2048, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)
        self.n = _positive_int(f"{self.key}.n", n, 2)

    def check(self, model, datamodule) -> None:
        """Refuse an objective without encoders or a validation set of fewer than 2 samples."""
        _require_encoders(model, self.key)
        require_samples(require_heldout(datamodule, self.key), "val", self.n, 2, f"{self.key}.n")

    def measure(self, datamodule, pl_module: pl.LightningModule) -> dict[str, float]:
        z = encode_on_device(pl_module, datamodule.heldout("val", self.n))
        return {f"online/rankme_{m}": rankme(h) for m, h in z.items()}
