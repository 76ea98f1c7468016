"""Invoke tasks: parse options, call devserver/, turn its errors into one line and exit 1."""

# The collection is ``ns``: a project's own tasks.py says ``from devserver.tasks import ns`` and
# gets every task; the ``devserver`` console script (devserver/cli/program.py) runs the same
# collection. Paths are relative to that project (see invoke_args.project_root), never to this
# installed package. Kept thin on purpose: the logic lives in the devserver library (which
# never imports invoke), so it can be tested without Invoke.
#
# Imports: Invoke builds its parser from the whole collection, so every command, even
# `invoke --list`, imports every task module. They import at module level only what any
# command loads anyway, and small stdlib-only modules (devserver.tail); a task imports the
# layers it calls (server, fetch, verify, app, and behind them psutil, redis-py, requests)
# when it runs, so `invoke --list` and `invoke stop` stay fast.

from __future__ import annotations

import signal
import sys
from typing import NoReturn


def _interrupted_while_loading() -> NoReturn:
    """Ctrl+C while this package is being loaded: one line and exit 130, not a traceback (a
    Ctrl+C during ``import invoke`` itself happens before any code of ours runs)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


try:
    import atexit
    import gc

    from invoke.collection import Collection
    from invoke.tasks import Task

    from devserver.cli import cliguard, console
    from devserver.cli.invoke_args import CliTask
    from devserver.cli.tasks import app, data, fetch, server, verify
except KeyboardInterrupt:
    _interrupted_while_loading()

# Invoke merges invoke.yaml and the environment after importing the tasks: a bad shape
# there would be Invoke's traceback; this makes it one line (see devserver/cli/cliguard.py).
cliguard.install(console.error)

# The modules whose tasks make up the collection, one per group.
GROUPS = (server, fetch, verify, app, data)

# Every task of those modules, found the way Invoke finds the tasks of a tasks.py, so a task
# added to one of them is in the collection without a list to update.
ns = Collection("tasks")
ns.__doc__ = __doc__  # the collection's help, as Invoke gives a tasks.py's docstring to it
for _module in GROUPS:
    for _task in [t for t in vars(_module).values() if isinstance(t, Task)]:
        # No automatic short flags: Invoke's first-free-letter ones surprise (`fetch -o` is
        # --force, `start -o` --foreground, `-f` the flavor here and follow for tail). Only
        # `tail -f`/`-n` have one (TailTask), the usual ones.
        _task.auto_shortflags = False
        ns.add_task(_task)
CliTask.task_names = tuple(ns.task_names)

# Every command is a short-lived process whose interpreter, at exit, garbage-collects all
# the objects Invoke and the library created: measured at 50-70 ms of CPU per command on
# the 2-core bench machine (a fifth of `invoke start`'s own process). Freezing them (now,
# and again at exit) skips that traversal; refcounting still frees what it frees, atexit
# handlers and stream flushing still run, and new objects are still collected while a
# long command (tail -f, api) runs.
gc.freeze()
atexit.register(gc.freeze)
