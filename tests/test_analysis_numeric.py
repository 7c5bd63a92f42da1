"""``python -m mmrep.analysis.numeric`` on fake run directories (no training): runs that differ in an override other
than the seed and the bias setting are not pooled, cells say how many seeds they average, the ``.md`` is a pipe table
without extra packages and the heatmap's title fits a single-setting figure."""

import re

import pandas as pd
import pytest

from fixtures import write_fake_run
from mmrep.analysis.numeric import heatmap_figure, main, pivot
from mmrep.analysis.runs import differing_overrides, markdown

TARGETS = ["m_x", "m_t"] + [f"s_{i}" for i in range(10)]
OLD_COLUMNS = ["setting", "target", "mean", "std", "min", "max", "count", "value"]


def _run(root, name, *, theta, seed, overrides=(), config=None, value=0.5, choices=None):
    """One fake numeric run: ``results.csv`` (r2 rows of the mlp probe on x), ``.hydra/config.yaml`` and
    ``.hydra/overrides.yaml`` (``bias.theta=…``, ``seed=…`` and ``overrides``), optionally ``.hydra/hydra.yaml``."""
    cfg = {
        "bias": {"theta": theta, "beta": None, "change_prob": 0.75},
        "seed": seed,
        "dataset": {"dependent": False, "n_semantics": 10, "batch_size": 64},
        "objective": {"optimizer": {"lr": 0.001}},
        "trainer": {"max_steps": 40},
    }
    for key, v in (config or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    rows = [
        {
            "metric": "r2",
            "probe": "mlp",
            "modality": "x",
            "target": t,
            "value": value + 0.01 * seed,
            "split": "probe_eval",
            "n_fit": 100,
            "n_eval": 100,
        }
        for t in TARGETS
    ]
    overrides = [f"bias.theta={theta}", f"seed={seed}", *overrides]
    return write_fake_run(root / name, cfg, rows, overrides, choices)


def _lr_sweep(root, lrs=(0.001, 0.01), thetas=(967, 55), seeds=(0, 1, 2)):
    """A Hydra-like multirun: lr × θ × seed in job folders 0, 1, …; R² 0.2 at lr 0.001, 0.8 at 0.01 (+0.01·seed)."""
    n = 0
    for lr in lrs:
        for theta in thetas:
            for seed in seeds:
                _run(
                    root,
                    str(n),
                    theta=theta,
                    seed=seed,
                    config={"objective.optimizer.lr": lr},
                    overrides=[f"objective.optimizer.lr={lr}", "trainer.max_steps=40"],
                    value=0.2 if lr == 0.001 else 0.8,
                )
                n += 1


def _pipe_rows(text: str) -> list[list[str]]:
    """The cells of each line of a Markdown pipe table; asserts the shape of one."""
    lines = text.strip("\n").splitlines()
    assert len(lines) >= 3
    for line in lines:
        assert line.startswith("|") and line.endswith("|"), line
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    assert len({len(r) for r in rows}) == 1, rows  # every line has the same number of columns
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1]), lines[1]  # the |---| separator
    return rows


