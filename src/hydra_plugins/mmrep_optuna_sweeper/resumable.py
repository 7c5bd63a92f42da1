"""``hydra/sweeper=mmrep_optuna``: hydra-optuna-sweeper made resumable, fault tolerant and able to prune.

hydra-optuna-sweeper reopens a stored study (``load_if_exists``) but then runs ``n_trials`` *more* trials, its seeded
sampler proposes the first run's parameters again (duplicates of completed trials), a trial that was running when
the sweep was killed stays RUNNING for ever, one failed trial aborts the study (``max_failure_rate: 0``), a relative
SQLite path only works from the folder it was written in, and trials cannot be pruned. :class:`ResumableOptunaSweeper`

* marks the study's RUNNING trials FAILED (no sweep is running: this one is starting);
* runs only ``n_trials − finished`` trials (finished: completed or pruned; nothing when the study is complete);
* reseeds a seeded sampler with ``seed + number of stored trials``, so resumed proposals are new, reproducibly;
* records a failed trial (an error, a diverged loss) as FAILED with a one-line warning and goes on
  (``max_failure_rate``: the failed fraction of a batch that does abort, default 1.0 = never);
* makes a relative ``sqlite:///`` path absolute and creates its folder;
* prunes with ``pruner`` (an optuna pruner config) on ``prune_on`` (a metric logged at every validation, e.g.
  ``val/loss``; ``prune_mode`` min/max says which way is better when it differs from the study's direction): each
  job finds its trial through ``MMREP_OPTUNA_TRIAL`` and reports to the stored study
  (:class:`mmrep.callbacks.optuna_pruning.OptunaPruning`), so pruning works in any launcher that shares the storage.

Any storage URL optuna accepts works (``sqlite:///…`` on one machine; ``postgresql://…`` or ``mysql://…`` for
sweeps whose jobs run on several cluster nodes).
"""

# no `from __future__ import annotations`: Hydra execs this module unregistered, which dataclasses cannot read
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

# optuna (and numpy) are imported where used: Hydra imports every plugin module at each start, sweep or not
log = logging.getLogger(__name__)

TRIAL_ENV = "MMREP_OPTUNA_TRIAL"  # a job's trial number, set per job through hydra.job.env_set


@dataclass
class MmrepOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mmrep_optuna_sweeper.resumable.ResumableOptunaSweeper"
    n_jobs: int = 1
    max_failure_rate: float = 1.0  # a failed trial is recorded and the study goes on
    pruner: Optional[Any] = None  # e.g. {_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}
    prune_on: Optional[str] = None  # a metric logged at every validation, e.g. val/loss
    prune_mode: Optional[str] = None  # min | max: which way prune_on improves (null: the study's direction)


ConfigStore.instance().store(group="hydra/sweeper", name="mmrep_optuna", node=MmrepOptunaSweeperConf, provider="mmrep")


def sweep_error(message: str) -> None:
    """End the sweep with one line (the sweeper runs outside any job's error handling)."""
    print(f"mmrep: error: {message}", file=sys.stderr)
    sys.exit(1)


