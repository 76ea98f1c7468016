"""What a test needs to know about the system the suite runs on (Linux or Windows).

Why: the suite also runs under a Windows CPython (``python -m tests.winpython.wine pytest``,
and the GitHub workflow). A test skips there only where Windows lacks the feature itself, and
says which; a fake server written as a Python script runs through ``python.exe`` there
(Windows starts no ``#!`` script).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

WINDOWS = sys.platform == "win32"


def needs_posix(feature: str) -> pytest.MarkDecorator:
    """Skip on Windows, which lacks ``feature`` (a POSIX signal, fork, a pty, mode bits)."""
    return pytest.mark.skipif(WINDOWS, reason=f"Windows lacks {feature}")


def script_argv(script: Path) -> list[str]:
    """How to run a Python script written with a ``#!`` line: itself, or python.exe on it."""
    return [sys.executable, str(script)] if WINDOWS else [str(script)]


def write_script(path: Path, body: str) -> list[str]:
    """A Python program at ``path`` (``#!`` this interpreter, executable); its argv."""
    path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    path.chmod(0o755)
    return script_argv(path)


def exe_or_none(proc: Any) -> str | None:
    """psutil's ``exe()``, or None where the OS hides it (psutil under Wine: WinError 87)."""
    try:
        return str(proc.exe())
    except OSError:
        return None


def _under_wine() -> bool:
    """Whether this Windows is Wine (``python -m tests.winpython.wine pytest``)."""
    if not WINDOWS:
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


UNDER_WINE = _under_wine()
