"""What a start checks before it launches anything, and the supervisor's launch spec.

Shared by the background start (start.py) and ``start --foreground`` (supervisor/foreground.py):
a stale or untrusted state file is removed, the binary chosen, and a newer version's data, a
taken port or an unwritable folder refused before any process is spawned.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devserver.catalog import build_launch, get_flavor
from devserver.config import Settings
from devserver.errors import PortInUse, StartError, too_long_hint
from devserver.fetch.binaries import Binary
from devserver.fetch.choice import choose_binary
from devserver.server import datadir
from devserver.server.marker import FLAVOR_VAR, SERVER, marker_env, settings_project_id
from devserver.server.ports import check_port_free
from devserver.server.state import ServerState, remove_state, untrusted_state
from devserver.supervisor.wire import Spec
from devserver.system import files, wsl
from devserver.system.atomic import check_writable


def _ensure_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
    except OSError as exc:
        raise StartError(
            f"the {what} directory {path} is not writable ({exc.strerror})",
            hint=_folder_hint(exc, what),
        ) from None


def _refuse_if_untracked(settings: Settings) -> None:
    """untracked.py's check, imported only on these fault paths (a normal start never
    scans, nor loads the scan)."""
    from devserver.server.untracked import refuse_if_untracked  # fault paths only

    refuse_if_untracked(settings)


def _folder_hint(exc: OSError, what: str) -> str:
    """What to do about a folder that cannot be used, by the reason the OS gave."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"fix its permissions or set server.{what}_dir"
    return too_long_hint(
        exc, f"set server.{what}_dir to a folder you can write", f"server.{what}_dir"
    )


def build_spec(settings: Settings, binary: Binary) -> Spec:
    """The supervisor's launch spec (plain values; it carries the password, so it goes on
    stdin)."""
    flavor = get_flavor(binary.flavor)
    launch = build_launch(flavor, settings, str(binary.path), os.environ)
    argv, env = wsl.launch(
        list(launch.argv), dict(launch.env), [flavor.password_env], binary.via_wsl
    )
    # The marker (marker.py): the process scan finds this server when the state file fails.
    env.update(marker_env(settings, SERVER), **{FLAVOR_VAR: flavor.name})
    stop_save, terminate = flavor.stop_plan(save=True)
    return {
        "argv": argv,
        "public_argv": argv,
        "env": env,
        "cwd": str(settings.flavor_data_dir(flavor.name)),
        "flavor": flavor.name,
        "version": binary.version,
        "binary": str(binary.path),
        "host": settings.host,
        "port": settings.port,
        "state_file": str(settings.state_file),
        "log_file": str(settings.log_file(flavor.name)),
        "log_max_bytes": settings.log_max_bytes,
        "log_backups": settings.log_backups,
        "password": settings.password,
        "stdin_config": launch.stdin_config,
        "secret_file": list(launch.secret_file) if launch.secret_file else None,
        "stop_save": stop_save,
        "stop_nosave": flavor.stop_plan(save=False)[0],
        "terminate_after_stop": terminate,
        "owner_pid": 0,
        "owner_create_time": 0.0,
        "owner_start_ticks": 0,
        "owner_folder": "",
        "project": settings_project_id(settings),
        "stop_timeout": settings.stop_timeout,
        "restart": settings.restart,
        "restart_limit": settings.restart_limit,
        "restart_window": settings.restart_window,
        "startup_timeout": settings.startup_timeout,
        "lock_file": str(settings.lock_file),
    }


@dataclass(frozen=True)
class Prepared:
    """A start that passed every check: what to launch, and what the caller reports."""

    spec: Spec
    binary: Binary
    data_dir: Path
    stale: ServerState | None
    warnings: tuple[str, ...] = ()
    log_writable: bool = True  # else no marker will appear in it: the echo must not wait


def prepare(
    settings: Settings,
    stale: ServerState | None,
    on_binary: Callable[[Binary], None] | None = None,
) -> Prepared:
    """Everything a start checks before launching (call with the project lock held).

    Shared by the background start and ``start --foreground``, which have already found
    that no server of ours runs (``stale`` is the state file's content if one was left):
    removes the stale state, chooses the binary, refuses data written by a newer version, a
    taken port, unwritable folders.
    """
    warnings = []
    untrusted = untrusted_state(settings) if stale is None else ""
    if stale is not None or untrusted:
        # The state file failed: does this project's server run untracked all the same?
        _refuse_if_untracked(settings)
        try:
            remove_state(settings.state_file)
        except OSError as exc:
            raise StartError(
                f"cannot remove the stale state file {settings.state_file} ({exc.strerror})",
                hint=f"fix the permissions of {settings.data_dir} (an immutable folder?)",
            ) from None
    if untrusted:
        warnings.append(f"replaced an untrusted state file: {untrusted}")
    binary = choose_binary(settings)
    if on_binary:
        on_binary(binary)
    wsl.before_start(settings, binary.flavor, binary.via_wsl)  # first: a hint, not a crash
    spec = build_spec(settings, binary)
    data_dir = settings.flavor_data_dir(binary.flavor)
    datadir.check_compatible(data_dir, binary.flavor, binary.version)
    try:
        check_port_free(settings.host, settings.port)
    except PortInUse:
        _refuse_if_untracked(settings)  # our own server, its state file lost: say so
        raise
    _ensure_writable(data_dir, "data")
    # The state file's folder too: a server whose state cannot be recorded would be
    # untracked (the supervisor stops it if the write fails anyway, e.g. on a full disk).
    _ensure_writable(settings.state_file.parent, "data")
    for private in (settings.state_file.parent, data_dir):  # the data is the user's alone
        files.make_private_dir(private)
    _ensure_writable(settings.log_dir, "log")
    log_warnings = _log_warnings(Path(spec["log_file"]))
    warnings.extend(log_warnings)
    return Prepared(spec, binary, data_dir, stale, tuple(warnings), not log_warnings)


def _log_warnings(log_file: Path) -> list[str]:
    """A log file we cannot append to is not fatal (the server runs; its lines are dropped
    and counted), but the person must know: nothing they see later comes from it."""
    try:
        with open(log_file, "ab"):
            pass
    except OSError as exc:
        return [
            f"the log file {log_file} cannot be written ({exc.strerror}): the server runs, "
            "but its output is lost until that is fixed"
        ]
    return []
