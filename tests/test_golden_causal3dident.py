"""Causal3DIdent captions, tokens, vocabulary, token ids, lengths and splits equal the original code's outputs,
stored in tests/golden/causal3dident/ (how they were made: tests/golden/README.md)."""

from __future__ import annotations

import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fixtures import write_causal3dident
from mmrep.bias import MisalignmentBias
from mmrep.data import captions
from mmrep.data.captions import build_vocabulary, read_caption_lines, token_ids
from mmrep.data.causal3dident import (
    PALETTES,
    SEMANTIC,
    SETTINGS,
    TEXT_COLUMNS,
    Causal3DIdentDataModule,
    caption_table,
    captions_of,
    color_indices,
    image_path,
    palette,
    split_bounds,
)

GOLDEN = Path(__file__).parent / "golden" / "causal3dident"
FIXTURE_N = 47  # int(0.8 n) + int(0.1 n) = 41 but int(0.9 n) = 42; a few words occur only in the last 20 %
SETTING_NAMES = [f"{kind}s_{i}" for kind in SETTINGS for i in range(7)]
# every ordered pair of the five phrasings once, so that consecutive captions meet in every combination (the
# original splits the whole file into sentences; a caption's end and the next one's start decide each split)
DE_BRUIJN = (0, 0, 1, 0, 2, 0, 3, 0, 4, 1, 1, 2, 1, 3, 1, 4, 2, 2, 3, 2, 4, 3, 3, 4, 4)
SPOTLIGHT_VALUES = (
    0.0,
    0.1,
    0.19999999999999998,
    0.2,
    0.3,
    0.39999999999999997,
    0.4,
    0.5,
    0.5999999999999999,
    0.6,
    0.7,
    0.7999999999999999,
    0.8,
    0.9,
    0.9999999999999999,
    1.0,
)  # each bin, its edges, both ends


def enumeration(level: int) -> pd.DataFrame:
    """A caption table of selection ``level`` (the original's columns) in which each of the five templates meets
    every shape, x and y position, spotlight value of SPOTLIGHT_VALUES and every colour name its slots can hold
    (object: TABLEAU, spotlight: CSS4, background: XKCD; all names, not only the reachable ones). Row r has phrasing
    DE_BRUIJN[r % 25]; its t-th use of that phrasing takes value t of each cycle."""
    factors = SETTINGS["selection"][level]
    names = {f: palette(PALETTES[f])[0] for f in PALETTES if f in factors}
    # ≥ 7 shapes, 9 (y, x) pairs, 16 spotlight values, every name; 25 lets every caption end meet every next start
    per_phrasing = max([25, len(SPOTLIGHT_VALUES)] + [len(v) for v in names.values()])
    rows, seen = [], [0] * 5
    for r in range(25 * math.ceil(per_phrasing / 5)):
        j = DE_BRUIJN[r % 25]
        t, seen[j] = seen[j], seen[j] + 1
        row = {
            "object_shape": t % 7,
            "object_xpos": t % 3,
            "object_ypos": t // 3 % 3,
            "spotlight_pos": SPOTLIGHT_VALUES[t % len(SPOTLIGHT_VALUES)],
        }
        for f, palette_names in names.items():
            name_column, index_column = TEXT_COLUMNS[f]
            row[name_column], row[index_column] = palette_names[t % len(palette_names)], t % len(palette_names)
        rows.append({**row, "text_phrasing": j})
    return pd.DataFrame(rows)[[c for f in factors for c in TEXT_COLUMNS[f]] + ["text_phrasing"]]


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz") as stored:
        return {k: stored[k] for k in stored.files}


def golden_tokens(stored: dict[str, np.ndarray], case) -> tuple[np.ndarray, ...]:
    """One case's (sentence spans (S, 2), vocabulary (V,), token ids (N, L)) from a golden file."""
    return tuple(stored[f"{k}_{case}"] for k in ("spans", "i2w", "ids"))


def original_tokens(i2w: np.ndarray, ids: np.ndarray) -> list[list[str]]:
    """The original's word_tokenize tokens per caption, decoded from its token ids (words, then {eos}=1, {pad})."""
    return [[str(i2w[i]) for i in row[: list(row).index(1)]] for row in ids.tolist()]


