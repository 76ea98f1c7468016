"""Undo a start that failed or was interrupted: the supervisor it launched, and its server.

Fast (tens of milliseconds) and complete: the supervisor is asked to give up first (it knows
what it started); only when it does not end in time is the server killed by its recorded
identity, and the supervisor's tree with it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from devserver.config import Settings
from devserver.errors import StateError
from devserver.server.identity import server_process
from devserver.server.state import (
    ServerState,
    configured_names,
    read_state,
    remove_state,
)
from devserver.system import kill, wsl
from devserver.system.posix import Child

# The supervisor as ``start`` holds it: spawned (Popen) or forked from this process (Child).
SupProc = subprocess.Popen[bytes] | Child


def undo(
    settings: Settings, sup: SupProc | None, launched: bool, hurried: Callable[[], bool]
) -> None:
    if sup is None:
        return  # nothing was forked or spawned yet
    if launched:
        abandon(settings, sup, hurried)
    else:
        discard(sup)


def discard(sup: SupProc, timeout: float = 10) -> None:
    """Let a supervisor end on its own (with no spec it exits at once; after its server died
    it logs the exit and cleans up), reap it, and kill it only if it does not end in time."""
    if sup.stdin is not None and not sup.stdin.closed:
        sup.stdin.close()
    try:
        sup.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_supervisor(sup)


def kill_supervisor(sup: SupProc) -> None:
    """Kill the supervisor and what it runs. Through psutil's tree, because on Windows a
    venv's python.exe is a launcher: Popen's pid is not the supervisor's own."""
    import psutil  # not at the top: only a failed start needs it (~40 ms to import)

    try:
        kill.kill_tree(psutil.Process(sup.pid))
    except psutil.Error:
        pass
    sup.wait()


def abandon(
    settings: Settings,
    sup: SupProc,
    hurried: Callable[[], bool] = lambda: False,
    timeout: float = 2.0,
) -> None:
    """Undo a failed start, completely and fast (tens of milliseconds).

    Closing the supervisor's stdin without ``ok`` tells it the start was given up: it kills
    the server (recorded or not yet), logs it, removes a password file and exits. Only if it
    has not ended within ``timeout``, or another Ctrl+C asks to hurry (``hurried``), do we
    kill the server by its recorded identity and the supervisor's tree ourselves. The state
    file goes last. Runs under :func:`signals.interrupt_once`, so Ctrl+C cannot cut it short.
    """
    if sup.stdin is not None:
        try:
            sup.stdin.close()
        except OSError:
            pass  # the supervisor is gone already
    deadline = time.monotonic() + timeout
    delay = 0.001
    while sup.poll() is None and time.monotonic() < deadline and not hurried():
        time.sleep(delay)
        delay = min(delay * 1.5, 0.02)
    if sup.poll() is None:
        try:
            state = read_state(settings.state_file)
        except StateError:
            state = None
        proc = server_process(state, configured_names(settings)) if state is not None else None
        if state is not None and proc is not None:
            kill_server(settings, state, proc)
        kill_supervisor(sup)
    try:
        remove_state(settings.state_file)
    except OSError:
        pass  # an unwritable data folder: the entry names a dead process, so it reads as stale


def kill_server(settings: Settings, state: ServerState, proc: Any) -> None:
    """Kill a server at once (a failed start); under WSL the Linux process first."""
    wsl.kill_now(settings, state)
    kill.kill_tree(proc)