def test_runs_with_a_differing_override_are_grouped_not_pooled(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _lr_sweep(sweep)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "grouping by differing overrides: objective.optimizer.lr (2 values)" in out
    assert "seeds per cell: 3" in out
    table = pd.read_csv(sweep / "identification.csv")
    assert list(table.columns) == ["objective.optimizer.lr", *OLD_COLUMNS, "n_seeds"]  # trainer.max_steps: same in all
    assert len(table) == 2 * 2 * len(TARGETS) and (table.n_seeds == 3).all() and (table["count"] == 3).all()
    means = table.groupby("objective.optimizer.lr")["mean"].agg(["min", "max"])
    assert means.loc[0.001].tolist() == pytest.approx([0.21, 0.21])  # the mean of seeds 0, 1, 2 of lr 0.001 only
    assert means.loc[0.01].tolist() == pytest.approx([0.81, 0.81])
    assert list(dict.fromkeys(zip(table["objective.optimizer.lr"], table.setting))) == [
        (0.001, "θ={0..7}"),
        (0.001, "θ={0..2}"),
        (0.01, "θ={0..7}"),
        (0.01, "θ={0..2}"),
    ]
    rows = _pipe_rows((sweep / "identification_x_mlp.md").read_text())
    assert rows[0] == [
        "target",
        "lr=0.001 · θ={0..7}",
        "lr=0.001 · θ={0..2}",
        "lr=0.01 · θ={0..7}",
        "lr=0.01 · θ={0..2}",
    ]
    assert rows[2] == ["m_x", "0.2", "0.2", "0.8", "0.8"] and [r[0] for r in rows[2:]] == TARGETS
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == [
        "identification.csv",
        "identification_x_mlp.md",
        "identification_x_mlp.png",
    ]


def test_the_csv_read_back_pivots_by_group_and_setting(tmp_path):
    """The notebook's path: ``pivot(pd.read_csv(identification.csv))`` keeps the groups apart, in the table's order."""
    sweep = tmp_path / "sweep"
    _lr_sweep(sweep, lrs=(0.01, 0.001), seeds=(0, 1))
    assert main([str(sweep)]) == 0
    wide = pivot(pd.read_csv(sweep / "identification.csv"))
    assert wide.columns.names == ["objective.optimizer.lr", "setting"]
    assert list(wide.columns) == [(0.01, "θ={0..7}"), (0.01, "θ={0..2}"), (0.001, "θ={0..7}"), (0.001, "θ={0..2}")]
    assert wide.loc["s_3", (0.01, "θ={0..2}")] == 0.8 and wide.loc["m_x", (0.001, "θ={0..7}")] == 0.2
    assert list(wide.index) == TARGETS


def test_without_differing_overrides_the_outputs_are_as_before(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for k, theta in enumerate((967, 55)):
        for seed in (0, 1):
            _run(
                sweep,
                f"{k}{seed}",
                theta=theta,
                seed=seed,
                overrides=["objective.optimizer.lr=0.01"],
                config={"objective.optimizer.lr": 0.01},
            )
    assert main([str(sweep)]) == 0
    captured = capsys.readouterr()
    assert "grouping by" not in captured.out and "seeds per cell: 2" in captured.out and "warning" not in captured.err
    table = pd.read_csv(sweep / "identification.csv")
    assert list(table.columns) == [*OLD_COLUMNS, "n_seeds"] and (table.n_seeds == 2).all()
    assert list(dict.fromkeys(table.setting)) == ["θ={0..7}", "θ={0..2}"]
    rows = _pipe_rows((sweep / "identification_x_mlp.md").read_text())
    assert rows[0] == ["target", "θ={0..7}", "θ={0..2}"] and rows[2] == ["m_x", "0.5", "0.5"]
    assert (sweep / "identification_x_mlp.png").stat().st_size > 10_000
    assert pivot(table).columns.name == "setting"


def test_cells_of_uneven_seeds_and_repeated_seeds_are_reported(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep, "0", theta=967, seed=0)
    _run(sweep, "1", theta=967, seed=1)
    _run(sweep, "2", theta=55, seed=0)
    _run(sweep, "3", theta=55, seed=0)  # the same job twice
    assert main([str(sweep)]) == 0
    captured = capsys.readouterr()
    assert "seeds per cell: 1–2" in captured.out and "same seed" in captured.err
    table = pd.read_csv(sweep / "identification.csv").set_index(["setting", "target"])
    assert table.loc[("θ={0..7}", "s_0"), ["count", "n_seeds"]].tolist() == [2, 2]
    assert table.loc[("θ={0..2}", "s_0"), ["count", "n_seeds"]].tolist() == [2, 1]


def test_differing_overrides_compares_resolved_values_and_group_choices(tmp_path):
    root = tmp_path / "sweep"
    # lr: run a keeps the default 0.001, run b sets the same value as 1e-3, run c 0.01 → differs (0.001, 0.001, 0.01)
    # bias.change_prob: a bias parameter the setting label is not made of → differs
    # bias.theta, seed, bias.setting: indexed or averaged → ignored; hydra.*: ignored
    # bias=…: a config-group choice: the override's text, else the choice recorded in .hydra/hydra.yaml
    # +extra=1 on one run only → the others are "(default)"
    _run(root, "a", theta=967, seed=0, choices={"bias": "selection"})
    _run(
        root,
        "b",
        theta=55,
        seed=1,
        overrides=["objective.optimizer.lr=1e-3", "bias=perturbation", "+extra=1", "bias.setting=selection_1"],
    )
    _run(
        root,
        "c",
        theta=55,
        seed=2,
        config={"objective.optimizer.lr": 0.01, "bias.change_prob": 0.5},
        overrides=[
            "++objective.optimizer.lr=0.01",
            "bias.change_prob=0.5",
            "dataset.batch_size=64",
            "hydra.job.chdir=true",
        ],
    )
    table = differing_overrides(root, ignore=("bias.theta", "seed", "bias.setting"))
    assert list(table.index) == ["a", "b", "c"]
    assert sorted(table.columns) == ["bias", "bias.change_prob", "extra", "objective.optimizer.lr"]
    assert table["objective.optimizer.lr"].tolist() == [0.001, 0.001, 0.01]
    assert table["bias.change_prob"].tolist() == [0.75, 0.75, 0.5]
    assert table["bias"].tolist() == ["selection", "perturbation", "(default)"]
    assert table["extra"].tolist() == ["(default)", "1", "(default)"]


def test_an_override_named_like_a_results_column_gets_a_prefix(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for k, choice in enumerate(("identifiability", "identifiability_downstream")):
        _run(sweep, str(k), theta=967, seed=0, overrides=[f"metric={choice}"])
    assert main([str(sweep)]) == 0
    assert "grouping by differing overrides: override:metric (2 values)" in capsys.readouterr().out
    table = pd.read_csv(sweep / "identification.csv")
    assert table["override:metric"].unique().tolist() == ["identifiability", "identifiability_downstream"]
    assert (table.n_seeds == 1).all()


def test_markdown_renders_a_pipe_table_without_tabulate():
    index = pd.MultiIndex.from_tuples([("a", 1), ("b|c", 2), ("d", 3)], names=["name", None])
    table = pd.DataFrame({"x": [0.12345, float("nan"), 2.0], "n": [1, 2, 3], "label": ["p", "q|r", None]}, index=index)
    rows = _pipe_rows(markdown(table))
    assert rows[0] == ["name", "", "x", "n", "label"]  # both index levels included; an unnamed one has no header
    assert rows[2] == ["a", "1", "0.123", "1", "p"]  # floats with 3 decimals
    assert rows[3] == ["b\\|c", "2", "", "2", "q\\|r"]  # a | inside a cell is escaped, NaN is blank
    assert rows[4] == ["d", "3", "2.000", "3", ""]
    assert _pipe_rows(markdown(pd.DataFrame({"v": [0.25]}, index=["r"]), floatfmt=".1f"))[2] == ["r", "0.2"]
    wide = pd.DataFrame([[0.5, 1.0]], columns=pd.MultiIndex.from_tuples([(0.001, "s"), (0.01, "s")]))
    assert _pipe_rows(markdown(wide))[0] == ["", "0.001 · s", "0.01 · s"]


@pytest.mark.parametrize("columns", [1, 3])
@pytest.mark.parametrize(
    "title",
    ["mlp R² of ẑ_x (mean over 3 seeds)", "linear R² of ẑ_t (mean over 1–3 seeds), grouped by objective.optimizer.lr"],
)
def test_heatmap_title_lies_within_the_figure(columns, title):
    import matplotlib.pyplot as plt

    wide = pd.DataFrame({f"θ={{0..{i}}} β=∅": [0.5] * len(TARGETS) for i in range(columns)}, index=TARGETS)
    fig = heatmap_figure(wide, title)
    try:
        fig.canvas.draw()
        extent = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        frame = fig.bbox
        assert frame.x0 <= extent.x0 and extent.x1 <= frame.x1 and frame.y0 <= extent.y0 and extent.y1 <= frame.y1
        assert fig.axes[0].title.get_text().replace("\n", " ") == title  # wrapped, not cut
    finally:
        plt.close(fig)
