"""What a run prints before it starts: less third-party chatter, and the composed config as a tree.

* :func:`quiet_third_party` — silence two messages that say nothing about a run: Lightning's "💡 Tip: For seamless
  cloud logging ... litlogger" (every ``Trainer``) and alembic's INFO lines ("Context impl SQLiteImpl.", "Will
  assume non-transactional DDL.", "setup plugin ...") when Optuna opens an SQLite study.
* :func:`print_config_tree` — the resolved run config as a rich tree on stdout (groups first: dataset, encoders,
  objective, bias, metric, trainer, callbacks, logger, paths, then the rest), also saved as
  ``<output_dir>/config_tree.log``; ``print_config: false`` turns it off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

# The config's groups in the order a reader wants them: what is learned from what, how, measured how; then the run.
CONFIG_TREE_FIELDS = ("dataset", "encoders", "objective", "bias", "metric", "trainer", "callbacks", "logger", "paths")

# Lightning's rank-zero messages go through one module-level logger; which module's name it carries depends on the
# import order (pytorch_lightning, lightning_fabric, lightning_utilities; `lightning.*` for the unified package).
_RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's advertisement for LitLogger, printed at every ``Trainer(...)`` whatever the run logs to
    (pytorch_lightning/trainer/connectors/logger_connector/logger_connector.py, ``configure_logger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not (message.startswith("💡 Tip:") and "litlogger" in message.lower())


_TIP_FILTER = _DropLitLoggerTip()


def quiet_third_party() -> None:
    """Silence third-party messages that say nothing about a run. Idempotent; call it once, early.

    * Lightning's "💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger ..."
      (``rank_zero_info`` in ``LoggerConnector.configure_logger``, at every ``Trainer`` creation): a filter on the
      rank-zero loggers drops that one message; their other messages ("`Trainer.fit` stopped: ...", "GPU
      available: ...") still print. Lightning has no switch of its own for it.
    * alembic's INFO lines ("Context impl SQLiteImpl.", "Will assume non-transactional DDL." from
      ``alembic.runtime.migration``, and alembic ≥ 1.16's "setup plugin ..." at import), which reach the console
      through Hydra's root handler when Optuna opens or creates an RDB study (``optuna.storages.RDBStorage``, in
      the sweeper process and in each trial's pruning callback): the ``alembic`` logger goes to WARNING. Optuna
      sets the same level itself, but only once it opens a storage — after the import-time lines.

    Logger levels and filters survive Hydra's logging setup (its dictConfig keeps existing loggers), so this also
    covers the sweeper process when it runs before Hydra starts, e.g. at ``mmrep.train``'s import.
    """
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _TIP_FILTER not in logger.filters:
            logger.addFilter(_TIP_FILTER)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _group_text(group: DictConfig | ListConfig, resolve: bool) -> str:
    """``group`` as YAML, resolved where it can be (a group whose interpolation fails is shown as written)."""
    if resolve:
        try:
            return OmegaConf.to_yaml(group, resolve=True).rstrip()
        except Exception as err:  # e.g. ${hydra:...} outside a Hydra run
            log.debug("config tree: cannot resolve a group (%s); printing it unresolved", err)
    return OmegaConf.to_yaml(group, resolve=False).rstrip()


def _value_text(cfg: DictConfig, field: str, resolve: bool) -> str:
    """``field: value`` as a YAML line, resolved where it can be."""
    node = cfg._get_node(field)
    value = node._value() if node is not None else None  # as written (an interpolation string, ???)
    if resolve:
        try:
            value = cfg[field]
        except Exception:  # unresolvable or missing: as written
            pass
    return OmegaConf.to_yaml({field: value}).rstrip()


def config_tree(cfg: DictConfig, fields: Sequence[str] = CONFIG_TREE_FIELDS, resolve: bool = True):
    """The :class:`rich.tree.Tree` of ``cfg``: one branch per top-level key, ``fields`` first (those present),
    then the rest in the config's order; groups as YAML under their name, plain values as ``key: value``."""
    from rich.syntax import Syntax
    from rich.text import Text
    from rich.tree import Tree

    style = "dim"
    tree = Tree("CONFIG", style=style, guide_style=style)
    order = [f for f in fields if f in cfg] + [f for f in cfg if f not in fields]
    for field in order:
        node = cfg._get_node(field)
        if isinstance(node, (DictConfig, ListConfig)) and not node._is_none() and not node._is_missing():
            branch = tree.add(Text(str(field), style="bold"), style=style, guide_style=style)
            branch.add(Syntax(_group_text(node, resolve), "yaml", background_color="default"))
        else:
            tree.add(Syntax(_value_text(cfg, str(field), resolve), "yaml", background_color="default"))
    return tree


def process_rank() -> int:
    """This process's global rank: Lightning's when it is loaded, else read from the variables launchers set (the ones
    Lightning reads, in its order), so printing the config needs no torch."""
    if "lightning_fabric" in sys.modules:
        from lightning_fabric.utilities.rank_zero import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0) or 0)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def print_config_tree(
    cfg: DictConfig,
    fields: Sequence[str] = CONFIG_TREE_FIELDS,
    resolve: bool = True,
    save: bool = True,
    output_dir: str | Path | None = None,
) -> Path | None:
    """Print the composed config as a tree on stdout, as lightning-hydra-template does, and save its text.

    Args:
        cfg: the run config (as ``mmrep.train.main`` receives it).
        fields: top-level keys printed first, in this order; the others follow in the config's order.
        resolve: show interpolations resolved (a field that cannot be resolved is shown as written).
        save: also write the tree as plain text to ``<output_dir>/config_tree.log``.
        output_dir: where to save it; default ``cfg.paths.output_dir``.

    Returns the saved file (None when not saved). Does nothing when ``cfg.print_config`` is false, and on
    processes other than rank zero (DDP ranks).
    """
    if not cfg.get("print_config", True):
        return None
    if process_rank() != 0:
        return None
    from rich.console import Console

    tree = config_tree(cfg, fields, resolve)
    Console().print(tree)  # stdout: stderr stays for warnings and the one-line errors
    if not save:
        return None
    folder = Path(output_dir) if output_dir is not None else Path(OmegaConf.select(cfg, "paths.output_dir"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config_tree.log"
    with open(path, "w", encoding="utf-8") as file:
        Console(file=file, width=120, color_system=None, force_terminal=False, soft_wrap=True).print(tree)
    return path


def config_groups(conf_dirs: Sequence[Path]) -> dict[str, list[str]]:
    """``{group: sorted options}`` of the configs in ``conf_dirs`` (``hydra/`` left out), e.g. ``encoder/toy``."""
    groups: dict[str, set[str]] = {}
    for conf_dir in conf_dirs:
        for path in Path(conf_dir).rglob("*.yaml"):
            parts = path.relative_to(conf_dir).parts
            if len(parts) > 1 and parts[0] != "hydra":
                groups.setdefault("/".join(parts[:-1]), set()).add(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def help_text(conf_dir: str | Path, argv: Sequence[str] = ()) -> str:
    """``mmrep train --help``: the template of ``conf/hydra/help/mmrep.yaml`` with the config groups of mmrep's
    configs and of any ``--config-dir``/``-cd`` in ``argv``. Hydra's own ``--help`` composes the config once per
    group (1.5 s here); listing the folders takes milliseconds."""
    import string

    dirs = [Path(conf_dir)]
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups(dirs).items())
    template = OmegaConf.create({"hydra": {"help": OmegaConf.load(Path(conf_dir) / "hydra" / "help" / "mmrep.yaml")}})
    return string.Template(template.hydra.help.template).safe_substitute(APP_CONFIG_GROUPS=groups)
