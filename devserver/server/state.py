"""The state file ``data/server.json`` and the identity check that guards every signal.

PID reuse is real: a stale PID file has made tools kill unrelated system processes. So a
state file records the server's (pid, start time, executable, binary) and nothing is ever
signalled unless all of them still match a live, non-zombie process that runs a binary of
the recorded flavor, and that is not pid 0 or 1, this process or one of its ancestors (a
forged or restored file once got pid 1 of a PID namespace, and ``invoke stop`` itself,
killed). A state file that fails the check is stale: it is reported and removed, never
acted on.

The start time survives wall-clock steps: on Linux it is the start in clock ticks since
boot (``lifetime.start_ticks``), on Windows and macOS psutil's create time (see
:func:`same_start` for why that holds there).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from devserver.config import Settings
from devserver.errors import LockBusy, StateError, UntrustedState
from devserver.system import files, kill, lifetime, wsl
from devserver.system.atomic import PRIVATE_MODE, remove_file, write_atomic

# psutil's create_time is a float derived from boot time and clock ticks; the same process
# yields the same value, but allow for rounding across psutil versions.
_CREATE_TIME_SLACK = 0.05


@dataclass
class ServerState:
    """What the supervisor records about the server it runs (JSON, top-level ``pid``)."""

    pid: int
    create_time: float
    exe: str
    supervisor_pid: int
    flavor: str
    version: str
    host: str
    port: int
    log_file: str
    started_at: float
    binary: str = ""
    argv: list[str] = field(default_factory=list)
    supervisor_create_time: float = 0.0
    control_port: int = 0
    control_token: str = ""
    status: str = "running"  # "running", then "exited" once the supervisor saw it end
    exit_status: str = ""
    # Linux: start in clock ticks since boot (0 in files written before it was recorded,
    # and on other systems): the identity that survives a wall-clock step.
    start_ticks: int = 0
    supervisor_start_ticks: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        """Write atomically, readable by this user only (it holds the control token)."""
        write_atomic(path, self.to_json(), mode=PRIVATE_MODE)

    @classmethod
    def from_mapping(cls, data: Any) -> ServerState:
        """Check every field's type (a file nobody should trust must never reach a signal)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for name, spec in cls.__dataclass_fields__.items():
            if name not in data:
                if spec.default is MISSING and spec.default_factory is MISSING:
                    raise ValueError(f"{name} is missing")
                continue
            check, expected = _FIELD_TYPES[str(spec.type)]
            value = data[name]
            if not check(value) or not _FIELD_RULES.get(name, _any)(value):
                raise ValueError(f"{name} is {value!r}, expected {_RULE_TEXT.get(name, expected)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _any(value: Any) -> bool:
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


# By annotation: a field added to ServerState is checked by its type without more code.
_FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "a whole number"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list[str]": (
        lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
        "a list of strings",
    ),
}
# Beyond the type: ranges that make a value usable at all.
_FIELD_RULES: dict[str, Callable[[Any], bool]] = {
    "pid": lambda v: v > 0,
    "supervisor_pid": lambda v: v >= 0,
    "port": lambda v: 0 < v < 65536,
    "control_port": lambda v: 0 <= v < 65536,
    "flavor": bool,
}
_RULE_TEXT = {
    "pid": "a positive whole number",
    "supervisor_pid": "a whole number >= 0",
    "port": "a TCP port",
    "control_port": "a TCP port or 0",
    "flavor": "a flavor name",
}


