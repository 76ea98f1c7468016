"""``invoke reset``: throw a flavor's data away, and nothing else.

Why a task of its own: ``stop --no-save`` skips the final snapshot, but Redis's append-only file
(and Dragonfly's earlier snapshots) keep every write, so the next start has it all again. A
developer who wants an empty server needs the flavor's data folder gone, and a hand-typed
``rm -rf data/...`` is one typo away from the wrong folder. This removes exactly
``<data_dir>/<flavor>/`` (a symlink there is unlinked, never followed), only after the caller
confirmed, and only for a flavor the catalog knows, so the path cannot be steered elsewhere.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devserver.catalog import FLAVORS as KNOWN
from devserver.config import Settings
from devserver.errors import ConfigError, DevServerError


class ResetError(DevServerError):
    """The data folder could not be removed."""


@dataclass(frozen=True)
class Footprint:
    """What a reset would remove: for the confirmation prompt and the final message."""

    path: Path
    files: int
    size: int
    exists: bool


def pick_flavor(settings: Settings, asked: str | None, running: str | None) -> str:
    """--flavor, else the running server's, else the configured one, else the only folder."""
    for candidate in (asked, running, settings.flavor):
        if candidate and candidate != "auto":
            name = candidate.lower()
            if name not in KNOWN:
                raise ConfigError(
                    f"unknown flavor {candidate!r}",
                    hint="pass --flavor dragonfly, redis or garnet",
                )
            return name
    present = [name for name in KNOWN if (settings.flavor_data_dir(name)).exists()]
    if len(present) == 1:
        return present[0]
    raise ConfigError(
        "which flavor's data? server.flavor is auto and "
        + ("no flavor has data yet" if not present else f"{', '.join(present)} all have data"),
        hint="pass --flavor dragonfly, redis or garnet",
    )


def footprint(settings: Settings, flavor: str) -> Footprint:
    """Files and bytes under the flavor's folder (a symlink counts as one entry, not followed)."""
    path = settings.flavor_data_dir(flavor)
    if not os.path.lexists(path):
        return Footprint(path, 0, 0, False)
    if os.path.islink(path) or not path.is_dir():
        return Footprint(path, 1, 0, True)
    files = size = 0
    for folder, dirs, names in os.walk(path):  # os.walk does not follow symlinked folders
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in [*names, *links]:  # a link to a folder is one entry, like a file
            files += 1
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return Footprint(path, files, size, True)


def _writable_then_retry(func: Any, target: str, _exc: Any) -> None:
    """Windows marks some files read-only, and rmtree cannot delete those without this."""
    os.chmod(target, stat.S_IWRITE)
    func(target)


def remove(settings: Settings, flavor: str) -> Footprint:
    """Remove ``<data_dir>/<flavor>/`` (the caller has stopped its server and confirmed)."""
    if flavor not in KNOWN:
        raise ConfigError(
            f"unknown flavor {flavor!r}", hint="pass --flavor dragonfly, redis or garnet"
        )
    found = footprint(settings, flavor)
    path = found.path
    if path.parent.resolve() != settings.data_dir.resolve():
        raise ResetError(f"refusing to remove {path}: it is not inside {settings.data_dir}")
    try:
        if os.path.islink(path) or (found.exists and not path.is_dir()):
            path.unlink()
        elif found.exists:
            shutil.rmtree(path, onerror=_writable_then_retry)
    except OSError as exc:
        raise ResetError(
            f"could not remove {path}: {exc.strerror or exc}",
            hint="close programs using files in it (on Windows: the server itself), then retry",
        ) from None
    return found
