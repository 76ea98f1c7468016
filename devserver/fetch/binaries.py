"""A server executable and its version.

``Binary`` is one runnable server (which flavor, where, found how). Its version is asked with
the flavor's version flag and cached per file; ``is_too_old`` compares it with the flavor's
``min_version``; ``flavor_of_executable`` tells the flavor from a file name. Where executables
are found is discovery.py, which one runs is choice.py, the install record is manifest.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devserver.catalog import FLAVORS, Flavor
from devserver.config import Settings
from devserver.errors import BinaryBlocked
from devserver.system import spawn
from devserver.system.atomic import write_atomic

_VERSION_RE = re.compile(r"v?(\d+\.\d+(?:\.\d+)?(?:[-.][0-9A-Za-z]+)*)")
# What fetch records for a direct URL or file when neither a pin nor its name gives a version
# and the binary cannot say (resolve.guess_version; release uses the binary's answer first).
UNKNOWN_VERSION = "unknown"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Dragonfly colours its --version output


@dataclass(frozen=True)
class Binary:
    """A runnable server: which flavor, where, found how, what version."""

    flavor: str
    path: Path
    source: str  # "explicit" (server.binary), "bin", "path" or "bundled"
    version: str
    via_wsl: bool = False


def release_version(reported: str) -> str:
    """The release tag a binary's own version stands for: "v1.40.1" from Dragonfly's
    "1.40.1-<git sha>" (release tags are vX.Y.Z), "" when it reported none."""
    match = re.match(r"v?(\d+(?:\.\d+)+)", reported.strip())
    return f"v{match.group(1)}" if match else ""


def read_version(flavor: Flavor, path: Path) -> str:
    """Ask the executable for its version ("" when it has no version flag or says nothing).

    Raises BinaryBlocked when Windows' Application Control refuses to run it: then neither a
    fetch (which would report success) nor a start (whose server would exit at once) can
    succeed, and the person must learn what blocked it.
    """
    if not flavor.version_args:
        return ""
    try:
        out = subprocess.run(
            [str(path), *flavor.version_args],
            capture_output=True,
            timeout=5,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if spawn.blocked_by_app_control(exc):
            raise BinaryBlocked(*spawn.app_control_message(str(path))) from None
        return ""
    text = _ANSI_RE.sub("", (out.stdout + out.stderr).decode("utf-8", "replace"))
    # "Redis server v=7.0.15 sha=..." or "dragonfly v1.24.0-..." : take the first version.
    match = re.search(r"v=(\S+)", text) or _VERSION_RE.search(text)
    return match.group(1) if match else ""


def cached_version(settings: Settings, flavor: Flavor, path: Path) -> str:
    """``read_version``, remembered per binary (path, size, mtime) in the data dir.

    Running ``redis-server --version`` costs several milliseconds on every ``invoke start``;
    the answer only changes when the file does.
    """
    cache = settings.data_dir / ".binary-versions.json"
    try:
        info = path.stat()
        key = f"{path}|{info.st_size}|{info.st_mtime_ns}"
    except OSError:
        return read_version(flavor, path)
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str) and known[key]:
        return str(known[key])
    version = read_version(flavor, path)
    if version:
        known[key] = version
        try:
            write_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
        except OSError:
            pass  # a cache only: never fail a start over it
    return version


def flavor_of_executable(path: Path) -> str | None:
    """redis-server/valkey-server -> redis, dragonfly* -> dragonfly, GarnetServer -> garnet."""
    name = path.name.lower().removesuffix(".exe")
    for flavor in FLAVORS.values():
        if name.startswith(flavor.exe_prefixes):
            return flavor.name
    return None


def is_too_old(flavor: Flavor, version: str) -> bool:
    """Older than the flavor's ``min_version``? An unknown version is given the benefit."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version)
    if not flavor.min_version or not match:
        return False
    found = tuple(int(part) for part in match.group(1).split("."))
    return found < flavor.min_version
