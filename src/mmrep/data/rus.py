"""Synthetic redundancy/uniqueness (RUS) data (arXiv:2502.16282; multimodal_alignment
synthetic/generate_prob_data.py, generate_prob_utils.py).

Two 12-bit modalities share 8 bits ``x_c``; each has 4 unique bits (``x_u1``, ``x_u2``). The 4-class label reads
8 bits: ``r`` shared ones and ``U = 8 − r`` unique ones, through a fixed random linear map, a softmax at
temperature 0.05 and a prior-balancing step. Modality 1 is then passed through a fixed random ``tanh`` network of
depth ``D_φ`` (the heterogeneity). Everything is vectorised and reproduces the original generator's numbers
(its numpy legacy RNG streams and torch initialisation); the per-sample original is in
``benchmarks/bench_rus_generator.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from mmrep.core.contract import DataSpec, ModalitySpec
from mmrep.core.errors import ConfigError, check_positive_ints
from mmrep.core.files import atomic_write
from mmrep.data.base import InMemorySplitDataModule, check_split_fractions, reject_bias, train_statistics
from mmrep.data.integrity import nonfinite_problem

log = logging.getLogger(__name__)

SHARED_BITS, UNIQUE_BITS, LABEL_BITS = 8, 4, 8  # configs/rus_prob_template.yaml: shared/unique_feature_dim, max_red
INFORMATION_KEYS = ("I(X1,X2;Y)", "I(X1;Y)", "I(X2;Y)", "I(X1;X2;Y)")  # the original's mutual_information
FORMAT_VERSION = 2  # bump when the cached arrays' meaning changes (2: the original's id stream, p= passed)


def bit_table(n_bits: int) -> np.ndarray:
    """All ``2**n_bits`` binary vectors in ``itertools.product([0, 1], repeat=n)`` order (bit 0 = MSB), uint8."""
    ids = np.arange(2**n_bits)[:, None]
    return ((ids >> np.arange(n_bits - 1, -1, -1)) & 1).astype(np.uint8)


def label_rules(redundancy: int, features_seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the label's bits inside ``x_c``, ``x_u1``, ``x_u2`` (synthetic/generate_prob_data.py).

    ``u1 = (8 − r) // 2``, ``u2 = 8 − r − u1``; three ``choice(replace=False)`` draws after reseeding numpy."""
    u1 = (LABEL_BITS - redundancy) // 2
    u2 = LABEL_BITS - redundancy - u1
    rng = np.random.RandomState(features_seed)
    red = rng.choice(SHARED_BITS, redundancy, replace=False)
    rule1 = rng.choice(UNIQUE_BITS, u1, replace=False)
    rule2 = rng.choice(UNIQUE_BITS, u2, replace=False)
    return red, rule1, rule2


def bit_names() -> tuple[str, ...]:
    """The 16 ground-truth bits every batch carries under ``latents`` (synthetic/generate_prob_data.py): ``xc_0..xc_7``
    (x_c, seen by both modalities), ``xu1_0..xu1_3`` (x_u1, modality x0 only), ``xu2_0..xu2_3`` (x_u2, modality x1
    only); index k = position k of :func:`bit_table` (bit 0 = MSB), the positions :func:`label_rules` returns."""
    return (
        *(f"xc_{k}" for k in range(SHARED_BITS)),
        *(f"xu1_{k}" for k in range(UNIQUE_BITS)),
        *(f"xu2_{k}" for k in range(UNIQUE_BITS)),
    )


