"""The ``devserver`` console script: Invoke's Program over the packaged collection.

Why a Program and not a tasks.py: a project that only ``pip install``-ed the package gets the
same tasks (``devserver start``, ``devserver up``...) without writing any file. The project
is the current folder: its invoke.yaml is read from there (as ``invoke`` reads the one beside
tasks.py) and bin/, data/, logs/ are relative to it. Config keys and ``INVOKE_*`` variables
are the same as for ``invoke``, so both commands see one configuration.
"""

from __future__ import annotations

import os

from invoke.config import Config
from invoke.program import Program

from devserver import __version__
from devserver.cli.tasks import ns


class ProjectConfig(Config):
    """Invoke's Config whose project is the current folder (./invoke.yaml, bin/, data/...)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.set_project_location(os.getcwd())


class DevServerProgram(Program):
    """Loads ./invoke.yaml before the tasks run (Invoke does that only for a loaded tasks.py)."""

    def update_config(self, merge: bool = True) -> None:
        self.config.load_project(merge=False)
        super().update_config(merge=merge)


def program() -> Program:
    return DevServerProgram(
        name="devserver",
        binary="devserver",
        version=__version__,
        namespace=ns,
        config_class=ProjectConfig,
    )


def main() -> None:
    """Console entry point (``devserver = devserver.cli.program:main``)."""
    program().run()


if __name__ == "__main__":
    main()
