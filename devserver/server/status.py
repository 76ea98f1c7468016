"""``invoke status``: whether our server runs, and what we know about it.

``found_by`` says how: "state" (the state file, identity-checked) or "process scan" (no
state file could be trusted, but a process carrying this project's marker runs: untracked.py).
"""

from __future__ import annotations

import time
from typing import Any

from devserver.config import Settings
from devserver.server import resp
from devserver.server.identity import supervisor_alive
from devserver.server.state import ServerState, current_state, untrusted_state
from devserver.server.untracked import FOUND_BY_STATE, find_untracked, status_info


def status(settings: Settings) -> dict[str, Any]:
    """The status object (``invoke status --json``): running or not, and what we know."""
    state, proc = current_state(settings)
    untrusted = "" if state is not None else untrusted_state(settings)
    flavor = state.flavor if state else (settings.flavor if settings.flavor != "auto" else "")
    info: dict[str, Any] = {
        "running": proc is not None,
        "flavor": flavor or None,
        "version": state.version if state else None,
        "pid": state.pid if state and proc is not None else None,
        "host": state.host if state else settings.host,
        "port": state.port if state else settings.port,
        "state_file": str(settings.state_file),
        "log_file": state.log_file if state else _log_for(settings, flavor),
        "uptime_s": round(time.time() - state.create_time, 1) if state and proc else None,
        "binary": state.binary if state else None,
        "stale": (state is not None and proc is None) or bool(untrusted),
        "exit_status": (state.exit_status or None) if state else None,  # null, never ""
        # False: the server runs but its supervisor is gone, so nobody captures its log
        # (`invoke restart` fixes it; `invoke stop` still stops it).
        "supervised": supervisor_alive(state) if state and proc is not None else None,
    }
    info.update(_restart_info(state))
    if untrusted:
        info["state_error"] = untrusted
    if proc is not None and state is not None:
        info["found_by"] = FOUND_BY_STATE
        info.update(_server_info(state, settings, proc))
        return info
    info["found_by"] = None
    # No tracked server: the state file is missing, corrupt, stale or another project's.
    # Does a server of this project run all the same? (Only here: a tracked one needs no scan.)
    found = find_untracked(settings)
    if found is not None and found.server is not None:
        info.update(status_info(found))
    return info


def _restart_info(state: ServerState | None) -> dict[str, Any]:
    """How often the supervisor restarted the server after a crash, the last crash (its exit
    status and when), whether a restart is under way, and why it gave up if it did."""
    info: dict[str, Any] = {
        "restarts": state.restarts if state else 0,
        "last_exit": None,
        "restarting": bool(state and state.status == "restarting"),
    }
    if state and state.last_exit:
        at = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(state.last_exit_at))
        kind, _, value = state.last_exit.partition(" ")
        info["last_exit"] = {
            "status": state.last_exit,  # "signal SIGKILL", "code 1"
            "code": int(value) if kind == "code" and value.isdigit() else None,
            "signal": value if kind == "signal" else None,
            "at": at,
        }
    if state and state.gave_up:
        info["gave_up"] = state.gave_up
    return info


def _log_for(settings: Settings, flavor: str) -> str | None:
    return str(settings.log_file(flavor)) if flavor else None


def _server_info(state: ServerState, settings: Settings, proc: Any) -> dict[str, Any]:
    """Memory and clients: from INFO when we can authenticate, else from the OS."""
    extra: dict[str, Any] = {}
    try:
        extra["memory_rss_bytes"] = proc.memory_info().rss
    except Exception:
        pass
    try:
        reply = resp.call(
            resp.connect_host(state.host),
            state.port,
            [["INFO"]],
            timeout=1.0,
            password=settings.password,
        )[0]
    except (OSError, resp.RespError, resp.ConnectionClosed):
        return extra
    fields = dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    if "connected_clients" in fields:
        # Not counting this INFO's own connection: the clients are the application's.
        extra["clients"] = max(0, int(fields["connected_clients"]) - 1)
    if "used_memory" in fields:
        extra["used_memory_bytes"] = int(fields["used_memory"])
    return extra
