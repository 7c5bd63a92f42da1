"""``python -m mmrep.align`` turns bad options and inputs into one ``mmrep.align: error: ...`` line (exit 2),
checked before any metric is computed and without writing ``--csv``."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmrep import align

ROWS = 40


@pytest.fixture
def files(tmp_path):
    """Paired features: 40 rows, A 12 columns, B 12 columns, A5 only 5 (fewer than SVCCA's default 10)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(ROWS, 12)).astype("f4")
    b = (a @ rng.normal(size=(12, 12)) + 0.3 * rng.normal(size=(ROWS, 12))).astype("f4")
    paths = {"a": tmp_path / "a.npy", "b": tmp_path / "b.npy", "a5": tmp_path / "a5.npy"}
    np.save(paths["a"], a)
    np.save(paths["b"], b)
    np.save(paths["a5"], a[:, :5])
    return {name: str(path) for name, path in paths.items()}


def run_main(capsys, args):
    """``align.main(args)`` → (exit code, stdout, the stderr lines)."""
    code = align.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def assert_one_line_error(code, err, *needles):
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("mmrep.align: error: ")
    for needle in needles:
        assert needle in err[0], err[0]


# ---- --svcca-dim ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", ["0", "-3"])
def test_svcca_dim_below_one_is_rejected(capsys, files, tmp_path, dim):
    out_csv = tmp_path / "out.csv"
    code, _, err = run_main(capsys, [files["a"], files["b"], "--svcca-dim", dim, "--csv", out_csv])
    assert_one_line_error(code, err, "--svcca-dim", ">= 1", "number of feature columns", f"got {dim}")
    assert not out_csv.exists()


def test_svcca_alone_wider_than_the_features_is_an_error(capsys, files, tmp_path):
    out_csv = tmp_path / "out.csv"
    code, _, err = run_main(capsys, [files["a5"], files["b"], "--metrics", "svcca", "--csv", out_csv])
    assert_one_line_error(code, err, "--svcca-dim", "A has 5", "got 10")
    assert not out_csv.exists()


def test_svcca_dim_above_the_columns_is_an_error(capsys, files):
    code, _, err = run_main(capsys, [files["a"], files["b"], "--metrics", "svcca,cka", "--svcca-dim", "13"])
    assert_one_line_error(code, err, "--svcca-dim", "A has 12, B has 12", "got 13")


def test_metrics_all_skips_svcca_with_a_note_when_columns_are_too_few(capsys, files, tmp_path):
    out_csv = tmp_path / "out.csv"
    code, out, err = run_main(
        capsys, [files["a5"], files["b"], "--metrics", "all", "--k", "5", "--format", "json", "--csv", out_csv]
    )
    assert code == 0
    assert len(err) == 1 and err[0].startswith("mmrep.align: note: skipping svcca"), err
    assert "--svcca-dim 10" in err[0] and "A has 5" in err[0]
    written = out_csv.read_text().splitlines()
    metrics = [line.split(",")[0] for line in written[1:]]
    assert "svcca" not in metrics and set(metrics) == set(align.METRICS) - {"svcca"}
    assert '"svcca"' not in out


def test_metrics_all_keeps_svcca_when_wide_enough(capsys, files):
    code, out, err = run_main(capsys, [files["a"], files["b"], "--metrics", "all", "--k", "5", "--format", "csv"])
    assert code == 0 and err == []
    assert "\nsvcca," in out


# ---- constant features -------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["A", "B"])
def test_constant_features_are_rejected_naming_the_file(capsys, files, tmp_path, side):
    const = tmp_path / "const.npy"
    np.save(const, np.full((ROWS, 12), 3.0, dtype="f4"))
    pair = [const, files["b"]] if side == "A" else [files["a"], const]
    out_csv = tmp_path / "out.csv"
    code, _, err = run_main(capsys, [*pair, "--csv", out_csv])
    assert_one_line_error(code, err, f"{side}: every feature column of {const} is constant", "zero variance")
    assert not out_csv.exists()


def test_partly_constant_columns_are_fine(capsys, files, tmp_path):
    a = np.load(files["a"])
    a[:, :6] = 1.0  # half the columns constant: standardisation keeps them at 0, the metrics stay defined
    partly = tmp_path / "partly.npy"
    np.save(partly, a)
    code, out, err = run_main(capsys, [partly, files["b"], "--k", "5", "--format", "json"])
    assert code == 0 and err == []
    assert "nan" not in out.lower()


# ---- --device ----------------------------------------------------------------------------------------------
def test_device_cuda_without_cuda(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    out_csv = tmp_path / "out.csv"
    code, _, err = run_main(capsys, [files["a"], files["b"], "--device", "cuda", "--csv", out_csv])
    assert_one_line_error(code, err, "--device", "CUDA is not available", "use --device cpu")
    assert not out_csv.exists()


@pytest.mark.parametrize("device", ["foo", "cuda:x", "meta"])
def test_invalid_device_is_named(capsys, files, device):
    code, _, err = run_main(capsys, [files["a"], files["b"], "--device", device])
    assert_one_line_error(code, err, "--device", repr(device))


# ---- --csv -------------------------------------------------------------------------------------------------
def test_csv_under_a_regular_file_is_rejected_before_computing(capsys, files, tmp_path, monkeypatch):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    target = blocker / "sub" / "out.csv"
    monkeypatch.setattr(align, "alignment_scores", lambda *a, **k: pytest.fail("computed before checking --csv"))
    code, _, err = run_main(capsys, [files["a"], files["b"], "--csv", target])
    assert_one_line_error(code, err, "--csv", str(target), "not a directory")
    assert blocker.read_text() == "not a directory"


def test_csv_in_a_read_only_directory_is_rejected(capsys, files, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):
        # root ignores permission bits (the usual CI container): make the access check see the read-only dir
        real_access = os.access
        monkeypatch.setattr(align.os, "access", lambda p, mode: False if str(p) == str(ro) else real_access(p, mode))
    try:
        code, _, err = run_main(capsys, [files["a"], files["b"], "--csv", ro / "deeper" / "out.csv"])
        assert_one_line_error(code, err, "--csv", str(ro / "deeper" / "out.csv"), "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_csv_that_is_a_directory_is_rejected(capsys, files, tmp_path):
    code, _, err = run_main(capsys, [files["a"], files["b"], "--csv", tmp_path])
    assert_one_line_error(code, err, "--csv", str(tmp_path), "is a directory")


def test_csv_directory_is_created_on_success(capsys, files, tmp_path):
    target = tmp_path / "new" / "dir" / "out.csv"
    code, _, _ = run_main(capsys, [files["a"], files["b"], "--metrics", "cka", "--csv", target])
    assert code == 0 and target.read_text().startswith("metric,value")


# ---- as a process: one stderr line, no traceback -----------------------------------------------------------
def test_subprocess_error_has_no_traceback(files, tmp_path):
    out_csv = tmp_path / "out.csv"
    res = subprocess.run(
        [sys.executable, "-m", "mmrep.align", files["a"], files["b"], "--svcca-dim", "0", "--csv", str(out_csv)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("mmrep.align: error: --svcca-dim: must be >= 1")
    assert not out_csv.exists()
