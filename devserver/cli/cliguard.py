"""One line instead of a traceback for configuration errors Invoke raises before a task runs
(and nothing for a reader that left early from Invoke's own output, ``invoke --list | head``).

Invoke imports tasks.py first and only then merges the project's invoke.yaml, a runtime
config (``-f``) and the ``INVOKE_*`` environment into its config; a YAML syntax error, a
section given as a string where invoke.yaml has a mapping, an environment value Invoke
cannot cast (``INVOKE_SERVER_PORT=abc`` when some config file has the port unquoted, or any
value for a list or mapping key) then escape from Invoke's own code as a traceback. The tasks
install :func:`install` as the interpreter's excepthook, which recognises these (by the
exception's module and the frames it passed through, so this module never imports invoke)
and prints the usual ``error:``/``hint:`` pair; the exit code stays 1. Anything else goes to
the previous hook unchanged. What Invoke reads before tasks.py is imported (the user's
``~/.invoke.yaml`` and ``/etc/invoke.yaml``) cannot be caught here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

Report = Callable[[str, str], None]
_HINT = "check invoke.yaml, any config file given with -f, and your INVOKE_* variables"


def _frames(tb: TracebackType | None) -> list[Any]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _in_invoke(frame: Any, module: str, function: str) -> bool:
    name = frame.f_code.co_filename.replace("\\", "/")
    return f"/invoke/{module}.py" in name and frame.f_code.co_name == function


def describe(exc: BaseException, tb: TracebackType | None) -> tuple[str, str] | None:
    """(message, hint) for a configuration error raised inside Invoke, else None."""
    kind = type(exc)
    module, name = kind.__module__, kind.__name__
    frames = _frames(tb)
    if "yaml" in module and hasattr(exc, "problem"):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
        return f"invalid YAML in {where}: {exc.problem}", _HINT
    if module.startswith("invoke") and name == "AmbiguousMergeError":
        keys = [f.f_locals.get("key") for f in frames if _in_invoke(f, "config", "merge_dicts")]
        dotted = ".".join(str(k) for k in keys if k is not None) or "a config section"
        return (
            f"invalid config: {dotted} must be a mapping (a section of keys), as in invoke.yaml",
            _HINT,
        )
    setters = [f for f in frames if _in_invoke(f, "env", "_path_set")]
    if setters:
        key_path = [str(k) for k in setters[-1].f_locals.get("key_path", [])]
        dotted, var = ".".join(key_path), "INVOKE_" + "_".join(key_path).upper()
        value = setters[-1].f_locals.get("value")
        if name == "UncastableEnvVar":
            return (
                f"{var} cannot set {dotted}: Invoke reads no list or mapping from the environment",
                "unset it, and set that key in invoke.yaml instead",
            )
        if isinstance(exc, (ValueError, TypeError)):
            return (
                f"invalid value for {dotted}: {value!r} from {var} (Invoke converts it to the "
                "type a config file gives that key, unquoted)",
                "fix the variable, or quote that value in your invoke.yaml so the tool checks it",
            )
    return None


def install(report: Report) -> None:
    """Route Invoke's configuration errors to ``report``; everything else as before."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, BrokenPipeError):  # `invoke --list | head -1`: the reader left
            reader_left()  # the exit code stays 1
            return
        try:
            described = describe(exc, tb)
        except Exception:
            described = None
        if described is None:
            previous(kind, exc, tb)
        else:
            report(*described)

    sys.excepthook = hook


def reader_left() -> None:
    """stdout's reader is gone (``| head``, ``| grep -q``): no traceback, nothing more to say.

    stdout is pointed at the null device, so Python's flush at exit does not fail again.
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
