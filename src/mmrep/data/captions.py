"""Captions as token sequences: word splitting, the vocabulary, padded token ids, one-hot batches.

crossmodal_mislaignment main_mpi3dreal.py (shared by MPI3D-complex, Causal3DIdent and the rendered shapes): the
vocabulary holds ``{pad}=0, {eos}=1, {unk}=2`` and then every word of the captions it is built from (MPI3D: the train
split;
Causal3DIdent: all rows, as the original's main_causal3dident.py) in order of first occurrence; a caption becomes
its tokens, ``{eos}``, then ``{pad}`` up to a fixed length; each token is one-hot over the vocabulary. Token ids
are stored (int64, ``(N, L)``) and expanded to one-hot per batch, so a 400k-caption split costs megabytes, not
gigabytes.

Words are split as the original's NLTK ``word_tokenize`` splits them (its word step, ``NLTKWordTokenizer``, which
needs no NLTK data): an opening double quote becomes two backticks, a closing one two apostrophes, and ``:`` before
a letter and ``'s`` are split off, so ``A "xkcd:robin's egg" cow.`` has the 10 tokens
A, two backticks, xkcd, :, robin, 's, egg, two apostrophes, cow, ".". The original first splits the whole
file into sentences with punkt; splitting on lines gives the same sentences and tokens for every caption its
generators write (the golden tests: tests/test_golden_causal3dident.py, tests/test_golden_mpi3d.py). Unknown words
map to ``{unk}`` (the original
returned the *string* ``"{unk}"`` and would crash).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from mmrep.core.errors import ConfigError
from mmrep.core.files import atomic_write

log = logging.getLogger(__name__)

PAD, EOS, UNK = "{pad}", "{eos}", "{unk}"
SPECIALS = (PAD, EOS, UNK)


@lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer  # imported on first use: nltk's import takes a second

    return NLTKWordTokenizer()


def tokenize(text: str) -> list[str]:
    """One caption's words as NLTK's ``word_tokenize`` gives them (as the original's
    main_mpi3dreal.py and main_causal3dident.py), e.g.
    ``A "tab:blue" coffee-cup.`` → A, two backticks, tab, :, blue, two apostrophes, coffee-cup, "."."""
    return _word_tokenizer().tokenize(text)


def tokenize_all(texts: Iterable[str]) -> list[list[str]]:
    """:func:`tokenize` of each text; repeated texts (templated captions: few templates and words) are tokenised
    once and share their list."""
    tokens: dict[str, list[str]] = {}
    return [tokens[t] if t in tokens else tokens.setdefault(t, tokenize(t)) for t in texts]


def build_vocabulary(captions: Iterable[Sequence[str]]) -> dict[str, int]:
    """``{pad, eos, unk}`` then every word of the tokenised ``captions`` in order of first occurrence."""
    vocab = {w: i for i, w in enumerate(SPECIALS)}
    for words in captions:
        for word in words:
            vocab.setdefault(word, len(vocab))
    return vocab


def load_vocabulary(path: Path, key: str) -> dict[str, int] | None:
    """The vocabulary stored at ``path`` (the original's ``{"w2i": ..., "i2w": ...}`` JSON), ``None`` when there is
    none; a file that is not one is a ConfigError naming ``key`` and the path."""
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))["w2i"]
        ok = all(vocab.get(w) == i for i, w in enumerate(SPECIALS)) and sorted(vocab.values()) == list(
            range(len(vocab))
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ConfigError(
            f'{key}: {path} is not a vocabulary file (JSON {{"w2i": {{word: id}}, "i2w": ...}} with '
            f"{', '.join(SPECIALS)} = 0, 1, 2 and ids 0..V-1); delete it to rebuild it from the training captions"
        )
    return {str(w): int(i) for w, i in vocab.items()}


def checked_vocabulary(path: Path, captions: Sequence[Sequence[str]], key: str) -> tuple[dict[str, int], bool]:
    """``(vocabulary, rebuilt)``: the one stored at ``path`` when it holds every word of the tokenised ``captions``,
    else one built from them (``rebuilt``: the caller saves it over ``path``). A stored file that misses words (one
    from an older tokenizer or from fewer captions) would turn them into ``{unk}``; it is rebuilt with one warning."""
    stored = load_vocabulary(path, key)
    if stored is None:
        return build_vocabulary(captions), True
    total = sum(map(len, captions))
    missing = sum(w not in stored for words in captions for w in words)
    if not missing:
        return stored, False
    distinct = len({w for words in captions for w in words if w not in stored})
    log.warning(
        "%s: %s lacks %d of the captions' %d tokens (%d distinct words, which would become %s); rebuilding it "
        "from the captions",
        key,
        path,
        missing,
        total,
        distinct,
        UNK,
    )
    return build_vocabulary(captions), True


def save_vocabulary(path: Path, vocab: dict[str, int]) -> None:
    """Write ``vocab`` in the original's JSON layout, atomically; a read-only folder only costs the file."""
    try:
        with atomic_write(path, "w") as fh:
            json.dump({"w2i": vocab, "i2w": {str(i): w for w, i in vocab.items()}}, fh, ensure_ascii=False)
    except OSError as err:
        log.warning("could not save the vocabulary to %s (%s); using it from memory", path, err.strerror or err)


def token_ids(captions: Sequence[Sequence[str]], vocab: dict[str, int], length: int) -> torch.Tensor:
    """(N, length) int64: each caption's word ids, ``{eos}``, then ``{pad}``. ``length`` must exceed every caption."""
    ids = np.zeros((len(captions), length), np.int64)  # {pad} = 0
    unk, eos = vocab[UNK], vocab[EOS]
    for i, words in enumerate(captions):
        row = [vocab.get(w, unk) for w in words]
        if len(row) >= length:
            raise ValueError(f"caption {i} has {len(row)} tokens; length {length} leaves no room for {EOS}")
        ids[i, : len(row)] = row
        ids[i, len(row)] = eos
    return torch.from_numpy(ids)


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, L) token ids → (B, L, V) float32 one-hot (on the ids' device)."""
    return torch.nn.functional.one_hot(ids, vocab_size).to(torch.float32)


def read_caption_lines(path: Path, key: str, source: str) -> list[list[str]]:
    """Tokenised captions of a one-caption-per-line text file, with or without a final newline (main_mpi3dreal.py: the
    lines are the sentences the original's punkt ``sent_tokenize`` finds in the whole file, tests/test_golden_*)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key}: no such file {path}; expected one caption per line, from {source}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{key}: {path} is not a readable UTF-8 text file ({type(err).__name__}); expected one "
            f"caption per line, from {source}"
        ) from None
    return tokenize_all(line for line in text.splitlines() if line.strip())


def write_caption_files(
    table_path: Path, table, text_path: Path, captions: Sequence[str], trailing_newline: bool = True
) -> list[Path]:
    """One setting's caption-factor CSV and its one-caption-per-line text file, each written atomically;
    ``trailing_newline=False`` ends the last line without one (Causal3DIdent's layout)."""
    with atomic_write(table_path) as fh:
        table.to_csv(fh, index=False)
    with atomic_write(text_path) as fh:
        fh.write("\n".join(captions) + ("\n" if trailing_newline and captions else ""))
    return [table_path, text_path]


def render_text_main(
    argv, dataset: str, default_root: str, change_prob: float, render, add_arguments=None, prog: str | None = None
) -> int:
    """The ``python -m mmrep.data.<dataset> render-text`` command (``prog``: ``mmrep data <dataset>``): ``--root``,
    ``--seed``, ``--change-prob`` (and ``add_arguments(parser)``'s), then ``render(args)`` returning the written paths;
    errors are one line, exit 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog=prog or f"python -m mmrep.data.{dataset}",
        description=f"{dataset} captions for the 'Negate or Embrace' settings",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("render-text", help="write every paper setting's caption files, seeded")
    sub.add_argument("--root", type=Path, default=Path(default_root))
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument(
        "--change-prob",
        type=float,
        default=change_prob,
        help=f"perturbation redraw probability (default {change_prob:g}, as crossmodal_mislaignment's rendering_data/)",
    )
    if add_arguments is not None:
        add_arguments(sub)
    args = parser.parse_args(argv)
    if not 0 <= args.change_prob <= 1:
        parser.error(f"--change-prob: must lie in [0, 1], got {args.change_prob}")
    try:
        written = render(args)
    except (ConfigError, OSError) as err:
        print(f"{parser.prog.removeprefix('python -m ')}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files under {args.root}")
    return 0
