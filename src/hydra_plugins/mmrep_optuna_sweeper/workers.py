"""Several sweep workers on one Optuna study: trial heartbeats, stale trials, the shared ``n_trials`` quota.

Used by :class:`~hydra_plugins.mmrep_optuna_sweeper.resumable.ResumableOptunaSweeper` (the sweeper side) and by
``mmrep.train.main`` (:func:`job_heartbeat`, the job side). Every time is the database server's clock
(``now()``/``CURRENT_TIMESTAMP``, as optuna's own heartbeats), so workers on many nodes agree without synchronised
clocks. Works on optuna 2.10.1's RDB storage (SQLite, PostgreSQL, MySQL); the helpers reach into its schema
(``optuna.storages._rdb.models``) where optuna has no public call for an atomic check-and-set.

Hydra imports this module at every start (plugin discovery): optuna and SQLAlchemy are imported where used.
"""

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TRIAL_ID_ENV = "MMREP_OPTUNA_TRIAL_ID"  # a job's trial id (unique in the database), set per job like the number
WORKER_ATTR = "mmrep:worker"  # system attr: host:pid of the sweep process that runs the trial (its claim)
STALE_ATTR = "mmrep:stale"  # system attr of a trial failed by heartbeat: why, and who noticed
DROPPED_ATTR = "mmrep:dropped"  # system attr of a trial asked but not run (surplus, duplicate grid point)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(url: str):
    """optuna's ``RDBStorage`` for ``url``. Workers started together on a new database race to create its tables
    and version row; the loser's error is retried (a few times, after a random pause)."""
    from optuna.storages import RDBStorage

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # SQLite: wait for the lock
    for attempt in range(6):
        try:
            return RDBStorage(url, engine_kwargs=kwargs)
        except Exception:  # noqa: BLE001  (sqlalchemy's or optuna's error, whichever the race raised)
            if attempt == 5:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError  # unreachable


def _db_now(session):
    """The database's current time, naive (how optuna stores heartbeats)."""
    from sqlalchemy import func, select

    now = session.execute(select(func.now())).scalar()
    if isinstance(now, str):  # SQLite without type information
        from datetime import datetime

        now = datetime.fromisoformat(now)
    return now.replace(tzinfo=None)


def _seconds(delta) -> float:
    """A heartbeat's age; one written after ``now`` was read (another transaction) counts as fresh, not as
    optuna 2.10.1's ``timedelta.seconds`` reads it (a day minus a few seconds)."""
    return max(0.0, delta.total_seconds())


