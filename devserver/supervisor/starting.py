"""Starting the server through subprocess and supervising it, and its password file.

The Windows supervisor and ``start --foreground`` spawn here (:func:`supervise`; no fork on
Windows); the POSIX bootstrap forks and execs the server itself (system/posix.py) and uses
only the password file's helpers and :func:`spawn_failed`. What is not needed before the
spawn is imported in the function that needs it: the server starts first, and the rest
loads while it boots.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from devserver.supervisor.wire import Spec
from devserver.system import lifetime, spawn

if TYPE_CHECKING:
    from devserver.supervisor.core import Supervisor


def write_secret(spec: Spec) -> tuple[str, str]:
    """Create the flavor's password file in a private temp dir: (dir, file path) or ("", "")."""
    if not spec["secret_file"]:
        return "", ""
    import tempfile  # 6 ms, for Garnet's file only: every other start skips it

    name, content = spec["secret_file"]
    secret_dir = tempfile.mkdtemp(prefix="devserver-")  # 0700: only this user can enter it
    path = os.path.join(secret_dir, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return secret_dir, path


def spawn_server(spec: Spec, secret_path: str = "") -> subprocess.Popen[bytes]:
    """Start the server: stdout and stderr on one pipe, its own process group, no window.

    The password reaches it through its environment, its stdin (Redis reads ``-`` as a
    config file) or a private file, never its argv.
    """
    argv = [secret_path if a == "{secret_file}" else a for a in spec["argv"]]
    os.makedirs(spec["cwd"], exist_ok=True)
    proc = subprocess.Popen(
        argv,
        cwd=spec["cwd"],
        env=spec["env"],
        stdin=subprocess.PIPE if spec["stdin_config"] else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **spawn.server_popen_kwargs(),
        **lifetime.parent_death_kwargs(),  # before any thread of ours exists
    )
    if spec["stdin_config"] and proc.stdin is not None:
        try:
            proc.stdin.write(spec["stdin_config"].encode("utf-8"))
            proc.stdin.close()
        except OSError:
            pass  # the server died at once; its exit is reported by the supervisor
    return proc


def spawn_failed(spec: Spec, exc: OSError, secret_dir: str = "") -> int:
    """The server could not be executed: say so in its log (``start`` shows the log's tail)
    and exit 127, as a shell does for a command it cannot run."""
    from pathlib import Path  # here: the Windows entry imports this module before its spawn

    from devserver.supervisor.logs import RotatingWriter

    remove_secret(secret_dir)
    log = RotatingWriter(Path(spec["log_file"]), spec["log_max_bytes"], spec["log_backups"])
    if spawn.blocked_by_app_control(exc):
        message, hint = spawn.app_control_message(spec["binary"])
        log.marker(f"could not start it: {message}; {hint}")
    else:
        log.marker(f"could not start {spec['binary']}: {exc}")
    log.close()
    return 127


def remove_secret(secret_dir: str) -> None:
    """Remove the password file's private folder (Garnet), if there is one."""
    if secret_dir:
        import shutil  # here: the Windows entry imports this module before its spawn

        shutil.rmtree(secret_dir, ignore_errors=True)


def supervise(
    spec: Spec,
    console: Callable[[str], None] | None = None,
    setup: Callable[[Supervisor], None] | None = None,
    on_recorded: Callable[[], object] | None = None,
) -> int:
    """Spawn the server and supervise it until it exits; return its exit code.

    Used by the detached supervisor on Windows and, with ``console``, by ``start
    --foreground``. ``on_recorded`` runs once the state file is written. The password file,
    if any, is removed however this ends.
    """
    secret_dir, secret_path = write_secret(spec)
    try:
        try:
            proc = spawn_server(spec, secret_path)
        except OSError as exc:
            return spawn_failed(spec, exc)
        # Here, after the spawn: the supervisor's own modules load while the server boots.
        from devserver.supervisor.core import Supervisor

        supervisor = Supervisor(spec, proc, console, secret_dir, popen=spawn_server)
        if setup is not None:
            setup(supervisor)
        return supervisor.run(on_recorded)
    finally:
        remove_secret(secret_dir)
