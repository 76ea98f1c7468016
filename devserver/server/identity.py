"""The identity check that guards every signal: is this still the process a state recorded?

PID reuse is real: a stale PID file has made tools kill unrelated system processes. So a
state file records the server's (pid, start time, executable, binary) and nothing is ever
signalled unless all of them still match a live, non-zombie process that runs a binary of
the recorded flavor, and that is not pid 0 or 1, this process or one of its ancestors (a
forged or restored file once got pid 1 of a PID namespace, and ``invoke stop`` itself,
killed). A state that fails the check is stale: it is reported and removed, never acted on.

The start time survives wall-clock steps: on Linux it is the start in clock ticks since
boot (``lifetime.start_ticks``), on Windows and macOS psutil's create time (see
:func:`same_start` for why that holds there).

psutil is imported inside the functions: about 40 ms, and only needed once a state file
names a process, so a fresh ``start`` (and a ``stop`` or ``status`` with nothing running)
never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devserver.catalog import FLAVORS
from devserver.fetch.binaries import flavor_of_executable
from devserver.system import kill, lifetime, wsl

if TYPE_CHECKING:
    from devserver.server.state import ServerState

# psutil's create_time is a float derived from boot time and clock ticks; the same process
# yields the same value, but allow for rounding across psutil versions.
_CREATE_TIME_SLACK = 0.05


def _exe_of(proc: Any) -> str | None:
    """The process's executable path or name; None when the OS tells neither (see
    :func:`kill.process_exe`: access denied on Windows, OSError under Wine)."""
    return kill.process_exe(proc)


def same_exe(recorded: str, actual: str) -> bool:
    """Compare executables by file name: paths differ through symlinks and WSL mapping."""

    def norm(name: str) -> str:
        base = Path(name.replace("\\", "/")).name.lower()
        return base[:-4] if base.endswith(".exe") else base

    return bool(recorded) and norm(recorded) == norm(actual)


def same_start(proc: Any, create_time: float, start_ticks: int = 0) -> bool:
    """Did ``proc`` start when the recorded process did?

    Linux: the start in clock ticks since boot, exact, when the state recorded it (psutil's
    create time there is ticks plus a wall-clock boot time that moves with every clock step).
    Otherwise psutil's create time within a small slack: on Windows it is GetProcessTimes'
    creation time, a wall-clock figure the kernel stores once when the process is created, so
    a later clock step does not change it (only its rendering in local time would); on macOS
    it is the kernel's recorded start (``p_starttime``), also stored at creation. Files
    written before ticks were recorded fall back to the create time too.
    """
    if start_ticks:
        ticks = lifetime.start_ticks(proc.pid)
        if ticks is not None:
            return ticks == start_ticks
    return bool(abs(proc.create_time() - create_time) <= _CREATE_TIME_SLACK)


def protected_pids() -> set[int]:
    """PIDs never signalled whatever a state file says: 0, 1, us and our ancestors."""
    import psutil  # on demand, for the start path: see the module docstring

    me = psutil.Process()
    pids = {0, 1, me.pid}
    try:
        pids.update(parent.pid for parent in me.parents())
    except psutil.Error:
        pass
    return pids


def _norm(name: str) -> str:
    return os.path.normcase(os.path.realpath(name)) if name else ""


def runs_binary(proc: Any, binary: str, argv: Sequence[str] = ()) -> bool:
    """Is ``proc`` running ``binary``: as its executable (symlinks resolved: Debian's
    redis-server is a link to redis-check-rdb), or as the script or program an interpreter or
    ``wsl.exe`` was given (a test server written in Python, Dragonfly through WSL)? When the
    OS hides both (access denied), the process name must match the binary's; when it hides
    the name too (Wine), the command line's program must be the binary. ``argv``, the
    recorded command line, gives the Linux path a WSL start really ran (see
    :func:`wsl.launched_program`)."""
    import psutil  # on demand, for the start path: see the module docstring

    wanted = {_norm(binary), wsl.wsl_path(binary), wsl.launched_program(argv)} - {""}
    try:
        if _norm(proc.exe()) in wanted:
            return True
        args = proc.cmdline()[1:3]
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
        name = kill.process_exe(proc)  # the name, or None when it is hidden too
        if name is not None:
            return same_exe(binary, name)
        try:  # Wine: exe() and name() fail, but the command line names the program
            args = proc.cmdline()[:3]
        except (psutil.Error, OSError):
            return False
    return any(_norm(arg) in wanted or arg in wanted for arg in args)


def flavor_binary(state: ServerState, also: tuple[str, ...] = ()) -> bool:
    """Is the recorded binary one this project's flavor runs (by its file name: the catalog's
    names, the names discovery accepts for the flavor, or one of ``also``, the configured
    ``server.binary``)? A file naming e.g. a shell as the server is not ours. A binary given
    only as ``start --binary`` under a name unlike the flavor's is not recognised later unless
    ``server.binary`` names it too."""
    flavor = FLAVORS.get(state.flavor)
    if flavor is None or not state.binary:
        return False
    names = {*flavor.exe_names(), *also}
    if any(same_exe(name, state.binary) for name in names):
        return True
    # A renamed build (redis-server-7.2, valkey-server, dragonfly-v1.2) that discovery and
    # ``server.binary`` accept for this flavor.
    return flavor_of_executable(Path(state.binary.replace("\\", "/"))) == state.flavor


def verified_process(
    pid: int,
    create_time: float,
    exe: str,
    start_ticks: int = 0,
    binary: str = "",
    argv: Sequence[str] = (),
) -> Any | None:
    """A psutil.Process for ``pid`` only if it is still the very process we recorded:
    alive and not a zombie, same start, same executable name, running ``binary`` when given,
    and not a process that must never be signalled (:func:`protected_pids`). ``argv``: the
    recorded command line (see :func:`runs_binary`)."""
    import psutil  # on demand, for the start path: see the module docstring

    if pid in protected_pids():
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not same_start(proc, create_time, start_ticks):
            return None
        actual = _exe_of(proc)
        if actual is not None and not same_exe(exe, actual):
            return None  # an unreadable exe is unknown: the start above decides
        if binary and not runs_binary(proc, binary, argv):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def server_process(state: ServerState, also: tuple[str, ...] = ()) -> Any | None:
    """The live server described by ``state``, or None when the state is stale (including a
    state whose binary is not one of the flavor's: ``also`` adds configured names)."""
    if not flavor_binary(state, also):
        return None
    return verified_process(
        state.pid, state.create_time, state.exe, state.start_ticks, state.binary, state.argv
    )


def supervisor_alive(state: ServerState) -> bool:
    """Is the supervisor that recorded ``state`` still there to drain the server's output?

    Read-only (nothing is signalled on its strength), so a pid + start check suffices.
    """
    import psutil  # on demand, for the start path: see the module docstring

    if not state.supervisor_pid:
        return False
    try:
        proc = psutil.Process(state.supervisor_pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return same_start(proc, state.supervisor_create_time, state.supervisor_start_ticks)
    except psutil.Error:
        return False


def identity_of(pid: int) -> tuple[float, str] | None:
    """(create time, executable) to record for ``pid`` now, in the form verified_process
    compares; None when the process is gone or cannot be read."""
    import psutil  # on demand, for the start path: see the module docstring

    try:
        proc = psutil.Process(pid)
        return proc.create_time(), _exe_of(proc) or ""  # "": unreadable (see _exe_of)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
