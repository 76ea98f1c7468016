"""The detached supervisor process: its Windows entry, the POSIX handover, its report, its end.

The launch spec (argv, environment, password) arrives on stdin (``wire.encode_spec``), so no
secret is ever on a command line. stdin then stays open as ``start``'s lifeline: ``start``
writes ``ok`` once the server answers PING; if stdin ends without it (Ctrl+C, a timeout,
``start`` killed), nobody will use the server, so the supervisor kills it and exits. Until
the state file is written, stdout is a pipe back to ``start``: a start-up failure (the state
file cannot be written, say) is reported there as one JSON line, after the server was
stopped. Then stdout goes to the null device. ``--foreground`` mode runs the same
``starting.supervise`` in-process, without any of this.

On POSIX the detached supervisor starts in ``bootstrap`` (or ``fork``), which spawns the
server and writes the state file before this module is imported, then hands over to
:func:`adopt`; on Windows (no fork) :func:`run` reads the spec and spawns through
subprocess. What that spawn does not need is imported after it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from devserver.errors import DevServerError
from devserver.supervisor import owner
from devserver.supervisor.starting import remove_secret, spawn_failed, supervise
from devserver.supervisor.wire import Spec, read_spec
from devserver.system import lifetime, signals

if TYPE_CHECKING:
    from devserver.supervisor.core import First, Supervisor
    from devserver.system.posix import Child

# What the bootstrap hands over to, by name (bootstrap._hand_over), spawn_failed among them.
__all__ = ["adopt", "finish", "main", "report", "run", "spawn_failed"]


def main() -> int:
    """Entry point of the detached supervisor on Windows: the spec comes on stdin.

    An empty stdin means ``start`` gave up before sending one (the port was taken, say):
    exit quietly. ``start`` spawns us early so our start-up overlaps its own checks.
    """
    lifetime.preload_parent_death()  # while ``start`` still runs its checks
    try:
        spec = read_spec(0)
    except ValueError as exc:
        return report(exc)
    if spec is None:
        return 0
    return _reporting(lambda: supervise(spec, setup=_detached, on_recorded=_close_report))


def adopt(spec: Spec, child: Child, secret_dir: str, first: First, log_fd: int = -1) -> int:
    """Supervise a server the bootstrap spawned (POSIX), from where ``starting.supervise`` would
    be after its spawn; ``first`` is the bootstrap's state write (see ``core.First``),
    ``log_fd`` the log it opened."""
    # Here: the Windows entry imports this module before its spawn (the bootstrap has
    # warmed this import up already).
    from devserver.supervisor.core import Supervisor

    def body() -> int:
        try:
            sup = Supervisor(spec, child, secret_dir=secret_dir, token=first[1], log_fd=log_fd)
            _detached(sup)
            return sup.run(_close_report, first)
        finally:
            remove_secret(secret_dir)

    return _reporting(body)


def _detached(sup: Supervisor) -> None:
    """What only the detached supervisor does: stop on SIGTERM/console close, watch the
    lifeline and the owner."""
    signals.install_stop_signals(sup.stop_on_signal)
    threading.Thread(target=_hold_lifeline, args=(sup,), daemon=True).start()
    _watch_owner(sup)


def _reporting(body: Callable[[], int]) -> int:
    """Run ``body``; a failure (the server is already stopped then) goes to ``start``."""
    try:
        return body()
    except Exception as exc:
        return report(exc)


def report(exc: Exception) -> int:
    """Tell ``start`` why this supervisor failed: one JSON line on its stdout; exit 1."""
    import json  # here: the Windows entry imports this module before its spawn

    if isinstance(exc, DevServerError):
        report = {"error": exc.message, "hint": exc.hint}
    else:
        report = {"error": f"the supervisor failed: {type(exc).__name__}: {exc}"}
    try:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    return 1


def _hold_lifeline(sup: Supervisor) -> None:
    """Wait for ``start``'s ``ok`` (the server answered PING); stdin ending without it means
    the start was given up."""
    try:
        line = sys.stdin.buffer.readline()
    except (OSError, ValueError):
        line = b""
    if line.strip() != b"ok":
        sup.abandon()
    else:
        sup.answered.set()  # ``start`` saw the PONG: a crash from now on is restarted


def _close_report() -> None:
    """Once the state is written, the pipe to ``start`` has served: point stdout at the null
    device, so nothing written later can block on, or fail against, a reader that left."""
    try:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except (OSError, ValueError):
        pass


# Folders to remove as this process ends (the dead owner's temporary folder).
_REMOVE_AT_EXIT: list[str] = []


def _watch_owner(sup: Supervisor) -> None:
    """An ephemeral server's owner (owner.py) dying means a throwaway stop, and the removal
    of the temporary folder it can no longer remove (once the log in it is closed: at
    :func:`finish`)."""

    def gone() -> None:
        folder = str(sup.spec.get("owner_folder") or "")
        if folder:
            _REMOVE_AT_EXIT.append(folder)
        owner.stop_server(lambda: sup.shutdown(save=False), sup.proc)

    owner.watch(
        int(sup.spec.get("owner_pid") or 0),
        float(sup.spec.get("owner_create_time") or 0.0),
        gone,
        start_ticks=int(sup.spec.get("owner_start_ticks") or 0),
    )


def run() -> None:
    """Console entry on Windows
    (``python -S -c "from devserver.supervisor.entry import run; run()"``)."""
    finish(main())


def finish(code: int) -> NoReturn:
    """End the supervisor process with ``code``.

    ``os._exit``: by then the log is closed and the state written or removed, and an
    interpreter shutdown (daemon threads, module teardown) only delays the callers that
    wait for this process to end (an abandoned start's cleanup, ``stop``) on a busy machine.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if _REMOVE_AT_EXIT:
        import shutil  # only for an ephemeral server's folder

        for folder in _REMOVE_AT_EXIT:
            shutil.rmtree(folder, ignore_errors=True)
    os._exit(code)


if __name__ == "__main__":
    run()
