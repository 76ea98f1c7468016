"""Choosing Garnet's build for the installed .NET runtime (its archive holds one per version).

``dotnet --list-runtimes`` says which runtimes the machine has; the archive has a ``netN.0/``
folder per framework, and a framework-dependent app runs only on its own major runtime.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable

from devserver.errors import FetchError

Runner = Callable[[list[str]], str]
_RUNTIME_RE = re.compile(r"^Microsoft\.NETCore\.App\s+(\d+)\.\d+", re.MULTILINE)
_NET_DIR_RE = re.compile(r"^net(\d+)\.\d+$")


def run_quietly(argv: list[str]) -> str:
    """stdout of a short command, or "" when it is missing or fails."""
    try:
        out = subprocess.run(
            argv, capture_output=True, timeout=20, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.decode("utf-8", "replace")


def dotnet_majors(run: Runner = run_quietly) -> set[int]:
    """Major versions of the installed .NET runtimes (``Microsoft.NETCore.App`` lines)."""
    return {int(m) for m in _RUNTIME_RE.findall(run(["dotnet", "--list-runtimes"]))}


def pick_dotnet_build(candidates: Iterable[str], majors: set[int]) -> str:
    """The candidate under the newest ``netN.0/`` folder whose runtime is installed.

    A framework-dependent .NET app runs only on its own major runtime by default
    (roll-forward stops at minor versions), so net8.0 needs .NET 8 and net10.0 needs .NET 10.
    """
    builds: dict[int, str] = {}
    plain = []
    for name in candidates:
        versions = [int(m.group(1)) for part in name.split("/") if (m := _NET_DIR_RE.match(part))]
        if versions:
            builds[versions[-1]] = name
        else:
            plain.append(name)
    if not builds:
        return min(plain, key=len)
    usable = sorted(v for v in builds if v in majors)
    if usable:
        return builds[usable[-1]]
    wanted = " or ".join(f".NET {v}" for v in sorted(builds))
    found = ", ".join(f".NET {v}" for v in sorted(majors)) or "no .NET runtime"
    raise FetchError(
        f"Garnet needs the {wanted} runtime, but this machine has {found}",
        hint=f"install the {wanted} runtime (https://dotnet.microsoft.com/download), "
        "then run fetch again",
    )