class Heartbeat:
    """While the ``with`` block runs, record a heartbeat for each of ``trial_ids`` at entry and then every
    ``interval`` seconds, from a daemon thread (a dead process stops beating). Storage errors are logged (once per
    run of failures) and retried at the next beat."""

    def __init__(self, storage, trial_ids, interval: float, what: str = "trial") -> None:
        self.storage, self.trial_ids, self.interval, self.what = storage, list(trial_ids), float(interval), what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as err:  # noqa: BLE001  (a database hiccup must not end a job)
                if not self._failing:
                    log.warning(
                        "%s heartbeat: cannot record it (%s: %s); retrying every %gs",
                        self.what,
                        type(err).__name__,
                        str(err).strip().splitlines()[0] if str(err).strip() else "",
                        self.interval,
                    )
                self._failing = True
                return
        if self._failing:
            log.info("%s heartbeat: recorded again", self.what)
        self._failing = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread = threading.Thread(target=self._run, name="mmrep-optuna-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.contextmanager
def job_heartbeat() -> Iterator[None]:
    """In a job of an ``mmrep_optuna`` sweep: beat the job's trial while the job runs (elsewhere: nothing).

    The job finds its trial through ``MMREP_OPTUNA_TRIAL_ID`` and the storage in Hydra's sweeper config, so this
    works in the sweeper's process (Hydra's basic launcher) and on a cluster node (submitit): a trial stays live
    as long as the process that trains it."""
    trial_id = os.environ.get(TRIAL_ID_ENV)
    sweeper = None
    if trial_id is not None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            sweeper = HydraConfig.get().sweeper
    if sweeper is None or not sweeper.get("heartbeat_interval") or not isinstance(sweeper.get("storage"), str):
        yield
        return
    from hydra_plugins.mmrep_optuna_sweeper.storage import anchored_storage

    try:
        storage = open_storage(anchored_storage(sweeper.storage))
    except Exception as err:  # noqa: BLE001
        log.warning(
            "trial heartbeat: cannot open the study's storage (%s: %s); this job runs without one, so "
            "other workers may fail its trial after %ss",
            type(err).__name__,
            err,
            sweeper.get("grace_period"),
        )
        yield
        return
    try:
        with Heartbeat(storage, [int(trial_id)], sweeper.heartbeat_interval, what=f"trial id {trial_id}"):
            yield
    finally:
        storage.engine.dispose()


@dataclass
class Census:
    """The study's trials as one worker sees them at one moment (the database's clock)."""

    finished: int = 0  # COMPLETE or PRUNED
    running: int = 0  # RUNNING with a fresh heartbeat (or none recorded yet)
    waiting: int = 0  # WAITING (a queued retry): the next ask runs it
    stale: list[int] = field(default_factory=list)  # numbers of the trials this survey failed

    @property
    def live(self) -> int:
        return self.running + self.waiting


class Coordinator:
    """One worker's view of a study shared with other workers (see the module docstring of ``resumable``)."""

    def __init__(self, study, heartbeat_interval: int, grace_period: int, retry_failed: int) -> None:
        self.study = study
        self.backend = getattr(study._storage, "_backend", study._storage)  # past optuna's per-process cache
        self.interval, self.grace, self.retries = heartbeat_interval, grace_period, retry_failed
        self.worker = worker_id()
        self._adopted: set = set()

    # ---- reading -------------------------------------------------------------------------------------------------
    def rows(self) -> list:
        """(trial_id, number, state, heartbeat age in seconds or None) of every trial of the study, in one query."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.backend.scoped_session) as session:
            now = _db_now(session)
            found = (
                session.query(trial.trial_id, trial.number, trial.state, beat.heartbeat)
                .outerjoin(beat, beat.trial_id == trial.trial_id)
                .filter(trial.study_id == self.study._study_id)
                .all()
            )
        return [(tid, number, state, None if hb is None else _seconds(now - hb)) for tid, number, state, hb in found]

    def _live(self, state, age) -> bool:
        from optuna.trial import TrialState

        return state == TrialState.WAITING or (state == TrialState.RUNNING and (age is None or age <= self.grace))

    def census(self, rows=None) -> Census:
        from optuna.trial import TrialState

        rows = self.rows() if rows is None else rows
        out = Census()
        for _, _, state, age in rows:
            if state in (TrialState.COMPLETE, TrialState.PRUNED):
                out.finished += 1
            elif state == TrialState.WAITING:
                out.waiting += 1
            elif self._live(state, age):
                out.running += 1
        return out

    # ---- stale trials --------------------------------------------------------------------------------------------
    def survey(self) -> Census:
        """Fail the stale trials (RUNNING, heartbeat older than the grace period; retried when ``retry_failed``),
        give a first heartbeat to RUNNING trials that have none (an older sweep's, another tool's), then count."""
        from optuna.trial import TrialState

        rows = self.rows()
        failed, changed = [], False
        for trial_id, number, state, age in rows:
            if state != TrialState.RUNNING:
                continue
            if age is None:
                if trial_id not in self._adopted:
                    self._adopted.add(trial_id)
                    self.backend.record_heartbeat(trial_id)
                    log.info(
                        "trial %d is RUNNING without a heartbeat (left by an older sweep or another tool, or "
                        "just asked): given one; it is failed if nothing beats it within %ds",
                        number,
                        self.grace,
                    )
                    changed = True
            elif age > self.grace:
                age = self._fail_if_stale(trial_id)
                if age is not None:
                    failed.append(number)
                    changed = True
                    self._after_stale(trial_id, number, age)
        census = self.census() if changed else self.census(rows)
        census.stale = failed
        return census

    def _fail_if_stale(self, trial_id: int) -> float | None:
        """FAIL the trial if it is still RUNNING with a heartbeat older than the grace period, in one conditional
        UPDATE (whichever worker comes first wins; the trial's own late result then is not recorded). Returns the
        heartbeat's age, or None when the trial was not failed."""
        from datetime import datetime, timedelta

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.backend.scoped_session) as session:
            now = _db_now(session)
            last = session.query(beat.heartbeat).filter(beat.trial_id == trial_id).scalar()
            if last is None or _seconds(now - last) <= self.grace:
                return None
            cutoff = now - timedelta(seconds=self.grace)
            still_stale = session.query(beat.trial_id).filter(beat.trial_id == trial_id, beat.heartbeat < cutoff)
            done = (
                session.query(trial)
                .filter(
                    trial.trial_id == trial_id,
                    trial.state == TrialState.RUNNING,
                    trial.trial_id.in_(still_stale.scalar_subquery()),
                )
                .update(
                    {trial.state: TrialState.FAIL, trial.datetime_complete: datetime.now()}, synchronize_session=False
                )
            )
            if done != 1:
                return None
            age = _seconds(now - last)
            session.add(
                models.TrialSystemAttributeModel(
                    trial_id=trial_id,
                    key=STALE_ATTR,
                    value_json=json.dumps(
                        f"no heartbeat for {age:.0f}s (grace_period {self.grace}s); failed by {self.worker}"
                    ),
                )
            )
        return age

    def _after_stale(self, trial_id: int, number: int, age: float) -> None:
        import copy
        import warnings

        from optuna.exceptions import ExperimentalWarning
        from optuna.storages import RetryFailedTrialCallback

        trial = copy.deepcopy(self.backend.get_trial(trial_id))
        owner = trial.system_attrs.get(WORKER_ATTR, "unknown worker")
        retry = ""
        if self.retries > 0:
            # optuna's callback copies the system attrs into the queued trial: not the claims of this one
            trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("mmrep:")}
            before = self.census().waiting
            with warnings.catch_warnings():  # "experimental" in optuna 2.10.1, as add_trial and create_trial
                warnings.simplefilter("ignore", ExperimentalWarning)
                RetryFailedTrialCallback(max_retry=self.retries)(self.study, trial)
            first = trial.system_attrs.get("failed_trial", number)
            tries = sum(
                t.system_attrs.get("failed_trial") == first
                for t in self.backend.get_all_trials(self.study._study_id, deepcopy=False)
            )
            retry = (
                f"; queued again with its parameters (retry {tries} of {self.retries})"
                if self.census().waiting > before
                else f"; not retried ({self.retries} retries used)"
            )
        log.warning(
            "trial %d failed: no heartbeat for %.0fs (grace_period %ds; its worker %s stopped)%s",
            number,
            age,
            self.grace,
            owner,
            retry,
        )

    # ---- one worker's trials -------------------------------------------------------------------------------------
    def claim(self, trial) -> bool:
        """Mark ``trial`` (just asked) as this worker's and beat it. False when another worker claimed it first:
        two workers can pop the same queued (WAITING) trial on SQLite, which has no row locks."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.exc import IntegrityError

        try:
            with _create_scoped_session(self.backend.scoped_session) as session:
                session.add(
                    models.TrialSystemAttributeModel(
                        trial_id=trial._trial_id, key=WORKER_ATTR, value_json=json.dumps(self.worker)
                    )
                )
        except IntegrityError:
            return False
        self.backend.record_heartbeat(trial._trial_id)
        return True

    def surplus(self, trial, n_trials: int) -> int:
        """How many finished or live trials were asked before ``trial`` (smaller id): ``n_trials`` or more means
        another worker's check-then-ask got there first and this trial is surplus."""
        return sum(
            tid < trial._trial_id and (self._finished(state) or self._live(state, age))
            for tid, _, state, age in self.rows()
        )

    @staticmethod
    def _finished(state) -> bool:
        from optuna.trial import TrialState

        return state in (TrialState.COMPLETE, TrialState.PRUNED)

    def drop(self, trial, reason: str) -> None:
        """Record an asked trial that is not run as FAIL with ``reason`` (attr ``mmrep:dropped``): it counts nowhere."""
        from datetime import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        with _create_scoped_session(self.backend.scoped_session) as session:
            done = (
                session.query(models.TrialModel)
                .filter(models.TrialModel.trial_id == trial._trial_id, models.TrialModel.state == TrialState.RUNNING)
                .update(
                    {models.TrialModel.state: TrialState.FAIL, models.TrialModel.datetime_complete: datetime.now()},
                    synchronize_session=False,
                )
            )
            if done:
                session.add(
                    models.TrialSystemAttributeModel(
                        trial_id=trial._trial_id, key=DROPPED_ATTR, value_json=json.dumps(reason)
                    )
                )
        log.info("trial %d not run: %s; recorded FAIL (%s)", trial.number, reason, DROPPED_ATTR)

    def state(self, trial_id: int):
        return self.backend.get_trial(trial_id).state

    def grid_points_taken(self, grid_ids_of: dict) -> set:
        """The grid ids of trials that are finished (any state, as optuna's GridSampler counts) or live."""
        taken = set()
        for tid, _, state, age in self.rows():
            if tid in grid_ids_of and (state.is_finished() or self._live(state, age)):
                taken.add(grid_ids_of[tid])
        return taken
