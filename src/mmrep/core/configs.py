"""Where mmrep's own configs are: ``mmrep/conf`` inside an installed wheel, the checkout's top-level ``conf/`` in an
editable install (the wheel's build copies it into the package)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # .../mmrep


def shipped_conf_dir() -> Path:
    """The folder of ``train.yaml`` and the config groups that ship with mmrep."""
    packaged = _PACKAGE / "conf"
    return packaged if (packaged / "train.yaml").is_file() else _PACKAGE.parents[1] / "conf"


CONF_DIR = str(shipped_conf_dir())  # a str, as Hydra's config_path and initialize_config_dir take it
