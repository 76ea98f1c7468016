"""``invoke start --foreground``: the supervisor's own code, run in this process.

The console is a second sink of the same tee, and Ctrl+C asks the supervisor for the same
graceful shutdown ``invoke stop`` would (a second Ctrl+C forces it). The state file is
written as for a background start, so ``invoke status`` and ``invoke stop`` from another
terminal work too.
"""

from __future__ import annotations

from collections.abc import Callable

from .binaries import Binary, choose_binary
from .config import Settings
from .errors import StartError
from .ports import check_port_free
from .process import build_spec, current_state
from .state import project_lock, remove_state
from .supervisor import supervise


def run_foreground(
    settings: Settings,
    sink: Callable[[str], object],
    on_binary: Callable[[Binary], None] | None = None,
) -> int:
    """Run the server until it exits or Ctrl+C; return its exit code."""
    with project_lock(settings.lock_file, wait=1.0):
        state, proc = current_state(settings)
        if state is not None and proc is not None:
            raise StartError(
                f"{state.flavor} is already running in the background (pid {state.pid})",
                hint="stop it first with `invoke stop`, or use `invoke tail -f` to watch it",
            )
        if state is not None:
            remove_state(settings.state_file)
        binary = choose_binary(settings)
        if on_binary:
            on_binary(binary)
        spec = build_spec(settings, binary)
        check_port_free(settings.host, settings.port)

    def to_console(text: str) -> None:
        sink(text)

    return supervise(spec, console=to_console)
