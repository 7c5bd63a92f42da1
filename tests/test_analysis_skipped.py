"""The analyses name every run folder they skip and why (issue 30): a job without ``results.csv``, a ``results.csv``
that is unreadable or not a results table, a run of another study. One shared reader
(:func:`mmrep.analysis.runs.read_runs`) decides for ``load_runs`` and ``sweep_table``; every ``mmrep analyze``
command prints its warnings to stderr, and a sweep without a usable run is one error line with nothing written."""

import logging

import pandas as pd
import pytest

from fixtures import write_fake_run
from mmrep import cli
from mmrep.analysis import summary
from mmrep.analysis.runs import NO_RESULTS, load_runs, read_results, sweep_table

STUDIES = list(cli.entries("studies"))

RUS_ROWS = [
    {"metric": "unbiased_cka", "aggregate": "max", "value": 0.5, "modality": "x0|x1", "split": "align"},
    {"metric": "accuracy", "modality": "x1", "split": "test", "value": 0.7},
]
NUMERIC_CONFIG = {
    "bias": {"theta": 967, "beta": None},
    "dataset": {"_target_": "mmrep.data.numeric.NumericDataModule", "dependent": False, "n_semantics": 10},
}
NUMERIC_ROWS = [
    {"metric": "r2", "probe": "mlp", "modality": "x", "target": t, "value": 0.5, "split": "probe_eval"}
    for t in ["m_x", "m_t"] + [f"s_{i}" for i in range(10)]
]

# results.csv contents that are no results table, and the start of the reason each is skipped with
BROKEN = {
    "empty": (b"", "unreadable results.csv (empty file)"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "unreadable results.csv (UnicodeDecodeError: "),
    "ragged": (bytes(range(1, 128)) * 3, "unreadable results.csv (ParserError: "),
    "cut in a quote": (b'metric,value\nr2,"0.5\n', "unreadable results.csv (ParserError: "),
    "header only": (b"metric,value\n", "results.csv is not a results table (a header without rows)"),
    "no value column": (b"metric,modality\nr2,x\n", "results.csv is not a results table (no 'value' column)"),
    "no columns named": (b"0.5\n0.7\n", "results.csv is not a results table (no 'metric' or 'value' column)"),
    "text values": (
        b"metric,value\nr2,0.5\nr2,high\n",
        "results.csv is not a results table (value 'high' on line 3 is not a number)",
    ),
}


def _rus_run(path, r, rows=RUS_ROWS):
    config = {"dataset": {"_target_": "mmrep.data.rus.RUSDataModule", "redundancy": r, "depth": 1}, "seed": 0}
    return write_fake_run(path, {**config, "encoders": {"x1": {"depth": 1}}}, rows)


def _numeric_run(path, seed):
    return write_fake_run(path, {**NUMERIC_CONFIG, "seed": seed}, NUMERIC_ROWS, [f"seed={seed}"])


def _sweep(root, study):
    """Three usable jobs 0..2 of ``study`` (rus, numeric or the generic sweep)."""
    for job in range(3):
        if study == "numeric":
            _numeric_run(root / str(job), seed=job)
        else:
            _rus_run(root / str(job), r=4 * job)
    return root


