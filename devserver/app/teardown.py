"""Stopping application processes the way systemd's ``KillMode=mixed`` and docker compose do.

First the main process alone is asked to stop (SIGTERM; a process started through ``sh -c``
passes it to the shell's own children too, since the shell does not), so a Celery or RQ worker
runs its warm shutdown and finishes the jobs in flight: a SIGTERM to the whole process group
would reach the pool's children directly and kill those jobs. When the one stop budget runs
out, everything the process started is killed, across process groups (RQ's job child leads its
own) and after the middle of the tree has exited (a forking app's grandchild). The tree is
followed with system/apptree.py: descendants of live members plus every process carrying the
run's tag. Whatever still runs after that is reported by name and pid, never called stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any

from devserver.system import apptree, kill

KILL_WAIT_S = 3.0  # after the kill: how long a process may take to disappear
SCAN_EVERY_S = 0.5  # the tag scan reads every process's environment: not on every poll


class Trees:
    """One run's application processes and everything they started, followed while stopping.

    ``mains``: name -> psutil handle of the process ``up`` started (None: it was gone already).
    """

    def __init__(self, run: str, mains: Mapping[str, Any | None]) -> None:
        self.run = run
        self.mains = dict(mains)
        self.known: dict[int, tuple[str, Any]] = {}
        self._next_scan = 0.0

    def refresh(self, scan: bool = False) -> None:
        """Add what the live members started since; every SCAN_EVERY_S (or when ``scan``),
        the processes that carry the run's tag (orphans included); forget the dead."""
        for name, main in self.mains.items():
            if main is not None and main.pid not in self.known and apptree.alive([main]):
                self.known[main.pid] = (name, main)
        by_name: dict[str, list[Any]] = {}
        for name, proc in self.known.values():
            by_name.setdefault(name, []).append(proc)
        for name, procs in by_name.items():
            for child in apptree.descendants(procs):
                self.known.setdefault(child.pid, (name, child))
        now = time.monotonic()
        if self.run and (scan or now >= self._next_scan):
            self._next_scan = now + SCAN_EVERY_S
            for name, procs in apptree.tagged(self.run).items():
                for proc in procs:
                    self.known.setdefault(proc.pid, (name, proc))
        self.known = {
            pid: (name, proc) for pid, (name, proc) in self.known.items() if apptree.alive([proc])
        }

    def remaining(self) -> list[tuple[str, Any]]:
        """(name, process) of every member still running, as of the last refresh."""
        return [(name, proc) for name, proc in self.known.values() if apptree.alive([proc])]

    def orphans(self, names: Iterable[str]) -> list[Any]:
        """The live members of ``names`` other than their main process (it has exited)."""
        wanted = set(names)
        mains = {id(main) for main in self.mains.values() if main is not None}
        return [proc for name, proc in self.remaining() if name in wanted and id(proc) not in mains]

    def kill_all(self) -> None:
        """The end of the budget: kill every member, then look again for what the kill let
        through (a child forked meanwhile) and kill that too."""
        import psutil  # loaded already: the members are psutil handles

        for _round in range(3):
            self.refresh(scan=True)
            victims = self.remaining()
            if not victims:
                return
            for _name, proc in victims:
                with suppress(psutil.Error, OSError):
                    kill.kill_tree(proc)
            time.sleep(0.05)

    def wait_gone(self, until: float) -> bool:
        """Poll until no member runs (True) or the monotonic time ``until`` (False)."""
        while True:
            self.refresh()
            if not self.remaining():
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(0.05)

    def left(self) -> list[str]:
        """``name: process (pid N)`` of each member still running, for the report."""
        self.refresh(scan=True)
        return [f"{name}: {apptree.describe(proc)}" for name, proc in self.remaining()]


def terminate(procs: Iterable[Any]) -> None:
    """SIGTERM (Windows: a kill, there is no polite signal) to processes whose main has
    exited: nobody is left to stop them in order."""
    import psutil  # loaded already: the members are psutil handles

    for proc in procs:
        with suppress(psutil.Error, OSError):
            kill.terminate(proc)
