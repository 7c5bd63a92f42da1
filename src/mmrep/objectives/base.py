"""What every objective shares: per-modality encoders built from the dataset's DataSpec, ``encode``, the optimiser and
learning-rate schedule as configs, and the training loop's contract (non-finite loss, ``train/loss``, ``val/loss``).

An objective is a ``LightningModule`` constructed as ``Objective(data=DataSpec, encoders={modality: factory},
optimizer=partial, scheduler=partial | None, ...)``. ``encoders`` are the ``encoders.<modality>`` configs
(``_partial_: true``); each is called as ``factory(modality_spec, encoding_size)``. ``optimizer`` is called with
the parameter groups (frozen parameters are left out); ``scheduler`` with the optimiser and — when it takes one —
``total_steps``, the trainer's estimated number of optimiser steps (so epoch-based runs need no ``max_steps``).

Two bases: :class:`Objective` (any objective: implement ``step_loss``) and :class:`PairedObjective` (a loss on the
embeddings of two modalities' paired items, e.g. contrastive: implement ``pair_loss``). Their docstrings are the
contract a new objective's author reads.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import nn

from mmrep.core.contract import Batch, DataSpec
from mmrep.core.errors import ConfigError
from mmrep.objectives.distributed import gather_rows, scale_grad, world_size
from mmrep.objectives.losses import ensure_finite

log = logging.getLogger(__name__)
EncoderFactory = Callable[..., nn.Module]


def default_optimizer(params, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


class StepLoss(NamedTuple):
    """The loss of one batch, as :meth:`Objective.step_loss` returns it."""

    #: the scalar loss: logged as ``train/loss`` / ``val/loss``; the training step backpropagates it
    loss: torch.Tensor
    #: the items it averages over: the logs' ``batch_size`` (the epoch's ``val/loss`` weights batches by it)
    n: int
    #: named terms of the loss, logged beside it as ``train/loss_<name>`` / ``val/loss_<name>``
    parts: Mapping[str, torch.Tensor] | None = None
    #: anything the objective's own hooks want back from the step (e.g. predictions for a validation score)
    outputs: Any = None


class Objective(pl.LightningModule):
    """Base of mmrep's objectives.

    To write one: build the encoders in ``__init__`` (``self.encoders = self.build_encoders(names)``, a
    ``{modality: encoder}`` ``ModuleDict`` whose outputs are (B, encoding_size)), and implement
    :meth:`step_loss` — the loss of one batch, the same function for training and validation. What comes for free:

    * ``training_step``: the loss is checked (NaN/inf stops the run with one line,
      ``non-finite training loss (nan) at step N; <finite_hint>``) and logged as ``train/loss`` (progress bar);
      ``step_loss`` returning ``None`` skips the batch (Lightning skips a step whose loss is ``None``);
    * ``validation_step``: ``val/loss``, the epoch mean over batches weighted by ``StepLoss.n`` and synced over
      the DDP ranks (``sync_dist``): the row ``metric=loss, target=<loss_name>`` of results.csv and the value
      checkpointing, early stopping and Optuna pruning read;
    * the optimiser and schedule from the config (:meth:`param_groups` to split them), and a one-time check that
      the datamodule's batches keep its :class:`DataSpec` contract.

    An objective with nothing to train raises a :class:`ConfigError` from ``step_loss`` (``objective=frozen``).
    A loss on two modalities' paired embeddings (contrastive and the like): subclass :class:`PairedObjective`,
    which also owns the pair, DDP gathering and the batch-size checks.

    Args:
        data: the datamodule's :class:`DataSpec`.
        encoders: ``{modality: encoder factory}`` (the ``encoders`` config). Every key must be a modality of the
            dataset; every modality the objective uses must have one.
        encoding_size: representation width (``objective.encoding_size``). When ``None``: each modality's own width
            (``ModalitySpec.encoding_size``) for objectives without a shared space (unimodal), else the dataset's
            default (``data.encoding_size``).
        optimizer: ``partial`` of a ``torch.optim`` class (``_partial_: true`` config); default Adam(lr=1e-3).
        scheduler: ``partial`` of a scheduler factory, or ``None`` for a constant learning rate.
        scheduler_interval: ``step`` or ``epoch`` (when the scheduler steps).
    """

    #: names the validation-loss row of results.csv (``metric=loss, target=<loss_name>``)
    loss_name = "loss"
    #: True when all encoders must map into one space (contrastive); False lets each modality keep its own width
    shared_space = True
    #: what a non-finite training loss's message advises (the settings that make this loss blow up)
    finite_hint = "lower objective.optimizer.lr"

    def __init__(
        self,
        data: DataSpec,
        encoders: Mapping[str, EncoderFactory],
        encoding_size: int | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        if not isinstance(data, DataSpec):
            raise TypeError(f"objective: data must be the datamodule's DataSpec, got {type(data).__name__}")
        unknown = [m for m in encoders if m not in data.modalities and m not in data.deselected]
        if unknown:
            raise ConfigError(f"encoders.{unknown[0]}: not a modality of this dataset; its modalities are {data.names}")
        encoders = {m: factory for m, factory in encoders.items() if m in data.modalities}
        if encoding_size is not None and int(encoding_size) < 1:
            raise ConfigError(f"objective.encoding_size: must be a positive integer, got {encoding_size!r}")
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(f"objective.scheduler_interval: 'step' or 'epoch', got {scheduler_interval!r}")
        self.data, self.encoder_factories = data, dict(encoders)
        self.encoding_size = None if encoding_size is None else int(encoding_size)  # objective.encoding_size
        self.optimizer_factory = optimizer or default_optimizer
        self.scheduler_factory, self.scheduler_interval = scheduler, scheduler_interval
        self._batch_checked = False
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        """Bad optimiser settings (``objective.optimizer.lr=abc``, a negative lr) fail at start-up, not at the first
        training step: numbers are checked by name, then the optimiser is built once on a stand-in parameter."""
        for name, value in getattr(self.optimizer_factory, "keywords", {}).items():
            if name in ("lr", "weight_decay", "momentum", "eps", "dampening") and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ConfigError(f"objective.optimizer.{name}: must be a number, got {value!r}")
        try:
            self.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"objective.optimizer: {err}") from None

    def encoding_size_for(self, modality: str) -> int:
        """The representation width of ``modality``: ``objective.encoding_size`` when set; else, without a shared
        space, the modality's own width; else the dataset's default."""
        size = self.encoding_size
        if size is None and not self.shared_space:
            size = self.data.modalities[modality].encoding_size
        size = size if size is not None else self.data.encoding_size
        if size is None or int(size) < 1:
            raise ConfigError(f"objective.encoding_size: the dataset has no default width for {modality!r}; set it")
        return int(size)

    def build_encoders(self, names: Sequence[str]) -> nn.ModuleDict:
        """One encoder per modality in ``names`` (in that order: it fixes the parameter initialisation)."""
        missing = [m for m in names if m not in self.encoder_factories]
        if missing:
            raise ConfigError(
                f"encoders.{missing[0]}: no encoder configured for modality {missing[0]!r} "
                f"(add encoder@encoders.{missing[0]}=<option>)"
            )
        encoders = {}
        for m in names:
            if not callable(self.encoder_factories[m]):
                raise ConfigError(
                    f"encoders.{m}: needs an encoder config with _target_ (e.g. encoder@encoders.{m}=mlp)"
                )
            try:
                encoders[m] = self.encoder_factories[m](self.data.modalities[m], self.encoding_size_for(m))
            except ConfigError as err:  # encoders say "encoder.<key>": name the modality's config node
                message = str(err)
                raise ConfigError(
                    f"encoders.{m}{message[len('encoder') :]}" if message.startswith("encoder") else message
                ) from None
            except TypeError as err:  # e.g. a value set for another encoder option left in encoders.<m>
                if "unexpected keyword argument" not in str(err):
                    raise
                raise ConfigError(
                    f"encoders.{m}: {err}; remove it (~encoders.{m}.<key>) or pick a matching encoder"
                ) from None
        return nn.ModuleDict(encoders)

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{modality: (B, encoding_size)}`` for each encoded modality present in ``batch``."""
        return {m: enc(batch[m]) for m, enc in self.encoders.items() if m in batch}

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        if not self._batch_checked:  # once: the datamodule keeps the contract (nothing dropped, nothing extra)
            self.data.check_batch(batch)
            self._batch_checked = True

    def prepare_for_evaluation(self) -> None:
        """Called after loading a checkpoint for ``fit: false`` (e.g. restore best-validation weights)."""

    # ---- the loss and the training loop's contract -----------------------------------------------------------
    def step_loss(self, batch: Batch) -> StepLoss | None:
        """The loss of ``batch`` (a :class:`StepLoss`), or ``None`` to skip the batch (nothing to learn from it).
        Called by ``training_step`` and ``validation_step``; the one method an objective must implement."""
        raise NotImplementedError(f"{type(self).__name__}: implement step_loss(batch) -> StepLoss | None")

    def train_loss_scale(self) -> float:
        """The factor the training loss is multiplied by before ``backward`` (logged unscaled); 1 by default."""
        return 1

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        """``step_loss``, checked finite and logged (``train/loss``, its parts as ``train/loss_<name>``); the loss
        to backpropagate (× :meth:`train_loss_scale`), or ``None`` for a skipped batch."""
        step = self.step_loss(batch)
        if step is None:
            return None
        ensure_finite(step.loss, self.global_step, self.finite_hint, batch)
        for name, part in (step.parts or {}).items():
            self.log(f"train/loss_{name}", part, batch_size=step.n)
        self.log("train/loss", step.loss, prog_bar=True, batch_size=step.n)
        scale = self.train_loss_scale()
        return step.loss if scale == 1 else step.loss * scale

    def validation_step(self, batch: Batch, batch_idx: int) -> StepLoss | None:
        """``step_loss`` logged as ``val/loss`` (its parts as ``val/loss_<name>``), synced over DDP ranks; returns
        the step (a subclass's ``validation_step`` may use its ``outputs``), or ``None`` for a skipped batch."""
        step = self.step_loss(batch)
        if step is None:
            return None
        for name, part in (step.parts or {}).items():
            self.log(f"val/loss_{name}", part, sync_dist=True, batch_size=step.n)
        self.log("val/loss", step.loss, prog_bar=True, sync_dist=True, batch_size=step.n)
        return step

    def save_init_hyperparameters(self, **resolved) -> None:
        """``save_hyperparameters`` of the most derived ``__init__``'s arguments (data, encoders, optimizer and
        scheduler left out: configs, not numbers), callable from a base class's ``__init__``; ``resolved`` replaces
        given values with the ones in effect (e.g. ``pair=None`` → the dataset's first two modalities)."""
        frame = inspect.currentframe().f_back
        outer = frame
        while frame is not None and frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is self:
            outer, frame = frame, frame.f_back
        try:
            self.save_hyperparameters(ignore=["data", "encoders", "optimizer", "scheduler"], frame=outer)
        finally:
            del frame, outer
        for key, value in resolved.items():
            if key in self._hparams:
                self._hparams[key] = value
                self._hparams_initial[key] = copy.deepcopy(value)

    # ---- optimisation ----------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups; the default is one group of every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        if not groups:
            raise ConfigError("objective: no trainable parameters (all encoders frozen?); run with fit=false")
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise ConfigError("objective.scheduler: needs a finite run (trainer.max_steps or trainer.max_epochs)")
            kwargs["total_steps"] = int(total)
        schedule = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": self.scheduler_interval}}


