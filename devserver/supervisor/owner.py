"""Stop a server when the process that owns it dies (a killed pytest, a crashed script).

Why: an ephemeral server (``devserver.ephemeral``, the pytest plugin's fixture) is started
through the same detached supervisor as ``invoke start``, so it outlives its starter on
purpose. When that starter is killed outright (SIGKILL, a CI job cancelled) no teardown
runs, and without this a test run would leave a server behind. The starter's pid and create
time go into the launch spec; the supervisor runs :func:`watch`, which polls that identity
and, once the owner is gone, stops the server without saving and, if it does not exit,
kills it. A server started by ``invoke start`` has no owner and is never watched.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.2  # how soon a dead owner is noticed; psutil's check costs microseconds


def identity(pid: int) -> tuple[int, float]:
    """(pid, create time) of a live process, the pair that survives pid reuse."""
    import psutil  # here: 20 ms and some MiB a supervisor without an owner never loads

    return pid, psutil.Process(pid).create_time()


def alive(pid: int, create_time: float) -> bool:
    """Whether that very process still runs (a zombie or a reused pid counts as gone)."""
    import psutil  # here: 20 ms and some MiB a supervisor without an owner never loads

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.05:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def watch(
    pid: int,
    create_time: float,
    on_gone: Callable[[], object],
    poll: float = POLL_S,
    is_alive: Callable[[int, float], bool] = alive,
    sleep: Callable[[float], object] = time.sleep,
) -> threading.Thread | None:
    """Call ``on_gone`` once, from a daemon thread, when the owner has exited (no pid: None)."""
    if pid <= 0:
        return None

    def loop() -> None:
        while is_alive(pid, create_time):
            sleep(poll)
        on_gone()

    thread = threading.Thread(target=loop, name="devserver-owner", daemon=True)
    thread.start()
    return thread


def stop_server(shutdown: Callable[[], object], proc: Any, grace: float = 5.0) -> None:
    """The owner is gone: a throwaway stop (``shutdown``), then a kill if it hangs on."""
    shutdown()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