def anchored_storage(storage):
    """A relative ``sqlite:///path`` made absolute (the launch folder) with its folder created; others unchanged."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return storage
    path = Path(storage[len("sqlite:///"):])
    if str(path) in ("", ":memory:"):
        return storage
    path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        sweep_error(f"hydra.sweeper.storage: cannot create {path.parent} for the study database ({err.strerror})")
    return f"sqlite:///{path}"


def _stored_trials(storage, study_name) -> tuple:
    """(the stored study or None, its trials)."""
    import optuna

    if storage is None or study_name is None:
        return None, []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return None, []
    return study, study.get_trials(deepcopy=False)


def _reseed(sampler, offset: int) -> None:
    """``seed + offset`` for optuna's seeded samplers (their seed lives in ``_rng``; the TPE's startup sampler too)."""
    import numpy as np

    seed = getattr(sampler, "_mmrep_seed", None)
    if seed is None:
        return
    for owner in (sampler, getattr(sampler, "_random_sampler", None)):
        if owner is not None and hasattr(owner, "_rng"):
            owner._rng = np.random.RandomState(seed + offset)


class ResumableOptunaSweeper(OptunaSweeper):
    """``hydra/sweeper=mmrep_optuna`` (see the module docstring): hydra-optuna-sweeper's keys plus ``pruner``,
    ``prune_on`` and ``prune_mode``."""

    def __init__(self, sampler, *args, pruner=None, prune_on: str | None = None, prune_mode: str | None = None,
                 **kwargs) -> None:
        super().__init__(sampler, *args, **kwargs)
        if pruner is not None and not prune_on:
            sweep_error("hydra.sweeper.prune_on: name the metric to prune on (logged at every validation, e.g. "
                        "val/loss) when hydra.sweeper.pruner is set")
        if prune_mode not in (None, "min", "max"):
            sweep_error(f"hydra.sweeper.prune_mode: min or max, got {prune_mode!r}")
        self.pruner = pruner
        seed = getattr(sampler, "_mmrep_seed", None)
        if seed is None:  # the sampler config's seed, kept for reseeding
            rng = getattr(sampler, "_rng", None)
            sampler._mmrep_seed = int(rng.get_state()[1][0]) if rng is not None else None

    def sweep(self, arguments):
        from optuna.trial import TrialState

        impl = self.sweeper
        impl.storage = anchored_storage(impl.storage)
        study, trials = _stored_trials(impl.storage, impl.study_name)
        if study is not None:
            stale = [t for t in trials if t.state == TrialState.RUNNING]
            for trial in stale:
                study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            requested, impl.n_trials = impl.n_trials, max(0, impl.n_trials - done)
            _reseed(impl.sampler, len(trials))
            log.info("study %s: %d trials stored (%d finished, %d left RUNNING by a killed sweep → FAIL); "
                     "running %d more to reach n_trials=%d", impl.study_name, len(trials), done, len(stale),
                     impl.n_trials, requested)
        self._optimize(arguments)

    def _optimize(self, arguments) -> None:
        """hydra-optuna-sweeper's ask–launch–tell loop, with the pruner, the trial number passed to each job, and
        failed or pruned jobs told as such."""
        import numpy as np
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        impl = self.sweeper
        impl._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*impl._parse_sweeper_params_config(), *arguments])
        space = {**(impl.search_space_distributions or {}), **distributions}
        grid = isinstance(impl.sampler, functools.partial) and impl.sampler.func == optuna.samplers.GridSampler
        if grid:
            choices = {name: impl._to_grid_sampler_choices(d) for name, d in space.items()}
            impl.sampler = impl.sampler(choices)
            impl.n_trials = min(impl.n_trials, int(np.prod([len(v) for v in choices.values()])))
        for name in fixed:
            space.pop(name, None)
        directions = impl._get_directions()
        study = optuna.create_study(study_name=impl.study_name, storage=impl.storage, sampler=impl.sampler,
                                    pruner=self.pruner, directions=directions, load_if_exists=True)
        log.info("study %s in %s: %s sampler, directions %s", study.study_name, impl.storage,
                 type(impl.sampler).__name__, directions)
        to_go = impl.n_trials
        while to_go > 0:
            trials = [study.ask() for _ in range(min(to_go, impl.n_jobs))]
            overrides = [(*job, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}")
                         for job, trial in zip(impl._configure_trials(trials, space, fixed), trials)]
            returns = impl.launcher.launch(overrides, initial_job_idx=impl.job_idx)
            impl.job_idx += len(returns)
            failed = [ret for trial, ret in zip(trials, returns) if not self._tell(study, trial, ret, len(directions))]
            if failed and len(failed) / len(returns) > impl.max_failure_rate:
                sweep_error(f"{len(failed)} of {len(returns)} trials failed, more than hydra.sweeper.max_failure_rate="
                            f"{impl.max_failure_rate}: stopping the study (see the warnings above)")
            to_go -= len(trials)
        self._save_results(study, directions)

    @staticmethod
    def _tell(study, trial, ret, n_directions: int) -> bool:
        """Record one job's outcome in ``study`` (optuna); False when the trial failed."""
        import optuna
        from optuna.trial import TrialState

        outcome = ret._return_value
        if ret.status == JobStatus.COMPLETED:
            try:
                values = [float(v) for v in (outcome if n_directions > 1 else [outcome])]
                if len(values) != n_directions:
                    raise ValueError
            except (TypeError, ValueError):
                outcome = ValueError(f"returned {outcome!r}, not {n_directions} number(s): set optimized_metric")
            else:
                try:
                    study.tell(trial, values=values)
                except RuntimeError as err:  # the grid sampler stops the study from inside tell once exhausted
                    if "Study.stop" not in str(err):
                        raise
                return True
        if isinstance(outcome, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, outcome)
            return True
        study.tell(trial, state=TrialState.FAIL)
        first = str(outcome).strip().splitlines()[0] if str(outcome).strip() else type(outcome).__name__
        log.warning("trial %d failed (%s: %s); recorded as FAIL, the study goes on", trial.number,
                    type(outcome).__name__, first)
        return False

    def _save_results(self, study, directions) -> None:
        from optuna.trial import TrialState

        impl = self.sweeper
        finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not finished:
            sweep_error(f"study {study.study_name}: no trial completed (see the warnings above and the runs under "
                        f"{impl.config.hydra.sweep.dir})")
        if len(directions) < 2:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best parameters: %s, value %s", best.params, best.value)
        else:
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
            log.info("%d Pareto-optimal trials", len(study.best_trials))
        sweep_dir = Path(impl.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # a rerun of a complete study launches nothing
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
