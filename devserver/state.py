"""The state file ``data/server.json`` and the identity check that guards every signal.

PID reuse is real: a stale PID file has made tools kill unrelated system processes. So a
state file records the server's (pid, create time, executable) and nothing is ever signalled
unless all three still match a live, non-zombie process. A state file that fails the check
is stale: it is reported and removed, never acted on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import compat
from .atomic import PRIVATE_MODE, write_atomic
from .errors import StateError

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        """Write atomically, readable by this user only (it holds the control token)."""
        write_atomic(path, self.to_json(), mode=PRIVATE_MODE)

    @classmethod
    def from_mapping(cls, data: Any) -> ServerState:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        state = cls(**known)
        if not isinstance(state.pid, int) or state.pid <= 0:
            raise ValueError("pid is not a positive integer")
        return state


def read_state(path: Path) -> ServerState | None:
    """The recorded state, None when there is none; StateError when it is not ours."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(
            f"cannot read {path}: {exc.strerror}", hint="check its permissions"
        ) from None
    try:
        return ServerState.from_mapping(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"{path} is not a state file this tool wrote ({exc})",
            hint=f"if no server of ours runs, delete {path}",
        ) from None


def remove_state(path: Path) -> None:
    path.unlink(missing_ok=True)


def _exe_of(proc: Any) -> str:
    """The process's executable path, or its name when the OS will not tell (access denied)."""
    import psutil

    try:
        return str(proc.exe())
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return str(proc.name())


def same_exe(recorded: str, actual: str) -> bool:
    """Compare executables by file name: paths differ through symlinks and WSL mapping."""

    def norm(name: str) -> str:
        base = Path(name.replace("\\", "/")).name.lower()
        return base[:-4] if base.endswith(".exe") else base

    return bool(recorded) and norm(recorded) == norm(actual)


def verified_process(pid: int, create_time: float, exe: str) -> Any | None:
    """A psutil.Process for ``pid`` only if it is still the very process we recorded:
    alive and not a zombie, same create time, same executable name."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(proc.create_time() - create_time) > _CREATE_TIME_SLACK:
            return None
        if not same_exe(exe, _exe_of(proc)):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def server_process(state: ServerState) -> Any | None:
    """The live server described by ``state``, or None when the state is stale."""
    return verified_process(state.pid, state.create_time, state.exe)


@contextmanager
def project_lock(path: Path, wait: float = 0.0, poll: float = 0.05) -> Iterator[None]:
    """Hold the project's lock while starting or stopping, so two never race.

    A second ``start`` waits up to ``wait`` seconds (then finds the first one's server
    running and says so) rather than failing. The lock is an OS file lock, released if the
    holder dies, not the file's existence, so a crash never leaves the project locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + wait
        while not compat.try_lock(handle):
            if time.monotonic() >= deadline:
                raise StateError(
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
        return proc.create_time(), _exe_of(proc)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
