"""``hydra/sweeper=mmrep_optuna``: hydra-optuna-sweeper made resumable, fault tolerant, able to prune, and able to
share one study among several sweep processes (workers), on one machine or on many nodes.

hydra-optuna-sweeper reopens a stored study (``load_if_exists``) but then runs ``n_trials`` *more* trials, its seeded
sampler proposes the first run's parameters again (duplicates of completed trials), a trial that was running when
the sweep was killed stays RUNNING for ever, one failed trial aborts the study (``max_failure_rate: 0``), a relative
SQLite path only works from the folder it was written in, and trials cannot be pruned. :class:`ResumableOptunaSweeper`

* counts ``n_trials`` over every worker of the study: it asks a new trial only while finished (COMPLETE or PRUNED)
  plus live (RUNNING with a fresh heartbeat, or WAITING) trials are fewer than ``n_trials``; it waits (polling every
  ``heartbeat_interval``) while other workers' live trials could fill the study, since one may go stale and need a
  replacement; it exits once ``n_trials`` trials are finished. A rerun tops a killed study up, a finished study
  runs nothing. When two workers check and ask at once, the trial with the larger id is surplus: recorded FAIL
  (system attr ``mmrep:dropped``) and not run, so no more than ``n_trials`` trials finish. One run of one worker
  launches at most the trials the study lacked at its start (failed ones included), so failures cannot loop;
* finds stale trials by heartbeat, never by "RUNNING when I started": each trial gets a heartbeat in the study's
  RDB storage (the database's clock) when it is asked, from the sweeper while the launcher runs it and from the
  job itself while it trains (``mmrep.train`` → :func:`workers.job_heartbeat`, wherever the job runs). Any worker
  fails a RUNNING trial whose heartbeat is older than ``grace_period`` (at its start and between batches; system
  attr ``mmrep:stale``), and queues it again with its parameters up to ``retry_failed`` times
  (``optuna.storages.RetryFailedTrialCallback``). A RUNNING trial without any heartbeat (an older sweep's, another
  tool's) gets one when first seen, so it goes stale a grace period later unless something beats it;
* reseeds a seeded sampler as each trial is asked, from (the config's seed, the trial's id): one worker's
  proposals are reproducible, concurrent workers draw different ones (ids are unique in the database; trial
  numbers are not under races). The grid sampler picks unvisited points itself (randomly); a point two workers
  picked at once is dropped like a surplus trial;
* records a failed trial (an error, a diverged loss) as FAILED with a one-line warning and goes on
  (``max_failure_rate``: the failed fraction of a batch that does abort, default 1.0 = never);
* makes a relative ``sqlite:///`` path absolute and creates its folder;
* prunes with ``pruner`` (an optuna pruner config) on ``prune_on`` (a metric logged at every validation, e.g.
  ``val/loss``; ``prune_mode`` min/max says which way is better when it differs from the study's direction): each
  job finds its trial through ``MMREP_OPTUNA_TRIAL_ID`` and reports to the stored study
  (:class:`mmrep.callbacks.optuna_pruning.OptunaPruning`), so pruning works in any launcher that shares the storage.

Keys beside hydra-optuna-sweeper's: ``pruner``, ``prune_on``, ``prune_mode`` (above); ``heartbeat_interval``
(seconds between heartbeats, a positive int, default 30), ``grace_period`` (seconds without a heartbeat before a
RUNNING trial is stale, more than the interval, default 120), ``retry_failed`` (how many times a stale trial is run
again, default 0). Heartbeats tell a dead worker from a live one, not a hung one.

Any storage URL optuna accepts works (``sqlite:///…`` on one machine; ``postgresql://…`` or ``mysql://…`` for
workers or jobs on several cluster nodes); several workers need ``study_name`` set. Without an RDB storage (none,
in memory; redis) there are no heartbeats: the sweep assumes it is alone and fails RUNNING trials at its start.
"""

# no `from __future__ import annotations`: Hydra execs this module unregistered, which dataclasses cannot read
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.mmrep_optuna_sweeper.storage import anchored_storage, sweep_error

