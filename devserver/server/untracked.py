"""A server of this project that runs while its state file says nothing (or something false).

The state file can be deleted, corrupted, copied into another project or outlived (a server
that daemonized, a project folder deleted and cloned again). The processes themselves still
carry the project's marker (marker.py), so the commands that found no tracked server look
for them here: ``status`` reports one ("found_by": "process scan"), ``start`` refuses to
start a second one beside it, ``stop`` stops it. Only those fault paths scan: a normal start
(no state file, a free port) and a normal stop (a state file that matches) never do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devserver.catalog import FLAVORS
from devserver.config import Settings
from devserver.errors import StartError
from devserver.fetch.binaries import flavor_of_executable
from devserver.server.marker import (
    FLAVOR_VAR,
    SERVER,
    SUPERVISOR,
    find_marked,
    marker_of,
    settings_project_id,
    works_in,
)
from devserver.server.state import ServerState
from devserver.system import kill, lifetime

FOUND_BY_STATE = "state"
FOUND_BY_SCAN = "process scan"


@dataclass(frozen=True)
class Untracked:
    """A server of this project found by the process scan, and the supervisors beside it."""

    server: Any | None  # psutil.Process; None: only supervisors were left
    supervisors: list[Any] = field(default_factory=list)
    state: ServerState | None = None  # what the process tells, in the state file's form

    @property
    def pid(self) -> int:
        return self.server.pid if self.server is not None else 0

    def describe(self) -> str:
        """ "a server of this project runs untracked (redis, pid N); `invoke stop` stops it"."""
        what = f"{self.state.flavor}, " if self.state and self.state.flavor else ""
        return (
            f"a server of this project runs untracked ({what}pid {self.pid}); "
            "`invoke stop` stops it"
        )


def find_untracked(settings: Settings) -> Untracked | None:
    """The scan: this project's server (the oldest marked one) and supervisors, or None."""
    project = settings_project_id(settings)
    servers, supervisors = [], []
    by_folder = _server_by_folder(settings)
    for proc in find_marked(project, unmarked=by_folder):
        marker = marker_of(proc)
        role = marker[1] if marker else (by_folder(proc) or "")
        if role == SERVER:
            servers.append(proc)
        elif role == SUPERVISOR:
            supervisors.append(proc)
    # The server's own children (a forked save) carry its marker too: keep the top one.
    pids = {p.pid for p in servers}
    tops = [p for p in servers if _ppid(p) not in pids]
    if not tops and not supervisors:
        return None
    server = tops[0] if tops else None
    state = _state_of(server, supervisors, settings) if server is not None else None
    return Untracked(server, supervisors, state)


def _server_by_folder(settings: Settings) -> Callable[[Any], str | None]:
    """Recognise a server whose environment is unreadable (redis-server rewrites its process
    title over it, see marker.py): a flavor's executable whose working directory is in this
    project's data folder (the supervisor starts it there; a deleted folder still counts)."""
    return server_in_folder(settings.state_file.parent)


def server_in_folder(folder: Path | str) -> Callable[[Any], str | None]:
    """The check of :func:`_server_by_folder` for any folder (the supervisor's: its
    server's own data folder)."""

    def check(proc: Any) -> str | None:
        if not works_in(proc, folder):
            return None
        names = [kill.process_exe(proc) or ""]
        try:
            names += proc.cmdline()[:1]
        except Exception:
            pass
        if any(flavor_of_executable(Path(n.replace("\\", "/"))) for n in names if n):
            return SERVER
        return None

    return check


def _ppid(proc: Any) -> int:
    try:
        return int(proc.ppid())
    except Exception:
        return 0


def _listening_port(proc: Any) -> int:
    """The TCP port the process listens on (the lowest), 0 when it cannot be read."""
    try:
        conns = proc.net_connections(kind="tcp")
    except Exception:
        return 0
    ports = sorted(c.laddr.port for c in conns if c.status == "LISTEN" and c.laddr)
    return ports[0] if ports else 0


def _state_of(server: Any, supervisors: list[Any], settings: Settings) -> ServerState:
    """What the process tells about itself, in the form the stop loop takes (no control
    port: the graceful request goes straight to the server, with the configured password)."""
    exe = kill.process_exe(server) or ""
    env_flavor = ""
    try:
        env_flavor = server.environ().get(FLAVOR_VAR, "")
    except Exception:
        pass
    flavor = env_flavor or flavor_of_executable(Path(exe)) or settings.flavor
    if flavor not in FLAVORS:
        flavor = ""
    parent = next((s for s in supervisors if s.pid == _ppid(server)), None)
    return ServerState(
        pid=server.pid,
        create_time=server.create_time(),
        start_ticks=lifetime.start_ticks(server.pid) or 0,
        exe=exe,
        supervisor_pid=parent.pid if parent is not None else 0,
        supervisor_create_time=parent.create_time() if parent is not None else 0.0,
        flavor=flavor,
        version="",
        host=settings.host,
        port=_listening_port(server) or settings.port,
        log_file=str(settings.log_file(flavor)) if flavor else "",
        started_at=server.create_time(),
        binary=exe,
    )


def refuse_if_untracked(settings: Settings) -> None:
    """StartError when a server of this project runs untracked (a second would fight it
    for the data folder)."""
    found = find_untracked(settings)
    if found is not None and found.server is not None:
        raise StartError(
            found.describe().split(";")[0] + ", so another is not started",
            hint="`invoke stop` stops it (`invoke status` shows it)",
        )


def status_info(found: Untracked) -> dict[str, Any]:
    """The keys ``status`` reports for a server found by the scan."""
    state = found.state
    assert state is not None and found.server is not None
    info: dict[str, Any] = {
        "running": True,
        "flavor": state.flavor or None,
        "version": None,  # only the state file records it
        "exit_status": None,
        "pid": state.pid,
        "host": state.host,
        "port": state.port,
        "binary": state.binary or None,
        "uptime_s": round(time.time() - state.create_time, 1),
        "stale": False,
        "supervised": bool(state.supervisor_pid),
        "tracked": False,
        "found_by": FOUND_BY_SCAN,
        "untracked": found.describe(),
    }
    if state.log_file:
        info["log_file"] = state.log_file
    try:
        info["memory_rss_bytes"] = found.server.memory_info().rss
    except Exception:
        pass
    return info


def end_supervisors(found: Untracked, wait: float = 1.5) -> None:
    """Once the server is gone its supervisors have nothing left to do: ask them to end
    (SIGTERM; one in a restart's back-off cancels it), and kill any that linger (one whose
    project folder is gone may wait on nothing)."""
    import psutil  # loaded by the scan already

    for sup in found.supervisors:  # asked first: one waiting to restart gives up and says so
        try:
            sup.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(found.supervisors, timeout=wait)
    for sup in alive:
        try:
            kill.kill_tree(sup)
        except psutil.Error:
            pass
