"""The documentation: every guide's code runs, every link and command resolves, the site builds.

* Each guide under ``docs/guides/`` is a complete small project: its code blocks titled ``my_project/<path>`` are
  written to a temporary folder and the guide's first ``mmrep train --config-dir ./conf …`` command runs there for a
  few steps (as ``python -m mmrep.train``), which must write ``results.csv``.
* Relative links of ``README.md`` and ``docs/**/*.md`` point at existing files (and headings), every ``mmrep …`` and
  ``python -m mmrep…`` command names an existing command, module and config option, and the docs cite the papers or
  the original repositories, not files outside this repository.
* ``mkdocs build --strict`` passes (skipped where mkdocs, mkdocs-material or mkdocstrings are not installed).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = DOCS / "guides"
PAGES = sorted(DOCS.rglob("*.md"))
PROJECT = "my_project/"

# Each guide's run, made small: a few steps, no loggers or callbacks, small data where the dataset allows.
COMMON = ["trainer.max_steps=3", "logger=none", "callbacks=none", "print_config=false"]
TINY_TOY = ["dataset.num_samples=200"]
TINY_NUMERIC = [
    "dataset.batch_size=64",
    "dataset.n_val=128",
    "dataset.n_cond_samples=500",
    "objective.scheduler.warmup_steps=1",
    "metric.identifiability.probes=[linear]",
    "metric.identifiability.n_fit=256",
    "metric.identifiability.n_eval=256",
    "metric.identifiability.mlp_max_iter=30",
    "metric.identifiability.n_jobs=1",
]
SMALL_K = ["metric.alignment.k=10"]  # the small data's test splits (30, 60 samples) serve no k = 100 neighbours
GUIDE_RUNS = {
    "add-dataset": ["dataset.num_samples=400", *SMALL_K],
    "add-encoder": [*TINY_TOY, *SMALL_K],
    "add-objective": [*TINY_TOY, *SMALL_K],
    "add-metric": TINY_TOY,
    "add-bias": TINY_NUMERIC,
    "own-project": [*TINY_TOY, *SMALL_K],
}


def guide_files(text: str) -> dict[str, str]:
    """``{path in the project: content}`` of the code blocks titled ``my_project/<path>``."""
    blocks = re.findall(r'^```\w*[^\n]*?title="([^"]+)"[^\n]*\n(.*?)^```', text, flags=re.M | re.S)
    return {title[len(PROJECT) :]: body for title, body in blocks if title.startswith(PROJECT)}


def code_texts(text: str) -> list[str]:
    """The fenced code blocks and inline code spans of a markdown page."""
    fences = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    spans = re.findall(r"``(.+?)``|`([^`\n]+)`", prose)
    return fences + [a or b for a, b in spans]


def command_lines(text: str, prefix: str) -> list[str]:
    """Lines of code (backslash continuations joined) that start with ``prefix``, without trailing comments."""
    found = []
    for code in code_texts(text):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(prefix):
                found.append(line)
    return found


def argv(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def guide_command(text: str) -> list[str]:
    """The guide's first ``mmrep train --config-dir …`` command, as ``python -m mmrep.train`` arguments."""
    lines = command_lines(text, "mmrep train --config-dir")
    assert lines, "the guide shows no `mmrep train --config-dir ./conf …` command to run"
    return argv(lines[0])[2:]


def _paired_objective_available() -> bool:
    base = ROOT / "src" / "mmrep" / "objectives" / "base.py"
    return base.is_file() and "class PairedObjective" in base.read_text()


def _run_guide(name: str, tmp: Path) -> subprocess.CompletedProcess:
    text = (GUIDES / f"{name}.md").read_text()
    project = tmp / "my_project"
    files = guide_files(text)
    for rel, body in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    args = [*guide_command(text), *COMMON, *GUIDE_RUNS[name], f"hydra.run.dir={tmp / 'run'}"]
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return run_cli(args, cwd=project, env_extra={**threads, "MMREP_ROOT": None}, timeout=600)


def _runnable(name: str) -> bool:
    return name != "add-objective" or _paired_objective_available()


@pytest.fixture(scope="module")
def guide_runs(request, tmp_path_factory):
    """The selected guides' runs, two at a time (one thread each) when this process runs them all; under
    pytest-xdist each test runs its own guide, as the workers share the cores already."""
    pool = None if os.environ.get("PYTEST_XDIST_WORKER") else ThreadPoolExecutor(max_workers=2)
    runs: dict = {}

    def start(name: str) -> None:
        runs[name] = pool.submit(_run_guide, name, tmp_path_factory.mktemp(name))

    if pool is not None:
        for item in request.session.items:
            if getattr(item, "originalname", "") == "test_guide_code_runs" and hasattr(item, "callspec"):
                name = item.callspec.params["guide"]
                if _runnable(name) and name not in runs:
                    start(name)

    def result(name: str) -> subprocess.CompletedProcess:
        if pool is None:
            return _run_guide(name, tmp_path_factory.mktemp(name))
        if name not in runs:
            start(name)
        return runs[name].result()

    yield result
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def test_guides_exist():
    assert sorted(p.stem for p in GUIDES.glob("*.md")) == sorted(GUIDE_RUNS)