def bit_latents(xc: np.ndarray, xu1: np.ndarray, xu2: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: (N,) int64 0/1}`` for every name of :func:`bit_names`, from the (N,) block ids of
    :func:`sample_inputs_and_labels`."""
    blocks = (bit_table(SHARED_BITS)[xc], bit_table(UNIQUE_BITS)[xu1], bit_table(UNIQUE_BITS)[xu2])
    return dict(zip(bit_names(), np.concatenate(blocks, axis=1).astype(np.int64).T))


def bit_roles(redundancy: int, features_seed: int = 1) -> dict[str, str]:
    """Each bit's role for the label of redundancy ``r`` (synthetic/generate_prob_data.py): ``shared-label`` /
    ``shared-other`` (x_c bits the label reads / does not), ``x0-unique-label`` / ``x0-unique-other`` (x_u1, seen by
    modality x0 only) and ``x1-unique-label`` / ``x1-unique-other`` (x_u2, modality x1 only)."""
    red, rule1, rule2 = (set(map(int, rule)) for rule in label_rules(redundancy, features_seed))
    roles = {}
    for name in bit_names():
        block, k = name.rsplit("_", 1)
        group, used = {"xc": ("shared", red), "xu1": ("x0-unique", rule1), "xu2": ("x1-unique", rule2)}[block]
        roles[name] = f"{group}-{'label' if int(k) in used else 'other'}"
    return roles


def label_weights(rng: np.random.RandomState, num_classes: int = 4) -> np.ndarray:
    """``W ~ U(0,1)^{8×C}`` with unit-L2 rows (generate_prob_data.py)."""
    W = rng.uniform(size=(LABEL_BITS, num_classes))
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def balance(q: np.ndarray, target: np.ndarray, max_rounds: int = 100, atol: float = 0.01) -> np.ndarray:
    """The original's ``adjust_q``: rescale q(y|x) per class towards the prior ``target`` (uniform inputs)."""
    for _ in range(max_rounds):
        marginal = q.mean(axis=0)
        if np.allclose(marginal, target, atol=atol):
            break
        q = q * (target / marginal)
        q = q / q.sum(axis=1, keepdims=True)
    return q


