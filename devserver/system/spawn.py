"""How the supervisor and the server are spawned: creation flags, a detached start that
outlives the terminal, the interpreter and environment they get.

Process creation is where Windows and POSIX differ most (consoles, process groups, job
objects, a venv's redirector); the flag values are the Win32 API's, defined here because
subprocess exposes them only on Windows and the unit tests need them on Linux too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from devserver.system import host

if TYPE_CHECKING:
    from pathlib import Path

# Windows process-creation flags (values from the Win32 API; subprocess exposes them only on
# Windows, and the unit tests need them on Linux too).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
CREATE_NO_WINDOW = 0x08000000


def spawn_detached(
    argv: Sequence[str],
    cwd: str | Path,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
) -> tuple[subprocess.Popen[bytes], bool]:
    """Start the supervisor so it outlives this terminal; return (process, broke_away).

    POSIX: a new session, so the terminal's hang-up and Ctrl+C never reach it.
    Windows: CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP, *not* DETACHED_PROCESS. Why: a
    venv's python.exe is a redirector that starts the real interpreter with creation flags 0
    (CPython PC/venvlauncher.c ``launch()``; PC/launcher.c ``run_child()`` in 3.7-3.12), so the
    child inherits the redirector's console. A DETACHED_PROCESS redirector has none to pass
    on, and Windows then gives the real interpreter a new, *visible* console, whose close
    button ends the supervisor. With CREATE_NO_WINDOW the process gets a console without a
    window, which its children inherit: nothing appears, and no CTRL_CLOSE can reach it (the
    person's own terminal is another console). The new process group keeps Ctrl+C in that
    hidden console from reaching the server. :func:`python_for_background` also skips the
    redirector where it can. CREATE_BREAKAWAY_FROM_JOB lets it outlive a launcher's job
    object (CI agents, some IDEs); a job that forbids breakaway makes CreateProcess fail with
    access denied: retry without the flag and report ``broke_away=False`` so the caller can
    warn.
    """
    common: dict[str, Any] = {
        "cwd": str(cwd),
        "stdin": stdin,
        "stdout": stdout,
        "stderr": subprocess.DEVNULL,
        "close_fds": True,
        "env": None if env is None else dict(env),
    }
    if not host.WINDOWS:
        return subprocess.Popen(list(argv), start_new_session=True, **common), True
    flags = CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    try:
        proc = subprocess.Popen(
            list(argv), creationflags=flags | CREATE_BREAKAWAY_FROM_JOB, **common
        )
        return proc, True
    except PermissionError:
        return subprocess.Popen(list(argv), creationflags=flags, **common), False


def server_popen_kwargs() -> dict[str, Any]:
    """Popen options for the server the supervisor starts.

    Its own process group everywhere, so a Ctrl+C in a terminal (foreground mode) reaches the
    supervisor, which stops the server gracefully, not the server directly. On Windows
    CREATE_NO_WINDOW gives the server a console of its own without a window: in foreground
    mode the supervisor's console is the person's terminal (whose close must not kill the
    server before the supervisor stopped it), and in the background the supervisor's console
    is hidden anyway. Never DETACHED_PROCESS: it would make CREATE_NO_WINDOW be ignored, and
    a console server started without a console opens a visible window.
    """
    if host.WINDOWS:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def python_for_background() -> str:
    """The interpreter that runs the supervisor: ours, minus a venv's redirector on Windows.

    A Windows venv's python.exe only starts the base interpreter (``sys._base_executable``)
    as its child, inside a kill-on-close job (PC/venvlauncher.c): an extra process whose pid
    Popen reports, and whose death kills the supervisor. The supervisor runs with ``-S`` and
    our sys.path in PYTHONPATH, so the base interpreter finds the venv's packages directly;
    then Popen's pid is the supervisor's own. POSIX venvs use a symlink: nothing to skip.
    """
    if host.WINDOWS and sys.prefix != sys.base_prefix:
        base = getattr(sys, "_base_executable", "")
        if base and os.path.isfile(base):
            return str(base)
    return sys.executable


# ERROR_SYSTEM_INTEGRITY_POLICY_VIOLATION (winerror.h): "An Application Control policy has
# blocked this file." What CreateProcess fails with when Smart App Control (Windows 11) or an
# organisation's App Control for Business (WDAC) policy refuses an executable, typically an
# unsigned one such as the community Redis builds.
APP_CONTROL_BLOCKED = 4551


def blocked_by_app_control(exc: BaseException) -> bool:
    """Did Windows refuse to run an executable because of an Application Control policy?"""
    return host.WINDOWS and getattr(exc, "winerror", None) == APP_CONTROL_BLOCKED


def app_control_message(path: str) -> tuple[str, str]:
    """(message, hint) for an executable Windows' Application Control refused to run."""
    return (
        f"Windows blocked {path}: Smart App Control (or an App Control for Business policy) "
        "does not allow this executable, typically because it is not signed (WinError 4551)",
        "Smart App Control has no per-file exception (Windows Security > App & browser "
        "control > Smart App Control shows whether it is on); a policy set by your "
        "organisation is its administrators' to change; or set server.binary to a build "
        "the policy allows",
    )


# Set for the foreground start re-run outside the redirector's job: it must not re-run again.
OUTSIDE_JOB_ENV = "DEVSERVER_FOREGROUND_OUTSIDE_JOB"


def foreground_outside_launcher_job() -> int | None:
    """Windows venv: run this very command (``start --foreground``) again under the base
    interpreter and return its exit code; None: run it in this process (everywhere else).

    Why: a venv's python.exe is a redirector (CPython PC/venvlauncher.c) that runs the real
    interpreter, this process, in a job with KILL_ON_JOB_CLOSE, and its console handler
    returns TRUE for every event. On CTRL_CLOSE_EVENT a handler that returns TRUE lets
    Windows end the process at once (Microsoft's docs of HandlerRoutine), so the redirector
    ends, its job closes, and this process is killed before the foreground supervisor's
    graceful stop (no SHUTDOWN SAVE, the state file left behind; python/cpython#96289).
    The job has SILENT_BREAKAWAY_OK: a process this one starts is outside it, and only its own
    console handler decides. It shares this console, so Ctrl+C and the close event reach it;
    this process only waits, ignoring Ctrl+C (the child stops the server and then ends).
    The packages are found as the supervisor's are: our sys.path as PYTHONPATH.
    """
    if not host.WINDOWS or os.environ.get(OUTSIDE_JOB_ENV):
        return None
    base = python_for_background()
    argv = list(getattr(sys, "orig_argv", []))
    if base == sys.executable or len(argv) < 2:
        return None  # not behind a venv redirector, or no command line to repeat
    env = dict(os.environ)
    env[OUTSIDE_JOB_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        proc = subprocess.Popen([base, *argv[1:]], env=env)
    except OSError:
        return None  # cannot run the base interpreter: run here, as before
    names = [n for n in ("SIGINT", "SIGBREAK") if hasattr(signal, n)]
    before = {n: signal.signal(getattr(signal, n), signal.SIG_IGN) for n in names}
    try:
        return proc.wait()
    finally:
        for name, handler in before.items():
            signal.signal(getattr(signal, name), handler)


def without_prefixes(env: Mapping[str, str], prefixes: Sequence[str]) -> dict[str, str]:
    """A copy of an environment minus variables whose names start with these prefixes.

    Dragonfly treats any unknown ``DFLY_*`` variable as a fatal error, and ``INVOKE_*`` ones
    (``INVOKE_SERVER_PASSWORD``!) have no business in a server's or supervisor's environment.
    Case-insensitive, as Windows environment names are.
    """
    upper = tuple(p.upper() for p in prefixes)
    return {k: v for k, v in env.items() if not k.upper().startswith(upper)}
