"""The state file ``data/server.json``: what the supervisor recorded, read with distrust.

Every field's type and range is checked before a state reaches any code that signals (a
corrupt or forged file counts as untrusted: reported, never acted on); ``current_state``
then holds it against the live process with the identity check of identity.py. The project
lock keeps two starts or stops of one project from racing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from devserver.config import Settings
from devserver.errors import LockBusy, StateError, UntrustedState, too_long_hint
from devserver.server.identity import server_process
from devserver.server.marker import settings_project_id, works_in
from devserver.system import files
from devserver.system.atomic import PRIVATE_MODE, remove_file, write_atomic


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
    # "running"; "restarting" between a crash and the restart; "exited" once it ended for good
    status: str = "running"
    exit_status: str = ""
    # Linux: start in clock ticks since boot (0 in files written before it was recorded,
    # and on other systems): the identity that survives a wall-clock step.
    start_ticks: int = 0
    supervisor_start_ticks: int = 0
    # The project id of the project that started it (server/marker.py; "" in older files):
    # a state file copied into another project does not match that project.
    project: str = ""
    # Restarts after crashes (supervisor/restart.py): how many, the last crash's exit status
    # and time (epoch seconds), and the supervisor's words once it gave up.
    restarts: int = 0
    last_exit: str = ""
    last_exit_at: float = 0.0
    gave_up: str = ""

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
    "restarts": lambda v: v >= 0,
    "flavor": bool,
}
_RULE_TEXT = {
    "pid": "a positive whole number",
    "supervisor_pid": "a whole number >= 0",
    "port": "a TCP port",
    "control_port": "a TCP port or 0",
    "restarts": "a whole number >= 0",
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
            f"cannot read {path}: {exc.strerror}",
            hint=too_long_hint(exc, "check its permissions"),
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
        try:
            not_a_folder = path.parent.exists() and not path.parent.is_dir()
        except OSError:  # e.g. the path is too long even to look at
            not_a_folder = False
        why = "it is not a folder" if not_a_folder else (exc.strerror or str(exc))
        raise StateError(
            f"cannot use the data directory {path.parent}: {why}",
            hint=too_long_hint(
                exc, "set server.data_dir (INVOKE_SERVER_DATA_DIR) to a folder you can write"
            ),
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
    proc = server_process(state, also=configured_names(settings))
    # Recorded by a project at another path: this one moved there (the server works in its
    # data folder, which moved with it), or it is a copy, and the server the copied file
    # names is the original's, not ours.
    moved_or_copied = state.project and state.project != settings_project_id(settings)
    if proc is not None and moved_or_copied and not works_in(proc, settings.state_file.parent):
        return state, None
    return state, proc


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
