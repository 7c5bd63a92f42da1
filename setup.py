"""Packaging hook (the metadata is in pyproject.toml): the top-level ``conf/`` ships inside the package as
``mmrep/conf``, so an installed mmrep (``pip install .``, a wheel, ``pip install git+…``) finds its configs
(:mod:`mmrep.core.configs`). An editable install reads the checkout's ``conf/`` directly."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            source = Path(__file__).resolve().parent / "conf"
            shutil.copytree(source, Path(self.build_lib) / "mmrep" / "conf", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConfigs})
