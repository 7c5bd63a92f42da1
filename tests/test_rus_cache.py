"""RUS data cache reliability: stale, damaged and unwritable cache files, and the analysis on non-RUS runs."""

import logging
import os
import tokenize
import zipfile
import zlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_cli
from fixtures import write_fake_run
from mmrep.analysis import rus as analysis
from mmrep.data import rus

SMALL = dict(redundancy=3, depth=1, num_data=400)  # splits of 280/60/60: a few ms to generate


def _params(**kwargs):
    return rus.RUSDataModule(**{**SMALL, **kwargs}).params


def _assert_same(arrays, expected):
    assert sorted(arrays) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].dtype == value.dtype


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "mmrep.data.rus" and r.levelno == logging.WARNING]


def _assert_regenerated(tmp_path, params, caplog, reason):
    """load_or_generate warns once naming the file and ``reason``, returns a fresh generation and leaves a valid
    cache file (only) behind."""
    path = rus.cache_path(tmp_path, params)
    with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
        arrays = rus.load_or_generate(tmp_path, params)
    fresh = rus.generate_rus(**params)
    _assert_same(arrays, fresh)
    (message,) = _warnings(caplog)
    assert str(path) in message and reason in message and "regenerating" in message
    stored, problem = rus.read_cache(path, params)
    assert problem is None
    _assert_same(stored, fresh)
    assert os.listdir(tmp_path) == [path.name]  # overwritten in place, no temporary file left


def test_cache_stores_the_parameter_digest_and_is_reused(tmp_path, caplog):
    params = _params()
    path = rus.cache_path(tmp_path, params)
    arrays = rus.load_or_generate(tmp_path, params)
    with np.load(path) as stored:
        assert str(stored[rus.DIGEST_KEY]) == rus.params_digest(params)
        assert len(rus.params_digest(params)) == 64
    stamp = path.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
        again = rus.load_or_generate(tmp_path, params)
    assert path.stat().st_mtime_ns == stamp and not _warnings(caplog)
    _assert_same(again, arrays)
    _assert_same(arrays, rus.generate_rus(**params))
    assert rus.params_digest(params) != rus.params_digest({**params, "temperature": 0.1})


def _other_parameters(path, params):  # the file another parameter set would have, under this name
    other = {**params, "redundancy": 5}
    rus.write_cache(path, rus.generate_rus(**other), other)


def _old_format(path, params):  # written before the digest was stored
    np.savez(path, **rus.generate_rus(**params))


def _fewer_samples(path, params):  # right digest, arrays of another num_data
    rus.write_cache(path, rus.generate_rus(**{**params, "num_data": 200}), params)


def _short_labels(path, params):
    arrays = rus.generate_rus(**params)
    rus.write_cache(path, {**arrays, "label": arrays["label"][:10]}, params)


def _missing_key(path, params):
    arrays = rus.generate_rus(**params)
    del arrays["x1"]
    rus.write_cache(path, arrays, params)


def _wrong_dtype(path, params):
    arrays = rus.generate_rus(**params)
    rus.write_cache(path, {**arrays, "x0": arrays["x0"].astype(np.float64)}, params)


def _wrong_width(path, params):
    arrays = rus.generate_rus(**params)
    rus.write_cache(path, {**arrays, "x1": arrays["x1"][:, :8]}, params)


def _labels_out_of_range(path, params):
    arrays = rus.generate_rus(**params)
    rus.write_cache(path, {**arrays, "label": arrays["label"] + 4}, params)


def _digest_of_wrong_type(path, params):
    np.savez(
        path,
        **rus.generate_rus(**params),
        **{rus.DIGEST_KEY: np.frombuffer(rus.params_digest(params).encode(), dtype=np.uint8)},
    )


def _bare_npy(path, params):
    with open(path, "wb") as fh:
        np.save(fh, rus.generate_rus(**params)["x0"])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_other_parameters, "does not match the parameters"),
        (_old_format, f"no {rus.DIGEST_KEY}"),
        (_fewer_samples, "x0 has shape (200, 12), expected (400, 12)"),
        (_short_labels, "label has shape (10,), expected (400,)"),
        (_missing_key, "missing arrays ['x1']"),
        (_wrong_dtype, "x0 has dtype float64, expected float32"),
        (_wrong_width, "x1 has shape (400, 8), expected (400, 12)"),
        (_labels_out_of_range, "labels outside 0..3"),
        (_digest_of_wrong_type, "does not match the parameters"),
        (_bare_npy, "not an npz archive"),
    ],
)
def test_a_cache_that_is_not_the_data_for_its_parameters_is_regenerated(tmp_path, caplog, damage, reason):
    params = _params()
    damage(rus.cache_path(tmp_path, params), params)
    _assert_regenerated(tmp_path, params, caplog, reason)