# optuna (and numpy) are imported where used: Hydra imports every plugin module at each start, sweep or not
log = logging.getLogger(__name__)

TRIAL_ENV = "MMREP_OPTUNA_TRIAL"  # a job's trial number, set per job through hydra.job.env_set (its id: workers.py)


@dataclass
class MmrepOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mmrep_optuna_sweeper.resumable.ResumableOptunaSweeper"
    n_jobs: int = 1
    max_failure_rate: float = 1.0  # a failed trial is recorded and the study goes on
    pruner: Any | None = None  # e.g. {_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}
    prune_on: str | None = None  # a metric logged at every validation, e.g. val/loss
    prune_mode: str | None = None  # min | max: which way prune_on improves (null: the study's direction)
    heartbeat_interval: int = 30  # s between heartbeats of a running trial; a waiting worker polls as often
    grace_period: int = 120  # s without a heartbeat after which another worker fails a RUNNING trial
    retry_failed: int = 0  # how many times a trial failed by heartbeat is queued again with its parameters


ConfigStore.instance().store(group="hydra/sweeper", name="mmrep_optuna", node=MmrepOptunaSweeperConf, provider="mmrep")


def _reseed(sampler, trial_id: int) -> None:
    """Seed a seeded sampler's generators (its ``_rng``, the TPE's startup sampler's, CMA-ES's independent
    sampler's) from (its config seed, ``trial_id``): one worker's proposals are reproducible, and workers sharing a
    study — whose trials have different ids, unique in the database — draw different ones."""
    import numpy as np

    seed = getattr(sampler, "_mmrep_seed", None)
    if seed is None:
        return
    for k, owner in enumerate(
        (sampler, getattr(sampler, "_random_sampler", None), getattr(sampler, "_independent_sampler", None))
    ):
        if owner is not None and hasattr(owner, "_rng"):
            owner._rng = np.random.RandomState([seed % 2**32, trial_id % 2**32, k])


def _reseed_at_each_ask(sampler) -> None:
    """Reseed ``sampler`` (see :func:`_reseed`) as each trial is asked, before anything is sampled for it: optuna
    calls ``infer_relative_search_space`` first when it creates a trial, with the trial's id."""
    if getattr(sampler, "_mmrep_seed", None) is None or getattr(sampler, "_mmrep_reseeds", False):
        return
    infer = sampler.infer_relative_search_space

    def reseeding(study, trial):
        _reseed(sampler, trial._trial_id)
        return infer(study, trial)

    sampler.infer_relative_search_space = reseeding
    sampler._mmrep_reseeds = True


