"""Read run and multirun directories into one tidy DataFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` (inclusive) holding both ``results.csv`` and ``.hydra/config.yaml``."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("results.csv") if (p.parent / ".hydra" / "config.yaml").exists())


def load_runs(root: Path, config_keys: dict[str, str]) -> pd.DataFrame:
    """Concatenate the ``results.csv`` of every run under ``root``.

    ``config_keys`` maps output column → dotted config key (e.g. ``{"theta": "bias.theta"}``); each run's resolved
    value is added to its rows (lists become tuples so they can be grouped), plus a ``run`` column.
    """
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no run directories with results.csv and .hydra/config.yaml found")
    frames = []
    for run in runs:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        df = pd.read_csv(run / "results.csv")
        df["run"] = str(run.relative_to(root)) if run != Path(root) else "."
        for column, key in config_keys.items():
            value = OmegaConf.select(cfg, key, default=None)
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            df[column] = [tuple(value) if isinstance(value, list) else value] * len(df)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a markdown table when ``tabulate`` is installed, else as plain text."""
    try:
        return table.to_markdown()
    except ImportError:  # pandas needs the optional tabulate package for markdown
        return table.to_string()


def save_figure(fig, ax, path: Path) -> Path:
    """Legend, tight layout, write ``path`` (PNG, 120 dpi), close the figure."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
