"""The application's environment as shell text, and a one-off command run inside it.

``eval "$(invoke env --shell)"`` must reproduce every value exactly, whatever it holds (spaces,
``$``, quotes, newlines): each value is single-quoted the POSIX way (shlex.quote), which no
shell expands. ``invoke run -- CMD ARGS`` (like ``honcho run``) needs the words exactly as the
shell passed them, but Invoke joins everything after ``--`` with spaces into one string, so the
words are taken from ``sys.argv`` instead (see :func:`words_after_dashdash`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from devserver.errors import ConfigError, DevServerError
from devserver.system import appproc

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def export_lines(values: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines for POSIX sh, bash and zsh."""
    for name in values:
        if not _NAME_RE.match(name):
            raise ConfigError(f"{name!r} cannot be a shell variable name")
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def words_after_dashdash(argv: Sequence[str], task_names: Sequence[str]) -> list[str] | None:
    """The words after the ``--`` that follows one of ``task_names`` in ``argv``; None if none.

    Invoke stops parsing at the first ``--``; everything after it is the remainder, here kept
    as separate words with their quoting intact.
    """
    seen_task = False
    for index, word in enumerate(argv):
        if word in task_names:
            seen_task = True
        elif word == "--":
            return list(argv[index + 1 :]) if seen_task else None
    return None


class CommandNotFound(DevServerError):
    """``invoke run``'s command does not exist."""


def run_command(words: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """Run one command (argv, no shell) in the foreground in ``env``; return its exit code.

    The terminal stays the command's (stdin, Ctrl+C): like ``invoke api``, we wait while it
    handles Ctrl+C itself and pass its code on.
    """
    program = shutil.which(words[0], path=env.get("PATH")) or words[0]
    try:
        proc = subprocess.Popen([program, *words[1:]], env=dict(env), cwd=str(cwd))
    except OSError as exc:
        raise CommandNotFound(
            f"cannot run {words[0]!r}: {exc.strerror or exc}",
            hint="check the command name (is it installed, and on PATH?)",
        ) from None
    return appproc.wait_relaying(proc)[0]
