"""The ``devserver`` console script: Invoke's Program over the packaged collection.

Why a Program and not a tasks.py: a project that only ``pip install``-ed the package gets the
same tasks (``devserver start``, ``devserver up``...) without writing any file. The project
is found as Invoke finds it: the nearest folder, from the current one upward, with a tasks.py
or an invoke.yaml (so ``devserver status`` in ``app/src`` sees the server ``invoke status``
sees); the current folder only when there is none, and then it says so. Its invoke.yaml is
read from there and bin/, data/, logs/ are relative to it. Config keys and ``INVOKE_*`` variables
are the same as for ``invoke``, so both commands see one configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from invoke.config import Config
from invoke.program import Program

from devserver import __version__
from devserver.cli import console
from devserver.cli.tasks import ns

MARKERS = ("tasks.py", "invoke.yaml")


def find_project(start: Path) -> Path | None:
    """The nearest folder from ``start`` upward holding tasks.py or invoke.yaml, as Invoke
    looks for tasks.py; None when no folder up to the root has one."""
    for folder in (start, *start.parents):
        if any((folder / name).is_file() for name in MARKERS):
            return folder
    return None


class ProjectConfig(Config):
    """Invoke's Config whose project is the nearest project folder (or the current one)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        found = find_project(Path(os.getcwd()))
        self.set_project_location(str(found or os.getcwd()))
        self._devserver_no_project = found is None


class DevServerProgram(Program):
    """Loads the project's invoke.yaml before the tasks run (Invoke does that only for a
    loaded tasks.py)."""

    def update_config(self, merge: bool = True) -> None:
        self.config.load_project(merge=False)
        super().update_config(merge=merge)

    def execute(self) -> None:
        """Say where bin/, data/, logs/ go when no project folder was found (only when a task
        runs: ``--help`` and ``--list`` make nothing)."""
        if self.tasks and getattr(self.config, "_devserver_no_project", False):
            console.info(
                f"no tasks.py or invoke.yaml here or above: using {os.getcwd()} as the project "
                "(bin/, data/, logs/ go there)"
            )
        super().execute()


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
