"""``python -m <module> <args>`` as a child forked from a warm interpreter, for the suite's many CLI runs.

A run of ``python -m mmrep.train`` spends ~5 s of its time importing torch, Lightning (which imports torchmetrics,
transformers, scipy.signal, torch._dynamo), Hydra, scikit-learn and NLTK before it does anything; the suite starts
well over a hundred of them. Each pytest worker keeps one server process that has imported those libraries once
(and run no torch operation: its thread pools are never started, so a fork is safe) and forks a child per run. The
child is a real process — its own working folder, environment, stdout/stderr, exit status, process group and
children (DDP ranks, joblib workers) — that executes the module as ``python -m`` would (``runpy``, ``__main__``,
``sys.argv``) and leaves as an interpreter does (threads joined, ``atexit``); only the start-up is shared.

Runs fall back to a fresh ``subprocess.run`` when the environment they ask for changes what start-up reads
(``PYTHON*``, thread counts, Hugging Face paths) or when ``MMREP_TEST_FORK=0``. Tests of start-up itself (what
``--help`` imports) run their own interpreters (tests/test_cli.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# environment variables read at interpreter or library start-up: a run that sets them needs its own interpreter
STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "HF_", "TRANSFORMERS_", "CUDA_", "TORCH", "LD_")

SERVER = r"""
import json, os, runpy, sys
import torch, pytorch_lightning, torchmetrics, hydra, omegaconf, numpy, pandas, sklearn.linear_model  # the warm part
import sklearn.neural_network, sklearn.preprocessing, scipy.stats, yaml, rich, nltk.tokenize.destructive
import mmrep.pipeline.build, mmrep.pipeline.fit, mmrep.pipeline.measure, mmrep.metrics.identifiability  # no state
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid:
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    os.setpgid(0, 0)  # its own group: a timeout kills the run with its DDP ranks and workers
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    for fd, path in ((0, os.devnull), (1, job["stdout"]), (2, job["stderr"])):
        target = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-m", *job["args"]]
    sys.path[0] = job["cwd"]  # `python -m` puts the working folder first
    module = job["module"]
    break
else:
    sys.exit(0)
# the child: run the module, then leave as an interpreter does (threads joined, atexit, flushed) with its exit code
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


class ForkServer:
    """One warm interpreter per pytest worker (started on first use, stopped at exit)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()  # one run at a time; a second thread's run gets its own interpreter

    def _start(self, env: dict) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tempfile.gettempdir(),
            )
            if self._line(600) != "ready":
                raise RuntimeError("the test fork server did not start")
        return self.proc

    def _line(self, timeout: float | None) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def run(self, module: str, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        server = self._start({**os.environ, "PYTHONWARNINGS": env.get("PYTHONWARNINGS", "")})
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            job = {
                "module": module,
                "args": list(args),
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            server.stdin.write(json.dumps(job) + "\n")
            server.stdin.flush()
            pid = json.loads(self._line(60))["pid"]
            started = time.monotonic()
            line = self._line(timeout)
            if line is None:  # as subprocess.run: kill the run (its whole group), then raise
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._line(60)
                raise subprocess.TimeoutExpired([module, *args], time.monotonic() - started)
            code = json.loads(line)["returncode"]
            return subprocess.CompletedProcess(
                [sys.executable, "-m", module, *args],
                code,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


SERVER_INSTANCE = ForkServer()


def forkable(env: dict) -> bool:
    """Whether a run with ``env`` can share the warm interpreter (nothing start-up reads differs from this one's)."""
    if os.environ.get("MMREP_TEST_FORK", "1") == "0" or not hasattr(os, "fork"):
        return False
    keys = set(env) | set(os.environ)
    changed = [k for k in keys if env.get(k) != os.environ.get(k) and k != "PYTHONWARNINGS"]
    return not any(k.startswith(STARTUP_PREFIXES) for k in changed)