@pytest.mark.parametrize("guide", sorted(GUIDE_RUNS))
def test_guide_code_runs(guide, guide_runs):
    import pandas as pd

    if not _runnable(guide):
        pytest.skip("mmrep.objectives.base has no PairedObjective yet: the objective guide builds on it")
    text = (GUIDES / f"{guide}.md").read_text()
    files = guide_files(text)
    assert any(f.endswith(".py") for f in files) and any(f.startswith("conf/") for f in files), sorted(files)
    res = guide_runs(guide)
    assert res.returncode == 0, f"{guide}: {' '.join(res.args)}\n{res.stderr[-4000:]}"
    run = Path(next(a for a in res.args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
    df = pd.read_csv(run / "results.csv")
    assert len(df) > 0 and {"metric", "value"} <= set(df.columns)
    if guide == "add-metric":
        assert df.metric.astype(str).str.startswith("retrieval_top").any(), df.metric.unique()
    if guide == "add-encoder":
        layers = set(df.get("layer_a", pd.Series(dtype=str)).dropna()) | set(
            df.get("layer_b", pd.Series(dtype=str)).dropna()
        )
        assert any(str(layer).startswith("block") for layer in layers), layers
    if guide == "add-objective":
        assert ((df.metric == "loss") & (df.target == "align_uniform")).any(), df[df.metric == "loss"]
    if guide in ("add-dataset", "own-project"):
        assert {"accuracy", "unbiased_cka"} <= set(df.metric), df.metric.unique()
    if guide == "add-bias":
        assert "s_inv" in set(df.target.dropna()), df.target.unique()


# ---- links ------------------------------------------------------------------------------------------------------
def slugify(heading: str) -> str:
    """Python-Markdown's default heading id (toc extension), or the explicit ``{ #id }``."""
    explicit = re.search(r"\{\s*#([\w-]+)\s*\}\s*$", heading)
    if explicit:
        return explicit.group(1)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slugify(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_readme_is_short_and_keeps_the_ci_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make install" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_cite_papers_not_outside_files(page):
    text = page.read_text()
    for outside in ("spec §", "shared/spec", "../shared", "DESIGN.md", "rus-alignment.md", "numeric-misalignment.md"):
        assert outside not in text, f"{page.relative_to(ROOT)} refers to {outside!r}, a file outside this repository"


# ---- commands ---------------------------------------------------------------------------------------------------
SUBCOMMANDS = ("train", "align", "analyze", "data")
GROUPS = (
    "dataset",
    "encoder",
    "objective",
    "optimizer",
    "scheduler",
    "bias",
    "metric",
    "experiment",
    "trainer",
    "logger",
    "callbacks",
    "hparams_search",
    "paper_scale",
    "debug",
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _option_exists(group: str, option: str, conf_dirs: list[Path]) -> bool:
    return any((d / group / f"{option}.yaml").is_file() for d in conf_dirs)


def _missing_options(args: list[str], conf_dirs: list[Path]) -> list[str]:
    """``group=option`` (or ``group@slot=option``) choices of a ``mmrep train`` line that no config folder holds;
    comma-separated sweep values are checked one by one."""
    missing = []
    for arg in args:
        match = re.fullmatch(r"\+?([a-z_]+)(@[\w.]+)?=([\w,/]+)", arg)
        if not match or match.group(1) not in GROUPS:
            continue
        for option in match.group(3).split(","):
            if option != "null" and not _option_exists(match.group(1), option, conf_dirs):
                missing.append(f"{match.group(1)}={option}")
    return missing


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_resolve(page, tmp_path):
    """``mmrep <command> …`` names a command (and, for analyze/data, an existing study or preparer); ``python -m
    mmrep…`` an existing module; the options a ``mmrep train`` line picks exist in ``conf/`` (or, with
    ``--config-dir`` in a guide, among the guide's own config files)."""
    text = page.read_text()
    conf_dirs = [ROOT / "conf", tmp_path / "conf"]
    for guide in GUIDES.glob("*.md"):  # the guides' own options (own-project.md uses the dataset guide's)
        for rel, body in guide_files(guide.read_text()).items():
            if rel.startswith("conf/"):
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_text(body)
    tables = {}
    if _module_exists("mmrep.cli"):
        import mmrep.cli as cli

        tables = {"analyze": cli.entries("studies"), "data": cli.entries("data")}
    problems = []
    for code in code_texts(text):
        for line in code.replace("\\\n", " ").splitlines():
            for module in re.findall(r"python -m (mmrep[\w.]*\w)", line):
                if not _module_exists(module):
                    problems.append(f"python -m {module}: no such module")
            match = re.match(r"mmrep ([\w-]+).*", line.strip())
            if match:
                sub, command = match.group(1), match.group(0)
                if sub.startswith("-"):
                    continue  # mmrep --help, --version
                if sub not in SUBCOMMANDS:
                    problems.append(f"{command}: unknown command {sub!r}")
                    continue
                try:
                    args = argv(command)[2:]
                except ValueError:  # an unbalanced quote in prose-like code
                    args = command.split()[2:]
                if sub in ("analyze", "data") and args and re.fullmatch(r"\w+", args[0]):
                    package = "analysis" if sub == "analyze" else "data"
                    known = args[0] in tables[sub] if tables.get(sub) else _module_exists(f"mmrep.{package}.{args[0]}")
                    if not known:
                        problems.append(f"{command}: no {sub} entry {args[0]!r}")
                if sub == "train":
                    problems += [f"{command}: no option {o}" for o in _missing_options(args, conf_dirs)]
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


# ---- the site ---------------------------------------------------------------------------------------------------
def test_mkdocs_build_strict(tmp_path):
    missing = [
        m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python") if not _module_exists(m)
    ]
    if missing:
        pytest.skip(f"the docs site needs mkdocs-material and mkdocstrings[python]; not installed: {missing}")
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "guides" / "add-dataset" / "index.html").is_file()