def pattern_conditional(W: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Balanced ``p(y | v)`` for each of the 256 label-bit patterns ``v`` (rows in ``bit_table(8)`` order).

    The label reads 8 bits that are i.i.d. uniform for every r (generate_prob_data.py), so every pattern has the same
    multiplicity among the 65,536 input combinations: softmax and balancing over the 256 patterns give exactly
    the per-combination table of the original, 256× cheaper."""
    logits = bit_table(LABEL_BITS).astype(np.float64) @ W / temperature  # row k of W meets position k of v
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits)
    q /= q.sum(axis=1, keepdims=True)
    return balance(q, np.full(W.shape[1], 1.0 / W.shape[1]))


def label_patterns(redundancy: int, features_seed: int = 1) -> np.ndarray:
    """(256, 16, 16) index of the label-bit pattern ``v = [x_c[red], x_u1[rule1], x_u2[rule2]]`` (generate_prob_data.py)
    of every (x_c, x_u1, x_u2) combination."""
    red, rule1, rule2 = label_rules(redundancy, features_seed)
    xc, xu = bit_table(SHARED_BITS).astype(np.int64), bit_table(UNIQUE_BITS).astype(np.int64)
    weight = 1 << np.arange(LABEL_BITS - 1, -1, -1)  # v[0] is the most significant bit
    w_red, w1, w2 = np.split(weight, [len(red), len(red) + len(rule1)])
    return (xc[:, red] @ w_red)[:, None, None] + (xu[:, rule1] @ w1)[None, :, None] + (xu[:, rule2] @ w2)[None, None, :]


def conditional_table(
    redundancy: int, temperature: float = 0.05, num_classes: int = 4, features_seed: int = 1, weights_seed: int = 2
) -> tuple[np.ndarray, np.random.RandomState]:
    """``p(y | x_c, x_u1, x_u2)`` as a (256, 16, 16, C) table, and the weights RNG right after drawing W (the
    original samples the inputs from that state, synthetic/generate_prob_data.py)."""
    rng = np.random.RandomState(weights_seed)
    W = label_weights(rng, num_classes)
    return pattern_conditional(W, temperature)[label_patterns(redundancy, features_seed)], rng


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> dict[str, float]:
    """Exact information quantities (nats) of the label table with uniform inputs (generate_prob_data.py):
    ``I(X1,X2;Y)``, ``I(X1;Y)``, ``I(X2;Y)`` and the co-information ``I(X1;X2;Y) = I(X1;Y) + I(X2;Y) − I(X1,X2;Y)``
    (the quantity the original's ``mi_x1_x2_y`` computes and wrongly names its files by, in generate_prob_data.py)."""
    joint = table / table[..., 0].size  # p(xc, xu1, xu2, y)
    h_y = _entropy(joint.sum(axis=(0, 1, 2)))

    def info(p_xy: np.ndarray) -> float:  # I(X;Y) = H(Y) − H(Y|X) with p_xy (…, C)
        p_x = p_xy.sum(axis=-1)
        return h_y - (_entropy(p_xy) - _entropy(p_x))

    i_all = info(joint)
    i_x1 = info(joint.sum(axis=2))  # X1 = (xc, xu1)
    i_x2 = info(joint.sum(axis=1))  # X2 = (xc, xu2)
    return {"I(X1,X2;Y)": i_all, "I(X1;Y)": i_x1, "I(X2;Y)": i_x2, "I(X1;X2;Y)": i_x1 + i_x2 - i_all}


def sample_inputs_and_labels(
    table: np.ndarray, rng: np.random.RandomState, num_data: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``x_c``, ``x_u1``, ``x_u2`` ids then one label per sample (synthetic/generate_prob_data.py), vectorised,
    draw for draw the original's stream.

    The original passes an explicit uniform ``p`` to ``choice`` for the ids, which numpy samples by
    ``random_sample`` + ``searchsorted`` — a different stream from ``choice`` without ``p``, so ``p`` is passed here
    too. For the labels it calls ``rng.choice(C, p=p_i)`` per sample; each call consumes one uniform and picks the
    first class whose normalised cumulative probability exceeds it, so one ``random_sample(N)`` and a row-wise
    count give the identical labels."""
    xc = rng.choice(256, num_data, p=np.full(256, 1 / 256))
    xu1 = rng.choice(16, num_data, p=np.full(16, 1 / 16))
    xu2 = rng.choice(16, num_data, p=np.full(16, 1 / 16))
    cdf = table[xc, xu1, xu2].cumsum(axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random_sample(num_data)
    y = (cdf <= u[:, None]).sum(axis=1)
    return xc, xu1, xu2, y.astype(np.int64)


def heterogeneity_transforms(max_depth: int, transforms_seed: int = 0, width: int = 12) -> list[nn.Module]:
    """The fixed random networks for depths 0..max_depth (synthetic/generate_prob_data.py): depth D is
    ``Linear → [Tanh → Linear] × D``, built in depth order after one ``torch.manual_seed`` (default init)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(transforms_seed)
        nets = []
        for depth in range(max_depth + 1):
            layers: list[nn.Module] = [nn.Linear(width, width)]
            for _ in range(depth):
                layers += [nn.Tanh(), nn.Linear(width, width)]
            nets.append(nn.Sequential(*layers))
    finally:
        torch.random.set_rng_state(state)
    return nets


def split_indices(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Stratified train/valid/test indices: a ``1 − train`` holdout, then divided valid:test (generate_prob_data.py:
    70/15/15 gives 45,875/9,830/9,831). Seeded, where the original used the unseeded global RNG."""
    train, valid, test = fractions
    index = np.arange(len(y))
    tr, rest = train_test_split(index, test_size=1 - train, stratify=y, random_state=seed)
    va, te = train_test_split(rest, test_size=test / (valid + test), stratify=y[rest], random_state=seed + 1)
    return {"train": np.sort(tr), "val": np.sort(va), "test": np.sort(te)}


def transform_modality1(net: nn.Module, xc: np.ndarray, xu2: np.ndarray) -> np.ndarray:
    """``net([x_c, x_u2])`` per sample, evaluated once on each of the 4,096 distinct inputs and gathered."""
    distinct = np.concatenate(
        [np.repeat(bit_table(SHARED_BITS), 16, axis=0), np.tile(bit_table(UNIQUE_BITS), (256, 1))], axis=1
    ).astype(np.float32)  # row xc·16 + xu2
    with torch.no_grad():
        outputs = net(torch.from_numpy(distinct)).numpy()
    return outputs[xc * 16 + xu2]


def generate_rus(redundancy: int, depth: int, **generator) -> dict[str, np.ndarray]:
    """One (r, D_φ) dataset: ``x0`` (N, 12) = [x_c, x_u1] bits, ``x1`` (N, 12) = transform_D([x_c, x_u2]),
    ``label`` (N,), the bit ids ``xc, xu1, xu2`` and the exact information quantities ``mi/...``.
    ``generator``: the other arguments of :func:`generate_grid` (num_data, temperature, seeds, ...)."""
    ((_, arrays),) = generate_grid([redundancy], [depth], **generator)
    return arrays


def generate_grid(
    redundancies=range(9),
    depths=range(11),
    num_data: int = 65_536,
    num_classes: int = 4,
    temperature: float = 0.05,
    features_seed: int = 1,
    weights_seed: int = 2,
    transforms_seed: int = 0,
):
    """Yield ``((r, D), arrays)`` for every pair, sharing the work the pairs have in common: one label table and
    sample per r (the inputs are the same for every r, synthetic/generate_prob_data.py) and one transformed modality 1
    per depth."""
    depths = list(depths)
    nets = heterogeneity_transforms(max(depths), transforms_seed)
    transformed: dict[int, np.ndarray] = {}
    for r in redundancies:
        table, rng = conditional_table(r, temperature, num_classes, features_seed, weights_seed)
        xc, xu1, xu2, y = sample_inputs_and_labels(table, rng, num_data)
        bits_c, bits_u = bit_table(SHARED_BITS), bit_table(UNIQUE_BITS)
        x0 = np.concatenate([bits_c[xc], bits_u[xu1]], axis=1).astype(np.float32)
        mi = {f"mi/{k}": np.float64(v) for k, v in mutual_information(table).items()}
        for depth in depths:
            if depth not in transformed:
                transformed[depth] = transform_modality1(nets[depth], xc, xu2)
            yield (r, depth), {"x0": x0, "x1": transformed[depth], "label": y, "xc": xc, "xu1": xu1, "xu2": xu2, **mi}


# ---- on-disk cache --------------------------------------------------------------------------------------
DIGEST_KEY = "params_sha256"  # the cache file's own record of the parameters it was generated for
_unwritable_dirs: set[Path] = set()  # cache folders already warned about (warn once per process)


def cache_path(data_dir: Path, params: dict) -> Path:
    """``<data_dir>/rus_r{r}_d{D}_<hash of every generation parameter>.npz``."""
    return Path(data_dir) / f"rus_r{params['redundancy']}_d{params['depth']}_{params_digest(params)[:12]}.npz"


def params_digest(params: dict) -> str:
    """sha256 of the canonical JSON of ``params`` and :data:`FORMAT_VERSION`, stored in the cache file as
    ``params_sha256``: the 12-character name hash alone cannot tell a file generated for other parameters."""
    key = json.dumps({**params, "format": FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()


def cache_schema(params: dict) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of every array :func:`generate_rus` returns for ``params``."""
    n, width = params["num_data"], SHARED_BITS + UNIQUE_BITS
    ids = np.dtype(np.intp)  # what ``RandomState.choice(..., p=...)`` returns
    schema = {
        "x0": ((n, width), np.dtype(np.float32)),
        "x1": ((n, width), np.dtype(np.float32)),
        "label": ((n,), np.dtype(np.int64)),
        "xc": ((n,), ids),
        "xu1": ((n,), ids),
        "xu2": ((n,), ids),
    }
    schema.update({f"mi/{k}": ((), np.dtype(np.float64)) for k in INFORMATION_KEYS})
    return schema


def cache_problem(arrays: dict[str, np.ndarray], params: dict) -> str | None:
    """Why ``arrays`` read from a cache file are not the data for ``params`` (None: they are)."""
    digest = arrays.get(DIGEST_KEY)
    if digest is None:
        return f"no {DIGEST_KEY} (written before the cache recorded its parameters)"
    if digest.shape != () or digest.dtype.kind != "U" or str(digest) != params_digest(params):
        return f"{DIGEST_KEY} does not match the parameters (generated for other ones)"
    schema = cache_schema(params)
    missing = [k for k in schema if k not in arrays]
    if missing:
        return f"missing arrays {missing}"
    for key, (shape, dtype) in schema.items():
        if arrays[key].shape != shape:
            return f"{key} has shape {arrays[key].shape}, expected {shape}"
        if arrays[key].dtype != dtype:
            return f"{key} has dtype {arrays[key].dtype}, expected {dtype}"
    label = arrays["label"]
    if label.size and not 0 <= label.min() <= label.max() < params["num_classes"]:
        return f"labels outside 0..{params['num_classes'] - 1}"
    return next((f"{key}: {p}" for key in ("x0", "x1") if (p := nonfinite_problem(arrays[key]))), None)


def read_cache(path: Path, params: dict) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)`` from a valid cache file for ``params``, else ``(None, why not)``."""
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            return None, f"not an npz archive (holds one {type(stored).__name__})"
        with stored:
            arrays = {k: stored[k] for k in stored.files}
    except Exception as err:  # damaged bytes raise BadZipFile, EOFError, OSError, ValueError, zlib.error,
        # tokenize.TokenError, NotImplementedError, ... from zipfile's and numpy's parsers: any of them means regenerate
        return None, f"unreadable ({type(err).__name__}: {err})"
    problem = cache_problem(arrays, params)
    if problem:
        return None, problem
    return {k: arrays[k] for k in cache_schema(params)}, None


def load_or_generate(data_dir: Path, params: dict, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Read the cached arrays for ``params`` or generate and cache them (written atomically; plain arrays,
    no pickles). A cache file that is unreadable or does not hold the data for ``params`` (see
    :func:`cache_problem`) is regenerated and overwritten, with a warning; a cache folder that cannot be written
    is warned about once and the data are generated in memory."""
    path = cache_path(data_dir, params)
    if use_cache and path.is_file():
        arrays, problem = read_cache(path, params)
        if arrays is not None:
            return arrays
        log.warning("RUS cache %s: %s; regenerating it", path, problem)
    arrays = generate_rus(**params)
    if use_cache:
        try:
            write_cache(path, arrays, params)
        except OSError as err:
            if path.parent not in _unwritable_dirs:
                _unwritable_dirs.add(path.parent)
                log.warning(
                    "RUS cache: cannot write %s (%s: %s); generating the data in memory instead (set "
                    "dataset.data_dir to a writable folder to cache it)",
                    path,
                    type(err).__name__,
                    err,
                )
    return arrays


def write_cache(path: Path, arrays: dict[str, np.ndarray], params: dict) -> None:
    """Write ``arrays`` (generated for ``params``, whose digest is stored beside them) to ``path`` (npz)
    atomically, so no half-written cache is ever read."""
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays, **{DIGEST_KEY: np.array(params_digest(params))})


class RUSDataModule(InMemorySplitDataModule):
    """The RUS synthetic dataset for one redundancy ``r`` and heterogeneity depth ``D_φ``
    (synthetic/generate_prob_data.py).

    Batches are dicts ``{"x0": (B, 12), "x1": (B, 12), "y": (B,), "latents": {bit: (B, 1) int64}}``: modality 0 =
    [x_c, x_u1] bits, modality 1 = transform_{D_φ}([x_c, x_u2]); both z-scored with train statistics
    (synthetic/get_data.py); ``latents`` are the 16 generating bits (:func:`bit_names`), with
    :meth:`factor_roles` saying which the label reads (``metric=factors`` probes them). Splits train/val/test;
    ``heldout("align", n)`` = the first ``n`` test samples (as scripts/get_alignment.py); ``probe_fit`` = val,
    ``probe_eval`` = test (as the factor probes of crossmodal_mislaignment main_mpi3dreal.py).

    Args:
        redundancy: r in 0..8 shared label bits (uniqueness U = 8 − r). depth: D_φ >= 0 tanh layers.
        num_data, num_classes, temperature, features_seed, weights_seed, transforms_seed: the generator
            (rus_prob_template.yaml: 65,536, 4, 0.05, 1, 2, 0).
        splits: train/val/test fractions (generate_prob_data.py: 0.7/0.15/0.15). split_seed: their stratified shuffle.
        batch_size: 512 as synthetic/get_data.py. data_dir: cache folder (one that cannot be written: the data are
            generated in memory, with a warning). cache: read/write the npz cache.
    """

    def __init__(
        self,
        redundancy: int = 8,
        depth: int = 1,
        num_data: int = 65_536,
        num_classes: int = 4,
        temperature: float = 0.05,
        features_seed: int = 1,
        weights_seed: int = 2,
        transforms_seed: int = 0,
        splits=(0.7, 0.15, 0.15),
        split_seed: int = 0,
        batch_size: int = 512,
        standardize: bool = True,
        data_dir: str = "data/rus",
        cache: bool = True,
        bias=None,
    ) -> None:
        if (
            isinstance(redundancy, bool)
            or not isinstance(redundancy, (int, np.integer))
            or not 0 <= redundancy <= LABEL_BITS
        ):
            raise ConfigError(f"dataset.redundancy: must be an integer in 0..8 (U = 8 − r), got {redundancy!r}")
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise ConfigError(f"dataset.depth: the heterogeneity depth D_φ must be an integer >= 0, got {depth!r}")
        check_positive_ints("dataset", num_data=num_data, num_classes=num_classes, batch_size=batch_size)
        if num_classes < 2:
            raise ConfigError(f"dataset.num_classes: needs at least 2 classes, got {num_classes}")
        if temperature <= 0:
            raise ConfigError(f"dataset.temperature: must be > 0, got {temperature}")
        splits = check_split_fractions(splits)
        smallest = min(int(num_data * s) for s in splits)
        if smallest < 2 * num_classes:
            raise ConfigError(
                f"dataset.splits: {list(splits)} of num_data={num_data} leaves a split with ~{smallest} samples; "
                f"stratified splits need at least {2 * num_classes} (2 per class)"
            )
        reject_bias(bias, "rus")
        super().__init__(batch_size)
        self.params = dict(
            redundancy=int(redundancy),
            depth=int(depth),
            num_data=int(num_data),
            num_classes=int(num_classes),
            temperature=float(temperature),
            features_seed=int(features_seed),
            weights_seed=int(weights_seed),
            transforms_seed=int(transforms_seed),
        )
        self.splits, self.split_seed = splits, int(split_seed)
        self.standardize, self.data_dir, self.cache = standardize, Path(data_dir), cache
        self.info: dict[str, float] = {}
        width = SHARED_BITS + UNIQUE_BITS
        self.spec = DataSpec(
            modalities={"x0": ModalitySpec((width,)), "x1": ModalitySpec((width,))},
            task="classification",
            num_classes=int(num_classes),
            encoding_size=width,  # align_configs/rus_prob.yaml: the encoder's hidden/output width is 12
            latent_names=bit_names(),
        )

    def prepare_data(self) -> None:
        # generate and cache once (rank 0); setup() reads it. Without a cache setup() generates in memory.
        if self.cache and not cache_path(self.data_dir, self.params).is_file():
            load_or_generate(self.data_dir, self.params, self.cache)

    def load_splits(self) -> dict[str, dict[str, torch.Tensor]]:
        arrays = load_or_generate(self.data_dir, self.params, self.cache)
        self.info = {k.split("/", 1)[1]: float(v) for k, v in arrays.items() if k.startswith("mi/")}
        log.info(
            "RUS r=%d (U=%d), D_phi=%d: %s nats",
            self.params["redundancy"],
            LABEL_BITS - self.params["redundancy"],
            self.params["depth"],
            ", ".join(f"{k}={v:.4f}" for k, v in self.info.items()),
        )
        y = arrays["label"]
        index = split_indices(y, self.splits, self.split_seed)
        x0, x1 = arrays["x0"], arrays["x1"]
        if self.standardize:  # per-feature z-score with train statistics (synthetic/get_data.py)
            x0, x1 = (_zscore(x, index["train"]) for x in (x0, x1))
        bits = bit_latents(arrays["xc"], arrays["xu1"], arrays["xu2"])
        return {
            name: {
                "x0": torch.from_numpy(x0[i]),
                "x1": torch.from_numpy(x1[i]),
                "y": torch.from_numpy(y[i]),
                "latents": {b: torch.from_numpy(v[i, None]) for b, v in bits.items()},
            }
            for name, i in index.items()
        }

    PROBE_SPLITS = {"probe_fit": "val", "probe_eval": "test"}  # as the factor probes of main_mpi3dreal.py

    def heldout(self, purpose: str, n: int | None = None, chunk: int | None = None):
        """As :meth:`InMemorySplitDataModule.heldout`; ``probe_fit`` = val and ``probe_eval`` = test."""
        return super().heldout(self.PROBE_SPLITS.get(purpose, purpose), n, chunk)

    def heldout_size(self, purpose: str, n: int | None = None) -> int:
        return super().heldout_size(self.PROBE_SPLITS.get(purpose, purpose), n)

    def factor_roles(self) -> dict[str, str]:
        """``{bit: role}`` of :func:`bit_roles` for this redundancy (shared-label, x0-unique-other, ...)."""
        return bit_roles(self.params["redundancy"], self.params["features_seed"])

    def factor_kinds(self) -> dict[str, str]:
        return {bit: "discrete" for bit in bit_names()}


def _zscore(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    mean, std = train_statistics(x, train)
    return ((x - mean) / std).astype(np.float32)


def main(argv=None, prog: str | None = None) -> int:
    """``python -m mmrep.data.rus`` (``mmrep data rus``): generate and cache the RUS datasets, print their information
    quantities."""
    parser = argparse.ArgumentParser(prog=prog or "python -m mmrep.data.rus", description=main.__doc__)
    parser.add_argument("--redundancy", type=int, nargs="+", default=list(range(9)), help="r values (default 0..8)")
    parser.add_argument("--depths", type=int, nargs="+", default=list(range(11)), help="D_phi values (default 0..10)")
    parser.add_argument("--num-data", type=int, default=65_536)
    parser.add_argument("--data-dir", type=Path, default=Path("data/rus"))
    args = parser.parse_args(argv)
    bad = [r for r in args.redundancy if not 0 <= r <= LABEL_BITS] + [d for d in args.depths if d < 0]
    if bad:
        parser.error(f"--redundancy must be in 0..8 and --depths >= 0, got {bad}")
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    table = Table(title="RUS label information (nats)")
    for col in ("r", "U", *INFORMATION_KEYS):
        table.add_column(col, justify="right")
    pairs = [(r, d) for r in args.redundancy for d in args.depths]
    # the datamodule's parameters (the original's defaults) are the cache key runs will look up
    generator = RUSDataModule(num_data=args.num_data).params
    del generator["redundancy"], generator["depth"]
    grid = generate_grid(args.redundancy, args.depths, **generator)
    for (r, depth), arrays in track(grid, total=len(pairs), description="generating"):
        params = {"redundancy": r, "depth": depth, **generator}
        write_cache(cache_path(args.data_dir, params), arrays, params)
        if depth == args.depths[0]:
            table.add_row(str(r), str(LABEL_BITS - r), *[f"{float(arrays[f'mi/{k}']):.4f}" for k in INFORMATION_KEYS])
    Console().print(table)
    print(f"{len(pairs)} datasets cached under {args.data_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