def _tell_despite_grid_stop(study, trial, **outcome) -> None:
    """``study.tell``; the grid sampler calls ``study.stop()`` from inside it once every point is visited, which
    optuna 2.10.1 refuses outside ``optimize`` with a RuntimeError after the outcome is stored: ignored."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


class ResumableOptunaSweeper(OptunaSweeper):
    """``hydra/sweeper=mmrep_optuna`` (see the module docstring): hydra-optuna-sweeper's keys plus ``pruner``,
    ``prune_on``, ``prune_mode``, ``heartbeat_interval``, ``grace_period`` and ``retry_failed``."""

    def __init__(
        self,
        sampler,
        *args,
        pruner=None,
        prune_on: str | None = None,
        prune_mode: str | None = None,
        heartbeat_interval: int = 30,
        grace_period: int = 120,
        retry_failed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(sampler, *args, **kwargs)
        if pruner is not None and not prune_on:
            sweep_error(
                "hydra.sweeper.prune_on: name the metric to prune on (logged at every validation, e.g. "
                "val/loss) when hydra.sweeper.pruner is set"
            )
        if prune_mode not in (None, "min", "max"):
            sweep_error(f"hydra.sweeper.prune_mode: min or max, got {prune_mode!r}")
        if not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
            sweep_error(f"hydra.sweeper.heartbeat_interval: a whole number of seconds >= 1, got {heartbeat_interval!r}")
        if not isinstance(grace_period, int) or grace_period <= heartbeat_interval:
            sweep_error(
                f"hydra.sweeper.grace_period: a whole number of seconds above heartbeat_interval "
                f"({heartbeat_interval}), got {grace_period!r}"
            )
        if not isinstance(retry_failed, int) or retry_failed < 0:
            sweep_error(
                f"hydra.sweeper.retry_failed: how many times a stale trial is run again (0: never), "
                f"got {retry_failed!r}"
            )
        self.pruner = pruner
        self.heartbeat_interval, self.grace_period, self.retry_failed = heartbeat_interval, grace_period, retry_failed
        seed = getattr(sampler, "_mmrep_seed", None)
        if seed is None:  # the sampler config's seed, kept for reseeding
            rng = getattr(sampler, "_rng", None)
            sampler._mmrep_seed = int(rng.get_state()[1][0]) if rng is not None else None

    def sweep(self, arguments):
        impl = self.sweeper
        impl.storage = anchored_storage(impl.storage)
        self._optimize(arguments)

    def _open_study(self, directions):
        """The study (created or loaded) and, on an RDB storage, its :class:`workers.Coordinator` (else None)."""
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        from hydra_plugins.mmrep_optuna_sweeper import workers

        impl = self.sweeper
        rdb = isinstance(impl.storage, str) and not impl.storage.startswith("redis")
        for attempt in range(6):  # workers starting together on a new database race to create it
            try:
                storage = workers.open_storage(impl.storage) if rdb else impl.storage
                study = optuna.create_study(
                    study_name=impl.study_name,
                    storage=storage,
                    sampler=impl.sampler,
                    pruner=self.pruner,
                    directions=directions,
                    load_if_exists=True,
                )
                break
            except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
                if attempt == 5:
                    raise
                time.sleep(0.5 + attempt)
        if not rdb:  # no heartbeats: as before, no other sweep can be running (in memory) or is assumed so (redis)
            from optuna.trial import TrialState

            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
                log.warning("trial %d was left RUNNING (storage without heartbeats): marked FAIL", trial.number)
            return study, None
        return study, workers.Coordinator(study, self.heartbeat_interval, self.grace_period, self.retry_failed)

    @staticmethod
    def _solo_census(study):
        from optuna.trial import TrialState

        from hydra_plugins.mmrep_optuna_sweeper.workers import Census

        trials = study.get_trials(deepcopy=False)
        return Census(
            finished=sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials),
            waiting=sum(t.state == TrialState.WAITING for t in trials),
        )

    def _optimize(self, arguments) -> None:
        """hydra-optuna-sweeper's ask–launch–tell loop, shared with other workers on the study: the quota counts
        every worker's trials, trials are claimed and beat, and failed or pruned jobs are told as such."""
        import numpy as np
        import optuna

        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        impl = self.sweeper
        impl._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*impl._parse_sweeper_params_config(), *arguments])
        space = {**(impl.search_space_distributions or {}), **distributions}
        for name in fixed:  # before the grid is built: a grid axis fixed on the command line is no axis
            space.pop(name, None)
        grid = isinstance(impl.sampler, functools.partial) and impl.sampler.func == optuna.samplers.GridSampler
        n_grid = None
        if grid:
            choices = {name: impl._to_grid_sampler_choices(d) for name, d in space.items()}
            impl.sampler = impl.sampler(choices)
            n_grid = int(np.prod([len(v) for v in choices.values()]))
            impl.n_trials = min(impl.n_trials, n_grid)
        directions = impl._get_directions()
        _reseed_at_each_ask(impl.sampler)
        study, coord = self._open_study(directions)
        n_trials, name = impl.n_trials, study.study_name
        census = coord.survey() if coord else self._solo_census(study)
        # at most the trials the study lacked at this worker's start, failed ones included: a trial that fails
        # every time cannot loop (a rerun tops up again)
        budget, ran, waiting_for = max(0, n_trials - census.finished), 0, None
        log.info(
            "study %s in %s: %s sampler, directions %s; %d finished of n_trials=%d, %d live in other workers%s",
            name,
            impl.storage,
            type(impl.sampler).__name__,
            directions,
            census.finished,
            n_trials,
            census.live,
            f" (heartbeat every {self.heartbeat_interval}s, stale after {self.grace_period}s, retry_failed "
            f"{self.retry_failed})"
            if coord
            else "",
        )
        while True:
            if census.finished >= n_trials:
                log.info(
                    "study %s: %d finished of n_trials=%d; done (this worker ran %d)",
                    name,
                    census.finished,
                    n_trials,
                    ran,
                )
                break
            # trials this worker may ask: a WAITING one (a queued retry) is work for whichever worker asks next, so
            # only the trials running elsewhere are subtracted (counting it as another worker's left every worker
            # waiting for it, forever, when a stale trial was requeued after this worker's last ask)
            free = n_trials - census.finished - (census.running if coord else 0)
            if grid and coord:
                free = min(free, n_grid - len(self._grid_points_taken(study, coord)))
            if free <= 0 and census.live == 0:  # only a grid gets here: every point is finished or failed
                log.info(
                    "study %s: the grid is exhausted (%d finished of n_trials=%d); done",
                    name,
                    census.finished,
                    n_trials,
                )
                break
            if ran >= budget:
                log.warning(
                    "study %s: %d finished of n_trials=%d; this worker stops after the %d trials the study "
                    "lacked at its start (failed ones included); run it again to top up",
                    name,
                    census.finished,
                    n_trials,
                    budget,
                )
                break
            if free <= 0:
                if waiting_for != (census.finished, census.live):
                    waiting_for = (census.finished, census.live)
                    log.info(
                        "study %s: %d finished of n_trials=%d, %d live in other workers; waiting",
                        name,
                        census.finished,
                        n_trials,
                        census.live,
                    )
                time.sleep(min(self.heartbeat_interval, 5))  # a finished peer frees its slot soon
                census = coord.survey()
                continue
            waiting_for = None
            batch = self._ask(study, coord, min(free, impl.n_jobs, budget - ran), n_trials, space, fixed, grid)
            if batch:
                ran += len(batch)
                self._launch(study, coord, batch, len(directions))
            census = coord.survey() if coord else self._solo_census(study)
        self._save_results(study, directions)

    def _ask(self, study, coord, want: int, n_trials: int, space, fixed, grid: bool) -> list:
        """Up to ``want`` new trials with their overrides, [(trial, overrides)]. On a shared study each is claimed
        and beat at once; one that another worker's simultaneous ask made surplus (or, for a grid, a duplicate
        point) is recorded FAIL with ``mmrep:dropped`` and ends the batch (the next census decides)."""
        impl = self.sweeper
        batch, attempts = [], 0
        while len(batch) < want and attempts < want + 10:
            attempts += 1
            trial = study.ask()
            if coord is not None:
                if not coord.claim(trial):  # a queued trial popped by another worker at the same time: theirs
                    log.debug("trial %d was claimed by another worker", trial.number)
                    continue
                ahead = coord.surplus(trial, n_trials)
                if ahead >= n_trials:
                    coord.drop(
                        trial,
                        f"surplus: {ahead} trials asked before it by other workers are finished or "
                        f"running (n_trials={n_trials})",
                    )
                    break
            overrides = impl._configure_trials([trial], space, fixed)[0]
            if grid and coord is not None and self._grid_duplicate(study, coord, trial):
                coord.drop(trial, f"grid point {dict(trial.params)} taken by another worker's trial")
                break
            batch.append((trial, overrides))
        return batch

    def _launch(self, study, coord, batch: list, n_directions: int) -> None:
        """Run the batch's jobs (the sweeper beats their trials while the launcher runs them: a job that waits for
        its turn or in a cluster queue stays live) and record their outcomes."""
        import contextlib

        from hydra_plugins.mmrep_optuna_sweeper.workers import TRIAL_ID_ENV, Heartbeat

        impl = self.sweeper
        overrides = [
            (
                *job,
                f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
                f"++hydra.job.env_set.{TRIAL_ID_ENV}={trial._trial_id}",
            )
            for trial, job in batch
        ]
        beating = (
            Heartbeat(coord.backend, [t._trial_id for t, _ in batch], self.heartbeat_interval, what="sweeper")
            if coord
            else contextlib.nullcontext()
        )
        with beating:
            returns = impl.launcher.launch(overrides, initial_job_idx=impl.job_idx)
        impl.job_idx += len(returns)
        failed = [
            ret for (trial, _), ret in zip(batch, returns) if not self._record(study, coord, trial, ret, n_directions)
        ]
        if failed and len(failed) / len(returns) > impl.max_failure_rate:
            sweep_error(
                f"{len(failed)} of {len(returns)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{impl.max_failure_rate}: stopping the study (see the warnings above)"
            )

    def _record(self, study, coord, trial, ret, n_directions: int) -> bool:
        """:meth:`_tell`, except for a trial another worker failed meanwhile (its heartbeat went stale)."""
        from optuna.trial import TrialState

        try:
            return self._tell(study, trial, ret, n_directions)
        except RuntimeError as err:  # optuna: "Cannot change attributes of finished trial."
            if coord is None or "finished" not in str(err) or coord.state(trial._trial_id) == TrialState.RUNNING:
                raise
            from hydra_plugins.mmrep_optuna_sweeper.workers import STALE_ATTR

            why = coord.backend.get_trial(trial._trial_id).system_attrs.get(STALE_ATTR, "by another worker")
            log.warning(
                "trial %d ended after it had been recorded FAIL (%s); its outcome is not recorded", trial.number, why
            )
            return False

    @staticmethod
    def _grid_ids(study, coord) -> dict:
        """{trial id: grid id} of the study's trials on this grid."""
        sampler = study.sampler
        return {
            t._trial_id: t.system_attrs["grid_id"]
            for t in coord.backend.get_all_trials(study._study_id, deepcopy=False)
            if "grid_id" in t.system_attrs and sampler._same_search_space(t.system_attrs["search_space"])
        }

    def _grid_points_taken(self, study, coord) -> set:
        return coord.grid_points_taken(self._grid_ids(study, coord))

    def _grid_duplicate(self, study, coord, trial) -> bool:
        """Whether an earlier finished or live trial holds ``trial``'s grid point (two workers picked it at once)."""
        if "failed_trial" in trial.system_attrs:  # a retry keeps its parameters, not its grid id
            return False
        ids = self._grid_ids(study, coord)
        mine = ids.get(trial._trial_id)
        earlier = {tid: g for tid, g in ids.items() if tid < trial._trial_id and g == mine}
        return mine is not None and bool(coord.grid_points_taken(earlier))

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
                _tell_despite_grid_stop(study, trial, values=values)
                return True
        if isinstance(outcome, optuna.TrialPruned):
            _tell_despite_grid_stop(study, trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, outcome)
            return True
        _tell_despite_grid_stop(study, trial, state=TrialState.FAIL)
        first = str(outcome).strip().splitlines()[0] if str(outcome).strip() else type(outcome).__name__
        log.warning(
            "trial %d failed (%s: %s); recorded as FAIL, the study goes on", trial.number, type(outcome).__name__, first
        )
        return False

    def _save_results(self, study, directions) -> None:
        from optuna.trial import TrialState

        impl = self.sweeper
        finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not finished:
            sweep_error(
                f"study {study.study_name}: no trial completed (see the warnings above and the runs under "
                f"{impl.config.hydra.sweep.dir})"
            )
        if len(directions) < 2:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best parameters: %s, value %s", best.params, best.value)
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
            }
            log.info("%d Pareto-optimal trials", len(study.best_trials))
        sweep_dir = Path(impl.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # a rerun of a complete study launches nothing
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