def compare_text_file(tmp_path, text: str, spans: np.ndarray, i2w: np.ndarray, ids: np.ndarray) -> list[str]:
    """What differs between mmrep's reading of a text_raw.txt and the original's: [] when the lines are the punkt
    sentences and mmrep's tokens, vocabulary (built from all rows), length and token ids are the original's."""
    problems = []
    if [text[a:b] for a, b in spans] != text.split("\n"):
        problems.append("the lines are not the original's punkt sentences")
    path = tmp_path / "text_raw.txt"
    path.write_text(text)
    words = read_caption_lines(path, "dataset.data_dir", "golden")
    expected = original_tokens(i2w, ids)
    bad = [i for i, (a, b) in enumerate(zip(words, expected)) if a != b]
    if bad or len(words) != len(expected):
        example = words[bad[0]] if bad else None
        problems.append(f"tokens differ in {len(bad)} of {len(expected)} captions, e.g. {example}")
    vocab = build_vocabulary(words)
    if list(vocab) != list(i2w):
        problems.append(f"vocabulary differs ({len(vocab)} vs {len(i2w)} words)")
    elif max(map(len, words)) + 1 != ids.shape[1] or not np.array_equal(token_ids(words, vocab, ids.shape[1]), ids):
        problems.append("token ids or length differ")
    return problems


def test_every_caption_the_generator_can_write_is_worded_split_and_tokenised_as_the_original(tmp_path):
    stored = golden("enumeration")
    for level in range(7):
        lines = captions_of(enumeration(level), level)
        text = str(stored[f"text_{level}"])
        assert "\n".join(lines) == text, level  # the original's generate_text.py on the same caption table
        words = [line.split() for line in lines]  # every caption end meets every next caption start (DE_BRUIJN)
        pairs = {(a[-1], b[0]) for a, b in zip(words, words[1:])}
        assert len(pairs) == len({w[-1] for w in words}) * len({w[0] for w in words}), level
        assert compare_text_file(tmp_path, text, *golden_tokens(stored, level)) == [], level


def write_original_files(root) -> None:
    """The original's render of n = 47 (generate_latents.py --seed 0, generate_text.py) and 4×4 stand-in images."""
    stored = golden("original")
    root.mkdir(parents=True, exist_ok=True)
    (root / "latents_image.csv").write_text(str(stored["latents_image"]))
    for name in SETTING_NAMES:
        (root / f"latents_text_{name}.csv").write_text(str(stored[f"table_{name}"]))
        (root / "text" / name).mkdir(parents=True)
        (root / "text" / name / "text_raw.txt").write_text(str(stored[f"text_{name}"]))
    (root / "images").mkdir()
    for i in range(FIXTURE_N):
        Image.fromarray(np.full((4, 4, 3), 5 * i, np.uint8)).save(image_path(root, i, FIXTURE_N))


def test_the_original_files_load_with_its_tokens_vocabulary_ids_length_and_split(tmp_path):
    stored, root = golden("original"), tmp_path / "c3d"
    write_original_files(root)
    for name in SETTING_NAMES:
        i2w, ids = stored[f"i2w_{name}"], stored[f"ids_{name}"]
        assert compare_text_file(tmp_path, str(stored[f"text_{name}"]), *golden_tokens(stored, name)) == [], name
        dm = Causal3DIdentDataModule(MisalignmentBias(setting=name), data_dir=str(root))
        assert list(dm.vocab) == list(i2w) and dm.length == ids.shape[1], name  # vocabulary and length of all rows
        assert dm.bounds == (37, 41)  # main_causal3dident.py: int(0.8 n), + int(0.1 n)
        splits = dm.load_splits()
        assert [len(splits[s]["text"]) for s in ("train", "val", "test")] == [37, 4, 6]
        ours = np.concatenate([splits[s]["text"].numpy() for s in ("train", "val", "test")])
        np.testing.assert_array_equal(ours, ids)
    text_path = root / "text" / "perturbations_6" / "text_raw.txt"
    words = read_caption_lines(text_path, "dataset.data_dir", "golden")
    text_path.write_text(text_path.read_text() + "\n")  # an older mmrep's layout reads the same
    assert read_caption_lines(text_path, "dataset.data_dir", "golden") == words
    tokens = original_tokens(stored["i2w_perturbations_6"], stored["ids_perturbations_6"])
    train_words = {w for line in tokens[:37] for w in line}
    assert {w for line in tokens[37:] for w in line} - train_words  # words of val/test only: in the vocabulary too


