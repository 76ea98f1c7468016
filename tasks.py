"""This repository's tasks: the packaged collection (every task a project using devserver gets)
plus this repository's own development tasks, test and bench, which need its tests/ and
benchmarks/ and the dev requirements, so they are not in the packaged collection."""

from __future__ import annotations

import subprocess
import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from devserver.cli.invoke_args import CliTask, project_root
from devserver.system.venv import shell_quote
from devserver.tasks import ns as packaged


@task(help={"args": "extra pytest arguments, e.g. '-k stop -x'"})
def test(c: Context, args: str = "") -> None:
    """Run the test suite (the same command CI runs).

    A shell line (``args`` is the person's own, quoting and all), so the interpreter's path is
    quoted for that shell: cmd.exe on Windows, where it is often under ``Program Files``.
    """
    c.run(f"{shell_quote(sys.executable)} -m pytest {args}", pty=False)


@task(
    help={
        "quick": "every row with fewer rounds (a few minutes on 2 cores)",
        "json": 'print {"machine": {...}, "results": [rows]} and nothing else on stdout',
        "markdown": "print the README's performance table",
        "only": "rows to run, comma-separated names or prefixes (e.g. tail, start)",
        "from_json": "render a saved --json result instead of measuring",
    }
)
def bench(
    c: Context,
    quick: bool = False,
    json: bool = False,
    markdown: bool = False,
    only: str = "",
    from_json: str = "",
) -> None:
    """Benchmarks: each row ours vs a baseline measured in the same run, against its goal."""
    try:  # imported here: a plain --list need not load the benchmarks
        from benchmarks.run import bench_python
    except ImportError:  # the repository's benchmarks/ is incomplete
        raise Exit("bench runs this repository's benchmarks/: not found", 1) from None

    flags = [f"--{n}" for n, on in (("quick", quick), ("json", json), ("markdown", markdown)) if on]
    flags += [
        *(["--only", only] if only else []),
        *(["--from-json", from_json] if from_json else []),
    ]
    code = subprocess.call([bench_python(), "-m", "benchmarks", *flags], cwd=project_root(c))
    if code:
        raise Exit(code=code)


# A collection of its own (the packaged one stays as every other project sees it).
ns = Collection("tasks")
ns.__doc__ = packaged.__doc__
for _task in [*packaged.tasks.values(), test, bench]:
    _task.auto_shortflags = False  # as for the packaged tasks: long options only
    ns.add_task(_task)
CliTask.task_names = tuple(ns.task_names)
