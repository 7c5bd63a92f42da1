"""Selection (θ) and perturbation (β) bias of the second modality.

Original: arXiv:2504.10143; crossmodal_mislaignment main_numeric.py. The text modality sees only the *selected* semantic
latents ``I_θ``; the selected latents in ``I_β`` are *perturbed* (each coordinate, independently per sample, gets
additive Gaussian noise with probability ``change_prob``). MMCL should identify exactly the *invariant* set
``I_θ \\ I_β``.

θ and β are given either as explicit lists of 0-based latent indices or as the original code's integer
indices into the graded-lexicographic powerset of non-empty subsets (so ``--theta-value 1022`` in the paper's
scripts is ``bias.theta=1022`` here). ``β = -1`` means ∅ (the original's default). Datasets with named factors
accept names, and datasets with the papers' numbered settings accept ``bias.setting=selection_2`` (or
``perturbation_3``) as a shorthand for that setting's θ and β (main_mpi3dreal.py's
``--bias-id``, generate_latents.py's settings).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

from mmrep.core.errors import ConfigError

IndexSpec = Union[None, int, Sequence[int]]


@lru_cache(maxsize=8)
def _powerset(n: int) -> tuple[tuple[int, ...], ...]:
    """All non-empty subsets of ``range(n)``: by size, then ``itertools.combinations`` order (main_numeric.py)."""
    return tuple(c for r in range(1, n + 1) for c in itertools.combinations(range(n), r))


def powerset_subset(index: int, n: int) -> tuple[int, ...]:
    """The subset that the original code's integer ``index`` denotes among the non-empty subsets of range(n)."""
    table = _powerset(n)
    if not 0 <= index < len(table):
        raise IndexError(f"powerset index {index} out of range 0..{len(table) - 1} for {n} latents")
    return table[index]


def powerset_index(subset: Sequence[int], n: int) -> int:
    """Inverse of :func:`powerset_subset` (e.g. ``powerset_index(range(8), 10) == 967``)."""
    key = tuple(sorted(set(int(i) for i in subset)))
    try:
        return _powerset(n).index(key)
    except ValueError:
        raise IndexError(f"{list(subset)} is not a non-empty subset of range({n})") from None


@dataclass(frozen=True)
class ResolvedBias:
    """A bias checked against a concrete number of semantic latents. All index tuples are sorted, 0-based."""

    n_semantics: int
    selected: tuple[int, ...]  # I_θ
    perturbed: tuple[int, ...]  # I_β as given (may include unselected latents; harmless, main_numeric.py)
    change_prob: float
    noise_std: float
    setting: str | None = None  # the paper's setting id this bias is (``selection_2``), when the dataset has them

    @property
    def perturbed_selected(self) -> tuple[int, ...]:
        """``I_θ ∩ I_β``: the latents the text sees corrupted."""
        return tuple(i for i in self.selected if i in set(self.perturbed))

    @property
    def invariant(self) -> tuple[int, ...]:
        """``I_θ \\ I_β``: the unbiased shared latents MMCL should block-identify."""
        return tuple(i for i in self.selected if i not in set(self.perturbed))

    @property
    def omitted(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_semantics) if i not in set(self.selected))


