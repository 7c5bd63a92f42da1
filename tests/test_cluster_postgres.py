"""Several sweep workers on one PostgreSQL study (``pytest -m cluster``; the server from ``scripts/services.sh`` through
the fixtures of tests/cluster.py): a worker killed with SIGKILL while its job trains, its trial failed by heartbeat
by a surviving worker, the study still ends at exactly ``n_trials`` finished trials."""

import signal
import socket
import time

import pytest

from cluster import fresh_postgres_db  # noqa: F401  (fixture: a new empty database per test, dropped after)
from test_sweeps import assert_no_duplicate_params, finish_workers, start_worker

pytestmark = pytest.mark.cluster


def _trials(storage):
    try:
        study_id = storage.get_study_id_from_name("numeric_mmcl")
    except KeyError:  # no worker has created the study yet
        return []
    return storage.get_all_trials(study_id)


def test_three_workers_one_killed_mid_trial(fresh_postgres_db, tiny, tmp_path):  # noqa: F811
    """3 workers × a 9-trial study; worker 0 is killed (SIGKILL) once its trial has reported a validation to the
    pruner, i.e. while it trains. The survivors fail that trial when its heartbeat is 3 s old, run a replacement,
    and end with 9 finished trials, no parameters twice."""
    import optuna

    from hydra_plugins.mmrep_optuna_sweeper.workers import DROPPED_ATTR, STALE_ATTR, WORKER_ATTR

    storage = optuna.storages.RDBStorage(fresh_postgres_db)  # the schema first: the test polls it
    tiny = [a for a in tiny if not a.startswith(("trainer.max_steps", "dataset.steps_per_epoch"))]
    args = [
        "-m",
        "hparams_search=numeric_optuna",
        f"hydra.sweeper.storage={fresh_postgres_db}",
        "hydra.sweeper.n_trials=9",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "print_config=false",
        "trainer.max_steps=60",
        "dataset.steps_per_epoch=10",
        *tiny,
    ]  # 6 validations
    procs = [
        start_worker([*args, f"hydra.sweep.dir={tmp_path / f'sweep{k}'}"], tmp_path / f"worker{k}.log")
        for k in range(3)
    ]
    victim = procs[0]
    victim_id = f"{socket.gethostname()}:{victim.pid}"
    try:
        killed, deadline = None, time.time() + 120
        while killed is None:
            assert victim.poll() is None and time.time() < deadline, open(victim.log_path).read()[-3000:]
            for trial in _trials(storage):
                if (
                    trial.state.name == "RUNNING"
                    and trial.system_attrs.get(WORKER_ATTR) == victim_id
                    and trial.intermediate_values
                ):
                    victim.send_signal(signal.SIGKILL)
                    killed = trial.number
                    break
            time.sleep(0.1)
        victim.wait(timeout=30)
        outcomes = finish_workers(procs[1:], timeout=240)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for code, log in outcomes:
        assert code == 0 and "Traceback" not in log, log[-3000:]
    trials = {t.number: t for t in _trials(storage)}
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials.values()) == 9
    dead = trials[killed]
    assert dead.state.name == "FAIL" and dead.system_attrs[WORKER_ATTR] == victim_id
    survivors = [f"failed by {socket.gethostname()}:{p.pid}" for p in procs[1:]]
    assert any(s in dead.system_attrs[STALE_ATTR] for s in survivors), dead.system_attrs  # by heartbeat
    run = [t for t in trials.values() if DROPPED_ATTR not in t.system_attrs and t.number != killed]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in run), [(t.number, t.state.name) for t in run]
    assert_no_duplicate_params(trials.values())
    assert any(f"trial {killed} failed: no heartbeat" in log for _, log in outcomes)
