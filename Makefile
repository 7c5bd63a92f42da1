# mmrep — set-up and common tasks. `make train` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint docs train test test-fast test-cluster services services-down bench bench-alignment bench-rus clean

# torch first, as its CPU wheel: pyproject asks for a range (a user's CUDA build satisfies it), which pip would
# otherwise fill with a multi-GB CUDA build. `make install TORCH=` keeps the torch the environment has.
TORCH  ?= torch==2.13.0
# Test workers (pytest-xdist): one per core, at most 4; each gets its share of the cores' threads (tests/conftest.py).
# `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= auto
XDIST  := -n $(TEST_WORKERS) --maxprocesses=4 --dist worksteal

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip  # the venv's bundled pip resolves this tree's extras slowly
	$(if $(TORCH),$(BIN)/python -m pip install --quiet "$(TORCH)")
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install mmrep with its test tools

lint: $(STAMP)  ## ruff (lint + format check) and mypy, as CI runs them before the tests
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m mypy

docs: $(STAMP)  ## build the docs site into site/ (mkdocs build --strict: a broken link or API page fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

train: $(STAMP)  ## train the default experiment (numeric misalignment, < 5 min on 2 CPU cores)
	$(BIN)/python -m mmrep.train $(ARGS)

test: $(STAMP)  ## the whole test suite, slow end-to-end reproductions included
	@$(BIN)/python -m pytest $(XDIST) --timeout=1800 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: $(STAMP)  ## everything but the slow reproductions and the cluster tests
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not cluster" --timeout=900 $(PYTEST_ARGS)

test-cluster: $(STAMP)  ## the tests on a real local SLURM cluster + PostgreSQL (pytest -m cluster; starts and stops them, as root)
	$(BIN)/python -m pytest -m cluster --timeout=900 $(PYTEST_ARGS)

services:  ## start a single-node SLURM cluster and PostgreSQL on 127.0.0.1:55432 (as root; apt-get installs them if missing)
	@bash scripts/services.sh up

services-down:  ## stop what `make services` started and remove its state (/tmp/mmrep-services)
	@bash scripts/services.sh down

bench: $(STAMP)  ## loss benchmark: new vs original formulation at the paper's batch size
	$(BIN)/python benchmarks/bench_infonce.py

bench-alignment: $(STAMP)  ## alignment suite vs a dense original-style implementation (N=10k, ~10 min on 2 cores)
	$(BIN)/python benchmarks/bench_alignment.py
	$(BIN)/python benchmarks/bench_alignment.py --memory-n 100000

bench-rus: $(STAMP)  ## RUS generator: all 9 x 11 data sets, vectorised vs per-sample (~20 s)
	$(BIN)/python benchmarks/bench_rus_generator.py

clean:
	rm -rf $(VENV) outputs/train outputs/numeric_* outputs/rus_* .pytest_cache
