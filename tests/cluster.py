"""Fixtures for the tests on real services (``pytest -m cluster``): a single-node SLURM cluster and PostgreSQL, started
by ``scripts/services.sh up`` (which installs slurm-wlm, munge and postgresql with apt-get when missing).

    from cluster import slurm, postgres_url, fresh_postgres_db   # in a test module

* ``slurm`` (session): the running cluster, as a :class:`Slurm` (job state, requeue, release).
* ``postgres_url`` (session): ``postgresql://postgres@127.0.0.1:55432/optuna``.
* ``fresh_postgres_db`` (function): the URL of a new empty database, dropped after the test, so studies of different
  tests never meet.

Services already running (``make services``) are used and left running. Otherwise the first pytest process that needs
them starts them, and they are stopped when the last process using them ends (pytest-xdist workers share them: a
file lock serialises start and stop, and a per-process file in ``<services dir>/users/`` counts the users). When the
packages cannot be installed (not root, no apt-get, no network) the tests skip with the script's one-line reason.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmrep.core.threads import process_alive

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"
DIR = Path(os.environ.get("MMREP_SERVICES_DIR", "/tmp/mmrep-services"))
PORT = int(os.environ.get("MMREP_POSTGRES_PORT", "55432"))
URL = f"postgresql://postgres@127.0.0.1:{PORT}/optuna"
USERS = DIR / "users"  # one file per pytest process using the services (removed by `down` with DIR)
STARTED_BY_TESTS = DIR / "started-by-tests"  # present: the last user stops them

_state: dict = {"users": 0, "skip": None}  # per process


def services(command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``scripts/services.sh <command>``."""
    return subprocess.run(
        ["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@contextmanager
def _users_lock():
    """Between pytest processes: who starts, who stops (the script's own lock guards only one call)."""
    DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{DIR}.users.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _acquire(config) -> None:
    """This process uses the services: start them if none run; stop them at exit if the tests started them."""
    if _state["skip"]:
        pytest.skip(_state["skip"])
    if _state["users"]:
        _state["users"] += 1
        return
    with _users_lock():
        if services("status", timeout=60).returncode != 0:
            started = time.monotonic()
            proc = services("up")
            if proc.returncode == 3:  # packages missing and not installable: one line says why
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                _state["skip"] = lines[-1] if lines else "services: slurm-wlm/munge/postgresql unavailable"
                pytest.skip(_state["skip"])
            if proc.returncode != 0:
                pytest.fail(
                    f"scripts/services.sh up failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}",
                    pytrace=False,
                )
            STARTED_BY_TESTS.write_text(f"{time.monotonic() - started:.1f} s\n")
        USERS.mkdir(parents=True, exist_ok=True)
        (USERS / str(os.getpid())).touch()
    _state["users"] = 1
    config.add_cleanup(_release)  # once per process, after its last test (session fixtures are gone by then)


def _release() -> None:
    _state["users"] = 0
    with _users_lock():
        (USERS / str(os.getpid())).unlink(missing_ok=True)
        others = (
            [p for p in USERS.glob("*") if p.name.isdigit() and process_alive(int(p.name))] if USERS.is_dir() else []
        )
        if not others and STARTED_BY_TESTS.exists():
            proc = services("down", timeout=120)
            if proc.returncode != 0:
                print(f"scripts/services.sh down failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


class Slurm:
    """The local cluster, for tests that submit jobs (through hydra-submitit-launcher) and act on them."""

    partition = "debug"

    def __init__(self) -> None:
        self.node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
        self.cpus = int(re.search(r"CPUs=(\d+)", Path("/etc/slurm/slurm.conf").read_text()).group(1))

    @staticmethod
    def scontrol(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)

    def state(self, job: str) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED, ...); "" once SLURM has forgotten it."""
        out = self.scontrol("show", "job", "-o", str(job)).stdout
        found = re.search(r"\bJobState=(\S+)", out)
        return found.group(1) if found else ""

    def wait_state(self, job: str, states: tuple[str, ...], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(job)) not in states:
            assert time.monotonic() < deadline, f"job {job}: {state or 'gone'} after {timeout} s, not {states}"
            time.sleep(0.2)
        return state

    def requeue(self, job: str) -> None:
        """``scontrol requeue``: SIGTERM to the job's processes, then back in the queue (same id, same folder)."""
        done = self.scontrol("requeue", str(job))
        assert done.returncode == 0, done.stderr

    def release(self, job: str, timeout: float = 60) -> None:
        """A requeued job waits for its begin time (~2 min): start it now, once it is pending again."""
        self.wait_state(job, ("PENDING",), timeout)
        done = self.scontrol("update", f"jobid={job}", "starttime=now")
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def slurm(request) -> Slurm:
    """A running single-node SLURM cluster (srun/sbatch/squeue work in subprocesses)."""
    _acquire(request.config)
    return Slurm()


@pytest.fixture(scope="session")
def postgres_url(request) -> str:
    """The URL of the running PostgreSQL's ``optuna`` database."""
    _acquire(request.config)
    return URL


def _psql(sql: str) -> None:
    done = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(PORT),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"psql {sql!r}: {done.stderr}"


@pytest.fixture
def fresh_postgres_db(request) -> str:
    """The URL of a new empty database on the running PostgreSQL; dropped after the test."""
    _acquire(request.config)
    name = f"test_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE DATABASE {name}")
    yield URL.rsplit("/", 1)[0] + f"/{name}"
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
