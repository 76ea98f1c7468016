"""Which processes an application process started, even after it (or a middle one) exited.

A worker's children are not all its children for long: a forking app's grandchild is
re-parented to init once its parent exits, and RQ puts its job child in its own process group
(``setpgrp``), so neither ``children()`` of the process ``up`` started nor its process group
reach them all. What does: every application process gets ``DEVSERVER_APP_RUN=<run> <name>``
in its environment, which its descendants inherit (the pattern mirakuru uses to find its
processes again); ``run`` is one ``up`` (or ``invoke api``) run's random token, recorded in
app.json, so another run's processes and the user's own are never taken for this one's.

A process is a member of an application process's tree when it carries the tag, or descends
from a live member. Reading every process's environment costs about a millisecond per ten
processes: done only while stopping an application (never on ``start``/``stop``'s path), and
psutil reads it the same way on Linux (/proc), macOS (sysctl) and Windows (the PEB, same user).
Nothing is signalled that is not a live member, or that is this process or an ancestor.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

TAG_VAR = "DEVSERVER_APP_RUN"


def new_run() -> str:
    """A token naming one run of ``up`` (``invoke api``): 16 hex digits."""
    return secrets.token_hex(8)


def tag_env(run: str, name: str) -> dict[str, str]:
    """The variable to add to the environment of application process ``name``."""
    return {TAG_VAR: f"{run} {name}"}


def _untouchable() -> set[int]:
    """0, 1, this process and its ancestors (``invoke down`` run from an app's own shell)."""
    import psutil  # ~20 ms: needed only while stopping application processes

    pids = {0, 1, os.getpid()}
    with suppress(psutil.Error):
        pids.update(parent.pid for parent in psutil.Process().parents())
    return pids


def _alive(proc: Any) -> bool:
    import psutil  # ~20 ms: needed only while stopping application processes

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def tagged(run: str) -> dict[str, list[Any]]:
    """{name: [psutil.Process]} of the live processes that carry this run's tag."""
    import psutil  # ~20 ms: needed only while stopping application processes

    found: dict[str, list[Any]] = {}
    skip = _untouchable()
    prefix = f"{run} "
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            value = proc.environ().get(TAG_VAR, "")
        except (psutil.Error, OSError):  # another user's, gone, or hidden (Wine: OSError)
            continue
        if value.startswith(prefix) and _alive(proc):
            found.setdefault(value[len(prefix) :], []).append(proc)
    return found


def descendants(procs: Iterable[Any]) -> list[Any]:
    """The live descendants of live ``procs`` (psutil handles), each once."""
    import psutil  # ~20 ms: needed only while stopping application processes

    seen: dict[int, Any] = {}
    for proc in procs:
        with suppress(psutil.Error):
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
    skip = _untouchable()
    return [proc for pid, proc in seen.items() if pid not in skip and _alive(proc)]


def alive(procs: Iterable[Any]) -> list[Any]:
    """Those of ``procs`` that still run (a zombie has ended)."""
    return [proc for proc in procs if _alive(proc)]


def handle(pid: int) -> Any | None:
    """A psutil handle for a child we have not reaped yet (so the pid is still its own)."""
    import psutil  # ~20 ms: needed only once application processes run

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def describe(proc: Any) -> str:
    """``name (pid N)`` for a report; the name is the process's own, when readable."""
    import psutil  # ~20 ms: needed only while stopping application processes

    try:
        name = proc.name()
    except (psutil.Error, OSError):
        name = "?"
    return f"{name} (pid {proc.pid})"
