"""cpu_threads: each mmrep process gets cores ÷ live mmrep processes (issue 14: oversubscribed CPUs slow runs 17×)."""

import os

import pytest
import torch

from mmrep.callbacks.threads import ThreadBudget
from mmrep.core import threads
from mmrep.core.errors import ConfigError


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "REGISTRY", tmp_path / "procs")
    monkeypatch.setattr(threads, "cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the parallel test runner sets it
    return tmp_path / "procs"


def test_auto_divides_the_cores_among_live_mmrep_processes(registry):
    threads.register()
    assert (registry / str(os.getpid())).exists() and threads.budget("auto") == 8
    (registry / str(os.getppid())).touch()  # another live process (the parent is alive)
    (registry / "999999999").touch()  # a killed run's stale entry: ignored and removed
    assert threads.live_processes() == 2 and threads.budget("auto") == 4 and not (registry / "999999999").exists()
    for pid in (os.getppid(), 1):  # three processes on 8 cores → 2 threads each; never below 1
        (registry / str(pid)).touch()
    assert threads.budget("auto") == 8 // 3
    assert threads.budget(3) == 3


def test_omp_num_threads_caps_auto_but_not_an_explicit_count(registry, monkeypatch):
    threads.register()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.budget("auto") == 3 and threads.budget(6) == 6
    (registry / str(os.getppid())).touch()
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert threads.budget("auto") == 4  # the cores' share is lower than the cap
    for junk in ("", "0", "two"):  # unset or unusable: no cap
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert threads.budget("auto") == 4


@pytest.mark.parametrize("bad", [0, -2, "many", 1.5, True])
def test_bad_setting_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"^cpu_threads: 'auto' or a positive number of threads"):
        threads.budget(bad)


def test_apply_sets_torch_threads_and_the_callback_follows_the_registry(registry):
    before = torch.get_num_threads()
    try:
        assert threads.apply(2) == 2 and torch.get_num_threads() == 2
        callback = ThreadBudget("auto", every_n_steps=1)
        (registry / str(os.getppid())).touch()
        callback.on_train_batch_start(type("T", (), {"global_step": 0})(), None, None, 0)
        assert torch.get_num_threads() == 4  # 8 cores, 2 live processes
    finally:
        torch.set_num_threads(before)


def test_a_process_holds_its_share_only_while_a_run_lasts(registry, run_inproc, tiny, tmp_path):
    seen = []
    original = threads.live_processes
    threads.live_processes = lambda: seen.append((registry / str(os.getpid())).exists()) or original()
    try:
        run_inproc([*tiny, "callbacks.rich_progress_bar=null", "logger=none"], tmp_path / "run")
    finally:
        threads.live_processes = original
    assert seen and all(seen)  # registered during the run (the budget was computed with it) ...
    assert not (registry / str(os.getpid())).exists()  # ... and not after: an idle test runner takes no share
