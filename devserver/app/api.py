"""Running the application's API command (``invoke api``) in the foreground.

It runs with REDIS_URL and api.env exported, Ctrl+C is its own to handle, and its exit code is
passed on. Like the rest of the library this module never prints; platform differences (shell,
Ctrl+C) live in system/appproc.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from devserver.errors import DevServerError
from devserver.system import appproc, kill, venv


class ApiError(DevServerError):
    """The API command could not be started at all (not: it exited non-zero)."""


@dataclass(frozen=True)
class ApiResult:
    """The API command's exit code (ready for sys.exit) and whether Ctrl+C stopped it."""

    code: int
    interrupted: bool


Spawn = Callable[[str, Mapping[str, str], Path], "subprocess.Popen[bytes]"]


def run_api(
    command: str,
    extra_env: Mapping[str, str],
    cwd: Path,
    base_env: Mapping[str, str] | None = None,
    spawn: Spawn = appproc.spawn_foreground,
    on_started: Callable[[int], None] = lambda pid: None,
) -> ApiResult:
    """Run the API command in the foreground until it exits; return its exit code.

    ``on_started`` gets the API's pid once it runs (``invoke api`` records it for ``down``).

    Ctrl+C is the API's to handle (appproc.relay_interrupts): we keep waiting so its own
    graceful shutdown runs, and return whatever code it ends with. The server is not touched:
    stopping the API must not throw away the queue.
    """
    env = venv.scripts_first(os.environ if base_env is None else base_env)
    env.update(extra_env)
    try:
        proc = spawn(venv.own_python(command), env, cwd)
    except OSError as exc:
        raise ApiError(
            f"cannot run the API command {command!r}: {exc.strerror or exc}",
            hint="check api.command in invoke.yaml (or INVOKE_API_COMMAND)",
        ) from None
    try:
        on_started(proc.pid)
    except BaseException:  # unrecorded, it would outlive us unseen by `invoke down`
        import psutil  # a slow import: needed only on this rare path

        with suppress(psutil.Error):
            kill.kill_tree(psutil.Process(proc.pid))
        proc.wait()
        raise
    code, interrupted = appproc.wait_relaying(proc)
    return ApiResult(code, interrupted=interrupted)