class MisalignmentBias:
    """Config-level value object for ``bias=`` (see ``conf/bias/*.yaml``).

    Args:
        theta: selected latents ``I_θ``: ``None`` = all, a list of indices, or a powerset index (int).
        beta: perturbed latents ``I_β``: ``None``/``[]``/``-1`` = ∅, a list of indices, or a powerset index.
        change_prob: probability that a perturbable coordinate is corrupted (crossmodal_mislaignment main_numeric.py
            default 0.75).
        noise_std: std of the additive Gaussian noise in the independent regime (main_numeric.py ``--cond-param`` 1.0).
        name: a label for tables (the ``bias=`` option name).
        setting: a paper setting id of the dataset (``selection_<i>`` / ``perturbation_<i>``, plural accepted) in
            place of ``theta`` and ``beta``.

    A plain class (not a dataclass) so that Hydra passes it to datamodules as an object.
    """

    def __init__(
        self,
        theta: IndexSpec = None,
        beta: IndexSpec = None,
        change_prob: float = 0.75,
        noise_std: float = 1.0,
        name: str = "custom",
        setting: str | None = None,
    ) -> None:
        self.theta = list(theta) if theta is not None and not isinstance(theta, (int, str)) else theta
        self.beta = list(beta) if beta is not None and not isinstance(beta, (int, str)) else beta
        self.change_prob, self.noise_std, self.name, self.setting = change_prob, noise_std, name, setting

    def __repr__(self) -> str:
        setting = f", setting={self.setting!r}" if self.setting is not None else ""
        return f"MisalignmentBias(name={self.name!r}, theta={self.theta!r}, beta={self.beta!r}{setting})"

    def resolve(
        self,
        n_semantics: int,
        names: Sequence[str] | None = None,
        settings: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> ResolvedBias:
        """Validate against ``n_semantics`` latents; every error names the config key. With ``names`` (the
        dataset's semantic factor names, e.g. ``[color, shape, size, background]``) θ and β may list names.
        ``settings`` are the dataset's numbered paper settings: ``{"selection": [θ_0, θ_1, ...], "perturbation":
        [β_0, β_1, ...]}`` as factor names (θ of a perturbation setting: every factor); a resolved bias that equals
        one of them carries its id in ``setting``."""
        theta, beta, setting_id = self.theta, self.beta, None
        if self.setting is not None:
            if theta is not None or not _is_empty_beta(beta):
                raise ConfigError(
                    f"bias.setting: {self.setting!r} fixes θ and β; leave bias.theta and bias.beta null "
                    "(e.g. bias=none bias.setting=...)"
                )
            kind, index = _parse_setting(self.setting, settings)
            chosen = list(settings[kind][index])  # a perturbation setting selects every factor
            theta, beta = (chosen, []) if kind == "selection" else (None, chosen)
            setting_id = f"{kind}_{index}"
        if not 0.0 <= float(self.change_prob) <= 1.0:
            raise ConfigError(f"bias.change_prob: must lie in [0, 1], got {self.change_prob}")
        if float(self.noise_std) < 0:
            raise ConfigError(f"bias.noise_std: must be >= 0, got {self.noise_std}")
        selected = _as_index_set(
            _names_to_indices(theta, names, "bias.theta"), n_semantics, "bias.theta", none_means_all=True
        )
        if not selected:
            raise ConfigError("bias.theta: the selected set I_θ is empty; the text would share no latent")
        perturbed = _as_index_set(
            _names_to_indices(beta, names, "bias.beta"), n_semantics, "bias.beta", none_means_all=False
        )
        resolved = ResolvedBias(
            n_semantics=n_semantics,
            selected=selected,
            perturbed=perturbed,
            change_prob=float(self.change_prob),
            noise_std=float(self.noise_std),
            setting=setting_id or _matching_setting(selected, perturbed, settings, names),
        )
        stray = [i for i in perturbed if i not in selected]
        if stray:
            raise ConfigError(
                f"bias.beta: latent {stray[0]} is perturbed but not selected by bias.theta {list(selected)}; "
                "the text never sees it, so the perturbation would have no effect"
            )
        if not resolved.invariant:
            raise ConfigError(
                f"bias.beta: every selected latent {list(selected)} is perturbed, so I_θ \\ I_β is empty "
                "and nothing is left to identify"
            )
        return resolved

    @property
    def is_identity(self) -> bool:
        """True when the bias leaves the second modality untouched (``bias=none``)."""
        return self.theta is None and _is_empty_beta(self.beta) and self.setting is None


def _parse_setting(setting: str, settings) -> tuple[str, int]:
    """``selection_2`` / ``selections_2`` → ("selection", 2), checked against the dataset's table."""
    if not settings:
        raise ConfigError("bias.setting: this dataset has no numbered paper settings; give bias.theta and bias.beta")
    kind, _, index = str(setting).rpartition("_")
    kind = kind[:-1] if kind.endswith("s") else kind
    ids = [f"{k}_{i}" for k in settings for i in range(len(settings[k]))]
    if kind not in settings or not index.isdigit() or int(index) >= len(settings[kind]):
        raise ConfigError(f"bias.setting: unknown setting {setting!r}; this dataset's settings are {ids}")
    return kind, int(index)


def _matching_setting(selected, perturbed, settings, names) -> str | None:
    """The id of the first paper setting equal to this θ and β (``None`` when none is, or there are none)."""
    if not settings or names is None:
        return None
    everything = tuple(range(len(names)))
    for kind, table in settings.items():
        for index, factors in enumerate(table):
            ids = tuple(sorted(names.index(f) for f in factors))
            theta, beta = (ids, ()) if kind == "selection" else (everything, ids)
            if (theta, beta) == (selected, tuple(i for i in perturbed if i in selected)):
                return f"{kind}_{index}"
    return None


def _names_to_indices(spec: IndexSpec, names: Sequence[str] | None, key: str) -> IndexSpec:
    """A list of factor names (or indices) as indices into ``names``; other specs unchanged."""
    if spec is None or isinstance(spec, (int, str)) or not any(isinstance(i, str) for i in spec):
        return spec
    if names is None:
        raise ConfigError(f"{key}: this dataset's latents have no names; give 0-based indices, got {list(spec)}")
    unknown = [i for i in spec if isinstance(i, str) and i not in names]
    if unknown:
        raise ConfigError(f"{key}: unknown factor {unknown[0]!r}; the semantic factors are {list(names)}")
    return [names.index(i) if isinstance(i, str) else i for i in spec]


def _is_empty_beta(beta: IndexSpec) -> bool:
    return beta is None or (isinstance(beta, int) and beta == -1) or (not isinstance(beta, int) and len(beta) == 0)


def _as_index_set(spec: IndexSpec, n: int, key: str, *, none_means_all: bool) -> tuple[int, ...]:
    if spec is None:
        return tuple(range(n)) if none_means_all else ()
    if isinstance(spec, bool):
        raise ConfigError(f"{key}: expected a list of latent indices or a powerset index, got {spec!r}")
    if isinstance(spec, int):
        if spec == -1 and not none_means_all:
            return ()  # the original's β = -1 means ∅ (main_numeric.py)
        n_subsets = 2**n - 1
        if not 0 <= spec < n_subsets:
            raise ConfigError(
                f"{key}: powerset index {spec} out of range 0..{n_subsets - 1} for {n} semantic latents"
                + (" (or -1 for ∅)" if not none_means_all else "")
            )
        return powerset_subset(spec, n)
    if isinstance(spec, str):
        raise ConfigError(f"{key}: expected a list of latent indices or a powerset index, got the string {spec!r}")
    try:
        items = [int(i) for i in spec]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a list of integer latent indices, got {spec!r}") from None
    bad = [i for i in items if not 0 <= i < n]
    if bad:
        raise ConfigError(f"{key}: latent index {bad[0]} out of range 0..{n - 1}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{key}: repeated latent index in {items}")
    return tuple(sorted(items))
