"""``invoke start --foreground``: the supervisor's own code, run in this process.

The console is a second sink of the same tee, and Ctrl+C asks the supervisor for the same
graceful shutdown ``invoke stop`` would (a second Ctrl+C forces it). The state file is
written as for a background start, so ``invoke status`` and ``invoke stop`` from another
terminal work too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

from . import datadir
from .binaries import Binary
from .config import Settings
from .errors import StartError
from .process import current_state, prepare
from .state import project_lock
from .supervisor import supervise


def run_foreground(
    settings: Settings,
    sink: Callable[[str], object],
    on_binary: Callable[[Binary], None] | None = None,
) -> int:
    """Run the server until it exits or Ctrl+C; return its exit code.

    The same checks as a background start (``process.prepare``), under the project lock,
    which is held until the state file exists, so a concurrent ``invoke start`` sees this
    server instead of starting a second one.
    """
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

        def recorded() -> None:
            datadir.record_version(ready.data_dir, ready.binary.version)
            lock.close()

        def to_console(text: str) -> None:
            sink(text)

        return supervise(ready.spec, console=to_console, on_recorded=recorded)
    finally:
        lock.close()