def _analyze(study, sweep, capsys, *args):
    """``mmrep analyze <study> <sweep> ...`` in process: (exit code, stdout, stderr)."""
    extra = ["--bootstrap", "0"] if study == "rus" else []
    code = cli.main(["analyze", study, str(sweep), *extra, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


# ---- the reader --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BROKEN))
def test_a_results_csv_that_is_no_results_table_has_a_one_line_reason(tmp_path, name):
    content, reason = BROKEN[name]
    (tmp_path / "results.csv").write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_results(tmp_path / "results.csv")
    assert str(err.value).startswith(reason) and "\n" not in str(err.value)


def test_empty_values_and_extra_columns_are_a_results_table(tmp_path):
    """Empty ``value`` cells are numbers that could not be computed (a ``reason`` column may say why)."""
    (tmp_path / "results.csv").write_text("metric,value,reason\nr2,0.5,\nr2,,too few samples\nr2,nan,\n")
    table = read_results(tmp_path / "results.csv")
    assert table["value"].dtype == float and table["value"].isna().tolist() == [False, True, True]
    assert list(table.columns) == ["metric", "value", "reason"]


def test_load_runs_keeps_the_usable_runs_and_names_the_others_in_one_warning(tmp_path, caplog):
    _sweep(tmp_path, "rus")
    write_fake_run(tmp_path / "3", {"seed": 3})  # no results.csv: a job that failed
    (write_fake_run(tmp_path / "4", {"seed": 4}) / "results.csv").write_bytes(BROKEN["text values"][0])
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "results.csv").write_text("metric,value\nr2,0.5\n")  # no .hydra/config.yaml
    write_fake_run(tmp_path / "6", {"seed": 6}, RUS_ROWS)
    (tmp_path / "6" / ".hydra" / "config.yaml").write_text("seed: [0,\n")  # a cut config
    with caplog.at_level(logging.WARNING, logger="mmrep.analysis"):
        table = load_runs(tmp_path, {"r": "dataset.redundancy"})
    assert sorted(table["run"].unique()) == ["0", "1", "2"]
    skipped = dict(table.attrs["skipped"])
    assert list(skipped) == ["3", "4", "5", "6"]
    assert skipped["3"] == NO_RESULTS == "no results.csv (not finished, failed or pruned)"
    assert skipped["4"] == BROKEN["text values"][1]
    assert skipped["5"] == "no .hydra/config.yaml"
    assert skipped["6"].startswith("unreadable .hydra/config.yaml (")
    (record,) = caplog.records
    assert record.getMessage().splitlines() == [
        f"{tmp_path}: skipping 4 of 7 run folders:",
        *(f"  {run}: {why}" for run, why in table.attrs["skipped"]),
    ]


def test_sweep_table_reads_with_the_same_reader(tmp_path):
    _sweep(tmp_path, "rus")
    (write_fake_run(tmp_path / "3", {"seed": 3}) / "results.csv").write_bytes(BROKEN["no value column"][0])
    table, skipped = sweep_table(tmp_path)
    assert sorted(table["run"].unique()) == ["0", "1", "2"]
    assert skipped == [("3", BROKEN["no value column"][1])]


# ---- keep_runs ---------------------------------------------------------------------------------------------------
def _raw(runs, skipped=None):
    raw = pd.DataFrame({"run": runs, "value": range(len(runs))})
    if skipped is not None:
        raw.attrs["skipped"] = skipped
    return raw


def test_keep_runs_names_each_skipped_run_with_the_first_requirement_it_fails(caplog):
    requirements = [("no dataset.redundancy", {"a", "b", "c"}), ("no alignment rows", {"a", "b"})]
    with caplog.at_level(logging.WARNING, logger="mmrep.analysis"):
        kept = summary.keep_runs(_raw(["a", "b", "c", "d", "a"]), requirements, "sweep", "RUS", "experiment=rus")
    assert kept["run"].tolist() == ["a", "b", "a"]
    (record,) = caplog.records
    assert record.getMessage().splitlines() == [
        "sweep: skipping 2 of 4 runs that are not RUS runs:",
        "  c: no alignment rows",
        "  d: no dataset.redundancy",
    ]


def test_keep_runs_error_names_the_run_folders_load_runs_skipped_before():
    requirements = [("no dataset.redundancy", set())]
    earlier = [("3", NO_RESULTS), ("4", NO_RESULTS), ("5", "unreadable results.csv (empty file)")]
    with pytest.raises(ValueError) as err:
        summary.keep_runs(_raw(["a", "b"], earlier), requirements, "sweep", "RUS", "experiment=rus")
    assert str(err.value) == (
        "sweep holds no RUS runs (2 runs: no dataset.redundancy); run it on a sweep of experiment=rus; skipped before: "
        "3, 4: no results.csv (not finished, failed or pruned); 5: unreadable results.csv (empty file)"
    )
    lost = _raw(["a"]).join(pd.DataFrame({"x": [1]}, index=pd.Index(["a"], name="run")), on="run")
    with pytest.raises(ValueError, match=r"skipped before: 3: no results.csv") as err:  # attrs lost: passed along
        summary.keep_runs(lost, requirements, "sweep", "RUS", "experiment=rus", skipped=earlier[:1])
    with pytest.raises(ValueError) as err:
        summary.keep_runs(_raw(["a"]), requirements, "sweep", "RUS", "experiment=rus")
    assert "skipped before" not in str(err.value)


# ---- the commands ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("study", ["rus", "numeric", "sweep"])
def test_a_job_without_results_is_named_and_the_analysis_still_runs(study, tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep", study)
    write_fake_run(sweep / "3", {"seed": 3}, overrides=["seed=3"])  # started, never measured
    code, out, err = _analyze(study, sweep, capsys)
    assert code == 0, err
    listed = out if study == "sweep" else err  # mmrep analyze sweep prints its skipped folders in its summary
    assert "3: no results.csv (not finished, failed or pruned)" in listed
    if study != "sweep":
        assert err.startswith(f"mmrep analyze {study}: warning: {sweep}: skipping 1 of 4 run folders:\n")


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_results_csv_is_named_as_such_not_as_a_run_of_another_study(name, tmp_path, capsys):
    sweep = _sweep(tmp_path, "rus")
    content, reason = BROKEN[name]
    (_rus_run(sweep / "bad", r=2) / "results.csv").write_bytes(content)
    code, _, err = _analyze("rus", sweep, capsys)
    assert code == 0, err
    assert f"\n  bad: {reason}" in err and "not RUS runs" not in err
    assert pd.read_csv(sweep / "rus_runs.csv")["run"].astype(str).tolist() == ["2", "1", "0"]  # U = 0, 4, 8


@pytest.mark.parametrize("study", STUDIES)
def test_a_sweep_without_a_usable_run_is_one_error_line_and_nothing_written(study, tmp_path, capsys):
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    write_fake_run(sweep / "0", {"seed": 0})
    (write_fake_run(sweep / "1", {"seed": 1}) / "results.csv").write_bytes(BROKEN["binary"][0])
    before = _files(sweep)
    code, stdout, err = _analyze(study, sweep, capsys, "--out", str(out))
    assert code == 1 and stdout == "" and "Traceback" not in err
    assert err.splitlines() == [
        f"mmrep analyze {study}: error: {sweep}: none of its 2 run folders is usable (0: {NO_RESULTS}; "
        f"1: unreadable results.csv (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x89 in position 0: "
        "invalid start byte))"
    ]
    assert not out.exists() and _files(sweep) == before


def test_broken_jobs_beside_runs_of_another_study_are_named_in_the_error(tmp_path, capsys):
    _numeric_run(tmp_path / "0", seed=0)  # usable, but not a RUS run
    write_fake_run(tmp_path / "1", {"seed": 1})
    code, _, err = _analyze("rus", tmp_path, capsys)
    assert code == 1 and "Traceback" not in err
    *warning, error = err.splitlines()
    assert warning == [f"mmrep analyze rus: warning: {tmp_path}: skipping 1 of 2 run folders:", f"  1: {NO_RESULTS}"]
    assert error == (
        f"mmrep analyze rus: error: {tmp_path} holds no RUS runs (1 run, found dataset=numeric: no dataset.redundancy)"
        f"; run it on a sweep of experiment=rus_alignment; skipped before: 1: {NO_RESULTS}"
    )
    assert not (tmp_path / "rus_runs.csv").exists()
