"""This repository's own development tasks: test and bench."""

from __future__ import annotations

import subprocess
import sys

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from devserver.cli.invoke_args import project_root
from devserver.system.venv import shell_quote


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
    try:  # imported here: benchmarks/ exists in this repository only
        from benchmarks.run import bench_python
    except ImportError:  # a project using the packaged collection has no benchmarks/ of ours
        raise Exit("bench runs devserver's own benchmarks/: not found in this project", 1) from None

    flags = [f"--{n}" for n, on in (("quick", quick), ("json", json), ("markdown", markdown)) if on]
    flags += [
        *(["--only", only] if only else []),
        *(["--from-json", from_json] if from_json else []),
    ]
    code = subprocess.call([bench_python(), "-m", "benchmarks", *flags], cwd=project_root(c))
    if code:
        raise Exit(code=code)
