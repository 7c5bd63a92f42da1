"""``mmrep``, the one command line: help and listings without torch, unknown names, ``mmrep analyze sweep`` on fake
runs, and the one error policy of every analysis (a missing or empty folder: one line, exit code 1, nothing
written)."""

import subprocess
import sys

import pandas as pd
import pytest

from fixtures import write_fake_run
from mmrep import cli
from mmrep.analysis import sweep as sweep_study


def _mmrep(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "mmrep.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands():
    res = _mmrep("--help")
    assert res.returncode == 0 and res.stderr == ""
    for command in ("train", "align", "analyze", "data"):
        assert f"\n  {command} " in res.stdout


def test_analyze_and_data_list_their_names(capsys):
    assert cli.main(["analyze"]) == 0
    out = capsys.readouterr().out
    for study in cli.entries("studies"):
        assert f"\n  {study} " in out
    assert {"sweep", "numeric", "rus", "factors", "multibench", "vl_uniqueness"} <= set(cli.entries("studies"))
    assert cli.main(["data"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in ("rus", "mpi3d", "causal3dident"))


@pytest.mark.parametrize(
    "argv, line",
    [
        (["analyze", "numerc"], "mmrep analyze: error: unknown study 'numerc' (did you mean 'numeric'?)"),
        (["trian"], "mmrep: error: unknown command 'trian' (did you mean 'train'?)"),
        (["data", "mpi3"], "mmrep data: error: unknown data set 'mpi3' (did you mean 'mpi3d'?)"),
    ],
)
def test_an_unknown_name_is_one_line_with_the_close_match(argv, line, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [line] and captured.out == ""


def test_the_registry_names_modules_that_exist():
    import importlib.util

    for target, _ in [
        *cli.entries("studies").values(),
        *cli.entries("data").values(),
        *cli.entries("commands").values(),
    ]:
        module, _, function = target.partition(":")
        assert importlib.util.find_spec(module) is not None, target
        assert function == "main" or target == "mmrep.train:cli", target


def test_help_and_train_help_do_not_import_torch():
    script = (
        "import sys\n"
        "from mmrep import cli\n"
        "for argv in (['--help'], ['analyze'], ['data'], ['train', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('no torch')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no torch" in res.stdout and "train" in res.stdout  # Hydra's help names the app


def _sweep(root):
    """A 2 × 2 sweep (lr × seed) in job folders 0..3, a job that never finished and one with a broken results.csv."""
    job = 0
    for lr in (0.001, 0.01):
        for seed in (0, 1):
            rows = [{"metric": "accuracy", "modality": m, "value": 0.5 + 10 * lr + 0.01 * seed} for m in ("x", "t")]
            write_fake_run(
                root / str(job),
                {"seed": seed, "objective": {"optimizer": {"lr": lr}}, "dataset": {"n": 10}},
                rows,
                overrides=[f"objective.optimizer.lr={lr}", f"seed={seed}"],
            )
            job += 1
    write_fake_run(root / "4", {"seed": 2}, overrides=["seed=2"])  # no results.csv
    write_fake_run(root / "5", {"seed": 3}, overrides=["seed=3"])
    (root / "5" / "results.csv").write_text("")  # empty: unreadable
    return root


def test_analyze_sweep_writes_one_tidy_row_per_run_and_result(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    assert cli.main(["analyze", "sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(sweep / "runs.csv")
    assert list(table.columns) == ["run", "objective.optimizer.lr", "seed", "metric", "modality", "value"]
    assert len(table) == 4 * 2 and sorted(table["run"].unique()) == [0, 1, 2, 3]
    row = table[(table["run"] == 3) & (table["modality"] == "t")].iloc[0]
    assert row["objective.optimizer.lr"] == 0.01 and row["seed"] == 1 and row["value"] == pytest.approx(0.61)
    assert "4 runs, 8 result rows" in out and "skipped 2 run folders" in out
    assert "4: no results.csv" in out and "5: unreadable results.csv" in out
    assert table.groupby("objective.optimizer.lr")["value"].mean().to_dict() == pytest.approx(
        {0.001: 0.515, 0.01: 0.605}
    )


def test_analyze_sweep_out_and_override_names_that_clash_with_result_columns(tmp_path, capsys):
    write_fake_run(tmp_path / "a", {"metric": "x"}, [{"metric": "r2", "value": 1.0}], overrides=["metric=x"])
    assert sweep_study.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert list(table.columns) == ["run", "override:metric", "metric", "value"]
    assert "every run: override:metric=x" in capsys.readouterr().out


def test_load_runs_with_overrides_names_the_overrides_of_each_row(tmp_path):
    from mmrep.analysis.runs import load_runs

    _sweep(tmp_path)
    (tmp_path / "5" / "results.csv").unlink()
    table = load_runs(tmp_path, {"n": "dataset.n"}, overrides=True)
    assert list(table.columns) == ["run", "objective.optimizer.lr", "seed", "metric", "modality", "value", "n"]
    assert table.attrs["override_columns"] == ["objective.optimizer.lr", "seed"]
    plain = load_runs(tmp_path, {"n": "dataset.n"})  # as the studies read it: results, run, config keys
    assert list(plain.columns) == ["metric", "modality", "value", "run", "n"]


STUDIES = [name for name in cli.entries("studies")]


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_reports_a_missing_folder_in_one_line(study, tmp_path, capsys):
    missing, out = tmp_path / "missing", tmp_path / "out"
    assert cli.main(["analyze", study, str(missing), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"mmrep analyze {study}: error: {missing}: no such folder"]
    assert not out.exists() and not missing.exists()


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_reports_a_folder_without_runs_in_one_line(study, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["analyze", study, str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"mmrep analyze {study}: error: {tmp_path / 'empty'}: no run")
    assert not (tmp_path / "out").exists() and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_has_the_common_flags(study, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["analyze", study, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mmrep analyze {study} ") and "--out" in out and "--wandb" in out


def test_python_dash_m_still_works_with_its_own_name(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "mmrep.analysis.sweep", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"mmrep.analysis.sweep: error: {tmp_path / 'missing'}: no such folder"


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--cfg", "job"], None),
        (["+seeed=3"], "mmrep: error: seeed: unknown top-level key"),
        (["seed=abc"], "mmrep: error: seed: must be an integer"),
        (["dataset=nope"], "Could not find 'dataset/nope'"),
    ],
)
def test_cfg_and_config_errors_answer_without_torch(argv, line, tmp_path):
    """``--cfg`` and a bad config end before any of torch / Lightning is imported (they take well under a second)."""
    script = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr))\n"
        "from mmrep import cli\n"
        f"sys.exit(cli.main(['train', *{argv!r}, 'hydra.run.dir={tmp_path / 'run'}']))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.stderr.strip().endswith("no torch"), res.stderr[-3000:]
    if line is None:
        assert res.returncode == 0 and "dataset:" in res.stdout
    else:
        assert res.returncode == 1 and line in res.stderr, res.stderr[-3000:]
        assert not (tmp_path / "run").exists()
