"""``metric=downstream``: how well a frozen representation predicts tasks built from the semantics, in and out of
distribution (crossmodal_mislaignment eval_numeric_predict.py).

Tasks from the unperturbed ``s``: ``y1..y4 = f(s_0..s_{2,4,6,8})`` (regression, R²) and ``y5 = [y2 > threshold]``
(classification, MCC) scored in distribution and on a shifted set whose ``s_8, s_9`` follow
``c ← 2·sign(c)·c²``. Deliberate differences from the original's eval_numeric_predict.py, each configurable:
the y5 threshold is the median of y2 on the probe-fit set, as the paper states (``label_rule``: ``median``;
``kmeans`` = one KMeans(2) midpoint fitted on the probe-fit set's y2 and applied to every set; ``kmeans_per_batch`` =
the original's rule: each set is cut into 4,096-sample batches and each batch is labelled by its own KMeans(2),
lower-centre cluster 0); the exponential weight is the paper's 0.4 (code: 0.6); the ±10 spikes the code added to the
shifted coordinates are off by default (``spike_prob: 0.1`` restores them); regression probes train on
standardised targets (R² is unchanged by that scaling).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import matthews_corrcoef, r2_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from mmrep.core.errors import ConfigError
from mmrep.metrics.common import encode_batches, probe_table
from mmrep.metrics.probes import undefined_probe

TASK_PREFIX = {"y1": 3, "y2": 5, "y3": 7, "y4": 9}
LABEL_RULES = ("median", "kmeans", "kmeans_per_batch")
GENERATION_BATCH = 4096  # eval_numeric_predict.py: the original's sets are 5 × 4096 samples, labelled batch by batch


def kmeans_midpoint(y: np.ndarray) -> float:
    """The midpoint of the two 1-D centres of ``KMeans(2, n_init=10, random_state=42)`` on ``y``."""
    from sklearn.cluster import KMeans

    centres = KMeans(2, n_init=10, random_state=42).fit(y.reshape(-1, 1)).cluster_centers_.ravel()
    return float(np.sort(centres).mean())


def kmeans_labels_per_batch(y: np.ndarray, batch: int = GENERATION_BATCH) -> np.ndarray:
    """The original's y5 (eval_numeric_predict.py): each ``batch``-sample block clustered by its own KMeans(2); the
    cluster with the lower centre is 0."""
    from sklearn.cluster import KMeans

    out = np.empty(len(y), np.int64)
    for lo in range(0, len(y), batch):
        block = y[lo : lo + batch].reshape(-1, 1)
        fit = KMeans(2, n_init=10, random_state=42).fit(block)
        high = int(np.argmax(fit.cluster_centers_.ravel()))
        out[lo : lo + batch] = (fit.labels_ == high).astype(np.int64)
    return out


def task_function(z: torch.Tensor, exp_weight: float = 0.4) -> torch.Tensor:
    """f(z) of eval_numeric_predict.py for (N, k) inputs → (N,): the pair and triple sums via elementary symmetric
    polynomials."""
    p1, p2, p3 = z.sum(1), z.square().sum(1), z.pow(3).sum(1)
    pairs = 0.5 * (p1.square() - p2)  # Σ_{i<j} z_i z_j
    triples = (p1.pow(3) - 3 * p1 * p2 + 2 * p3) / 6  # Σ_{i<j<k} z_i z_j z_k
    return (
        p2
        + 0.3 * p3
        + 0.5 * pairs
        + 0.2 * triples
        + 0.7 * (z.sin() + z.cos()).sum(1)
        + 0.4 * torch.log1p(z.abs()).sum(1)
        + exp_weight * torch.exp(-z.abs()).sum(1)
    )


def ood_shift(coords=(8, 9), spike_prob: float = 0.0):
    """The OOD marginal: ``c ← 2·sign(c)·c²`` on ``coords``, then (optionally) ``c ← 10·sign(c)`` with
    ``spike_prob``."""

    def shift(s: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        s = s.clone()
        cols = list(coords)
        c = s[:, cols]
        c = 2 * torch.sign(c) * c.square()
        if spike_prob > 0:
            spike = torch.rand(c.shape, generator=gen) < spike_prob
            c = torch.where(spike, 10 * torch.sign(c), c)
        s[:, cols] = c
        return s

    return shift


def constant_fit(y: np.ndarray) -> str | None:
    """Why a regression probe cannot fit ``y`` (N,): constant targets, which its standardisation divides by 0."""
    if len(y) and (y == y[0]).all():
        return f"the fit targets are constant ({y[0]:g} for all {len(y)} samples): their standardisation is 0/0"
    return None


def mlp_probe(z_fit, y_fit, z_eval_sets, out_dim: int, epochs: int, seed: int, classify: bool):
    """Linear(d,100)→ReLU→Linear(100,out), Xavier-uniform weights, zero biases, full-batch Adam(1e-3)."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(z_fit.shape[1], 100), nn.ReLU(), nn.Linear(100, out_dim)).double()
    for layer in (net[0], net[2]):
        nn.init.xavier_uniform_(layer.weight, generator=gen)
        nn.init.zeros_(layer.bias)
    x, y = torch.as_tensor(z_fit), torch.as_tensor(y_fit)
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        opt.zero_grad()
        out = net(x)
        loss_fn(out, y if classify else y.view(-1, 1)).backward()
        opt.step()
    with torch.no_grad():
        return [net(torch.as_tensor(z)).numpy() for z in z_eval_sets]


