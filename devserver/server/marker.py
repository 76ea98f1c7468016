"""The marker every process the tool starts carries, and the scan that finds them again.

The state file is a cache, not the only link to what runs: it can be deleted, corrupted, left
behind by a copy of the project, or outlived by a server that daemonized. So the supervisor,
the server and the application's processes are started with two environment variables:

- ``DEVSERVER_PROJECT``: the project id, a digest of the resolved absolute path of the folder
  that holds the project's state (``server.data_dir``, by default ``<project>/data``). A copy
  of the project elsewhere is another project; a fresh clone at the same path is the same one.
  Two projects configured to share one data folder share one state file, so one server: the
  same id is right for them.
- ``DEVSERVER_ROLE``: what the process is to the tool (:data:`SUPERVISOR`, :data:`SERVER`,
  ``app:<name>`` for an application process, :data:`API`).

Children inherit their parent's environment, so a grandchild of an app process carries its
marker too. psutil reads another process's environment on Linux (``/proc/<pid>/environ``),
on Windows (the process's PEB) and on macOS (for the user's own processes), so the scan is
the same code everywhere; only processes of this user are readable, which is all the tool
ever starts.

One exception, on Linux: a program that rewrites its process title over the memory its
environment was in (redis-server and valkey-server do, and so does Python's setproctitle,
which Celery uses) shows an empty ``/proc/<pid>/environ``. Such a process is recognised
some other way by the caller (``unmarked`` of :func:`find_marked`: the server by its working
directory, its project's data folder, and its executable; an app process by its parent).

The scan reads every process's environment, which costs milliseconds: it belongs only to the
paths where the state file failed (missing, corrupt, stale, or a port taken), never to a
normal start or stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devserver.config import Settings

PROJECT_VAR = "DEVSERVER_PROJECT"
ROLE_VAR = "DEVSERVER_ROLE"
FLAVOR_VAR = "DEVSERVER_FLAVOR"  # the server's only: which flavor it runs
SUPERVISOR = "supervisor"
SERVER = "server"
API = "api"
APP_PREFIX = "app:"


def project_id(folder: Path | str) -> str:
    """The id of the project whose state lives in ``folder`` (16 hex digits).

    Resolved and case-folded where the file system ignores case, so every spelling of one
    folder gives one id; resolved without requiring the folder to exist (a supervisor whose
    project was deleted still computes the same id).
    """
    try:  # the built-in module: hashlib's import loads OpenSSL (4 ms on every start)
        from _blake2 import blake2b
    except ImportError:  # an interpreter built without it
        from hashlib import blake2b

    resolved = os.path.normcase(str(Path(folder).expanduser().resolve(strict=False)))
    return blake2b(resolved.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def settings_project_id(settings: Settings) -> str:
    """The project id of these settings: that of the folder holding the state file."""
    return project_id(settings.state_file.parent)


def marker_env(settings: Settings, role: str) -> dict[str, str]:
    """The variables to add to the environment of a process started in ``role``."""
    return {PROJECT_VAR: settings_project_id(settings), ROLE_VAR: role}


def app_role(name: str) -> str:
    """The role of the application process called ``name`` (a Procfile entry)."""
    return APP_PREFIX + name


def marker_of(proc: Any) -> tuple[str, str] | None:
    """(project id, role) that ``proc`` carries; None when it carries none or is unreadable."""
    import psutil  # on demand: only the scan and the identity check need it

    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return None
    project = env.get(PROJECT_VAR)
    if not project:
        return None
    return project, env.get(ROLE_VAR, "")


def _role_matches(role: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if wanted.endswith(":"):  # a prefix: "app:" matches every app process
        return role.startswith(wanted)
    return role == wanted


def find_marked(
    project: str,
    role: str | None = None,
    unmarked: Callable[[Any], str | None] | None = None,
) -> list[Any]:
    """The live processes (psutil.Process) carrying ``project``'s marker, oldest first.

    ``role`` None: every role; ``"app:"`` (ends with a colon): every role with that prefix;
    otherwise that role exactly. Zombies, this process and its ancestors are left out (an
    ``invoke`` run from an app process's shell inherits the marker, and must never stop
    itself). ``unmarked``: asked for a process whose environment shows no marker at all,
    returns its role in this project or None (see :func:`role_of` for why).
    """
    import psutil  # on demand: see the module docstring

    me = psutil.Process()
    skip = {0, me.pid}
    try:
        skip.update(parent.pid for parent in me.parents())
    except psutil.Error:
        pass
    found: list[Any] = []
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        marker = marker_of(proc)
        if marker is None and unmarked is not None:
            guessed = unmarked(proc)
            marker = (project, guessed) if guessed is not None else None
        if marker is None or marker[0] != project or not _role_matches(marker[1], role):
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            proc.create_time()  # cached by psutil: later signals re-check it (PID reuse)
        except psutil.Error:
            continue
        found.append(proc)
    found.sort(key=lambda p: p.create_time())
    return found


def works_in(proc: Any, folder: Path | str) -> bool:
    """Is ``proc``'s working directory ``folder`` or inside it (a deleted folder counts:
    psutil strips Linux's " (deleted)")? False when it cannot be read."""
    base = os.path.normcase(str(Path(folder).resolve(strict=False))) + os.sep
    try:
        cwd = os.path.normcase(str(proc.cwd()))
    except Exception:
        return False
    return (cwd + os.sep).startswith(base)


def belongs_to(proc: Any, project: str) -> bool:
    """Does ``proc`` carry no marker of another project? (A process started before markers
    existed carries none: it is judged by the rest of the identity.)"""
    marker = marker_of(proc)
    return marker is None or marker[0] == project
