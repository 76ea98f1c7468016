"""The caller's side of the supervisor: its command line, its environment, spawning it.

``invoke start`` calls :func:`launch_supervisor` before it imports the rest of the library,
so the new interpreter's start-up overlaps the start's own checks; this module imports
little for that reason. The spec follows on the supervisor's stdin (``wire.encode_spec``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from devserver.errors import StartError
from devserver.system import host, spawn

# The folder that holds the devserver package (this file is devserver/supervisor/launch.py):
# the supervisor runs there, so its import finds this very copy of the package even where
# our sys.path held it only as "" (which PYTHONPATH does not carry).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch_supervisor(
    marker: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], bool]:
    """Spawn a detached supervisor that waits for its spec on stdin; (process, broke_away).

    ``invoke start`` calls this before it imports the rest of the library, so the new
    interpreter's start-up overlaps the start's own checks; closing stdin without a spec
    makes the supervisor exit without starting anything. ``INVOKE_*`` variables (a password
    may be among them) are not passed on: the supervisor gets everything from its spec. Its
    stdout is a pipe for its start-up report (see entry.py). ``marker``: the project's
    marker variables (server/marker.py), so a process scan finds the supervisor too.
    """
    env = supervisor_env(marker)
    command = supervisor_command()
    python = command[0]
    try:
        return spawn.spawn_detached(
            command,
            cwd=PACKAGE_PARENT,  # so the import finds this very copy of the package
            stdin=subprocess.PIPE,
            env=env,
            stdout=subprocess.PIPE,
        )
    except OSError as exc:
        raise python_error(python, exc) from None


def python_error(python: str, exc: OSError) -> Exception:
    """The StartError for a supervisor interpreter that cannot be run (spawned or exec'd)."""
    return StartError(
        f"cannot run the supervisor's Python {python}: {exc.strerror or exc}",
        hint="check that this user can run that interpreter (and the folders above it)",
    )


def supervisor_command(python: str = "") -> list[str]:
    """The detached supervisor's command line (run it with cwd :data:`PACKAGE_PARENT`).

    POSIX: the lean bootstrap (server and state before the big imports); Windows: entry.py
    (no fork there). ``-c`` rather than ``-m`` skips runpy.
    """
    entry = (
        "supervisor.entry import run; run"
        if not host.has_fork()
        else "supervisor.bootstrap import main; main"
    )
    return [python or spawn.python_for_background(), "-S", "-c", f"from devserver.{entry}()"]


def supervisor_env(marker: Mapping[str, str] | None = None) -> dict[str, str]:
    """The supervisor's environment: ours without ``INVOKE_*`` (a password may be among
    them; the spec carries all it needs), and our sys.path as PYTHONPATH: it runs with -S,
    which skips the site module (milliseconds on ``invoke start``'s critical path), so the
    same packages are found this way."""
    env = spawn.without_prefixes(os.environ, ["INVOKE_"])
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(marker or {})
    return env