class Downstream:
    """Rows ``metric=r2|mcc, probe=mlp, modality, target=y1..y5, split=test|shifted``; a score that is undefined
    (constant targets, one class, non-finite representations: :func:`~mmrep.metrics.probes.undefined_probe`) is
    NaN with a ``reason``.

    Args:
        modality: whose representation to probe (eval_numeric_predict.py: the image encoder ``x``).
        n_fit, n_eval: sizes of the fit, test and shifted sets (eval_numeric_predict.py: 20,480 each).
        epochs: full-batch probe epochs (eval_numeric_predict.py: 10,000).
        exp_weight, spike_prob, label_rule (``median`` | ``kmeans`` | ``kmeans_per_batch``): see the module docstring.
    """

    def __init__(
        self,
        modality="x",
        n_fit=20_480,
        n_eval=20_480,
        epochs=10_000,
        exp_weight=0.4,
        spike_prob=0.0,
        label_rule="median",
        seed=0,
    ) -> None:
        if label_rule not in LABEL_RULES:
            raise ConfigError(f"metric.downstream.label_rule: one of {list(LABEL_RULES)}, got {label_rule!r}")
        self.modality, self.n_fit, self.n_eval, self.epochs = modality, int(n_fit), int(n_eval), int(epochs)
        self.exp_weight, self.spike_prob, self.label_rule, self.seed = exp_weight, spike_prob, label_rule, seed

    def labels(self, y2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """y5 for every set (``fit``, ``test``, ``shifted``) from its y2 values, by ``label_rule``."""
        if self.label_rule == "kmeans_per_batch":
            return {k: kmeans_labels_per_batch(v) for k, v in y2.items()}
        threshold = float(np.median(y2["fit"])) if self.label_rule == "median" else kmeans_midpoint(y2["fit"])
        return {k: (v > threshold).astype(np.int64) for k, v in y2.items()}

    def check(self, model, datamodule) -> None:
        """Fail at start-up unless the data are the numeric simulation with the ten semantics the tasks read."""
        if not hasattr(datamodule, "heldout") or getattr(datamodule, "n_semantics", 0) < 10:
            raise ConfigError("metric=downstream: needs dataset=numeric with n_semantics >= 10 (tasks use s_0..s_9)")
        if self.modality not in getattr(model, "encoders", {}):
            raise ConfigError(f"metric.downstream.modality: the objective has no encoder {self.modality!r}")

    def __call__(self, model, datamodule) -> pd.DataFrame:
        self.check(model, datamodule)
        sets = {
            "fit": datamodule.heldout("probe_fit", self.n_fit),
            "test": datamodule.heldout("probe_eval", self.n_eval),
            "shifted": datamodule.heldout("shifted", self.n_eval, shift=ood_shift(spike_prob=self.spike_prob)),
        }
        z = {k: encode_batches(model, v)[self.modality] for k, v in sets.items()}
        s = {k: torch.cat([b["latents"]["s"] for b in v]).double() for k, v in sets.items()}
        ys = {
            k: {t: task_function(v[:, :p], self.exp_weight).numpy() for t, p in TASK_PREFIX.items()}
            for k, v in s.items()
        }
        labels = self.labels({k: v["y2"] for k, v in ys.items()})
        why = {
            (t, "test"): undefined_probe(z["fit"], ys["fit"][t], z["test"], ys["test"][t], fit="fit", evaluate="test")
            or constant_fit(ys["fit"][t])
            for t in TASK_PREFIX
        }
        for split in ("test", "shifted"):
            why["y5", split] = undefined_probe(
                z["fit"], labels["fit"], z[split], labels[split], discrete=True, fit="fit", evaluate=split
            )
        values: dict[tuple[str, str], float] = {}
        if np.isfinite(z["fit"]).all():  # else every row has its reason, as has every row of a non-finite set
            scaler = StandardScaler().fit(z["fit"])
            zs = {k: scaler.transform(v) for k, v in z.items() if np.isfinite(v).all()}
            for t in TASK_PREFIX:
                if why[t, "test"]:
                    continue
                mean, std = ys["fit"][t].mean(), ys["fit"][t].std()
                fit_y = (ys["fit"][t] - mean) / std
                (pred,) = mlp_probe(zs["fit"], fit_y, [zs["test"]], 1, self.epochs, self.seed, False)
                values[t, "test"] = float(r2_score(ys["test"][t], pred.ravel() * std + mean))
            scored = [split for split in ("test", "shifted") if not why["y5", split]]
            if scored:  # the probe's training does not depend on the sets it predicts
                preds = mlp_probe(zs["fit"], labels["fit"], [zs[k] for k in scored], 2, self.epochs, self.seed, True)
                for split, logits in zip(scored, preds):
                    values["y5", split] = float(matthews_corrcoef(labels[split], logits.argmax(1)))
        return pd.DataFrame(
            [
                {
                    "metric": "mcc" if t == "y5" else "r2",
                    "probe": "mlp",
                    "modality": self.modality,
                    "target": t,
                    "value": values.get((t, sp), np.nan),
                    "split": sp,
                    "n_fit": self.n_fit,
                    "n_eval": self.n_eval,
                }
                | ({"reason": reason} if reason else {})
                for (t, sp), reason in why.items()
            ]
        )

    @staticmethod
    def summary(rows: pd.DataFrame):
        """A rich table: tasks × (metric, modality, probe, split)."""
        return probe_table(rows, "downstream tasks (in distribution / shifted)")
