"""A base for image–text datasets with known generative factors and biased captions (arXiv:2504.10143;
crossmodal_mislaignment main_mpi3dreal.py, main_causal3dident.py).

Subclasses name their factors (``SEMANTIC``: the ones captions may mention, which ``bias.theta``/``bias.beta``
select and perturb by name; ``IMAGE_ONLY``; ``TEXT_ONLY``), which are continuous, and optionally the paper's
numbered settings (``SETTINGS``, reachable as ``bias.setting=selection_<i>``). The base resolves the bias, gives
every factor its role for the probes (``metric=factors``), maps the probe splits (fit on val, score on test, as
main_mpi3dreal.py) and expands stored token ids to one-hot tokens one batch at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from mmrep.bias.misalignment import MisalignmentBias, ResolvedBias
from mmrep.core.contract import Batch
from mmrep.core.errors import ConfigError
from mmrep.data.base import InMemorySplitDataModule
from mmrep.data.captions import checked_vocabulary, one_hot, save_vocabulary
from mmrep.data.integrity import FIX, check_finite


def read_factor_table(path: Path, columns: Sequence[str], source: str, integer: bool = False) -> pd.DataFrame:
    """A CSV of factor values with at least ``columns`` (numeric; ``integer``: integer), else a one-line ConfigError
    naming ``dataset.data_dir``, the file, the expected format and ``source``."""
    expected = f"a CSV with {'integer' if integer else 'numeric'} columns {list(columns)}"
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ConfigError(f"dataset.data_dir: no such file {path}; expected {expected}, from {source}") from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ConfigError(
            f"dataset.data_dir: {path} is not a readable CSV ({type(err).__name__}); expected {expected}, from {source}"
        ) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(
            f"dataset.data_dir: {path} has columns {list(table.columns)} lacking {missing}; expected {expected}"
        )
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        text = values.isna() & table[column].notna()
        if text.any():
            row = int(text.to_numpy().nonzero()[0][0])
            raise ConfigError(
                f"dataset.data_dir: {path}, column {column!r}: {int(text.sum())} non-numeric cells (row {row}: "
                f"{table[column].iloc[row]!r}); expected {expected}"
            )
        check_finite(values.to_numpy(np.float64), f"dataset.data_dir: {path}, column {column!r}")
        if integer and len(table) and not pd.api.types.is_integer_dtype(table[column]):
            raise ConfigError(f"dataset.data_dir: {path}, column {column!r} holds non-integers; expected {expected}")
    return table


class FactorDataModule(InMemorySplitDataModule):
    """Modalities ``image`` and ``text`` (one-hot tokens); held-out batches carry ``latents[factor]`` (N, 1).

    Subclasses set the class attributes below, call ``super().__init__`` first, then set ``self.vocab_size`` and
    ``self.spec``, and store ``text`` as (N, L) int64 token ids in :meth:`load_splits`.
    """

    SEMANTIC: ClassVar[tuple[str, ...]]
    IMAGE_ONLY: ClassVar[tuple[str, ...]] = ()
    TEXT_ONLY: ClassVar[tuple[str, ...]] = ()
    CONTINUOUS: ClassVar[frozenset[str]] = frozenset()
    SETTINGS: ClassVar[Mapping[str, Sequence[Sequence[str]]] | None] = None

    vocab_size: int
    _unsaved_vocabulary: Path | None = None  # set by use_vocabulary when it built a new one

    def __init__(self, bias: MisalignmentBias | None, batch_size: int, num_workers: int = 0) -> None:
        super().__init__(batch_size, align_split="test", num_workers=num_workers)
        self.bias: ResolvedBias = (bias or MisalignmentBias(name="none")).resolve(
            len(self.SEMANTIC), names=list(self.SEMANTIC), settings=self.SETTINGS
        )

    def use_vocabulary(self, path: Path, captions: Sequence[Sequence[str]]) -> None:
        """Set ``vocab``/``vocab_size`` from the file at ``path`` (the original's ``vocab_<type>_<id>.json``) when it
        holds every word of ``captions`` (the ones the original built it from), else build it from them with a
        warning naming the file; a new one is saved there once the data has loaded (nothing written before)."""
        self.vocab, rebuilt = checked_vocabulary(path, captions, "dataset.data_dir")
        self.vocab_size, self._unsaved_vocabulary = len(self.vocab), path if rebuilt else None

    def data_origin(self) -> tuple[str, str, str]:
        root = getattr(self, "root", None)  # the datasets read from files; generated ones have none
        return super().data_origin() if root is None else ("dataset.data_dir", str(root), FIX)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self._unsaved_vocabulary is not None:
            save_vocabulary(self._unsaved_vocabulary, self.vocab)
            self._unsaved_vocabulary = None

    def paper_setting(self, dataset: str) -> tuple[str, int]:
        """``(kind, index)`` of the paper setting the bias is, for datasets whose captions exist only for those."""
        if self.bias.setting is None:
            ids = [f"{k}_{i}" for k, table in (self.SETTINGS or {}).items() for i in range(len(table))]
            raise ConfigError(
                f"bias: dataset={dataset} has captions only for the paper's settings {ids}; pick one with "
                f"bias=none bias.setting=<id> ({self.bias_label} matches none of them)"
            )
        kind, _, index = self.bias.setting.rpartition("_")
        return kind, int(index)

    @property
    def bias_label(self) -> str:
        """The paper setting id, else ``θ={...} β={...}`` with factor names."""
        if self.bias.setting is not None:
            return self.bias.setting
        names = lambda ids: "{" + ", ".join(self.SEMANTIC[i] for i in ids) + "}"  # noqa: E731
        return f"θ={names(self.bias.selected)} β={names(self.bias.perturbed_selected)}"

    def decode_batch(self, batch: Batch) -> Batch:
        return {**batch, "text": one_hot(batch["text"], self.vocab_size)}

    PROBE_SPLITS = {"probe_fit": "val", "probe_eval": "test"}  # main_mpi3dreal.py

    def heldout(self, purpose: str, n: int | None = None, chunk: int | None = None):
        """As :meth:`InMemorySplitDataModule.heldout`; ``probe_fit`` = val and ``probe_eval`` = test
        (main_mpi3dreal.py)."""
        return super().heldout(self.PROBE_SPLITS.get(purpose, purpose), n, chunk)

    def heldout_size(self, purpose: str, n: int | None = None) -> int:
        return super().heldout_size(self.PROBE_SPLITS.get(purpose, purpose), n)

    def factor_roles(self) -> dict[str, str]:
        """Each factor's role: invariant (selected, unperturbed), perturbed, omitted, image- or text-specific."""
        roles = {f: "omitted" for f in self.SEMANTIC}
        roles.update({self.SEMANTIC[j]: "invariant" for j in self.bias.invariant})
        roles.update({self.SEMANTIC[j]: "perturbed" for j in self.bias.perturbed_selected})
        roles.update({f: "image-specific" for f in self.IMAGE_ONLY})
        roles.update({f: "text-specific" for f in self.TEXT_ONLY})
        return roles

    def factor_kinds(self) -> dict[str, str]:
        return {f: "continuous" if f in self.CONTINUOUS else "discrete" for f in self.factor_roles()}