def _valid_bytes(params, tmp_path):
    rus.write_cache(tmp_path / "valid.npz", rus.generate_rus(**params), params)
    data = (tmp_path / "valid.npz").read_bytes()
    (tmp_path / "valid.npz").unlink()
    return data


@pytest.mark.parametrize(
    "cut, reason",
    [
        (lambda data: data[: len(data) // 2], "BadZipFile"),
        (lambda data: b"", "EOFError"),
        (lambda data: data[:-1], "BadZipFile"),
        (lambda data: b"garbage", "unreadable"),
    ],
    ids=["truncated-to-half", "zero-bytes", "last-byte-missing", "garbage"],
)
def test_a_truncated_or_empty_cache_is_regenerated(tmp_path, caplog, cut, reason):
    params = _params()
    data = _valid_bytes(params, tmp_path)
    rus.cache_path(tmp_path, params).write_bytes(cut(data))
    _assert_regenerated(tmp_path, params, caplog, reason)


@pytest.mark.parametrize(
    "error",
    [
        zipfile.BadZipFile("bad"),
        EOFError("no data"),
        OSError("io"),
        ValueError("bad header"),
        zlib.error("crc"),
        tokenize.TokenError("header"),
        NotImplementedError("compression"),
        PermissionError("denied"),
    ],
    ids=lambda e: f"{type(e).__module__}.{type(e).__name__}".removeprefix("builtins."),
)
def test_every_reader_exception_means_regenerate(tmp_path, caplog, monkeypatch, error):
    params = _params()
    rus.load_or_generate(tmp_path, params)
    real_load = np.load

    def failing_load(*args, **kwargs):
        monkeypatch.setattr(np, "load", real_load)  # only the cache read fails; the check after it reads again
        raise error

    monkeypatch.setattr(np, "load", failing_load)
    _assert_regenerated(tmp_path, params, caplog, type(error).__name__)


def test_the_datamodule_replaces_a_stale_cache(tmp_path, caplog):
    params = _params()
    path = rus.cache_path(tmp_path, params)
    _other_parameters(path, params)
    with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
        dm = rus.RUSDataModule(**SMALL, data_dir=str(tmp_path))
        dm.prepare_data()
        dm.setup()
    (message,) = _warnings(caplog)
    assert str(path) in message
    reference = rus.RUSDataModule(**SMALL, cache=False)
    for split in ("train", "val", "test"):
        for key in ("x0", "x1", "y"):
            torch.testing.assert_close(dm.split(split).data[key], reference.split(split).data[key])
    assert rus.read_cache(path, params)[1] is None


def _unwritable_warnings(caplog):
    return [m for m in _warnings(caplog) if "cannot write" in m]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root (or no POSIX modes) ignores 0o500")
def test_a_read_only_cache_dir_is_read_and_otherwise_generated_in_memory(tmp_path, caplog):
    data_dir = tmp_path / "rus"
    cached = _params()
    rus.load_or_generate(data_dir, cached)
    path = rus.cache_path(data_dir, cached)
    stamp = path.stat().st_mtime_ns
    data_dir.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
            dm = rus.RUSDataModule(**SMALL, data_dir=str(data_dir))
            dm.prepare_data()
            dm.setup()
            assert not _warnings(caplog) and path.stat().st_mtime_ns == stamp  # the valid cache is read
            for _ in range(2):  # not cached: generated in memory, the folder named in one warning
                other = rus.RUSDataModule(**{**SMALL, "depth": 2}, data_dir=str(data_dir))
                other.prepare_data()
                other.setup()
            _assert_same(rus.load_or_generate(data_dir, other.params), rus.generate_rus(**other.params))
            (message,) = _unwritable_warnings(caplog)
            assert str(rus.cache_path(data_dir, other.params)) in message and "in memory" in message
        assert os.listdir(data_dir) == [path.name]
        reference = rus.RUSDataModule(**SMALL, cache=False)
        torch.testing.assert_close(dm.split("train").data["x1"], reference.split("train").data["x1"])
    finally:
        data_dir.chmod(0o700)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root (or no POSIX modes) ignores 0o500")
def test_a_stale_cache_in_a_read_only_dir_is_regenerated_in_memory(tmp_path, caplog):
    params = _params()
    path = rus.cache_path(tmp_path / "rus", params)
    path.parent.mkdir()
    _other_parameters(path, params)
    path.parent.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
            arrays = rus.load_or_generate(path.parent, params)
        stale, cannot = _warnings(caplog)
        assert str(path) in stale and "does not match" in stale and str(path) in cannot and "cannot write" in cannot
        _assert_same(arrays, rus.generate_rus(**params))
    finally:
        path.parent.chmod(0o700)


def test_a_cache_dir_under_a_regular_file_falls_back_to_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    data_dir = tmp_path / "file" / "rus"
    with caplog.at_level(logging.WARNING, logger="mmrep.data.rus"):
        dm = rus.RUSDataModule(**SMALL, data_dir=str(data_dir))
        dm.prepare_data()
        dm.setup()
        rus.RUSDataModule(**SMALL, data_dir=str(data_dir)).setup()
    (message,) = _unwritable_warnings(caplog)
    assert str(rus.cache_path(data_dir, dm.params)) in message and "in memory" in message
    reference = rus.RUSDataModule(**SMALL, cache=False)
    torch.testing.assert_close(dm.split("train").data["x1"], reference.split("train").data["x1"])
    assert dm.info == reference.info


# ---- the analysis on a folder without RUS runs --------------------------------------------------------------
def _fake_run(run, config, rows):
    write_fake_run(run, config, rows)


NUMERIC_CONFIG = {"dataset": {"_target_": "mmrep.data.numeric.NumericDataModule", "n_semantics": 10}, "seed": 0}
NUMERIC_ROWS = [
    {"metric": "r2", "probe": "linear", "modality": "x", "target": "s_0", "value": 0.9, "split": "probe_eval"}
]
RUS_ROWS = [
    {"metric": "unbiased_cka", "aggregate": "max", "value": 0.5, "modality": "x0|x1", "split": "align"},
    {"metric": "accuracy", "modality": "x1", "split": "test", "value": 0.7},
]


def _rus_config(r, d):
    return {
        "dataset": {"_target_": "mmrep.data.rus.RUSDataModule", "redundancy": r, "depth": 1},
        "encoders": {"x1": {"depth": d}},
        "seed": 0,
    }


def _error_line(root, capsys):
    assert analysis.main([str(root), "--bootstrap", "0"]) != 0
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"mmrep.analysis.rus: error: {root} holds no RUS runs (")
    assert line.endswith("); run it on a sweep of experiment=rus_alignment")
    assert captured.out == ""
    return line


def test_analysis_of_numeric_runs_names_what_it_found(tmp_path, capsys):
    _fake_run(tmp_path / "0", NUMERIC_CONFIG, NUMERIC_ROWS)
    _fake_run(tmp_path / "1", NUMERIC_CONFIG, NUMERIC_ROWS)
    line = _error_line(tmp_path, capsys)
    assert "found dataset=numeric" in line and "2 runs" in line and "dataset.redundancy" in line


def test_analysis_of_runs_without_rus_results_or_config(tmp_path, capsys):
    _fake_run(tmp_path / "0", _rus_config(4, 1), NUMERIC_ROWS)  # a RUS config, other metrics
    line = _error_line(tmp_path, capsys)
    assert "found dataset=rus" in line and "aggregate=max" in line
    _fake_run(tmp_path / "1", NUMERIC_CONFIG, RUS_ROWS)  # RUS-like rows, no dataset.redundancy
    line = _error_line(tmp_path, capsys)
    assert "found dataset=numeric,rus" in line and "2 runs" in line


def test_analysis_prefers_hydras_dataset_choice(tmp_path, capsys):
    _fake_run(tmp_path / "0", {"dataset": {"_target_": "mmrep.data.affect.AffectDataModule"}}, NUMERIC_ROWS)
    assert "found dataset=affect" in _error_line(tmp_path, capsys)
    OmegaConf.save({"hydra": {"runtime": {"choices": {"dataset": "mosi"}}}}, tmp_path / "0" / ".hydra" / "hydra.yaml")
    assert "found dataset=mosi" in _error_line(tmp_path, capsys)


def test_analysis_skips_non_rus_runs_beside_rus_ones(tmp_path):
    for r in (0, 4, 8):
        _fake_run(tmp_path / f"r{r}", _rus_config(r, 1), RUS_ROWS)
    _fake_run(tmp_path / "numeric", NUMERIC_CONFIG, NUMERIC_ROWS)
    runs = analysis.analyze(tmp_path, bootstrap=0)["runs"]
    assert sorted(runs["run"]) == ["r0", "r4", "r8"] and sorted(runs["U"]) == [0, 4, 8]


def test_analysis_command_on_numeric_runs_exits_without_traceback(tmp_path):
    _fake_run(tmp_path / "0", NUMERIC_CONFIG, NUMERIC_ROWS)
    res = run_cli([str(tmp_path)], module="mmrep.analysis.rus", timeout=120)
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"mmrep.analysis.rus: error: {tmp_path} holds no RUS runs (1 run, found dataset=numeric")
    assert "Traceback" not in res.stderr
