"""Guarding a flavor's data directory against a server too old to read it.

Why: data persists in ``data/<flavor>/`` across starts, and the binary that runs can change
(a system redis-server 7.0 today, a bundled Valkey 8.1 tomorrow). An older server either
refuses newer files (RDB format version) or silently ignores them (Redis 7's AOF directory
means nothing to Redis 6.2), which looks like data loss. So each successful start records
which version wrote the directory, and a start with an older binary is refused with a
message naming the directory. The tool never deletes or moves data on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from devserver.errors import StartError

MARKER = ".devserver-written-by.json"


def version_key(version: str) -> tuple[int, ...]:
    """(7, 0, 15) from "7.0.15" or "v1.24.0-rc1"; () when it has no number."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def recorded_version(data_dir: Path) -> str:
    try:
        data = json.loads((data_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("version", "")) if isinstance(data, dict) else ""


def check_compatible(data_dir: Path, flavor: str, version: str) -> None:
    """Refuse to start a binary older than the one that last wrote ``data_dir``."""
    written = recorded_version(data_dir)
    old, new = version_key(written), version_key(version)
    if not old or not new or new >= old:
        return
    raise StartError(
        f"the data in {data_dir} was written by {flavor} {written}, and this binary is "
        f"{flavor} {version}, which cannot load it",
        hint=f"run {flavor} {written} or newer (install it, or `invoke fetch`), or move "
        f"{data_dir} aside to start empty; the tool never deletes data",
    )


def record_version(data_dir: Path, version: str) -> None:
    """Remember the newest version that has run on this directory."""
    if not version:
        return
    written = recorded_version(data_dir)
    if written and version_key(written) >= version_key(version):
        return
    try:
        (data_dir / MARKER).write_text(json.dumps({"version": version}), encoding="utf-8")
    except OSError:
        pass  # the guard is a courtesy; never fail a started server over it


def has_data(data_dir: Path) -> bool:
    """Whether the directory holds anything but our marker."""
    try:
        return any(p.name != MARKER for p in data_dir.iterdir())
    except OSError:
        return False
