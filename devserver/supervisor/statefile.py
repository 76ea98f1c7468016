"""The state file as the supervisor writes it: recorded once the server runs, then marked
exited or removed when it ends.

Plain JSON here, not through server/state.py: its dataclass import would delay the record
``start`` waits for, and the removal ``stop`` waits for. On Linux the bootstrap has usually
written the record already, from /proc (``bootstrap.record_first``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from devserver.supervisor.wire import Spec, state_record
from devserver.system import kill, lifetime
from devserver.system.atomic import PRIVATE_MODE, remove_file, write_atomic


def save_state(path: str, state: dict[str, Any]) -> None:
    """Write the state file as ``ServerState.to_json`` does, readable by its owner only."""
    write_atomic(Path(path), json.dumps(state, indent=2, sort_keys=True), mode=PRIVATE_MODE)


def record_state(
    spec: Spec, pid: int, control_port: int, token: str, extra: dict[str, Any] | None = None
) -> None:
    """Write data/server.json (pid + create time + exe, so stop can check identity):
    ``start`` returns as soon as this file is there and PING answers. ``extra``: fields a
    restart carries over (the count, the last exit)."""
    server = lifetime.proc_identity(pid)
    me = lifetime.proc_identity(os.getpid())
    if server is None or me is None:  # not Linux, or no /proc: psutil
        import psutil  # here: 20 ms and some MiB that Linux, reading /proc, never needs

        try:
            child = psutil.Process(pid)
            # exe() may be unreadable (Windows: access denied; Wine: OSError WinError 87):
            # then record the binary we launched rather than die with the server orphaned.
            server = (child.create_time(), kill.process_exe(child) or spec["binary"], 0)
        except psutil.Error:
            server = (0.0, spec["binary"], 0)
        me = (psutil.Process(os.getpid()).create_time(), "", 0)
    state = state_record(spec, pid, server, me, control_port, token)
    state.update(extra or {})
    save_state(spec["state_file"], state)


def mark_state(spec: Spec, pid: int, changes: dict[str, Any]) -> bool:
    """Update the record of server ``pid`` in place (atomically); False when the state file
    names another server or none (a stop or start came since: it is not ours to touch)."""
    path = spec["state_file"]
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("pid") != pid:
        return False
    state.update(changes)
    try:
        save_state(path, state)
    except OSError:
        return False
    return True


def finish_state(spec: Spec, pid: int, stop_requested: bool, code: int) -> None:
    """A requested stop removes the state (``stop`` returns as soon as it is gone); after a
    crash it stays, marked exited, for ``status`` and the next ``start`` to report."""
    path = spec["state_file"]
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return
    if not isinstance(state, dict) or state.get("pid") != pid:
        return  # not ours any more (a new start replaced it)
    if stop_requested:
        try:
            remove_file(Path(path))
        except OSError:
            pass
        return
    status = kill.describe_exit(code)
    state.update(status="exited", exit_status=status, last_exit=status, last_exit_at=time.time())
    save_state(path, state)
