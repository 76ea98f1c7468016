"""Moving an extracted release into ``bin/`` so that bin/ is either all old or all new.

Everything is staged first (inside bin/ under dot-names, so the final step is a same-directory
rename), then swapped in with ``os.replace``, executable first and manifest last. If any step
fails, the swaps already made are undone and the staged files removed: a failed fetch leaves
bin/ exactly as it was. Also here: choosing the executable among several builds (Garnet ships
one per .NET version) by asking ``dotnet`` which runtimes are installed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from devserver.errors import FetchError
from devserver.system.atomic import check_writable

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


def probe_writable(bin_dir: Path) -> None:
    """Fail before downloading when bin/ (or the folder that will hold it) is not writable."""
    where = bin_dir if bin_dir.is_dir() else bin_dir.parent
    try:
        check_writable(where)
    except OSError as exc:
        raise FetchError(
            f"cannot write to {where}: {exc.strerror or exc}",
            hint="fix its permissions or set server.bin_dir elsewhere",
        ) from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def install(
    bin_dir: Path, items: list[tuple[Path, str]], manifest_name: str, manifest: dict[str, Any]
) -> None:
    """Put each (source, name under bin/) in place, then the manifest, all or nothing.

    ``source`` is a file or folder in the work directory; it is moved (not copied) when it is
    on the same file system, so installing a large binary costs a rename.
    """
    created = not bin_dir.exists()
    token = secrets.token_hex(4)
    staged: list[tuple[Path, Path]] = []
    swapped: list[tuple[Path, Path | None]] = []
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
        for source, name in items:
            temp = bin_dir / f".{name}.new-{token}"
            shutil.move(str(source), str(temp))
            staged.append((temp, bin_dir / name))
        temp_manifest = bin_dir / f".{manifest_name}.new-{token}"
        staged.append((temp_manifest, bin_dir / manifest_name))
        write_json(temp_manifest, manifest)
        for temp, final in staged:
            backup = None
            if final.exists() or final.is_symlink():
                backup = final.with_name(f".{final.name}.old-{token}")
                os.replace(final, backup)
            swapped.append((final, backup))
            os.replace(temp, final)
    except BaseException as exc:
        # Undo in reverse: whatever sits at ``final`` now is new (the old one is in backup).
        for final, backup in reversed(swapped):
            _remove(final)
            if backup is not None:
                os.replace(backup, final)
        for temp, _ in staged:
            _remove(temp)
        if created:
            shutil.rmtree(bin_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise FetchError(
                f"cannot install into {bin_dir}: {exc.strerror or exc}",
                hint="check free space and permissions of bin/; on Windows, stop "
                "a server running from bin/ first (`invoke stop`)",
            ) from None
        raise
    for _, backup in swapped:
        if backup is not None:
            _remove(backup)
