"""A server that exited on its own but left a process of its own running, detached.

A server binary that forks and exits (Redis's ``--daemonize yes`` under another name, a
wrapper script that backgrounds the real server) leaves a server the supervisor can neither
log nor stop, and that no state file names. When the server exits without a stop having
been asked for, the supervisor looks for such a process (the project's marker, or a flavor's
executable working in this server's data folder: see server/untracked.py) and stops it, and
says so in the log, so nothing runs untracked. Only on that path: a requested stop never
scans.
"""

from __future__ import annotations

import os
from typing import Any

from devserver.supervisor.wire import Spec

GRACE_S = 2.0  # SIGTERM's time to end it before the kill


def stop_detached(spec: Spec, server_pid: int) -> list[str]:
    """Stop what the exited server left running; "name (pid N)" of each, for the log."""
    import psutil  # here: only after a server exited on its own

    from devserver.server.marker import SERVER, find_marked, project_id
    from devserver.server.untracked import server_in_folder
    from devserver.system import kill

    project = spec.get("project") or project_id(_state_folder(spec))
    check = server_in_folder(spec["cwd"])
    left: list[Any] = [
        p for p in find_marked(project, SERVER, unmarked=check) if p.pid != server_pid
    ]
    said = []
    for proc in left:
        try:
            said.append(f"{proc.name()} (pid {proc.pid})")
            kill.terminate(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(left, timeout=GRACE_S)
    for proc in alive:
        try:
            kill.kill_tree(proc)
        except psutil.Error:
            pass
    return said


def _state_folder(spec: Spec) -> str:
    return os.path.dirname(spec["state_file"])
