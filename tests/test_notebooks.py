"""The notebooks (one per paper result) execute top to bottom on the tables of small real sweeps, so they never rot."""

import os
from pathlib import Path

import pytest

from mmrep.analysis import rus as rus_analysis
from mmrep.analysis.numeric import main as numeric_table

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, results: Path, tmp_path: Path, monkeypatch) -> "nbformat.NotebookNode":
    monkeypatch.setenv("MMREP_RESULTS", str(results))  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend returns the figures as PNG
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def _outputs(notebook) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["numeric_identifiability.ipynb", "rus_alignment.ipynb"]


def test_numeric_notebook_draws_the_staircase_of_a_real_sweep(cli, tiny, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "experiment=numeric_selection", "bias.theta=967,55", "seed=0", f"hydra.sweep.dir={sweep}", *tiny])
    assert res.returncode == 0, res.stderr[-3000:]
    assert numeric_table([str(sweep), "--probe", "linear"]) == 0
    outputs = _outputs(execute("numeric_identifiability.ipynb", sweep, tmp_path, monkeypatch))
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2 and not [o for o in outputs if o.output_type == "error"]


def test_rus_notebook_draws_alignment_vs_u_of_a_real_sweep(cli, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "experiment=rus_alignment_small", "dataset.redundancy=0,8", "encoders.x1.depth=1,2,3,4", "seed=0",
               "trainer.max_epochs=1", "callbacks.rich_progress_bar=null", "logger=none", f"hydra.sweep.dir={sweep}",
               f"paths.data_dir={tmp_path / 'data'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    rus_analysis.analyze(sweep, bootstrap=50)
    outputs = _outputs(execute("rus_alignment.ipynb", sweep, tmp_path, monkeypatch))
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    assert any("alignment_performance_given_depth" in str(o.get("data", {}).get("text/plain", "")) for o in outputs)
