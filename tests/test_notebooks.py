"""The notebooks (one per paper result) execute top to bottom on the tables of small real sweeps, so they never rot.

The sweeps are the ones other tests run anyway: ``test_sweeps.py::test_selection_sweep_to_table_heatmap_and_notebook``
executes ``numeric_identifiability.ipynb`` on its table and ``test_paper_rus.py`` executes ``rus_alignment.ipynb`` on
its analysis (:func:`execute_notebook`)."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute_notebook(name: str, results: Path, workdir: Path, monkeypatch) -> list:
    """Run ``notebooks/<name>`` with ``MMREP_RESULTS=results``; returns every code cell output (errors raise)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MMREP_RESULTS", str(results))  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend returns the figures as PNG
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def figures(outputs: list) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def test_every_notebook_is_executed_by_a_test():
    tests = Path(__file__).parent
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        assert any(notebook.name in t.read_text() for t in tests.glob("test_*.py") if t.name != Path(__file__).name), (
            notebook
        )
    assert len(list(NOTEBOOKS.glob("*.ipynb"))) >= 2