def read_state(path: Path) -> ServerState | None:
    """The recorded state, None when there is none.

    UntrustedState when the content is not a state file this tool wrote (corrupt, foreign,
    wrong types): callers treat it as stale. StateError when the file cannot be read at all.
    """
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StateError(
            f"cannot read {path}: {exc.strerror}", hint="check its permissions"
        ) from None
    try:
        return ServerState.from_mapping(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, RecursionError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        raise UntrustedState(
            f"{path} is not a state file this tool wrote ({reason[:200]})",
            hint=f"it is ignored (nothing is signalled); the next start replaces it, or delete "
            f"{path}",
        ) from None


def remove_state(path: Path) -> None:
    """Delete the state file (retried while a reader holds it open on Windows)."""
    remove_file(path)


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
    import psutil

    me = psutil.Process()
    pids = {0, 1, me.pid}
    try:
        pids.update(parent.pid for parent in me.parents())
    except psutil.Error:
        pass
    return pids


def _norm(name: str) -> str:
    return os.path.normcase(os.path.realpath(name)) if name else ""


def runs_binary(proc: Any, binary: str) -> bool:
    """Is ``proc`` running ``binary``: as its executable (symlinks resolved: Debian's
    redis-server is a link to redis-check-rdb), or as the script or program an interpreter or
    ``wsl.exe`` was given (a test server written in Python, Dragonfly through WSL)? When the
    OS hides both (access denied), the process name must match the binary's; when it hides
    the name too (Wine), the command line's program must be the binary."""
    import psutil

    wanted = {_norm(binary), wsl.wsl_path(binary)}
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
    from devserver.catalog import FLAVORS
    from devserver.fetch.binaries import flavor_of_executable

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
    pid: int, create_time: float, exe: str, start_ticks: int = 0, binary: str = ""
) -> Any | None:
    """A psutil.Process for ``pid`` only if it is still the very process we recorded:
    alive and not a zombie, same start, same executable name, running ``binary`` when given,
    and not a process that must never be signalled (:func:`protected_pids`)."""
    import psutil

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
        if binary and not runs_binary(proc, binary):
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
        state.pid, state.create_time, state.exe, state.start_ticks, state.binary
    )


def supervisor_alive(state: ServerState) -> bool:
    """Is the supervisor that recorded ``state`` still there to drain the server's output?

    Read-only (nothing is signalled on its strength), so a pid + start check suffices.
    """
    import psutil

    if not state.supervisor_pid:
        return False
    try:
        proc = psutil.Process(state.supervisor_pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return same_start(proc, state.supervisor_create_time, state.supervisor_start_ticks)
    except psutil.Error:
        return False


@contextmanager
def project_lock(path: Path, wait: float = 0.0, poll: float = 0.05) -> Iterator[None]:
    """Hold the project's lock while starting or stopping, so two never race.

    A second ``start`` waits up to ``wait`` seconds (then finds the first one's server
    running and says so) rather than failing. The lock is an OS file lock, released if the
    holder dies, not the file's existence, so a crash never leaves the project locked.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        not_a_folder = path.parent.exists() and not path.parent.is_dir()
        why = "it is not a folder" if not_a_folder else (exc.strerror or str(exc))
        raise StateError(
            f"cannot use the data directory {path.parent}: {why}",
            hint="set server.data_dir (INVOKE_SERVER_DATA_DIR) to a folder you can write",
        ) from None
    with handle:
        deadline = time.monotonic() + wait
        while not files.try_lock(handle):
            if time.monotonic() >= deadline:
                raise LockBusy(
                    "another start or stop of this project is in progress",
                    hint="wait for it to finish, then try again",
                )
            time.sleep(poll)
        yield


def identity_of(pid: int) -> tuple[float, str] | None:
    """(create time, executable) to record for ``pid`` now, in the form verified_process
    compares; None when the process is gone or cannot be read."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time(), _exe_of(proc) or ""  # "": unreadable (see _exe_of)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def current_state(settings: Settings) -> tuple[ServerState | None, Any | None]:
    """(state, live psutil process) of our server; process None when stopped or stale.

    A state file that cannot be trusted (corrupt, wrong types) counts as no state: it is
    never acted on, and the next start replaces it (``prepare`` says so).
    """
    try:
        state = read_state(settings.state_file)
    except UntrustedState:
        return None, None
    if state is None or state.status != "running":
        return state, None
    return state, server_process(state, also=configured_names(settings))


def configured_names(settings: Settings) -> tuple[str, ...]:
    """The file name of an explicitly configured server binary (``server.binary``), which the
    identity check accepts beside the flavor's own executable names."""
    return (settings.binary.name,) if settings.binary is not None else ()


def untrusted_state(settings: Settings) -> str:
    """Why the state file cannot be trusted, or "" (absent, readable, or fine)."""
    try:
        read_state(settings.state_file)
    except UntrustedState as exc:
        return exc.message
    except StateError:
        return ""
    return ""