GATHER = ("global", "local")


class PairedObjective(Objective):
    """A loss on the embeddings of paired items of two modalities: contrastive (InfoNCE, CLIP, SigLIP) or
    redundancy-reducing (VICReg, Barlow Twins) and the like.

    To write one: implement :meth:`pair_loss` — a scalar of the pair's embeddings ``h_a``, ``h_b``, each (N, d), row
    i of both from the same item, N the *global* batch under DDP with ``gather: global`` — and give the objective its
    own hyper-parameters (``__init__`` arguments, checked there with a :class:`ConfigError` naming
    ``objective.<key>``; saved as ``self.hparams`` automatically) and a config ``conf/objective/<name>.yaml``.
    What comes for free, beyond :class:`Objective`'s non-finite check, ``train/loss`` and ``val/loss``:

    * ``pair`` (``objective.pair``): two distinct modalities of the dataset (default its first two), one encoder
      each (``self.encoders``); ``self.pair = (a, b)``;
    * ``gather`` (``objective.gather``): under DDP, ``global`` hands ``pair_loss`` every rank's rows in rank order
      (this rank's keep autograd, the others arrive detached:
      :func:`~mmrep.objectives.distributed.gather_rows`) and multiplies the training loss by the world size, so
      that DDP's gradient average is the one-process gradient of the loss on the global batch; ``local`` = each
      rank's batch alone. The same on one device;
    * :meth:`loss_parameter`: the loss's own parameters (a learnable temperature, a head on the gathered rows) get
      the one-process gradient under DDP too;
    * a batch of fewer than 2 pairs (a remainder batch) is skipped when the loss of a pair depends on the batch's
      other pairs (:meth:`batch_dependent`: in-batch negatives, batch statistics; True by default), and
      :meth:`check_data` refuses, before training, a ``dataset.batch_size`` that leaves fewer than 2 pairs per
      gathered batch.

    Hooks to override when needed: :meth:`views` (more embeddings than the pair, e.g. MMCL's fresh negatives: they
    are gathered too and passed to ``pair_loss`` after ``h_a, h_b``), :meth:`batch_dependent`, and the class
    attributes ``loss_name`` (the results.csv row of ``val/loss``), ``finite_hint``, ``objective_name`` and
    ``batch_use`` (messages). A whole objective, CLIP's symmetric cross-entropy at a fixed temperature (the shipped
    :class:`~mmrep.objectives.clip.CLIP` also learns it, through :meth:`loss_parameter`)::

        class CLIP(PairedObjective):
            loss_name = "clip"
            finite_hint = "lower objective.optimizer.lr or raise objective.temperature"

            def __init__(self, data, encoders, encoding_size=None, pair=None, gather="global",
                         temperature: float = 0.07, optimizer=None, scheduler=None, scheduler_interval="step"):
                super().__init__(data, encoders, encoding_size, pair, gather, optimizer, scheduler, scheduler_interval)
                if temperature <= 0:
                    raise ConfigError(f"objective.temperature: must be > 0, got {temperature}")

            def pair_loss(self, h_a, h_b):  # (N, d) each → scalar
                logits = F.normalize(h_a, dim=1) @ F.normalize(h_b, dim=1).T / self.hparams.temperature
                labels = torch.arange(h_a.shape[0], device=h_a.device)
                return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    and a config for it, ``conf/objective/<name>.yaml`` (``_target_``: the class's import path)::

        defaults: [{/optimizer@optimizer: adam}, _self_]
        _target_: mmrep.objectives.clip.CLIP
        encoding_size: null
        pair: null
        gather: global
        temperature: 0.07
        scheduler: null
        scheduler_interval: step

    Args:
        data, encoders, encoding_size, optimizer, scheduler, scheduler_interval: see :class:`Objective`.
        pair: the two modalities ``[a, b]``; the dataset's first two when ``None``.
        gather: ``global`` or ``local`` (above).
    """

    #: the objective's name in messages (``objective=<name>``, its config's name); default: the class name, lowercase
    objective_name: str | None = None
    #: what the loss does with the batch's other pairs, in :meth:`check_data`'s message
    batch_use = "contrasts each pair with the other pairs of its batch"

    def __init__(
        self,
        data: DataSpec,
        encoders: Mapping[str, EncoderFactory],
        encoding_size: int | None = None,
        pair: Sequence[str] | None = None,
        gather: str = "global",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, optimizer, scheduler, scheduler_interval)
        pair = tuple(pair) if pair is not None else tuple(data.names[:2])
        if len(pair) != 2 or pair[0] == pair[1] or any(m not in data.modalities for m in pair):
            raise ConfigError(f"objective.pair: needs two of the dataset's modalities {data.names}, got {list(pair)}")
        if gather not in GATHER:
            raise ConfigError(f"objective.gather: one of {list(GATHER)}, got {gather!r}")
        self.pair, self.gather = pair, gather
        self.save_init_hyperparameters(pair=pair)
        self.encoders = self.build_encoders(pair)

    @property
    def objective_label(self) -> str:
        """``objective=<name>`` for messages."""
        return f"objective={self.objective_name or type(self).__name__.lower()}"

    # ---- what a subclass implements ----------------------------------------------------------------------------
    def pair_loss(self, h_a: torch.Tensor, h_b: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) of the pair's embeddings ``h_a``, ``h_b`` (N, d) — the global batch with ``gather:
        global`` under DDP — and of ``extra``, the further embeddings :meth:`views` appends (none by default).
        Implement this or :meth:`pair_terms` (then this is its loss)."""
        if type(self).pair_terms is not PairedObjective.pair_terms:
            return self.pair_terms(h_a, h_b, *extra)[0]
        raise NotImplementedError(f"{type(self).__name__}: implement pair_loss(h_a, h_b) -> scalar tensor")

    def batch_dependent(self, fresh_negatives: bool) -> bool:
        """Whether a pair's loss depends on the batch's other pairs (then a batch needs at least 2), for a batch
        with or without more embeddings than the pair (``fresh_negatives``: :meth:`views` appended some, or for
        :meth:`check_data` the dataset yields them). True by default."""
        return True

    # ---- what comes for free ----------------------------------------------------------------------------------
    def views(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """This rank's embeddings of ``batch`` for the loss: ``(h_a, h_b)``, each (n, d); a subclass may append
        more (each (m, d)), gathered and passed to :meth:`pair_loss` in the same order."""
        a, b = self.pair
        h = self.encode(batch)
        return h[a], h[b]

    def embeddings(self, batch: Batch, *rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`views` of this rank, or with ``gather: global`` under DDP of the global batch (rank order; autograd
        through this rank's rows only), followed by ``rows`` (per-item tensors of the batch, e.g. its labels
        ``batch["y"]``) gathered with them."""
        out = (*self.views(batch), *rows)
        return gather_rows(*out) if self.gather == "global" else out

    def loss(self, batch: Batch) -> torch.Tensor:
        """The loss of ``batch`` (over the global batch under DDP with ``gather: global``)."""
        return self.pair_loss(*self.embeddings(batch))

    def step_loss(self, batch: Batch) -> StepLoss | None:
        """The loss and the number of pairs it saw; ``None`` for a batch of one pair when the loss is
        :meth:`batch_dependent` (nothing to contrast: the loss would be meaningless). Under DDP every rank decides on
        the same global count."""
        h = self.embeddings(batch)
        n = h[0].shape[0]
        if n < 2 and self.batch_dependent(len(h) > 2):
            return None
        loss, parts = self.pair_terms(*h)
        return StepLoss(loss, n, parts)

    def pair_terms(self, *h: torch.Tensor) -> tuple[torch.Tensor, Mapping[str, torch.Tensor] | None]:
        """:meth:`pair_loss` and its named terms (logged beside it as ``loss_<name>``); no terms by default. A loss
        made of weighted terms implements this instead of :meth:`pair_loss`."""
        return self.pair_loss(*h), None

    def loss_parameter(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` — a tensor of the loss's own parameters (a learnable temperature or bias, a prediction head) — as
        :meth:`pair_loss` must use it. With ``gather: global`` under DDP every rank computes the loss of the whole
        global batch, so such a parameter gets its full gradient on every rank, which the world-size scaling of the
        training loss would multiply; this undoes it (value unchanged). Encoders need nothing: their gradient flows
        through this rank's rows only."""
        return scale_grad(value, 1.0 / self.train_loss_scale())

    def train_loss_scale(self) -> float:
        # every rank holds the global loss but backpropagates through its own rows only; DDP averages the ranks'
        # gradients, so the world size restores the one-process gradient (objectives/distributed.py)
        return world_size() if self.gather == "global" else 1

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """Before training: a :meth:`batch_dependent` loss needs at least two pairs per batch it sees — the device's
        batch, or with ``gather: global`` the global one (every device's batch together)."""
        if not self.batch_dependent(bool(getattr(datamodule, "negatives", False))):
            return
        world = max(world_size, 1)
        ranks = world if self.gather == "global" else 1  # devices whose pairs one loss sees
        batch = int(getattr(datamodule, "batch_size", 2))
        n_train = len(datamodule.split("train")) if hasattr(datamodule, "split") else None
        per_device = batch if n_train is None else min(batch, math.ceil(n_train / world))
        if per_device * ranks < 2:
            where = f"dataset.batch_size={batch}" if n_train is None or batch < 2 else f"a train split of {n_train}"
            raise ConfigError(
                f"dataset.batch_size: {self.objective_label} {self.batch_use}; {where} over {world} device(s) leaves "
                f"{per_device * ranks} pair per contrasted batch (objective.gather={self.gather}; at least 2 are "
                "needed)"
            )
        if n_train is not None and (math.ceil(n_train / world) % batch) * ranks == 1:
            log.warning(
                "%s: the last training batch of each epoch holds one pair and is skipped (no negatives); "
                "dataset.batch_size=%d, %d training samples",
                self.objective_label,
                batch,
                n_train,
            )
