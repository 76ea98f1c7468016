"""The tool's own Python and scripts for the application's commands, whether or not its
venv is activated."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping

from devserver.system import host

_PYTHON_WORD = re.compile(r"^(\s*)(python(?:3(?:\.\d+)?)?(?:\.exe)?)(?=\s|$)", re.IGNORECASE)


def own_python(command: str, executable: str | None = None) -> str:
    """``python -m myapp.api`` -> the interpreter running this tool (the venv's).

    Why: the README's example command says ``python``, and on a machine where the venv is not
    activated (start_dev.sh, ``.venv/bin/invoke``) PATH's ``python`` is the system one, which
    lacks the venv's packages. Only a leading ``python``/``python3``/``python3.N`` word is
    replaced; quoting follows the shell that will read the line (cmd.exe on Windows).
    """
    match = _PYTHON_WORD.match(command)
    if not match:
        return command
    exe = executable or sys.executable
    if not exe:
        return command
    return command[: match.start(2)] + shell_quote(exe) + command[match.end(2) :]


def shell_quote(path: str) -> str:
    """A path as one word for the shell that will read the line: cmd.exe on Windows (double
    quotes; a path cannot hold one), a POSIX shell elsewhere. ``C:\\Program Files\\...`` or a
    user name with a space would otherwise split into two words."""
    return f'"{path}"' if host.WINDOWS else shlex.quote(path)


def scripts_first(env: Mapping[str, str], scripts: str | None = None) -> dict[str, str]:
    """A copy of ``env`` whose PATH starts with the venv's scripts folder.

    So ``invoke``, ``uvicorn`` or ``python`` inside a shell command resolve to the venv's,
    activated or not. Windows: the folder is ``Scripts``, the separator ``;`` and the
    variable's name is case-insensitive (``Path`` is common), so the existing key is reused.
    """
    import sysconfig  # not loaded yet: `invoke up` imports this module before it starts the server

    folder = scripts or sysconfig.get_path("scripts")
    out = dict(env)
    if not folder:
        return out
    key = "PATH"
    if host.WINDOWS:
        key = next((k for k in out if k.upper() == "PATH"), "Path")
    sep = ";" if host.WINDOWS else ":"
    parts = [p for p in out.get(key, "").split(sep) if p]

    def norm(entry: str) -> str:
        return entry.rstrip("\\/").lower() if host.WINDOWS else entry.rstrip("/")

    parts = [folder] + [p for p in parts if norm(p) != norm(folder)]
    out[key] = sep.join(parts)
    return out
