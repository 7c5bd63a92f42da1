"""Multirun sweeps (experiment overlays, Optuna) and the analysis command that turns them into tables."""

import pandas as pd
import pytest

from mmrep.analysis.numeric import identification_table, pivot
from mmrep.analysis.numeric import main as table_main


def test_selection_sweep_to_table_heatmap_and_notebook(cli, tiny, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    res = cli(["-m", "experiment=numeric_selection", "bias.theta=967,55", "seed=0", f"hydra.sweep.dir={sweep}", *tiny])
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert table_main([str(sweep), "--probe", "linear"]) == 0
    table = pd.read_csv(sweep / "identification.csv")
    assert list(dict.fromkeys(table.setting)) == ["θ={0..7}", "θ={0..2}"]
    assert (table.value >= 0).all() and (table["count"] == 1).all()
    assert (sweep / "identification_x_linear.png").stat().st_size > 10_000
    md = (sweep / "identification_x_linear.md").read_text()
    assert "s_9" in md and "m_x" in md
    from test_notebooks import execute_notebook, figures

    outputs = execute_notebook("numeric_identifiability.ipynb", sweep, tmp_path, monkeypatch)
    assert figures(outputs) == 2  # the staircase and the heatmap


def _fake_runs(root, settings, seeds):
    from fixtures import write_fake_run

    for k, (theta, beta, values) in enumerate(settings):
        for seed in seeds:
            cfg = {
                "bias": {"theta": theta, "beta": beta},
                "dataset": {"dependent": False, "n_semantics": 10},
                "seed": seed,
            }
            rows = [
                {
                    "metric": "r2",
                    "probe": "mlp",
                    "modality": "x",
                    "target": t,
                    "value": v + 0.01 * seed,
                    "split": "probe_eval",
                }
                for t, v in values.items()
            ]
            write_fake_run(root / f"{k}_{seed}", cfg, rows)


def test_table_averages_seeds_clips_and_rounds_half_up(tmp_path):
    from mmrep.analysis.numeric import CONFIG_KEYS
    from mmrep.analysis.runs import load_runs

    _fake_runs(
        tmp_path,
        [(1022, -1, {"s_0": 0.945, "m_x": -0.2}), (967, [0, 1], {"s_0": 0.245, "m_x": 0.04})],
        seeds=[0, 1],
    )
    table = identification_table(load_runs(tmp_path, CONFIG_KEYS))
    first = table[(table.setting == "θ={0..9} β=∅") & (table.target == "s_0")].iloc[0]
    assert first["mean"] == pytest.approx(0.95) and first["count"] == 2  # seeds add 0 and 0.01
    wide = pivot(table)
    assert wide.loc["s_0", "θ={0..9} β=∅"] == 1.0  # 0.95 rounds half up
    assert wide.loc["s_0", "θ={0..7} β={0,1}"] == 0.3  # 0.25 → 0.3 (half up, not to even)
    assert wide.loc["m_x", "θ={0..9} β=∅"] == 0.0  # negative mean clipped to 0


def test_table_errors_on_empty_dir(tmp_path, capsys):
    assert table_main([str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mmrep.analysis.numeric: error: ") and "no run folders" in line


# small heartbeats for the tests: a trial silent for 2 s (a few of SQLite's 1 s clock ticks) is stale
QUICK_BEATS = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]


def test_optuna_sweep_resumes_without_duplicates_or_stale_trials(cli, tiny, tmp_path):
    import optuna

    from hydra_plugins.mmrep_optuna_sweeper.workers import STALE_ATTR

    db = tmp_path / "study.db"
    args = ["-m", "hparams_search=numeric_optuna", f"hydra.sweeper.storage=sqlite:///{db}", *QUICK_BEATS, *tiny]
    res = cli([*args, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'sweep1'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli([*args, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'sweep2'}"])
    assert res.returncode == 0 and "2 finished of n_trials=2; done (this worker ran 0)" in res.stdout  # complete
    study = optuna.load_study(study_name="numeric_mmcl", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    killed = study.ask()  # a trial left RUNNING by a killed sweep of an older mmrep: no heartbeat at all
    res = cli([*args, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path / 'sweep3'}"])  # top up to 4
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert f"trial {killed.number} is RUNNING without a heartbeat" in log  # given one, then failed once stale
    assert f"trial {killed.number} failed: no heartbeat for" in log
    study = optuna.load_study(study_name="numeric_mmcl", storage=f"sqlite:///{db}")
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed.number] == "FAIL" and list(states.values()).count("COMPLETE") == 4 and len(states) == 5
    assert STALE_ATTR in study.trials[killed.number].system_attrs
    params = [tuple(sorted(t.params.items())) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(set(params)) == 4  # the resumed proposals repeat none of the completed ones
    assert all(-1 <= t.value <= 1 for t in study.trials if t.state.name == "COMPLETE")


def start_worker(args, out):
    """A sweep worker (``python -m mmrep.train -m …``) in the background, its output in ``out``."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    handle = open(out, "w")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmrep.train", *args],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = out
    return proc


def finish_workers(procs, timeout=300):
    """Wait for the workers; their (return code, output) in order."""
    outcomes = []
    for proc in procs:
        proc.wait(timeout=timeout)
        outcomes.append((proc.returncode, open(proc.log_path).read()))
    return outcomes


def study_trials_named(name, storage):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials()


def study_trials(storage):
    return study_trials_named("numeric_mmcl", storage)


def assert_no_duplicate_params(trials):
    params = [tuple(sorted(t.params.items())) for t in trials if t.params]
    assert len(params) == len(set(params)), params


def test_concurrent_workers_share_one_study(tiny, tmp_path):
    """Three workers started together on one new SQLite study of 5 trials: exactly 5 finish, no parameters twice,
    no worker fails another's live trial, every worker exits 0 (who waits for whom: the logs)."""
    from hydra_plugins.mmrep_optuna_sweeper.workers import DROPPED_ATTR, STALE_ATTR, WORKER_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [
        "-m",
        "hparams_search=numeric_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=15",
        "print_config=false",
        *tiny,
    ]
    procs = [
        start_worker([*args, f"hydra.sweep.dir={tmp_path / f'sweep{k}'}"], tmp_path / f"worker{k}.log")
        for k in range(3)
    ]
    for code, log in finish_workers(procs):
        assert code == 0 and "Traceback" not in log, log[-3000:]
        assert "5 finished of n_trials=5; done" in log
    trials = study_trials(storage)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    run = [t for t in trials if DROPPED_ATTR not in t.system_attrs]  # a surplus trial is dropped before it runs
    assert all(t.state.name == "COMPLETE" and STALE_ATTR not in t.system_attrs for t in run), [
        (t.number, t.state.name, t.system_attrs) for t in trials
    ]
    assert_no_duplicate_params(trials)
    assert len({t.system_attrs[WORKER_ATTR] for t in run}) >= 2  # the study was shared


def test_a_trial_whose_heartbeat_stops_is_failed_and_retried(cli, tiny, tmp_path):
    """A trial whose job died (one heartbeat, then silence) is failed by the next worker once its heartbeat is
    older than the grace period, and with retry_failed=1 run again with its parameters."""
    import optuna

    from hydra_plugins.mmrep_optuna_sweeper.workers import STALE_ATTR, WORKER_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="numeric_mmcl", storage=storage, direction="maximize")
    dead = study.ask()
    lr = dead.suggest_float("objective.optimizer.lr", 3e-4, 1e-2, log=True)
    temperature = dead.suggest_float("objective.temperature", 0.1, 2.0, log=True)
    dead.set_system_attr(WORKER_ATTR, "gone:1")
    optuna.storages.RDBStorage(storage).record_heartbeat(dead._trial_id)
    res = cli(
        [
            "-m",
            "hparams_search=numeric_optuna",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.retry_failed=1",
            *QUICK_BEATS,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *tiny,
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert f"trial {dead.number} failed: no heartbeat for" in log and "its worker gone:1 stopped" in log
    assert "queued again with its parameters (retry 1 of 1)" in log
    trials = study_trials(storage)
    assert trials[dead.number].state.name == "FAIL" and STALE_ATTR in trials[dead.number].system_attrs
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == {"objective.optimizer.lr": lr, "objective.temperature": temperature}
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2 and len(trials) == 3


def test_a_queued_retry_is_run_by_the_next_worker_to_ask(cli, tiny, tmp_path):
    """A study with one finished trial and one WAITING (a stale trial's retry, queued by any worker): a worker
    asked for n_trials=2 runs the queued trial and stops. (It used to count the queued trial as another worker's
    and wait for it forever: seen when a stale trial was requeued after the worker's own last ask.)"""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="numeric_mmcl", storage=storage, direction="maximize")
    done = study.ask()
    done.suggest_float("objective.optimizer.lr", 3e-4, 1e-2, log=True)
    done.suggest_float("objective.temperature", 0.1, 2.0, log=True)
    study.tell(done, 0.5)
    queued = {"objective.optimizer.lr": 2e-3, "objective.temperature": 0.5}
    study.enqueue_trial(queued)
    args = ["-m", "hparams_search=numeric_optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=2"]
    res = cli([*args, *QUICK_BEATS, f"hydra.sweep.dir={tmp_path / 'sweep'}", *tiny], timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = study_trials(storage)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].params == queued


def test_a_job_beats_its_own_trial(tiny, tmp_path):
    """The job side alone, as on a cluster node: a run with the sweeper's config and MMREP_OPTUNA_TRIAL_ID records
    its trial's heartbeat every heartbeat_interval while it runs (and leaves the trial RUNNING: the sweeper tells)."""
    import os
    import time

    import optuna
    from sqlalchemy import create_engine, text

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trial = optuna.create_study(study_name="numeric_mmcl", storage=storage, direction="maximize").ask()
    os.environ["MMREP_OPTUNA_TRIAL_ID"] = str(trial._trial_id)  # for start_worker's child only
    try:
        job = start_worker(
            [
                "hydra/sweeper=mmrep_optuna",
                f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.study_name=numeric_mmcl",
                "hydra.sweeper.heartbeat_interval=1",
                f"hydra.run.dir={tmp_path / 'run'}",
                *tiny,
            ],
            tmp_path / "job.log",
        )
    finally:
        del os.environ["MMREP_OPTUNA_TRIAL_ID"]
    seen, engine = set(), create_engine(storage)
    while job.poll() is None:
        with engine.connect() as con:
            seen.update(
                r[0]
                for r in con.execute(
                    text("select heartbeat from trial_heartbeats where trial_id = :t"), {"t": trial._trial_id}
                )
            )
        time.sleep(0.2)
    ((code, log),) = finish_workers([job])
    assert code == 0, log[-3000:]
    assert len(seen) >= 2, seen  # beaten at the job's start and again while it ran
    assert study_trials(storage)[0].state.name == "RUNNING"


def test_races_between_workers_on_one_study(tmp_path):
    """The check-then-ask race and the fail-a-stale-trial race, played by two workers' coordinators on one SQLite
    study: the later of two trials asked for the last free place is dropped, and only one worker fails a stale
    trial (and queues its one retry)."""
    import time

    import optuna

    from hydra_plugins.mmrep_optuna_sweeper.workers import DROPPED_ATTR, STALE_ATTR, Coordinator

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True) for _ in range(2)]
    a, b = (Coordinator(study, heartbeat_interval=1, grace_period=1, retry_failed=1) for study in workers)
    assert a.survey().live == b.survey().live == 0  # both see one free place of n_trials=1 ...
    first, second = workers[0].ask(), workers[1].ask()  # ... and ask at once
    assert a.claim(first) and b.claim(second)
    assert a.surplus(first, n_trials=1) == 0 and b.surplus(second, n_trials=1) == 1
    b.drop(second, "surplus")
    workers[0].tell(first, 1.0)
    trials = workers[0].get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] and DROPPED_ATTR in trials[1].system_attrs
    assert a.census().finished == 1 and a.census().live == 0

    stale = workers[0].ask()
    stale.suggest_float("x", 0, 1)
    a.claim(stale)  # one heartbeat, then silence
    time.sleep(3)  # past the 1 s grace period on SQLite's 1 s clock
    failed = [a.survey().stale, b.survey().stale]
    assert sorted(failed, key=len) == [[], [stale.number]]
    trials = study_trials_named("s", storage)  # not workers[0]'s view: optuna caches the trials a process owns
    assert trials[stale.number].state.name == "FAIL" and STALE_ATTR in trials[stale.number].system_attrs
    assert [t.state.name for t in trials if t.system_attrs.get("failed_trial") == stale.number] == ["WAITING"]
    assert a.census().waiting == 1  # the retry: live, the next ask runs it with the same x


@pytest.mark.ddp
def test_a_ddp_trial_runs_its_parameters_on_every_rank(cli, tiny, tmp_path):
    """trainer=ddp_cpu (2 spawned gloo ranks) in a sweep: the sweeper passes the trial's parameters as overrides of
    the job, whose config (.hydra/config.yaml) both ranks train with; the trial completes with those parameters."""
    import yaml

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    res = cli(
        [
            "-m",
            "hparams_search=numeric_optuna",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.n_trials=1",
            "trainer=ddp_cpu",
            *QUICK_BEATS,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *tiny,
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (trial,) = study_trials(storage)
    assert trial.state.name == "COMPLETE"
    cfg = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").read_text())
    assert cfg["trainer"]["devices"] == 2 and cfg["trainer"]["strategy"] == "ddp_spawn"
    used = {
        "objective.optimizer.lr": cfg["objective"]["optimizer"]["lr"],
        "objective.temperature": cfg["objective"]["temperature"],
    }
    assert used == trial.params
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in res.stdout + res.stderr  # the second rank joined the trial's job


def test_optuna_prunes_a_trial_that_trails_the_median(cli, tiny, tmp_path):
    """Pruning through Lightning: a first trial (lr 1e-2) completes; a second (lr 1e-7, hardly learning) reports a
    validation loss above the first's at step 20 and is stopped there by the median rule, recorded PRUNED."""
    import optuna

    db = tmp_path / "study.db"
    args = [
        "-m",
        "hparams_search=numeric_optuna",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "objective.temperature=1.0",
        "metric.identifiability.probes=[mlp]",
        *tiny,
    ]
    res = cli([*args, "hydra.sweeper.n_trials=1", "objective.optimizer.lr=1e-2"])
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli(
        [*args, "hydra.sweeper.n_trials=2", "objective.optimizer.lr=1e-7", f"hydra.sweep.dir={tmp_path / 'sweep2'}"]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trial 1 pruned: pruned at step 20 on val/loss" in res.stdout + res.stderr
    study = optuna.load_study(study_name="numeric_mmcl", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert list(study.trials[1].intermediate_values) == [20]  # stopped at its first validation, of two
    assert -study.trials[1].intermediate_values[20] > -study.trials[0].intermediate_values[20]  # −loss reported
    pruned_run = tmp_path / "sweep2" / "0"
    assert (pruned_run / "checkpoints" / "last.ckpt").is_file() and not (pruned_run / "results.csv").exists()


def test_a_failed_optuna_trial_is_recorded_and_the_study_goes_on(cli, tiny, tmp_path):
    """Trials whose batch size is invalid fail with a one-line reason; the others complete and the sweep exits 0.
    The study lives in <paths.log_dir>/optuna_numeric.db wherever the command is launched."""
    import optuna

    tiny = [a for a in tiny if not a.startswith("dataset.batch_size")]
    args = [
        "-m",
        "hparams_search=numeric_optuna",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "dataset.batch_size=choice(64,0)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner=null",
        *tiny,
    ]
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    study = optuna.load_study(study_name="numeric_mmcl", storage=f"sqlite:///{tmp_path / 'logs' / 'optuna_numeric.db'}")
    states = {t.params["dataset.batch_size"]: t.state.name for t in study.trials}
    assert states == {64: "COMPLETE", 0: "FAIL"}, [(t.params, t.state.name) for t in study.trials]
    assert (
        "failed (ConfigError: dataset.batch_size: must be a positive integer, got 0); recorded as FAIL, the study "
        "goes on" in res.stdout + res.stderr
    )  # the failing trial's reason, in one line