def test_render_text_writes_the_original_captions_of_its_caption_tables(tmp_path):
    # mmrep's own render (its seeded perturbations): the original's generate_text.py on mmrep's tables wrote the same
    # bytes, with no newline after the last caption
    root, fixture = write_causal3dident(tmp_path, n=FIXTURE_N, size=8, seed=0), golden("fixture")
    for name in SETTING_NAMES:
        assert (root / "text" / name / "text_raw.txt").read_text() == str(fixture[f"text_{name}"]), name
    # the original's render: mmrep words its tables' rows as it did, and builds its selection tables from its latents
    stored = golden("original")
    latents = pd.read_csv(io.StringIO(str(stored["latents_image"])))
    truth = {f: latents[f].to_numpy() for f in SEMANTIC}
    for name in SETTING_NAMES:
        table = pd.read_csv(io.StringIO(str(stored[f"table_{name}"])), keep_default_na=False)
        kind, _, index = name.rpartition("_")
        index = int(index)
        assert captions_of(table, index if kind == "selections" else 6) == str(stored[f"text_{name}"]).split("\n"), name
        if kind == "selections":  # the same CSV bytes: columns, their order, names, indices, number formats
            ours = caption_table(truth, table["text_phrasing"].to_numpy(), SETTINGS["selection"][index])
            assert ours.to_csv(index=False) == str(stored[f"table_{name}"]), name
    # perturbation 0 perturbs nothing, but the original (generate_latents.py) used the *object* hue
    table = pd.read_csv(io.StringIO(str(stored["table_perturbations_0"])), keep_default_na=False)
    phrasing = table["text_phrasing"].to_numpy()
    bugged = caption_table({**truth, "background_color": truth["object_color"]}, phrasing, SEMANTIC)
    assert bugged.to_csv(index=False) == str(stored["table_perturbations_0"])
    assert (
        caption_table(truth, phrasing, SEMANTIC)["background_color_name"] != table["background_color_name"]
    ).any()  # mmrep's render-text uses the background hue


def test_split_bounds_and_colour_names_equal_the_originals():
    splits = golden("splits")
    assert [split_bounds(int(n)) for n in splits["n"]] == [tuple(b) for b in splits["bounds"].tolist()]
    assert split_bounds(19) == (15, 16) and int(0.9 * 19) == 17  # where mmrep's old int(0.9 n) differed
    colours = golden("colours")
    for palette_name in PALETTES.values():
        names = palette(palette_name)[0]
        assert [names[i] for i in color_indices(colours["hues"], palette_name)] == colours[palette_name].tolist()


def test_a_found_vocabulary_is_reused_if_it_covers_the_captions_else_rebuilt_with_one_warning(tmp_path, caplog):
    root = tmp_path / "c3d"
    write_original_files(root)
    i2w = golden("original")["i2w_selections_6"]
    path = root / "vocab_selections_6.json"
    path.write_bytes((GOLDEN / "vocab_selections_6.json").read_bytes())  # the original's own file
    with caplog.at_level(logging.WARNING):
        dm = Causal3DIdentDataModule(MisalignmentBias(setting="selection_6"), data_dir=str(root))
        dm.setup()
    assert list(dm.vocab) == list(i2w) and not caplog.records
    assert path.read_bytes() == (GOLDEN / "vocab_selections_6.json").read_bytes()  # reused, not rewritten

    old_regex = re.compile(r"[\w'-]+(?::[\w'-]+)*|[^\w\s]")  # an older mmrep's words, from the first 80 % only
    lines = str(golden("original")["text_selections_6"]).split("\n")
    old = build_vocabulary([old_regex.findall(line) for line in lines[:37]])
    captions.save_vocabulary(path, old)
    words = read_caption_lines(root / "text" / "selections_6" / "text_raw.txt", "dataset.data_dir", "golden")
    missing = sum(w not in old for line in words for w in line)
    with caplog.at_level(logging.WARNING):
        dm = Causal3DIdentDataModule(MisalignmentBias(setting="selection_6"), data_dir=str(root))
    (record,) = caplog.records
    message = record.getMessage()
    assert str(path) in message and f"lacks {missing} of the captions' {sum(map(len, words))} tokens" in message
    assert missing > 0.2 * sum(map(len, words)) and list(dm.vocab) == list(i2w)
    assert json.loads(path.read_text())["w2i"] == old  # nothing written before the data has loaded
    dm.setup()
    stored = json.loads(path.read_text())
    assert list(stored["w2i"]) == list(i2w) and stored["i2w"] == {str(i): w for i, w in enumerate(i2w)}
    assert token_ids([["never-seen"]], dm.vocab, 3).tolist() == [[2, 1, 0]]  # {unk}'s id (get_w2i: the string)


def test_the_golden_comparison_fails_when_the_tokenisation_changes(tmp_path, monkeypatch):
    old_regex = re.compile(r"[\w'-]+(?::[\w'-]+)*|[^\w\s]")  # mmrep's tokenizer before it followed NLTK
    monkeypatch.setattr(captions, "tokenize", old_regex.findall)
    stored = golden("enumeration")
    results = {
        level: compare_text_file(tmp_path, str(stored[f"text_{level}"]), *golden_tokens(stored, level))
        for level in range(7)
    }
    assert all(results[level] == [] for level in range(4))  # no quotes before level 4: the old words were NLTK's
    assert all(any(p.startswith("tokens differ") for p in results[level]) for level in range(4, 7)), results
    monkeypatch.setattr(captions, "tokenize", lambda text: text.split())  # any other change fails too
    assert compare_text_file(tmp_path, str(stored["text_0"]), *golden_tokens(stored, 0))
