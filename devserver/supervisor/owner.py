"""Stop a server when the process that owns it dies (a killed pytest, a crashed script).

Why: an ephemeral server (``devserver.ephemeral``, the pytest plugin's fixture) is started
through the same detached supervisor as ``invoke start``, so it outlives its starter on
purpose. When that starter is killed outright (SIGKILL, a CI job cancelled) no teardown
runs, and without this a test run would leave a server behind. The starter's pid, create
time and start in clock ticks since boot go into the launch spec; the supervisor runs
:func:`watch`, which polls that identity and, once the owner is gone, stops the server without
saving and, if it does not exit, kills it. A server started by ``invoke start`` has no owner
and is never watched.

The start ticks, as for the server's own identity (``lifetime.start_ticks``), are what tells
the owner from a later process with its pid on Linux: psutil's create time there moves with
every wall-clock step (an NTP step, a VM resume), and a live owner would look dead.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from devserver.system import lifetime

POLL_S = 0.2  # how soon a dead owner is noticed; psutil's check costs microseconds


def identity(pid: int) -> tuple[int, float, int]:
    """(pid, create time, start ticks) of a live process: what survives pid reuse (ticks: 0
    where the OS has none, see ``lifetime.start_ticks``)."""
    import psutil  # here: 20 ms and some MiB a supervisor without an owner never loads

    return pid, psutil.Process(pid).create_time(), lifetime.start_ticks(pid) or 0


def alive(pid: int, create_time: float, start_ticks: int = 0) -> bool:
    """Whether that very process still runs (a zombie or a reused pid counts as gone)."""
    import psutil  # here: 20 ms and some MiB a supervisor without an owner never loads

    try:
        proc = psutil.Process(pid)
        if not same_start(proc, create_time, start_ticks):
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def same_start(proc: Any, create_time: float, start_ticks: int) -> bool:
    """The start ticks when both sides have them (exact, clock-step proof), else the create
    time within a small slack (Windows, macOS: a figure stored once at creation)."""
    if start_ticks:
        ticks = lifetime.start_ticks(proc.pid)
        if ticks is not None:
            return ticks == start_ticks
    return bool(abs(proc.create_time() - create_time) <= 0.05)


def watch(
    pid: int,
    create_time: float,
    on_gone: Callable[[], object],
    poll: float = POLL_S,
    is_alive: Callable[[int, float, int], bool] = alive,
    sleep: Callable[[float], object] = time.sleep,
    start_ticks: int = 0,
) -> threading.Thread | None:
    """Call ``on_gone`` once, from a daemon thread, when the owner has exited (no pid: None)."""
    if pid <= 0:
        return None

    def loop() -> None:
        while is_alive(pid, create_time, start_ticks):
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
