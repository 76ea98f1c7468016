"""``invoke start --foreground``: the supervisor's own code, run in this process.

The console is a second sink of the same tee, and Ctrl+C asks the supervisor for the same
graceful shutdown ``invoke stop`` would (a second Ctrl+C forces it); a closed terminal
(SIGHUP) and SIGTERM do the same (``signals.foreground_stop_signals``). The state file is
written as for a background start, so ``invoke status`` and ``invoke stop`` from another
terminal work too. It is written just after the server was spawned, so for a few
milliseconds the server may answer PING before ``status`` knows it; a kill -9 of this
process in that window (or later) still takes the server down on Linux, through the
parent-death signal the server is spawned with.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

from devserver.config import Settings
from devserver.errors import StartError
from devserver.fetch.binaries import Binary
from devserver.server import datadir
from devserver.server.prepare import prepare
from devserver.server.state import current_state, project_lock
from devserver.supervisor.starting import supervise
from devserver.system import signals

if TYPE_CHECKING:
    from devserver.supervisor.core import Supervisor  # imported by supervise after its spawn

# Windows ends a process about 5 s after its console window was closed: stop within 4.
CONSOLE_CLOSE_GRACE = 4.0


def _foreground_setup(supervisor: Supervisor) -> None:
    """Windows: closing the terminal stops the server gracefully instead of orphaning it.
    No ``start`` waits for PING here, so the supervisor notes the first PONG itself (a
    crash after it is restarted, as in the background)."""
    signals.on_console_close(lambda: supervisor.stop_within(CONSOLE_CLOSE_GRACE))
    supervisor.probe_answered()


def run_foreground(
    settings: Settings,
    sink: Callable[[str], object],
    on_binary: Callable[[Binary], None] | None = None,
) -> int:
    """Run the server until it exits or Ctrl+C; return its exit code.

    The same checks as a background start (``server.prepare``), under the project lock,
    which is held until the state file exists, so a concurrent ``invoke start`` sees this
    server instead of starting a second one.
    """
    with signals.foreground_stop_signals():
        return _run(settings, sink, on_binary)


def _run(
    settings: Settings,
    sink: Callable[[str], object],
    on_binary: Callable[[Binary], None] | None,
) -> int:
    lock = ExitStack()
    try:
        lock.enter_context(project_lock(settings.lock_file, wait=1.0))
        state, proc = current_state(settings)
        if state is not None and proc is not None:
            raise StartError(
                f"{state.flavor} is already running in the background (pid {state.pid})",
                hint="stop it first with `invoke stop`, or use `invoke tail -f` to watch it",
            )
        ready = prepare(settings, state, on_binary)
        for warning in ready.warnings:
            sink(f"[devserver] warning: {warning}\n")

        def recorded() -> None:
            datadir.record_version(ready.data_dir, ready.binary.version)
            lock.close()

        def to_console(text: str) -> None:
            try:
                sink(text)
            except (OSError, ValueError):
                pass  # the terminal is gone (hang-up): the log file still gets every line

        return supervise(
            ready.spec, console=to_console, setup=_foreground_setup, on_recorded=recorded
        )
    finally:
        lock.close()
